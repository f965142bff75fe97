//! Builds and runs the node: store, dispatchers, HTTP server; drains on shutdown.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpServer};
use futures::FutureExt;
use whatsapp_cloud::{ClientConfig, GraphClient};

use crate::api::{self, AppState};
use crate::callbacks::Callbacks;
use crate::config::{Settings, StoreKind};
use crate::dispatch::{DispatchDeps, Dispatchers};
use crate::domain::Lane;
use crate::meta::Meta;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::store::{Backend, MemoryStore, RedisStore};
use crate::tenants::actors::{ActorSettings, Actors};
use crate::tenants::{bootstrap, Directory};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("Meta client: {0}")]
    Client(Box<whatsapp_cloud::ClientError>),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Application {
    port: u16,
    server: Server,
    dispatchers: Arc<Dispatchers>,
    store: Arc<dyn Backend>,
    /// With several nodes: this node's leases, given back after the drain.
    ownership: Option<Arc<crate::ownership::Ownership>>,
    shutdown_grace: Duration,
    _arbiters: Vec<actix::Arbiter>,
    /// The MLLP listener (HL7 v2), when enabled; stops when the application is dropped.
    mllp: Option<crate::emr::hl7::MllpHandle>,
}

pub async fn build_store(settings: &Settings) -> Result<Arc<dyn Backend>, AppError> {
    Ok(match settings.store.kind {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Redis => {
            let store = RedisStore::connect(
                &settings.redis.url,
                &settings.redis.key_prefix,
                settings.redis.pool_size,
            )?;
            seal_secrets(&store).await?;
            Arc::new(store)
        }
    })
}

/// Clinics' secrets are sealed at rest when `CLINIC_GATEWAY_SECRET_KEYS` is set; clinics saved
/// before (or with an older key) are re-sealed with the current key now.
async fn seal_secrets(store: &RedisStore) -> Result<(), AppError> {
    match crate::secrets::SecretKeys::from_env() {
        Ok(Some(keys)) => {
            store.set_secret_keys(Arc::new(keys));
            let n = store.reseal_clinics().await?;
            tracing::info!(resealed = n, "clinic secrets are sealed at rest");
            Ok(())
        }
        Ok(None) => {
            tracing::warn!(
                "{} is not set: clinic secrets are stored in Redis unencrypted",
                crate::secrets::ENV
            );
            Ok(())
        }
        Err(e) => Err(AppError::Store(crate::store::StoreError::Unavailable(
            e.to_string(),
        ))),
    }
}

