//! `GET/POST /webhooks/whatsapp`: the verification handshake and Meta's deliveries.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Deserialize;
use whatsapp_cloud::signature::{verify, verify_subscription, SIGNATURE_HEADER};
use whatsapp_cloud::wire::{Change, InboundMessage, Status, StatusKind, WebhookEnvelope};

use crate::tenants::ClinicSettings;

use super::body::read_bounded;
use super::problem::Problem;
use super::AppState;
use super::{limits, money};
use crate::catalog;
use crate::domain::{MessageError, MessageId, MessageState, PhoneNumberId, StatusUpdate};
use crate::store::{StatusOutcome, StoreError};

#[derive(Debug, Deserialize)]
pub struct VerifyQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

pub async fn verify_get(
    query: web::Query<VerifyQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    match verify_subscription(
        query.mode.as_deref(),
        query.token.as_deref(),
        query.challenge.as_deref(),
        &state.settings.meta.webhook_verify_token,
    ) {
        Some(challenge) => HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge.to_owned()),
        None => HttpResponse::Forbidden().finish(),
    }
}

/// Maps a status item to the domain; `None` for kinds the outbox does not track.
fn status_update(s: &Status) -> Option<StatusUpdate> {
    let state = match s.status {
        StatusKind::Sent => MessageState::Sent,
        StatusKind::Delivered => MessageState::Delivered,
        StatusKind::Read | StatusKind::Played => MessageState::Read,
        StatusKind::Failed => MessageState::Failed,
        StatusKind::Deleted | StatusKind::Unknown => return None,
    };
    let error = s.errors.first().map(|e| MessageError {
        code: e.code,
        title: e.title.clone(),
        detail: e.text().to_owned(),
    });
    Some(StatusUpdate {
        wamid: s.id.clone(),
        state,
        at_ms: s.unix_seconds().unwrap_or(0) * 1000,
        message: s
            .biz_opaque_callback_data
            .as_deref()
            .and_then(|d| MessageId::parse_issued(d).ok()),
        error,
    })
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let started = std::time::Instant::now();
    let metrics = &state.metrics;
    let body = read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let envelope: WebhookEnvelope = serde_json::from_slice(&body).map_err(|e| {
        metrics.webhooks.with_label_values(&["bad-payload"]).inc();
        observe_webhook(metrics, "bad-payload", started);
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-webhook",
            "Not a webhook envelope",
            e.to_string(),
        )
    })?;

    // The app secret belongs to the clinic the delivery is about (its number or WABA).
    let mut secrets: Vec<String> = Vec::new();
    for entry in &envelope.entry {
        for change in &entry.changes {
            let clinics = match change {
                Change::Messages(v) => PhoneNumberId::parse(&v.metadata.phone_number_id)
                    .ok()
                    .and_then(|n| state.directory.by_number(&n))
                    .into_iter()
                    .collect(),
                _ => state.directory.by_waba(&entry.id),
            };
            for c in clinics {
                let s = state.meta.webhook_secret(&c).to_owned();
                if !secrets.contains(&s) {
                    secrets.push(s);
                }
            }
        }
    }
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let verified = !secrets.is_empty()
        && secrets
            .iter()
            .all(|s| verify(s.as_bytes(), &body, signature).is_ok());
    if !verified {
        metrics.webhooks.with_label_values(&["bad-signature"]).inc();
        observe_webhook(metrics, "bad-signature", started);
        return Err(Problem::unauthorized(
            "X-Hub-Signature-256 does not verify for this business account",
        ));
    }

    let mut results: HashMap<&'static str, u64> = HashMap::new();
    for entry in &envelope.entry {
        for change in &entry.changes {
            apply_change(&state, &entry.id, change, &mut results)
                .await
                .map_err(|e| {
                    metrics.webhooks.with_label_values(&["error"]).inc();
                    observe_webhook(metrics, "error", started);
                    // Not 200: Meta delivers again, and applying is idempotent.
                    Problem::from(e)
                })?;
        }
    }
    // Meta delivered this again: every status item in it had been applied already.
    if results.get("duplicate").is_some_and(|n| *n > 0)
        && results
            .keys()
            .all(|k| matches!(*k, "duplicate" | "ignored"))
    {
        metrics.ops.webhook_duplicate_deliveries.inc();
    }
    for (label, n) in results {
        metrics.statuses.with_label_values(&[label]).inc_by(n);
    }
    metrics.webhooks.with_label_values(&["ok"]).inc();
    observe_webhook(metrics, "ok", started);
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "webhook applied"
    );
    Ok(HttpResponse::Ok().finish())
}

