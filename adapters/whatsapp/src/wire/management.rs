//! Media upload, template management and phone-number fields.

use serde::{Deserialize, Serialize};

/// `POST /{phone-number-id}/media` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaUploadResponse {
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TemplateCategory {
    Marketing,
    Utility,
    Authentication,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TemplateStatus {
    Approved,
    Pending,
    Rejected,
    Paused,
    Disabled,
    InAppeal,
    Flagged,
    Reinstated,
    Archived,
    Unarchived,
    Deleted,
    PendingDeletion,
    LimitExceeded,
    Locked,
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterFormat {
    #[default]
    Positional,
    Named,
}

/// `POST /{waba-id}/message_templates` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTemplateRequest {
    pub name: String,
    pub category: TemplateCategory,
    pub language: String,
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    pub components: Vec<TemplateComponentDef>,
}

/// A component of a template definition (not of a send).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateComponentDef {
    /// `HEADER`, `BODY`, `FOOTER` or `BUTTONS`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Header format: `TEXT`, `IMAGE`, `DOCUMENT`, `VIDEO`, `LOCATION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buttons: Option<Vec<TemplateButtonDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateButtonDef {
    /// `QUICK_REPLY`, `URL`, `PHONE_NUMBER` …
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTemplateResponse {
    #[serde(deserialize_with = "super::id_string")]
    pub id: String,
    pub status: TemplateStatus,
    pub category: TemplateCategory,
}

/// One template as listed by `GET /{waba-id}/message_templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    #[serde(default, deserialize_with = "super::opt_id_string")]
    pub id: Option<String>,
    pub name: String,
    pub status: TemplateStatus,
    pub category: TemplateCategory,
    pub language: String,
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    #[serde(default)]
    pub components: Vec<TemplateComponentDef>,
}

impl TemplateInfo {
    /// How many `{{n}}` / `{{name}}` placeholders the BODY text carries.
    pub fn body_parameter_count(&self) -> usize {
        self.components
            .iter()
            .filter(|c| c.kind.eq_ignore_ascii_case("BODY"))
            .filter_map(|c| c.text.as_deref())
            .map(count_placeholders)
            .sum()
    }

    /// How many placeholders the HEADER carries (text placeholders, or 1 for a media header).
    pub fn header_parameter_count(&self) -> usize {
        self.components
            .iter()
            .filter(|c| c.kind.eq_ignore_ascii_case("HEADER"))
            .map(|c| match c.format.as_deref() {
                Some(f) if !f.eq_ignore_ascii_case("TEXT") => 1,
                _ => c.text.as_deref().map(count_placeholders).unwrap_or(0),
            })
            .sum()
    }
}

/// Counts distinct `{{…}}` placeholders in template text.
pub fn count_placeholders(text: &str) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty() && !seen.contains(&name) {
            seen.push(name);
        }
        rest = &after[end + 2..];
    }
    seen.len()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateList {
    pub data: Vec<TemplateInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<serde_json::Value>,
}

/// `GET /{phone-number-id}?fields=…`: the fields the gateway reads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PhoneNumberInfo {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_rating: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// `TIER_250`, `TIER_2K`, `TIER_10K`, `TIER_100K`, `TIER_UNLIMITED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_limit_tier: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// `STANDARD` (80 mps), `HIGH` (1,000 mps) or `NOT_APPLICABLE`.
    pub level: String,
}
