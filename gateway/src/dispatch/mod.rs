//! One Dispatcher actor per business number, hosted on a pool of Arbiters. Numbers added by the
//! admin API (or moved to another tier by Meta) are picked up by `sync`.

pub(crate) mod attempt;
mod dispatcher;
pub mod lanes;
pub mod pacing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::DispatchSettings;
use crate::domain::PhoneNumberId;
use crate::metrics::Metrics;
use crate::store::leases::Fence;
use crate::store::Backend;
use crate::tenants::{BusinessNumber, ClinicSettings, Directory};

pub use dispatcher::{Dispatcher, Drain, SetTier};

/// Everything a dispatcher needs from the node.
#[derive(Clone)]
pub struct DispatchDeps {
    pub store: Arc<dyn Backend>,
    pub directory: Arc<Directory>,
    pub meta: Arc<crate::meta::Meta>,
    pub metrics: Metrics,
    pub settings: DispatchSettings,
    /// Unique per process: names this node's consumer in the queue groups.
    pub node_id: String,
    /// Which broadcasts were cancelled (their queued messages are ended, not sent).
    pub broadcasts: crate::broadcasts::cancel::CancelGate,
    /// With several nodes: which numbers this node owns (only those are dispatched here).
    /// `None`: a single node dispatches every number.
    pub ownership: Option<Arc<crate::ownership::Ownership>>,
}

struct Running {
    addr: Addr<Dispatcher>,
    wake: Arc<Notify>,
    /// False while the number's last claim round took every ready entry and nothing was
    /// accepted since: its queues hold nothing unclaimed, and the scrape need not ask Redis.
    backlog: Arc<AtomicBool>,
    tier_mps: u32,
    number: BusinessNumber,
}

/// The node's dispatchers and how to reach them.
pub struct Dispatchers {
    deps: DispatchDeps,
    running: Mutex<HashMap<PhoneNumberId, Running>>,
    arbiters: Vec<Arbiter>,
    next: Mutex<usize>,
}

