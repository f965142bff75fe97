//! A bounded, deterministic stand-in for cargo-fuzz (which needs nightly) over the gateway's
//! HTTP edge: the JSON bodies of `POST /v1/messages`, `/v1/appointments`, `/v1/broadcasts`,
//! `/v1/patients/import` (CSV and NDJSON) and signed webhook deliveries, taken from the seed
//! corpus in `tests/corpus/api/`, mutated structurally and byte by byte from fixed seeds, and
//! sent to the in-process app. Passing means: never a 5xx, never a dropped connection (a
//! panicking handler), and every error is a problem+json whose `status` matches.
//!
//! `FUZZ_ITERATIONS` runs longer on demand (default 300 requests per route, well under 5 s).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use whatsapp_cloud::signature::sign;

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
        .unwrap_or(300)
}

fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/api")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let seeds: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                f.extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default()
                    .to_owned(),
                std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())),
            )
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", path.display());
    seeds
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    const STRINGS: &[&str] = &[
        "",
        "0",
        "-1",
        "1e309",
        "9223372036854775808",
        "+919876543210",
        "9876543210",
        "+1",
        "100000000000001",
        "200000000000002",
        "msg_01J0000000000000000000000",
        "apt_01J0000000000000000000000",
        "2099-01-01T00:00:00Z",
        "2001-01-01T00:00:00Z",
        "not a date",
        "क्लिनिक 🏥",
        "\u{0000}\u{202e}",
        "template",
        "text",
        "care",
        "bulk",
        "promotional",
    ];
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next() as i64),
        3 => Value::from(-(rng.below(1_000_000) as i64)),
        4 => Value::from(f64::from(rng.next() as u32) / 7.0),
        5 => Value::String(STRINGS[rng.below(STRINGS.len())].to_owned()),
        6 => Value::String("x".repeat(rng.below(5_000))),
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

fn mutate_json(rng: &mut Rng, v: &mut Value) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = all[rng.below(all.len())].clone();
    let op = rng.below(6);
    let replacement = random_value(rng, 0);
    let Some(node) = at(v, &path) else { return };
    match op {
        0 | 1 => *node = replacement,
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
        3 => {
            if let Value::Array(a) = node {
                if let Some(first) = a.first().cloned() {
                    let n = rng.below(32);
                    a.extend(std::iter::repeat_n(first, n));
                } else {
                    a.push(replacement);
                }
            } else if rng.below(2) == 0 {
                *node = Value::Array(vec![node.clone()]);
            }
        }
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
        _ => {
            if let Value::Object(m) = node {
                m.insert("unexpected".into(), replacement);
            }
        }
    }
}

const INTERESTING: &[u8] = b"{}[]\":,\\0123456789-+.eE \n\r\x00\xff\xc3\xa9;\"";

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

