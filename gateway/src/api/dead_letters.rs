//! Dead letters: the clinic's messages that ended `failed` or `expired`, listed by
//! `GET /v1/messages?status=failed|expired&from=&to=&limit=` and re-driven one at a time by
//! `POST /v1/messages/{id}/retry`.
//!
//! Where a message ends (the dispatcher's `end()`, a `failed` status webhook) [`remember`] adds
//! it to a per-clinic index in the record store ([`RecordKind::DeadLetter`], scored by the time
//! it ended). The index is a hint: the list shows a message only while its outbox record says
//! it is failed or expired, so a late `delivered` or a race never lists a live message.
//!
//! A retry is a new message (new id, `retry_of` the old one) through the normal submit path
//! (consent, template approved, service window, wallet, messaging limit), at most once per dead
//! letter (an atomic claim): retrying the same dead letter again answers with the same new
//! message. Errors that would only fail again (not on WhatsApp, ecosystem limit, bad
//! parameters, a cancelled broadcast) are refused with 409.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::auth::clinic_of;
use super::body::{parse_json_body, read_bounded};
use super::problem::Problem;
use super::AppState;
use crate::clock::now_ms;
use crate::domain::message::MessageRecord;
use crate::domain::{MessageError, MessageId, MessageState, NewMessage, TenantId};
use crate::store::records::{RecordKind, RecordPut};
use crate::store::{Backend, IdempotencyClaim};

/// What the index keeps per dead letter (the outbox record has the rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: String,
    status: String,
    at_ms: i64,
    /// The message that re-drove this one, once retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retried_by: Option<String>,
}

/// Meta errors a retry would hit again: the recipient is not on WhatsApp (131026), the
/// ecosystem limit (131049), opted out of marketing (131050), recipient is the sender
/// (131021), and malformed requests or templates (100, 131008, 131009, 131051, 132000, 132005,
/// 132007, 132012).
const WILL_FAIL_AGAIN: [i64; 12] = [
    131026, 131049, 131050, 131021, 100, 131008, 131009, 131051, 132000, 132005, 132007, 132012,
];

