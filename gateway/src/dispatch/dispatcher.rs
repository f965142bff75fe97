//! The Dispatcher actor: claims a number's queue entries in lane order and runs bounded sends.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture,
    WrapFuture,
};
use tokio::sync::{Notify, Semaphore};

use super::attempt;
use super::lanes::lane_order;
use super::pacing::Pacer;
use super::DispatchDeps;
use crate::clock::now_ms;
use crate::domain::Lane;
use crate::retry::RetryPolicy;
use crate::tenants::BusinessNumber;

/// State shared by the dispatch loop and its in-flight sends (all on one arbiter thread).
pub(super) struct Core {
    pub number: BusinessNumber,
    pub deps: DispatchDeps,
    pub consumer: String,
    pub pacer: Pacer,
    pub policy: RetryPolicy,
    pub in_flight: Arc<Semaphore>,
    /// The size of `in_flight` for the current tier (see [`in_flight_slots`]).
    pub slots: Cell<usize>,
    /// Outcomes Meta gave that could not be recorded (the store was away): applied when the
    /// entry comes back, instead of deciding (and sending) again.
    pub unrecorded: std::cell::RefCell<
        std::collections::HashMap<crate::domain::MessageId, crate::store::AttemptOutcome>,
    >,
    pub paused_until: Cell<Option<Instant>>,
    pub draining: Cell<bool>,
    pub wake: Arc<Notify>,
    /// See `Running::backlog`: set by every wake, cleared here when a claim round empties the
    /// queues.
    pub backlog: Arc<std::sync::atomic::AtomicBool>,
    /// When this number's earliest deferred message is due, as far as this dispatcher knows:
    /// learned from `promote_due`, and moved earlier by its own deferrals (the only writer of
    /// the number's delayed set), so rounds need not ask Redis while nothing can be due.
    pub delayed: Cell<Delayed>,
    /// The earliest deferral noted since the current `promote_due` call started: its answer
    /// may predate that deferral.
    deferred_since: Cell<Option<i64>>,
    /// The lease this node sends under (several nodes); `None` on a single node.
    pub fence: Option<crate::store::leases::Fence>,
    /// Set when this node just took the number over: the first reclaim takes every entry the
    /// previous owner left claimed, however recent (the lease fences that owner out).
    pub reclaim_all: Cell<bool>,
}

/// What a dispatcher knows of its number's delayed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delayed {
    /// Not asked yet (a new dispatcher, or one that took the number over).
    Unknown,
    Empty,
    /// The earliest is due at this time (unix ms).
    At(i64),
}

impl Delayed {
    /// The state after a deferral to `due_ms`.
    fn with(self, due_ms: i64) -> Delayed {
        match self {
            Delayed::Unknown => Delayed::Unknown,
            Delayed::Empty => Delayed::At(due_ms),
            Delayed::At(t) => Delayed::At(t.min(due_ms)),
        }
    }

    /// Whether a round at `now_ms` has anything to promote.
    fn due_by(self, now_ms: i64) -> bool {
        match self {
            Delayed::Unknown => true,
            Delayed::Empty => false,
            Delayed::At(t) => t <= now_ms,
        }
    }
}

/// Even when its own bookkeeping says nothing is due, a dispatcher asks Redis this often: a
/// previous owner's last deferral may have landed after this one took the number over.
const PROMOTE_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

impl Core {
    /// This dispatcher deferred a message to `due_ms`: the delayed set is not empty any more.
    pub fn note_deferred(&self, due_ms: i64) {
        let before = self.delayed.get();
        self.delayed.set(before.with(due_ms));
        let since = self.deferred_since.get();
        self.deferred_since
            .set(Some(since.map_or(due_ms, |t| t.min(due_ms))));
        if before != self.delayed.get() {
            // A sleeping loop recomputes its wait.
            self.wake.notify_one();
        }
    }

    /// A `promote_due` starts: deferrals from now on may be missing from its answer.
    fn asking_delayed(&self) {
        self.deferred_since.set(None);
    }