impl Application {
    /// Binds `server.bind` (port 0 picks a free port) and starts everything.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let addr = settings.server.bind;
        let listener = TcpListener::bind(addr).map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let store = build_store(&settings).await?;
        Self::build_with(settings, listener, store).await
    }

    /// Starts on an already bound listener and store (the demo and tests wire these themselves).
    pub async fn build_with(
        settings: Settings,
        listener: TcpListener,
        store: Arc<dyn Backend>,
    ) -> Result<Self, AppError> {
        let port = listener.local_addr()?.port();
        let settings = Arc::new(settings);
        let metrics = Metrics::new();
        bootstrap::apply(&settings, &*store).await?;
        let directory = Arc::new(Directory::new());
        directory.refresh(&*store, true).await?;
        let client = GraphClient::new(ClientConfig {
            base_url: settings.meta.base_url.clone(),
            api_version: settings.meta.api_version.clone(),
            connect_timeout: Duration::from_millis(settings.meta.connect_timeout_ms),
            request_timeout: settings.request_timeout(),
            ..ClientConfig::default()
        })
        .map_err(|e| AppError::Client(Box::new(e)))?;
        let node_id = settings.cluster.node_id();
        let ownership = settings.cluster.enabled.then(|| {
            crate::ownership::Ownership::new(crate::ownership::OwnershipSettings {
                node_id: node_id.clone(),
                lease: Duration::from_millis(settings.cluster.lease_ms),
            })
        });
        let meta = Arc::new(if settings.sandbox.enabled {
            let own = format!("http://127.0.0.1:{port}/webhooks/whatsapp");
            Meta::with_sandbox_templates(client, own, &settings.templates)?
        } else {
            Meta::live_only(client)
        });
        meta.register(&directory);
        sync_templates(&*store, &meta, &directory).await;
        let dispatchers = Arc::new(Dispatchers::start(
            &directory,
            DispatchDeps {
                store: store.clone(),
                directory: directory.clone(),
                meta: meta.clone(),
                metrics: metrics.clone(),
                settings: settings.dispatch.clone(),
                node_id,
                broadcasts: Default::default(),
                ownership: ownership.clone(),
            },
        ));
        spawn_depth_sampler(store.clone(), dispatchers.clone(), metrics.clone());
        spawn_directory_refresh(
            store.clone(),
            directory.clone(),
            dispatchers.clone(),
            meta.clone(),
        );

        let outbound = Outbound {
            store: store.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
            callbacks: Callbacks::durable(store.clone()),
            dispatchers: Some(dispatchers.clone()),
        };
        let actor_arbiters = match settings.actors.arbiters {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let arbiters: Vec<actix::Arbiter> =
            (0..actor_arbiters).map(|_| actix::Arbiter::new()).collect();
        let actors = Arc::new(Actors::new(
            outbound.clone(),
            ActorSettings {
                mailbox: settings.actors.mailbox,
                idle: Duration::from_secs(settings.actors.idle_secs),
                conversation_idle: Duration::from_secs(
                    settings.actors.conversation_idle_secs.max(1),
                ),
                max_conversations: settings.actors.max_conversations.max(1),
                catalog_ttl: Duration::from_secs(settings.actors.catalog_ttl_secs),
            },
            arbiters.iter().map(|a| a.handle()).collect(),
        ));
        spawn_actor_sweeper(actors.clone(), metrics.clone());
        // One patient directory per node: its in-memory filter index is shared by the API
        // and the broadcasts.
        let patients = crate::patients::PatientDirectory::new(store.clone());
        let broadcasts = crate::broadcasts::Broadcasts {
            store: store.clone(),
            actors: actors.clone(),
            patients: patients.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
        };
        let clinical = crate::clinical::Clinical {
            store: store.clone(),
            actors: actors.clone(),
            directory: directory.clone(),
            callbacks: Callbacks::durable(store.clone()),
            metrics: metrics.clone(),
            meta: meta.clone(),
            texts: session_texts(&settings),
            emr: vec![
                Arc::new(crate::emr::hl7::Hl7WriteBack),
                Arc::new(crate::emr::fhir::FhirWriteBack),
            ],
            broadcasts,
        };
        crate::scheduler::spawn(clinical.clone(), Duration::from_millis(200));
        let mllp =
            crate::emr::hl7::spawn(clinical.clone(), &settings).map_err(|e| AppError::Bind {
                addr: settings.mllp.bind.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let state = web::Data::new(AppState {
            store: store.clone(),
            directory,
            dispatchers: dispatchers.clone(),
            actors,
            clinical,
            patients,
            outbound,
            metrics: metrics.clone(),
            meta: meta.clone(),
            api_limiter: api::api_limiter(&settings),
            settings: settings.clone(),
        });
        if let Some(ownership) = ownership.clone() {
            let handler_state = state.clone();
            let handler: crate::ownership::inbox::Handler =
                std::rc::Rc::new(move |clinic, body| {
                    let state = handler_state.clone();
                    Box::pin(async move {
                        api::webhook::apply_queued_inbound(&state, &clinic, &body).await
                    })
                });
            let runners = std::rc::Rc::new(crate::ownership::Runners {
                dispatchers: dispatchers.clone(),
                inboxes: crate::ownership::inbox::Inboxes::new(
                    store.clone(),
                    state.directory.clone(),
                    ownership.node(),
                    handler,
                ),
            });
            // Take this node's share of the numbers and clinics before traffic arrives.
            if let Err(e) =
                crate::ownership::run_tick(&ownership, &*store, &state.directory, &runners).await
            {
                tracing::warn!(error = %e, "first ownership round failed; retried every tick");
            }
            crate::ownership::spawn(ownership, store.clone(), state.directory.clone(), runners);
        }
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let server = HttpServer::new(move || {
            let metrics = metrics.clone();
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(1 << 20)
                        .error_handler(|e, _| {
                            api::problem::Problem::invalid_field("body", e.to_string()).into()
                        }),
                )
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    api::problem::Problem::invalid_field("query", e.to_string()).into()
                }))
                .wrap_fn(move |req, srv| {
                    // Counted by route pattern, never by raw path: ids would explode the labels.
                    let started = std::time::Instant::now();
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    let metrics = metrics.clone();
                    srv.call(req).map(move |res| {
                        let status = match &res {
                            Ok(r) => r.status().as_u16(),
                            Err(e) => e.as_response_error().status_code().as_u16(),
                        };
                        let class = format!("{}xx", status / 100);
                        metrics
                            .api_requests
                            .with_label_values(&[&route, &class])
                            .inc();
                        metrics
                            .api_latency
                            .with_label_values(&[&route])
                            .observe(started.elapsed().as_secs_f64());
                        res
                    })
                })
                .configure(api::routes)
        })
        .workers(workers)
        .client_request_timeout(Duration::from_millis(
            settings.server.client_request_timeout_ms,
        ))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_secs))
        .max_connections(settings.server.max_connections_per_worker)
        .shutdown_timeout(settings.server.shutdown_grace_secs)
        // Signals are ours (see `run_until_stopped`): actix's own handling stops the whole
        // System, dispatchers included, before they can drain.
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(port, "clinic gateway listening");
        Ok(Self {
            port,
            server,
            dispatchers,
            store,
            ownership,
            shutdown_grace: Duration::from_secs(settings.server.shutdown_grace_secs),
            _arbiters: arbiters,
            mllp,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The MLLP listener's address (HL7 v2), when `mllp.enabled`.
    pub fn mllp_addr(&self) -> Option<std::net::SocketAddr> {
        self.mllp.as_ref().map(|m| m.local_addr())
    }

    pub fn store(&self) -> Arc<dyn Backend> {
        self.store.clone()
    }

    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (or the handle stops it), then drains in-flight sends.
    /// Serves until the server is stopped or SIGTERM/SIGINT arrives; then stops taking requests
    /// and drains in-flight sends (both within `server.shutdown_grace_secs`).
    pub async fn run_until_stopped(self) -> Result<(), AppError> {
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        tokio::select! {
            result = &mut server => result?,
            () = shutdown_signal() => {
                tracing::info!("shutdown signal: draining");
                // The server future must keep running for its stop to complete.
                let stop_http = handle.stop(true);
                let drain = self.dispatchers.drain(self.shutdown_grace);
                let ((), (), served) = tokio::join!(stop_http, drain, &mut server);
                served?;
                leave(self.ownership.as_deref(), &*self.store).await;
                tracing::info!("drained");
                return Ok(());
            }
        }
        tracing::info!("HTTP server stopped; draining dispatchers");
        self.dispatchers.drain(self.shutdown_grace).await;
        leave(self.ownership.as_deref(), &*self.store).await;
        tracing::info!("drained");
        Ok(())
    }
}

/// After the drain: gives this node's leases back so the other nodes take its numbers at their
/// next tick instead of waiting for the leases to run out.
async fn leave(ownership: Option<&crate::ownership::Ownership>, store: &dyn Backend) {
    if let Some(o) = ownership {
        let released = crate::ownership::leave(o, store).await;
        tracing::info!(released, "left the cluster");
    }
}

/// Loads every clinic's templates from Meta. A clinic whose sync fails keeps its stored catalog.
async fn sync_templates(store: &dyn Backend, meta: &Meta, directory: &Directory) {
    for clinic in directory.all() {
        match crate::catalog::sync(store, meta, &clinic).await {
            Ok(n) => tracing::info!(tenant = %clinic.id, templates = n, "templates synced"),
            Err(e) => tracing::warn!(tenant = %clinic.id, error = %e, "template sync failed"),
        }
    }
}

/// Picks up clinics and keys changed through another node's admin API.
fn spawn_directory_refresh(
    store: Arc<dyn Backend>,
    directory: Arc<Directory>,
    dispatchers: Arc<Dispatchers>,
    meta: Arc<Meta>,
) {
    actix::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match directory.refresh(&*store, false).await {
                Ok(true) => {
                    meta.register(&directory);
                    dispatchers.sync(&directory);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "directory refresh failed"),
            }
        }
    });
}

