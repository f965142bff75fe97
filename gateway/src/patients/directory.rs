//! [`PatientDirectory`]: reads and writes go to the store; filters run over a per-clinic
//! in-memory index ([`ClinicIndex`]) that is loaded on first use and brought up to date from the
//! clinic's change feed before every filter, so writes made through any node are seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::filter::PatientFilter;
use super::index::{entry_of, ClinicIndex, IndexError};
use super::{ConsentState, PatientRecord, Purpose};
use crate::clock::now_ms;
use crate::domain::{TenantId, E164};
use crate::store::patients::{Expect, PatientWrite, PutOutcome};
use crate::store::{Backend, StoreError};

/// Changes read from the feed per round trip while catching up.
const FEED_CHUNK: usize = 10_000;
/// Patients per page when scanning records (the fallback filter).
const SCAN_PAGE: usize = 2_000;
/// Index entries per page when loading an index (a few dozen bytes each).
const INDEX_PAGE: usize = 10_000;
/// Records fetched per store call when returning matches.
const FETCH_CHUNK: usize = 8_000;
/// Compare-and-set rounds before a write gives up.
const CAS_ROUNDS: usize = 8;
/// The external id of a record created for a phone the clinic never sent (a STOP from an
/// unknown number): `wa:<digits>`. The clinic's own record for that phone absorbs it.
pub const PLACEHOLDER_PREFIX: &str = "wa:";

/// Memory bounds of the indexes one node keeps.
#[derive(Debug, Clone)]
pub struct IndexLimits {
    /// Patients held across all clinics' indexes. Loading a clinic drops the least recently used
    /// indexes to make room; a clinic larger than this alone is filtered by scanning the store
    /// (correct, but seconds instead of milliseconds).
    pub max_patients: usize,
    /// An index unused this long is dropped.
    pub idle: Duration,
}

impl Default for IndexLimits {
    /// 4,000,000 patients (about 640 MB at the measured ~160 B each), dropped after 30 min idle.
    fn default() -> Self {
        Self {
            max_patients: 4_000_000,
            idle: Duration::from_secs(30 * 60),
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// The id was new.
    pub created: bool,
    /// The record as stored (normalised, consent merged, `updated_ms` set).
    pub record: PatientRecord,
}

/// A patient a filter selected, from the index alone (no store round trip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientMatch {
    pub external_id: String,
    pub phone: E164,
    pub language: Option<String>,
}

/// A page of matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchPage {
    /// How many patients match in all.
    pub total: usize,
    pub matches: Vec<PatientMatch>,
    /// The last id of this page when more follow (pass as `after`).
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Clinics with an index in memory.
    pub clinics: usize,
    /// Patients across those indexes.
    pub patients: usize,
}

struct Slot {
    index: Arc<AsyncMutex<Option<ClinicIndex>>>,
    last_used_ms: AtomicI64,
    size: AtomicUsize,
}

struct Inner {
    store: Arc<dyn Backend>,
    limits: IndexLimits,
    slots: parking_lot::Mutex<HashMap<TenantId, Arc<Slot>>>,
}

/// The clinics' patient directories. Cheap to clone.
#[derive(Clone)]
pub struct PatientDirectory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PatientDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientDirectory")
            .field("limits", &self.inner.limits)
            .field("stats", &self.index_stats())
            .finish_non_exhaustive()
    }
}

fn encode(p: &PatientRecord) -> Result<String, StoreError> {
    serde_json::to_string(p)
        .map_err(|e| StoreError::Unavailable(format!("encoding a patient: {e}")))
}

fn decode(id: &str, json: &str) -> Result<PatientRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: format!("patient {}", id.chars().take(64).collect::<String>()),
        why: e.to_string(),
    })
}

/// A write being prepared: the record to store and what it replaces.
struct Pending {
    /// Index into the caller's batch.
    at: usize,
    record: PatientRecord,
    json: String,
    /// Its index entry.
    entry: String,
    old: Option<String>,
    /// A placeholder record of the same phone to erase once this one is written.
    absorb: Option<String>,
}

impl PatientDirectory {
    pub fn new(store: Arc<dyn Backend>) -> Self {
        Self::with_limits(store, IndexLimits::default())
    }

