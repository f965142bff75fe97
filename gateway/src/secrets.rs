//! Secrets at rest: clinics' Meta access tokens, app secrets, callback secrets and EMR tokens are
//! sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) before they reach Redis, with
//! a key from the environment. Several keys may be given: the first seals, all open, so a key is
//! rotated by putting the new one first and keeping the old one until every clinic was re-saved
//! (the gateway re-seals all clinics with the first key at start).
//!
//! `CLINIC_GATEWAY_SECRET_KEYS="k2:<base64 32 bytes>,k1:<base64 32 bytes>"`

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The environment variable holding the keys.
pub const ENV: &str = "CLINIC_GATEWAY_SECRET_KEYS";
const PREFIX: &str = "enc:v1:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("{ENV}: {0}")]
    BadKeys(String),
    #[error("sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("a sealed secret does not open: {0}")]
    Corrupt(String),
}

pub struct SecretKeys {
    /// `(id, cipher)`, the first seals.
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "SecretKeys({ids:?})")
    }
}

impl SecretKeys {
    /// Parses `id:base64key[,id:base64key…]`.
    pub fn parse(spec: &str) -> Result<Self, SecretsError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, b64) = part
                .split_once(':')
                .ok_or_else(|| SecretsError::BadKeys("each key is id:base64".into()))?;
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(SecretsError::BadKeys(format!(
                    "key id {id:?}: letters, digits, - and _"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| SecretsError::BadKeys(format!("key {id}: {e}")))?;
            if bytes.len() != 32 {
                return Err(SecretsError::BadKeys(format!(
                    "key {id}: 32 bytes needed, got {}",
                    bytes.len()
                )));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(SecretsError::BadKeys(format!("key id {id} twice")));
            }
            keys.push((
                id.to_owned(),
                XChaCha20Poly1305::new(Key::from_slice(&bytes)),
            ));
        }
        if keys.is_empty() {
            return Err(SecretsError::BadKeys("no key".into()));
        }
        Ok(Self { keys })
    }

    /// The keys from [`ENV`], or `None` when it is unset (secrets are then stored in plain text,
    /// and the gateway says so at start).
    pub fn from_env() -> Result<Option<Self>, SecretsError> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// `enc:v1:<key id>:<base64(nonce ‖ ciphertext)>`. Empty stays empty.
    pub fn seal(&self, plain: &str) -> Result<String, SecretsError> {
        if plain.is_empty() {
            return Ok(String::new());
        }
        let Some((id, cipher)) = self.keys.first() else {
            return Err(SecretsError::BadKeys("no key".into()));
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(&nonce, plain.as_bytes())
                .map_err(|e| SecretsError::Corrupt(e.to_string()))?,
        );
        Ok(format!(
            "{PREFIX}{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens a sealed value; a value that was never sealed (stored before keys were configured)
    /// is returned as it is.
    pub fn open(&self, stored: &str) -> Result<String, SecretsError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, b64) = rest
            .split_once(':')
            .ok_or_else(|| SecretsError::Corrupt("no key id".into()))?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| SecretsError::UnknownKey(id.to_owned()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| SecretsError::Corrupt(e.to_string()))?;
        if bytes.len() < 24 {
            return Err(SecretsError::Corrupt("too short".into()));
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretsError::Corrupt("authentication failed".into()))?;
        String::from_utf8(plain).map_err(|e| SecretsError::Corrupt(e.to_string()))
    }

    /// Whether `stored` is sealed with the current key (else a re-save re-seals it).
    pub fn is_current(&self, stored: &str) -> bool {
        stored.is_empty()
            || stored
                .strip_prefix(PREFIX)
                .and_then(|r| r.split_once(':'))
                .is_some_and(|(id, _)| id == self.current_id())
    }
}

/// The JSON paths of a stored clinic that hold secrets.
pub const CLINIC_SECRET_PATHS: &[&[&str]] = &[
    &["app_secret"],
    &["access_token"],
    &["callback", "secret"],
    &["emr", "fhir", "auth_token"],
];

/// Applies `f` to every secret string of a clinic's JSON.
pub fn map_clinic_secrets(
    v: &mut serde_json::Value,
    mut f: impl FnMut(&str) -> Result<String, SecretsError>,
) -> Result<(), SecretsError> {
    for path in CLINIC_SECRET_PATHS {
        let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
        if let Some(at) = v.pointer_mut(&pointer) {
            if let Some(s) = at.as_str() {
                let mapped = f(s)?;
                *at = serde_json::Value::String(mapped);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn seals_opens_and_rotates() {
        let old = SecretKeys::parse(&format!("k1:{}", key(1))).unwrap_or_else(|e| panic!("{e}"));
        let sealed = old.seal("EAAG-token").unwrap_or_else(|e| panic!("{e}"));
        assert!(sealed.starts_with("enc:v1:k1:") && !sealed.contains("EAAG"));
        assert_ne!(
            sealed,
            old.seal("EAAG-token").unwrap_or_default(),
            "fresh nonce each time"
        );
        assert_eq!(old.open(&sealed).as_deref(), Ok("EAAG-token"));
        assert_eq!(
            old.open("plain-from-before").as_deref(),
            Ok("plain-from-before")
        );
        // Rotation: the new key seals, the old one still opens.
        let both = SecretKeys::parse(&format!("k2:{}, k1:{}", key(2), key(1)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(both.open(&sealed).as_deref(), Ok("EAAG-token"));
        assert!(!both.is_current(&sealed));
        assert!(both.is_current(&both.seal("x").unwrap_or_default()));
        let only_new =
            SecretKeys::parse(&format!("k2:{}", key(2))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            only_new.open(&sealed),
            Err(SecretsError::UnknownKey("k1".into()))
        );
        // Tampering is detected.
        let mut bad = sealed.clone();
        bad.pop();
        bad.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(old.open(&bad), Err(SecretsError::Corrupt(_))));
    }

    #[test]
    fn bad_key_specs_say_why() {
        for spec in [
            "",
            "nokey",
            "k1:short",
            &format!("k 1:{}", key(1)),
            &format!("k1:{0},k1:{0}", key(1)),
        ] {
            assert!(
                matches!(SecretKeys::parse(spec), Err(SecretsError::BadKeys(_))),
                "{spec}"
            );
        }
    }

    #[test]
    fn every_clinic_secret_is_mapped() {
        let mut v = serde_json::json!({"app_secret": "a", "access_token": "b", "callback": {"url": "u", "secret": "c"},
            "emr": {"fhir": {"base_url": "x", "auth_token": "d"}}, "display_name": "keep"});
        map_clinic_secrets(&mut v, |s| Ok(format!("<{s}>"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["app_secret"], "<a>");
        assert_eq!(v["callback"]["secret"], "<c>");
        assert_eq!(v["emr"]["fhir"]["auth_token"], "<d>");
        assert_eq!(v["display_name"], "keep");
    }
}
