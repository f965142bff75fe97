//! `POST /v1/visits` (a completed visit: follow-up and feedback follow), `GET /v1/feedback`, and
//! `GET /v1/inbox` (patients' messages no workflow answered).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::appointments::PatientInput;
use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::clinical::VisitRequest;
use crate::clock::now_ms;
use crate::domain::appointment::AppointmentId;
use crate::domain::records::{Feedback, InboxMessage};
use crate::store::records::RecordKind;

#[derive(Debug, Deserialize)]
pub struct VisitInput {
    #[serde(default)]
    external_id: Option<String>,
    patient: PatientInput,
    visit_type: String,
    #[serde(default)]
    doctor: Option<String>,
    #[serde(default)]
    appointment_id: Option<String>,
    /// Defaults to now.
    #[serde(default)]
    completed_at: Option<DateTime<Utc>>,
}

pub async fn complete(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let input: VisitInput = super::body::parse_json_body(&body)?;
    let appointment = input
        .appointment_id
        .as_deref()
        .map(|raw| {
            AppointmentId::parse(raw).ok_or_else(|| {
                Problem::invalid_field("appointment_id", "not an appointment id (apt_…)")
            })
        })
        .transpose()?;
    let (visit, replayed) = state
        .clinical
        .visit_completed(
            &clinic,
            VisitRequest {
                external_id: input.external_id,
                patient: input.patient.parse(&clinic)?,
                visit_type: input.visit_type,
                doctor: input.doctor,
                appointment,
                completed_ms: input
                    .completed_at
                    .map_or_else(now_ms, |t| t.timestamp_millis()),
            },
        )
        .await?;
    if replayed {
        return Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(visit));
    }
    Ok(HttpResponse::Created().json(visit))
}

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<usize>,
}

impl RangeQuery {
    fn bounds(&self) -> (i64, i64, usize) {
        (
            self.from.map_or(0, |t| t.timestamp_millis()),
            self.to.map_or(i64::MAX, |t| t.timestamp_millis()),
            self.limit.unwrap_or(500).clamp(1, 5_000),
        )
    }
}

pub async fn feedback(
    req: HttpRequest,
    q: web::Query<RangeQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let (from, to, limit) = q.bounds();
    let items: Vec<Feedback> = state
        .clinical
        .list(&clinic.id, RecordKind::Feedback, from, to, limit)
        .await?;
    let n = items.len();
    let average =
        (n > 0).then(|| items.iter().map(|f| f64::from(f.rating)).sum::<f64>() / n as f64);
    Ok(HttpResponse::Ok().json(json!({"feedback": items, "count": n, "average_rating": average})))
}

pub async fn inbox(
    req: HttpRequest,
    q: web::Query<RangeQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let (from, to, limit) = q.bounds();
    let items: Vec<InboxMessage> = state
        .clinical
        .list(&clinic.id, RecordKind::Inbox, from, to, limit)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"messages": items})))
}
