//! The shared signature vector, verified over the exact fixture bytes.

use whatsapp_cloud::signature::{sign, verify, SignatureError};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/meta/"
);
const SECRET: &[u8] = b"test-app-secret-0123";
const EXPECTED: &str = "sha256=820fedc276c41e40a8ee46c60d33b9e6c7a30175c68e26e27c08bafba1ce0ad3";

#[test]
fn fixture_vector_verifies_over_raw_bytes() {
    let body = std::fs::read(format!("{FIXTURES}inbound-text-hindi.json")).expect("fixture");
    assert_eq!(sign(SECRET, &body), EXPECTED);
    assert_eq!(verify(SECRET, &body, Some(EXPECTED)), Ok(()));
    // Re-serialised JSON is different bytes: it must not verify.
    let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let reserialised = serde_json::to_vec(&value).expect("ser");
    assert_eq!(
        verify(SECRET, &reserialised, Some(EXPECTED)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify(b"wrong", &body, Some(EXPECTED)),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn non_ascii_and_at_sign_bodies() {
    let body = "{\"text\":\"मुझे अपॉइंटमेंट रद्द करना है @ 10:30 — ₹500\"}".as_bytes();
    let sig = sign(SECRET, body);
    assert_eq!(verify(SECRET, body, Some(&sig)), Ok(()));
    assert_eq!(
        verify(
            SECRET,
            body,
            Some(&sig.to_uppercase().replace("SHA256=", "sha256="))
        ),
        Ok(()),
        "hex case does not matter"
    );
    let escaped =
        serde_json::to_vec(&serde_json::json!({"text": "मुझे अपॉइंटमेंट रद्द करना है @ 10:30 — ₹500"}))
            .expect("ser");
    assert_eq!(escaped, body, "same bytes, same signature");
    let mut tampered = body.to_vec();
    let at = tampered.iter().position(|b| *b == b'@').expect("@");
    tampered[at] = b'#';
    assert_eq!(
        verify(SECRET, &tampered, Some(&sig)),
        Err(SignatureError::Mismatch)
    );
}
