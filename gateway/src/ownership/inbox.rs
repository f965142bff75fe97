//! The inbox consumers of the clinics this node owns. With several nodes, a patient's message
//! reaches whichever node Meta's webhook hit; that node queues it under the clinic (Redis
//! stream, durable before Meta gets its 200) and the clinic's owner handles the queue in order,
//! one message at a time: the conversation's state (window, pending question, intents, the
//! appointment a "Cancel" refers to) changes in the order the patient wrote.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use tokio::sync::Notify;

use crate::domain::TenantId;
use crate::store::leases::Fence;
use crate::store::{Backend, StoreError};
use crate::tenants::{ClinicSettings, Directory};

/// Entries taken per read.
const BATCH: usize = 32;
/// An idle clinic's queue is polled from this often, doubling to [`IDLE_POLL_MAX`] (the
/// announcements wake the consumer at once; polling only covers a missed announcement).
const IDLE_POLL: Duration = Duration::from_millis(250);
const IDLE_POLL_MAX: Duration = Duration::from_secs(5);

/// Handles one queued inbound message (its webhook JSON) for its clinic.
pub type Handler =
    Rc<dyn Fn(Arc<ClinicSettings>, String) -> LocalBoxFuture<'static, Result<(), StoreError>>>;

struct Running {
    wake: Rc<Notify>,
    stop: Rc<Cell<bool>>,
    done: Rc<Notify>,
    finished: Rc<Cell<bool>>,
}

/// This node's inbox consumers, one per owned clinic. Lives on one thread (local tasks).
pub struct Inboxes {
    store: Arc<dyn Backend>,
    directory: Arc<Directory>,
    consumer: String,
    handler: Handler,
    running: RefCell<HashMap<TenantId, Running>>,
}

impl Inboxes {
    pub fn new(
        store: Arc<dyn Backend>,
        directory: Arc<Directory>,
        node: &str,
        handler: Handler,
    ) -> Rc<Self> {
        Rc::new(Self {
            store,
            directory,
            consumer: node.to_owned(),
            handler,
            running: RefCell::new(HashMap::new()),
        })
    }

    /// This node took the clinic's lease: start its consumer, which first takes over whatever
    /// the previous owner left unacknowledged.
    pub fn start(self: &Rc<Self>, tenant: TenantId, _fence: Fence) {
        let run = Running {
            wake: Rc::new(Notify::new()),
            stop: Rc::new(Cell::new(false)),
            done: Rc::new(Notify::new()),
            finished: Rc::new(Cell::new(false)),
        };
        let task = Task {
            inboxes: self.clone(),
            tenant: tenant.clone(),
            wake: run.wake.clone(),
            stop: run.stop.clone(),
            done: run.done.clone(),
            finished: run.finished.clone(),
        };
        if let Some(old) = self.running.borrow_mut().insert(tenant, run) {
            old.stop.set(true);
            old.wake.notify_one();
        }
        actix::spawn(task.run());
    }

    /// Work was queued for the clinic.
    pub fn wake(&self, tenant: &TenantId) {
        if let Some(r) = self.running.borrow().get(tenant) {
            r.wake.notify_one();
        }
    }

    /// Stops the clinic's consumer at once (its lease is gone).
    pub fn stop(&self, tenant: &TenantId) {
        if let Some(r) = self.running.borrow_mut().remove(tenant) {
            r.stop.set(true);
            r.wake.notify_one();
        }
    }

    /// Stops the clinic's consumer after the message in hand, waiting up to `timeout`.
    pub async fn hand_off(&self, tenant: &TenantId, timeout: Duration) {
        let Some(r) = self.running.borrow_mut().remove(tenant) else {
            return;
        };
        r.stop.set(true);
        r.wake.notify_one();
        let done = r.done.notified();
        if !r.finished.get() && tokio::time::timeout(timeout, done).await.is_err() {
            tracing::warn!(tenant = %tenant, "inbox hand-off timed out; the next owner takes the rest");
        }
    }
}

struct Task {
    inboxes: Rc<Inboxes>,
    tenant: TenantId,
    wake: Rc<Notify>,
    stop: Rc<Cell<bool>>,
    done: Rc<Notify>,
    finished: Rc<Cell<bool>>,
}

impl Task {
    async fn run(self) {
        let store = &self.inboxes.store;
        let consumer = &self.inboxes.consumer;
        let mut take_over = true;
        let mut idle = IDLE_POLL;
        let mut failures: u32 = 0;
        while !self.stop.get() {
            let Some(clinic) = self.inboxes.directory.get(&self.tenant) else {
                let _ = tokio::time::timeout(IDLE_POLL_MAX, self.wake.notified()).await;
                continue;
            };
            let entries = match store
                .next_inbound(&self.tenant, consumer, take_over, BATCH)
                .await
            {
                Ok(e) => {
                    take_over = false;
                    e
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(tenant = %self.tenant, error = %e, "cannot read the clinic's inbox");
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            if entries.is_empty() {
                let _ = tokio::time::timeout(idle, self.wake.notified()).await;
                idle = (idle * 2).min(IDLE_POLL_MAX);
                continue;
            }
            idle = IDLE_POLL;
            for entry in entries {
                if self.stop.get() {
                    break;
                }
                match (self.inboxes.handler)(clinic.clone(), entry.body).await {
                    Ok(()) => {
                        failures = 0;
                        if let Err(e) = store.ack_inbound(&self.tenant, &entry.id).await {
                            // Handled again after the next read: the handling is idempotent
                            // by the message's wamid.
                            tracing::warn!(tenant = %self.tenant, error = %e, "could not acknowledge an inbound message");
                        }
                    }
                    Err(e) => {
                        // Left unacknowledged: read again (first) on the next round.
                        failures += 1;
                        tracing::warn!(tenant = %self.tenant, error = %e, "inbound message not handled; retrying");
                        tokio::time::sleep(backoff(failures)).await;
                        break;
                    }
                }
            }
        }
        self.finished.set(true);
        self.done.notify_waiters();
    }
}

/// 100 ms doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)).min(5_000))
}
