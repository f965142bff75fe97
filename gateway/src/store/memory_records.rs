//! `MemoryStore`'s records, consent and markers.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::records::{RecordEntry, RecordKind, RecordPut, RecordStore};
use super::{MemoryStore, StoreError};
use crate::clock::now_ms;
use crate::domain::TenantId;

type Scope = (TenantId, RecordKind);

#[derive(Default)]
pub struct State {
    /// id → (listed at, json).
    records: HashMap<Scope, HashMap<String, (i64, String)>>,
    external: HashMap<(Scope, String), String>,
    opted_out: HashSet<(TenantId, String)>,
    markers: HashMap<(TenantId, String, String), (String, i64)>,
}

fn patient_key(p: &str) -> String {
    super::memory_tenancy::patient_part(p)
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn put_record(&self, put: RecordPut<'_>) -> Result<(), StoreError> {
        let mut s = self.records.lock();
        let scope = (put.tenant.clone(), put.kind);
        if let Some(ext) = put.external {
            s.external
                .insert((scope.clone(), ext.to_owned()), put.id.to_owned());
        }
        s.records
            .entry(scope)
            .or_default()
            .insert(put.id.to_owned(), (put.at_ms, put.json.to_owned()));
        Ok(())
    }

    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .records
            .lock()
            .records
            .get(&(tenant.clone(), kind))
            .and_then(|m| m.get(id))
            .map(|(_, json)| json.clone()))
    }

    async fn record_by_external(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        external: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .records
            .lock()
            .external
            .get(&((tenant.clone(), kind), external.to_owned()))
            .cloned())
    }

    async fn records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let s = self.records.lock();
        let Some(m) = s.records.get(&(tenant.clone(), kind)) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(i64, &String, &String)> = m
            .iter()
            .filter(|(_, (at, _))| *at >= from_ms && *at < to_ms)
            .map(|(id, (at, json))| (*at, id, json))
            .collect();
        found.sort();
        Ok(found
            .into_iter()
            .take(limit)
            .map(|(_, _, json)| json.clone())
            .collect())
    }

    async fn record_entries(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<RecordEntry>, StoreError> {
        let s = self.records.lock();
        let Some(m) = s.records.get(&(tenant.clone(), kind)) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(i64, &String, &String)> = m
            .iter()
            .filter(|(_, (at, _))| *at >= from_ms && *at < to_ms)
            .map(|(id, (at, json))| (*at, id, json))
            .collect();
        found.sort();
        Ok(found
            .into_iter()
            .take(limit)
            .map(|(at_ms, id, json)| RecordEntry {
                id: id.clone(),
                at_ms,
                json: Some(json.clone()),
            })
            .collect())
    }

    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
        external: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut s = self.records.lock();
        let scope = (tenant.clone(), kind);
        if let Some(ext) = external {
            let key = (scope.clone(), ext.to_owned());
            if s.external.get(&key).is_some_and(|held| held == id) {
                s.external.remove(&key);
            }
        }
        Ok(s.records
            .get_mut(&scope)
            .and_then(|m| m.remove(id))
            .is_some())
    }

    async fn set_opted_out(
        &self,
        tenant: &TenantId,
        patient: &str,
        opted_out: bool,
    ) -> Result<(), StoreError> {
        let key = (tenant.clone(), patient_key(patient));
        let mut s = self.records.lock();
        if opted_out {
            s.opted_out.insert(key);
        } else {
            s.opted_out.remove(&key);
        }
        Ok(())
    }

    async fn opted_out(&self, tenant: &TenantId, patient: &str) -> Result<bool, StoreError> {
        Ok(self
            .records
            .lock()
            .opted_out
            .contains(&(tenant.clone(), patient_key(patient))))
    }

    async fn set_marker(
        &self,
        tenant: &TenantId,
        patient: &str,
        slot: &str,
        value: Option<&str>,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let key = (tenant.clone(), patient_key(patient), slot.to_owned());
        let mut s = self.records.lock();
        match value {
            Some(v) => {
                s.markers.insert(key, (v.to_owned(), now_ms() + ttl_ms));
            }
            None => {
                s.markers.remove(&key);
            }
        }
        Ok(())
    }

    async fn marker(
        &self,
        tenant: &TenantId,
        patient: &str,
        slot: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = (tenant.clone(), patient_key(patient), slot.to_owned());
        Ok(self
            .records
            .lock()
            .markers
            .get(&key)
            .filter(|(_, until)| *until > now_ms())
            .map(|(v, _)| v.clone()))
    }
}
