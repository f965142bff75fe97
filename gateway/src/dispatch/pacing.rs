//! Pacing a business number: its throughput tier (governor, GCRA) and the pair rate per recipient.
//!
//! Sends waiting for the tier are served by lane, not by arrival: a lab report claimed behind
//! half a second of broadcast copies takes the next free send, not the last. Behind the GCRA a
//! window caps every rolling second Meta can count at the tier: a send counts from its release
//! until one second after Meta's answer, because Meta counted it somewhere in between, and a
//! stall between the pacer and Meta (this process, the network, Meta's front end) moves those
//! arrivals later, bunching them up. Counting releases alone let a stalled batch land in the
//! same rolling second as the sends released after it (130429 in the spike benchmark).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

use crate::domain::Lane;

/// The GCRA for a tier: `headroom` of the tier's rate, with a burst of 50 ms of the tier so that
/// the time a stall took is made up right after it. The window (not the GCRA) keeps every
/// rolling second within the tier.
pub fn tier_quota(tier_mps: u32, headroom: f64) -> Option<Quota> {
    if tier_mps == 0 {
        return None;
    }
    let rate = ((tier_mps as f64) * headroom).floor().max(1.0) as u32;
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new((tier_mps / 20).max(1))?;
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

/// How often a window full of unanswered sends looks again (Meta is slow to answer: rare).
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(5);

/// The sends Meta may still count in a rolling second that includes the next one: those not yet
/// answered, and those answered less than a second ago. At most `cap` of them, so no rolling
/// second at Meta ever holds more than `cap` arrivals, however the requests were delayed.
#[derive(Debug, Default)]
pub struct SendWindow {
    /// `None`: unpaced.
    cap: Option<usize>,
    in_flight: usize,
    answered: VecDeque<Instant>,
}

impl SendWindow {
    pub fn new(cap: Option<usize>) -> Self {
        Self {
            cap,
            in_flight: 0,
            answered: VecDeque::new(),
        }
    }

    /// How long until one more send keeps every rolling second within the cap (`None`: now).
    pub fn wait_before_next(&mut self, now: Instant) -> Option<Duration> {
        while self
            .answered
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= SECOND)
        {
            self.answered.pop_front();
        }
        let cap = self.cap?;
        if self.in_flight + self.answered.len() < cap {
            return None;
        }
        Some(self.answered.front().map_or(IN_FLIGHT_RECHECK, |oldest| {
            (*oldest + SECOND).saturating_duration_since(now)
        }))
    }

    /// A send was released to Meta: it counts until a second after its answer. Returns whether
    /// it was counted (an unpaced number counts nothing).
    pub fn released(&mut self) -> bool {
        if self.cap.is_none() {
            return false;
        }
        self.in_flight += 1;
        true
    }

    /// Meta answered (or the request gave up) at `at` for a send `released` counted.
    pub fn answered(&mut self, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.cap.is_some() {
            self.answered.push_back(at);
        }
    }

    /// A counted send that never went out.
    pub fn cancelled(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn set_cap(&mut self, cap: Option<usize>) {
        self.cap = cap;
    }
}

/// The window's cap for a tier: the tier itself (`None` when unpaced). No margin: the window
/// counts every send for at least as long as Meta can.
fn window_cap(tier_mps: u32) -> Option<usize> {
    (tier_mps > 0).then_some(tier_mps as usize)
}

/// A send's place in its number's window, held until Meta answers it. Dropping it (the answer
/// came, the request failed, or the send was abandoned) starts its last second in the window.
#[must_use = "hold the slot until Meta answers the send"]
pub struct TierSlot {
    turns: Option<Rc<Turns>>,
}

impl Drop for TierSlot {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.window.borrow_mut().answered(Instant::now());
        }
    }
}

/// The sends waiting for the number's tier, one queue per lane, and the one task handing out
/// the tier's sends to them (highest lane first, arrival order within a lane).
struct Turns {
    /// Replaced when Meta moves the number's tier.
    tier: RefCell<Option<Rc<DefaultDirectRateLimiter>>>,
    waiting: RefCell<[VecDeque<oneshot::Sender<bool>>; 3]>,
    serving: Cell<bool>,
    window: RefCell<SendWindow>,
}