impl Dispatchers {
    /// Starts a dispatcher for every number in the directory. Must run inside an actix System.
    pub fn start(directory: &Directory, deps: DispatchDeps) -> Self {
        let n_arbiters = match deps.settings.arbiters {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let d = Self {
            deps,
            running: Mutex::new(HashMap::new()),
            arbiters: (0..n_arbiters).map(|_| Arbiter::new()).collect(),
            next: Mutex::new(0),
        };
        d.sync(directory);
        d
    }

    /// Starts dispatchers for new numbers and re-paces numbers whose tier changed.
    pub fn sync(&self, directory: &Directory) {
        for clinic in directory.all() {
            self.sync_clinic(&clinic);
        }
    }

    /// As `sync`, for one clinic's numbers.
    pub fn sync_clinic(&self, clinic: &ClinicSettings) {
        let mut running = self.running.lock();
        for number in &clinic.numbers {
            if let Some(r) = running.get_mut(&number.phone_number_id) {
                r.number = number.clone();
                if r.tier_mps != number.tier_mps {
                    r.tier_mps = number.tier_mps;
                    r.addr.do_send(SetTier(number.tier_mps));
                }
                continue;
            }
            let Some(fence) = self.may_run(&number.phone_number_id) else {
                continue;
            };
            let r = self.spawn(number.clone(), fence, false);
            running.insert(number.phone_number_id.clone(), r);
        }
    }

    /// Whether this node may dispatch `number`, and with which fence: `Some(None)` on a single
    /// node, `Some(Some(fence))` when it owns the number, `None` when another node does.
    fn may_run(&self, number: &PhoneNumberId) -> Option<Option<Fence>> {
        match &self.deps.ownership {
            None => Some(None),
            Some(o) => o.fence_to_start(number).map(Some),
        }
    }

    fn spawn(&self, number: BusinessNumber, fence: Option<Fence>, took_over: bool) -> Running {
        let wake = Arc::new(Notify::new());
        // A new dispatcher has not looked yet: whatever is queued counts until it has.
        let backlog = Arc::new(AtomicBool::new(true));
        let deps = self.deps.clone();
        let n = number.clone();
        let w = wake.clone();
        let b = backlog.clone();
        let arbiter = {
            let mut next = self.next.lock();
            *next += 1;
            &self.arbiters[*next % self.arbiters.len()]
        };
        let addr = Dispatcher::start_in_arbiter(&arbiter.handle(), move |_| {
            Dispatcher::new(n, deps, w, b, fence, took_over)
        });
        Running {
            addr,
            wake,
            backlog,
            tier_mps: number.tier_mps,
            number,
        }
    }

    /// Tells a number's dispatcher that work arrived (cheap; safe from any thread), starting it
    /// again if it had passivated. With several nodes, a number owned elsewhere gets the news
    /// through the store and its owner wakes it.
    pub fn wake(&self, number: &PhoneNumberId) {
        if self.wake_owned(number) {
            return;
        }
        if self.deps.ownership.is_some() {
            let store = self.deps.store.clone();
            let number = number.clone();
            tokio::spawn(async move {
                let what = crate::store::leases::Leased::Number(number.clone());
                if let Err(e) = store.announce_work(&what).await {
                    // Its owner's idle poll still finds the work, only later.
                    tracing::warn!(number = %number, error = %e, "could not announce work");
                }
            });
        }
    }

    /// Wakes the number's dispatcher if this node may run it (restarting it if it passivated);
    /// false if it may not (another node owns it, or the number is unknown).
    pub fn wake_owned(&self, number: &PhoneNumberId) -> bool {
        let fence = self.may_run(number);
        let mut running = self.running.lock();
        let Some(r) = running.get_mut(number) else {
            return false;
        };
        let Some(fence) = fence else {
            return false;
        };
        if !r.addr.connected() {
            let fresh = self.spawn(r.number.clone(), fence, false);
            *r = fresh;
        }
        r.backlog.store(true, Ordering::Release);
        r.wake.notify_one();
        true
    }

    /// This node just took `number`'s lease: start its dispatcher, which first reclaims what
    /// the previous owner left claimed.
    pub fn take_over(&self, number: BusinessNumber, fence: Fence) {
        let r = self.spawn(number.clone(), Some(fence), true);
        if let Some(old) = self
            .running
            .lock()
            .insert(number.phone_number_id.clone(), r)
        {
            old.addr.do_send(Drain);
        }
    }

    /// Stops the number's dispatcher at once (its lease is gone; its sends are refused anyway).
    pub fn stop(&self, number: &PhoneNumberId) {
        if let Some(r) = self.running.lock().remove(number) {
            r.addr.do_send(Drain);
        }
    }

    /// Stops claiming for `number` and waits (up to `timeout`) for its in-flight sends, so the
    /// next owner starts from acknowledged entries only.
    pub async fn hand_off(&self, number: &PhoneNumberId, timeout: Duration) {
        let Some(r) = self.running.lock().remove(number) else {
            return;
        };
        if tokio::time::timeout(timeout, r.addr.send(Drain))
            .await
            .is_err()
        {
            tracing::warn!(number = %number, "hand-off drain timed out; the next owner reclaims the rest");
        }
    }

    /// The numbers whose dispatcher is running (not passivated).
    pub fn active_numbers(&self) -> Vec<PhoneNumberId> {
        self.running
            .lock()
            .iter()
            .filter(|(_, r)| r.addr.connected())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The running numbers that may hold unclaimed entries: the others' last claim round found
    /// their queues empty and nothing was accepted for them since.
    pub fn numbers_with_backlog(&self) -> Vec<PhoneNumberId> {
        self.running
            .lock()
            .iter()
            .filter(|(_, r)| r.addr.connected() && r.backlog.load(Ordering::Acquire))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// How many dispatchers are running (not passivated).
    pub fn active(&self) -> usize {
        self.running
            .lock()
            .values()
            .filter(|r| r.addr.connected())
            .count()
    }

    /// The numbers with a running dispatcher.
    pub fn numbers(&self) -> Vec<PhoneNumberId> {
        self.running.lock().keys().cloned().collect()
    }

    /// Stops claiming new work and waits (up to `timeout`) for in-flight sends to finish and ack.
    pub async fn drain(&self, timeout: Duration) {
        let addrs: Vec<Addr<Dispatcher>> = self
            .running
            .lock()
            .values()
            .map(|r| r.addr.clone())
            .collect();
        let all = futures::future::join_all(addrs.iter().map(|a| a.send(Drain)));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("drain timed out; unacknowledged entries will be reclaimed on restart");
        }
    }
}
