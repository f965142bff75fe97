//! Clinics (tenants) and their business numbers, resolved from API keys and webhook numbers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub mod model;

use sha2::{Digest, Sha256};

use crate::config::{ClinicConfig, NumberConfig};
use crate::domain::{PhoneNumberId, TenantId};

/// A secret (access token, app secret) that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct BusinessNumber {
    pub id: PhoneNumberId,
    pub display: String,
    pub tier_mps: u32,
}

#[derive(Debug)]
pub struct Clinic {
    pub id: TenantId,
    pub name: String,
    pub default_country_code: String,
    pub waba_id: String,
    pub app_secret: Secret,
    pub access_token: Secret,
    pub numbers: Vec<BusinessNumber>,
}

impl Clinic {
    pub fn number(&self, id: &PhoneNumberId) -> Option<&BusinessNumber> {
        self.numbers.iter().find(|n| &n.id == id)
    }
}

/// SHA-256 hex of an API key: the only form in which keys are stored or compared.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// All clinics this node serves, indexed for the API and webhook edges.
#[derive(Debug, Default)]
pub struct Tenants {
    by_key_hash: HashMap<String, Arc<Clinic>>,
    by_number: HashMap<PhoneNumberId, Arc<Clinic>>,
    by_waba: HashMap<String, Arc<Clinic>>,
    all: Vec<Arc<Clinic>>,
}

impl Tenants {
    pub fn from_config(clinics: &[ClinicConfig]) -> Self {
        let mut t = Tenants::default();
        for c in clinics {
            let clinic = Arc::new(Clinic {
                id: c.id.clone(),
                name: c.name.clone(),
                default_country_code: c.default_country_code.clone(),
                waba_id: c.waba_id.clone(),
                app_secret: Secret::new(&c.app_secret),
                access_token: Secret::new(&c.access_token),
                numbers: c.numbers.iter().map(number).collect(),
            });
            t.by_key_hash
                .insert(c.api_key_sha256.to_ascii_lowercase(), clinic.clone());
            for n in &clinic.numbers {
                t.by_number.insert(n.id.clone(), clinic.clone());
            }
            if !clinic.waba_id.is_empty() {
                t.by_waba.insert(clinic.waba_id.clone(), clinic.clone());
            }
            t.all.push(clinic);
        }
        t
    }

    pub fn by_api_key(&self, key: &str) -> Option<&Arc<Clinic>> {
        self.by_key_hash.get(&hash_api_key(key))
    }

    pub fn by_number(&self, id: &PhoneNumberId) -> Option<&Arc<Clinic>> {
        self.by_number.get(id)
    }

    pub fn by_waba(&self, id: &str) -> Option<&Arc<Clinic>> {
        self.by_waba.get(id)
    }

    pub fn all(&self) -> &[Arc<Clinic>] {
        &self.all
    }
}

fn number(n: &NumberConfig) -> BusinessNumber {
    BusinessNumber {
        id: n.phone_number_id.clone(),
        display: n.display.clone(),
        tier_mps: n.tier_mps,
    }
}

/// A new API key: 32 random bytes, URL-safe hex with a recognisable prefix.
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
    }
}
