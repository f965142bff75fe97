//! Values in the forms the gateway's APIs and Meta's records use: instants, clinic-local HL7
//! times, phone numbers as Meta writes them, query-string and base64 encodings.

use base64::Engine;

pub const DAY_MS: i64 = 24 * 3_600_000;

/// An RFC 3339 instant `ms_from_now` away (negative: in the past).
pub fn at(ms_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms_from_now)).to_rfc3339()
}

/// `YYYYMMDDHHMMSS` in Asia/Kolkata with no offset, as HL7 senders write it: the clinic's
/// zone applies.
pub fn local(ms_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms_from_now))
        .with_timezone(&chrono_tz::Asia::Kolkata)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// A phone number the way Meta writes `to` and `wa_id`: no leading `+`.
pub fn digits(phone: &str) -> &str {
    phone.trim_start_matches('+')
}

/// Just enough percent-encoding for the phone numbers and RFC 3339 times tests put in queries.
pub fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
