//! The `/fhir/r4` endpoints. Same credentials as the REST API (`Authorization: Bearer <clinic
//! API key>`, the clinic never comes from the path or body) and the same per-clinic rate limit.
//! Bodies are FHIR JSON (`application/fhir+json` or `application/json`); answers are FHIR JSON:
//! an OperationOutcome saying what was done (`201` when something was booked, changed, sent or
//! recorded, `200` when there was nothing to do), a transaction-/batch-response Bundle, or an
//! OperationOutcome error.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use fhir_r4::{Bundle, BundleType, OperationOutcome, Resource};
use futures::StreamExt;
use serde_json::Value;

use super::ingest::{is_accepted, is_context, is_fhir_id, ACCEPTED_TYPES};
use super::outcome::{
    from_fhir_error, from_problem, informational, outcome_json, Failure, FHIR_JSON,
};
use super::service::{Done, Ingest};
use super::{abdm, notify, transaction};
use crate::api::AppState;
use crate::tenants::ClinicSettings;

/// The calling clinic, by its API key; rate-limited like the REST API.
async fn clinic_of(req: &HttpRequest, state: &AppState) -> Result<Arc<ClinicSettings>, Failure> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Failure::unauthorized("send Authorization: Bearer <clinic API key>"))?;
    let key = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Failure::unauthorized("the Authorization header must be Bearer <clinic API key>")
        })?;
    let clinic = state.directory.by_api_key(key).ok_or_else(|| {
        Failure::unauthorized("the API key is not valid (or its clinic is suspended)")
    })?;
    crate::api::rate_limit(state, &clinic.id)
        .await
        .map_err(|p| from_problem(&p))?;
    Ok(clinic)
}

/// Largest body: a document-sized PDF in base64 plus the JSON around it.
fn body_limit(state: &AppState) -> usize {
    state.settings.documents.max_pdf_bytes / 3 * 4 + 1024 * 1024
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, Failure> {
    if let Some(ct) = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let ct = ct.to_ascii_lowercase();
        if !ct.is_empty() && !ct.contains("json") {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                OperationOutcome::not_supported(format!(
                    "Content-Type {ct} is not accepted: send FHIR JSON (application/fhir+json)"
                )),
            ));
        }
    }
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || Failure::too_large(format!("the body exceeds {limit} bytes"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| Failure::structure(format!("could not read the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The body as JSON and as a resource.
fn parse(body: &[u8]) -> Result<(Value, Resource), Failure> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::structure(format!("the body is not JSON: {e}")))?;
    let resource = Resource::from_value(raw.clone()).map_err(|e| from_fhir_error(&e))?;
    Ok((raw, resource))
}

fn fhir_json(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .body(body)
}

fn answer(done: &Done) -> HttpResponse {
    let status = if done.acted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    fhir_json(
        status,
        outcome_json(&informational(done.message.clone(), done.warning)),
    )
}

fn ingest<'a>(state: &'a AppState, clinic: &'a Arc<ClinicSettings>) -> Ingest<'a> {
    Ingest::new(
        &state.clinical,
        clinic,
        state.settings.documents.max_pdf_bytes,
    )
}

fn check_type(resource_type: &str) -> Result<(), Failure> {
    if is_accepted(resource_type) {
        return Ok(());
    }
    let hint = if is_context(resource_type) {
        " on its own; send it in a transaction Bundle with the resource that references it, or contained"
    } else {
        ""
    };
    Err(Failure::not_supported(format!(
        "{resource_type} is not taken here{hint}: the gateway acts on {}",
        ACCEPTED_TYPES.join(", ")
    )))
}

/// One resource by `POST`/`PUT`: its type must match the URL (and its id the URL's id).
async fn one(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    resource_type: &str,
    id: Option<&str>,
) -> Result<HttpResponse, Failure> {
    let clinic = clinic_of(&req, &state).await?;
    check_type(resource_type)?;
    let body = read_body(&req, payload, body_limit(&state)).await?;
    let (mut raw, mut resource) = parse(&body)?;
    if resource.resource_type() != resource_type {
        return Err(Failure::structure(format!(
            "the body is a {} but the URL says {resource_type}",
            resource.resource_type()
        )));
    }
    if let Some(id) = id {
        if !is_fhir_id(id) {
            return Err(Failure::invalid(
                format!("`{id}` in the URL is not a FHIR id"),
                format!("{resource_type}.id"),
            ));
        }
        match resource.id() {
            Some(own) if own != id => {
                return Err(Failure::invalid(
                    format!("{resource_type}.id `{own}` does not match the URL's id `{id}`"),
                    format!("{resource_type}.id"),
                ))
            }
            Some(_) => {}
            None => {
                // An update names the resource in the URL; take the id from there.
                if let Some(o) = raw.as_object_mut() {
                    o.insert("id".into(), Value::String(id.to_owned()));
                }
                resource = Resource::from_value(raw.clone()).map_err(|e| from_fhir_error(&e))?;
            }
        }
    }
    let done = ingest(&state, &clinic)
        .ingest(&resource, &raw, None)
        .await
        .inspect_err(|f| {
            tracing::info!(tenant = %clinic.id, resource_type, error = %f, "FHIR resource refused")
        })?;
    Ok(answer(&done))
}

/// `POST /fhir/r4/{type}`.
pub async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let t = path.into_inner();
    one(req, payload, state, &t, None).await
}

/// `PUT /fhir/r4/{type}/{id}` (also how rest-hook subscriptions with a payload deliver).
pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let (t, id) = path.into_inner();
    one(req, payload, state, &t, Some(&id)).await
}