    /// `promote_due` answered that the earliest deferred message left is due at `next_due`;
    /// deferrals noted while it was asked are kept.
    fn learned_delayed(&self, next_due: Option<i64>) {
        let known = next_due.map_or(Delayed::Empty, Delayed::At);
        let known = match self.deferred_since.take() {
            Some(d) => known.with(d),
            None => known,
        };
        self.delayed.set(known);
    }

    /// Sleeps until woken (an accept, a deferral), `idle` at most, or less when a deferred
    /// message falls due sooner.
    async fn wait_for_work(&self, idle: Duration) {
        let until = match self.delayed.get() {
            Delayed::At(t) => idle.min(Duration::from_millis(
                t.saturating_sub(now_ms()).max(0) as u64
            )),
            Delayed::Empty | Delayed::Unknown => idle,
        };
        let _ = tokio::time::timeout(until, self.wake.notified()).await;
    }

    /// Slows the whole number down after Meta said it is over its throughput.
    pub fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        if self.paused_until.get().is_none_or(|p| p < until) {
            self.paused_until.set(Some(until));
        }
    }

    pub async fn wait_if_paused(&self) {
        while let Some(until) = self.paused_until.get() {
            let now = Instant::now();
            if until <= now {
                self.paused_until.set(None);
                break;
            }
            tokio::time::sleep(until - now).await;
        }
    }
}

pub struct Dispatcher {
    core: Rc<Core>,
}

/// Meta moved the number to another throughput tier.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTier(pub u32);

/// Stop claiming, finish in-flight sends, then stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Dispatcher {
    pub fn new(
        number: BusinessNumber,
        deps: DispatchDeps,
        wake: Arc<Notify>,
        backlog: Arc<std::sync::atomic::AtomicBool>,
        fence: Option<crate::store::leases::Fence>,
        took_over: bool,
    ) -> Self {
        let s = &deps.settings;
        let pacer = Pacer::new(
            number.tier_mps,
            s.tier_headroom,
            Duration::from_millis(s.pair_period_ms),
            s.pair_burst,
        );
        let policy = RetryPolicy {
            base: Duration::from_millis(s.retry_base_ms),
            max: Duration::from_millis(s.retry_max_ms),
            max_attempts: s.max_attempts,
            status_grace: Duration::from_millis(s.status_grace_ms),
            throughput_pause: Duration::from_millis(s.throughput_pause_ms),
        };
        let consumer = format!("{}-{}", deps.node_id, number.phone_number_id);
        let slots = in_flight_slots(number.tier_mps, s.tier_headroom, s.max_in_flight);
        let in_flight = Arc::new(Semaphore::new(slots));
        let dispatcher = Self {
            core: Rc::new(Core {
                number,
                deps,
                consumer,
                pacer,
                policy,
                in_flight,
                slots: Cell::new(slots),
                unrecorded: Default::default(),
                paused_until: Cell::new(None),
                draining: Cell::new(false),
                wake,
                backlog,
                delayed: Cell::new(Delayed::Unknown),
                deferred_since: Cell::new(None),
                fence,
                reclaim_all: Cell::new(took_over),
            }),
        };
        if took_over {
            // Meta counts a rolling second: the previous owner may have sent a full second's
            // worth just before it handed the number over, so the new owner's first second
            // starts one second later.
            dispatcher.core.pause(Duration::from_secs(1));
        }
        dispatcher
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(number = %self.core.number.phone_number_id, tier = self.core.number.tier_mps, "dispatcher started");
        // When the loop ends (drained or passivated) the actor stops with it.
        ctx.spawn(
            run(self.core.clone())
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

impl Handler<SetTier> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: SetTier, _: &mut Self::Context) {
        tracing::info!(number = %self.core.number.phone_number_id, tier = msg.0, "tier changed");
        self.core.pacer.set_tier(msg.0);
        let s = &self.core.deps.settings;
        let (old, new) = (
            self.core.slots.get(),
            in_flight_slots(msg.0, s.tier_headroom, s.max_in_flight),
        );
        if new > old {
            self.core.in_flight.add_permits(new - old);
        } else {
            // Permits in use now come back and are forgotten as they do.
            let forgotten = self.core.in_flight.forget_permits(old - new);
            if forgotten < old - new {
                let core = self.core.clone();
                let rest = (old - new - forgotten) as u32;
                actix::spawn(async move {
                    if let Ok(p) = core.in_flight.clone().acquire_many_owned(rest).await {
                        p.forget();
                    }
                });
            }
        }
        self.core.slots.set(new);
    }
}

