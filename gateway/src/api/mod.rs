//! HTTP edge: `/v1` clinic API, `/admin/v1` aggregator API, `/webhooks/whatsapp`, health, metrics.

mod admin;
mod admin_stats;
mod appointments;
mod auth;
mod body;
mod broadcasts;
pub(crate) mod dead_letters;
mod documents;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod limits;
mod messages;
mod money;
mod outcomes;
mod patients;
pub mod problem;
mod sandbox;
mod templates;
mod visits;
mod wallet;
pub mod webhook;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Settings;
use crate::dispatch::Dispatchers;
use crate::domain::TenantId;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::store::Backend;
use crate::tenants::Directory;
use problem::Problem;

pub struct AppState {
    pub store: Arc<dyn Backend>,
    pub directory: Arc<Directory>,
    pub dispatchers: Arc<Dispatchers>,
    pub outbound: Outbound,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
    pub meta: Arc<crate::meta::Meta>,
    pub api_limiter: DefaultKeyedRateLimiter<TenantId>,
    pub actors: Arc<crate::tenants::actors::Actors>,
    pub clinical: crate::clinical::Clinical,
    /// The clinics' patient directories (shared with the broadcasts: one index per node).
    pub patients: crate::patients::PatientDirectory,
}

pub fn api_limiter(settings: &Settings) -> DefaultKeyedRateLimiter<TenantId> {
    let rate = std::num::NonZeroU32::new(settings.api.rate_per_second)
        .unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(settings.api.burst).unwrap_or(std::num::NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

/// Per-clinic API rate limit: a check, never a wait (handlers must not await a limiter). On one
/// node an in-process limiter; with several nodes (`cluster.enabled`) one budget per clinic in
/// the store, so the limit holds for the clinic whichever node its requests reach.
pub async fn rate_limit(state: &AppState, tenant: &TenantId) -> Result<(), Problem> {
    let api = &state.settings.api;
    let wait = if state.settings.cluster.enabled {
        match state
            .store
            .take_api_request(tenant, api.rate_per_second, api.burst)
            .await
        {
            Ok(verdict) => verdict.err(),
            Err(e) => return Err(Problem::from(e)),
        }
    } else {
        state
            .api_limiter
            .check_key(tenant)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    };
    let Some(wait) = wait else {
        return Ok(());
    };
    state
        .metrics
        .refusals
        .with_label_values(&["rate-limited"])
        .inc();
    Err(Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!(
            "this clinic's API rate limit is {} requests/s",
            api.rate_per_second
        ),
    )
    .retry_after(wait.as_secs().max(1)))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/v1/messages", web::post().to(messages::send))
        .route("/v1/messages/{id}", web::get().to(messages::get))
        .route("/v1/messages", web::get().to(dead_letters::list))
        .route(
            "/v1/messages/{id}/retry",
            web::post().to(dead_letters::retry),
        )
        .route("/v1/prescriptions", web::post().to(documents::prescription))
        .route("/v1/lab-reports", web::post().to(documents::lab_report))
        .route(
            "/v1/health-records",
            web::post().to(documents::health_record),
        )
        .route("/v1/documents/{id}", web::get().to(documents::get))
        .route("/v1/broadcasts", web::post().to(broadcasts::create))
        .route("/v1/broadcasts/{id}", web::get().to(broadcasts::get))
        .route(
            "/v1/broadcasts/{id}/cancel",
            web::post().to(broadcasts::cancel),
        )
        .route("/v1/patients", web::get().to(patients::list))
        .route("/v1/patients/import", web::post().to(patients::import))
        .route("/v1/patients/{external_id}", web::put().to(patients::put))
        .route("/v1/patients/{external_id}", web::get().to(patients::get))
        .route(
            "/v1/patients/{external_id}",
            web::delete().to(patients::delete),
        )
        .route("/v1/visits", web::post().to(visits::complete))
        .route("/v1/feedback", web::get().to(visits::feedback))
        .route("/v1/inbox", web::get().to(visits::inbox))
        .route(
            "/v1/stats/appointments",
            web::get().to(outcomes::appointment_stats),
        )
        .route("/v1/appointments", web::post().to(appointments::book))
        .route("/v1/appointments", web::get().to(appointments::list))
        .route("/v1/appointments/{id}", web::get().to(appointments::get))
        .route(
            "/v1/appointments/{id}",
            web::patch().to(appointments::change),
        )
        .route("/v1/wallet", web::get().to(wallet::get))
        .route("/v1/wallet/ledger", web::get().to(wallet::ledger))
        .route("/v1/templates", web::get().to(templates::list))
        .route("/v1/templates", web::post().to(templates::submit))
        .route("/v1/templates/sync", web::post().to(templates::sync))
        .route(
            "/v1/templates/{name}/{language}/accept-category",
            web::post().to(templates::accept_category),
        )
        .route("/v1/sandbox/inbound", web::post().to(sandbox::inbound))
        .route("/v1/sandbox/sent", web::get().to(sandbox::sent))
        .route("/admin/v1/clinics", web::post().to(admin::create_clinic))
        .route("/admin/v1/clinics", web::get().to(admin::list_clinics))
        .route("/admin/v1/clinics/{id}", web::get().to(admin::get_clinic))
        .route(
            "/admin/v1/clinics/{id}",
            web::patch().to(admin::update_clinic),
        )
        .route(
            "/admin/v1/clinics/{id}/suspend",
            web::post().to(admin::suspend),
        )
        .route(
            "/admin/v1/clinics/{id}/resume",
            web::post().to(admin::resume),
        )
        .route(
            "/admin/v1/clinics/{id}/api-keys",
            web::post().to(admin::create_key),
        )
        .route(
            "/admin/v1/clinics/{id}/api-keys",
            web::get().to(admin::list_keys),
        )
        .route(
            "/admin/v1/clinics/{id}/api-keys/{key}",
            web::delete().to(admin::revoke_key),
        )
        .route(
            "/admin/v1/clinics/{id}/wallet/credits",
            web::post().to(admin::credit),
        )
        .route(
            "/admin/v1/clinics/{id}/stats",
            web::get().to(admin_stats::clinic_stats),
        )
        .route(
            "/admin/v1/clinics/{id}/retention/sweep",
            web::post().to(admin_stats::sweep_retention),
        )
        .route("/webhooks/whatsapp", web::get().to(webhook::verify_get))
        .route("/webhooks/whatsapp", web::post().to(webhook::receive))
        .configure(crate::emr::fhir::routes);
}
