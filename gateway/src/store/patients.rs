//! The per-clinic patient directory's storage: each patient as JSON under the clinic's external
//! id, beside it a compact projection of the fields filters read (the "index entry", a few dozen
//! bytes), an index by phone, and a change feed (a version counter plus the ids each version
//! touched) that lets every node keep an in-memory filter index current. The directory layer
//! (`crate::patients`) owns the record type and the projection's format; the store only sees ids,
//! phone digits and opaque strings.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::TenantId;

/// What a write expects to find, for compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// Write whatever is there.
    Any,
    /// Only if the patient does not exist.
    Absent,
    /// Only if the stored JSON is exactly this.
    Json(&'a str),
}

/// One patient to write.
#[derive(Debug, Clone, Copy)]
pub struct PatientWrite<'a> {
    pub external_id: &'a str,
    /// The phone number's digits (E.164 without `+`), for the phone index.
    pub phone: &'a str,
    pub json: &'a str,
    /// The record's index entry (its projection for filtering).
    pub index: &'a str,
    pub expect: Expect<'a>,
}

/// What became of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written as change `version` of the clinic's feed; `created` if the id was new.
    Written { version: u64, created: bool },
    /// The stored JSON was not what the write expected; nothing was written.
    Conflict,
}

/// One page of a scan over a clinic's patients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientPage {
    /// `(external id, JSON)`. A scan may return a patient more than once.
    pub items: Vec<(String, String)>,
    /// Where the next page starts; `None` when the scan is complete.
    pub next: Option<String>,
}

/// Changes of a clinic's patients after a version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientChanges {
    /// The clinic's current version.
    pub version: u64,
    /// The changes returned cover `(since, upto]`; call again from `upto` while `upto < version`.
    pub upto: u64,
    /// Each patient changed in that range once, with its index entry now (`None`: deleted).
    pub changed: Vec<(String, Option<String>)>,
    /// The feed no longer holds every change after `since` (it is trimmed): rebuild from a scan.
    pub gap: bool,
}

/// How many changes the feed keeps (approximately) per clinic. A node whose index is further
/// behind rebuilds it from a scan.
pub const FEED_LEN: u64 = 200_000;

#[async_trait]
pub trait PatientStore: Send + Sync + 'static {
    /// Writes patients (in order, pipelined), each atomically with its phone index entry and a
    /// change in the clinic's feed.
    async fn put_patients(
        &self,
        tenant: &TenantId,
        writes: &[PatientWrite<'_>],
    ) -> Result<Vec<PutOutcome>, StoreError>;

    /// The JSON of each id (`None` where unknown), in the order asked.
    async fn patient_jsons(
        &self,
        tenant: &TenantId,
        external_ids: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError>;

    /// The ids of the clinic's patients with this phone (digits), in id order. The index may
    /// lag a concurrent write by the time the caller reads the records: check the phone there.
    async fn patient_ids_by_phone(
        &self,
        tenant: &TenantId,
        phone: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Erases a patient (record and phone index entry). Returns the feed version of the change,
    /// `None` if there was no such patient.
    async fn delete_patient(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<u64>, StoreError>;

    async fn patient_count(&self, tenant: &TenantId) -> Result<u64, StoreError>;

    /// The clinic's current feed version (0 before the first write).
    async fn patient_version(&self, tenant: &TenantId) -> Result<u64, StoreError>;

    /// A page of about `count` patients as `(id, JSON)`, starting at `cursor` (`None`: the
    /// beginning).
    async fn scan_patients(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError>;

    /// The same over the index entries: `(id, index entry)`.
    async fn scan_patient_index(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError>;

    /// Up to `max` changes after `since`.
    async fn patient_changes(
        &self,
        tenant: &TenantId,
        since: u64,
        max: usize,
    ) -> Result<PatientChanges, StoreError>;
}