/// Webhook handling time by result (the labels of `webhook_requests_total`).
fn observe_webhook(metrics: &crate::metrics::Metrics, result: &str, started: std::time::Instant) {
    metrics
        .ops
        .webhook_duration
        .with_label_values(&[result])
        .observe(started.elapsed().as_secs_f64());
}

async fn apply_change(
    state: &AppState,
    waba: &str,
    change: &Change,
    results: &mut HashMap<&'static str, u64>,
) -> Result<(), StoreError> {
    match change {
        Change::Messages(v) => {
            let Ok(number) = PhoneNumberId::parse(&v.metadata.phone_number_id) else {
                return Ok(());
            };
            let Some(clinic) = state.directory.by_number(&number) else {
                return Ok(());
            };
            // Items of one delivery are independent (statuses are monotonic per message, and a
            // patient's messages are ordered by their conversation actor), so apply them
            // concurrently, a bounded number at a time.
            let labels: Vec<&'static str> = stream::iter(v.statuses.iter())
                .map(|s| apply_status_item(state, &clinic, &number, s))
                .buffer_unordered(WEBHOOK_CONCURRENCY)
                .try_collect()
                .await?;
            for label in labels {
                *results.entry(label).or_default() += 1;
            }
            stream::iter(v.messages.iter())
                .map(|m| apply_inbound(state, &clinic, m))
                .buffer_unordered(WEBHOOK_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
        }
        Change::MessageTemplateStatusUpdate(u) => {
            let status = serde_json::to_value(u.event)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "OTHER".into());
            state
                .metrics
                .ops
                .template_status_updates
                .with_label_values(&[&status])
                .inc();
            for clinic in state.directory.by_waba(waba) {
                catalog::apply_status(&*state.store, &clinic, u).await?;
                state.actors.templates_changed(&clinic.id);
            }
        }
        Change::TemplateCategoryUpdate(u) => {
            for clinic in state.directory.by_waba(waba) {
                catalog::apply_category(&*state.store, &clinic, u).await?;
                state.actors.templates_changed(&clinic.id);
            }
        }
        Change::PhoneNumberQualityUpdate(u) => {
            limits::apply_quality_update(state, waba, u).await?;
        }
        Change::Other { field, .. } => {
            tracing::debug!(field = %field, "webhook field not handled")
        }
    }
    Ok(())
}

/// Status and inbound items of one delivery applied at once.
const WEBHOOK_CONCURRENCY: usize = 32;

async fn apply_status_item(
    state: &AppState,
    clinic: &ClinicSettings,
    number: &PhoneNumberId,
    s: &Status,
) -> Result<&'static str, StoreError> {
    let Some(update) = status_update(s) else {
        return Ok("ignored");
    };
    let outcome = state.store.apply_status(number, &update).await?;
    if let StatusOutcome::Applied {
        state: reached,
        touchpoint,
        ..
    } = &outcome
    {
        let ops = &state.metrics.ops;
        let class = match (reached, &update.error) {
            (MessageState::Failed, Some(e)) => crate::metrics::ops::meta_class_label(e.code),
            _ => "none",
        };
        ops.message_states
            .with_label_values(&[
                reached.as_str(),
                touchpoint.as_deref().unwrap_or("api"),
                class,
            ])
            .inc();
        if let (MessageState::Failed, Some(e)) = (update.state, &update.error) {
            ops.meta_errors
                .with_label_values(&[
                    &crate::metrics::ops::meta_code_label(e.code),
                    crate::metrics::ops::meta_class_label(e.code),
                    "status",
                ])
                .inc();
        }
    }
    let label = match &outcome {
        StatusOutcome::Applied { .. } => "applied",
        StatusOutcome::KeptEarly { .. } => "early",
        StatusOutcome::Duplicate => "duplicate",
        StatusOutcome::UnknownMessage => "unknown",
    };
    // Settling and releasing are idempotent, so a duplicate still completes a settlement an
    // earlier, failed delivery of this webhook did not.
    let id = match outcome {
        StatusOutcome::Applied { id, .. } | StatusOutcome::KeptEarly { id } => id,
        StatusOutcome::Duplicate => match update.message.clone() {
            Some(id) => id,
            None => return Ok(label),
        },
        StatusOutcome::UnknownMessage => return Ok(label),
    };
    money::on_status(state, clinic, &id, s, update.state).await?;
    Ok(label)
}

