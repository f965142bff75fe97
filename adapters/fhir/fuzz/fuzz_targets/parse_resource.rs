//! `scripts/fuzz parse_resource`: any bytes must parse or fail, never panic; a parsed resource
//! re-serialises to JSON that parses to the same resource; the helpers on a parsed resource must
//! not panic either.
#![no_main]

use fhir_r4::{parse_resource, AbdmDocument, Notification, Resource};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Equal as JSON, floats to 12 significant digits.
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

fuzz_target!(|data: &[u8]| {
    let Ok(resource) = parse_resource(data) else {
        return;
    };
    // What the gateway writes back is what it read: re-serialised, the resource parses again to
    // the same JSON (floats to 12 digits: serde_json parses them fast, not exactly).
    let json = resource
        .to_json()
        .unwrap_or_else(|e| panic!("a parsed resource does not serialise: {e}"));
    let again = parse_resource(&json).unwrap_or_else(|e| {
        panic!(
            "{e}: the re-serialised resource does not parse: {}",
            String::from_utf8_lossy(&json)
        )
    });
    let (a, b) = (
        resource.to_value().unwrap_or(Value::Null),
        again.to_value().unwrap_or(Value::Null),
    );
    assert!(same(&a, &b), "round trip changed the resource:\n{a}\n{b}");
    match &resource {
        Resource::Bundle(b) => {
            if let Ok(n) = Notification::from_bundle(b) {
                let _ = n.gap(0);
            }
            let _ = AbdmDocument::from_bundle(b);
        }
        Resource::Patient(p) => {
            let _ = (p.mobile(), p.preferred_language());
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
});
