//! ABDM (NRCeS) document Bundles built the way the published profiles describe them:
//! `type = document`, identifier, timestamp, meta.versionId, Composition first, every
//! referenced resource inside the Bundle with `urn:uuid:` fullUrls.

use base64::Engine as _;
use fhir_r4::*;
use serde_json::{json, Value};

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";
const SD: &str = "https://nrces.in/ndhm/fhir/r4/StructureDefinition/";

fn pdf_b64_wrapped() -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(PDF);
    // Senders wrap base64 at 76 columns.
    b.as_bytes()
        .chunks(20)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn patient(telecom: Value) -> Value {
    json!({
        "fullUrl": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e",
        "resource": {
            "resourceType": "Patient",
            "id": "1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e",
            "meta": {"versionId": "1", "lastUpdated": "2024-03-01T10:00:00+05:30",
                     "profile": [format!("{SD}Patient")]},
            "identifier": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}]},
                "system": "https://healthid.ndhm.gov.in",
                "value": "22-7225-4829-5255"
            }],
            "name": [{"text": "Ramesh Pawar"}],
            "telecom": telecom,
            "gender": "male",
            "birthDate": "1981-01-12",
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "mr-IN", "display": "Marathi"}]}, "preferred": true}]
        }
    })
}

fn practitioner() -> Value {
    json!({
        "fullUrl": "urn:uuid:3bc96820-c7c9-4f59-900d-6b0ed1fa558e",
        "resource": {
            "resourceType": "Practitioner",
            "id": "3bc96820-c7c9-4f59-900d-6b0ed1fa558e",
            "meta": {"profile": [format!("{SD}Practitioner")]},
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MD", "display": "Medical License number"}]},
                            "system": "https://doctor.ndhm.gov.in", "value": "21-1521-3828-3227"}],
            "name": [{"text": "Dr. Ananya Deshmukh", "prefix": ["Dr"]}]
        }
    })
}

fn composition(code: &str, display: &str, profile: &str, sections: Value) -> Value {
    json!({
        "fullUrl": "urn:uuid:6f8c8a9e-3f1e-4b1e-9a55-3d2c1b0a9f8e",
        "resource": {
            "resourceType": "Composition",
            "id": "6f8c8a9e-3f1e-4b1e-9a55-3d2c1b0a9f8e",
            "meta": {"versionId": "1", "lastUpdated": "2024-03-01T10:00:00+05:30", "profile": [format!("{SD}{profile}")]},
            "language": "en-IN",
            "identifier": {"system": "https://ndhm.in/phr", "value": "645bb0c3-ff7e-4123-bef5-3852a4784813"},
            "status": "final",
            "type": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}], "text": display},
            "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e", "display": "Ramesh Pawar"},
            "date": "2024-03-01T10:00:00+05:30",
            "author": [{"reference": "urn:uuid:3bc96820-c7c9-4f59-900d-6b0ed1fa558e", "display": "Dr. Ananya Deshmukh"}],
            "title": display,
            "section": sections
        }
    })
}

fn bundle(entries: Vec<Value>) -> Bundle {
    let v = json!({
        "resourceType": "Bundle",
        "id": "prescription-bundle-01",
        "meta": {"versionId": "1", "lastUpdated": "2024-03-01T10:00:00+05:30",
                 "profile": [format!("{SD}DocumentBundle")],
                 "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V", "display": "very restricted"}]},
        "identifier": {"system": "http://hip.in", "value": "305fecc2-4ba2-46cc-9ccd-efa755aff51d"},
        "type": "document",
        "timestamp": "2024-03-01T10:00:00+05:30",
        "entry": entries
    });
    let r = Resource::from_value(v).unwrap_or_else(|e| panic!("{e}"));
    r.into_type().unwrap()
}

fn phone() -> Value {
    json!([{"system": "phone", "value": "+919876543210", "use": "mobile"}])
}

