//! A bounded, deterministic stand-in for cargo-fuzz (which needs nightly) over the Cloud API
//! wire types: webhook envelopes and send requests from the seed corpus in `tests/corpus/`,
//! mutated structurally (values of the wrong type, missing and renamed keys, huge and deep
//! values) and byte by byte, a fixed number of times from a fixed seed. Passing means nothing
//! panicked, everything parsed re-serialises and parses again to the same value, send
//! validation always answers, and signature checks reject every mutation.
//!
//! `FUZZ_ITERATIONS` runs longer on demand (default 3,000 per target, well under 5 s).

use std::path::Path;

use serde_json::Value;
use whatsapp_cloud::signature::{sign, verify};
use whatsapp_cloud::validate::validate_content;
use whatsapp_cloud::wire::{Change, OutgoingMessage, WebhookEnvelope};

/// xorshift64*: tiny, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

fn corpus(dir: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", path.display());
    seeds
}

/// A value of a random JSON type, sometimes large or deep.
fn random_value(rng: &mut Rng, depth: usize) -> Value {
    const STRINGS: &[&str] = &[
        "",
        "0",
        "-1",
        "1e309",
        "9223372036854775808",
        "wamid.HBgMOTE5ODc2NTQzMjEw",
        "msg_01J0000000000000000000000",
        "क्लिनिक 🏥",
        "\u{0000}\u{202e}",
        "sent",
        "delivered",
        "read",
        "failed",
        "messages",
        "template",
        "text",
        "whatsapp_business_account",
    ];
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next() as i64),
        3 => Value::from(-(rng.below(1_000_000) as i64)),
        4 => Value::from(f64::from(rng.next() as u32) / 7.0),
        5 => Value::String(STRINGS[rng.below(STRINGS.len())].to_owned()),
        6 => Value::String("x".repeat(rng.below(70_000))),
        7 if depth < 4 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ if depth < 4 => Value::Object(
            (0..rng.below(4))
                .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Every path (of keys and indexes) in `v`.
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Value::String(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Value::from(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for step in path {
        cur = match step {
            Value::String(k) => cur.get_mut(k.as_str())?,
            Value::Number(i) => cur.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// One structural change somewhere in the document.
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = all[rng.below(all.len())].clone();
    let op = rng.below(6);
    let replacement = random_value(rng, 0);
    let Some(node) = at(v, &path) else { return };
    match op {
        // Another value, of any type.
        0 | 1 => *node = replacement,
        // A key dropped or renamed.
        2 => {
            if let Value::Object(m) = node {
                let keys: Vec<String> = m.keys().cloned().collect();
                if !keys.is_empty() {
                    let k = keys[rng.below(keys.len())].clone();
                    if let Some(val) = m.remove(&k) {
                        if rng.below(2) == 0 {
                            m.insert(format!("{k}_"), val);
                        }
                    }
                }
            }
        }
        // An array grown by copies of an element (or emptied).
        3 => {
            if let Value::Array(a) = node {
                if let Some(first) = a.first().cloned() {
                    let n = rng.below(64);
                    a.extend(std::iter::repeat_n(first, n));
                } else {
                    a.push(replacement);
                }
            } else if rng.below(2) == 0 {
                *node = Value::Array(vec![node.clone()]);
            }
        }
        // A number or string turned into the other.
        4 => {
            *node = match node.take() {
                Value::String(s) => s
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(s + "0")),
                Value::Number(n) => Value::String(n.to_string()),
                other => other,
            }
        }
        // An extra key.
        _ => {
            if let Value::Object(m) = node {
                m.insert("unexpected".into(), replacement);
            }
        }
    }
}

const INTERESTING: &[u8] = b"{}[]\":,\\0123456789-+.eEtrufalsn \n\x00\xff\xc3\xa9";

fn mutate_bytes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(6) {
        let pos = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if pos < v.len() => v[pos] = rng.next() as u8,
            1 if pos < v.len() => v[pos] = INTERESTING[rng.below(INTERESTING.len())],
            2 => v.insert(pos, INTERESTING[rng.below(INTERESTING.len())]),
            3 if pos < v.len() => {
                let end = (pos + rng.below(16)).min(v.len());
                v.drain(pos..end);
            }
            _ => v.truncate(pos),
        }
    }
    v
}

/// A mutated input: mostly structural mutations of a seed, some byte-level, some both.
fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    match rng.below(4) {
        0 => mutate_bytes(rng, seed),
        _ => {
            let Ok(mut v) = serde_json::from_slice::<Value>(seed) else {
                return mutate_bytes(rng, seed);
            };
            for _ in 0..=rng.below(3) {
                mutate_json(rng, &mut v);
            }
            let bytes = serde_json::to_vec(&v).unwrap_or_default();
            if rng.below(5) == 0 {
                mutate_bytes(rng, &bytes)
            } else {
                bytes
            }
        }
    }
}

