//! `MemoryStore`'s patient directory: the same contract as Redis (records, phone index, change
//! feed), under one lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use async_trait::async_trait;

use super::patients::{
    Expect, PatientChanges, PatientPage, PatientStore, PatientWrite, PutOutcome, FEED_LEN,
};
use super::{MemoryStore, StoreError};
use crate::domain::TenantId;

#[derive(Default)]
struct Stored {
    phone: String,
    json: String,
    index: String,
}

#[derive(Default)]
struct Clinic {
    records: BTreeMap<String, Stored>,
    /// `(phone digits, external id)`.
    phones: BTreeSet<(String, String)>,
    version: u64,
    /// `(version, external id)`, oldest first, at most [`FEED_LEN`].
    feed: VecDeque<(u64, String)>,
}

impl Clinic {
    fn log(&mut self, id: &str) -> u64 {
        self.version += 1;
        self.feed.push_back((self.version, id.to_owned()));
        while self.feed.len() as u64 > FEED_LEN {
            self.feed.pop_front();
        }
        self.version
    }
}

#[derive(Default)]
pub struct State {
    clinics: HashMap<TenantId, Clinic>,
}

#[async_trait]
impl PatientStore for MemoryStore {
    async fn put_patients(
        &self,
        tenant: &TenantId,
        writes: &[PatientWrite<'_>],
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let mut s = self.patients.lock();
        let c = s.clinics.entry(tenant.clone()).or_default();
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let old = c.records.get(w.external_id);
            let ok = match w.expect {
                Expect::Any => true,
                Expect::Absent => old.is_none(),
                Expect::Json(j) => old.is_some_and(|o| o.json == j),
            };
            if !ok {
                out.push(PutOutcome::Conflict);
                continue;
            }
            let stored = Stored {
                phone: w.phone.to_owned(),
                json: w.json.to_owned(),
                index: w.index.to_owned(),
            };
            let created = match c.records.insert(w.external_id.to_owned(), stored) {
                Some(old) => {
                    c.phones.remove(&(old.phone, w.external_id.to_owned()));
                    false
                }
                None => true,
            };
            c.phones
                .insert((w.phone.to_owned(), w.external_id.to_owned()));
            let version = c.log(w.external_id);
            out.push(PutOutcome::Written { version, created });
        }
        Ok(out)
    }

    async fn patient_jsons(
        &self,
        tenant: &TenantId,
        external_ids: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let s = self.patients.lock();
        let c = s.clinics.get(tenant);
        Ok(external_ids
            .iter()
            .map(|id| c.and_then(|c| c.records.get(*id)).map(|s| s.json.clone()))
            .collect())
    }

    async fn patient_ids_by_phone(
        &self,
        tenant: &TenantId,
        phone: &str,
    ) -> Result<Vec<String>, StoreError> {
        let s = self.patients.lock();
        let Some(c) = s.clinics.get(tenant) else {
            return Ok(Vec::new());
        };
        Ok(c.phones
            .range((phone.to_owned(), String::new())..)
            .take_while(|(p, _)| p == phone)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn delete_patient(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let mut s = self.patients.lock();
        let Some(c) = s.clinics.get_mut(tenant) else {
            return Ok(None);
        };
        let Some(old) = c.records.remove(external_id) else {
            return Ok(None);
        };
        c.phones.remove(&(old.phone, external_id.to_owned()));
        Ok(Some(c.log(external_id)))
    }

    async fn patient_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let s = self.patients.lock();
        Ok(s.clinics.get(tenant).map_or(0, |c| c.records.len() as u64))
    }

    async fn patient_version(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let s = self.patients.lock();
        Ok(s.clinics.get(tenant).map_or(0, |c| c.version))
    }

    async fn scan_patients(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError> {
        Ok(self.scan(tenant, cursor, count, |s| &s.json))
    }

    async fn scan_patient_index(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError> {
        Ok(self.scan(tenant, cursor, count, |s| &s.index))
    }

    async fn patient_changes(
        &self,
        tenant: &TenantId,
        since: u64,
        max: usize,
    ) -> Result<PatientChanges, StoreError> {
        let s = self.patients.lock();
        let Some(c) = s.clinics.get(tenant) else {
            return Ok(PatientChanges::default());
        };
        let mut out = PatientChanges {
            version: c.version,
            upto: since,
            ..PatientChanges::default()
        };
        if c.version <= since {
            out.upto = c.version.max(since);
            return Ok(out);
        }
        let first = c.feed.front().map_or(u64::MAX, |(v, _)| *v);
        if first > since + 1 {
            out.gap = true;
            return Ok(out);
        }
        let skip = (since + 1 - first) as usize;
        let mut seen = std::collections::HashSet::new();
        for (v, id) in c.feed.iter().skip(skip).take(max.max(1)) {
            out.upto = *v;
            if seen.insert(id.as_str()) {
                let json = c.records.get(id).map(|s| s.index.clone());
                out.changed.push((id.clone(), json));
            }
        }
        Ok(out)
    }
}

impl MemoryStore {
    fn scan(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
        field: impl Fn(&Stored) -> &String,
    ) -> PatientPage {
        let s = self.patients.lock();
        let Some(c) = s.clinics.get(tenant) else {
            return PatientPage::default();
        };
        let range = match cursor {
            None => c.records.range::<str, _>(..),
            Some(after) => c
                .records
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
        };
        let items: Vec<(String, String)> = range
            .take(count.max(1))
            .map(|(id, s)| (id.clone(), field(s).clone()))
            .collect();
        let next = match items.last() {
            Some((last, _)) if items.len() == count.max(1) => Some(last.clone()),
            _ => None,
        };
        PatientPage { items, next }
    }
}
