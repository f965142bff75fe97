//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the app secret, hex, `sha256=` prefix.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is missing")]
    Missing,
    #[error("signature header is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this never fails.
    match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// `sha256=<hex>` for `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Verifies a header value against the raw body in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_part = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let given = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

/// The GET handshake: `hub.mode=subscribe` with the right `hub.verify_token` returns the challenge
/// to echo; anything else is refused (answer 403).
pub fn verify_subscription<'a>(
    mode: Option<&str>,
    token: Option<&str>,
    challenge: Option<&'a str>,
    expected_token: &str,
) -> Option<&'a str> {
    let token_ok: bool = token
        .map(|t| t.as_bytes().ct_eq(expected_token.as_bytes()).into())
        .unwrap_or(false);
    (mode == Some("subscribe") && token_ok && !expected_token.is_empty())
        .then_some(challenge)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let body = "{\"a\":\"नमस्ते @ clinic\"}".as_bytes();
        let sig = sign(b"secret", body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(verify(b"secret", body, Some(&sig)), Ok(()));
        assert_eq!(
            verify(b"other", body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = body.to_vec();
        tampered[3] ^= 1;
        assert_eq!(
            verify(b"secret", &tampered, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        assert_eq!(verify(b"s", b"x", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"s", b"x", Some("sha1=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s", b"x", Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"s", b"x", Some("sha256=abcd")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn subscription_handshake() {
        assert_eq!(
            verify_subscription(Some("subscribe"), Some("tok"), Some("123"), "tok"),
            Some("123")
        );
        assert_eq!(
            verify_subscription(Some("subscribe"), Some("bad"), Some("123"), "tok"),
            None
        );
        assert_eq!(
            verify_subscription(Some("unsubscribe"), Some("tok"), Some("1"), "tok"),
            None
        );
        assert_eq!(
            verify_subscription(Some("subscribe"), Some(""), Some("1"), ""),
            None
        );
    }
}
