//! India's ABDM health records: NRCeS document Bundles (`Bundle.type = document`, Composition
//! first, every referenced resource inside). The adapter (`fhir_r4::abdm`) finds the record
//! type, the patient's mobile and the PDFs; here each PDF goes out with the matching touchpoint:
//! Prescription → prescription, DiagnosticReport → lab report, DischargeSummary → discharge
//! summary, ImmunizationRecord → vaccination record, others (OPConsultation,
//! HealthDocumentRecord, WellnessRecord) → health record.
//!
//! The external id is the Bundle's persistent `identifier` (the same document sent again, even
//! in a new Bundle with a new id, sends nothing), else `Bundle/<id>`, else the content hash; a
//! second PDF in the same document gets `#pdf2`, and so on.

use fhir_r4::{AbdmDocument, AbdmError, AbdmRecordType, Bundle, Resource};

use super::ingest::{self, DocumentPlan, Local};
use super::outcome::{from_fhir_error, Failure};
use super::service::{Ingest, Planned};
use crate::domain::records::DocumentKind;

/// The touchpoint of a record type.
pub fn kind_of(t: AbdmRecordType) -> DocumentKind {
    match t {
        AbdmRecordType::Prescription => DocumentKind::Prescription,
        AbdmRecordType::DiagnosticReport => DocumentKind::LabReport,
        AbdmRecordType::DischargeSummary => DocumentKind::DischargeSummary,
        AbdmRecordType::ImmunizationRecord => DocumentKind::VaccinationRecord,
        AbdmRecordType::OpConsultation
        | AbdmRecordType::HealthDocumentRecord
        | AbdmRecordType::WellnessRecord => DocumentKind::HealthRecord,
    }
}

/// A malformed document as a 422 naming the element.
pub fn failure(e: &AbdmError) -> Failure {
    let expression = match e {
        AbdmError::NotADocument(_) => "Bundle.type".to_owned(),
        AbdmError::NoComposition(_) => "Bundle.entry[0]".to_owned(),
        AbdmError::UnknownRecordType(_) => "Composition.type".to_owned(),
        AbdmError::NoSubject | AbdmError::SubjectNotPatient(_) => "Composition.subject".to_owned(),
        AbdmError::Unresolved { path, .. } => path.clone(),
        AbdmError::NoPatientMobile => "Patient.telecom".to_owned(),
        AbdmError::NoPdf => "Composition.section".to_owned(),
        AbdmError::Attachment(inner) => return from_fhir_error(inner),
    };
    Failure::invalid(format!("ABDM document: {e}"), expression)
}

/// The document's key for idempotency: the persistent identifier wins over the Bundle's id
/// (which changes when the HIP re-packages the same document).
pub fn external_id(bundle: &Bundle, content: &[u8]) -> String {
    match bundle
        .identifier
        .as_ref()
        .filter(|i| i.value.as_deref().is_some_and(|v| !v.trim().is_empty()))
    {
        Some(i) => ingest::external_id("Bundle", None, std::slice::from_ref(i), content),
        None => ingest::external_id("Bundle", bundle.id.as_deref(), &[], content),
    }
}

/// The author: the Composition's first author with a display or a resolvable Practitioner.
fn author(bundle: &Bundle, local: &Local<'_>) -> Option<String> {
    let Some(Resource::Composition(c)) = bundle.first_resource() else {
        return None;
    };
    c.author.iter().find_map(|r| {
        r.display
            .clone()
            .filter(|d| !d.trim().is_empty())
            .or_else(|| match local.resolve(r) {
                Some(Resource::Practitioner(p)) => {
                    p.name.iter().find_map(fhir_r4::HumanName::display)
                }
                _ => None,
            })
            .map(|d| d.trim().chars().take(100).collect())
    })
}

/// The pure part: record type, key, title and author → one plan per PDF.
pub fn plans(doc: &AbdmDocument, bundle: &Bundle, content: &[u8]) -> Vec<DocumentPlan> {
    let local = Local {
        contained: Vec::new(),
        bundle: Some(bundle),
    };
    let ext = external_id(bundle, content);
    let doctor = author(bundle, &local);
    let kind = kind_of(doc.record_type);
    doc.pdfs
        .iter()
        .enumerate()
        .map(|(i, pdf)| DocumentPlan {
            kind,
            external_id: if i == 0 {
                ext.clone()
            } else {
                format!("{ext}#pdf{}", i + 1)
            },
            title: pdf
                .title
                .clone()
                .or_else(|| doc.title.clone())
                .map(|t| t.trim().chars().take(100).collect()),
            doctor: doctor.clone(),
            pdf: pdf.clone(),
        })
        .collect()
}