/// Equal as JSON, floats to 12 significant digits (serde_json parses floats fast, not exactly,
/// so a float can come back one ulp off).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || ((x - y).abs() <= 1e-12 * x.abs().max(y.abs()))
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn assert_same<T: serde::Serialize + std::fmt::Debug>(back: &T, original: &T) {
    let (a, b) = (
        serde_json::to_value(back).unwrap_or(Value::Null),
        serde_json::to_value(original).unwrap_or(Value::Null),
    );
    assert!(
        same(&a, &b),
        "round trip changed the value:\n{original:?}\n{back:?}"
    );
}

fn exercise_webhook(bytes: &[u8]) -> bool {
    let Ok(env) = serde_json::from_slice::<WebhookEnvelope>(bytes) else {
        return false;
    };
    for change in env.changes() {
        if let Change::Messages(v) = change {
            for s in &v.statuses {
                let _ = s.unix_seconds();
                for e in &s.errors {
                    let _ = e.text();
                }
            }
            for m in &v.messages {
                let _ = m.unix_seconds();
                let _ = m.interactive.as_ref().and_then(|i| i.reply());
            }
        }
    }
    let again = serde_json::to_vec(&env).unwrap_or_else(|e| panic!("re-serialising: {e}"));
    let back: WebhookEnvelope = serde_json::from_slice(&again).unwrap_or_else(|e| {
        panic!(
            "{e}: re-serialised envelope does not parse: {}",
            String::from_utf8_lossy(&again)
        )
    });
    assert_same(&back, &env);
    true
}

#[test]
fn webhook_envelopes_never_panic_and_round_trip() {
    let seeds = corpus("webhook");
    for s in &seeds {
        assert!(exercise_webhook(s), "every seed parses");
    }
    let mut rng = Rng(0x5EED_0000_0000_0A11);
    let secret = b"fuzz-app-secret";
    let mut parsed = 0;
    let n = iterations();
    for _ in 0..n {
        let bytes = input(&mut rng, &seeds);
        if exercise_webhook(&bytes) {
            parsed += 1;
        }
        // A signature over the seed never verifies a mutation; over the input itself it does.
        let header = sign(secret, &bytes);
        assert!(verify(secret, &bytes, Some(&header)).is_ok());
        let mut tampered = bytes.clone();
        tampered.push(b' ');
        assert!(verify(secret, &tampered, Some(&header)).is_err());
        let garbage = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
        let _ = verify(secret, &bytes, Some(&garbage));
    }
    // The mutations are not all rejected up front: the typed paths were exercised.
    assert!(parsed > n / 10, "only {parsed} of {n} parsed");
}

fn exercise_send(bytes: &[u8]) -> bool {
    let Ok(msg) = serde_json::from_slice::<OutgoingMessage>(bytes) else {
        return false;
    };
    let _ = validate_content(&msg.content);
    let _ = whatsapp_cloud::validate::recipient_digits(&msg.to);
    let again = serde_json::to_vec(&msg).unwrap_or_else(|e| panic!("re-serialising: {e}"));
    let back: OutgoingMessage = serde_json::from_slice(&again).unwrap_or_else(|e| {
        panic!(
            "{e}: re-serialised send does not parse: {}",
            String::from_utf8_lossy(&again)
        )
    });
    assert_same(&back, &msg);
    true
}

#[test]
fn send_requests_never_panic_and_round_trip() {
    let seeds = corpus("send");
    for s in &seeds {
        assert!(exercise_send(s), "every seed parses");
    }
    let mut rng = Rng(0x5EED_0000_0000_5E4D);
    let mut parsed = 0;
    let n = iterations();
    for _ in 0..n {
        if exercise_send(&input(&mut rng, &seeds)) {
            parsed += 1;
        }
    }
    assert!(parsed > n / 10, "only {parsed} of {n} parsed");
}
