//! Clinics' inbound queues in memory (same rules as the Redis streams, for the contract tests).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::inbox::{InboxEntry, InboxStore};
use super::memory::MemoryStore;
use super::StoreError;
use crate::domain::TenantId;

#[derive(Default)]
pub(super) struct State {
    next: u64,
    /// Per clinic: entry sequence → (body, the consumer holding it, if claimed).
    queues: HashMap<TenantId, BTreeMap<u64, (String, Option<String>)>>,
}

#[async_trait]
impl InboxStore for MemoryStore {
    async fn push_inbound(&self, tenant: &TenantId, body: &str) -> Result<(), StoreError> {
        let mut g = self.inbox.lock();
        g.next += 1;
        let seq = g.next;
        g.queues
            .entry(tenant.clone())
            .or_default()
            .insert(seq, (body.to_owned(), None));
        Ok(())
    }

    async fn next_inbound(
        &self,
        tenant: &TenantId,
        consumer: &str,
        take_over: bool,
        max: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let mut g = self.inbox.lock();
        let Some(q) = g.queues.get_mut(tenant) else {
            return Ok(Vec::new());
        };
        if take_over {
            for (_, holder) in q.values_mut() {
                if holder.is_some() {
                    *holder = Some(consumer.to_owned());
                }
            }
        }
        let entry = |seq: &u64, body: &String| InboxEntry {
            id: format!("{seq}-0"),
            body: body.clone(),
        };
        let own: Vec<InboxEntry> = q
            .iter()
            .filter(|(_, (_, h))| h.as_deref() == Some(consumer))
            .take(max)
            .map(|(seq, (body, _))| entry(seq, body))
            .collect();
        if !own.is_empty() {
            return Ok(own);
        }
        let mut out = Vec::new();
        for (seq, (body, holder)) in q.iter_mut().filter(|(_, (_, h))| h.is_none()).take(max) {
            *holder = Some(consumer.to_owned());
            out.push(entry(seq, body));
        }
        Ok(out)
    }

    async fn ack_inbound(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        let seq = id
            .split_once('-')
            .and_then(|(s, _)| s.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Unavailable(format!("inbox entry id {id:?}")))?;
        if let Some(q) = self.inbox.lock().queues.get_mut(tenant) {
            q.remove(&seq);
        }
        Ok(())
    }
}
