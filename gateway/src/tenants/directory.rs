//! The node's view of all clinics: loaded from the store, updated in place by this node's admin
//! changes, and reloaded (at most once a second) when another node changed the store's directory
//! version. Lookups take a read lock just long enough to clone an `Arc`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::hash_api_key;
use super::model::ClinicSettings;
use crate::domain::{PhoneNumberId, TenantId};
use crate::store::tenancy::{ApiKeyRecord, TenantStore};
use crate::store::StoreError;

#[derive(Default)]
struct Snapshot {
    version: u64,
    by_id: HashMap<TenantId, Arc<ClinicSettings>>,
    by_key_hash: HashMap<String, TenantId>,
    by_number: HashMap<PhoneNumberId, TenantId>,
    by_waba: HashMap<String, Vec<TenantId>>,
}

impl Snapshot {
    fn remove_clinic(&mut self, id: &TenantId) {
        if let Some(old) = self.by_id.remove(id) {
            for n in &old.numbers {
                if self.by_number.get(&n.phone_number_id) == Some(id) {
                    self.by_number.remove(&n.phone_number_id);
                }
            }
            if let Some(list) = self.by_waba.get_mut(&old.waba_id) {
                list.retain(|t| t != id);
                if list.is_empty() {
                    self.by_waba.remove(&old.waba_id);
                }
            }
        }
    }

    fn insert_clinic(&mut self, c: ClinicSettings) {
        self.remove_clinic(&c.id);
        for n in &c.numbers {
            self.by_number
                .insert(n.phone_number_id.clone(), c.id.clone());
        }
        self.by_waba
            .entry(c.waba_id.clone())
            .or_default()
            .push(c.id.clone());
        self.by_id.insert(c.id.clone(), Arc::new(c));
    }
}

#[derive(Default)]
pub struct Directory {
    snapshot: RwLock<Snapshot>,
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
            s.insert_clinic(c);
        }
        for k in keys {
            if k.revoked_ms.is_none() {
                s.by_key_hash.insert(k.hash.to_ascii_lowercase(), k.tenant);
            }
        }
        *self.snapshot.write() = s;
        Ok(true)
    }

    /// Applies a clinic this node just stored, without reloading every clinic.
    pub fn upsert_clinic(&self, clinic: ClinicSettings) {
        self.snapshot.write().insert_clinic(clinic);
    }

    /// After this node's own change moved the store's version by one, records it as seen, so the
    /// periodic refresh does not reload everything for a change already applied. A jump of more
    /// than one means another node changed something too: the next refresh reloads.
    pub fn seen_own_change(&self, version: u64) {
        let mut s = self.snapshot.write();
        if version == s.version + 1 {
            s.version = version;
        }
    }

    /// Applies an API key this node just stored or revoked.
    pub fn apply_key(&self, key: &ApiKeyRecord) {
        let mut s = self.snapshot.write();
        let hash = key.hash.to_ascii_lowercase();
        if key.revoked_ms.is_none() {
            s.by_key_hash.insert(hash, key.tenant.clone());
        } else {
            s.by_key_hash.remove(&hash);
        }
    }

    /// The active clinic an API key belongs to. Suspended clinics' keys are refused.
    pub fn by_api_key(&self, key: &str) -> Option<Arc<ClinicSettings>> {
        let hash = hash_api_key(key);
        let s = self.snapshot.read();
        let tenant = s.by_key_hash.get(&hash)?;
        s.by_id.get(tenant).filter(|c| c.is_active()).cloned()
    }

    pub fn get(&self, id: &TenantId) -> Option<Arc<ClinicSettings>> {
        self.snapshot.read().by_id.get(id).cloned()
    }

    pub fn by_number(&self, number: &PhoneNumberId) -> Option<Arc<ClinicSettings>> {
        let s = self.snapshot.read();
        s.by_number
            .get(number)
            .and_then(|t| s.by_id.get(t))
            .cloned()
    }

    pub fn by_waba(&self, waba: &str) -> Vec<Arc<ClinicSettings>> {
        let s = self.snapshot.read();
        s.by_waba
            .get(waba)
            .into_iter()
            .flatten()
            .filter_map(|t| s.by_id.get(t).cloned())
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<ClinicSettings>> {
        self.snapshot.read().by_id.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.snapshot.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn version(&self) -> u64 {
        self.snapshot.read().version
    }
}