impl Turns {
    fn next_waiter(&self) -> Option<oneshot::Sender<bool>> {
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
                let counted = self.window.borrow_mut().released();
                if let Err(counted_slot) = tx.send(counted) {
                    // The send was dropped while it waited: nothing goes out on this turn.
                    if counted_slot {
                        self.window.borrow_mut().cancelled();
                    }
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
                window: RefCell::new(SendWindow::new(window_cap(tier_mps))),
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
    /// Only the dispatcher's sends await this (on its arbiter), never a handler. Hold the slot
    /// until Meta answers the send.
    pub async fn until_tier_ready(&self, lane: Lane) -> TierSlot {
        let (tx, rx) = oneshot::channel();
        self.turns.waiting.borrow_mut()[lane.index()].push_back(tx);
        if !self.turns.serving.replace(true) {
            actix::spawn(self.turns.clone().serve());
        }
        // The server only stops when nobody waits, so the sender is never dropped unanswered.
        let counted = rx.await.unwrap_or(false);
        TierSlot {
            turns: counted.then(|| self.turns.clone()),
        }
    }

    /// Paces the number at a new tier from now on.
    pub fn set_tier(&self, tier_mps: u32) {
        *self.turns.tier.borrow_mut() =
            tier_quota(tier_mps, self.headroom).map(|q| Rc::new(RateLimiter::direct(q)));
        self.turns.window.borrow_mut().set_cap(window_cap(tier_mps));
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
    fn tier_quota_paces_at_the_headroom_and_bursts_50_ms() {
        for (tier, per_sec, burst) in [(20u32, 18, 1), (80, 72, 4), (1000, 995, 50)] {
            let headroom = if tier == 1000 { 0.995 } else { 0.9 };
            let q = tier_quota(tier, headroom).unwrap_or_else(|| panic!("quota for {tier}"));
            let got =
                (Duration::from_secs(1).as_nanos() / q.replenish_interval().as_nanos()) as u32;
            assert_eq!((got, q.burst_size().get()), (per_sec, burst), "tier {tier}");
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
    fn the_window_counts_a_send_until_a_second_after_its_answer() {
        let mut w = SendWindow::new(Some(3));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(w.wait_before_next(t0), None);
            assert!(w.released());
        }
        // Three unanswered: full until an answer, however long ago they were released.
        assert_eq!(
            w.wait_before_next(t0 + Duration::from_secs(5)),
            Some(IN_FLIGHT_RECHECK)
        );
        w.answered(t0 + Duration::from_millis(100));
        w.answered(t0 + Duration::from_millis(300));
        let at = t0 + Duration::from_millis(500);
        assert_eq!(w.wait_before_next(at), Some(Duration::from_millis(600)));
        assert_eq!(w.wait_before_next(t0 + Duration::from_millis(1100)), None);
        // A send that never went out frees its place at once.
        let mut c = SendWindow::new(Some(1));
        assert!(c.released());
        c.cancelled();
        assert_eq!(c.wait_before_next(t0), None);
        // Unpaced: never waits, counts nothing.
        let mut free = SendWindow::new(None);
        for _ in 0..10 {
            assert!(!free.released());
            free.answered(t0);
        }
        assert_eq!(free.wait_before_next(t0), None);
        assert_eq!(window_cap(1_000), Some(1_000));
        assert_eq!(window_cap(0), None);
    }

    /// Sends released as fast as the window allows, each reaching "Meta" at some moment
    /// between its release and its answer, with stalls that hold a run of requests back and then
    /// let them through together: no rolling second at Meta holds more than the cap. Counting
    /// releases alone (the window before) lets each stalled run land beside the sends released
    /// after it.
    #[test]
    fn stalled_requests_never_bunch_past_the_cap_at_meta() {
        let cap = 50;
        let mut w = SendWindow::new(Some(cap));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Answers not yet given, and every send's arrival at Meta.
        let mut answers: Vec<Instant> = Vec::new();
        let mut arrivals: Vec<Instant> = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(6) {
            answers.sort();
            while answers.first().is_some_and(|a| *a <= now) {
                w.answered(answers.remove(0));
            }
            if w.wait_before_next(now).is_some() {
                now += Duration::from_micros(500);
                continue;
            }
            assert!(w.released());
            // Every 700 ms, the requests of the first 150 ms stall until it ends.
            let into_cycle = now.duration_since(t0).as_millis() as u64 % 700;
            let arrival = if into_cycle < 150 {
                now + ms(150 - into_cycle)
            } else {
                now + ms(1 + into_cycle % 3)
            };
            arrivals.push(arrival);
            answers.push(arrival + ms(2));
        }
        arrivals.sort();
        let mut busiest = 0;
        let mut from = 0;
        for (to, at) in arrivals.iter().enumerate() {
            while at.duration_since(arrivals[from]) >= SECOND {
                from += 1;
            }
            busiest = busiest.max(to + 1 - from);
        }
        assert!(arrivals.len() > cap * 5, "{} sent", arrivals.len());
        assert!(busiest <= cap, "{busiest} arrivals in one rolling second");
        // ... and it is not idle: close to the cap in the busiest second.
        assert!(busiest >= cap - 2, "{busiest}");
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
                let _slot = p.until_tier_ready(Lane::Bulk).await;
                order.borrow_mut().push(format!("bulk{i}"));
            }));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (p2, order2) = (p.clone(), order.clone());
        waiting.push(actix::spawn(async move {
            let _slot = p2.until_tier_ready(Lane::Care).await;
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
