//! The Dispatcher actor: claims a number's queue entries in lane order and runs bounded sends.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture,
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
    pub paused_until: Cell<Option<Instant>>,
    pub draining: Cell<bool>,
    pub wake: Arc<Notify>,
}

impl Core {
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
    pub fn new(number: BusinessNumber, deps: DispatchDeps, wake: Arc<Notify>) -> Self {
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
        };
        let consumer = format!("{}-{}", deps.node_id, number.phone_number_id);
        let in_flight = Arc::new(Semaphore::new(s.max_in_flight));
        Self {
            core: Rc::new(Core {
                number,
                deps,
                consumer,
                pacer,
                policy,
                in_flight,
                paused_until: Cell::new(None),
                draining: Cell::new(false),
                wake,
            }),
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(number = %self.core.number.phone_number_id, tier = self.core.number.tier_mps, "dispatcher started");
        ctx.spawn(run(self.core.clone()).into_actor(self).map(|_, _, _| ()));
    }
}

impl Handler<SetTier> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: SetTier, _: &mut Self::Context) {
        tracing::info!(number = %self.core.number.phone_number_id, tier = msg.0, "tier changed");
        self.core.pacer.set_tier(msg.0);
    }
}

impl Handler<Drain> for Dispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        core.draining.set(true);
        core.wake.notify_one();
        Box::pin(async move {
            let max = core.deps.settings.max_in_flight as u32;
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
    while !core.draining.get() {
        let store = &core.deps.store;
        if let Err(e) = store.promote_due(&number, now_ms(), 1_000).await {
            store_errors += 1;
            let wait = Duration::from_millis(100 * u64::from(store_errors.min(50)));
            tracing::warn!(number = %number, error = %e, "store unavailable; dispatcher backing off");
            tokio::time::sleep(wait).await;
            continue;
        }
        store_errors = 0;

        if last_reclaim.is_none_or(|t| t.elapsed() >= reclaim_every) {
            last_reclaim = Some(Instant::now());
            core.pacer.forget_idle_recipients();
            for lane in Lane::ALL {
                match store
                    .reclaim(&number, lane, &core.consumer, s.reclaim_idle_ms, s.batch)
                    .await
                {
                    Ok(entries) => {
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
        let mut entries = Vec::new();
        for lane in lane_order(round, s.low_lane_every) {
            let want = permits.len() - entries.len();
            if want == 0 {
                break;
            }
            match store.claim(&number, lane, &core.consumer, want).await {
                Ok(mut got) => entries.append(&mut got),
                Err(e) => tracing::warn!(number = %number, error = %e, "claim failed"),
            }
        }

        if entries.is_empty() {
            drop(permits);
            let idle = Duration::from_millis(s.idle_poll_ms);
            let until_due = match store.next_due(&number).await {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64),
                _ => idle,
            };
            let _ = tokio::time::timeout(idle.min(until_due), core.wake.notified()).await;
            continue;
        }
        for (entry, permit) in entries.into_iter().zip(permits) {
            actix::spawn(attempt::process(core.clone(), entry, permit));
        }
    }
    tracing::info!(number = %number, "dispatcher draining");
}
