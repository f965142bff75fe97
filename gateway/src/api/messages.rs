//! `POST /v1/messages` and `GET /v1/messages/{id}`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use whatsapp_cloud::validate::validate_content;
use whatsapp_cloud::wire::Content;

use super::auth::clinic_of;
use super::body::read_bounded;
use super::problem::Problem;
use super::AppState;
use crate::clock::now_ms;
use crate::domain::message::MessageRecord;
use crate::domain::{Lane, MessageId, NewMessage, PhoneNumberId, E164};
use crate::store::IdempotencyClaim;
use crate::tenants::ClinicSettings as Clinic;

/// The body of `POST /v1/messages`: routing fields plus a Cloud API content object
/// (`"type": "text", "text": {...}`), so integrators use the shapes Meta documents.
#[derive(Debug, Deserialize)]
struct SendRequest {
    to: String,
    /// Sending business number (phone-number id); defaults to the clinic's first number.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    lane: Option<Lane>,
    /// Do not send after this instant (RFC 3339).
    #[serde(default)]
    deadline: Option<DateTime<Utc>>,
    #[serde(flatten)]
    content: Content,
}

const TYPES: [&str; 6] = [
    "template",
    "text",
    "document",
    "image",
    "location",
    "interactive",
];
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Serialize)]
struct Accepted<'a> {
    id: &'a str,
    status: &'static str,
}

/// Parses and validates the body into a message, naming the field at fault.
pub(super) fn parse_request(
    body: &[u8],
    clinic: &Clinic,
    default_ttl_ms: i64,
    now: i64,
) -> Result<NewMessage, Problem> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The body is not valid JSON",
            format!("{e}"),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The body must be a JSON object",
            "expected {...}",
        ));
    };
    match obj.get("type").and_then(|t| t.as_str()) {
        None => {
            return Err(Problem::invalid_field(
                "type",
                format!("is required: one of {}", TYPES.join(", ")),
            ))
        }
        Some(t) if !TYPES.contains(&t) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-message-type",
                "Unknown message type",
                format!("type {t:?} is not one of {}", TYPES.join(", ")),
            )
            .field("type"))
        }
        Some(t) if obj.get(t).is_none() => {
            return Err(Problem::invalid_field(
                t,
                format!("a {t} message needs a \"{t}\" object"),
            ))
        }
        Some(_) => {}
    }
    let req: SendRequest = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // Errors inside the flattened content object carry no path; name the object instead.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .filter(|f| ["to", "from", "lane", "deadline"].contains(f));
        let field = match missing {
            Some(f) => f.to_owned(),
            None if path == "." || path.is_empty() => obj
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("body")
                .to_owned(),
            None => path,
        };
        Problem::invalid_field(&field, inner)
    })?;

    let to = E164::parse_with_default(&req.to, Some(&clinic.default_country_code))
        .map_err(|e| Problem::invalid_field("to", e.to_string()))?;
    validate_content(&req.content).map_err(|v| Problem::invalid_field(&v.field, v.details))?;
    let number = match &req.from {
        None => clinic.numbers.first().map(|n| n.phone_number_id.clone()),
        Some(f) => PhoneNumberId::parse(f)
            .ok()
            .filter(|id| clinic.number(id).is_some()),
    }
    .ok_or_else(|| Problem::invalid_field("from", "is not a business number of this clinic"))?;
    let deadline_ms = match req.deadline {
        Some(d) if d.timestamp_millis() <= now => {
            return Err(Problem::invalid_field("deadline", "is in the past"));
        }
        Some(d) => d.timestamp_millis(),
        None => now + default_ttl_ms,
    };
    Ok(NewMessage {
        id: MessageId::generate(),
        tenant: clinic.id.clone(),
        number,
        to,
        lane: req.lane.unwrap_or_default(),
        content: req.content,
        deadline_ms: Some(deadline_ms),
        created_ms: now,
        broadcast: None,
        touchpoint: None,
        retain_days: None,
    })
}

pub async fn send(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body = read_bounded(&req, payload, state.settings.server.max_message_bytes).await?;
    let idem_key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    Problem::invalid_field(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(k.to_owned())
        }
    };
    let now = now_ms();
    let default_ttl_ms = (state.settings.dispatch.default_ttl_secs * 1000) as i64;
    let mut msg = parse_request(&body, &clinic, default_ttl_ms, now)?;

    let mut replayed = false;
    if let Some(key) = &idem_key {
        let fingerprint = hex::encode(Sha256::digest(&body));
        let ttl = state.settings.idempotency.ttl_secs;
        match state
            .store
            .claim_idempotency(&clinic.id, key, &fingerprint, &msg.id, ttl)
            .await?
        {
            IdempotencyClaim::Fresh => {}
            IdempotencyClaim::Seen {
                fingerprint: fp,
                message,
            } if fp == fingerprint => {
                // Same request again: answer as the first time. Accepting again under the same id
                // is a no-op if the first attempt got that far, and finishes it if it did not.
                msg.id = message;
                replayed = true;
            }
            IdempotencyClaim::Seen { .. } => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with a different body",
                    "this Idempotency-Key was used for a different request",
                )
                .field("Idempotency-Key"));
            }
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
            })??;
        if accepted == crate::store::Accepted::Created {
            state.dispatchers.wake(&msg.number);
            tracing::info!(tenant = %msg.tenant, message = %msg.id, to = %msg.to, kind = msg.content.kind(), "accepted");
        }
    }
    let mut resp = HttpResponse::Accepted();
    resp.insert_header(("Location", format!("/v1/messages/{}", msg.id)));
    if replayed {
        resp.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(resp.json(Accepted {
        id: msg.id.as_str(),
        status: "queued",
    }))
}

#[derive(Debug, Serialize)]
struct MessageView {
    id: String,
    status: &'static str,
    to: String,
    from: String,
    lane: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    wamid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    created_at: String,
    timeline: Vec<TimelineView>,
}

#[derive(Debug, Serialize)]
struct ErrorView {
    code: i64,
    title: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct TimelineView {
    at: String,
    event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl From<MessageRecord> for MessageView {
    fn from(r: MessageRecord) -> Self {
        let m = r.message;
        Self {
            id: m.id.to_string(),
            status: r.state.as_str(),
            to: m.to.as_str().to_owned(),
            from: m.number.to_string(),
            lane: m.lane.as_str(),
            kind: m.content.kind(),
            attempts: r.attempts,
            wamid: r.wamid,
            error: r.error.map(|e| ErrorView {
                code: e.code,
                title: e.title,
                detail: e.detail,
            }),
            deadline: m.deadline_ms.map(rfc3339),
            created_at: rfc3339(m.created_ms),
            timeline: r
                .timeline
                .into_iter()
                .map(|t| TimelineView {
                    at: rfc3339(t.at_ms),
                    event: t.event,
                    detail: t.detail,
                })
                .collect(),
        }
    }
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let id = MessageId::parse_issued(&path).map_err(|_| Problem::not_found("no such message"))?;
    let record = state
        .store
        .message(&clinic.id, &id)
        .await?
        .ok_or_else(|| Problem::not_found("no such message"))?;
    Ok(HttpResponse::Ok().json(MessageView::from(record)))
}
