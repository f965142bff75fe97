//! Ownership leases on Redis: one script per number (its `{n:…}` slot), the live-node set as a
//! single global sorted set (single-key commands only).

use ::redis::Value;
use async_trait::async_trait;
use futures::StreamExt;

use super::reply::{corrupt, int, items, text};
use super::{unavailable, RedisStore};
use crate::store::leases::{parse_fence, parse_leased, Announcements, Fence, LeaseStore, Leased};
use crate::store::StoreError;

impl RedisStore {
    async fn lease_script(
        &self,
        number: &Leased,
        node: &str,
        ttl_ms: u64,
        op: &str,
    ) -> Result<Value, StoreError> {
        let k = self.keys();
        let mut c = self.conn().await?;
        self.inner
            .scripts
            .lease
            .key(k.lease(number))
            .key(k.fence(number))
            .arg(node)
            .arg(ttl_ms.max(1))
            .arg(op)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    async fn take_lease(
        &self,
        number: &Leased,
        node: &str,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError> {
        let v = self.lease_script(number, node, ttl_ms, "take").await?;
        let key = self.keys().lease(number);
        match int(&v) {
            Some(0) => Ok(None),
            Some(t) => Ok(Some(Fence {
                node: node.to_owned(),
                token: u64::try_from(t).map_err(|_| corrupt(&key, format!("token {t}")))?,
            })),
            None => Err(corrupt(&key, format!("lease script answered {v:?}"))),
        }
    }

    async fn release_lease(&self, number: &Leased, node: &str) -> Result<bool, StoreError> {
        let v = self.lease_script(number, node, 1, "release").await?;
        Ok(int(&v) == Some(1))
    }

    async fn lease_holder(&self, number: &Leased) -> Result<Option<Fence>, StoreError> {
        let v = self.lease_script(number, "", 1, "holder").await?;
        let key = self.keys().lease(number);
        match v {
            Value::Nil => Ok(None),
            Value::Boolean(false) => Ok(None),
            Value::Int(0) => Ok(None),
            other => {
                let raw = text(&other).ok_or_else(|| corrupt(&key, "lease is not a string"))?;
                parse_fence(&raw)
                    .map(Some)
                    .ok_or_else(|| corrupt(&key, format!("lease {raw:?}")))
            }
        }
    }

    async fn heartbeat(&self, node: &str, now_ms: i64, ttl_ms: u64) -> Result<(), StoreError> {
        let until = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let mut c = self.conn().await?;
        let _: Value = ::redis::cmd("ZADD")
            .arg(self.keys().nodes())
            .arg(until)
            .arg(node)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn live_nodes(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let key = self.keys().nodes();
        let mut c = self.conn().await?;
        // Nodes that stopped heartbeating a minute ago are forgotten (best effort, same key).
        let _: Value = ::redis::cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now_ms.saturating_sub(60_000))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let v: Value = ::redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut nodes = items(&v)
            .ok_or_else(|| corrupt(&key, "not a list"))?
            .iter()
            .map(|m| text(m).ok_or_else(|| corrupt(&key, "a member is not a string")))
            .collect::<Result<Vec<_>, _>>()?;
        nodes.sort();
        Ok(nodes)
    }

    async fn announce_work(&self, what: &Leased) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: Value = ::redis::cmd("PUBLISH")
            .arg(self.keys().work_channel())
            .arg(what.name())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn work_announcements(&self) -> Result<Announcements, StoreError> {
        let client = ::redis::Client::open(self.inner.pubsub_url.as_str()).map_err(unavailable)?;
        let mut sub = client.get_async_pubsub().await.map_err(unavailable)?;
        sub.subscribe(self.keys().work_channel())
            .await
            .map_err(unavailable)?;
        Ok(Box::pin(sub.into_on_message().filter_map(
            |msg| async move {
                let raw: String = msg.get_payload().ok()?;
                parse_leased(&raw)
            },
        )))
    }
}
