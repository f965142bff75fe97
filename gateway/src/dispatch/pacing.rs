//! Pacing a business number: its throughput tier (governor, GCRA) and the pair rate per recipient.
//!
//! Sends waiting for the tier are served by lane, not by arrival: a lab report claimed behind
//! half a second of broadcast copies takes the next free send, not the last. Behind the GCRA a
//! window of the last second's releases caps any rolling second at the paced rate: Meta counts
//! arrivals per rolling second, and after a stall GCRA alone lets the backlog bunch up.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

use crate::domain::Lane;

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
    turns: Rc<Turns>,
    pair: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

/// What Meta counts its throughput over.
const SECOND: Duration = Duration::from_secs(1);

/// The sends released in the last second, so that no rolling second holds more than `cap`.
#[derive(Debug, Default)]
pub struct SendWindow {
    /// `None`: unpaced.
    cap: Option<usize>,
    released: VecDeque<Instant>,
}

impl SendWindow {
    pub fn new(cap: Option<usize>) -> Self {
        Self {
            cap,
            released: VecDeque::new(),
        }
    }

    /// How long until one more send keeps every rolling second within the cap (`None`: now).
    pub fn wait_before_next(&mut self, now: Instant) -> Option<Duration> {
        while self
            .released
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= SECOND)
        {
            self.released.pop_front();
        }
        let cap = self.cap?;
        if self.released.len() < cap {
            return None;
        }
        self.released
            .front()
            .map(|oldest| (*oldest + SECOND).saturating_duration_since(now))
    }

    pub fn record(&mut self, at: Instant) {
        if self.cap.is_some() {
            self.released.push_back(at);
        }
    }

    pub fn set_cap(&mut self, cap: Option<usize>) {
        self.cap = cap;
    }
}

/// The window's cap for a tier: the paced rate (`None` when unpaced).
fn window_cap(tier_mps: u32, headroom: f64) -> Option<usize> {
    tier_quota(tier_mps, headroom)?;
    Some(((tier_mps as f64) * headroom).floor().max(1.0) as usize)
}

/// The sends waiting for the number's tier, one queue per lane, and the one task handing out
/// the tier's sends to them (highest lane first, arrival order within a lane).
struct Turns {
    /// Replaced when Meta moves the number's tier.
    tier: RefCell<Option<Rc<DefaultDirectRateLimiter>>>,
    waiting: RefCell<[VecDeque<oneshot::Sender<()>>; 3]>,
    serving: Cell<bool>,
    window: RefCell<SendWindow>,
}

impl Turns {
    fn next_waiter(&self) -> Option<oneshot::Sender<()>> {
        let mut waiting = self.waiting.borrow_mut();
        waiting.iter_mut().find_map(|q| {
            // A waiter that gave up (its send was dropped) does not take a turn.
            while let Some(tx) = q.pop_front() {
                if !tx.is_closed() {
                    return Some(tx);
                }
            }
            None
        })
    }

    fn anyone_waiting(&self) -> bool {
        self.waiting
            .borrow()
            .iter()
            .any(|q| q.iter().any(|tx| !tx.is_closed()))
    }

    /// Hands out one tier send at a time while anyone waits, then stops.
    async fn serve(self: Rc<Self>) {
        while self.anyone_waiting() {
            let limiter = self.tier.borrow().clone();
            if let Some(t) = limiter {
                t.until_ready().await;
            }
            loop {
                let wait = self.window.borrow_mut().wait_before_next(Instant::now());
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => break,
                }
            }
            // The highest lane waiting now takes it (a care message may have arrived meanwhile).
            if let Some(tx) = self.next_waiter() {
                if tx.send(()).is_ok() {
                    self.window.borrow_mut().record(Instant::now());
                }
            }
        }
        self.serving.set(false);
    }
}

impl Pacer {
    pub fn new(tier_mps: u32, headroom: f64, pair_period: Duration, pair_burst: u32) -> Self {
        let pair_quota = Quota::with_period(pair_period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(pair_burst).unwrap_or(NonZeroU32::MIN));
        Self {
            headroom,
            turns: Rc::new(Turns {
                tier: RefCell::new(
                    tier_quota(tier_mps, headroom).map(|q| Rc::new(RateLimiter::direct(q))),
                ),
                waiting: RefCell::new(Default::default()),
                serving: Cell::new(false),
                window: RefCell::new(SendWindow::new(window_cap(tier_mps, headroom))),
            }),
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

    /// Waits for the number's throughput budget, behind every waiting send of a higher lane.
    /// Only the dispatcher's sends await this (on its arbiter), never a handler.
    pub async fn until_tier_ready(&self, lane: Lane) {
        let (tx, rx) = oneshot::channel();
        self.turns.waiting.borrow_mut()[lane.index()].push_back(tx);
        if !self.turns.serving.replace(true) {
            actix::spawn(self.turns.clone().serve());
        }
        // The server only stops when nobody waits, so the sender is never dropped unanswered.
        let _ = rx.await;
    }

    /// Paces the number at a new tier from now on.
    pub fn set_tier(&self, tier_mps: u32) {
        *self.turns.tier.borrow_mut() =
            tier_quota(tier_mps, self.headroom).map(|q| Rc::new(RateLimiter::direct(q)));
        self.turns
            .window
            .borrow_mut()
            .set_cap(window_cap(tier_mps, self.headroom));
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

    #[test]
    fn the_window_holds_at_most_the_cap_in_any_second() {
        let mut w = SendWindow::new(Some(3));
        let t0 = Instant::now();
        for i in 0..3 {
            let at = t0 + Duration::from_millis(i * 10);
            assert_eq!(w.wait_before_next(at), None);
            w.record(at);
        }
        // The fourth waits until the first is a second old.
        let at = t0 + Duration::from_millis(500);
        assert_eq!(w.wait_before_next(at), Some(Duration::from_millis(500)));
        assert_eq!(w.wait_before_next(t0 + SECOND), None);
        // Unpaced: never waits, keeps nothing.
        let mut free = SendWindow::new(None);
        for _ in 0..10 {
            free.record(t0);
        }
        assert_eq!(free.wait_before_next(t0), None);
        assert_eq!(window_cap(1_000, 0.995), Some(995));
        assert_eq!(window_cap(0, 0.9), None);
    }

    /// Ten broadcast copies wait at 20 mps; a care message that starts waiting after them is
    /// served next, not eleventh.
    #[actix_rt::test]
    async fn a_care_send_overtakes_waiting_bulk_sends() {
        let p = Rc::new(Pacer::new(20, 0.9, Duration::from_secs(6), 3));
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..10 {
            let (p, order) = (p.clone(), order.clone());
            waiting.push(actix::spawn(async move {
                p.until_tier_ready(Lane::Bulk).await;
                order.borrow_mut().push(format!("bulk{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (p2, order2) = (p.clone(), order.clone());
        waiting.push(actix::spawn(async move {
            p2.until_tier_ready(Lane::Care).await;
            order2.borrow_mut().push("care".to_owned());
        }));
        for w in waiting {
            let _ = w.await;
        }
        let order = order.borrow();
        let care_at = order.iter().position(|o| o == "care");
        assert_eq!(order.len(), 11);
        // One or two bulk sends went before it arrived; then it is next.
        assert!(care_at.is_some_and(|at| at <= 3), "{order:?}");
        assert_eq!(order[0], "bulk0");
    }
}
