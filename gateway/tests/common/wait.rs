//! Waiting for what the gateway does in the background: checks repeated every 50 ms until they
//! hold or the time allowed has passed.

use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(50);

/// Looks until `look` finds something or `timeout` has passed.
pub async fn poll<T>(timeout: Duration, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(found) = look() {
            return Some(found);
        }
        tokio::time::sleep(EVERY).await;
    }
    None
}

/// Whether `check` holds within `timeout`, with a last look once the time is up.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    poll(timeout, || check().then_some(())).await.is_some() || check()
}

/// [`eventually`] for checks that must await (an API call, a store read); no last look.
pub async fn eventually_async(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(EVERY).await;
    }
    false
}
