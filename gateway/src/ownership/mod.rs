//! Several gateway nodes on one Redis: exactly one node owns each business number and each
//! clinic at a time. Only a number's owner runs its Dispatcher, so per-number pacing stays exact
//! and nothing is sent twice; only a clinic's owner handles its patients' inbound messages, in
//! the order they were queued (see [`inbox`]).
//!
//! Redis is the coordinator; there is no other. Each node heartbeats into a live-node set; every
//! number has a preferred owner among the live nodes (rendezvous hashing, [`assign`]), which
//! takes the number's lease (a key with a TTL and a fencing token) and renews it every tick. A
//! node that is no longer preferred (another joined) drains the number's dispatcher and releases
//! the lease; a node that dies stops renewing, drops out of the live set, and its leases run out,
//! so the new preferred owners take them within `lease_ms` plus a tick. A send starts only
//! while the sender's token is still the lease's (checked atomically in the store), so a node
//! that lost its lease (paused, partitioned) can no longer start one. Any node accepts traffic:
//! an accept for a number owned elsewhere is announced through Redis pub/sub and the owner
//! wakes its dispatcher.

pub mod assign;
pub mod inbox;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;

use crate::clock::now_ms;
use crate::dispatch::Dispatchers;
use crate::domain::PhoneNumberId;
use crate::store::leases::{Fence, Leased};
use crate::store::Backend;
use crate::tenants::Directory;

/// Lease calls in flight at once per tick.
const CONCURRENCY: usize = 64;

/// The ownership settings of a node (`[cluster]` in the configuration).
#[derive(Debug, Clone)]
pub struct OwnershipSettings {
    pub node_id: String,
    /// How long a lease (and a heartbeat) lasts without renewal; a dead node's numbers move
    /// after about this long.
    pub lease: Duration,
}

impl OwnershipSettings {
    /// Leases are renewed this often: five times per lease, so a missed tick or two is harmless.
    pub fn tick(&self) -> Duration {
        (self.lease / 5).max(Duration::from_millis(20))
    }
}

/// What this node owns now.
pub struct Ownership {
    pub settings: OwnershipSettings,
    held: Mutex<HashMap<Leased, Fence>>,
    /// Being handed off: still held (a number's draining sends go out under the lease) but
    /// nothing may start for them again here.
    releasing: Mutex<std::collections::HashSet<Leased>>,
    /// Set when the node shuts down: it takes and renews nothing any more.
    leaving: std::sync::atomic::AtomicBool,
}

impl Ownership {
    pub fn new(settings: OwnershipSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            held: Mutex::new(HashMap::new()),
            releasing: Mutex::new(std::collections::HashSet::new()),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn node(&self) -> &str {
        &self.settings.node_id
    }

    /// The fence this node holds `number` with, if it owns it.
    pub fn fence(&self, number: &PhoneNumberId) -> Option<Fence> {
        self.held
            .lock()
            .get(&Leased::Number(number.clone()))
            .cloned()
    }

    /// The fence to start a dispatcher for `number` with: owned and not being handed off.
    pub fn fence_to_start(&self, number: &PhoneNumberId) -> Option<Fence> {
        let what = Leased::Number(number.clone());
        if self.releasing.lock().contains(&what) {
            return None;
        }
        self.held.lock().get(&what).cloned()
    }

    pub fn owns(&self, what: &Leased) -> bool {
        self.held.lock().contains_key(what)
    }

    /// What this node owns, sorted by name.
    pub fn owned(&self) -> Vec<Leased> {
        let mut v: Vec<Leased> = self.held.lock().keys().cloned().collect();
        v.sort_by_key(Leased::name);
        v
    }
}

/// What one tick decided for one number or clinic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ours and still preferred: renew.
    Renew,
    /// Ours but another node is preferred (or the number is gone): drain, then release.
    HandOff,
    /// Not ours and we are preferred: try to take it.
    Take,
    /// Not ours, not for us.
    Leave,
}

/// The decision for a number or clinic (by [`Leased::name`]), from who holds it here, the live
/// nodes and whether it is still in the directory. Pure, so the rules are tested without Redis.
pub fn step(me: &str, held_here: bool, in_directory: bool, live: &[String], name: &str) -> Step {
    let preferred = assign::preferred(name, live);
    match (held_here, in_directory && preferred == Some(me)) {
        (true, true) => Step::Renew,
        (true, false) => Step::HandOff,
        (false, true) => Step::Take,
        (false, false) => Step::Leave,
    }
}

