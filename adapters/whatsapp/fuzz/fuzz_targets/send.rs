//! `scripts/fuzz send`: any bytes as a Cloud API send request (what the gateway posts to
//! `/{phone-number-id}/messages` and the sandbox accepts).
//!
//! Properties: never a panic; validation always answers, naming a field when it refuses; a
//! request that parses re-serialises to JSON that parses to the same request, and a valid one
//! stays valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whatsapp_cloud::validate::{recipient_digits, validate, validate_content};
use whatsapp_cloud::wire::OutgoingMessage;
use whatsapp_cloud_fuzz::round_trip;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = serde_json::from_slice::<OutgoingMessage>(data) else {
        return;
    };
    let verdict = validate(&msg);
    if let Err(v) = &verdict {
        assert!(!v.field.is_empty() && v.code > 0, "{v:?}");
    }
    let _ = validate_content(&msg.content);
    if let Some(digits) = recipient_digits(&msg.to) {
        assert!(digits.bytes().all(|b| b.is_ascii_digit()) && (8..=15).contains(&digits.len()));
    }
    let back = round_trip(&msg);
    assert_eq!(
        validate(&back).is_ok(),
        verdict.is_ok(),
        "{msg:?}\n{back:?}"
    );
});