/// Structural mutations of one JSON document (or of each NDJSON line), sometimes bytes too.
fn mutate_document(rng: &mut Rng, seed: &[u8], ndjson: bool) -> Vec<u8> {
    if rng.below(4) == 0 {
        return mutate_bytes(rng, seed);
    }
    let text = String::from_utf8_lossy(seed);
    let docs: Vec<&str> = if ndjson {
        text.lines().collect()
    } else {
        vec![&text]
    };
    let mut out = Vec::new();
    for doc in docs {
        let bytes = match serde_json::from_str::<Value>(doc) {
            Ok(mut v) => {
                for _ in 0..=rng.below(3) {
                    mutate_json(rng, &mut v);
                }
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => doc.as_bytes().to_vec(),
        };
        out.extend_from_slice(&bytes);
        if ndjson {
            out.push(b'\n');
        }
    }
    if rng.below(5) == 0 {
        mutate_bytes(rng, &out)
    } else {
        out
    }
}

/// How one route is called.
struct Target {
    path: &'static str,
    dir: &'static str,
    /// Sign the body as Meta would (webhooks).
    signed: bool,
}

/// Sends `n` mutated bodies (8 at a time); returns what was wrong, with the request body.
async fn fuzz(app: &TestApp, target: &Target, seed: u64, n: usize) -> (Vec<String>, Vec<u16>) {
    let seeds = corpus(target.dir);
    let mut rng = Rng(seed);
    let mut problems = Vec::new();
    let mut statuses = Vec::new();
    let mut i = 0;
    while i < n {
        let batch: Vec<(String, Vec<u8>)> = (0..8.min(n - i))
            .map(|_| {
                let (ext, seed) = &seeds[rng.below(seeds.len())];
                let body = match ext.as_str() {
                    "csv" => mutate_bytes(&mut rng, seed),
                    "ndjson" => mutate_document(&mut rng, seed, true),
                    _ => mutate_document(&mut rng, seed, false),
                };
                let ct = match ext.as_str() {
                    "csv" => "text/csv",
                    "ndjson" => "application/x-ndjson",
                    _ => "application/json",
                };
                (ct.to_owned(), body)
            })
            .collect();
        i += batch.len();
        let answers = futures::future::join_all(batch.iter().map(|(ct, body)| {
            let mut req = app
                .http
                .post(format!("{}{}", app.base, target.path))
                .bearer_auth(KEY_A)
                .header("Content-Type", ct.as_str())
                .timeout(Duration::from_secs(10))
                .body(body.clone());
            if target.signed {
                req = req.header("X-Hub-Signature-256", sign(APP_SECRET.as_bytes(), body));
            }
            async move {
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let ct = content_type(&resp);
                        let body = resp.bytes().await.unwrap_or_default();
                        Ok((status, ct, body))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }))
        .await;
        for ((_, body), answer) in batch.iter().zip(answers) {
            let shown = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
            match answer {
                Err(e) => problems.push(format!("no answer ({e}) to {shown}")),
                Ok((status, ct, resp)) => {
                    statuses.push(status);
                    let problem: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
                    // Meta redelivers anything but a 2xx: a signed delivery is applied (200),
                    // unreadable (400), not ours (401), too large (413), or hit a transient
                    // conflict worth Meta's retry (409: concurrent deliveries for one patient).
                    if target.signed && ![200, 400, 401, 409, 413].contains(&status) {
                        problems.push(format!(
                            "{status} {} to a signed delivery {shown}",
                            String::from_utf8_lossy(&resp)
                        ));
                    } else if status >= 500 {
                        problems.push(format!(
                            "{status} {} to {shown}",
                            String::from_utf8_lossy(&resp)
                        ));
                    } else if status >= 400
                        && (!ct.starts_with("application/problem+json")
                            || problem["status"] != status
                            || !problem["type"]
                                .as_str()
                                .is_some_and(|t| t.starts_with("/problems/")))
                    {
                        problems.push(format!(
                            "{status} not a problem+json ({ct}: {}) to {shown}",
                            String::from_utf8_lossy(&resp)
                        ));
                    }
                }
            }
        }
    }
    (problems, statuses)
}

async fn run(name: &str, target: Target, seed: u64) {
    let app = spawn_app(
        name,
        Options {
            api_rate_per_second: 100_000,
            ..Options::default()
        },
    )
    .await;
    // A window for free-form messages, so mutated texts get past the edge too.
    app.open_window(PATIENT).await;
    let started = Instant::now();
    let n = iterations();
    let (problems, statuses) = fuzz(&app, &target, seed, n).await;
    let mut counts = std::collections::BTreeMap::new();
    for s in &statuses {
        *counts.entry(*s).or_insert(0usize) += 1;
    }
    eprintln!(
        "{} × {n} in {:?}: {counts:?}",
        target.path,
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} of {n} bad answers on {}:\n{}",
        problems.len(),
        target.path,
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Both sides were exercised: some inputs were accepted, some refused.
    assert!(
        counts.keys().any(|s| *s < 300) && counts.keys().any(|s| *s >= 400),
        "{counts:?}"
    );
}

#[actix_rt::test]
async fn fuzz_messages() {
    let target = Target {
        path: "/v1/messages",
        dir: "messages",
        signed: false,
    };
    run("fuzz_messages", target, 0x5EED_0000_0000_0001).await;
}

#[actix_rt::test]
async fn fuzz_appointments() {
    let target = Target {
        path: "/v1/appointments",
        dir: "appointments",
        signed: false,
    };
    run("fuzz_appointments", target, 0x5EED_0000_0000_0002).await;
}

#[actix_rt::test]
async fn fuzz_broadcasts() {
    let target = Target {
        path: "/v1/broadcasts",
        dir: "broadcasts",
        signed: false,
    };
    run("fuzz_broadcasts", target, 0x5EED_0000_0000_0003).await;
}

#[actix_rt::test]
async fn fuzz_patient_import() {
    let target = Target {
        path: "/v1/patients/import",
        dir: "patients_import",
        signed: false,
    };
    run("fuzz_import", target, 0x5EED_0000_0000_0004).await;
}

#[actix_rt::test]
async fn fuzz_signed_webhooks() {
    let target = Target {
        path: "/webhooks/whatsapp",
        dir: "webhook",
        signed: true,
    };
    run("fuzz_webhooks", target, 0x5EED_0000_0000_0005).await;
}
