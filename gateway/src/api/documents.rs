//! `POST /v1/prescriptions`, `POST /v1/lab-reports`, `POST /v1/health-records`: a PDF for the
//! patient, as JSON with base64 (`pdf_base64`) or as `multipart/form-data` (a `metadata` JSON
//! part and a `file` part). The PDF is checked, uploaded to Meta and sent by media id.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;

use super::appointments::PatientInput;
use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::clinical::DocumentRequest;
use crate::domain::records::DocumentKind;

#[derive(Debug, Deserialize)]
pub struct DocumentInput {
    #[serde(default)]
    external_id: Option<String>,
    patient: PatientInput,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    doctor: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    /// Only for `/v1/health-records`: `discharge_summary`, `vaccination_record`, `health_record`.
    #[serde(default)]
    kind: Option<DocumentKind>,
    /// The PDF, base64 (standard alphabet; whitespace ignored). Absent in multipart requests.
    #[serde(default)]
    pdf_base64: Option<String>,
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "bad-body",
        "Could not read the body",
        detail,
    )
}

pub(super) fn decode_base64(s: &str) -> Result<Vec<u8>, Problem> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| Problem::invalid_field("pdf_base64", format!("not base64: {e}")))
}

/// Reads `metadata` + `file` parts, never holding more than `limit` bytes of file.
async fn read_multipart(
    mut form: Multipart,
    limit: usize,
) -> Result<(DocumentInput, Vec<u8>), Problem> {
    let (mut metadata, mut file) = (None, None);
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| bad(format!("multipart: {e}")))?;
        let name = field.name().unwrap_or_default().to_owned();
        let cap = if name == "file" { limit } else { 64 * 1024 };
        let mut buf = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| bad(format!("multipart part {name}: {e}")))?;
            if buf.len() + chunk.len() > cap {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Request body too large",
                    format!("part {name} exceeds {cap} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "metadata" => metadata = Some(super::body::parse_json_body::<DocumentInput>(&buf)?),
            "file" => file = Some(buf),
            // Unknown parts are ignored, as unknown JSON fields are.
            _ => {}
        }
    }
    let metadata = metadata.ok_or_else(|| {
        Problem::invalid_field(
            "metadata",
            "the multipart form needs a metadata part (JSON)",
        )
    })?;
    let file = file.ok_or_else(|| {
        Problem::invalid_field("file", "the multipart form needs a file part (the PDF)")
    })?;
    Ok((metadata, file))
}

async fn post(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    kind: Option<DocumentKind>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let limit = state.settings.documents.max_pdf_bytes;
    let multipart = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (input, pdf) = if multipart {
        read_multipart(Multipart::new(req.headers(), payload), limit).await?
    } else {
        // base64 is 4/3 of the bytes, plus the JSON around it.
        let body = super::body::read_bounded(&req, payload, limit / 3 * 4 + 64 * 1024).await?;
        let mut input: DocumentInput = super::body::parse_json_body(&body)?;
        let raw = input.pdf_base64.take().ok_or_else(|| {
            Problem::invalid_field(
                "pdf_base64",
                "is required (or send multipart/form-data with a file part)",
            )
        })?;
        let pdf = decode_base64(&raw)?;
        (input, pdf)
    };
    let kind = match (kind, input.kind) {
        (Some(k), _) => k,
        (
            None,
            Some(
                k @ (DocumentKind::DischargeSummary
                | DocumentKind::VaccinationRecord
                | DocumentKind::HealthRecord),
            ),
        ) => k,
        (None, Some(_)) => {
            return Err(Problem::invalid_field(
                "kind",
                "use /v1/prescriptions or /v1/lab-reports for those",
            ))
        }
        (None, None) => DocumentKind::HealthRecord,
    };
    let patient = input.patient.parse(&clinic)?;
    let delivered = state
        .clinical
        .deliver_document(
            &clinic,
            DocumentRequest {
                kind,
                external_id: input.external_id,
                patient,
                title: input.title,
                doctor: input.doctor,
                filename: input.filename,
                pdf,
            },
            limit,
        )
        .await?;
    let mut response = if delivered.replayed {
        let mut r = HttpResponse::Ok();
        r.insert_header(("Idempotent-Replayed", "true"));
        r
    } else {
        HttpResponse::Created()
    };
    Ok(response.json(delivered.document))
}

pub async fn prescription(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    post(req, payload, state, Some(DocumentKind::Prescription)).await
}

pub async fn lab_report(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    post(req, payload, state, Some(DocumentKind::LabReport)).await
}

pub async fn health_record(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    post(req, payload, state, None).await
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let doc = state
        .clinical
        .document(&clinic.id, &path)
        .await?
        .ok_or_else(|| Problem::not_found("no such document"))?;
    Ok(HttpResponse::Ok().json(doc))
}
