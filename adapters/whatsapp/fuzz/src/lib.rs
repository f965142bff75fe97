//! What the WhatsApp fuzz targets share: a round trip that tolerates serde_json's float parsing.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Equal as JSON, floats to 12 significant digits (serde_json parses floats fast, not exactly,
/// so a float can come back one ulp off).
pub fn same(a: &Value, b: &Value) -> bool {
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

/// `value` serialised parses back to the same value (what the gateway re-sends or stores is
/// what it read).
pub fn round_trip<T: Serialize + DeserializeOwned + Debug>(value: &T) -> T {
    let text = serde_json::to_vec(value).unwrap_or_else(|e| panic!("{e}: {value:?}"));
    let back: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "{e}: the serialised value does not parse back: {}",
            String::from_utf8_lossy(&text)
        )
    });
    let (a, b) = (
        serde_json::to_value(value).unwrap_or(Value::Null),
        serde_json::to_value(&back).unwrap_or(Value::Null),
    );
    assert!(
        same(&a, &b),
        "round trip changed the value:\n{value:?}\n{back:?}"
    );
    back
}
