//! In-process store for `demo` and fast tests. Same contract as Redis, one lock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    transitions, Accepted, AttemptOutcome, IdempotencyClaim, MessageErasure, Promoted, QueueDepth,
    QueueEntry, StatusOutcome, Store, StoreError,
};
use crate::domain::message::{MessageRecord, StatusDecision};
use crate::domain::{
    Lane, MessageId, MessageState, NewMessage, PhoneNumberId, StatusUpdate, TenantId, E164,
};

#[derive(Default)]
struct NumberQueue {
    lanes: [VecDeque<(String, MessageId)>; 3],
    pending: HashMap<String, Pending>,
    /// (due_ms, entry sequence, lane, message)
    delayed: BTreeSet<(i64, u64, usize, MessageId)>,
}

struct Pending {
    lane: Lane,
    message: MessageId,
    consumer: String,
    claimed_at: Instant,
}

#[derive(Default)]
struct Inner {
    records: HashMap<(PhoneNumberId, MessageId), MessageRecord>,
    by_tenant: HashMap<(TenantId, MessageId), PhoneNumberId>,
    by_wamid: HashMap<(PhoneNumberId, String), MessageId>,
    queues: HashMap<PhoneNumberId, NumberQueue>,
    idempotency: HashMap<(TenantId, String), (String, MessageId, Instant)>,
    seq: u64,
}

impl Inner {
    fn next_entry(&mut self) -> (u64, String) {
        self.seq += 1;
        (self.seq, format!("{}-0", self.seq))
    }

    fn enqueue(&mut self, number: &PhoneNumberId, lane: Lane, id: MessageId) {
        let (_, entry) = self.next_entry();
        self.queues.entry(number.clone()).or_default().lanes[lane.index()].push_back((entry, id));
    }
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Clinics, keys, wallets, templates, windows, limits (see `memory_tenancy.rs`).
    pub(super) tenancy: Mutex<super::memory_tenancy::State>,
    /// Appointments and scheduled jobs (see `memory_clinical.rs`).
    pub(super) clinical: Mutex<super::memory_clinical::State>,
    /// Documents, visits, feedback, inbox, consent and markers (see `memory_records.rs`).
    pub(super) records: Mutex<super::memory_records::State>,
    /// The patient directory: records, phone index, change feed (see `memory_patients.rs`).
    pub(super) patients: Mutex<super::memory_patients::State>,
    /// Number leases and live nodes (see `memory_leases.rs`).
    pub(super) leases: Mutex<super::memory_leases::State>,
    /// Clinics' shared API rate-limit states (see `memory_rate.rs`).
    pub(super) rates: Mutex<HashMap<TenantId, i64>>,
    /// Clinics' inbound queues (see `memory_inbox.rs`).
    pub(super) inbox: Mutex<super::memory_inbox::State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn accept(&self, msg: &NewMessage, max_queue: u64) -> Result<Accepted, StoreError> {
        let mut g = self.inner.lock();
        let key = (msg.number.clone(), msg.id.clone());
        if g.records.contains_key(&key) {
            return Ok(Accepted::AlreadyExists);
        }
        let q = g.queues.entry(msg.number.clone()).or_default();
        let queued = q.lanes[msg.lane.index()].len() as u64;
        if queued >= max_queue {
            return Err(StoreError::QueueFull(msg.number.clone()));
        }
        g.records.insert(key, MessageRecord::new(msg.clone()));
        g.by_tenant
            .insert((msg.tenant.clone(), msg.id.clone()), msg.number.clone());
        g.enqueue(&msg.number, msg.lane, msg.id.clone());
        Ok(Accepted::Created)
    }

