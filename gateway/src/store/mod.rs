//! Persistence and queues behind one trait, with a Redis implementation (the system of record)
//! and a memory implementation (demo and fast unit tests). Nothing outside this module speaks
//! Redis commands. `contract` holds the tests both implementations must pass.

pub mod clinical;
pub mod inbox;
pub mod leases;
pub mod memory;
mod memory_clinical;
mod memory_inbox;
mod memory_leases;
mod memory_patients;
mod memory_rate;
mod memory_records;
mod memory_tenancy;
pub mod patients;
pub mod rate;
pub mod records;
pub mod redis;
pub mod tenancy;
pub mod transitions;

#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
#[macro_use]
pub(crate) mod contract_tenancy;
#[cfg(test)]
pub(crate) mod contract_batch;
#[cfg(test)]
pub(crate) mod contract_patients;
#[cfg(test)]
pub(crate) mod contract_records;

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::message::MessageRecord;
use crate::domain::{
    Lane, MessageError, MessageId, MessageState, NewMessage, PhoneNumberId, StatusUpdate, TenantId,
    E164,
};

pub use self::memory::MemoryStore;
pub use self::redis::{raw_connection, RedisConnection, RedisStore, CLUSTER_SCHEME};

/// `Clone` so that one failed round trip can be reported to each message of a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("the queue of number {0} is full")]
    QueueFull(PhoneNumberId),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("corrupt record {key}: {why}")]
    Corrupt { key: String, why: String },
    /// The node's lease on the number ran out or passed to another node: it must not send.
    #[error("this node no longer owns number {0}")]
    Fenced(PhoneNumberId),
}

/// One claimed entry of a number's lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub number: PhoneNumberId,
    pub lane: Lane,
    /// The queue's own id of this entry (a stream id in Redis).
    pub entry_id: String,
    pub message: MessageId,
}

/// What [`Store::promote_due`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Promoted {
    /// Messages moved back into their lanes.
    pub moved: usize,
    /// When the earliest message still scheduled on the number is due (`None`: none is).
    pub next_due: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct QueueDepth {
    /// Entries waiting per lane (`Lane::index`), not yet claimed.
    pub ready: [u64; 3],
    /// Entries claimed and not yet acknowledged.
    pub in_flight: u64,
    /// Entries scheduled for later (retries, pacing, waiting for a status).
    pub delayed: u64,
}

/// Result of an accept: the record and queue entry exist now (or already did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Created,
    AlreadyExists,
}

/// Result of applying a status webhook item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusOutcome {
    Applied {
        tenant: TenantId,
        id: MessageId,
        state: MessageState,
        /// The touchpoint that sent it (`None` for `POST /v1/messages`), for the metrics.
        touchpoint: Option<String>,
    },
    KeptEarly {
        id: MessageId,
    },
    Duplicate,
    UnknownMessage,
}

/// What an `Idempotency-Key` maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First use of the key: go ahead with this message id.
    Fresh,
    /// The key was used before, for this request fingerprint and message id.
    Seen {
        fingerprint: String,
        message: MessageId,
    },
}

/// What the dispatcher did with a send attempt, recorded atomically with its history line.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// Meta accepted it and gave this wamid.
    Accepted { wamid: String },
    /// Ended for good: `Failed` with Meta's error, or `Expired`.
    Ended {
        state: MessageState,
        error: Option<MessageError>,
    },
    /// Back to `queued`; it will be tried again.
    Retry { error: MessageError },
    /// Meta may or may not have it: stay `sending` and wait for its status webhook.
    Unknown { error: MessageError },
}

/// Everything the gateway keeps: the outbox and queues plus tenants, wallets, templates,
/// conversation windows and messaging limits. Both stores implement all of it.
pub trait Backend:
    Store
    + tenancy::TenantStore
    + tenancy::WalletStore
    + tenancy::TemplateStore
    + tenancy::ConversationStore
    + tenancy::LimitStore
    + clinical::AppointmentStore
    + clinical::JobStore
    + clinical::BatchStore
    + records::RecordStore
    + patients::PatientStore
    + leases::LeaseStore
    + rate::RateStore
    + inbox::InboxStore
{
}

