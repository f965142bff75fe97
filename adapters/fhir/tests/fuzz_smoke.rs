//! Bounded, deterministic "fuzz smoke": thousands of mutated fixtures must never panic the
//! parsers or the helpers built on them.

mod common;

use common::{fixture, ALL};
use fhir_r4::*;
use serde_json::{json, Value};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"null",
    b"0",
    b"-1",
    b"1e309",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"booked\"",
    b"\"%PDF-\"",
    b"true",
    b"\"urn:uuid:x\"",
    b"\"Patient/\"",
    b"\"resourceType\"",
    b"\"\\u0000\"",
    b"18446744073709551616",
];

fn exercise(bytes: &[u8]) {
    let Ok(r) = parse_resource(bytes) else { return };
    let _ = r.to_json();
    match &r {
        Resource::Bundle(b) => {
            let _ = Notification::from_bundle(b).map(|n| (n.gap(0), n.gap(u64::MAX)));
            let _ = AbdmDocument::from_bundle(b);
            for e in &b.entry {
                if let Some(Resource::Appointment(a)) = &e.resource {
                    let _ = a.patient_ref().map(|p| b.resolve(p));
                }
            }
        }
        Resource::Patient(p) => {
            let _ = (p.mobile(), p.preferred_language(), p.display_name());
        }
        Resource::Appointment(a) => {
            let _ = (a.patient_ref(), a.practitioner_refs(), a.location_ref());
        }
        Resource::DiagnosticReport(d) => {
            let _ = d.pdfs();
        }
        Resource::DocumentReference(d) => {
            let _ = d.pdfs();
        }
        _ => {}
    }
}

fn mutate_bytes(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        match rng.below(5) {
            0 => {
                let i = rng.below(len);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                let n = rng.below(16).min(b.len().saturating_sub(i));
                b.drain(i..i + n);
            }
            2 => {
                let i = rng.below(len).min(b.len());
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(i..i, t.iter().copied());
            }
            3 => {
                let i = rng.below(len);
                b.truncate(i);
            }
            _ => {
                let i = rng.below(len).min(b.len());
                b.insert(i, b"{}[]\":,"[rng.below(7)]);
            }
        }
    }
    b
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(-1.5),
        4 => json!("booked"),
        5 => json!("2024-02-30T25:61:00+05:30"),
        6 => json!([]),
        7 => json!({"reference": "urn:uuid:zzz"}),
        8 => json!("JVBERi0x LjQK"),
        _ => json!({"resourceType": "Bundle", "type": "history", "entry": [{}]}),
    }
}

/// Replace, delete or retag a random node of the JSON tree.
fn mutate_tree(rng: &mut Rng, v: &mut Value, depth: usize) {
    let stop = depth > 0 && rng.below(4) == 0;
    match v {
        Value::Object(m) if !m.is_empty() && !stop => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            match rng.below(6) {
                0 => {
                    m.remove(k);
                }
                1 => {
                    m.insert(k.clone(), random_value(rng));
                }
                _ => {
                    if let Some(child) = m.get_mut(k) {
                        mutate_tree(rng, child, depth + 1);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() && !stop => {
            let i = rng.below(a.len());
            match rng.below(5) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let dup = a[i].clone();
                    a.push(dup);
                }
                _ => mutate_tree(rng, &mut a[i], depth + 1),
            }
        }
        _ => *v = random_value(rng),
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(0x5EED_F41E_2024_0001);
    let mut runs = 0usize;
    for name in ALL {
        let src = fixture(name);
        let big = src.len() > 100_000;
        let (byte_runs, tree_runs) = if big { (15, 15) } else { (200, 150) };
        for _ in 0..byte_runs {
            exercise(&mutate_bytes(&mut rng, &src));
            runs += 1;
        }
        let Ok(orig) = serde_json::from_slice::<Value>(&src) else {
            continue;
        };
        for _ in 0..tree_runs {
            let mut v = orig.clone();
            for _ in 0..1 + rng.below(3) {
                mutate_tree(&mut rng, &mut v, 0);
            }
            if let Ok(bytes) = serde_json::to_vec(&v) {
                exercise(&bytes);
            }
            runs += 1;
        }
    }
    assert!(runs >= 4_000, "{runs} runs");
}

#[test]
fn deep_nesting_is_rejected_not_overflowed() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse_resource(deep.as_bytes()).is_err());
    let mut parts = String::from("{\"resourceType\":\"Parameters\",\"parameter\":[");
    for _ in 0..60 {
        parts.push_str("{\"name\":\"p\",\"part\":[");
    }
    for _ in 0..60 {
        parts.push_str("]}");
    }
    parts.push_str("]}");
    let _ = parse_resource(parts.as_bytes());
}
