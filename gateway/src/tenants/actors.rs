//! The per-clinic and per-patient actors: a `TenantActor` admits a clinic's sends (with its
//! template catalog cached), a `ConversationActor` applies one patient's inbound messages. Both
//! start on first use on a pool of Arbiters, stop when idle, and rebuild from Redis (the record);
//! their mailboxes are bounded, so overload is a refusal the caller turns into 503 + Retry-After.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::domain::{NewMessage, TenantId};
use crate::outbound::{Outbound, SubmitError};
use crate::store::tenancy::Catalog;
use crate::store::{Accepted, Backend, StoreError};
use crate::tenants::ClinicSettings;

/// Why an actor could not take a request.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("the actor's mailbox is full")]
    Overloaded,
    #[error("the actor stopped before answering")]
    Gone,
}

#[derive(Debug, Clone)]
pub struct ActorSettings {
    pub mailbox: usize,
    pub idle: Duration,
    /// Idle time after which a conversation actor stops.
    pub conversation_idle: Duration,
    /// Conversation actors resident at once, at most (each costs about 2 KiB).
    pub max_conversations: usize,
    /// How long a cached template catalog is trusted before it is read again (changes made
    /// through this node invalidate it at once).
    pub catalog_ttl: Duration,
}

type Reply = oneshot::Sender<Vec<Result<Accepted, SubmitError>>>;

/// Inbound messages of one patient waiting for their conversation actor.
const CONVERSATION_MAILBOX: usize = 64;

/// Messages of one clinic to admit and accept (one, or the scheduler's batch), with their
/// recipients' windows when the caller read them.
#[derive(Message)]
#[rtype(result = "()")]
struct Submit {
    clinic: Arc<ClinicSettings>,
    msgs: Vec<NewMessage>,
    windows: Option<Vec<Option<i64>>>,
    reply: Reply,
}

#[derive(Message)]
#[rtype(result = "()")]
struct TemplatesChanged;

#[derive(Message)]
#[rtype(result = "()")]
struct Loaded(Result<Catalog, StoreError>);

pub struct TenantActor {
    tenant: TenantId,
    outbound: Outbound,
    settings: ActorSettings,
    catalog: Option<(Instant, Arc<Catalog>)>,
    last_used: Instant,
}

impl TenantActor {
    fn load_catalog(&self, ctx: &mut Context<Self>) {
        let store = self.outbound.store.clone();
        let tenant = self.tenant.clone();
        let fut = async move {
            let templates = store.templates(&tenant).await?;
            Ok(templates
                .into_iter()
                .map(|t| ((t.name.clone(), t.language.clone()), t))
                .collect())
        };
        ctx.spawn(fut.into_actor(self).map(|r, _, ctx| ctx.notify(Loaded(r))));
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox);
        self.load_catalog(ctx);
        let idle = self.settings.idle;
        ctx.run_interval(idle / 2, move |a, ctx| {
            if a.last_used.elapsed() >= idle {
                ctx.stop();
            }
        });
    }
}

impl Handler<Loaded> for TenantActor {
    type Result = ();
    fn handle(&mut self, msg: Loaded, _: &mut Self::Context) {
        match msg.0 {
            Ok(map) => self.catalog = Some((Instant::now(), Arc::new(map))),
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, error = %e, "template catalog not loaded; reading per send")
            }
        }
    }
}

impl Handler<TemplatesChanged> for TenantActor {
    type Result = ();
    fn handle(&mut self, _: TemplatesChanged, ctx: &mut Self::Context) {
        self.catalog = None;
        self.load_catalog(ctx);
    }
}

impl Handler<Submit> for TenantActor {
    type Result = ();

    fn handle(&mut self, m: Submit, ctx: &mut Self::Context) {
        self.last_used = Instant::now();
        let fresh = self
            .catalog
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.settings.catalog_ttl)
            .map(|(_, c)| c.clone());
        if fresh.is_none() && self.catalog.is_some() {
            self.catalog = None;
            self.load_catalog(ctx);
        }
        let outbound = self.outbound.clone();
        // Admission runs concurrently: the actor keeps taking messages while Redis answers.
        actix::spawn(async move {
            let result = outbound
                .submit_many(&m.clinic, &m.msgs, fresh.as_deref(), m.windows.as_deref())
                .await;
            let _ = m.reply.send(result);
        });
    }
}