impl<T> Backend for T where
    T: Store
        + tenancy::TenantStore
        + tenancy::WalletStore
        + tenancy::TemplateStore
        + tenancy::ConversationStore
        + tenancy::LimitStore
        + clinical::AppointmentStore
        + clinical::JobStore
        + clinical::BatchStore
        + records::RecordStore
        + patients::PatientStore
        + leases::LeaseStore
        + rate::RateStore
        + inbox::InboxStore
{
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes the outbox record and its queue entry in one atomic step. Idempotent by message id.
    async fn accept(&self, msg: &NewMessage, max_queue: u64) -> Result<Accepted, StoreError>;

    /// A message as its tenant sees it; `None` for another tenant's id.
    async fn message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError>;

    /// A message by its sending number (dispatcher side).
    async fn load(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError>;

    /// `queued`/`sending` without a wamid → `sending`, attempts + 1. Returns the attempt number, or
    /// `None` if the record moved on (a status arrived, or it ended) and must not be sent.
    async fn begin_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        now_ms: i64,
    ) -> Result<Option<u32>, StoreError> {
        self.begin_fenced_attempt(number, id, now_ms, None).await
    }

    /// As [`Store::begin_attempt`], and only while `fence` is still the number's lease (checked
    /// in the same atomic step): otherwise [`StoreError::Fenced`], and nothing is written.
    async fn begin_fenced_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        now_ms: i64,
        fence: Option<&leases::Fence>,
    ) -> Result<Option<u32>, StoreError>;

    /// Records what a send attempt (or a reconciliation) concluded. Returns the state after it.
    async fn finish_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> Result<Option<MessageState>, StoreError>;

    /// Applies a status webhook item: monotonic, idempotent, early statuses kept.
    async fn apply_status(
        &self,
        number: &PhoneNumberId,
        update: &StatusUpdate,
    ) -> Result<StatusOutcome, StoreError>;

    /// Claims up to `max` new entries of one lane for `consumer`.
    async fn claim(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<QueueEntry>, StoreError>;

    /// Takes over entries claimed by any consumer and not acknowledged for `min_idle_ms`.
    async fn reclaim(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        consumer: &str,
        min_idle_ms: u64,
        max: usize,
    ) -> Result<Vec<QueueEntry>, StoreError>;

    /// Done with the entry: acknowledge and delete it.
    async fn ack(&self, entry: &QueueEntry) -> Result<(), StoreError>;

    /// Acknowledges the entry and schedules the message again at `due_ms`, atomically.
    async fn defer(&self, entry: &QueueEntry, due_ms: i64) -> Result<(), StoreError>;

    /// Moves scheduled messages that are due (at most `max`) back into their lanes, and says
    /// when the next one left is due.
    async fn promote_due(
        &self,
        number: &PhoneNumberId,
        now_ms: i64,
        max: usize,
    ) -> Result<Promoted, StoreError>;

    async fn depth(&self, number: &PhoneNumberId) -> Result<QueueDepth, StoreError>;

    /// Claims an idempotency key for a request fingerprint and a new message id (kept `ttl_secs`).
    async fn claim_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        message: &MessageId,
        ttl_secs: u64,
    ) -> Result<IdempotencyClaim, StoreError>;

    /// The store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Deletes the outbox records (recipient, content, timeline) of a tenant's messages to this
    /// phone that nothing will act on again (delivered, read, failed, expired); messages still
    /// on their way are kept and counted.
    async fn erase_messages_to(
        &self,
        tenant: &TenantId,
        to: &E164,
    ) -> Result<MessageErasure, StoreError>;
}

/// What [`Store::erase_messages_to`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageErasure {
    /// Ended messages whose records were deleted.
    pub erased: usize,
    /// Messages still queued or in flight: kept (they end and expire on their own).
    pub live: usize,
}
