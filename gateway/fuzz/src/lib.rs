//! What the gateway's fuzz targets share: the clinic every body is checked against, and the
//! properties every answer must have.

use std::sync::LazyLock;

use clinic_gateway::api::problem::Problem;
use clinic_gateway::tenants::ClinicSettings;
use serde_json::json;

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

/// JSON equality tolerant of serde_json's float parsing, and the serialise → parse round trip:
/// the WhatsApp fuzz crate's, so both judge "reads back the same" alike.
pub use whatsapp_cloud_fuzz::{round_trip, same};
