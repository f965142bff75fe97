//! Clinics' inbound queues on Redis: one stream per clinic (its `{t:…}` slot) with the consumer
//! group `inbox`; the owner reads its own pending entries first, so a failed message is retried
//! before anything newer.

use ::redis::Value;
use async_trait::async_trait;

use super::keys::INBOX_GROUP;
use super::reply::{corrupt, items, stream_entry, text, xread_entries};
use super::{unavailable, RedisStore};
use crate::domain::TenantId;
use crate::store::inbox::{InboxEntry, InboxStore};
use crate::store::StoreError;

impl RedisStore {
    fn inbox_entries(&self, stream: &str, raw: &[Value]) -> Result<Vec<InboxEntry>, StoreError> {
        let mut out = Vec::new();
        for v in raw {
            // Entries deleted while pending come back as nil and are skipped.
            let Some((id, fields)) = stream_entry(stream, v)? else {
                continue;
            };
            let body = fields
                .into_iter()
                .find(|(k, _)| k == "m")
                .map(|(_, v)| v)
                .ok_or_else(|| corrupt(stream, format!("entry {id} has no m field")))?;
            out.push(InboxEntry { id, body });
        }
        Ok(out)
    }

    async fn read_inbox(
        &self,
        stream: &str,
        consumer: &str,
        from: &str,
        max: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        // Nothing was ever queued for this clinic when there is no group yet.
        match self
            .read_group(stream, INBOX_GROUP, consumer, from, max)
            .await?
        {
            Some(v) => self.inbox_entries(stream, &xread_entries(stream, &v)?),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl InboxStore for RedisStore {
    async fn push_inbound(&self, tenant: &TenantId, body: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: Value = self
            .inner
            .scripts
            .inbox_push
            .key(self.keys().inbox_queue(tenant))
            .arg(body)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn next_inbound(
        &self,
        tenant: &TenantId,
        consumer: &str,
        take_over: bool,
        max: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let stream = self.keys().inbox_queue(tenant);
        if take_over {
            let mut cursor = "0-0".to_owned();
            let mut c = self.conn().await?;
            // Bounded: a clinic's backlog is small; what is left is taken on the next call.
            for _ in 0..64 {
                let res: Result<Value, _> = ::redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(INBOX_GROUP)
                    .arg(consumer)
                    .arg(0)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(1_000)
                    .query_async(&mut c)
                    .await;
                let v = match res {
                    Ok(v) => v,
                    Err(e) if e.code() == Some("NOGROUP") => return Ok(Vec::new()),
                    Err(e) => return Err(unavailable(e)),
                };
                let next = items(&v)
                    .and_then(|p| p.first().and_then(text))
                    .ok_or_else(|| corrupt(&stream, "XAUTOCLAIM reply is not [cursor, …]"))?;
                if next == "0-0" {
                    break;
                }
                cursor = next;
            }
        }
        let own = self.read_inbox(&stream, consumer, "0", max).await?;
        if !own.is_empty() {
            return Ok(own);
        }
        self.read_inbox(&stream, consumer, ">", max).await
    }

    async fn ack_inbound(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        let stream = self.keys().inbox_queue(tenant);
        let mut c = self.conn().await?;
        let _: Value = ::redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&stream)
            .arg(INBOX_GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(id)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
