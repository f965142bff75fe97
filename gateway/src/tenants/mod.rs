//! Clinics (tenants): their settings, API keys, and the node's directory that resolves API keys,
//! business numbers and WABA ids to a clinic.

pub mod actors;
pub mod bootstrap;
pub mod directory;
pub mod model;

use sha2::{Digest, Sha256};

pub use directory::Directory;
pub use model::{BusinessNumber, ClinicSettings, Secret};

/// SHA-256 hex of an API key: the only form in which keys are stored or compared.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new API key: 32 random bytes, hex, with a recognisable prefix.
pub fn generate_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("cgk_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let s = Secret::new("EAAG-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn api_keys_are_compared_by_hash() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k = generate_api_key();
        assert!(k.starts_with("cgk_") && k.len() == 4 + 64);
    }
}
