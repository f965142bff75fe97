//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::Problem;
use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    state
        .store
        .ping()
        .await
        .map_err(|e| Problem::unavailable(format!("store not reachable: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .actors
        .with_label_values(&["dispatcher"])
        .set(state.dispatchers.active() as i64);
    let (tenants, conversations) = state.actors.sweep();
    state
        .metrics
        .actors
        .with_label_values(&["tenant"])
        .set(tenants as i64);
    state
        .metrics
        .actors
        .with_label_values(&["conversation"])
        .set(conversations as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
