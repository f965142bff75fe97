//! Official FHIR examples parse into the right models with the expected values.

mod common;

use common::{fixture, ALL};
use fhir_r4::*;
use serde_json::{json, Value};

fn parse<T: FhirResource>(name: &str) -> T {
    parse_as::<T>(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn appointment_example() {
    let a: Appointment = parse("appointment-example.json");
    assert_eq!(a.id.as_deref(), Some("example"));
    assert_eq!(a.status, AppointmentStatus::Booked);
    assert_eq!(a.participant.len(), 3);
    assert!(a
        .participant
        .iter()
        .all(|p| p.status == ParticipationStatus::Accepted));
    assert_eq!(
        a.patient_ref().and_then(|r| r.reference.as_deref()),
        Some("Patient/example")
    );
    let docs: Vec<_> = a
        .practitioner_refs()
        .iter()
        .filter_map(|r| r.display.as_deref())
        .collect();
    assert_eq!(docs, ["Dr Adam Careful"]);
    assert_eq!(
        a.location_ref().and_then(|r| r.display.as_deref()),
        Some("South Wing, second floor")
    );
    let start = a.start.as_ref().map(Instant::value).unwrap();
    assert_eq!(start.to_rfc3339(), "2013-12-10T09:00:00+00:00");
    assert_eq!(
        a.end.as_ref().map(Instant::as_str),
        Some("2013-12-10T11:00:00Z")
    );
    assert!(a
        .appointment_type
        .as_ref()
        .unwrap()
        .has_code("http://terminology.hl7.org/CodeSystem/v2-0276", "FOLLOWUP"));
    assert_eq!(a.service_type[0].label(), Some("General Discussion"));
    assert_eq!(
        a.description.as_deref(),
        Some("Discussion on the results of your recent MRI")
    );
    assert_eq!(a.created.as_ref().map(DateTime::as_str), Some("2013-10-10"));
}

#[test]
fn appointment_two_doctors() {
    let a: Appointment = parse("appointment-example2doctors.json");
    assert_eq!(a.id.as_deref(), Some("2docs"));
    assert_eq!(a.status, AppointmentStatus::Booked);
    assert_eq!(a.participant.len(), 4);
    let docs: Vec<_> = a
        .practitioner_refs()
        .iter()
        .filter_map(|r| r.reference.as_deref())
        .collect();
    assert_eq!(docs, ["Practitioner/example", "Practitioner/f202"]);
    assert!(a.location_ref().is_none());
    assert_eq!(
        a.appointment_type
            .as_ref()
            .and_then(|t| t.code_in("http://terminology.hl7.org/CodeSystem/v2-0276")),
        Some("WALKIN")
    );
}

#[test]
fn bundle_transaction() {
    let b: Bundle = parse("bundle-transaction.json");
    assert_eq!(b.type_, BundleType::Transaction);
    assert_eq!(b.entry.len(), 10);
    let methods: Vec<_> = b
        .entry
        .iter()
        .map(|e| e.request.as_ref().unwrap().method)
        .collect();
    assert_eq!(
        methods,
        [
            HttpVerb::Post,
            HttpVerb::Post,
            HttpVerb::Put,
            HttpVerb::Put,
            HttpVerb::Put,
            HttpVerb::Delete,
            HttpVerb::Delete,
            HttpVerb::Post,
            HttpVerb::Get,
            HttpVerb::Get
        ]
    );
    assert_eq!(
        b.entry[4].request.as_ref().unwrap().if_match.as_deref(),
        Some("W/\"2\"")
    );
    // Resolution by urn:uuid, by absolute fullUrl, by Type/id.
    let by_uuid = b
        .resolve(&Reference::to(
            "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
        ))
        .and_then(Resource::as_type::<Patient>)
        .unwrap();
    assert_eq!(by_uuid.identifier[0].value.as_deref(), Some("234234"));
    let by_url = b.resolve(&Reference::to("http://example.org/fhir/Patient/123"));
    assert_eq!(by_url.and_then(Resource::id), Some("123"));
    let by_rel = b.resolve(&Reference::to("Patient/123a"));
    assert_eq!(by_rel.and_then(Resource::id), Some("123a"));
    assert!(b.resolve(&Reference::to("Patient/234")).is_none());
    assert!(b.resolve(&Reference::to("urn:uuid:nope")).is_none());
    // The Parameters entry with valueCoding.
    let p = b.entry[7]
        .resource
        .as_ref()
        .and_then(Resource::as_type::<Parameters>)
        .unwrap();
    assert_eq!(
        p.get("coding")
            .and_then(|x| x.value_coding.as_ref())
            .and_then(|c| c.code.as_deref()),
        Some("1963-8")
    );
    let patient: &Patient = b.entry[0].resource.as_ref().unwrap().as_type().unwrap();
    assert_eq!(patient.gender, Some(AdministrativeGender::Male));
    assert_eq!(
        patient.display_name().as_deref(),
        Some("Peter James Chalmers")
    );
}

#[test]
fn communication() {
    let c: Communication = parse("communication-example.json");
    assert_eq!(c.status, EventStatus::Completed);
    assert_eq!(
        c.subject.as_ref().unwrap().reference.as_deref(),
        Some("Patient/example")
    );
    assert_eq!(
        c.sent
            .as_ref()
            .and_then(DateTime::as_instant)
            .unwrap()
            .to_rfc3339(),
        "2014-12-12T18:01:10-08:00"
    );
    assert!(c.payload[0]
        .content_string
        .as_deref()
        .unwrap()
        .starts_with("Patient 1 has a very high serum potassium"));
    assert_eq!(
        c.payload[1]
            .content_reference
            .as_ref()
            .unwrap()
            .display
            .as_deref(),
        Some("Serum Potassium Observation")
    );
}

#[test]
fn diagnostic_report_gingival_mass_pdf_with_whitespace() {
    let r: DiagnosticReport = parse("diagnosticreport-example-gingival-mass.json");
    assert_eq!(r.status, DiagnosticReportStatus::Final);
    assert_eq!(r.identifier[0].value.as_deref(), Some("P73456090"));
    assert_eq!(
        r.issued.as_ref().map(Instant::as_str),
        Some("2017-03-15T08:13:08Z")
    );
    assert!(matches!(r.effective(), Some(Effective::DateTime(d)) if d.as_str() == "2017-03-02"));
    assert!(r.presented_form[0].data.as_deref().unwrap().contains(' '));
    let pdfs = r.pdfs().unwrap();
    assert_eq!(pdfs.len(), 1);
    assert_eq!(pdfs[0].path, "DiagnosticReport.presentedForm[0]");
    let PdfSource::Inline(bytes) = &pdfs[0].source else {
        panic!("expected inline PDF")
    };
    assert!(bytes.starts_with(b"%PDF-1.7"));
    assert!(bytes.len() > 100_000);
    assert!(pdfs[0]
        .title
        .as_deref()
        .unwrap()
        .starts_with("LAB ID: P73456090"));
}

#[test]
fn diagnostic_report_pgx_placeholder_is_not_a_pdf() {
    let r: DiagnosticReport = parse("diagnosticreport-example-pgx.json");
    assert_eq!(r.status, DiagnosticReportStatus::Final);
    assert_eq!(r.code.text.as_deref(), Some("Pharmacogenetics Report"));
    assert_eq!(
        r.subject.as_ref().unwrap().reference.as_deref(),
        Some("Patient/899962")
    );
    assert_eq!(
        r.result[0].reference.as_deref(),
        Some("Observation/example-phenotype")
    );
    // The example's data is base64 of "pdfInBase64Binary", not a PDF.
    assert_eq!(
        r.presented_form[0].decoded_data().unwrap().as_deref(),
        Some(&b"pdfInBase64Binary"[..])
    );
    let err = r.pdfs().unwrap_err();
    assert!(
        matches!(&err, FhirError::NotPdf { path } if path == "DiagnosticReport.presentedForm[0]")
    );
    assert!(err.to_string().contains("%PDF-"));
}

#[test]
fn document_reference() {
    let d: DocumentReference = parse("documentreference-example.json");
    assert_eq!(d.status, DocumentReferenceStatus::Current);
    assert!(d
        .type_
        .as_ref()
        .unwrap()
        .has_code("http://loinc.org", "34108-1"));
    assert_eq!(
        d.subject.as_ref().unwrap().reference.as_deref(),
        Some("Patient/xcda")
    );
    assert_eq!(
        d.date.as_ref().map(Instant::as_str),
        Some("2005-12-24T09:43:41+11:00")
    );
    let att = &d.content[0].attachment;
    assert_eq!(att.content_type.as_deref(), Some("application/hl7-v3+xml"));
    assert_eq!(att.size, Some(3654));
    assert_eq!(att.hash.as_deref(), Some("2jmj7l5rSw0yVb/vlWAYkK/YBwk="));
    // Not a PDF: no PDFs reported, no error.
    assert!(d.pdfs().unwrap().is_empty());
    // Declared as a PDF by URL, it is reported as a URL.
    let mut pdf = d.clone();
    pdf.content[0].attachment.content_type = Some("application/pdf".into());
    let found = pdf.pdfs().unwrap();
    assert_eq!(
        found[0].source,
        PdfSource::Url(
            "http://example.org/xds/mhd/Binary/07a6483f-732b-461e-86b6-edb665c45510".into()
        )
    );
}

#[test]
fn encounter() {
    let e: Encounter = parse("encounter-example.json");
    assert_eq!(e.status, EncounterStatus::InProgress);
    assert_eq!(
        e.class.as_ref().and_then(|c| c.code.as_deref()),
        Some("IMP")
    );
    assert_eq!(
        e.subject.as_ref().unwrap().reference.as_deref(),
        Some("Patient/example")
    );
}

#[test]
fn medication_request() {
    let m: MedicationRequest = parse("medicationrequest0301.json");
    assert_eq!(m.status, MedicationRequestStatus::Completed);
    assert_eq!(m.intent, MedicationRequestIntent::Order);
    assert!(
        matches!(m.medication(), Some(Medication::Reference(r)) if r.reference.as_deref() == Some("#med0310"))
    );
    assert_eq!(
        m.subject.as_ref().unwrap().display.as_deref(),
        Some("Donald Duck")
    );
    assert_eq!(
        m.dosage_instruction[0].text.as_deref(),
        Some("one to two tablets every 4-6 hours as needed for rib pain")
    );
    assert_eq!(
        m.authored_on.as_ref().map(DateTime::as_str),
        Some("2015-01-15")
    );
}

#[test]
fn patient_phones() {
    let p: Patient = parse("patient-example.json");
    assert_eq!(p.telecom.len(), 4);
    assert_eq!(p.telecom[1].system, Some(ContactPointSystem::Phone));
    assert_eq!(p.telecom[1].use_, Some(ContactPointUse::Work));
    assert_eq!(p.telecom[1].rank, Some(1));
    // use=mobile wins over the better-ranked work phone; the old number is never chosen.
    assert_eq!(p.mobile(), Some("(03) 3410 5613"));
    assert_eq!(p.birth_date.as_ref().map(Date::as_str), Some("1974-12-25"));
    assert_eq!(p.gender, Some(AdministrativeGender::Male));
    assert_eq!(p.identifier[0].value.as_deref(), Some("12345"));
    assert_eq!(p.name[0].family.as_deref(), Some("Chalmers"));
    assert_eq!(p.name[0].given, ["Peter", "James"]);
    assert!(p.preferred_language().is_none());

    // Without a mobile: lowest-ranked phone.
    let mut q = p.clone();
    q.telecom
        .retain(|t| t.use_ != Some(ContactPointUse::Mobile));
    assert_eq!(q.mobile(), Some("(03) 5555 6473"));
    // Only the old number left: nothing.
    q.telecom.retain(|t| t.use_ == Some(ContactPointUse::Old));
    assert_eq!(q.mobile(), None);
}

#[test]
fn patient_mobile_rank_and_language() {
    let p: Patient = serde_json::from_value(json!({
        "telecom": [
            {"system": "email", "value": "a@b.c"},
            {"system": "phone", "value": "+91 98765 00001", "use": "mobile", "rank": 3},
            {"system": "sms", "value": "+919876500002", "rank": 2},
            {"system": "phone", "value": "+91 80 1234 5678", "use": "home", "rank": 1}
        ],
        "communication": [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-IN"}]}},
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "hi"}]}, "preferred": true}
        ]
    }))
    .unwrap();
    assert_eq!(p.mobile(), Some("+919876500002"));
    assert_eq!(p.preferred_language(), Some("hi"));
}

