//! `/v1/appointments`: book, move, cancel and mark appointments; the patient hears about each.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::clinical::{BookRequest, ChangeRequest};
use crate::domain::appointment::{AppointmentId, AppointmentStatus, Patient};
use crate::domain::E164;
use crate::tenants::ClinicSettings;

#[derive(Debug, Deserialize)]
pub struct PatientInput {
    phone: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    language: Option<String>,
}

impl PatientInput {
    /// The patient, with the phone parsed against the clinic's country code.
    pub fn parse(self, clinic: &ClinicSettings) -> Result<Patient, Problem> {
        let phone = E164::parse_with_default(&self.phone, Some(&clinic.default_country_code))
            .map_err(|e| Problem::invalid_field("patient.phone", e.to_string()))?;
        if self.name.chars().count() > 100 {
            return Err(Problem::invalid_field(
                "patient.name",
                "at most 100 characters",
            ));
        }
        if let Some(l) = &self.language {
            if l.is_empty()
                || l.len() > 8
                || !l.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
            {
                return Err(Problem::invalid_field(
                    "patient.language",
                    "a Meta language code such as en, hi or ta",
                ));
            }
        }
        Ok(Patient {
            phone,
            name: self.name,
            language: self.language,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct Book {
    #[serde(default)]
    external_id: Option<String>,
    patient: PatientInput,
    #[serde(default)]
    doctor: Option<String>,
    /// Index into the clinic's locations.
    #[serde(default)]
    location: Option<usize>,
    start: DateTime<Utc>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct Change {
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
    #[serde(default)]
    status: Option<AppointmentStatus>,
    #[serde(default)]
    doctor: Option<String>,
}

pub async fn book(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let input: Book = super::body::parse_json_body(&body)?;
    let patient = input.patient.parse(&clinic)?;
    let booked = state
        .clinical
        .book(
            &clinic,
            BookRequest {
                external_id: input.external_id,
                patient,
                doctor: input.doctor,
                location: input.location,
                start_ms: input.start.timestamp_millis(),
                end_ms: input.end.map(|e| e.timestamp_millis()),
            },
        )
        .await?;
    let a = booked.appointment;
    if booked.replayed {
        return Ok(HttpResponse::Ok()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(a));
    }
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/appointments/{}", a.id)))
        .json(a))
}

fn appointment_id(raw: &str) -> Result<AppointmentId, Problem> {
    AppointmentId::parse(raw).ok_or_else(|| Problem::not_found("no such appointment"))
}

pub async fn change(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let input: Change = super::body::parse_json_body(&body)?;
    let a = state
        .clinical
        .change(
            &clinic,
            &appointment_id(&path)?,
            ChangeRequest {
                start_ms: input.start.map(|t| t.timestamp_millis()),
                end_ms: input.end.map(|t| t.timestamp_millis()),
                status: input.status,
                doctor: input.doctor,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(a))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let a = state
        .store
        .appointment(&clinic.id, &appointment_id(&path)?)
        .await?
        .ok_or_else(|| Problem::not_found("no such appointment"))?;
    let outcome = super::outcomes::outcome_of(&state, &a).await?;
    Ok(HttpResponse::Ok().json(super::outcomes::view(&a, &outcome)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    status: Option<AppointmentStatus>,
    /// Reminder outcome (`confirmed`, `ignored`, `undeliverable` …) or attendance (`no_show` …).
    outcome: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let from = q.from.map_or(0, |t| t.timestamp_millis());
    let to = q.to.map_or(i64::MAX, |t| t.timestamp_millis());
    let limit = q.limit.unwrap_or(500).clamp(1, 5_000);
    let filter = q
        .outcome
        .as_deref()
        .map(super::outcomes::OutcomeFilter::parse)
        .transpose()?;
    let all = state
        .store
        .appointments(&clinic.id, from, to, limit)
        .await?;
    let mut out = Vec::new();
    for a in all
        .iter()
        .filter(|a| q.status.is_none_or(|s| a.status == s))
    {
        let outcome = super::outcomes::outcome_of(&state, a).await?;
        if filter.is_none_or(|f| f.matches(&outcome)) {
            out.push(super::outcomes::view(a, &outcome));
        }
    }
    Ok(HttpResponse::Ok().json(json!({"appointments": out})))
}