/// `PUT /fhir/r4/{type}` with the id in the body.
pub async fn update_by_body(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let t = path.into_inner();
    one(req, payload, state, &t, None).await
}

/// `DELETE /fhir/r4/{type}/{id}` (rest-hook deletions): a known Appointment is cancelled.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let clinic = clinic_of(&req, &state).await?;
    let (t, id) = path.into_inner();
    check_type(&t)?;
    if !is_fhir_id(&id) {
        return Err(Failure::invalid(
            format!("`{id}` in the URL is not a FHIR id"),
            format!("{t}.id"),
        ));
    }
    let done = ingest(&state, &clinic).delete(&t, &id).await?;
    Ok(answer(&done))
}

/// `POST /fhir/r4`: an empty body is an R4 rest-hook ping; otherwise a Bundle — transaction or
/// batch, an ABDM document, or a topic-based subscription notification.
pub async fn base(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let clinic = clinic_of(&req, &state).await?;
    let body = read_body(&req, payload, body_limit(&state)).await?;
    let ingest = ingest(&state, &clinic);
    if body.iter().all(u8::is_ascii_whitespace) {
        let s = notify::sweep(
            &ingest,
            "an empty notification (rest-hook ping) says only that something changed",
        )
        .await?;
        return Ok(fhir_json(
            StatusCode::OK,
            outcome_json(&informational(
                format!("ping processed: {}", s.message()),
                !s.refused.is_empty(),
            )),
        ));
    }
    let (raw, resource) = parse(&body)?;
    let bundle: Bundle = match resource {
        Resource::Bundle(b) => *b,
        other => {
            return Err(Failure::not_supported(format!(
                "POST [base] takes a Bundle (transaction, batch, document or subscription notification), not a {}; POST single resources to /fhir/r4/{}",
                other.resource_type(),
                other.resource_type()
            )))
        }
    };
    let notification_first = matches!(
        bundle.first_resource(),
        Some(Resource::SubscriptionStatus(_) | Resource::Parameters(_))
    );
    match bundle.type_ {
        BundleType::Transaction | BundleType::Batch => {
            let (response, acted) = transaction::process(&ingest, &raw, &bundle).await?;
            let json = fhir_r4::to_json(&response).map_err(|e| {
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    OperationOutcome::exception(format!("encoding the response: {e}")),
                )
            })?;
            tracing::info!(tenant = %clinic.id, entries = bundle.entry.len(), acted, "FHIR Bundle processed");
            Ok(fhir_json(StatusCode::OK, json))
        }
        BundleType::Document => {
            let planned = abdm::plan(&ingest, &bundle, &body).await?;
            let done = ingest.execute(planned).await?;
            Ok(answer(&done))
        }
        BundleType::SubscriptionNotification => notification(&ingest, &raw, &bundle).await,
        BundleType::History if notification_first => notification(&ingest, &raw, &bundle).await,
        other => Err(Failure::not_supported(format!(
            "Bundle.type {other} is not taken here: send a transaction, batch, document (ABDM) or subscription-notification Bundle"
        ))),
    }
}

async fn notification(
    ingest: &Ingest<'_>,
    raw: &Value,
    bundle: &Bundle,
) -> Result<HttpResponse, Failure> {
    let s = notify::notification(ingest, raw, bundle).await?;
    Ok(fhir_json(
        StatusCode::OK,
        outcome_json(&informational(
            format!("notification processed: {}", s.message()),
            !s.refused.is_empty(),
        )),
    ))
}

/// `GET /fhir/r4/metadata`: what this endpoint takes (no credentials needed).
pub async fn metadata(req: HttpRequest) -> HttpResponse {
    let info = req.connection_info();
    let base = format!("{}://{}/fhir/r4", info.scheme(), info.host());
    let resources: Vec<Value> = ACCEPTED_TYPES
        .iter()
        .map(|t| {
            serde_json::json!({"type": t, "interaction": [{"code": "create"}, {"code": "update"}, {"code": "delete"}]})
        })
        .collect();
    let statement = serde_json::json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "kind": "instance",
        "software": {"name": "Clinic Gateway", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Clinic Gateway: patient touchpoints over WhatsApp", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Appointments are confirmed and reminded over WhatsApp; final DiagnosticReports and current DocumentReferences with PDFs are delivered; finished Encounters schedule follow-up and feedback. POST [base] takes transaction and batch Bundles, ABDM document Bundles and subscription notifications (R4 rest-hook empty ping, R4 backport, R4B, R5); PUT/DELETE [base]/Type/id take rest-hook payloads. Not a data store: no reads or searches.",
            "security": {"description": "Authorization: Bearer <clinic API key> (the same key as the clinic REST API)"},
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}]
        }]
    });
    fhir_json(
        StatusCode::OK,
        serde_json::to_vec(&statement).unwrap_or_default(),
    )
}

/// Anything else under `/fhir/r4`.
pub async fn unsupported(req: HttpRequest) -> Result<HttpResponse, Failure> {
    Err(Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        OperationOutcome::not_supported(format!(
            "{} {} is not supported: the gateway takes POST/PUT/DELETE of {} and POST [base] Bundles; it is not a FHIR data store (no reads or searches)",
            req.method(),
            req.path(),
            ACCEPTED_TYPES.join(", ")
        )),
    ))
}
