//! `GET /admin/v1/clinics/{id}/stats?from=&to=`: one clinic's outcomes over a date range, for the
//! aggregator. What does not belong in Prometheus (per-clinic, per-range numbers): messages by
//! state, spend from the wallet ledger, touchpoints, lab-report dispatch latency and the
//! appointment stats of `GET /v1/stats/appointments`.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::admin;
use super::outcomes::outcome_of;
use super::problem::Problem;
use super::AppState;
use crate::domain::records::{Document, DocumentKind, Feedback};
use crate::domain::{MessageId, MessageState, Money, TenantId};
use crate::store::records::RecordKind;
use crate::store::tenancy::{LedgerEntry, LedgerKind};
use crate::workflows::outcomes::stats;

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// Longest range one request may cover.
const MAX_RANGE_MS: i64 = 366 * DAY_MS;
const DAY_MS: i64 = 86_400_000;
/// At most this many messages (their states are looked up one by one) per request.
const MAX_MESSAGES: usize = 50_000;
/// At most this many appointments, documents, visits, feedback or inbox records per request.
const MAX_RECORDS: usize = 20_000;
/// Ledger entries read per page, and at most per request.
const LEDGER_PAGE: usize = 1_000;
const MAX_LEDGER_SCAN: usize = 500_000;
/// Ledger ids are written by Redis's clock and `at_ms` by the node's: this much skew is allowed.
const CLOCK_SLACK_MS: i64 = 300_000;
/// Message lookups in flight at once.
const LOOKUPS: usize = 32;

fn too_much(what: &str, limit: usize) -> Problem {
    Problem::invalid_field(
        "from",
        format!("more than {limit} {what} in the range; ask for a shorter one"),
    )
}