/// One patient's inbound messages for one clinic.
pub struct ConversationActor {
    tenant: TenantId,
    patient: String,
    store: Arc<dyn Backend>,
    idle: Duration,
    last_used: Instant,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Inbound {
    at_ms: i64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Actor for ConversationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(CONVERSATION_MAILBOX);
        let idle = self.idle;
        ctx.run_interval(idle / 2, move |a, ctx| {
            if a.last_used.elapsed() >= idle {
                ctx.stop();
            }
        });
    }
}

impl Handler<Inbound> for ConversationActor {
    type Result = AtomicResponse<Self, ()>;

    /// One at a time per patient (`AtomicResponse`): the
    /// conversation's state changes in the order the patient's messages arrive.
    fn handle(&mut self, m: Inbound, _: &mut Self::Context) -> Self::Result {
        self.last_used = Instant::now();
        let store = self.store.clone();
        let tenant = self.tenant.clone();
        let patient = self.patient.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let r = store.touch_window(&tenant, &patient, m.at_ms).await;
                let _ = m.reply.send(r);
            }
            .into_actor(self),
        ))
    }
}

/// A resident actor and the bound on requests in flight to it. (Actix gives every `Addr` clone a
/// slot of its own beyond the mailbox capacity, so the bound is kept here.)
struct Slot<A: Actor> {
    addr: Addr<A>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

/// Starts, finds and forgets the node's tenant and conversation actors.
pub struct Actors {
    outbound: Outbound,
    settings: ActorSettings,
    arbiters: Vec<ArbiterHandle>,
    tenants: Mutex<HashMap<TenantId, Slot<TenantActor>>>,
    conversations: Mutex<HashMap<(TenantId, String), Slot<ConversationActor>>>,
    last_sweep: Mutex<Instant>,
    /// Inbound messages applied without an actor because the cap was reached.
    overflow: std::sync::atomic::AtomicU64,
    next: Mutex<usize>,
}

impl Actors {
    pub fn new(outbound: Outbound, settings: ActorSettings, arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            outbound,
            settings,
            arbiters,
            tenants: Mutex::new(HashMap::new()),
            conversations: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            overflow: std::sync::atomic::AtomicU64::new(0),
            next: Mutex::new(0),
        }
    }

    fn arbiter(&self) -> ArbiterHandle {
        let mut n = self.next.lock();
        *n = n.wrapping_add(1);
        match self.arbiters.get(*n % self.arbiters.len().max(1)) {
            Some(a) => a.clone(),
            None => Arbiter::current(),
        }
    }

    fn tenant(&self, tenant: &TenantId) -> Slot<TenantActor> {
        let mut map = self.tenants.lock();
        if let Some(slot) = map.get(tenant).filter(|s| s.addr.connected()) {
            return slot.clone();
        }
        let actor = TenantActor {
            tenant: tenant.clone(),
            outbound: self.outbound.clone(),
            settings: self.settings.clone(),
            catalog: None,
            last_used: Instant::now(),
        };
        let slot = Slot {
            addr: TenantActor::start_in_arbiter(&self.arbiter(), move |_| actor),
            in_flight: Arc::new(tokio::sync::Semaphore::new(self.settings.mailbox)),
        };
        map.insert(tenant.clone(), slot.clone());
        slot
    }

