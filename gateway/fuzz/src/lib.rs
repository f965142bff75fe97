//! What the gateway's fuzz targets share: the clinic every body is checked against, and the
//! properties every answer must have.

use std::fmt::Debug;
use std::sync::LazyLock;

use clinic_gateway::api::problem::Problem;
use clinic_gateway::tenants::ClinicSettings;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// A fixed "now" (2025-11-24), so a run does not depend on the clock where it can avoid it.
pub const NOW_MS: i64 = 1_764_000_000_000;
pub const DAY_MS: i64 = 86_400_000;

/// The clinic of the seed corpus: numbers `100000000000001` and `200000000000002`, India.
pub static CLINIC: LazyLock<ClinicSettings> = LazyLock::new(|| {
    let clinic: ClinicSettings = serde_json::from_value(json!({
        "id": "clinic_fuzz", "display_name": "Sunrise Family Clinic",
        "waba_id": "300000000000003", "portfolio_id": "300000000000003",
        "app_secret": "fuzz-app-secret", "access_token": "fuzz-access-token",
        "numbers": [
            {"phone_number_id": "100000000000001", "display": "+91 80 4555 0001", "tier_mps": 80},
            {"phone_number_id": "200000000000002", "display": "+91 80 4555 0002", "tier_mps": 80}
        ],
        "time_zone": "Asia/Kolkata", "default_country_code": "91", "default_language": "en",
        "low_balance_threshold": 0,
        "locations": [{"name": "Main", "address": "MG Road", "latitude": 12.97, "longitude": 77.59}],
        "doctors": [{"id": "d1", "name": "Dr. Iyer"}],
        "callback": {"url": "https://clinic.example/cb", "secret": "0123456789abcdef-secret"}
    }))
    .unwrap_or_else(|e| panic!("the fuzz clinic does not parse: {e}"));
    if let Err(e) = clinic.validate() {
        panic!("the fuzz clinic is not valid: {e}");
    }
    clinic
});

/// A refused body is a client error (never a 5xx), and a 422 names the field at fault.
pub fn check_problem(p: &Problem) {
    assert!(
        (400..500).contains(&p.status),
        "a body got a {} problem: {p:?}",
        p.status
    );
    if p.status == 422 {
        assert!(p.field.is_some(), "a 422 without the field at fault: {p:?}");
    }
    assert!(serde_json::to_vec(p).is_ok(), "the problem serialises");
}

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

/// What is stored reads back: `value` serialised to JSON text parses to the same value.
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
