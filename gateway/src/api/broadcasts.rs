//! `/v1/broadcasts`: one template to a filtered list of patients (or an explicit list), with a
//! dry run, scheduling, progress and cancellation.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::broadcasts::{Audience, Broadcast, BroadcastStatus, ListedRecipient, ParamSource};
use crate::clock::now_ms;
use crate::domain::records::new_record_id;
use crate::domain::PhoneNumberId;
use crate::patients::PatientFilter;
use crate::workflows::Job;

#[derive(Debug, Deserialize)]
pub struct TemplateRef {
    name: String,
    /// The language for patients whose own is not available.
    language: String,
}

#[derive(Debug, Deserialize)]
pub struct BroadcastInput {
    #[serde(default)]
    name: String,
    template: TemplateRef,
    /// Body parameters: `{"field": "first_name"}` (from the directory) or `{"value": "…"}`.
    #[serde(default)]
    parameters: Vec<ParamSource>,
    #[serde(default)]
    filter: Option<PatientFilter>,
    #[serde(default)]
    recipients: Option<Vec<ListedRecipient>>,
    #[serde(default)]
    scheduled_at: Option<DateTime<Utc>>,
    /// Not sent after this; defaults to a day after the start.
    #[serde(default)]
    deadline: Option<DateTime<Utc>>,
    /// The sending number's `phone_number_id`; the clinic's first by default.
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// Explicit lists up to this many recipients per request.
const MAX_LISTED: usize = 200_000;
const DAY_MS: i64 = 24 * 3_600_000;

pub(super) fn draft(
    clinic: &crate::tenants::ClinicSettings,
    input: BroadcastInput,
) -> Result<Broadcast, Problem> {
    let audience =
        match (input.filter, input.recipients) {
            (Some(f), None) => Audience::Filter(f),
            (None, Some(list)) => {
                if list.is_empty() || list.len() > MAX_LISTED {
                    return Err(Problem::invalid_field(
                        "recipients",
                        format!("1 to {MAX_LISTED} recipients"),
                    ));
                }
                Audience::List(list)
            }
            _ => return Err(Problem::invalid_field(
                "filter",
                "give either a filter (patients of the directory) or recipients (an explicit list)",
            )),
        };
    let number = match input.number {
        Some(raw) => {
            let id = PhoneNumberId::parse(&raw)
                .map_err(|e| Problem::invalid_field("number", e.to_string()))?;
            clinic
                .number(&id)
                .map(|n| n.phone_number_id.clone())
                .ok_or_else(|| {
                    Problem::invalid_field("number", "not one of the clinic's numbers")
                })?
        }
        None => clinic
            .numbers
            .first()
            .map(|n| n.phone_number_id.clone())
            .ok_or_else(|| Problem::invalid_field("number", "the clinic has no number"))?,
    };
    let now = now_ms();
    let scheduled_ms = input
        .scheduled_at
        .map_or(now, |t| t.timestamp_millis())
        .max(now);
    let deadline_ms = input
        .deadline
        .map_or(scheduled_ms + DAY_MS, |t| t.timestamp_millis());
    if deadline_ms <= scheduled_ms {
        return Err(Problem::invalid_field(
            "deadline",
            "must be after the start",
        ));
    }
    if input.template.name.trim().is_empty() {
        return Err(Problem::invalid_field("template.name", "is required"));
    }
    Ok(Broadcast {
        id: new_record_id("brd"),
        tenant: clinic.id.clone(),
        name: input.name,
        template: input.template.name,
        language: input.template.language,
        parameters: input.parameters,
        audience,
        number,
        status: BroadcastStatus::Scheduled,
        stop_reason: None,
        scheduled_ms,
        deadline_ms,
        recipients: None,
        chunks: 0,
        queued_chunks: 0,
        queued: 0,
        skipped: Default::default(),
        created_ms: now,
        updated_ms: now,
    })
}

pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body = super::body::read_bounded(&req, payload, 32 * 1024 * 1024).await?;
    let input: BroadcastInput = super::body::parse_json_body(&body)?;
    let dry_run = input.dry_run;
    let mut b = draft(&clinic, input)?;
    let broadcasts = &state.clinical.broadcasts;
    let (resolved, category) = broadcasts.resolve(&clinic, &b).await?;
    let estimate = broadcasts.estimate(&clinic, &b, &resolved, category);
    if dry_run {
        return Ok(HttpResponse::Ok().json(json!({"dry_run": true, "estimate": estimate})));
    }
    if b.scheduled_ms <= now_ms() {
        // Starting now: the audience just resolved is the one it starts with, so it is stored
        // here instead of being resolved again by the scheduler (seconds for a long list).
        broadcasts.start_resolved(&mut b, resolved).await?;
    } else {
        broadcasts.save(&b).await?;
    }
    state
        .store
        .schedule(
            &clinic.id,
            &Job::Broadcast { id: b.id.clone() },
            b.scheduled_ms,
        )
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/broadcasts/{}", b.id)))
        .json(json!({"broadcast": view(&b), "estimate": estimate})))
}

/// The broadcast without its (possibly huge) explicit list.
fn view(b: &Broadcast) -> serde_json::Value {
    let mut v = serde_json::to_value(b).unwrap_or_default();
    if let (Audience::List(list), Some(o)) = (&b.audience, v.as_object_mut()) {
        o.insert(
            "audience".into(),
            json!({"list": {"recipients": list.len()}}),
        );
    }
    v
}

async fn existing(
    state: &AppState,
    clinic: &crate::tenants::ClinicSettings,
    id: &str,
) -> Result<Broadcast, Problem> {
    state
        .clinical
        .broadcasts
        .load(clinic, id)
        .await?
        .ok_or_else(|| Problem::not_found("no such broadcast"))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let b = existing(&state, &clinic, &path).await?;
    let progress = state.clinical.broadcasts.progress(&clinic, &b).await?;
    let mut v = view(&b);
    if let Some(o) = v.as_object_mut() {
        o.insert("progress".into(), json!(progress));
    }
    Ok(HttpResponse::Ok().json(v))
}

pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let b = state
        .clinical
        .broadcasts
        .cancel(&clinic, &path)
        .await?
        .ok_or_else(|| Problem::not_found("no such broadcast"))?;
    Ok(HttpResponse::Ok().json(view(&b)))
}