/// What this node runs for what it owns.
pub struct Runners {
    pub dispatchers: Arc<Dispatchers>,
    pub inboxes: Rc<inbox::Inboxes>,
}

/// Starts the node's ownership loop and its announcement listener. Must run inside an actix
/// System (on one thread: the inbox consumers are local tasks).
pub fn spawn(
    ownership: Arc<Ownership>,
    store: Arc<dyn Backend>,
    directory: Arc<Directory>,
    runners: Rc<Runners>,
) {
    let (o, s, r) = (ownership.clone(), store.clone(), runners.clone());
    actix::spawn(async move {
        let mut tick = tokio::time::interval(o.settings.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_tick(&o, &*s, &directory, &r).await {
                tracing::warn!(error = %e, "ownership tick failed; leases are renewed next tick");
            }
        }
    });
    actix::spawn(async move {
        loop {
            match store.work_announcements().await {
                Ok(mut announced) => {
                    while let Some(what) = announced.next().await {
                        if !ownership.owns(&what) {
                            continue;
                        }
                        match &what {
                            Leased::Number(n) => {
                                runners.dispatchers.wake_owned(n);
                            }
                            Leased::Tenant(t) => runners.inboxes.wake(t),
                        }
                    }
                    tracing::warn!("work announcements ended; subscribing again");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to work announcements"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One round: heartbeat, then renew, take or hand off each number and clinic.
pub async fn run_tick(
    ownership: &Ownership,
    store: &dyn Backend,
    directory: &Directory,
    runners: &Runners,
) -> Result<(), crate::store::StoreError> {
    if ownership.leaving.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(());
    }
    let me = ownership.node().to_owned();
    let lease_ms = u64::try_from(ownership.settings.lease.as_millis()).unwrap_or(u64::MAX);
    store.heartbeat(&me, now_ms(), lease_ms).await?;
    let mut live = store.live_nodes(now_ms()).await?;
    if !live.contains(&me) {
        live.push(me.clone());
    }
    let mut numbers: HashMap<Leased, crate::tenants::BusinessNumber> = HashMap::new();
    let mut present: std::collections::HashSet<Leased> = std::collections::HashSet::new();
    for clinic in directory.all() {
        present.insert(Leased::Tenant(clinic.id.clone()));
        for n in &clinic.numbers {
            let what = Leased::Number(n.phone_number_id.clone());
            present.insert(what.clone());
            numbers.insert(what, n.clone());
        }
    }
    let mut all: Vec<Leased> = present.iter().cloned().collect();
    all.extend(
        ownership
            .owned()
            .into_iter()
            .filter(|w| !present.contains(w)),
    );
    let decisions: Vec<(Leased, Step)> = all
        .into_iter()
        .map(|w| {
            let s = step(
                &me,
                ownership.owns(&w),
                present.contains(&w),
                &live,
                &w.name(),
            );
            (w, s)
        })
        .collect();
    futures::stream::iter(decisions)
        .for_each_concurrent(CONCURRENCY, |(what, step)| {
            let me = &me;
            let numbers = &numbers;
            async move {
                let result = match step {
                    Step::Leave => Ok(()),
                    Step::Renew => renew(ownership, store, runners, &what, me, lease_ms).await,
                    Step::Take => {
                        take(
                            ownership,
                            store,
                            runners,
                            &what,
                            numbers.get(&what),
                            me,
                            lease_ms,
                        )
                        .await
                    }
                    Step::HandOff => hand_off(ownership, store, runners, &what, me).await,
                };
                if let Err(e) = result {
                    tracing::warn!(what = %what.name(), error = %e, "lease step failed");
                }
            }
        })
        .await;
    Ok(())
}

/// Stops taking and renewing, leaves the live set and releases every lease held (the node's
/// dispatchers have drained). Returns how many leases were released.
pub async fn leave(ownership: &Ownership, store: &dyn Backend) -> usize {
    ownership
        .leaving
        .store(true, std::sync::atomic::Ordering::Release);
    if let Err(e) = store.heartbeat(ownership.node(), 0, 0).await {
        tracing::warn!(error = %e, "could not leave the live-node set; it runs out by itself");
    }
    let held: Vec<Leased> = ownership.held.lock().drain().map(|(w, _)| w).collect();
    let mut released = 0;
    for what in held {
        match store.release_lease(&what, ownership.node()).await {
            Ok(true) => released += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(what = %what.name(), error = %e, "lease not released; it runs out by itself")
            }
        }
    }
    released
}

/// Stops what runs for `what` here at once (its lease is gone).
fn stop(runners: &Runners, what: &Leased) {
    match what {
        Leased::Number(n) => runners.dispatchers.stop(n),
        Leased::Tenant(t) => runners.inboxes.stop(t),
    }
}

async fn renew(
    ownership: &Ownership,
    store: &dyn Backend,
    runners: &Runners,
    what: &Leased,
    me: &str,
    lease_ms: u64,
) -> Result<(), crate::store::StoreError> {
    let held = ownership.held.lock().get(what).cloned();
    let now = store.take_lease(what, me, lease_ms).await?;
    if now == held {
        return Ok(());
    }
    // The lease ran out (a long pause, Redis away): taken by another node, or granted to us
    // again with a new token. Either way what runs under the old token must stop; if the lease
    // is ours again, give it back so the next tick takes it cleanly.
    tracing::warn!(what = %what.name(), "lease lost; stopping what ran under it");
    ownership.held.lock().remove(what);
    stop(runners, what);
    if now.is_some() {
        store.release_lease(what, me).await?;
    }
    Ok(())
}

async fn take(
    ownership: &Ownership,
    store: &dyn Backend,
    runners: &Runners,
    what: &Leased,
    number: Option<&crate::tenants::BusinessNumber>,
    me: &str,
    lease_ms: u64,
) -> Result<(), crate::store::StoreError> {
    let Some(fence) = store.take_lease(what, me, lease_ms).await? else {
        return Ok(());
    };
    tracing::info!(what = %what.name(), token = fence.token, "took the lease");
    ownership.held.lock().insert(what.clone(), fence.clone());
    match (what, number) {
        (Leased::Number(_), Some(number)) => runners.dispatchers.take_over(number.clone(), fence),
        (Leased::Tenant(t), _) => runners.inboxes.start(t.clone(), fence),
        (Leased::Number(_), None) => {}
    }
    Ok(())
}

async fn hand_off(
    ownership: &Ownership,
    store: &dyn Backend,
    runners: &Runners,
    what: &Leased,
    me: &str,
) -> Result<(), crate::store::StoreError> {
    // Finish what is in flight first, so the next owner finds nothing half-done; meanwhile
    // nothing may start for it here again.
    ownership.releasing.lock().insert(what.clone());
    match what {
        Leased::Number(n) => {
            runners
                .dispatchers
                .hand_off(n, ownership.settings.lease)
                .await
        }
        Leased::Tenant(t) => runners.inboxes.hand_off(t, ownership.settings.lease).await,
    }
    ownership.held.lock().remove(what);
    let released = store.release_lease(what, me).await;
    ownership.releasing.lock().remove(what);
    released?;
    tracing::info!(what = %what.name(), "handed off");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_preferred_node_takes_and_renews_others_leave() {
        let nodes = live(&["a", "b", "c"]);
        let owner = assign::preferred("1055", &nodes)
            .unwrap_or_default()
            .to_owned();
        assert_eq!(step(&owner, false, true, &nodes, "1055"), Step::Take);
        assert_eq!(step(&owner, true, true, &nodes, "1055"), Step::Renew);
        for other in nodes.iter().filter(|n| **n != owner) {
            assert_eq!(step(other, false, true, &nodes, "1055"), Step::Leave);
            // Held by a node that is no longer preferred (it was alone before): hand it off.
            assert_eq!(step(other, true, true, &nodes, "1055"), Step::HandOff);
        }
    }

    #[test]
    fn a_number_gone_from_the_directory_is_released() {
        let nodes = live(&["a"]);
        assert_eq!(step("a", true, false, &nodes, "1055"), Step::HandOff);
        assert_eq!(step("a", false, false, &nodes, "1055"), Step::Leave);
    }

    #[test]
    fn when_the_owner_dies_exactly_one_survivor_takes_over() {
        let nodes = live(&["a", "b", "c"]);
        let owner = assign::preferred("1055", &nodes)
            .unwrap_or_default()
            .to_owned();
        let survivors: Vec<String> = nodes.iter().filter(|n| **n != owner).cloned().collect();
        let takers: Vec<&String> = survivors
            .iter()
            .filter(|n| step(n, false, true, &survivors, "1055") == Step::Take)
            .collect();
        assert_eq!(takers.len(), 1);
    }
}