/// Plans the delivery of an ABDM document Bundle.
pub async fn plan(
    ingest: &Ingest<'_>,
    bundle: &Bundle,
    content: &[u8],
) -> Result<Planned, Failure> {
    let doc = AbdmDocument::from_bundle(bundle).map_err(|e| failure(&e))?;
    let patient = ingest::patient_of(
        &doc.patient,
        "the Composition's subject",
        ingest.clinic,
        "Composition.subject",
    )?;
    let local = Local {
        contained: Vec::new(),
        bundle: Some(bundle),
    };
    let mut requests = Vec::new();
    for p in plans(&doc, bundle, content) {
        requests.push(ingest.document_request(p, &patient, &local).await?);
    }
    Ok(Planned::Documents {
        label: format!("ABDM {} document", doc.record_type.hi_type()),
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(v: serde_json::Value) -> Bundle {
        Resource::from_value(v)
            .and_then(|r| r.into_type())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn doc_bundle(code: &str, identifier: bool) -> Bundle {
        use base64::Engine;
        let pdf =
            base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4\nstartxref\n0\n%%EOF\n");
        let mut v = json!({
            "resourceType": "Bundle", "id": "b1", "type": "document",
            "timestamp": "2024-03-01T10:00:00+05:30",
            "entry": [
                {"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Composition", "id": "c", "status": "final",
                    "type": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
                    "subject": {"reference": "urn:uuid:p"}, "title": "Record",
                    "author": [{"reference": "urn:uuid:dr"}],
                    "section": [{"entry": [{"reference": "urn:uuid:bin"}]}]}},
                {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p",
                    "telecom": [{"system": "phone", "value": "+919876543210", "use": "mobile"}]}},
                {"fullUrl": "urn:uuid:dr", "resource": {"resourceType": "Practitioner", "id": "dr",
                    "name": [{"text": "Dr. Ananya Deshmukh"}]}},
                {"fullUrl": "urn:uuid:bin", "resource": {"resourceType": "Binary", "id": "bin",
                    "contentType": "application/pdf", "data": pdf}}
            ]
        });
        if identifier {
            v["identifier"] = json!({"system": "http://hip.in", "value": "305fecc2"});
        }
        bundle(v)
    }

    #[test]
    fn record_types_pick_the_touchpoint() {
        for (code, kind) in [
            ("440545006", DocumentKind::Prescription),
            ("721981007", DocumentKind::LabReport),
            ("373942005", DocumentKind::DischargeSummary),
            ("41000179103", DocumentKind::VaccinationRecord),
            ("419891008", DocumentKind::HealthRecord),
            ("371530004", DocumentKind::HealthRecord),
        ] {
            let b = doc_bundle(code, true);
            let doc = AbdmDocument::from_bundle(&b).unwrap_or_else(|e| panic!("{e}"));
            let plans = plans(&doc, &b, b"");
            assert_eq!(plans.len(), 1, "{code}");
            assert_eq!(plans[0].kind, kind, "{code}");
            assert_eq!(plans[0].doctor.as_deref(), Some("Dr. Ananya Deshmukh"));
            assert_eq!(
                plans[0].external_id,
                "Bundle?identifier=http://hip.in|305fecc2"
            );
        }
        let b = doc_bundle("440545006", false);
        assert_eq!(external_id(&b, b""), "Bundle/b1");
    }

    #[test]
    fn malformed_documents_name_the_element() {
        let e = failure(&AbdmError::NoPatientMobile);
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(e.outcome.issue[0].expression, vec!["Patient.telecom"]);
        assert!(e.diagnostics().contains("no patient mobile"));
        let b = doc_bundle("12345", true);
        let err = AbdmDocument::from_bundle(&b)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        let f = failure(&err);
        assert_eq!(f.outcome.issue[0].expression, vec!["Composition.type"]);
    }
}