    /// Admits and accepts a message through its clinic's actor.
    pub async fn submit(
        &self,
        clinic: Arc<ClinicSettings>,
        msg: NewMessage,
    ) -> Result<Result<Accepted, SubmitError>, ActorError> {
        let mut results = self.submit_many(clinic, vec![msg], None).await?;
        Ok(results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("submit: no result".into()).into())))
    }

    /// Admits and accepts several messages of one clinic through its actor, as one batch (one
    /// mailbox slot); results in order. `windows`: the recipients' windows, when already read.
    pub async fn submit_many(
        &self,
        clinic: Arc<ClinicSettings>,
        msgs: Vec<NewMessage>,
        windows: Option<Vec<Option<i64>>>,
    ) -> Result<Vec<Result<Accepted, SubmitError>>, ActorError> {
        let mut request = Some((clinic, msgs, windows));
        // An actor that went idle between lookup and send is started again, once.
        for _ in 0..2 {
            let Some((clinic, msgs, windows)) = request.take() else {
                break;
            };
            let slot = self.tenant(&clinic.id);
            let Ok(_permit) = slot.in_flight.clone().try_acquire_owned() else {
                return Err(ActorError::Overloaded);
            };
            let (tx, rx) = oneshot::channel();
            match slot.addr.try_send(Submit {
                clinic,
                msgs,
                windows,
                reply: tx,
            }) {
                Ok(()) => return rx.await.map_err(|_| ActorError::Gone),
                Err(SendError::Full(_)) => return Err(ActorError::Overloaded),
                Err(SendError::Closed(m)) => request = Some((m.clinic, m.msgs, m.windows)),
            }
        }
        Err(ActorError::Gone)
    }

    /// A template of this clinic changed (webhook or API): drop the cached catalog.
    pub fn templates_changed(&self, tenant: &TenantId) {
        if let Some(s) = self.tenants.lock().get(tenant) {
            s.addr.do_send(TemplatesChanged);
        }
    }

    /// Applies a patient's inbound message through their conversation actor.
    pub async fn inbound(
        &self,
        store: Arc<dyn Backend>,
        tenant: &TenantId,
        patient: &str,
        at_ms: i64,
    ) -> Result<Result<(), StoreError>, ActorError> {
        let key = (tenant.clone(), patient.to_owned());
        let slot = {
            let mut map = self.conversations.lock();
            match map.get(&key).filter(|s| s.addr.connected()) {
                Some(s) => Some(s.clone()),
                None => {
                    if map.len() >= self.settings.max_conversations {
                        // Forget stopped actors at most once a second, then decide.
                        let mut swept = self.last_sweep.lock();
                        if swept.elapsed() >= Duration::from_secs(1) {
                            map.retain(|_, s| s.addr.connected());
                            *swept = Instant::now();
                        }
                    }
                    if map.len() >= self.settings.max_conversations {
                        None
                    } else {
                        let actor = ConversationActor {
                            tenant: tenant.clone(),
                            patient: patient.to_owned(),
                            store: store.clone(),
                            idle: self.settings.conversation_idle,
                            last_used: Instant::now(),
                        };
                        let slot = Slot {
                            addr: ConversationActor::start_in_arbiter(&self.arbiter(), move |_| {
                                actor
                            }),
                            in_flight: Arc::new(tokio::sync::Semaphore::new(CONVERSATION_MAILBOX)),
                        };
                        map.insert(key, slot.clone());
                        Some(slot)
                    }
                }
            }
        };
        // At the cap (a burst of patients writing at once), apply the message directly: memory
        // stays bounded, and a patient rarely has two messages in flight at the same moment.
        let Some(slot) = slot else {
            self.overflow
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(store.touch_window(tenant, patient, at_ms).await);
        };
        let Ok(_permit) = slot.in_flight.clone().try_acquire_owned() else {
            return Err(ActorError::Overloaded);
        };
        let (tx, rx) = oneshot::channel();
        slot.addr
            .try_send(Inbound { at_ms, reply: tx })
            .map_err(|e| match e {
                SendError::Full(_) => ActorError::Overloaded,
                SendError::Closed(_) => ActorError::Gone,
            })?;
        rx.await.map_err(|_| ActorError::Gone)
    }

    /// Inbound messages applied without an actor because the resident cap was reached.
    pub fn overflowed(&self) -> u64 {
        self.overflow.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets stopped actors (their state is in Redis) and reports how many are resident.
    pub fn sweep(&self) -> (usize, usize) {
        let mut t = self.tenants.lock();
        t.retain(|_, s| s.addr.connected());
        let mut c = self.conversations.lock();
        c.retain(|_, s| s.addr.connected());
        (t.len(), c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::Callbacks;
    use crate::config::Settings;
    use crate::domain::{Lane, MessageId, PhoneNumberId, E164};
    use crate::metrics::Metrics;
    use crate::store::MemoryStore;
    use crate::tenants::bootstrap::clinic_from_config;
    use whatsapp_cloud::wire::{Content, Text};

    fn setup(
        mailbox: usize,
        idle: Duration,
    ) -> (Actors, Arc<ClinicSettings>, Arc<MemoryStore>, Arbiter) {
        let settings = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(MemoryStore::new());
        let outbound = Outbound {
            store: store.clone(),
            settings: Arc::new(settings.clone()),
            metrics: Metrics::new(),
            callbacks: Callbacks::new(),
            dispatchers: None,
        };
        let config: crate::config::ClinicConfig = serde_json::from_value(serde_json::json!({
            "id": "clinic_t", "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
            "numbers": [{"phone_number_id": "123", "tier_mps": 80}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let clinic = Arc::new(clinic_from_config(&config, &settings));
        let arbiter = Arbiter::new();
        let actors = Actors::new(
            outbound,
            ActorSettings {
                mailbox,
                idle,
                conversation_idle: idle,
                max_conversations: 2,
                catalog_ttl: Duration::from_secs(30),
            },
            vec![arbiter.handle()],
        );
        (actors, clinic, store, arbiter)
    }

    fn message(clinic: &ClinicSettings) -> NewMessage {
        NewMessage {
            id: MessageId::generate(),
            tenant: clinic.id.clone(),
            number: PhoneNumberId::parse("123").unwrap_or_else(|e| panic!("{e}")),
            to: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
            lane: Lane::Care,
            content: Content::Text {
                text: Text {
                    body: "hi".into(),
                    preview_url: false,
                },
            },
            deadline_ms: None,
            created_ms: crate::clock::now_ms(),
            broadcast: None,
            touchpoint: None,
            retain_days: None,
        }
    }

    #[actix_rt::test]
    async fn a_full_mailbox_is_refused_not_queued() {
        let (actors, clinic, store, arbiter) = setup(1, Duration::from_secs(60));
        use crate::store::tenancy::ConversationStore;
        store
            .touch_window(&clinic.id, "919876543210", crate::clock::now_ms())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Start the actor, then keep its arbiter thread busy so its mailbox cannot drain.
        let first = actors.submit(clinic.clone(), message(&clinic)).await;
        assert!(matches!(first, Ok(Ok(_))), "{first:?}");
        arbiter.spawn_fn(|| std::thread::sleep(Duration::from_millis(400)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = {
            let actors = &actors;
            let clinic = clinic.clone();
            async move { actors.submit(clinic.clone(), message(&clinic)).await }
        };
        let (queued, refused) = futures::join!(queued, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut refused = 0;
            for _ in 0..3 {
                if matches!(
                    actors.submit(clinic.clone(), message(&clinic)).await,
                    Err(ActorError::Overloaded)
                ) {
                    refused += 1;
                }
            }
            refused
        });
        assert!(
            matches!(queued, Ok(Ok(_))),
            "the queued request is answered once the actor runs: {queued:?}"
        );
        assert_eq!(
            refused, 3,
            "requests beyond the mailbox are refused at once"
        );
    }

    #[actix_rt::test]
    async fn idle_actors_stop_and_restart_from_the_store() {
        let (actors, clinic, store, _arbiter) = setup(16, Duration::from_millis(200));
        use crate::store::tenancy::ConversationStore;
        store
            .touch_window(&clinic.id, "919876543210", crate::clock::now_ms())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = actors
            .inbound(
                store.clone(),
                &clinic.id,
                "919800000001",
                crate::clock::now_ms(),
            )
            .await;
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
        assert!(matches!(
            actors.submit(clinic.clone(), message(&clinic)).await,
            Ok(Ok(_))
        ));
        assert_eq!(actors.sweep(), (1, 1));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            actors.sweep(),
            (0, 0),
            "idle actors stopped and were forgotten"
        );
        let again = actors.submit(clinic.clone(), message(&clinic)).await;
        assert!(
            matches!(again, Ok(Ok(_))),
            "a stopped clinic actor starts again on use: {again:?}"
        );
        assert!(
            store
                .window_until(&clinic.id, "919800000001")
                .await
                .ok()
                .flatten()
                .is_some(),
            "the window outlived its actor"
        );
    }

    #[actix_rt::test]
    async fn conversations_beyond_the_cap_are_applied_without_an_actor() {
        use crate::store::tenancy::ConversationStore;
        let (actors, clinic, store, _arbiter) = setup(16, Duration::from_secs(60));
        for patient in ["919800000001", "919800000002", "919800000003"] {
            let r = actors
                .inbound(store.clone(), &clinic.id, patient, crate::clock::now_ms())
                .await;
            assert!(matches!(r, Ok(Ok(()))), "{r:?}");
            assert!(
                store
                    .window_until(&clinic.id, patient)
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
                "{patient}: window opened"
            );
        }
        assert_eq!(actors.sweep().1, 2, "the cap holds");
        assert_eq!(actors.overflowed(), 1);
    }
}
