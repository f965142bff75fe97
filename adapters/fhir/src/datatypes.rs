//! Common FHIR data types (the elements the gateway reads). Unknown elements are ignored.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codes::{ContactPointSystem, ContactPointUse};
use crate::error::FhirError;
use crate::primitives::{DateTime, Instant};

/// An extension, kept raw: `url` plus whatever `value[x]` / nested extensions it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    /// Canonical URL identifying the extension.
    pub url: String,
    /// Everything else, unchanged.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Coding: a code from a code system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coding {
    /// Code system URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Code system version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Display text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coding {
    /// A coding with system, code and display.
    pub fn new(system: &str, code: &str, display: Option<&str>) -> Self {
        Coding {
            system: Some(system.to_owned()),
            version: None,
            code: Some(code.to_owned()),
            display: display.map(str::to_owned),
        }
    }

    /// True when system and code both match.
    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

/// CodeableConcept: codings plus text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeableConcept {
    /// Codings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    /// Plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl CodeableConcept {
    /// A concept with one coding.
    pub fn from_coding(coding: Coding) -> Self {
        CodeableConcept {
            coding: vec![coding],
            text: None,
        }
    }

    /// True when any coding has this system and code.
    pub fn has_code(&self, system: &str, code: &str) -> bool {
        self.coding.iter().any(|c| c.is(system, code))
    }

    /// The first code of the given system.
    pub fn code_in(&self, system: &str) -> Option<&str> {
        self.coding
            .iter()
            .find(|c| c.system.as_deref() == Some(system))
            .and_then(|c| c.code.as_deref())
    }

    /// Text, else the first coding's display, else its code.
    pub fn label(&self) -> Option<&str> {
        self.text.as_deref().or_else(|| {
            self.coding
                .iter()
                .find_map(|c| c.display.as_deref().or(c.code.as_deref()))
        })
    }
}

/// Period: start and/or end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// Start (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime>,
    /// End (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime>,
}

/// Identifier: a business identifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identifier {
    /// usual | official | temp | secondary | old.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Identifier type (e.g. v2-0203 MR).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<CodeableConcept>,
    /// Namespace URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Validity period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

/// Reference to another resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Literal reference: relative (`Patient/1`), absolute URL, `urn:uuid:…` or `#contained`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Target type (`Patient`, …).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Logical reference by identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Box<Identifier>>,
    /// Display text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Reference {
    /// A literal reference.
    pub fn to(reference: impl Into<String>) -> Self {
        Reference {
            reference: Some(reference.into()),
            ..Reference::default()
        }
    }

    /// The target type: `type`, else the type segment of a `Type/id` or URL reference.
    pub fn target_type(&self) -> Option<&str> {
        self.type_
            .as_deref()
            .or_else(|| self.type_and_id().map(|(t, _)| t))
    }

    /// `(Type, id)` for relative or absolute RESTful references (`_history` is skipped).
    pub fn type_and_id(&self) -> Option<(&str, &str)> {
        let r = self.reference.as_deref()?;
        if r.starts_with('#') || r.starts_with("urn:") {
            return None;
        }
        let r = r.split(['?', '#']).next().unwrap_or(r);
        let mut segs: Vec<&str> = r.split('/').filter(|s| !s.is_empty()).collect();
        if segs.len() >= 4 && segs[segs.len() - 2] == "_history" {
            segs.truncate(segs.len() - 2);
        }
        let n = segs.len();
        if n < 2 {
            return None;
        }
        let (t, id) = (segs[n - 2], segs[n - 1]);
        let is_type = t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && t.chars().all(|c| c.is_ascii_alphanumeric());
        is_type.then_some((t, id))
    }
}

/// HumanName.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HumanName {
    /// usual | official | temp | nickname | anonymous | old | maiden.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Full name as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Given names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given: Vec<String>,
    /// Prefixes (Dr, Mr …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix: Vec<String>,
    /// Suffixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suffix: Vec<String>,
}

