//! The node's view of all clinics: loaded from the store, reloaded when the store's directory
//! version changes (any node's admin change), and read lock-free-ish on every request.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::hash_api_key;
use super::model::ClinicSettings;
use crate::domain::{PhoneNumberId, TenantId};
use crate::store::tenancy::TenantStore;
use crate::store::StoreError;

#[derive(Default)]
struct Snapshot {
    version: u64,
    by_id: HashMap<TenantId, Arc<ClinicSettings>>,
    by_key_hash: HashMap<String, TenantId>,
    by_number: HashMap<PhoneNumberId, TenantId>,
    by_waba: HashMap<String, Vec<TenantId>>,
}

#[derive(Default)]
pub struct Directory {
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reloads everything if the store's version moved (or `force`). Returns whether it reloaded.
    pub async fn refresh(&self, store: &dyn TenantStore, force: bool) -> Result<bool, StoreError> {
        let version = store.directory_version().await?;
        if !force && version == self.snapshot.read().version && version != 0 {
            return Ok(false);
        }
        let clinics = store.clinics().await?;
        let keys = store.active_api_keys().await?;
        let mut s = Snapshot {
            version,
            ..Snapshot::default()
        };
        for c in clinics {
            for n in &c.numbers {
                s.by_number.insert(n.phone_number_id.clone(), c.id.clone());
            }
            s.by_waba
                .entry(c.waba_id.clone())
                .or_default()
                .push(c.id.clone());
            s.by_id.insert(c.id.clone(), Arc::new(c));
        }
        for k in keys {
            if k.revoked_ms.is_none() {
                s.by_key_hash.insert(k.hash.to_ascii_lowercase(), k.tenant);
            }
        }
        *self.snapshot.write() = Arc::new(s);
        Ok(true)
    }

    fn snap(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// The active clinic an API key belongs to. Suspended clinics' keys are refused.
    pub fn by_api_key(&self, key: &str) -> Option<Arc<ClinicSettings>> {
        let s = self.snap();
        let tenant = s.by_key_hash.get(&hash_api_key(key))?;
        s.by_id.get(tenant).filter(|c| c.is_active()).cloned()
    }

    pub fn get(&self, id: &TenantId) -> Option<Arc<ClinicSettings>> {
        self.snap().by_id.get(id).cloned()
    }

    pub fn by_number(&self, number: &PhoneNumberId) -> Option<Arc<ClinicSettings>> {
        let s = self.snap();
        s.by_number
            .get(number)
            .and_then(|t| s.by_id.get(t))
            .cloned()
    }

    pub fn by_waba(&self, waba: &str) -> Vec<Arc<ClinicSettings>> {
        let s = self.snap();
        s.by_waba
            .get(waba)
            .into_iter()
            .flatten()
            .filter_map(|t| s.by_id.get(t).cloned())
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<ClinicSettings>> {
        self.snap().by_id.values().cloned().collect()
    }

    pub fn version(&self) -> u64 {
        self.snap().version
    }
}
