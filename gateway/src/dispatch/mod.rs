//! One Dispatcher actor per business number, hosted on a pool of Arbiters.

mod attempt;
mod dispatcher;
pub mod lanes;
pub mod pacing;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use tokio::sync::Notify;
use whatsapp_cloud::GraphClient;

use crate::config::DispatchSettings;
use crate::domain::PhoneNumberId;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tenants::Tenants;

pub use dispatcher::{Dispatcher, Drain};

/// Everything a dispatcher needs from the node.
#[derive(Clone)]
pub struct DispatchDeps {
    pub store: Arc<dyn Store>,
    pub client: GraphClient,
    pub metrics: Metrics,
    pub settings: DispatchSettings,
    /// Unique per process: names this node's consumer in the queue groups.
    pub node_id: String,
}

/// The node's dispatchers and how to reach them.
pub struct Dispatchers {
    wakers: HashMap<PhoneNumberId, Arc<Notify>>,
    addrs: Vec<Addr<Dispatcher>>,
    _arbiters: Vec<Arbiter>,
}

impl Dispatchers {
    /// Starts a dispatcher for every number of every clinic. Must run inside an actix System.
    pub fn start(tenants: &Tenants, deps: DispatchDeps) -> Self {
        let n_arbiters = match deps.settings.arbiters {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let arbiters: Vec<Arbiter> = (0..n_arbiters).map(|_| Arbiter::new()).collect();
        let mut wakers = HashMap::new();
        let mut addrs = Vec::new();
        let mut i = 0usize;
        for clinic in tenants.all() {
            for number in &clinic.numbers {
                let wake = Arc::new(Notify::new());
                wakers.insert(number.id.clone(), wake.clone());
                let deps = deps.clone();
                let number = number.clone();
                let token = clinic.access_token.clone();
                let arbiter = &arbiters[i % arbiters.len()];
                i += 1;
                let addr = Dispatcher::start_in_arbiter(&arbiter.handle(), move |_| {
                    Dispatcher::new(number, token, deps, wake)
                });
                addrs.push(addr);
            }
        }
        Self {
            wakers,
            addrs,
            _arbiters: arbiters,
        }
    }

    /// Tells a number's dispatcher that work arrived (cheap; safe from any thread).
    pub fn wake(&self, number: &PhoneNumberId) {
        if let Some(w) = self.wakers.get(number) {
            w.notify_one();
        }
    }

    /// Stops claiming new work and waits (up to `timeout`) for in-flight sends to finish and ack.
    pub async fn drain(&self, timeout: Duration) {
        let all = futures::future::join_all(self.addrs.iter().map(|a| a.send(Drain)));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("drain timed out; unacknowledged entries will be reclaimed on restart");
        }
    }
}
