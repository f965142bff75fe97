//! `application/problem+json` (RFC 9457) errors with stable `type` slugs.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, as a JSON path (`text.body`, `to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    /// Extension members (RFC 9457 §3.2), e.g. `balance` and `price`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
            extra: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "A field is invalid",
            detail,
        )
        .field(field)
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid credentials",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            detail,
        )
        .retry_after(1)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        resp.content_type("application/problem+json");
        if let Some(s) = self.retry_after_secs {
            resp.insert_header(("Retry-After", s.to_string()));
        }
        resp.json(self)
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", m)
            }
            crate::store::StoreError::QueueFull(n) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue-full",
                "The sending number's queue is full",
                format!("number {n} has reached its queue bound; retry later"),
            )
            .retry_after(5),
            other => {
                if matches!(other, crate::store::StoreError::Unavailable(_)) {
                    crate::metrics::store_unavailable("api");
                }
                tracing::error!(error = %other, "store error");
                Problem::unavailable("the message store is unavailable; nothing was accepted")
            }
        }
    }
}

impl From<crate::outbound::SubmitError> for Problem {
    fn from(e: crate::outbound::SubmitError) -> Self {
        use crate::admission::Refusal;
        use crate::outbound::SubmitError;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        match e {
            SubmitError::Refused(Refusal::TemplateNotApproved { name, language, status }) => Problem::new(
                unprocessable,
                "template-not-approved",
                "Template not approved",
                format!("template {name} ({language}) is {status}; only APPROVED templates can be sent"),
            )
            .field("template.name"),
            SubmitError::Refused(Refusal::TemplateRecategorised { name, language, category }) => Problem::new(
                unprocessable,
                "template-recategorised",
                "Template re-categorised by Meta",
                format!(
                    "Meta moved template {name} ({language}) to {category}, which changes its price; accept it with POST /v1/templates/{name}/{language}/accept-category"
                ),
            )
            .field("template.name"),
            SubmitError::Refused(Refusal::TemplateParameters { expected, given }) => Problem::invalid_field(
                "template.components",
                format!("the template's body takes {expected} parameters, {given} given"),
            ),
            SubmitError::Refused(Refusal::OutsideServiceWindow) => Problem::new(
                unprocessable,
                "outside-service-window",
                "Outside the customer-service window",
                "the patient has not written in the last 24 hours: only an approved template can reach them now",
            )
            .field("type"),
            SubmitError::InsufficientBalance { available, price } => {
                let mut p = Problem::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "insufficient-balance",
                    "Insufficient balance",
                    format!("the wallet has {available} available; this message costs {price}"),
                );
                p.extra = serde_json::json!({"balance": available.micros(), "price": price.micros()})
                    .as_object()
                    .cloned();
                p
            }
            SubmitError::LimitReached { limit, frees_at_ms } => {
                let wait = ((frees_at_ms - crate::clock::now_ms()) / 1000).max(1) as u64;
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "messaging-limit-reached",
                    "Messaging limit reached",
                    format!("the business portfolio reached Meta's limit of {limit} patients outside their window in 24 hours"),
                )
                .retry_after(wait)
            }
            SubmitError::Store(e) => Problem::from(e),
        }
    }
}

impl From<crate::clinical::ClinicalError> for Problem {
    fn from(e: crate::clinical::ClinicalError) -> Self {
        use crate::clinical::ClinicalError as E;
        match e {
            E::Invalid { field, detail } => Problem::invalid_field(&field, detail),
            E::NotFound(what) => Problem::not_found(what),
            E::Conflict(detail) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            // Meta could not take the PDF: the request can be retried as it is.
            E::Upload(detail) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "media-upload-failed",
                "Media upload failed",
                format!("Meta did not accept the PDF upload: {detail}"),
            ),
            E::Store(s) => s.into(),
        }
    }
}