    async fn message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let g = self.inner.lock();
        let Some(number) = g.by_tenant.get(&(tenant.clone(), id.clone())) else {
            return Ok(None);
        };
        Ok(g.records
            .get(&(number.clone(), id.clone()))
            .filter(|r| &r.message.tenant == tenant)
            .cloned())
    }

    async fn load(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self
            .inner
            .lock()
            .records
            .get(&(number.clone(), id.clone()))
            .cloned())
    }

    async fn begin_fenced_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        now_ms: i64,
        fence: Option<&super::leases::Fence>,
    ) -> Result<Option<u32>, StoreError> {
        if let Some(fence) = fence {
            use super::leases::{LeaseStore, Leased};
            let holder = self.lease_holder(&Leased::Number(number.clone())).await?;
            if holder.as_ref() != Some(fence) {
                return Err(StoreError::Fenced(number.clone()));
            }
        }
        let mut g = self.inner.lock();
        Ok(g.records
            .get_mut(&(number.clone(), id.clone()))
            .and_then(|r| transitions::begin_attempt(r, now_ms)))
    }

    async fn finish_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> Result<Option<MessageState>, StoreError> {
        let mut g = self.inner.lock();
        let Some(rec) = g.records.get_mut(&(number.clone(), id.clone())) else {
            return Ok(None);
        };
        let state = transitions::finish_attempt(rec, outcome, now_ms);
        if let (Some(_), Some(wamid)) = (state, rec.wamid.clone()) {
            g.by_wamid.insert((number.clone(), wamid), id.clone());
        }
        Ok(state)
    }

    async fn apply_status(
        &self,
        number: &PhoneNumberId,
        update: &StatusUpdate,
    ) -> Result<StatusOutcome, StoreError> {
        let mut g = self.inner.lock();
        let id = update
            .message
            .clone()
            .filter(|id| g.records.contains_key(&(number.clone(), id.clone())))
            .or_else(|| {
                g.by_wamid
                    .get(&(number.clone(), update.wamid.clone()))
                    .cloned()
            });
        let Some(id) = id else {
            return Ok(StatusOutcome::UnknownMessage);
        };
        let Some(rec) = g.records.get_mut(&(number.clone(), id.clone())) else {
            return Ok(StatusOutcome::UnknownMessage);
        };
        let tenant = rec.message.tenant.clone();
        let outcome = match transitions::apply_status(rec, update) {
            StatusDecision::Advance(state) => StatusOutcome::Applied {
                tenant,
                id: id.clone(),
                state,
                touchpoint: rec.message.touchpoint.clone(),
            },
            StatusDecision::KeepEarly(_) => StatusOutcome::KeptEarly { id: id.clone() },
            StatusDecision::Ignore => StatusOutcome::Duplicate,
        };
        if !matches!(outcome, StatusOutcome::Duplicate) {
            g.by_wamid
                .insert((number.clone(), update.wamid.clone()), id);
        }
        Ok(outcome)
    }

    async fn claim(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let mut g = self.inner.lock();
        let Some(q) = g.queues.get_mut(number) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some((entry_id, message)) = q.lanes[lane.index()].pop_front() else {
                break;
            };
            q.pending.insert(
                entry_id.clone(),
                Pending {
                    lane,
                    message: message.clone(),
                    consumer: consumer.to_owned(),
                    claimed_at: Instant::now(),
                },
            );
            out.push(QueueEntry {
                number: number.clone(),
                lane,
                entry_id,
                message,
            });
        }
        Ok(out)
    }

    async fn reclaim(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        consumer: &str,
        min_idle_ms: u64,
        max: usize,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let mut g = self.inner.lock();
        let Some(q) = g.queues.get_mut(number) else {
            return Ok(Vec::new());
        };
        let idle = Duration::from_millis(min_idle_ms);
        let mut out = Vec::new();
        let mut ids: Vec<&String> = q.pending.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for entry_id in ids {
            if out.len() >= max {
                break;
            }
            if let Some(p) = q.pending.get_mut(&entry_id) {
                if p.lane == lane && p.claimed_at.elapsed() >= idle {
                    p.consumer = consumer.to_owned();
                    p.claimed_at = Instant::now();
                    out.push(QueueEntry {
                        number: number.clone(),
                        lane,
                        entry_id,
                        message: p.message.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, entry: &QueueEntry) -> Result<(), StoreError> {
        let mut g = self.inner.lock();
        if let Some(q) = g.queues.get_mut(&entry.number) {
            q.pending.remove(&entry.entry_id);
        }
        Ok(())
    }

    async fn defer(&self, entry: &QueueEntry, due_ms: i64) -> Result<(), StoreError> {
        let mut g = self.inner.lock();
        let (seq, _) = g.next_entry();
        let q = g.queues.entry(entry.number.clone()).or_default();
        if q.pending.remove(&entry.entry_id).is_some() {
            q.delayed
                .insert((due_ms, seq, entry.lane.index(), entry.message.clone()));
        }
        Ok(())
    }

    async fn promote_due(
        &self,
        number: &PhoneNumberId,
        now_ms: i64,
        max: usize,
    ) -> Result<Promoted, StoreError> {
        let mut g = self.inner.lock();
        let due: Vec<(i64, u64, usize, MessageId)> = match g.queues.get(number) {
            Some(q) => q
                .delayed
                .iter()
                .take_while(|d| d.0 <= now_ms)
                .take(max)
                .cloned()
                .collect(),
            None => return Ok(Promoted::default()),
        };
        for d in &due {
            if let Some(q) = g.queues.get_mut(number) {
                q.delayed.remove(d);
            }
            let lane = Lane::ALL[d.2];
            g.enqueue(number, lane, d.3.clone());
        }
        let next_due = g
            .queues
            .get(number)
            .and_then(|q| q.delayed.first().map(|d| d.0));
        Ok(Promoted {
            moved: due.len(),
            next_due,
        })
    }

    async fn depth(&self, number: &PhoneNumberId) -> Result<QueueDepth, StoreError> {
        let g = self.inner.lock();
        Ok(g.queues
            .get(number)
            .map_or_else(QueueDepth::default, |q| QueueDepth {
                ready: [0, 1, 2].map(|i| q.lanes[i].len() as u64),
                in_flight: q.pending.len() as u64,
                delayed: q.delayed.len() as u64,
            }))
    }

    async fn claim_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        message: &MessageId,
        ttl_secs: u64,
    ) -> Result<IdempotencyClaim, StoreError> {
        let mut g = self.inner.lock();
        let k = (tenant.clone(), key.to_owned());
        let now = Instant::now();
        if let Some((fp, id, expires)) = g.idempotency.get(&k) {
            if *expires > now {
                return Ok(IdempotencyClaim::Seen {
                    fingerprint: fp.clone(),
                    message: id.clone(),
                });
            }
        }
        g.idempotency.insert(
            k,
            (
                fingerprint.to_owned(),
                message.clone(),
                now + Duration::from_secs(ttl_secs),
            ),
        );
        Ok(IdempotencyClaim::Fresh)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn erase_messages_to(
        &self,
        tenant: &TenantId,
        to: &E164,
    ) -> Result<MessageErasure, StoreError> {
        let mut g = self.inner.lock();
        let mut report = MessageErasure::default();
        let ours: Vec<(PhoneNumberId, MessageId, bool)> = g
            .records
            .iter()
            .filter(|(_, r)| &r.message.tenant == tenant && r.message.to == *to)
            .map(|(k, r)| (k.0.clone(), k.1.clone(), r.state.settled()))
            .collect();
        for (number, id, ended) in ours {
            if !ended {
                report.live += 1;
                continue;
            }
            g.records.remove(&(number.clone(), id.clone()));
            g.by_tenant.remove(&(tenant.clone(), id.clone()));
            g.by_wamid.retain(|(n, _), m| !(n == &number && m == &id));
            report.erased += 1;
        }
        Ok(report)
    }
}
