//! OperationOutcome (errors) and CapabilityStatement (`GET [base]/metadata`).

use serde::{Deserialize, Serialize};

use crate::codes::{IssueSeverity, IssueType};
use crate::datatypes::{CodeableConcept, Meta};
use crate::primitives::DateTime;

/// OperationOutcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationOutcome {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Issues (required 1..*).
    #[serde(default)]
    pub issue: Vec<OperationOutcomeIssue>,
}

/// OperationOutcome.issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationOutcomeIssue {
    /// fatal | error | warning | information.
    pub severity: IssueSeverity,
    /// Issue type.
    pub code: IssueType,
    /// Coded details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<CodeableConcept>,
    /// Diagnostic text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    /// FHIRPath expressions of the offending elements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

impl OperationOutcome {
    /// An outcome with one issue.
    pub fn issue(severity: IssueSeverity, code: IssueType, diagnostics: impl Into<String>) -> Self {
        OperationOutcome {
            id: None,
            meta: None,
            issue: vec![OperationOutcomeIssue {
                severity,
                code,
                details: None,
                diagnostics: Some(diagnostics.into()),
                expression: Vec::new(),
            }],
        }
    }

    /// `error` issue.
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::issue(IssueSeverity::Error, code, diagnostics)
    }

    /// Invalid content at a FHIRPath expression (HTTP 400/422).
    pub fn invalid(diagnostics: impl Into<String>, expression: impl Into<String>) -> Self {
        Self::error(IssueType::Invalid, diagnostics).with_expression(expression)
    }

    /// Unknown resource (HTTP 404).
    pub fn not_found(resource_type: &str, id: &str) -> Self {
        Self::error(
            IssueType::NotFound,
            format!("{resource_type}/{id} is not known"),
        )
    }

    /// Operation or resource type not supported (HTTP 400/405/501).
    pub fn not_supported(diagnostics: impl Into<String>) -> Self {
        Self::error(IssueType::NotSupported, diagnostics)
    }

    /// Version conflict (HTTP 409/412).
    pub fn conflict(diagnostics: impl Into<String>) -> Self {
        Self::error(IssueType::Conflict, diagnostics)
    }

    /// Authentication failed (HTTP 401).
    pub fn login(diagnostics: impl Into<String>) -> Self {
        Self::error(IssueType::Login, diagnostics)
    }

    /// Not allowed (HTTP 403).
    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::error(IssueType::Forbidden, diagnostics)
    }

    /// Rate-limited (HTTP 429).
    pub fn throttled(diagnostics: impl Into<String>) -> Self {
        Self::error(IssueType::Throttled, diagnostics)
    }

    /// Temporary failure (HTTP 503).
    pub fn transient(diagnostics: impl Into<String>) -> Self {
        Self::error(IssueType::Transient, diagnostics)
    }

    /// Internal error (HTTP 500).
    pub fn exception(diagnostics: impl Into<String>) -> Self {
        Self::issue(IssueSeverity::Fatal, IssueType::Exception, diagnostics)
    }

    /// Success or information.
    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self::issue(
            IssueSeverity::Information,
            IssueType::Informational,
            diagnostics,
        )
    }

    /// From a parse error: `invalid` with the error text; `Invalid` errors carry their path
    /// as the expression.
    pub fn from_error(err: &crate::FhirError) -> Self {
        match err {
            crate::FhirError::Invalid { path, .. } => Self::invalid(err.to_string(), path.clone()),
            crate::FhirError::Json(_) | crate::FhirError::NotAResource(_) => {
                Self::error(IssueType::Structure, err.to_string())
            }
            _ => Self::error(IssueType::Invalid, err.to_string()),
        }
    }

    /// Add an expression to the last issue.
    pub fn with_expression(mut self, expression: impl Into<String>) -> Self {
        if let Some(i) = self.issue.last_mut() {
            i.expression.push(expression.into());
        }
        self
    }

    /// Append another issue.
    pub fn and(mut self, other: OperationOutcome) -> Self {
        self.issue.extend(other.issue);
        self
    }

    /// True when some issue is `error` or `fatal`.
    pub fn is_error(&self) -> bool {
        self.issue
            .iter()
            .any(|i| matches!(i.severity, IssueSeverity::Error | IssueSeverity::Fatal))
    }

    /// Diagnostics of all issues joined with `; `.
    pub fn summary(&self) -> String {
        self.issue
            .iter()
            .map(|i| {
                let d = i
                    .diagnostics
                    .as_deref()
                    .or_else(|| i.details.as_ref().and_then(CodeableConcept::label))
                    .unwrap_or("");
                format!("{} {}: {}", i.severity, i.code, d)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// CapabilityStatement (the subset a minimal `metadata` answer needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityStatement {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// draft | active | retired | unknown.
    pub status: String,
    /// Publication date.
    pub date: DateTime,
    /// instance | capability | requirements.
    pub kind: String,
    /// Software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<CapabilitySoftware>,
    /// This installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<CapabilityImplementation>,
    /// FHIR version (`4.0.1`).
    pub fhir_version: String,
    /// Formats (`json`).
    #[serde(default)]
    pub format: Vec<String>,
    /// REST capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rest: Vec<CapabilityRest>,
}

/// CapabilityStatement.software.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilitySoftware {
    /// Name.
    pub name: String,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// CapabilityStatement.implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityImplementation {
    /// Description.
    pub description: String,
    /// Base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// CapabilityStatement.rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityRest {
    /// client | server.
    pub mode: String,
    /// Resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<CapabilityResource>,
}

/// CapabilityStatement.rest.resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityResource {
    /// Resource type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Interactions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interaction: Vec<CapabilityInteraction>,
}

/// CapabilityStatement.rest.resource.interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityInteraction {
    /// read | vread | update | patch | delete | history-instance | history-type | create | search-type.
    pub code: String,
}

impl CapabilityStatement {
    /// A minimal server statement: FHIR 4.0.1, JSON, the given resources and interactions.
    /// `date` is a FHIR dateTime (e.g. the build date).
    pub fn minimal(
        software: &str,
        version: &str,
        base_url: Option<&str>,
        date: DateTime,
        resources: &[(&str, &[&str])],
    ) -> Self {
        CapabilityStatement {
            id: None,
            meta: None,
            status: "active".into(),
            date,
            kind: "instance".into(),
            software: Some(CapabilitySoftware {
                name: software.into(),
                version: Some(version.into()),
            }),
            implementation: Some(CapabilityImplementation {
                description: software.into(),
                url: base_url.map(str::to_owned),
            }),
            fhir_version: "4.0.1".into(),
            format: vec!["json".into()],
            rest: vec![CapabilityRest {
                mode: "server".into(),
                resource: resources
                    .iter()
                    .map(|(t, interactions)| CapabilityResource {
                        type_: (*t).into(),
                        interaction: interactions
                            .iter()
                            .map(|c| CapabilityInteraction { code: (*c).into() })
                            .collect(),
                    })
                    .collect(),
            }],
        }
    }
}