impl Handler<Drain> for Dispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        core.draining.set(true);
        core.wake.notify_one();
        Box::pin(async move {
            let max = core.slots.get() as u32;
            // All permits back means every in-flight send finished and acknowledged.
            if let Ok(p) = core.in_flight.acquire_many(max).await {
                drop(p);
            }
        })
    }
}

async fn run(core: Rc<Core>) {
    let s = core.deps.settings.clone();
    let number = core.number.phone_number_id.clone();
    let reclaim_every = Duration::from_millis((s.reclaim_idle_ms / 3).max(500));
    let mut last_reclaim: Option<Instant> = None;
    let mut round: u32 = 0;
    let mut store_errors: u32 = 0;
    let mut idle_rounds: u32 = 0;
    let mut idle_since: Option<Instant> = None;
    let mut last_promote: Option<Instant> = None;
    while !core.draining.get() {
        let store = &core.deps.store;
        let overdue = last_promote.is_none_or(|t| t.elapsed() >= PROMOTE_AT_LEAST_EVERY);
        if overdue || core.delayed.get().due_by(now_ms()) {
            core.asking_delayed();
            match store.promote_due(&number, now_ms(), 1_000).await {
                Ok(p) => {
                    core.learned_delayed(p.next_due);
                    last_promote = Some(Instant::now());
                }
                Err(e) => {
                    store_errors += 1;
                    if matches!(e, crate::store::StoreError::Unavailable(_)) {
                        crate::metrics::store_unavailable("dispatcher");
                    }
                    let wait = Duration::from_millis(100 * u64::from(store_errors.min(50)));
                    tracing::warn!(number = %number, error = %e, "store unavailable; dispatcher backing off");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
        }
        store_errors = 0;

        if last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_every) {
            last_reclaim = Some(Instant::now());
            core.pacer.forget_idle_recipients();
            let idle_ms = if core.reclaim_all.replace(false) {
                0
            } else {
                s.reclaim_idle_ms
            };
            for lane in Lane::ALL {
                match store
                    .reclaim(&number, lane, &core.consumer, idle_ms, s.batch)
                    .await
                {
                    Ok(entries) => {
                        if idle_ms == 0 && entries.len() >= s.batch {
                            // More left behind than one batch: take the rest next round.
                            core.reclaim_all.set(true);
                            last_reclaim = None;
                        }
                        for entry in entries {
                            let Ok(permit) = core.in_flight.clone().acquire_owned().await else {
                                return;
                            };
                            tracing::info!(number = %number, message = %entry.message, "reclaimed an unacknowledged entry");
                            actix::spawn(attempt::process(core.clone(), entry, permit));
                        }
                    }
                    Err(e) => tracing::warn!(number = %number, error = %e, "reclaim failed"),
                }
            }
        }

        // Wait for at least one free slot, then take as many as are free (up to a batch).
        let Ok(first) = core.in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut permits = vec![first];
        while permits.len() < s.batch {
            match core.in_flight.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }

        round = round.wrapping_add(1);
        // Cleared before the claim: an accept after this point sets it again, and one before it
        // is claimed now unless the round fills up (which sets it again below).
        core.backlog.store(false, Ordering::Release);
        let mut entries = Vec::new();
        let mut claim_failed = false;
        for lane in lane_order(round, s.low_lane_every) {
            let want = permits.len() - entries.len();
            if want == 0 {
                break;
            }
            match store.claim(&number, lane, &core.consumer, want).await {
                Ok(mut got) => entries.append(&mut got),
                Err(e) => {
                    claim_failed = true;
                    tracing::warn!(number = %number, error = %e, "claim failed");
                }
            }
        }
        if claim_failed || entries.len() >= permits.len() {
            core.backlog.store(true, Ordering::Release);
        }

        if entries.is_empty() {
            drop(permits);
            let idle_for = idle_since.get_or_insert_with(Instant::now).elapsed();
            if idle_for >= Duration::from_millis(s.passivate_after_ms) && quiet(&core).await {
                // Nothing queued, scheduled or in flight: stop; an accept on this node wakes the
                // number's dispatcher again (see `Dispatchers::wake`).
                tracing::debug!(number = %number, "dispatcher passivated");
                return;
            }
            // Idle numbers poll less and less often (work accepted on this node wakes them at once).
            let idle = idle_backoff(s.idle_poll_ms, s.idle_poll_max_ms, idle_rounds);
            idle_rounds = idle_rounds.saturating_add(1);
            core.wait_for_work(idle).await;
            continue;
        }
        idle_rounds = 0;
        idle_since = None;
        let drained = !core.backlog.load(Ordering::Acquire);
        for (entry, permit) in entries.into_iter().zip(permits) {
            actix::spawn(attempt::process(core.clone(), entry, permit));
        }
        if drained {
            // Everything ready was claimed: the next round waits for a wake (an accept, a
            // deferral) instead of asking the lanes again at once and finding them empty.
            core.wait_for_work(Duration::from_millis(s.idle_poll_ms))
                .await;
        }
    }
    tracing::info!(number = %number, "dispatcher draining");
}

/// How many messages a number may hold claimed at once: about half a second of its paced rate
/// (at least 2, at most `max`). Claimed messages wait for the pacer in claim order, so a care
/// message that arrives behind a broadcast waits at most this long, not for a whole batch at a
/// slow tier. Unlimited numbers (tier 0) use `max`.
pub fn in_flight_slots(tier_mps: u32, headroom: f64, max: usize) -> usize {
    if tier_mps == 0 {
        return max.max(1);
    }
    let half_second = (f64::from(tier_mps) * headroom * 0.5).ceil() as usize;
    half_second.clamp(2, max.max(2))
}

/// The wait before the next poll of an idle number: doubling from `base_ms` to `max_ms`.
pub fn idle_backoff(base_ms: u64, max_ms: u64, idle_rounds: u32) -> Duration {
    let factor = 1u64.checked_shl(idle_rounds.min(16)).unwrap_or(u64::MAX);
    Duration::from_millis(base_ms.saturating_mul(factor).min(max_ms.max(base_ms)))
}

/// True when the number has nothing queued, scheduled or in flight.
async fn quiet(core: &Core) -> bool {
    let all_permits = core.in_flight.available_permits() == core.slots.get();
    match core.deps.store.depth(&core.number.phone_number_id).await {
        Ok(d) => all_permits && d.ready == [0, 0, 0] && d.in_flight == 0 && d.delayed == 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_tiers_hold_half_a_second_of_work() {
        assert_eq!(in_flight_slots(20, 0.9, 64), 9);
        assert_eq!(in_flight_slots(80, 0.9, 64), 36);
        assert_eq!(in_flight_slots(1_000, 0.9, 64), 64);
        assert_eq!(in_flight_slots(0, 0.9, 64), 64);
        assert_eq!(in_flight_slots(1, 0.9, 64), 2);
    }

    #[test]
    fn a_deferral_only_ever_moves_the_known_due_time_earlier() {
        assert_eq!(Delayed::Empty.with(500), Delayed::At(500));
        assert_eq!(Delayed::At(300).with(500), Delayed::At(300));
        assert_eq!(Delayed::At(700).with(500), Delayed::At(500));
        // Not asked yet: the next round asks Redis anyway.
        assert_eq!(Delayed::Unknown.with(500), Delayed::Unknown);
    }

    #[test]
    fn a_round_promotes_only_when_something_can_be_due() {
        assert!(Delayed::Unknown.due_by(0));
        assert!(!Delayed::Empty.due_by(i64::MAX));
        assert!(!Delayed::At(1_000).due_by(999));
        assert!(Delayed::At(1_000).due_by(1_000));
    }

    #[test]
    fn idle_polling_backs_off_to_a_ceiling() {
        assert_eq!(idle_backoff(250, 5_000, 0), Duration::from_millis(250));
        assert_eq!(idle_backoff(250, 5_000, 2), Duration::from_millis(1_000));
        assert_eq!(idle_backoff(250, 5_000, 10), Duration::from_millis(5_000));
        assert_eq!(idle_backoff(250, 5_000, 200), Duration::from_millis(5_000));
    }
}
