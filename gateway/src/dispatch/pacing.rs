//! Pacing a business number: its throughput tier (governor, GCRA) and the pair rate per recipient.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The quota used for a tier: `headroom` of the tier's rate, with a burst small enough that no
/// one-second window ever holds more than the tier (Meta counts sends per rolling second).
pub fn tier_quota(tier_mps: u32, headroom: f64) -> Option<Quota> {
    if tier_mps == 0 {
        return None;
    }
    let rate = ((tier_mps as f64) * headroom).floor().max(1.0) as u32;
    let burst = (tier_mps / 20)
        .max(1)
        .min(tier_mps.saturating_sub(rate).max(1));
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst)?;
    Some(Quota::per_second(rate).allow_burst(burst))
}

pub struct Pacer {
    headroom: f64,
    /// Replaced when Meta moves the number's tier; sends in flight keep the limiter they took.
    tier: RefCell<Option<Rc<DefaultDirectRateLimiter>>>,
    pair: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Pacer {
    pub fn new(tier_mps: u32, headroom: f64, pair_period: Duration, pair_burst: u32) -> Self {
        let pair_quota = Quota::with_period(pair_period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(pair_burst).unwrap_or(NonZeroU32::MIN));
        Self {
            headroom,
            tier: RefCell::new(
                tier_quota(tier_mps, headroom).map(|q| Rc::new(RateLimiter::direct(q))),
            ),
            pair: RateLimiter::keyed(pair_quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one send from the recipient's pair budget, or says how long until it may.
    pub fn check_recipient(&self, recipient: &str) -> Result<(), Duration> {
        self.pair
            .check_key(&recipient.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Waits for the number's throughput budget. Only the dispatcher awaits this, never a handler.
    pub async fn until_tier_ready(&self) {
        let limiter = self.tier.borrow().clone();
        if let Some(t) = limiter {
            t.until_ready().await;
        }
    }

    /// Paces the number at a new tier from now on.
    pub fn set_tier(&self, tier_mps: u32) {
        *self.tier.borrow_mut() =
            tier_quota(tier_mps, self.headroom).map(|q| Rc::new(RateLimiter::direct(q)));
    }

    /// Forgets recipients whose budget is full again, so memory follows active recipients only.
    pub fn forget_idle_recipients(&self) {
        self.pair.retain_recent();
        self.pair.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_quota_stays_under_the_tier_in_any_second() {
        for tier in [20u32, 80, 1000] {
            let q = tier_quota(tier, 0.9).unwrap_or_else(|| panic!("quota for {tier}"));
            let per_sec =
                (Duration::from_secs(1).as_nanos() / q.replenish_interval().as_nanos()) as u32;
            assert!(
                per_sec + q.burst_size().get() <= tier,
                "tier {tier}: {per_sec} + {}",
                q.burst_size()
            );
        }
        assert!(tier_quota(0, 0.9).is_none());
    }

    #[test]
    fn pair_rate_allows_the_burst_then_defers() {
        let p = Pacer::new(0, 0.9, Duration::from_secs(6), 3);
        for _ in 0..3 {
            assert!(p.check_recipient("919800000001").is_ok());
        }
        let wait = p.check_recipient("919800000001").err();
        assert!(wait.is_some_and(|w| w > Duration::from_secs(4)), "{wait:?}");
        assert!(p.check_recipient("919800000002").is_ok());
    }
}