#[test]
fn invalid_status_codes_name_the_path() {
    let mut v: Value = serde_json::from_slice(&fixture("appointment-example.json")).unwrap();
    v["status"] = json!("confirmed");
    let err = Resource::from_value(v).unwrap_err();
    match &err {
        FhirError::Invalid {
            resource_type,
            path,
            message,
        } => {
            assert_eq!(resource_type, "Appointment");
            assert_eq!(path, "Appointment.status");
            assert!(message.contains("confirmed"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }

    let mut v: Value = serde_json::from_slice(&fixture("appointment-example.json")).unwrap();
    v["participant"][1]["status"] = json!("maybe");
    let err = Resource::from_value(v).unwrap_err();
    assert!(
        matches!(&err, FhirError::Invalid { path, .. } if path == "Appointment.participant[1].status"),
        "{err}"
    );

    let mut v: Value =
        serde_json::from_slice(&fixture("diagnosticreport-example-pgx.json")).unwrap();
    v["status"] = json!("done");
    let err = Resource::from_value(v).unwrap_err();
    assert!(
        matches!(&err, FhirError::Invalid { path, .. } if path == "DiagnosticReport.status"),
        "{err}"
    );

    let mut v: Value = serde_json::from_slice(&fixture("encounter-example.json")).unwrap();
    v["status"] = json!("completed"); // R5 code, not R4
    let err = Resource::from_value(v).unwrap_err();
    assert!(
        matches!(&err, FhirError::Invalid { path, .. } if path == "Encounter.status"),
        "{err}"
    );

    // Inside a Bundle: both the entry path and the inner path are named.
    let mut v: Value = serde_json::from_slice(&fixture("bundle-transaction.json")).unwrap();
    v["entry"][2]["resource"]["gender"] = json!("m");
    let err = Resource::from_value(v).unwrap_err().to_string();
    assert!(err.contains("Bundle.entry[2].resource"), "{err}");
    assert!(err.contains("Patient.gender"), "{err}");

    // Missing required status.
    let err = parse_resource(br#"{"resourceType":"Appointment","participant":[]}"#).unwrap_err();
    assert!(err.to_string().contains("status"), "{err}");

    // Instants need an offset.
    let err = parse_resource(
        br#"{"resourceType":"Appointment","status":"booked","start":"2024-01-01T10:00:00"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(&err, FhirError::Invalid { path, .. } if path == "Appointment.start"),
        "{err}"
    );
}

#[test]
fn unknown_types_are_kept_raw_and_wrong_types_are_errors() {
    let raw = br#"{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":7.2}}"#;
    let r = parse_resource(raw).unwrap();
    assert_eq!(r.resource_type(), "Observation");
    assert_eq!(r.id(), Some("o1"));
    assert!(matches!(&r, Resource::Other(v) if v["valueQuantity"]["value"] == json!(7.2)));
    let back: Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    assert_eq!(back, serde_json::from_slice::<Value>(raw).unwrap());

    let err = parse_as::<Patient>(&fixture("encounter-example.json")).unwrap_err();
    assert!(matches!(err, FhirError::WrongResourceType { .. }));
    assert!(matches!(
        parse_resource(b"[1,2]"),
        Err(FhirError::NotAResource(_))
    ));
    assert!(matches!(
        parse_resource(b"{\"id\":1}"),
        Err(FhirError::NotAResource(_))
    ));
    assert!(matches!(parse_resource(b"{"), Err(FhirError::Json(_))));
}

/// Every key the model writes back exists in the original with an equal value (except where the
/// model normalises: the R5 Encounter.class array becomes an R4 Coding).
fn assert_subset(out: &Value, orig: &Value, path: &str) {
    match (out, orig) {
        (Value::Object(o), Value::Object(i)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                if k == "class" && i.get(k).is_some_and(Value::is_array) {
                    continue;
                }
                let iv = i
                    .get(k)
                    .unwrap_or_else(|| panic!("{p} not in the original"));
                assert_subset(v, iv, &p);
            }
        }
        (Value::Array(o), Value::Array(i)) => {
            assert_eq!(o.len(), i.len(), "{path} length");
            for (n, (a, b)) in o.iter().zip(i).enumerate() {
                assert_subset(a, b, &format!("{path}[{n}]"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn round_trip_serialize_parse_on_all_fixtures() {
    for name in ALL {
        let bytes = fixture(name);
        let parsed = parse_resource(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = parsed.to_json().unwrap();
        let reparsed = parse_resource(&out).unwrap_or_else(|e| panic!("{name} (reparse): {e}"));
        assert_eq!(
            parsed, reparsed,
            "{name}: parse ∘ serialize ∘ parse differs"
        );
        // Idempotent: serialising again gives the same bytes.
        assert_eq!(out, reparsed.to_json().unwrap(), "{name}");
        let orig: Value = serde_json::from_slice(&bytes).unwrap();
        let out_v: Value = serde_json::from_slice(&out).unwrap();
        assert_subset(&out_v, &orig, name);
    }
}

#[test]
fn json_patch_for_appointment_cancel() {
    let p = JsonPatch::cancel_appointment_by_patient(
        AppointmentStatus::Booked,
        Some("Patient cancelled on WhatsApp"),
    );
    let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(
        v,
        json!([
            {"op": "test", "path": "/status", "value": "booked"},
            {"op": "replace", "path": "/status", "value": "cancelled"},
            {"op": "add", "path": "/cancelationReason", "value": {
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                    "code": "pat",
                    "display": "Patient"
                }],
                "text": "Patient cancelled on WhatsApp"
            }}
        ])
    );
    assert_eq!(p.content_type(), "application/json-patch+json");
    let back: JsonPatch = serde_json::from_value(v).unwrap();
    assert_eq!(back, p);
    // The added value is a valid cancelationReason.
    let mut a: Value = serde_json::from_slice(&fixture("appointment-example.json")).unwrap();
    if let PatchOp::Add { value, .. } = &p.0[2] {
        a["cancelationReason"] = value.clone();
    }
    a["status"] = json!("cancelled");
    let a: Appointment = Resource::from_value(a).unwrap().into_type().unwrap();
    assert!(a
        .cancelation_reason
        .unwrap()
        .has_code(patch::CANCELLATION_REASON_SYSTEM, "pat"));
    assert_eq!(patch::pointer_token("a/b~c"), "a~1b~0c");
    let confirm = JsonPatch::appointment_status(None, AppointmentStatus::Arrived);
    assert_eq!(confirm.0.len(), 1);
}

#[test]
fn operation_outcome_and_capability_statement() {
    let err = parse_resource(br#"{"resourceType":"Appointment","status":"nope"}"#).unwrap_err();
    let oo = OperationOutcome::from_error(&err);
    assert!(oo.is_error());
    assert_eq!(oo.issue[0].code, IssueType::Invalid);
    assert_eq!(oo.issue[0].expression, ["Appointment.status"]);
    let v = Resource::OperationOutcome(Box::new(oo.clone()))
        .to_value()
        .unwrap();
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(v["issue"][0]["severity"], "error");
    let nf = OperationOutcome::not_found("Appointment", "42");
    assert_eq!(nf.summary(), "error not-found: Appointment/42 is not known");

    let cs = CapabilityStatement::minimal(
        "Clinic Gateway",
        "0.1.0",
        Some("https://gw.example/fhir/r4"),
        DateTime::parse("2025-01-01").unwrap(),
        &[
            ("Appointment", &["update", "patch"]),
            ("Bundle", &["create"]),
        ],
    );
    let v = Resource::CapabilityStatement(Box::new(cs))
        .to_value()
        .unwrap();
    assert_eq!(v["resourceType"], "CapabilityStatement");
    assert_eq!(v["fhirVersion"], "4.0.1");
    assert_eq!(v["kind"], "instance");
    assert_eq!(v["format"], json!(["json"]));
    assert_eq!(
        v["rest"][0]["resource"][0]["interaction"][1]["code"],
        "patch"
    );
    let again = Resource::from_value(v).unwrap();
    assert_eq!(again.resource_type(), "CapabilityStatement");
}

#[test]
fn attachment_base64_with_whitespace_and_errors() {
    let a = Attachment {
        content_type: Some("application/pdf; charset=binary".into()),
        data: Some("JVBE\r\nRi0x\tLjQK ".into()),
        ..Attachment::default()
    };
    assert_eq!(a.decoded_data().unwrap().unwrap(), b"%PDF-1.4\n");
    assert!(a.pdf_at("X").unwrap().is_some());
    let bad = Attachment {
        content_type: Some("application/pdf".into()),
        data: Some("###".into()),
        ..Attachment::default()
    };
    assert!(
        matches!(bad.pdf_at("DocumentReference.content[0].attachment"),
        Err(FhirError::InvalidBase64 { path, .. }) if path == "DocumentReference.content[0].attachment.data")
    );
    let empty = Attachment {
        content_type: Some("application/pdf".into()),
        ..Attachment::default()
    };
    assert!(matches!(
        empty.pdf_at("P"),
        Err(FhirError::EmptyAttachment { .. })
    ));
}

#[test]
fn references() {
    let r = Reference::to("https://emr.example/fhir/Patient/p1/_history/3");
    assert_eq!(r.type_and_id(), Some(("Patient", "p1")));
    assert_eq!(
        Reference::to("Practitioner/x").target_type(),
        Some("Practitioner")
    );
    assert_eq!(Reference::to("urn:uuid:1234").type_and_id(), None);
    assert_eq!(Reference::to("#contained").type_and_id(), None);
    let typed = Reference {
        type_: Some("Location".into()),
        ..Reference::default()
    };
    assert_eq!(typed.target_type(), Some("Location"));
}