/// Notes that a message ended `failed` or `expired` (idempotent; errors are logged, never
/// raised: the message has ended either way, the index is only for listing).
pub(crate) async fn remember(
    store: &dyn Backend,
    tenant: &TenantId,
    id: &MessageId,
    state: MessageState,
) {
    if !matches!(state, MessageState::Failed | MessageState::Expired) {
        return;
    }
    let at_ms = now_ms();
    let entry = Entry {
        id: id.to_string(),
        status: state.as_str().to_owned(),
        at_ms,
        retried_by: None,
    };
    let Ok(json) = serde_json::to_string(&entry) else {
        return;
    };
    // A dead letter already indexed (a duplicate failed status) keeps its time and its link.
    match store
        .record(tenant, RecordKind::DeadLetter, id.as_str())
        .await
    {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(message = %id, error = %e, "could not read the dead-letter index");
        }
    }
    if let Err(e) = store
        .put_record(RecordPut {
            tenant,
            kind: RecordKind::DeadLetter,
            id: id.as_str(),
            at_ms,
            json: &json,
            external: None,
        })
        .await
    {
        tracing::warn!(message = %id, error = %e, "could not index a dead letter");
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLetterView {
    id: String,
    status: &'static str,
    to: String,
    from: String,
    lane: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
    ended_at: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    /// Whether `POST /v1/messages/{id}/retry` may re-drive it (the submit path still decides).
    retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    retried_by: Option<String>,
}

#[derive(Debug, Serialize)]
struct ErrorView {
    code: i64,
    title: String,
    detail: String,
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Why a dead letter cannot be re-driven, if it cannot.
fn not_retryable(record: &MessageRecord) -> Option<String> {
    if !matches!(record.state, MessageState::Failed | MessageState::Expired) {
        return Some(format!(
            "the message is {}, not failed or expired",
            record.state.as_str()
        ));
    }
    if record.message.broadcast.is_some() {
        return Some(
            "a broadcast's message: send the broadcast again instead (its audience rules apply)"
                .into(),
        );
    }
    match &record.error {
        Some(MessageError { code, title, .. }) if WILL_FAIL_AGAIN.contains(code) => {
            Some(format!("Meta error {code} ({title}) would happen again"))
        }
        _ => None,
    }
}

fn view(record: MessageRecord, entry: &Entry) -> DeadLetterView {
    let retryable = not_retryable(&record).is_none();
    let m = record.message;
    DeadLetterView {
        id: m.id.to_string(),
        status: record.state.as_str(),
        to: m.to.as_str().to_owned(),
        from: m.number.to_string(),
        lane: m.lane.as_str(),
        kind: m.content.kind(),
        attempts: record.attempts,
        error: record.error.map(|e| ErrorView {
            code: e.code,
            title: e.title,
            detail: e.detail,
        }),
        ended_at: rfc3339(entry.at_ms),
        created_at: rfc3339(m.created_ms),
        deadline: m.deadline_ms.map(rfc3339),
        retryable,
        retried_by: entry.retried_by.clone(),
    }
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// Index entries read per round while filtering by status.
const CHUNK: usize = 200;

/// `GET /v1/messages?status=failed|expired&from=&to=&limit=`: oldest first by the time the
/// message ended; `next_from` continues after the last one listed.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let q = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| Problem::invalid_field("query", e.to_string()))?
        .into_inner();
    let wanted: Vec<MessageState> = match q.status.as_deref() {
        None | Some("") => vec![MessageState::Failed, MessageState::Expired],
        Some(s) => s
            .split(',')
            .map(|one| match MessageState::parse(one.trim()) {
                Some(st @ (MessageState::Failed | MessageState::Expired)) => Ok(st),
                _ => Err(Problem::invalid_field(
                    "status",
                    format!("{one:?}: only failed and expired messages are listed"),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut from = q.from.map_or(0, |t| t.timestamp_millis());
    let to = q.to.map_or(i64::MAX, |t| t.timestamp_millis());
    if from >= to {
        return Err(Problem::invalid_field("from", "must be before `to`"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::invalid_field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut more = false;
    'pages: loop {
        let page = state
            .store
            .records(&clinic.id, RecordKind::DeadLetter, from, to, CHUNK)
            .await?;
        let full = page.len() == CHUNK;
        let mut progressed = false;
        for json in page {
            let Ok(entry) = serde_json::from_str::<Entry>(&json) else {
                continue;
            };
            if !seen.insert(entry.id.clone()) {
                continue;
            }
            progressed = true;
            // Entries at the same instant as the last listed one are read again next round
            // (`from` is inclusive) and skipped by `seen`.
            from = from.max(entry.at_ms);
            if out.len() == limit {
                more = true;
                break 'pages;
            }
            let Ok(id) = MessageId::parse_issued(&entry.id) else {
                continue;
            };
            let Some(record) = state.store.message(&clinic.id, &id).await? else {
                continue;
            };
            if wanted.contains(&record.state) {
                out.push(view(record, &entry));
            }
        }
        if !full || !progressed {
            break;
        }
    }
    let next_from = (more && !out.is_empty())
        .then(|| out.last().map(|v: &DeadLetterView| v.ended_at.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "messages": out,
        "next_from": next_from,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    /// Do not send the new message after this instant; default `dispatch.default_ttl_secs`.
    #[serde(default)]
    deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
struct Retried<'a> {
    id: &'a str,
    status: &'static str,
    retry_of: &'a str,
}

/// `POST /v1/messages/{id}/retry`: re-drives one dead letter as a new message.
pub async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body = read_bounded(&req, payload, state.settings.server.max_message_bytes).await?;
    let input: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        parse_json_body(&body)?
    };
    let old_id =
        MessageId::parse_issued(&path).map_err(|_| Problem::not_found("no such message"))?;
    let record = state
        .store
        .message(&clinic.id, &old_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such message"))?;
    if let Some(why) = not_retryable(&record) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-retryable",
            "This message cannot be retried",
            why,
        ));
    }
    let now = now_ms();
    let deadline_ms = match input.deadline {
        Some(d) if d.timestamp_millis() <= now => {
            return Err(Problem::invalid_field("deadline", "is in the past"));
        }
        Some(d) => d.timestamp_millis(),
        None => now + (state.settings.dispatch.default_ttl_secs * 1000) as i64,
    };
    let old = record.message;
    let mut msg = NewMessage {
        id: MessageId::generate(),
        tenant: clinic.id.clone(),
        number: old.number.clone(),
        to: old.to.clone(),
        lane: old.lane,
        content: old.content.clone(),
        deadline_ms: Some(deadline_ms),
        created_ms: now,
        broadcast: None,
        touchpoint: old.touchpoint.clone(),
        retain_days: None,
    };
    // One re-drive per dead letter, even under concurrent retries: the claim is atomic.
    let claim_key = format!("retry:{}", old.id);
    let ttl = state.settings.idempotency.ttl_secs;
    let mut replayed = false;
    match state
        .store
        .claim_idempotency(&clinic.id, &claim_key, "retry", &msg.id, ttl)
        .await?
    {
        IdempotencyClaim::Fresh => {}
        IdempotencyClaim::Seen { message, .. } => {
            msg.id = message;
            replayed = true;
        }
    }
    let exists = replayed && state.store.message(&clinic.id, &msg.id).await?.is_some();
    if !exists {
        let accepted = state
            .actors
            .submit(clinic.clone(), msg.clone())
            .await
            .map_err(|e| {
                state
                    .metrics
                    .refusals
                    .with_label_values(&["clinic-busy"])
                    .inc();
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "clinic-busy",
                    "This clinic has too many requests in flight",
                    format!("{e}; nothing was accepted, retry shortly"),
                )
                .retry_after(1)
            })?;
        // Refused (consent, window, template, wallet): nothing exists under the claimed id,
        // so a later retry submits it again under that id.
        let accepted = accepted?;
        if accepted == crate::store::Accepted::Created {
            state.dispatchers.wake(&msg.number);
            tracing::info!(tenant = %msg.tenant, message = %msg.id, retry_of = %old.id, to = %msg.to, "dead letter re-driven");
        }
        link(&state, &clinic.id, &old.id, &msg.id).await;
    }
    let mut resp = if exists {
        let mut r = HttpResponse::Ok();
        r.insert_header(("Idempotent-Replayed", "true"));
        r
    } else {
        HttpResponse::Accepted()
    };
    resp.insert_header(("Location", format!("/v1/messages/{}", msg.id)));
    Ok(resp.json(Retried {
        id: msg.id.as_str(),
        status: "queued",
        retry_of: old.id.as_str(),
    }))
}

/// Records on the dead letter which message re-drove it (shown by the list).
async fn link(state: &AppState, tenant: &TenantId, old: &MessageId, new: &MessageId) {
    let store = &state.store;
    let entry = match store
        .record(tenant, RecordKind::DeadLetter, old.as_str())
        .await
    {
        Ok(Some(json)) => serde_json::from_str::<Entry>(&json).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(message = %old, error = %e, "could not read a dead letter");
            return;
        }
    };
    let Some(mut entry) = entry else {
        return;
    };
    entry.retried_by = Some(new.to_string());
    let Ok(json) = serde_json::to_string(&entry) else {
        return;
    };
    if let Err(e) = store
        .put_record(RecordPut {
            tenant,
            kind: RecordKind::DeadLetter,
            id: old.as_str(),
            at_ms: entry.at_ms,
            json: &json,
            external: None,
        })
        .await
    {
        tracing::warn!(message = %old, error = %e, "could not link a dead letter to its retry");
    }
}
