//! Clinical records other than appointments (documents sent, visits, feedback, the clinic's
//! inbox), the patient's consent, and short-lived markers ("the next text from this patient is
//! a feedback comment"). Records are stored as JSON by the clinical layer, which owns their
//! types; the store indexes them by time and by the EMR's id.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::TenantId;

/// Which record family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Document,
    Visit,
    Feedback,
    Inbox,
    Broadcast,
    /// A slice of a broadcast's resolved recipients (`{broadcast}:{n}`).
    BroadcastChunk,
    /// A message that ended failed or expired (`GET /v1/messages?status=failed`).
    DeadLetter,
    /// A clinic callback event waiting for delivery.
    Callback,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Document => "doc",
            RecordKind::Visit => "visit",
            RecordKind::Feedback => "feedback",
            RecordKind::Inbox => "inbox",
            RecordKind::Broadcast => "brd",
            RecordKind::BroadcastChunk => "brdc",
            RecordKind::DeadLetter => "dead",
            RecordKind::Callback => "cb",
        }
    }
}

/// A record to store: `json` under `id`, listed at `at_ms`, found by `external` when given.
#[derive(Debug, Clone, Copy)]
pub struct RecordPut<'a> {
    pub tenant: &'a TenantId,
    pub kind: RecordKind,
    pub id: &'a str,
    pub at_ms: i64,
    pub json: &'a str,
    pub external: Option<&'a str>,
}

/// A record as listed by [`RecordStore::record_entries`]: its id, the time it is listed at, and
/// its JSON (`None` when the index entry outlived the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    pub id: String,
    pub at_ms: i64,
    pub json: Option<String>,
}

#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Creates or replaces a record.
    async fn put_record(&self, put: RecordPut<'_>) -> Result<(), StoreError>;
    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
    ) -> Result<Option<String>, StoreError>;
    /// The id of the record the EMR knows as `external`.
    async fn record_by_external(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        external: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Records listed in `[from_ms, to_ms)`, oldest first, at most `limit`.
    async fn records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Like [`RecordStore::records`], with each record's id and time (for erasure and retention).
    async fn record_entries(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<RecordEntry>, StoreError>;
    /// Deletes a record, its time-index entry and, when given, its external-id entry (only if
    /// that entry still points at `id`). `true` when the record or its index entry existed.
    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
        external: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// STOP / START: whether the patient (digits of the E.164 number) has opted out.
    async fn set_opted_out(
        &self,
        tenant: &TenantId,
        patient: &str,
        opted_out: bool,
    ) -> Result<(), StoreError>;
    async fn opted_out(&self, tenant: &TenantId, patient: &str) -> Result<bool, StoreError>;

    /// A value in `slot` for the patient that expires after `ttl_ms`; `None` clears it.
    async fn set_marker(
        &self,
        tenant: &TenantId,
        patient: &str,
        slot: &str,
        value: Option<&str>,
        ttl_ms: i64,
    ) -> Result<(), StoreError>;
    async fn marker(
        &self,
        tenant: &TenantId,
        patient: &str,
        slot: &str,
    ) -> Result<Option<String>, StoreError>;

    /// [`Self::marker`] of several patients of one tenant, in order (one round trip on Redis).
    async fn markers(
        &self,
        tenant: &TenantId,
        patients: &[&str],
        slot: &str,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut out = Vec::with_capacity(patients.len());
        for p in patients {
            out.push(self.marker(tenant, p, slot).await?);
        }
        Ok(out)
    }
}