/// Forgets stopped actors and reports how many are resident.
fn spawn_actor_sweeper(actors: Arc<Actors>, metrics: Metrics) {
    actix::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let (tenants, conversations) = actors.sweep();
            metrics
                .actors
                .with_label_values(&["tenant"])
                .set(tenants as i64);
            metrics
                .actors
                .with_label_values(&["conversation"])
                .set(conversations as i64);
        }
    });
}

/// Refreshes the queue-depth gauges every few seconds, summed over all numbers.
fn spawn_depth_sampler(store: Arc<dyn Backend>, dispatchers: Arc<Dispatchers>, metrics: Metrics) {
    actix::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let mut ready = [0i64; 3];
            let (mut in_flight, mut delayed) = (0i64, 0i64);
            // Passivated numbers have nothing queued, by definition: only active ones are read.
            for number in dispatchers.active_numbers() {
                if let Ok(d) = store.depth(&number).await {
                    for (i, r) in d.ready.iter().enumerate() {
                        ready[i] += *r as i64;
                    }
                    in_flight += d.in_flight as i64;
                    delayed += d.delayed as i64;
                }
            }
            for lane in Lane::ALL {
                metrics
                    .queue_depth
                    .with_label_values(&[lane.as_str()])
                    .set(ready[lane.index()]);
            }
            metrics
                .queue_depth
                .with_label_values(&["in_flight"])
                .set(in_flight);
            metrics
                .queue_depth
                .with_label_values(&["delayed"])
                .set(delayed);
        }
    });
}

/// The template library's words for session forms; without it touchpoints still go, as templates.
fn session_texts(settings: &Settings) -> Arc<dyn crate::workflows::session::TemplateTexts> {
    match crate::template_library::TemplateLibrary::load(&settings.templates.resolved_dir()) {
        Ok(library) => Arc::new(library),
        Err(e) => {
            tracing::warn!(error = %e, "template library not loaded: touchpoints inside the window go as templates");
            Arc::new(crate::workflows::session::NoTexts)
        }
    }
}

/// SIGTERM (systemd, docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
