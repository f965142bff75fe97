//! Cancelling a broadcast: a flag in Redis that the scheduler checks before each chunk and the
//! dispatchers check (cached for a second) before sending a broadcast's message, which they then
//! end as expired and refund.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::domain::TenantId;
use crate::store::{Backend, StoreError};

/// The marker slot of a cancelled broadcast (keyed by the broadcast id).
const CANCELLED: &str = "brdx";
/// Long enough to outlive any broadcast's deadline.
const KEEP_MS: i64 = 30 * 24 * 3_600_000;
/// How stale a dispatcher's view of a cancellation may be.
const CACHE: Duration = Duration::from_secs(1);

pub async fn mark_cancelled(
    store: &dyn Backend,
    tenant: &TenantId,
    id: &str,
) -> Result<(), StoreError> {
    store
        .set_marker(tenant, id, CANCELLED, Some("1"), KEEP_MS)
        .await
}

pub async fn is_cancelled(
    store: &dyn Backend,
    tenant: &TenantId,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(store.marker(tenant, id, CANCELLED).await?.is_some())
}

/// The dispatchers' cached view of cancelled broadcasts.
#[derive(Clone, Default)]
pub struct CancelGate {
    seen: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

impl CancelGate {
    /// Whether the broadcast was cancelled, as of at most a second ago.
    pub async fn cancelled(
        &self,
        store: &dyn Backend,
        tenant: &TenantId,
        id: &str,
    ) -> Result<bool, StoreError> {
        if let Some((c, at)) = self.seen.lock().get(id) {
            if at.elapsed() < CACHE {
                return Ok(*c);
            }
        }
        let c = is_cancelled(store, tenant, id).await?;
        let mut seen = self.seen.lock();
        // Bounded: entries of long-finished broadcasts go.
        if seen.len() > 10_000 {
            seen.retain(|_, (_, at)| at.elapsed() < CACHE * 60);
        }
        seen.insert(id.to_owned(), (c, Instant::now()));
        Ok(c)
    }
}
