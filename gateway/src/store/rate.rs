//! The per-clinic API rate limit when several nodes serve one clinic: one GCRA state per clinic
//! in the store, so the limit holds for the clinic as a whole, whichever node each request hits
//! (a limiter per node would let N nodes admit N times the rate).

use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::domain::TenantId;

#[async_trait]
pub trait RateStore: Send + Sync + 'static {
    /// Takes one request of `tenant`'s budget: `rate` per second with bursts of `burst`.
    /// `Ok(Ok(()))` admitted; `Ok(Err(wait))` refused until `wait` from now.
    async fn take_api_request(
        &self,
        tenant: &TenantId,
        rate: u32,
        burst: u32,
    ) -> Result<Result<(), Duration>, StoreError>;
}

/// GCRA over a theoretical arrival time, in microseconds: the one rule both stores apply.
/// Returns the new arrival time to store (admitted) or how long to wait (refused).
pub fn gcra(tat_us: Option<i64>, now_us: i64, rate: u32, burst: u32) -> Result<i64, Duration> {
    let emission = 1_000_000 / i64::from(rate.max(1));
    let tolerance = emission * i64::from(burst.max(1) - 1);
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    if tat - now_us > tolerance {
        let wait = tat - tolerance - now_us;
        return Err(Duration::from_micros(u64::try_from(wait).unwrap_or(0)));
    }
    Ok(tat + emission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        // 10/s, burst 3: three at once, the fourth waits 100 ms.
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(tat, 0, 10, 3).unwrap_or_else(|w| panic!("refused, wait {w:?}")));
        }
        assert_eq!(gcra(tat, 0, 10, 3), Err(Duration::from_millis(100)));
        assert!(gcra(tat, 100_000, 10, 3).is_ok());
        // Idle for long: the full burst again, not more.
        let later = 10_000_000;
        let mut tat2 = tat;
        for _ in 0..3 {
            tat2 = gcra(tat2, later, 10, 3).ok();
            assert!(tat2.is_some());
        }
        assert!(gcra(tat2, later, 10, 3).is_err());
    }
}