fn prescription(with_binary: bool, telecom: Value) -> Bundle {
    let mut entries = vec![
        composition(
            "440545006",
            "Prescription record",
            "PrescriptionRecord",
            json!([{
                "title": "Prescription record",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "440545006", "display": "Prescription record"}]},
                "entry": if with_binary {
                    json!([{"reference": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000001", "type": "MedicationRequest"},
                           {"reference": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000002", "type": "Binary"}])
                } else {
                    json!([{"reference": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000001", "type": "MedicationRequest"}])
                }
            }]),
        ),
        patient(telecom),
        practitioner(),
        json!({
            "fullUrl": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "a1b2c3d4-0000-4000-8000-000000000001",
                "meta": {"profile": [format!("{SD}MedicationRequest")]},
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": "Azithromycin 250 mg oral tablet"},
                "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e", "display": "Ramesh Pawar"},
                "authoredOn": "2024-03-01T10:00:00+05:30",
                "requester": {"reference": "urn:uuid:3bc96820-c7c9-4f59-900d-6b0ed1fa558e", "display": "Dr. Ananya Deshmukh"},
                "dosageInstruction": [{"text": "One tablet at once, daily for 3 days"}]
            }
        }),
    ];
    if with_binary {
        entries.push(json!({
            "fullUrl": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000002",
            "resource": {
                "resourceType": "Binary",
                "id": "a1b2c3d4-0000-4000-8000-000000000002",
                "meta": {"profile": [format!("{SD}Binary")]},
                "contentType": "application/pdf",
                "data": pdf_b64_wrapped()
            }
        }));
    }
    bundle(entries)
}

#[test]
fn prescription_record_with_binary_pdf() {
    let b = prescription(true, phone());
    let doc = AbdmDocument::from_bundle(&b).unwrap();
    assert_eq!(doc.record_type, AbdmRecordType::Prescription);
    assert_eq!(doc.mobile, "+919876543210");
    assert_eq!(doc.language.as_deref(), Some("mr-IN"));
    assert_eq!(doc.title.as_deref(), Some("Prescription record"));
    assert_eq!(
        doc.bundle_identifier
            .as_ref()
            .and_then(|i| i.value.as_deref()),
        Some("305fecc2-4ba2-46cc-9ccd-efa755aff51d")
    );
    assert_eq!(doc.pdfs.len(), 1);
    assert_eq!(doc.pdfs[0].source, PdfSource::Inline(PDF.to_vec()));
    assert_eq!(doc.patient.display_name().as_deref(), Some("Ramesh Pawar"));
}

#[test]
fn prescription_without_pdf_or_mobile() {
    let err = AbdmDocument::from_bundle(&prescription(false, phone())).unwrap_err();
    assert!(matches!(err, AbdmError::NoPdf));
    assert!(err.to_string().contains("no PDF"));
    let err = AbdmDocument::from_bundle(&prescription(
        true,
        json!([{"system": "email", "value": "r@example.in"}]),
    ))
    .unwrap_err();
    assert!(matches!(err, AbdmError::NoPatientMobile));
    assert!(err.to_string().contains("no patient mobile"));
}

#[test]
fn diagnostic_report_record_with_presented_form() {
    let b = bundle(vec![
        composition(
            "721981007",
            "Diagnostic studies report",
            "DiagnosticReportRecord",
            json!([{
                "title": "Computed tomography imaging report",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "4261000179100", "display": "Computed tomography imaging report"}]},
                "entry": [{"reference": "urn:uuid:d1000000-0000-4000-8000-000000000001", "type": "DiagnosticReport"}]
            }]),
        ),
        patient(phone()),
        practitioner(),
        json!({
            "fullUrl": "urn:uuid:d1000000-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "DiagnosticReport",
                "id": "d1000000-0000-4000-8000-000000000001",
                "meta": {"profile": [format!("{SD}DiagnosticReportImaging")]},
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "82692-5", "display": "CT Head and Neck WO contrast"}], "text": "CT Head and Neck WO contrast"},
                "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e"},
                "issued": "2024-03-01T12:00:00+05:30",
                "conclusion": "Normal",
                "presentedForm": [{"contentType": "application/pdf", "language": "en-IN", "data": pdf_b64_wrapped(), "title": "CT report"}]
            }
        }),
    ]);
    let doc = AbdmDocument::from_bundle(&b).unwrap();
    assert_eq!(doc.record_type, AbdmRecordType::DiagnosticReport);
    assert_eq!(doc.pdfs.len(), 1);
    assert_eq!(doc.pdfs[0].path, "DiagnosticReport.presentedForm[0]");
    assert_eq!(doc.pdfs[0].title.as_deref(), Some("CT report"));
}