pub async fn clinic_stats(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    // The key first: a clinic key learns nothing, not even what the query should look like.
    admin(&req, &state)?;
    let q = web::Query::<StatsQuery>::from_query(req.query_string())
        .map_err(|e| Problem::invalid_field("query", e.to_string()))?;
    let id = TenantId::parse(&path).map_err(|_| Problem::not_found("no such clinic"))?;
    let clinic = state
        .store
        .clinic(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such clinic"))?;
    let (from, to) = (q.from.timestamp_millis(), q.to.timestamp_millis());
    if to <= from {
        return Err(Problem::invalid_field("to", "must be after from"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(Problem::invalid_field(
            "to",
            "the range may cover at most 366 days",
        ));
    }

    let ledger = ledger_in_range(&state, &id, from, to).await?;
    let spend = spend(&ledger);
    let messages = messages_by_state(&state, &id, &ledger).await?;

    let appointments = state
        .store
        .appointments(&id, from, to, MAX_RECORDS + 1)
        .await?;
    if appointments.len() > MAX_RECORDS {
        return Err(too_much("appointments", MAX_RECORDS));
    }
    let mut outcomes = Vec::with_capacity(appointments.len());
    for a in &appointments {
        outcomes.push(outcome_of(&state, a).await?);
    }

    let documents: Vec<Document> = records(&state, &id, RecordKind::Document, from, to).await?;
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    for d in &documents {
        *by_kind.entry(d.kind.as_str()).or_default() += 1;
    }
    let lab_reports = dispatch_latency(
        &state,
        &id,
        documents
            .iter()
            .filter(|d| d.kind == DocumentKind::LabReport),
    )
    .await?;
    let visits = count(&state, &id, RecordKind::Visit, from, to).await?;
    let inbox = count(&state, &id, RecordKind::Inbox, from, to).await?;
    let feedback: Vec<Feedback> = records(&state, &id, RecordKind::Feedback, from, to).await?;
    let ratings: Vec<f64> = feedback.iter().map(|f| f64::from(f.rating)).collect();
    let average_rating =
        (!ratings.is_empty()).then(|| round(ratings.iter().sum::<f64>() / ratings.len() as f64));

    let card = clinic.rate_card.as_ref().unwrap_or(&state.settings.pricing);
    Ok(HttpResponse::Ok().json(json!({
        "clinic": id,
        "from": q.from,
        "to": q.to,
        "messages": messages,
        "spend": {
            "currency": card.currency,
            "unit": "micro",
            "charged": spend.charged.micros(),
            "settlements": spend.settlements,
            "released": spend.released.micros(),
            "releases": spend.releases,
            "credited": spend.credited.micros(),
            "credits": spend.credits,
        },
        "touchpoints": {
            "appointments": appointments.len(),
            "documents": by_kind,
            "visits": visits,
            "feedback": feedback.len(),
            "average_rating": average_rating,
            "inbox": inbox,
        },
        "lab_reports": lab_reports,
        "appointments": stats(&outcomes),
    })))
}

fn round(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// The ledger id's leading number: unix ms in Redis (a stream id), a sequence in memory.
fn id_ms(id: &str) -> Option<i64> {
    id.split_once('-')
        .map_or(Some(id), |(a, _)| Some(a))?
        .parse()
        .ok()
}

/// The clinic's ledger entries with `at_ms` in `[from, to)`, oldest first. Ledgers whose ids are
/// times (Redis) are read from just before `from`; others (memory) from their start.
async fn ledger_in_range(
    state: &AppState,
    tenant: &TenantId,
    from: i64,
    to: i64,
) -> Result<Vec<LedgerEntry>, Problem> {
    let first = state.store.ledger(tenant, None, 1).await?;
    let Some(head) = first.first() else {
        return Ok(Vec::new());
    };
    let timed = id_ms(&head.id).is_some_and(|ms| (ms - head.at_ms).abs() < DAY_MS);
    let start = from - CLOCK_SLACK_MS;
    let mut cursor = (timed && id_ms(&head.id).is_some_and(|ms| ms < start))
        .then(|| format!("{}-{}", start - 1, u64::MAX));
    let mut out = Vec::new();
    let mut scanned = 0usize;
    loop {
        let page = state
            .store
            .ledger(tenant, cursor.as_deref(), LEDGER_PAGE)
            .await?;
        scanned += page.len();
        let full = page.len() == LEDGER_PAGE;
        let mut past_end = false;
        for e in page {
            if e.at_ms >= to + CLOCK_SLACK_MS {
                past_end = true;
                break;
            }
            cursor = Some(e.id.clone());
            if (from..to).contains(&e.at_ms) {
                out.push(e);
            }
        }
        if past_end || !full {
            return Ok(out);
        }
        if scanned >= MAX_LEDGER_SCAN {
            return Err(too_much("wallet movements", MAX_LEDGER_SCAN));
        }
    }
}

#[derive(Debug, Default)]
struct Spend {
    charged: Money,
    settlements: u64,
    released: Money,
    releases: u64,
    credited: Money,
    credits: u64,
}

fn spend(ledger: &[LedgerEntry]) -> Spend {
    let mut s = Spend::default();
    for e in ledger {
        match e.kind {
            LedgerKind::Settle => {
                s.charged = s.charged + e.amount;
                s.settlements += 1;
            }
            LedgerKind::Release => {
                s.released = s.released + e.amount;
                s.releases += 1;
            }
            LedgerKind::Credit => {
                s.credited = s.credited + e.amount;
                s.credits += 1;
            }
            LedgerKind::Reserve => {}
        }
    }
    s
}

/// Every message accepted in the range reserved once (zero for free ones): look each up.
/// `unknown` counts records no longer kept (terminal records expire) or never accepted.
async fn messages_by_state(
    state: &AppState,
    tenant: &TenantId,
    ledger: &[LedgerEntry],
) -> Result<Value, Problem> {
    let ids: Vec<MessageId> = ledger
        .iter()
        .filter(|e| e.kind == LedgerKind::Reserve)
        .filter_map(|e| MessageId::parse_issued(&e.reference).ok())
        .collect();
    if ids.len() > MAX_MESSAGES {
        return Err(too_much("messages", MAX_MESSAGES));
    }
    let store = &state.store;
    let found: Vec<Option<MessageState>> = futures::stream::iter(ids.iter())
        .map(|id| async move { store.message(tenant, id).await.map(|m| m.map(|m| m.state)) })
        .buffer_unordered(LOOKUPS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut by_state: BTreeMap<&'static str, u64> = MessageState::ALL
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    by_state.insert("unknown", 0);
    for s in &found {
        *by_state
            .entry(s.map_or("unknown", MessageState::as_str))
            .or_default() += 1;
    }
    Ok(json!({"accepted": ids.len(), "by_state": by_state}))
}

/// Records of `kind` listed in the range, decoded (unreadable ones are skipped and logged).
async fn records<T: serde::de::DeserializeOwned>(
    state: &AppState,
    tenant: &TenantId,
    kind: RecordKind,
    from: i64,
    to: i64,
) -> Result<Vec<T>, Problem> {
    let raw = state
        .store
        .records(tenant, kind, from, to, MAX_RECORDS + 1)
        .await?;
    if raw.len() > MAX_RECORDS {
        return Err(too_much(kind.as_str(), MAX_RECORDS));
    }
    Ok(raw
        .iter()
        .filter_map(|json| match serde_json::from_str(json) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(tenant = %tenant, kind = kind.as_str(), error = %e, "unreadable record skipped in stats");
                None
            }
        })
        .collect())
}

async fn count(
    state: &AppState,
    tenant: &TenantId,
    kind: RecordKind,
    from: i64,
    to: i64,
) -> Result<usize, Problem> {
    let raw = state
        .store
        .records(tenant, kind, from, to, MAX_RECORDS + 1)
        .await?;
    if raw.len() > MAX_RECORDS {
        return Err(too_much(kind.as_str(), MAX_RECORDS));
    }
    Ok(raw.len())
}

/// From each document's (current revision's) arrival to Meta accepting its message.
async fn dispatch_latency<'a>(
    state: &AppState,
    tenant: &TenantId,
    docs: impl Iterator<Item = &'a Document>,
) -> Result<Value, Problem> {
    let mut seconds = Vec::new();
    let mut waiting = 0u64;
    for d in docs {
        let Some(id) = &d.message else {
            continue;
        };
        let accepted = state.store.message(tenant, id).await?.and_then(|m| {
            m.timeline
                .iter()
                .find(|e| e.event == MessageState::Accepted.as_str())
                .map(|e| e.at_ms)
        });
        match accepted {
            Some(at) => seconds.push((at - d.updated_ms).max(0) as f64 / 1000.0),
            None => waiting += 1,
        }
    }
    seconds.sort_by(f64::total_cmp);
    let pick = |q: f64| -> Option<f64> {
        let last = seconds.len().checked_sub(1)?;
        seconds
            .get(((last as f64) * q).round() as usize)
            .copied()
            .map(round)
    };
    Ok(json!({
        "sent": seconds.len(),
        "not_yet_sent": waiting,
        "dispatch_seconds": {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)},
    }))
}

/// `POST /admin/v1/clinics/{id}/retention/sweep`: applies the clinic's retention now (the
/// scheduler does it hourly) and says how much went.
pub async fn sweep_retention(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let id = TenantId::parse(&path).map_err(|_| Problem::not_found("no such clinic"))?;
    let clinic = state
        .store
        .clinic(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such clinic"))?;
    let deleted = state
        .clinical
        .sweep_retention(&clinic, crate::clock::now_ms(), 50_000)
        .await?;
    Ok(HttpResponse::Ok().json(
        serde_json::json!({"clinic": clinic.id, "retention_days": clinic.retention_days, "deleted": deleted}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_ids_read_as_times_only_when_they_are() {
        assert_eq!(id_ms("1767225600000-3"), Some(1_767_225_600_000));
        assert_eq!(id_ms("17-0"), Some(17));
        assert_eq!(id_ms("42"), Some(42));
        assert_eq!(id_ms("x-1"), None);
    }

    #[test]
    fn spend_adds_up_by_kind() {
        let e = |kind, amount| LedgerEntry {
            id: "1-0".into(),
            kind,
            amount: Money(amount),
            reserved: Money::ZERO,
            reference: "msg_x".into(),
            available_after: Money::ZERO,
            at_ms: 0,
        };
        let s = spend(&[
            e(LedgerKind::Credit, 1_000),
            e(LedgerKind::Reserve, 115),
            e(LedgerKind::Settle, 115),
            e(LedgerKind::Reserve, 115),
            e(LedgerKind::Release, 115),
        ]);
        assert_eq!(
            (
                s.charged.micros(),
                s.settlements,
                s.released.micros(),
                s.releases
            ),
            (115, 1, 115, 1)
        );
        assert_eq!((s.credited.micros(), s.credits), (1_000, 1));
    }
}
