//! What the gateway keeps about clinical touchpoints other than appointments: documents sent
//! (prescriptions, lab reports, health records), completed visits, the patient's feedback, and
//! messages forwarded to the clinic's inbox.

use serde::{Deserialize, Serialize};

use super::appointment::{AppointmentId, Patient};
use super::{MessageId, TenantId, E164};

/// A prefixed ULID for records the gateway creates (`doc_…`, `vis_…`).
pub fn new_record_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Whether `s` is an id made by [`new_record_id`] with `prefix`.
pub fn is_record_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|u| u.parse::<ulid::Ulid>().is_ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Prescription,
    LabReport,
    DischargeSummary,
    VaccinationRecord,
    HealthRecord,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Prescription => "prescription",
            DocumentKind::LabReport => "lab_report",
            DocumentKind::DischargeSummary => "discharge_summary",
            DocumentKind::VaccinationRecord => "vaccination_record",
            DocumentKind::HealthRecord => "health_record",
        }
    }

    /// The title a patient reads when the sender gave none.
    pub fn default_title(self) -> &'static str {
        match self {
            DocumentKind::Prescription => "Prescription",
            DocumentKind::LabReport => "Lab report",
            DocumentKind::DischargeSummary => "Discharge summary",
            DocumentKind::VaccinationRecord => "Vaccination record",
            DocumentKind::HealthRecord => "Health record",
        }
    }
}

/// A document delivered to a patient. `revision` counts corrections: the EMR sending the same
/// document id with different content is a corrected document, sent again as corrected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub tenant: TenantId,
    pub kind: DocumentKind,
    #[serde(default)]
    pub external_id: Option<String>,
    pub patient: Patient,
    pub title: String,
    #[serde(default)]
    pub doctor: Option<String>,
    pub filename: String,
    pub size_bytes: usize,
    /// Hex SHA-256 of the PDF: the same bytes again are a duplicate, not a correction.
    pub sha256: String,
    pub revision: u32,
    /// Meta's id of the uploaded PDF.
    pub media_id: String,
    #[serde(default)]
    pub message: Option<MessageId>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A completed visit; it schedules the follow-up and the feedback request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    pub id: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub external_id: Option<String>,
    pub patient: Patient,
    pub visit_type: String,
    #[serde(default)]
    pub doctor: Option<String>,
    #[serde(default)]
    pub appointment: Option<AppointmentId>,
    pub completed_ms: i64,
    #[serde(default)]
    pub follow_up_due_ms: Option<i64>,
    #[serde(default)]
    pub feedback_due_ms: Option<i64>,
}

/// A patient's rating of a visit, and the comment that may follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub visit: String,
    pub tenant: TenantId,
    pub patient: E164,
    /// 1 (very poor) to 5 (excellent).
    pub rating: u8,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub doctor: Option<String>,
    pub received_ms: i64,
}

/// A patient's message that no workflow answered: the clinic reads it and may reply inside the
/// window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Meta's message id (wamid), which also makes storing it idempotent.
    pub id: String,
    pub tenant: TenantId,
    pub from: E164,
    /// `text`, `image`, `document`, `location` …
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    pub received_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_carry_their_prefix() {
        let id = new_record_id("doc");
        assert!(is_record_id("doc", &id));
        assert!(!is_record_id("vis", &id));
        assert!(!is_record_id("doc", "doc_nope"));
    }
}
