//! One Dispatcher actor per business number, hosted on a pool of Arbiters. Numbers added by the
//! admin API (or moved to another tier by Meta) are picked up by `sync`.

pub(crate) mod attempt;
mod dispatcher;
pub mod lanes;
pub mod pacing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::DispatchSettings;
use crate::domain::PhoneNumberId;
use crate::metrics::Metrics;
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
}

struct Running {
    addr: Addr<Dispatcher>,
    wake: Arc<Notify>,
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
            let r = self.spawn(number.clone());
            running.insert(number.phone_number_id.clone(), r);
        }
    }

    fn spawn(&self, number: BusinessNumber) -> Running {
        let wake = Arc::new(Notify::new());
        let deps = self.deps.clone();
        let n = number.clone();
        let w = wake.clone();
        let arbiter = {
            let mut next = self.next.lock();
            *next += 1;
            &self.arbiters[*next % self.arbiters.len()]
        };
        let addr =
            Dispatcher::start_in_arbiter(&arbiter.handle(), move |_| Dispatcher::new(n, deps, w));
        Running {
            addr,
            wake,
            tier_mps: number.tier_mps,
            number,
        }
    }

    /// Tells a number's dispatcher that work arrived (cheap; safe from any thread), starting it
    /// again if it had passivated.
    pub fn wake(&self, number: &PhoneNumberId) {
        let mut running = self.running.lock();
        let Some(r) = running.get_mut(number) else {
            return;
        };
        if !r.addr.connected() {
            let fresh = self.spawn(r.number.clone());
            *r = fresh;
        }
        r.wake.notify_one();
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