async fn apply_inbound(
    state: &AppState,
    clinic: &std::sync::Arc<ClinicSettings>,
    m: &InboundMessage,
) -> Result<(), StoreError> {
    if state.settings.cluster.enabled {
        // Several nodes: the clinic's owner handles its patients' messages in order. Queued
        // durably before Meta gets its 200; the owner is woken through Redis.
        let body = serde_json::to_string(m)
            .map_err(|e| StoreError::Unavailable(format!("encoding an inbound message: {e}")))?;
        state.store.push_inbound(&clinic.id, &body).await?;
        let what = crate::store::leases::Leased::Tenant(clinic.id.clone());
        if let Err(e) = state.store.announce_work(&what).await {
            // The owner's poll finds it, a little later.
            tracing::warn!(tenant = %clinic.id, error = %e, "could not announce an inbound message");
        }
        return Ok(());
    }
    handle_inbound(state, clinic, m).await
}

/// Handles one inbound message the clinic's inbox queued (several nodes; this node owns the
/// clinic). A body that no longer parses is dropped with a warning: retrying cannot help.
pub async fn apply_queued_inbound(
    state: &AppState,
    clinic: &std::sync::Arc<ClinicSettings>,
    body: &str,
) -> Result<(), StoreError> {
    match serde_json::from_str::<InboundMessage>(body) {
        Ok(m) => handle_inbound(state, clinic, &m).await,
        Err(e) => {
            tracing::warn!(tenant = %clinic.id, error = %e, "dropping an unreadable queued inbound message");
            Ok(())
        }
    }
}

/// A patient's message: the window, the metrics, then the clinical workflows.
async fn handle_inbound(
    state: &AppState,
    clinic: &std::sync::Arc<ClinicSettings>,
    m: &InboundMessage,
) -> Result<(), StoreError> {
    let kind = serde_json::to_value(m.kind)
        .ok()
        .and_then(|k| k.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    state.metrics.inbound.with_label_values(&[&kind]).inc();
    // The patient wrote: their customer-service window opens for 24 h from now on.
    let at_ms = m
        .unix_seconds()
        .map_or_else(crate::clock::now_ms, |s| s * 1000);
    match state
        .actors
        .inbound(state.store.clone(), &clinic.id, &m.from, at_ms)
        .await
    {
        Ok(result) => result?,
        // Not 200: Meta delivers again.
        Err(e) => return Err(StoreError::Unavailable(format!("conversation actor: {e}"))),
    }
    // A tap on a reminder's button, an interactive reply, or text that may answer our question.
    let payload = m.button.as_ref().map(|b| b.payload.as_str()).or_else(|| {
        m.interactive
            .as_ref()
            .and_then(|i| i.reply())
            .map(|r| r.id.as_str())
    });
    let text = m
        .text
        .as_ref()
        .map(|t| t.body.as_str())
        .or_else(|| m.button.as_ref().map(|b| b.text.as_str()));
    let message = crate::clinical::InboundMessage {
        from: &m.from,
        wamid: &m.id,
        kind: &kind,
        payload,
        text,
        at_ms,
    };
    match state.clinical.inbound(clinic, message).await {
        Ok(()) => Ok(()),
        Err(crate::clinical::ClinicalError::Store(e)) => Err(e),
        // Not a store failure: Meta re-delivering would not help.
        Err(e) => {
            tracing::warn!(tenant = %clinic.id, error = %e, "inbound message not handled");
            Ok(())
        }
    }
}
