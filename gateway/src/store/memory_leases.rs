//! Leases in memory: one process, so ownership is trivially its own; kept exact anyway so the
//! contract tests hold the Redis store to the same rules.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::leases::{Announcements, Fence, LeaseStore, Leased};
use super::memory::MemoryStore;
use super::StoreError;

/// A held lease and when it runs out.
#[derive(Debug, Clone)]
struct HeldLease {
    fence: Fence,
    until: Instant,
}

pub(super) struct State {
    announcements: tokio::sync::broadcast::Sender<Leased>,
    leases: std::collections::HashMap<Leased, HeldLease>,
    /// The last token granted per leased thing (never reused).
    fences: std::collections::HashMap<Leased, u64>,
    /// Node → alive until (unix ms).
    nodes: std::collections::HashMap<String, i64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            announcements: tokio::sync::broadcast::channel(1_024).0,
            leases: Default::default(),
            fences: Default::default(),
            nodes: Default::default(),
        }
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn take_lease(
        &self,
        number: &Leased,
        node: &str,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError> {
        let mut g = self.leases.lock();
        let now = Instant::now();
        let until = now + Duration::from_millis(ttl_ms);
        let current = g.leases.get(number).filter(|l| l.until > now).cloned();
        match current {
            Some(l) if l.fence.node == node => {
                g.leases.insert(
                    number.clone(),
                    HeldLease {
                        fence: l.fence.clone(),
                        until,
                    },
                );
                Ok(Some(l.fence))
            }
            Some(_) => Ok(None),
            None => {
                let token = g.fences.entry(number.clone()).or_insert(0);
                *token += 1;
                let fence = Fence {
                    node: node.to_owned(),
                    token: *token,
                };
                g.leases.insert(
                    number.clone(),
                    HeldLease {
                        fence: fence.clone(),
                        until,
                    },
                );
                Ok(Some(fence))
            }
        }
    }

    async fn release_lease(&self, number: &Leased, node: &str) -> Result<bool, StoreError> {
        let mut g = self.leases.lock();
        let ours = g
            .leases
            .get(number)
            .is_some_and(|l| l.fence.node == node && l.until > Instant::now());
        if ours {
            g.leases.remove(number);
        }
        Ok(ours)
    }

    async fn lease_holder(&self, number: &Leased) -> Result<Option<Fence>, StoreError> {
        let g = self.leases.lock();
        Ok(g.leases
            .get(number)
            .filter(|l| l.until > Instant::now())
            .map(|l| l.fence.clone()))
    }

    async fn heartbeat(&self, node: &str, now_ms: i64, ttl_ms: u64) -> Result<(), StoreError> {
        let until = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        self.leases.lock().nodes.insert(node.to_owned(), until);
        Ok(())
    }

    async fn live_nodes(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut g = self.leases.lock();
        g.nodes.retain(|_, until| *until > now_ms);
        let mut nodes: Vec<String> = g.nodes.keys().cloned().collect();
        nodes.sort();
        Ok(nodes)
    }

    async fn announce_work(&self, number: &Leased) -> Result<(), StoreError> {
        // No subscriber is not an error: nobody needs waking.
        let _ = self.leases.lock().announcements.send(number.clone());
        Ok(())
    }

    async fn work_announcements(&self) -> Result<Announcements, StoreError> {
        let rx = self.leases.lock().announcements.subscribe();
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(n) => return Some((n, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })))
    }
}
