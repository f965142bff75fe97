//! `scripts/fuzz webhook`: any bytes as a webhook delivery (`POST /webhooks/whatsapp`).
//!
//! Properties: the signature over the raw bytes verifies and any change to the bytes, the
//! secret or the header is refused (never a panic); a body that parses as an envelope
//! re-serialises to JSON that parses to the same envelope; the helpers the gateway calls on it
//! do not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whatsapp_cloud::signature::{sign, verify, SignatureError};
use whatsapp_cloud::wire::{Change, WebhookEnvelope};
use whatsapp_cloud_fuzz::round_trip;

const SECRET: &[u8] = b"test-app-secret-0123";

fuzz_target!(|data: &[u8]| {
    let header = sign(SECRET, data);
    assert_eq!(verify(SECRET, data, Some(&header)), Ok(()));
    assert_eq!(verify(SECRET, data, Some(&format!(" {header}\t"))), Ok(()));
    assert_eq!(
        verify(b"another-app-secret", data, Some(&header)),
        Err(SignatureError::Mismatch)
    );
    let mut tampered = data.to_vec();
    tampered.push(b' ');
    assert_eq!(
        verify(SECRET, &tampered, Some(&header)),
        Err(SignatureError::Mismatch)
    );
    if !data.is_empty() {
        let mut flipped = data.to_vec();
        flipped[data.len() / 2] ^= 0x20;
        assert_eq!(
            verify(SECRET, &flipped, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }
    assert_eq!(verify(SECRET, data, None), Err(SignatureError::Missing));

    let Ok(envelope) = serde_json::from_slice::<WebhookEnvelope>(data) else {
        return;
    };
    for change in envelope.changes() {
        match change {
            Change::Messages(v) => {
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
            Change::TemplateCategoryUpdate(u) => {
                let _ = u.is_impending();
            }
            _ => {}
        }
    }
    let back = round_trip(&envelope);
    // And once more from there: re-serialising is stable.
    round_trip(&back);
});
