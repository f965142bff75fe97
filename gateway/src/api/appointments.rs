//! `/v1/appointments`: book, move, cancel and mark appointments; the patient hears about each.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentId, AppointmentStatus, Patient};
use crate::domain::E164;

#[derive(Debug, Deserialize)]
pub struct PatientInput {
    phone: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    language: Option<String>,
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
    status: Option<AppointmentStatus>,
    #[serde(default)]
    doctor: Option<String>,
}

pub async fn book(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id)?;
    let input: Book = super::body::parse_json_body(&body)?;
    let phone = E164::parse_with_default(&input.patient.phone, Some(&clinic.default_country_code))
        .map_err(|e| Problem::invalid_field("patient.phone", e.to_string()))?;
    let now = now_ms();
    let start_ms = input.start.timestamp_millis();
    if start_ms <= now {
        return Err(Problem::invalid_field("start", "must be in the future"));
    }
    if input.end.is_some_and(|e| e.timestamp_millis() <= start_ms) {
        return Err(Problem::invalid_field("end", "must be after start"));
    }
    if input.location.is_some_and(|i| i >= clinic.locations.len()) {
        return Err(Problem::invalid_field(
            "location",
            "no such location of this clinic",
        ));
    }
    if let Some(ext) = input.external_id.as_deref() {
        if ext.is_empty() || ext.len() > 128 {
            return Err(Problem::invalid_field("external_id", "1 to 128 characters"));
        }
        // The EMR sends bookings again after timeouts: the same id is the same appointment.
        if let Some(id) = state.store.appointment_by_external(&clinic.id, ext).await? {
            if let Some(existing) = state.store.appointment(&clinic.id, &id).await? {
                return Ok(HttpResponse::Ok()
                    .insert_header(("Idempotent-Replayed", "true"))
                    .json(existing));
            }
        }
    }
    let a = Appointment {
        id: AppointmentId::generate(),
        tenant: clinic.id.clone(),
        external_id: input.external_id,
        patient: Patient {
            phone,
            name: input.patient.name,
            language: input.patient.language,
        },
        doctor: input.doctor,
        location: input.location,
        start_ms,
        end_ms: input.end.map(|e| e.timestamp_millis()),
        status: AppointmentStatus::Booked,
        response: None,
        version: 1,
        reminders: Vec::new(),
        created_ms: now,
        updated_ms: now,
    };
    state.store.put_appointment(&a).await?;
    state.clinical.booked(&clinic, &a).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/appointments/{}", a.id)))
        .json(a))
}

async fn existing(
    state: &AppState,
    clinic: &crate::tenants::ClinicSettings,
    raw: &str,
) -> Result<Appointment, Problem> {
    let id = AppointmentId::parse(raw).ok_or_else(|| Problem::not_found("no such appointment"))?;
    state
        .store
        .appointment(&clinic.id, &id)
        .await?
        .ok_or_else(|| Problem::not_found("no such appointment"))
}

pub async fn change(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id)?;
    let input: Change = super::body::parse_json_body(&body)?;
    let mut a = existing(&state, &clinic, &path).await?;
    let now = now_ms();
    if a.status == AppointmentStatus::Cancelled {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "appointment-cancelled",
            "Appointment cancelled",
            "a cancelled appointment cannot change; book a new one",
        ));
    }
    if let Some(d) = input.doctor {
        a.doctor = Some(d);
    }
    let moved = match input.start {
        Some(start) if start.timestamp_millis() != a.start_ms => {
            if start.timestamp_millis() <= now {
                return Err(Problem::invalid_field("start", "must be in the future"));
            }
            a.start_ms = start.timestamp_millis();
            a.version += 1;
            a.response = None;
            true
        }
        _ => false,
    };
    let cancelled = input.status == Some(AppointmentStatus::Cancelled);
    if let Some(status) = input.status {
        if status == AppointmentStatus::Booked {
            return Err(Problem::invalid_field(
                "status",
                "use cancelled, arrived, attended or no_show",
            ));
        }
        a.status = status;
        if cancelled {
            a.version += 1;
        }
    }
    a.updated_ms = now;
    state.store.put_appointment(&a).await?;
    if cancelled {
        state.clinical.cancelled_by_clinic(&clinic, &a).await?;
    } else if moved {
        state.clinical.rescheduled(&clinic, &a).await?;
    }
    Ok(HttpResponse::Ok().json(a))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    Ok(HttpResponse::Ok().json(existing(&state, &clinic, &path).await?))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    status: Option<AppointmentStatus>,
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
    let all = state
        .store
        .appointments(&clinic.id, from, to, limit)
        .await?;
    let appointments: Vec<&Appointment> = all
        .iter()
        .filter(|a| q.status.is_none_or(|s| a.status == s))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"appointments": appointments})))
}