impl HumanName {
    /// `text`, else prefix + given + family joined by spaces.
    pub fn display(&self) -> Option<String> {
        if let Some(t) = self.text.as_deref().filter(|t| !t.trim().is_empty()) {
            return Some(t.trim().to_owned());
        }
        let parts: Vec<&str> = self
            .prefix
            .iter()
            .chain(self.given.iter())
            .map(String::as_str)
            .chain(self.family.as_deref())
            .filter(|s| !s.trim().is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// ContactPoint (phone, email …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactPoint {
    /// phone | fax | email | pager | url | sms | other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<ContactPointSystem>,
    /// The number or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// home | work | temp | old | mobile.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<ContactPointUse>,
    /// Preference order (1 = highest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u32>,
    /// When in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

/// Address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// home | work | temp | old | billing.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Full address text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Street lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub line: Vec<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// District.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// State.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// Meta: version, last update, profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// Version id (matches the weak ETag `W/"<versionId>"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<Instant>,
    /// Profiles claimed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<Coding>,
}

/// Attachment: inline base64 `data` or a `url`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Language (BCP-47).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Base64 data as received (may contain whitespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Where the data can be fetched (often `Binary/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-1 of the data, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation: Option<DateTime>,
}

/// Base64 decoder accepting padded or unpadded input.
pub(crate) fn decode_base64(data: &str, path: &str) -> Result<Vec<u8>, FhirError> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(cleaned.as_bytes())
        .map_err(|e| FhirError::InvalidBase64 {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// True for `application/pdf` (parameters and case ignored).
pub(crate) fn is_pdf_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/pdf"))
}

/// A PDF found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdf {
    /// Where in the resource it was found, e.g. `DiagnosticReport.presentedForm[0]`.
    pub path: String,
    /// Attachment title.
    pub title: Option<String>,
    /// The bytes, or where to fetch them.
    pub source: PdfSource,
}

/// Inline bytes (checked to start with `%PDF-`) or a URL to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdfSource {
    /// Decoded bytes.
    Inline(Vec<u8>),
    /// URL (absolute, or relative to the FHIR base such as `Binary/123`).
    Url(String),
}

impl Attachment {
    /// The inline data decoded: whitespace stripped, base64 validated. `Ok(None)` without data.
    pub fn decoded_data(&self) -> Result<Option<Vec<u8>>, FhirError> {
        self.decoded_data_at("Attachment.data")
    }

    pub(crate) fn decoded_data_at(&self, path: &str) -> Result<Option<Vec<u8>>, FhirError> {
        self.data
            .as_deref()
            .map(|d| decode_base64(d, path))
            .transpose()
    }

    /// True when `contentType` is `application/pdf`.
    pub fn is_pdf(&self) -> bool {
        is_pdf_type(self.content_type.as_deref())
    }

    /// This attachment as a PDF if it is declared `application/pdf`; `path` names it in errors.
    pub fn pdf_at(&self, path: &str) -> Result<Option<Pdf>, FhirError> {
        if !self.is_pdf() {
            return Ok(None);
        }
        let source = if let Some(bytes) = self.decoded_data_at(&format!("{path}.data"))? {
            check_pdf(&bytes, path)?;
            PdfSource::Inline(bytes)
        } else if let Some(url) = self.url.as_deref().filter(|u| !u.trim().is_empty()) {
            PdfSource::Url(url.trim().to_owned())
        } else {
            return Err(FhirError::EmptyAttachment {
                path: path.to_owned(),
            });
        };
        Ok(Some(Pdf {
            path: path.to_owned(),
            title: self.title.clone(),
            source,
        }))
    }
}

pub(crate) fn check_pdf(bytes: &[u8], path: &str) -> Result<(), FhirError> {
    if bytes.starts_with(b"%PDF-") {
        Ok(())
    } else {
        Err(FhirError::NotPdf {
            path: path.to_owned(),
        })
    }
}

/// Quantity (for durations and the like).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantity {
    /// Numeric value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Unit text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Unit system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Coded unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}
