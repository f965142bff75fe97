//! Every FHIR answer that is not a success is an OperationOutcome (`application/fhir+json`) with
//! a diagnostic a person can act on and, where one element is at fault, its FHIRPath in
//! `expression`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use fhir_r4::{IssueSeverity, IssueType, OperationOutcome};

use crate::clinical::ClinicalError;

/// The FHIR JSON media type every answer carries.
pub const FHIR_JSON: &str = "application/fhir+json";

/// A refused or failed FHIR interaction: the HTTP status and the OperationOutcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: StatusCode,
    pub outcome: OperationOutcome,
    pub retry_after_secs: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, outcome: OperationOutcome) -> Self {
        Self {
            status,
            outcome,
            retry_after_secs: None,
        }
    }

    /// 422: the content is understood but cannot be acted on (no patient phone, a start in the
    /// past, a broken PDF); `expression` names the element.
    pub fn invalid(diagnostics: impl Into<String>, expression: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            OperationOutcome::invalid(diagnostics, expression),
        )
    }

    /// 400: not JSON, not a resource, or a resource of the wrong shape.
    pub fn structure(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            OperationOutcome::error(IssueType::Structure, diagnostics),
        )
    }

    /// 400: an interaction or resource type this endpoint does not take.
    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            OperationOutcome::not_supported(diagnostics),
        )
    }

    pub fn unauthorized(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            OperationOutcome::login(diagnostics),
        )
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            OperationOutcome::error(IssueType::NotFound, diagnostics),
        )
    }

    pub fn conflict(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            OperationOutcome::conflict(diagnostics),
        )
    }

    /// 502: the clinic's FHIR server (a referenced Patient, an attachment URL) or Meta did not
    /// answer as needed; the same request can be sent again.
    pub fn upstream(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            OperationOutcome::transient(diagnostics),
        )
    }

    /// 503: the gateway's store is unavailable; nothing was acted on.
    pub fn unavailable(diagnostics: impl Into<String>) -> Self {
        let mut f = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            OperationOutcome::transient(diagnostics),
        );
        f.retry_after_secs = Some(1);
        f
    }

    pub fn too_large(diagnostics: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            OperationOutcome::error(IssueType::TooLong, diagnostics),
        )
    }

    /// The first diagnostic (for logs and tests).
    pub fn diagnostics(&self) -> String {
        self.outcome.summary()
    }

    /// Whether sending the same thing again may work (upstream or store trouble).
    pub fn is_transient(&self) -> bool {
        self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS
    }

    /// Prefixes every diagnostic with where it happened (`Bundle.entry[3]`) and adds that as an
    /// expression when the issue has none.
    pub fn at(mut self, location: &str) -> Self {
        for issue in &mut self.outcome.issue {
            if let Some(d) = &issue.diagnostics {
                issue.diagnostics = Some(format!("{location}: {d}"));
            }
            if issue.expression.is_empty() {
                issue.expression.push(location.to_owned());
            }
        }
        self
    }
}

impl Failure {
    /// Appends a sentence, in parentheses, to the first diagnostic.
    pub fn note(mut self, sentence: &str) -> Self {
        if let Some(d) = self
            .outcome
            .issue
            .first_mut()
            .and_then(|i| i.diagnostics.as_mut())
        {
            d.push_str(&format!(" ({sentence})"));
        }
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status.as_u16(), self.diagnostics())
    }
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        resp.content_type(FHIR_JSON);
        if let Some(s) = self.retry_after_secs {
            resp.insert_header(("Retry-After", s.to_string()));
        }
        resp.body(outcome_json(&self.outcome))
    }
}

/// The OperationOutcome as FHIR JSON (with `resourceType`).
pub fn outcome_json(outcome: &OperationOutcome) -> Vec<u8> {
    fhir_r4::to_json(outcome).unwrap_or_else(|_| {
        br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}"#
            .to_vec()
    })
}