    pub fn with_limits(store: Arc<dyn Backend>, limits: IndexLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                limits,
                slots: parking_lot::Mutex::new(HashMap::new()),
            }),
        }
    }

    fn store(&self) -> &dyn Backend {
        &*self.inner.store
    }

    /// Creates or replaces a patient.
    pub async fn upsert(&self, tenant: &TenantId, p: PatientRecord) -> Result<(), StoreError> {
        self.put(tenant, p).await.map(|_| ())
    }

    /// Creates or replaces a patient and tells which, with the record as stored.
    ///
    /// Tags and conditions are normalised; per purpose, the consent that changed later is kept
    /// (a record stating no consent, i.e. time 0, never undoes a patient's STOP).
    pub async fn put(&self, tenant: &TenantId, p: PatientRecord) -> Result<Upserted, StoreError> {
        let mut out = self.put_many(tenant, vec![p]).await?;
        out.pop()
            .ok_or_else(|| StoreError::Unavailable("the write returned nothing".into()))
    }

    /// [`Self::put`] for many patients at once (pipelined; the same id twice: the later wins).
    /// The result is in the order given.
    pub async fn put_many(
        &self,
        tenant: &TenantId,
        records: Vec<PatientRecord>,
    ) -> Result<Vec<Upserted>, StoreError> {
        let mut results: Vec<Option<Upserted>> = vec![None; records.len()];
        // Rounds of distinct ids, so a batch never races itself.
        let mut rounds: Vec<Vec<(usize, PatientRecord)>> = Vec::new();
        let mut round_of: HashMap<String, usize> = HashMap::new();
        for (at, mut p) in records.into_iter().enumerate() {
            p.normalise();
            let r = round_of.get(&p.external_id).map_or(0, |r| r + 1);
            round_of.insert(p.external_id.clone(), r);
            if rounds.len() <= r {
                rounds.push(Vec::new());
            }
            rounds[r].push((at, p));
        }
        for round in rounds {
            self.put_round(tenant, round, &mut results).await?;
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| StoreError::Unavailable("a write was not attempted".into())))
            .collect()
    }

    async fn put_round(
        &self,
        tenant: &TenantId,
        mut todo: Vec<(usize, PatientRecord)>,
        results: &mut [Option<Upserted>],
    ) -> Result<(), StoreError> {
        let mut applied: Vec<(u64, String, Option<String>)> = Vec::new();
        for _ in 0..CAS_ROUNDS {
            if todo.is_empty() {
                break;
            }
            // The stored records, and any placeholder of the same phone, in one pipelined read.
            let mut ids: Vec<String> = Vec::with_capacity(todo.len() * 2);
            for (_, p) in &todo {
                ids.push(p.external_id.clone());
                ids.push(format!("{PLACEHOLDER_PREFIX}{}", p.phone.digits()));
            }
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let stored = self.store().patient_jsons(tenant, &id_refs).await?;
            let now = now_ms();
            let mut pending = Vec::with_capacity(todo.len());
            for (k, (at, mut p)) in todo.drain(..).enumerate() {
                let old = stored.get(2 * k).cloned().flatten();
                if let Some(old_json) = &old {
                    // An unreadable stored record is replaced, not merged.
                    if let Ok(o) = decode(&p.external_id, old_json) {
                        p.consent.merge_newer(&o.consent);
                    }
                }
                let placeholder = &ids[2 * k + 1];
                let mut absorb = None;
                if *placeholder != p.external_id {
                    if let Some(ph_json) = stored.get(2 * k + 1).cloned().flatten() {
                        if let Ok(ph) = decode(placeholder, &ph_json) {
                            p.consent.merge_newer(&ph.consent);
                        }
                        absorb = Some(placeholder.clone());
                    }
                }
                p.updated_ms = now;
                let json = encode(&p)?;
                pending.push(Pending {
                    at,
                    entry: entry_of(&p),
                    record: p,
                    json,
                    old,
                    absorb,
                });
            }
            let writes: Vec<PatientWrite<'_>> = pending
                .iter()
                .map(|w| PatientWrite {
                    external_id: &w.record.external_id,
                    phone: w.record.phone.digits(),
                    json: &w.json,
                    index: &w.entry,
                    expect: match &w.old {
                        Some(o) => Expect::Json(o),
                        None => Expect::Absent,
                    },
                })
                .collect();
            let outcomes = self.store().put_patients(tenant, &writes).await?;
            drop(writes);
            let mut absorbed = Vec::new();
            for (w, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    PutOutcome::Written { version, created } => {
                        applied.push((version, w.record.external_id.clone(), Some(w.entry)));
                        if let Some(ph) = w.absorb {
                            absorbed.push(ph);
                        }
                        if let Some(slot) = results.get_mut(w.at) {
                            *slot = Some(Upserted {
                                created,
                                record: w.record,
                            });
                        }
                    }
                    PutOutcome::Conflict => todo.push((w.at, w.record)),
                }
            }
            absorbed.sort();
            absorbed.dedup();
            for ph in absorbed {
                if let Some(version) = self.store().delete_patient(tenant, &ph).await? {
                    applied.push((version, ph, None));
                }
            }
        }
        self.apply_local(tenant, applied);
        if todo.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{} patient(s) kept changing during the write; retry",
                todo.len()
            )))
        }
    }

    /// Applies this node's own writes to a loaded index when they directly follow its version
    /// (else the feed brings them before the next filter). Never waits for a busy index.
    fn apply_local(&self, tenant: &TenantId, mut changes: Vec<(u64, String, Option<String>)>) {
        let Some(slot) = self.inner.slots.lock().get(tenant).cloned() else {
            return;
        };
        let Ok(mut g) = slot.index.try_lock() else {
            return;
        };
        let Some(ix) = g.as_mut() else {
            return;
        };
        changes.sort_by_key(|(v, _, _)| *v);
        for (v, id, entry) in changes {
            if v <= ix.version {
                continue;
            }
            if v != ix.version + 1 {
                break;
            }
            match entry {
                Some(e) => {
                    if ix.put_entry(&id, &e).is_err() {
                        ix.remove(&id);
                    }
                }
                None => ix.remove(&id),
            }
            ix.version = v;
        }
        slot.size.store(ix.len(), Ordering::Relaxed);
    }

    pub async fn get(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<PatientRecord>, StoreError> {
        let json = self
            .store()
            .patient_jsons(tenant, &[external_id])
            .await?
            .pop()
            .flatten();
        json.map(|j| decode(external_id, &j)).transpose()
    }

    /// The clinic's patient with this phone (the lowest external id if several share it, as
    /// family members often do).
    pub async fn by_phone(
        &self,
        tenant: &TenantId,
        phone: &E164,
    ) -> Result<Option<PatientRecord>, StoreError> {
        Ok(self.all_by_phone(tenant, phone).await?.into_iter().next())
    }

    /// Every patient of the clinic with this phone, in external id order.
    pub async fn all_by_phone(
        &self,
        tenant: &TenantId,
        phone: &E164,
    ) -> Result<Vec<PatientRecord>, StoreError> {
        Ok(self
            .by_phone_raw(tenant, phone)
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    async fn by_phone_raw(
        &self,
        tenant: &TenantId,
        phone: &E164,
    ) -> Result<Vec<(String, PatientRecord)>, StoreError> {
        let ids = self
            .store()
            .patient_ids_by_phone(tenant, phone.digits())
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let jsons = self.store().patient_jsons(tenant, &refs).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, json) in ids.iter().zip(jsons) {
            let Some(json) = json else { continue };
            let p = decode(id, &json)?;
            // The index entry may lag a concurrent change of phone.
            if &p.phone == phone {
                out.push((json, p));
            }
        }
        Ok(out)
    }

    /// Erases a patient. `false` if there was none.
    pub async fn delete(&self, tenant: &TenantId, external_id: &str) -> Result<bool, StoreError> {
        match self.store().delete_patient(tenant, external_id).await? {
            Some(version) => {
                self.apply_local(tenant, vec![(version, external_id.to_owned(), None)]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub async fn count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.store().patient_count(tenant).await
    }

    /// Sets one purpose's consent for every patient with this phone (STOP/START from WhatsApp);
    /// creates a minimal record `wa:<digits>` if the phone is unknown (a later record of the
    /// clinic with this phone takes its consent over and replaces it).
    pub async fn set_consent(
        &self,
        tenant: &TenantId,
        phone: &E164,
        purpose: Purpose,
        granted: bool,
        source: &str,
    ) -> Result<(), StoreError> {
        for _ in 0..CAS_ROUNDS {
            let now = now_ms();
            let found = self.by_phone_raw(tenant, phone).await?;
            // (stored JSON, new record, its JSON, its index entry)
            let mut pending: Vec<(Option<String>, PatientRecord, String, String)> = Vec::new();
            if found.is_empty() {
                let mut p = PatientRecord::new(
                    format!("{PLACEHOLDER_PREFIX}{}", phone.digits()),
                    phone.clone(),
                );
                *p.consent.get_mut(purpose) = ConsentState::new(granted, now, source);
                p.updated_ms = now;
                let json = encode(&p)?;
                let entry = entry_of(&p);
                pending.push((None, p, json, entry));
            } else {
                for (old, mut p) in found {
                    *p.consent.get_mut(purpose) = ConsentState::new(granted, now, source);
                    p.updated_ms = now;
                    let json = encode(&p)?;
                    let entry = entry_of(&p);
                    pending.push((Some(old), p, json, entry));
                }
            }
            let writes: Vec<PatientWrite<'_>> = pending
                .iter()
                .map(|(old, p, json, entry)| PatientWrite {
                    external_id: &p.external_id,
                    phone: p.phone.digits(),
                    json,
                    index: entry,
                    expect: old.as_deref().map_or(Expect::Absent, Expect::Json),
                })
                .collect();
            let outcomes = self.store().put_patients(tenant, &writes).await?;
            let mut applied = Vec::new();
            let mut conflict = false;
            for ((_, p, _, entry), o) in pending.iter().zip(&outcomes) {
                match o {
                    PutOutcome::Written { version, .. } => {
                        applied.push((*version, p.external_id.clone(), Some(entry.clone())))
                    }
                    PutOutcome::Conflict => conflict = true,
                }
            }
            self.apply_local(tenant, applied);
            if !conflict {
                return Ok(());
            }
        }
        Err(StoreError::Conflict(
            "the patient's records kept changing while setting consent; retry".into(),
        ))
    }

    /// Patients matching the filter, in a stable order (external id), evaluated in memory.
    pub async fn select(
        &self,
        tenant: &TenantId,
        filter: &PatientFilter,
        today: NaiveDate,
    ) -> Result<Vec<PatientRecord>, StoreError> {
        let page = self.query(tenant, filter, today, None, usize::MAX).await?;
        let ids: Vec<&str> = page
            .matches
            .iter()
            .map(|m| m.external_id.as_str())
            .collect();
        self.records(tenant, &ids).await
    }

    /// The matches only (id, phone, language), from the index without fetching records.
    pub async fn select_matches(
        &self,
        tenant: &TenantId,
        filter: &PatientFilter,
        today: NaiveDate,
    ) -> Result<Vec<PatientMatch>, StoreError> {
        Ok(self
            .query(tenant, filter, today, None, usize::MAX)
            .await?
            .matches)
    }

    /// The full records of these ids, in the order given (ids no longer stored are left out),
    /// fetched in pipelined chunks.
    pub async fn records(
        &self,
        tenant: &TenantId,
        ids: &[&str],
    ) -> Result<Vec<PatientRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut unreadable = 0usize;
        for chunk in ids.chunks(FETCH_CHUNK) {
            let jsons = self.store().patient_jsons(tenant, chunk).await?;
            for (id, json) in chunk.iter().zip(jsons) {
                let Some(json) = json else { continue };
                match decode(id, &json) {
                    Ok(p) => out.push(p),
                    Err(_) => unreadable += 1,
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(tenant = %tenant, unreadable, "patient records could not be read");
        }
        Ok(out)
    }

    /// One page of the patients matching `filter`: at most `limit` after the id `after`, and
    /// how many match in all.
    pub async fn query(
        &self,
        tenant: &TenantId,
        filter: &PatientFilter,
        today: NaiveDate,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MatchPage, StoreError> {
        let filter = filter.normalised();
        let Some(guard) = self.synced(tenant).await? else {
            return self
                .query_by_scan(tenant, &filter, today, after, limit)
                .await;
        };
        let Some(ix) = guard.as_ref() else {
            return self
                .query_by_scan(tenant, &filter, today, after, limit)
                .await;
        };
        let Some(compiled) = ix.compile(&filter, today) else {
            return Ok(MatchPage::default());
        };
        let mut page = MatchPage::default();
        for (id, e) in ix.select(&compiled, after) {
            page.total += 1;
            if page.matches.len() < limit {
                let Ok(phone) = E164::parse(&format!("+{}", e.phone_digits())) else {
                    continue;
                };
                page.matches.push(PatientMatch {
                    external_id: id.to_owned(),
                    phone,
                    language: ix.language_of(e).map(str::to_owned),
                });
            }
        }
        if after.is_some() {
            // `total` counts from the start, not from `after`.
            page.total = ix.select(&compiled, None).count();
        }
        if page.matches.len() == limit && page.total > page.matches.len() {
            page.next_after = page.matches.last().map(|m| m.external_id.clone());
        }
        Ok(page)
    }

    /// The fallback for a clinic too large to index: reads every record once.
    async fn query_by_scan(
        &self,
        tenant: &TenantId,
        filter: &PatientFilter,
        today: NaiveDate,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MatchPage, StoreError> {
        let mut all: Vec<PatientMatch> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store()
                .scan_patients(tenant, cursor.as_deref(), SCAN_PAGE)
                .await?;
            for (id, json) in page.items {
                let Ok(p) = decode(&id, &json) else { continue };
                if filter.matches(&p, today) {
                    all.push(PatientMatch {
                        external_id: id,
                        phone: p.phone,
                        language: p.language,
                    });
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        all.sort_by(|a, b| a.external_id.cmp(&b.external_id));
        all.dedup_by(|a, b| a.external_id == b.external_id);
        let total = all.len();
        let matches: Vec<PatientMatch> = all
            .into_iter()
            .filter(|m| after.is_none_or(|a| m.external_id.as_str() > a))
            .take(limit)
            .collect();
        let next_after = (matches.len() == limit)
            .then(|| matches.last().map(|m| m.external_id.clone()))
            .flatten();
        Ok(MatchPage {
            total,
            matches,
            next_after,
        })
    }

    /// Loads (or brings up to date) the clinic's index now; returns how many patients it holds,
    /// `None` if the clinic is too large to index.
    pub async fn load_index(&self, tenant: &TenantId) -> Result<Option<usize>, StoreError> {
        Ok(self
            .synced(tenant)
            .await?
            .and_then(|g| g.as_ref().map(ClinicIndex::len)))
    }

    /// Drops the clinic's index (the next filter loads it again).
    pub async fn drop_index(&self, tenant: &TenantId) {
        let slot = self.inner.slots.lock().remove(tenant);
        if let Some(slot) = slot {
            *slot.index.lock().await = None;
        }
    }

    pub fn index_stats(&self) -> IndexStats {
        let slots = self.inner.slots.lock();
        let mut s = IndexStats::default();
        for slot in slots.values() {
            let n = slot.size.load(Ordering::Relaxed);
            if n > 0 {
                s.clinics += 1;
                s.patients += n;
            }
        }
        s
    }

    fn slot(&self, tenant: &TenantId) -> Arc<Slot> {
        self.inner
            .slots
            .lock()
            .entry(tenant.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    index: Arc::new(AsyncMutex::new(None)),
                    last_used_ms: AtomicI64::new(now_ms()),
                    size: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// The clinic's index, current as of now; `None` if the clinic must be scanned instead.
    async fn synced(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<OwnedMutexGuard<Option<ClinicIndex>>>, StoreError> {
        self.drop_idle(tenant);
        let slot = self.slot(tenant);
        let mut g = slot.index.clone().lock_owned().await;
        slot.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(ix) = g.as_mut() {
            if self.catch_up(tenant, ix).await? {
                slot.size.store(ix.len(), Ordering::Relaxed);
                return Ok(Some(g));
            }
            *g = None;
            slot.size.store(0, Ordering::Relaxed);
        }
        let count =
            usize::try_from(self.store().patient_count(tenant).await?).unwrap_or(usize::MAX);
        if count > self.inner.limits.max_patients {
            return Ok(None);
        }
        self.make_room(tenant, count);
        match self.load(tenant).await? {
            Some(ix) => {
                slot.size.store(ix.len(), Ordering::Relaxed);
                *g = Some(ix);
                Ok(Some(g))
            }
            None => Ok(None),
        }
    }

    /// Applies the feed since the index's version. `false` if the feed cannot bring it up to
    /// date (trimmed past it, or the store went back in time): reload.
    async fn catch_up(&self, tenant: &TenantId, ix: &mut ClinicIndex) -> Result<bool, StoreError> {
        loop {
            let c = self
                .store()
                .patient_changes(tenant, ix.version, FEED_CHUNK)
                .await?;
            if c.gap || c.version < ix.version {
                return Ok(false);
            }
            if c.version == ix.version {
                return Ok(true);
            }
            if c.upto <= ix.version {
                return Ok(false);
            }
            for (id, entry) in c.changed {
                match entry {
                    Some(e) => {
                        if let Err(e) = ix.put_entry(&id, &e) {
                            if matches!(e, IndexError::Full(_)) {
                                return Ok(false);
                            }
                            tracing::warn!(tenant = %tenant, error = %e, "unreadable patient record left out of the index");
                            ix.remove(&id);
                        }
                    }
                    None => ix.remove(&id),
                }
            }
            ix.version = c.upto;
            if c.upto >= c.version {
                return Ok(true);
            }
        }
    }

    /// Builds the clinic's index from a full scan. `None` if the index cannot hold the clinic.
    async fn load(&self, tenant: &TenantId) -> Result<Option<ClinicIndex>, StoreError> {
        let started = std::time::Instant::now();
        // The version first: changes during the scan are applied again from the feed.
        let mut ix = ClinicIndex::new(self.store().patient_version(tenant).await?);
        let mut unreadable = 0usize;
        // The next page is fetched while this one is indexed (Redis works while we parse).
        let fetch = |cursor: Option<String>| {
            let store = self.inner.store.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                store
                    .scan_patient_index(&tenant, cursor.as_deref(), INDEX_PAGE)
                    .await
            })
        };
        let mut next = Some(fetch(None));
        while let Some(pending) = next.take() {
            let page = pending.await.map_err(|e| {
                StoreError::Unavailable(format!("loading the patient index: {e}"))
            })??;
            if let Some(cursor) = page.next.clone() {
                next = Some(fetch(Some(cursor)));
                // Let the fetch send its request before the CPU-bound indexing below.
                tokio::task::yield_now().await;
            }
            for (id, entry) in &page.items {
                match ix.put_entry(id, entry) {
                    Ok(()) => {}
                    Err(IndexError::Full(what)) => {
                        tracing::warn!(tenant = %tenant, what, "patient index full; filtering by scan");
                        return Ok(None);
                    }
                    Err(IndexError::Unreadable { .. }) => unreadable += 1,
                }
            }
        }
        if unreadable > 0 {
            tracing::warn!(tenant = %tenant, unreadable, "unreadable patient records left out of the index");
        }
        tracing::info!(
            tenant = %tenant,
            patients = ix.len(),
            ms = started.elapsed().as_millis() as u64,
            "patient index loaded"
        );
        Ok(Some(ix))
    }

    /// Drops indexes idle longer than the limit (never `keep`'s, never one in use).
    fn drop_idle(&self, keep: &TenantId) {
        let idle_ms = i64::try_from(self.inner.limits.idle.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let mut slots = self.inner.slots.lock();
        slots.retain(|t, slot| {
            if t == keep || now.saturating_sub(slot.last_used_ms.load(Ordering::Relaxed)) < idle_ms
            {
                return true;
            }
            match slot.index.try_lock() {
                Ok(mut g) => {
                    *g = None;
                    false
                }
                Err(_) => true,
            }
        });
    }

    /// Drops the least recently used indexes until `needed` more patients fit.
    fn make_room(&self, keep: &TenantId, needed: usize) {
        let slots = self.inner.slots.lock();
        let mut total: usize = slots.values().map(|s| s.size.load(Ordering::Relaxed)).sum();
        if total.saturating_add(needed) <= self.inner.limits.max_patients {
            return;
        }
        let mut by_age: Vec<(&TenantId, &Arc<Slot>)> =
            slots.iter().filter(|(t, _)| *t != keep).collect();
        by_age.sort_by_key(|(_, s)| s.last_used_ms.load(Ordering::Relaxed));
        for (_, slot) in by_age {
            if total.saturating_add(needed) <= self.inner.limits.max_patients {
                break;
            }
            if let Ok(mut g) = slot.index.try_lock() {
                total = total.saturating_sub(slot.size.swap(0, Ordering::Relaxed));
                *g = None;
            }
        }
    }
}
