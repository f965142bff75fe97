//! `GET /v1/wallet` and `GET /v1/wallet/ledger`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::store::tenancy::WalletSnapshot;

pub fn wallet_view(state: &AppState, w: &WalletSnapshot, applied: bool) -> Value {
    json!({
        "currency": state.settings.pricing.currency,
        "available": w.available().micros(),
        "reserved": w.reserved.micros(),
        "credited": w.credited.micros(),
        "settled": w.settled.micros(),
        "applied": applied,
        "unit": "micro",
    })
}

pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let w = state.store.wallet(&clinic.id).await?;
    let mut v = wallet_view(&state, &w, true);
    if let Some(o) = v.as_object_mut() {
        o.remove("applied");
        o.insert(
            "low_balance_threshold".into(),
            json!(clinic.low_balance_threshold.micros()),
        );
    }
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Debug, Deserialize)]
pub struct LedgerQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

pub async fn ledger(
    req: HttpRequest,
    query: web::Query<LedgerQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let cursor = query.cursor.as_deref().filter(|c| !c.is_empty());
    if let Some(c) = cursor {
        if c.len() > 64 || !c.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(Problem::invalid_field(
                "cursor",
                "use the next_cursor of the previous page",
            ));
        }
    }
    let entries = state.store.ledger(&clinic.id, cursor, limit).await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"entries": entries, "next_cursor": next})))
}
