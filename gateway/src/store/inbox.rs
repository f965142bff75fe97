//! Clinics' inbound queues for several nodes: any node that receives a patient's message from
//! Meta's webhook queues it under the clinic; the clinic's owner takes them in order, one at a
//! time, so a patient's replies ("Cancel", then "Yes") are handled in the order they came,
//! whichever node each webhook reached.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::TenantId;

/// One queued inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// The queue's own id (a stream id in Redis), for [`InboxStore::ack_inbound`].
    pub id: String,
    /// The message as the webhook carried it (JSON).
    pub body: String,
}

#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
    /// Queues `body` for the clinic's owner. Durable when this returns.
    async fn push_inbound(&self, tenant: &TenantId, body: &str) -> Result<(), StoreError>;

    /// The next entries for `consumer`, oldest first: its own unacknowledged ones (a handler
    /// failed) if any, else new ones. With `take_over`, first every entry another consumer left
    /// unacknowledged becomes this consumer's (the previous owner is fenced out).
    async fn next_inbound(
        &self,
        tenant: &TenantId,
        consumer: &str,
        take_over: bool,
        max: usize,
    ) -> Result<Vec<InboxEntry>, StoreError>;

    /// Done with the entry: removed.
    async fn ack_inbound(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError>;
}