#[test]
fn op_consultation_with_named_sections_and_document_reference_to_binary() {
    let b = bundle(vec![
        composition(
            "371530004",
            "Clinical consultation report",
            "OPConsultRecord",
            json!([
                {"title": "Chief complaints",
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "422843007", "display": "Chief complaint section"}]},
                 "entry": [{"reference": "urn:uuid:c0000000-0000-4000-8000-000000000009", "type": "Condition"}]},
                {"title": "Document Reference",
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "371530004", "display": "Clinical consultation report"}]},
                 "entry": [{"reference": "urn:uuid:c0000000-0000-4000-8000-000000000001", "type": "DocumentReference"}]}
            ]),
        ),
        patient(phone()),
        practitioner(),
        json!({
            "fullUrl": "urn:uuid:c0000000-0000-4000-8000-000000000009",
            "resource": {"resourceType": "Condition", "id": "c0000000-0000-4000-8000-000000000009",
                         "code": {"text": "Abdominal pain"},
                         "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e"}}
        }),
        json!({
            "fullUrl": "urn:uuid:c0000000-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "DocumentReference",
                "id": "c0000000-0000-4000-8000-000000000001",
                "meta": {"profile": [format!("{SD}DocumentReference")]},
                "status": "current",
                "docStatus": "final",
                "type": {"coding": [{"system": "http://snomed.info/sct", "code": "4241000179101", "display": "Laboratory report"}], "text": "Laboratory report"},
                "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e"},
                "content": [{"attachment": {"contentType": "application/pdf", "language": "en-IN",
                                            "url": "urn:uuid:c0000000-0000-4000-8000-000000000002",
                                            "title": "Consultation note", "creation": "2024-03-01T10:00:00+05:30"}}]
            }
        }),
        json!({
            "fullUrl": "urn:uuid:c0000000-0000-4000-8000-000000000002",
            "resource": {"resourceType": "Binary", "id": "c0000000-0000-4000-8000-000000000002",
                         "contentType": "application/pdf", "data": pdf_b64_wrapped()}
        }),
    ]);
    let doc = AbdmDocument::from_bundle(&b).unwrap();
    assert_eq!(doc.record_type, AbdmRecordType::OpConsultation);
    assert_eq!(doc.pdfs.len(), 1);
    assert_eq!(doc.pdfs[0].path, "DocumentReference.content[0].attachment");
    assert_eq!(
        doc.pdfs[0].source,
        PdfSource::Inline(PDF.to_vec()),
        "URL to a Binary in the Bundle is inlined"
    );
}

#[test]
fn errors_name_what_is_missing() {
    // Unknown Composition.type.
    let mut b = prescription(true, phone());
    if let Some(Resource::Composition(c)) = b.entry[0].resource.as_mut() {
        c.type_ = CodeableConcept::from_coding(Coding::new("http://loinc.org", "57833-6", None));
    }
    let err = AbdmDocument::from_bundle(&b).unwrap_err().to_string();
    assert!(err.contains("http://loinc.org|57833-6"), "{err}");

    // Dangling section entry.
    let mut b = prescription(true, phone());
    b.entry.pop();
    let err = AbdmDocument::from_bundle(&b).unwrap_err().to_string();
    assert!(err.contains("Composition.section[0].entry[1]"), "{err}");
    assert!(
        err.contains("urn:uuid:a1b2c3d4-0000-4000-8000-000000000002"),
        "{err}"
    );

    // Not a document.
    let mut b = prescription(true, phone());
    b.type_ = BundleType::Collection;
    assert!(matches!(
        AbdmDocument::from_bundle(&b),
        Err(AbdmError::NotADocument(BundleType::Collection))
    ));

    // Composition not first.
    let mut b = prescription(true, phone());
    b.entry.swap(0, 1);
    assert!(
        matches!(AbdmDocument::from_bundle(&b), Err(AbdmError::NoComposition(t)) if t == "Patient")
    );

    // Broken PDF inside the Binary.
    let mut b = prescription(true, phone());
    if let Some(Resource::Binary(bin)) = b.entry[4].resource.as_mut() {
        bin.data = Some("aGVsbG8=".into());
    }
    let err = AbdmDocument::from_bundle(&b).unwrap_err().to_string();
    assert!(
        err.contains("Binary.data") && err.contains("%PDF-"),
        "{err}"
    );
}

#[test]
fn record_type_codes_and_wellness_text() {
    let codes: Vec<_> = AbdmRecordType::ALL
        .iter()
        .map(|t| (t.hi_type(), t.snomed_code()))
        .collect();
    assert_eq!(
        codes,
        [
            ("Prescription", Some("440545006")),
            ("DiagnosticReport", Some("721981007")),
            ("OPConsultation", Some("371530004")),
            ("DischargeSummary", Some("373942005")),
            ("ImmunizationRecord", Some("41000179103")),
            ("HealthDocumentRecord", Some("419891008")),
            ("WellnessRecord", None),
        ]
    );
    let mut b = prescription(true, phone());
    if let Some(Resource::Composition(c)) = b.entry[0].resource.as_mut() {
        c.type_ = CodeableConcept {
            coding: vec![],
            text: Some("Wellness Record".into()),
        };
    }
    assert_eq!(
        AbdmDocument::from_bundle(&b).unwrap().record_type,
        AbdmRecordType::WellnessRecord
    );
}
