//! Documents for the patient: a prescription the moment the doctor finishes, a lab report the
//! moment it is final (again, marked corrected, when the lab corrects it), and other health
//! records (discharge summaries, vaccination records).
//!
//! Templates (DOCUMENT header with the PDF), body placeholders in order:
//! - `prescription_ready`: name, doctor, clinic.
//! - `lab_report_ready` / `lab_report_corrected` / `health_record_ready`: name, title, clinic.

use serde_json::json;

use super::compose::{body, document_header, send, template};
use super::{Command, SessionForm, Touchpoint};
use crate::domain::records::{Document, DocumentKind};
use crate::domain::Lane;
use crate::tenants::ClinicSettings;

pub const PRESCRIPTION: &str = "prescription_ready";
pub const LAB_REPORT: &str = "lab_report_ready";
pub const LAB_REPORT_CORRECTED: &str = "lab_report_corrected";
pub const HEALTH_RECORD: &str = "health_record_ready";

/// A document the patient waits for is worth sending for three days, not longer.
const DEADLINE_MS: i64 = 3 * 24 * 3_600_000;

/// What an incoming document is, given what was stored under its EMR id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Never seen: send it.
    New,
    /// The same bytes again (a re-sent HL7 message, a retried request): nothing to do.
    Duplicate,
    /// Different bytes under the same id: the lab corrected it; send it again, as corrected.
    Correction,
}

/// Classifies a document by its content hash against the stored one.
pub fn arrival(existing: Option<&Document>, sha256: &str) -> Arrival {
    match existing {
        None => Arrival::New,
        Some(d) if d.sha256 == sha256 => Arrival::Duplicate,
        Some(_) => Arrival::Correction,
    }
}

/// The send for a stored document (revision > 1 is a correction).
pub fn deliver(doc: &Document, clinic: &ClinicSettings, now_ms: i64) -> Vec<Command> {
    let corrected = doc.revision > 1;
    let (name, touchpoint, params): (&str, Touchpoint, [&str; 3]) = match doc.kind {
        DocumentKind::Prescription => (
            PRESCRIPTION,
            Touchpoint::Prescription,
            [
                &doc.patient.name,
                doc.doctor.as_deref().unwrap_or_default(),
                &clinic.display_name,
            ],
        ),
        DocumentKind::LabReport if corrected => (
            LAB_REPORT_CORRECTED,
            Touchpoint::LabReportCorrected,
            [&doc.patient.name, &doc.title, &clinic.display_name],
        ),
        DocumentKind::LabReport => (
            LAB_REPORT,
            Touchpoint::LabReport,
            [&doc.patient.name, &doc.title, &clinic.display_name],
        ),
        _ => (
            HEALTH_RECORD,
            Touchpoint::HealthRecord,
            [&doc.patient.name, &doc.title, &clinic.display_name],
        ),
    };
    let content = template(
        name,
        &doc.patient,
        clinic,
        vec![document_header(&doc.media_id, &doc.filename), body(&params)],
    );
    vec![
        send(
            touchpoint,
            &doc.patient,
            content,
            Lane::Care,
            now_ms + DEADLINE_MS,
            Some(SessionForm::Document),
        ),
        Command::Callback {
            event: "document.sent",
            data: json!({"document": doc.id, "kind": doc.kind.as_str(), "external_id": doc.external_id, "revision": doc.revision}),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appointment::Patient;
    use crate::domain::{TenantId, E164};
    use whatsapp_cloud::wire::{Component, Content, Parameter};

    fn clinic() -> ClinicSettings {
        let config: crate::config::ClinicConfig = serde_json::from_value(json!({
            "id": "c", "name": "Sunrise Clinic", "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
            "numbers": [{"phone_number_id": "1", "tier_mps": 80}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        crate::tenants::bootstrap::clinic_from_config(&config, &settings)
    }

    fn doc(kind: DocumentKind, revision: u32) -> Document {
        Document {
            id: "doc_1".into(),
            tenant: TenantId::parse("c").unwrap_or_else(|e| panic!("{e}")),
            kind,
            external_id: Some("LAB-9".into()),
            patient: Patient {
                phone: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
                name: "Asha".into(),
                language: Some("ta".into()),
            },
            title: "Complete blood count".into(),
            doctor: Some("Dr. Rao".into()),
            filename: "cbc.pdf".into(),
            size_bytes: 10,
            sha256: "aa".into(),
            revision,
            media_id: "555".into(),
            message: None,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn sent(cmds: &[Command]) -> (String, String, Vec<Component>, Touchpoint) {
        match &cmds[0] {
            Command::Send {
                content: Content::Template { template },
                touchpoint,
                ..
            } => (
                template.name.clone(),
                template.language.code.clone(),
                template.components.clone(),
                *touchpoint,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_bytes_are_a_duplicate_and_new_bytes_a_correction() {
        let d = doc(DocumentKind::LabReport, 1);
        assert_eq!(arrival(None, "aa"), Arrival::New);
        assert_eq!(arrival(Some(&d), "aa"), Arrival::Duplicate);
        assert_eq!(arrival(Some(&d), "bb"), Arrival::Correction);
    }

    #[test]
    fn each_kind_has_its_template_with_the_pdf_in_the_header() {
        let c = clinic();
        let (name, lang, components, tp) = sent(&deliver(&doc(DocumentKind::LabReport, 1), &c, 0));
        assert_eq!(
            (name.as_str(), lang.as_str(), tp),
            (LAB_REPORT, "ta", Touchpoint::LabReport)
        );
        assert!(matches!(&components[0], Component::Header { parameters }
            if matches!(&parameters[0], Parameter::Document { document } if document.id.as_deref() == Some("555"))));
        let (name, ..) = sent(&deliver(&doc(DocumentKind::LabReport, 2), &c, 0));
        assert_eq!(name, LAB_REPORT_CORRECTED);
        let (name, _, components, _) = sent(&deliver(&doc(DocumentKind::Prescription, 1), &c, 0));
        assert_eq!(name, PRESCRIPTION);
        assert!(matches!(&components[1], Component::Body { parameters }
            if matches!(&parameters[1], Parameter::Text { text, .. } if text == "Dr. Rao")));
        let (name, ..) = sent(&deliver(&doc(DocumentKind::DischargeSummary, 1), &c, 0));
        assert_eq!(name, HEALTH_RECORD);
    }
}
