//! Entry points for the cargo-fuzz targets in `gateway/fuzz`: each runs a request body through
//! what its handler does with it before the store is touched (deserialise into the request
//! type, then the checks that turn it into a domain value), without an HTTP server. Not part of
//! the API; the handlers stay the only callers that matter.

use serde::de::DeserializeOwned;
use serde_json::Value;
use whatsapp_cloud::wire::CreateTemplateRequest;

use super::problem::Problem;
use crate::broadcasts::Broadcast;
use crate::domain::appointment::{AppointmentId, Patient};
use crate::domain::message::NewMessage;
use crate::tenants::ClinicSettings;

/// `POST /v1/messages`: the body into the message that would be queued.
pub fn message(
    body: &[u8],
    clinic: &ClinicSettings,
    default_ttl_ms: i64,
    now_ms: i64,
) -> Result<NewMessage, Problem> {
    super::messages::parse_request(body, clinic, default_ttl_ms, now_ms)
}

/// A body that deserialises as the handler's `T`, and its `patient` object checked against the
/// clinic as the handler checks it.
fn with_patient<T: DeserializeOwned>(
    body: &[u8],
    clinic: &ClinicSettings,
) -> Result<(Value, Patient), Problem> {
    let _: T = super::body::parse_json_body(body)?;
    let value: Value = super::body::parse_json_body(body)?;
    let input: super::appointments::PatientInput =
        serde_json::from_value(value.get("patient").cloned().unwrap_or(Value::Null))
            .map_err(|e| Problem::invalid_field("patient", e.to_string()))?;
    let patient = input.parse(clinic)?;
    Ok((value, patient))
}

/// `POST /v1/appointments`: the body and the patient it names.
pub fn appointment(body: &[u8], clinic: &ClinicSettings) -> Result<Patient, Problem> {
    with_patient::<super::appointments::Book>(body, clinic).map(|(_, p)| p)
}

/// `PATCH /v1/appointments/{id}`.
pub fn appointment_change(body: &[u8]) -> Result<(), Problem> {
    super::body::parse_json_body::<super::appointments::Change>(body).map(|_| ())
}

/// `POST /v1/visits`: the body, its patient and the appointment it links.
pub fn visit(body: &[u8], clinic: &ClinicSettings) -> Result<Patient, Problem> {
    let (value, patient) = with_patient::<super::visits::VisitInput>(body, clinic)?;
    if let Some(raw) = value.get("appointment_id").and_then(Value::as_str) {
        AppointmentId::parse(raw).ok_or_else(|| {
            Problem::invalid_field("appointment_id", "not an appointment id (apt_…)")
        })?;
    }
    Ok(patient)
}

/// `POST /v1/prescriptions`, `/v1/lab-reports`, `/v1/health-records` (JSON with base64): the
/// patient, the PDF as checked before upload, and the file name it would be sent under.
pub fn document(
    body: &[u8],
    clinic: &ClinicSettings,
    max_pdf_bytes: usize,
) -> Result<(Patient, Vec<u8>, String), Problem> {
    let (value, patient) = with_patient::<super::documents::DocumentInput>(body, clinic)?;
    let raw = value
        .get("pdf_base64")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::invalid_field("pdf_base64", "is required"))?;
    let pdf = super::documents::decode_base64(raw)?;
    crate::pdf::check(&pdf, max_pdf_bytes)
        .map_err(|e| Problem::invalid_field("pdf_base64", e.to_string()))?;
    let filename =
        crate::pdf::filename(value.get("filename").and_then(Value::as_str), "lab_report");
    Ok((patient, pdf, filename))
}

/// `POST /v1/broadcasts`: the body into the broadcast that would be stored.
pub fn broadcast(body: &[u8], clinic: &ClinicSettings) -> Result<Broadcast, Problem> {
    let input: super::broadcasts::BroadcastInput = super::body::parse_json_body(body)?;
    super::broadcasts::draft(clinic, input)
}

/// `POST /v1/templates`: the definition that would be submitted to Meta.
pub fn template(body: &[u8]) -> Result<CreateTemplateRequest, Problem> {
    super::body::parse_json_body(body)
}

/// `PATCH /admin/v1/clinics/{id}`: `existing` merged with the body, checked as the handler
/// checks it. A stored clinic serialises to what this reads back.
pub fn clinic_patch(existing: &ClinicSettings, body: &[u8]) -> Result<ClinicSettings, Problem> {
    let patch = super::admin::parse_json(body)?;
    let mut value =
        serde_json::to_value(existing).map_err(|e| Problem::unavailable(e.to_string()))?;
    super::admin::merge(&mut value, &patch);
    super::admin::settings_from(value)
}

/// The clinic as `GET /admin/v1/clinics/{id}` shows it.
pub fn clinic_view(clinic: &ClinicSettings) -> Value {
    super::admin::clinic_view(clinic)
}