/// An `information` (or `warning`) outcome describing what was done.
pub fn informational(message: impl Into<String>, warning: bool) -> OperationOutcome {
    if warning {
        OperationOutcome::issue(IssueSeverity::Warning, IssueType::Informational, message)
    } else {
        OperationOutcome::information(message)
    }
}

/// A parse error of the adapter as a 400 (not JSON / not a resource) or 422 (a field is wrong),
/// with the path of the element at fault.
pub fn from_fhir_error(e: &fhir_r4::FhirError) -> Failure {
    use fhir_r4::FhirError as E;
    let outcome = OperationOutcome::from_error(e);
    let status = match e {
        E::Json(_) | E::NotAResource(_) | E::WrongResourceType { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let mut f = Failure::new(status, outcome);
    let expression = match e {
        E::InvalidBase64 { path, .. } => Some(path.clone()),
        E::NotPdf { path } | E::EmptyAttachment { path } => Some(path.clone()),
        _ => None,
    };
    if let (Some(x), Some(issue)) = (expression, f.outcome.issue.last_mut()) {
        if issue.expression.is_empty() {
            issue.expression.push(x);
        }
    }
    f
}

/// A clinical-layer refusal, its field named as the FHIR element it came from (`fields` maps
/// the clinical field names, e.g. `start` → `Appointment.start`).
pub fn from_clinical(e: ClinicalError, fields: &[(&str, &str)]) -> Failure {
    match e {
        ClinicalError::Invalid { field, detail } => {
            let expression = fields
                .iter()
                .find(|(f, _)| *f == field)
                .map_or(field.clone(), |(_, x)| (*x).to_owned());
            Failure::invalid(format!("{expression}: {detail}"), expression)
        }
        ClinicalError::NotFound(what) => Failure::not_found(what),
        ClinicalError::Conflict(detail) => Failure::conflict(detail),
        ClinicalError::Upload(detail) => Failure::upstream(format!(
            "Meta did not accept the PDF upload ({detail}); send the resource again"
        )),
        ClinicalError::Store(s) => {
            tracing::error!(error = %s, "store error during FHIR ingest");
            Failure::unavailable("the gateway's store is unavailable; nothing was acted on")
        }
    }
}

/// An API problem (rate limit, auth) as an OperationOutcome with the same status.
pub fn from_problem(p: &crate::api::problem::Problem) -> Failure {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match status {
        StatusCode::UNAUTHORIZED => IssueType::Login,
        StatusCode::FORBIDDEN => IssueType::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => IssueType::Throttled,
        StatusCode::NOT_FOUND => IssueType::NotFound,
        StatusCode::CONFLICT => IssueType::Conflict,
        s if s.is_server_error() => IssueType::Transient,
        _ => IssueType::Invalid,
    };
    let mut f = Failure::new(status, OperationOutcome::error(code, p.detail.clone()));
    f.retry_after_secs = p.retry_after_secs;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinical_fields_become_fhir_paths() {
        let f = from_clinical(
            ClinicalError::invalid("start", "must be in the future"),
            &[("start", "Appointment.start")],
        );
        assert_eq!(f.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(f.outcome.issue[0].expression, vec!["Appointment.start"]);
        assert_eq!(
            f.outcome.issue[0].diagnostics.as_deref(),
            Some("Appointment.start: must be in the future")
        );
        let f = from_clinical(ClinicalError::Conflict("cancelled".into()), &[]);
        assert_eq!(f.status, StatusCode::CONFLICT);
    }

    #[test]
    fn located_failures_name_the_entry() {
        let f = Failure::not_supported("GET is not supported").at("Bundle.entry[8]");
        assert_eq!(
            f.outcome.issue[0].diagnostics.as_deref(),
            Some("Bundle.entry[8]: GET is not supported")
        );
        assert_eq!(f.outcome.issue[0].expression, vec!["Bundle.entry[8]"]);
    }

    #[test]
    fn outcomes_serialise_with_resource_type() {
        let v: serde_json::Value = serde_json::from_slice(&outcome_json(
            &Failure::invalid("x", "Appointment.start").outcome,
        ))
        .unwrap_or_default();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["code"], "invalid");
    }
}
