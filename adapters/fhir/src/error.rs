//! Errors of the FHIR adapter. Every variant names what was wrong and where
//! (resource type and a FHIRPath-like JSON path).

use thiserror::Error;

/// Parse and validation errors.
#[derive(Debug, Error)]
pub enum FhirError {
    /// The input is not JSON at all.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not an object with a string `resourceType`.
    #[error("not a FHIR resource: {0}")]
    NotAResource(String),
    /// A field of a known resource type has the wrong shape or an invalid code.
    #[error("invalid {resource_type} at {path}: {message}")]
    Invalid {
        /// `resourceType` of the resource being parsed.
        resource_type: String,
        /// Path of the offending element, e.g. `Appointment.status`.
        path: String,
        /// What serde (or our validation) said.
        message: String,
    },
    /// The caller asked for one resource type and got another.
    #[error("expected a {expected} resource, got {found}")]
    WrongResourceType {
        /// Expected `resourceType`.
        expected: String,
        /// Actual `resourceType`.
        found: String,
    },
    /// Base64 content could not be decoded.
    #[error("invalid base64 at {path}: {message}")]
    InvalidBase64 {
        /// Path of the attachment data, e.g. `DiagnosticReport.presentedForm[0].data`.
        path: String,
        /// Decoder message.
        message: String,
    },
    /// An attachment claims `application/pdf` but its bytes are not a PDF.
    #[error("attachment at {path} is declared application/pdf but does not start with %PDF-")]
    NotPdf {
        /// Path of the attachment.
        path: String,
    },
    /// An attachment has neither inline data nor a URL.
    #[error("attachment at {path} has neither data nor url")]
    EmptyAttachment {
        /// Path of the attachment.
        path: String,
    },
    /// A subscription notification Bundle is not usable.
    #[error("invalid subscription notification: {0}")]
    Notification(String),
}

impl FhirError {
    pub(crate) fn invalid(
        resource_type: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FhirError::Invalid {
            resource_type: resource_type.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}
