//! HTTP edge: `/v1` clinic API, `/webhooks/whatsapp`, health and metrics.

mod auth;
mod body;
mod health;
mod messages;
pub mod problem;
mod webhook;

use std::sync::Arc;

use actix_web::web;

use crate::config::Settings;
use crate::dispatch::Dispatchers;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tenants::Tenants;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tenants: Arc<Tenants>,
    pub dispatchers: Arc<Dispatchers>,
    pub metrics: Metrics,
    pub settings: Arc<Settings>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/v1/messages", web::post().to(messages::send))
        .route("/v1/messages/{id}", web::get().to(messages::get))
        .route("/webhooks/whatsapp", web::get().to(webhook::verify_get))
        .route("/webhooks/whatsapp", web::post().to(webhook::receive));
}
