mod common;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Asia::Kolkata;
use common::*;
use hl7_v2::views::{
    AdtEvent, AdtMessage, Appointment, DocumentError, Header, LabReport, MdmEvent, MedicalDocument,
    Patient, ResultStatus, SiuEvent, ViewError,
};
use hl7_v2::{parse, Precision, TimestampError};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn header_fields() {
    let msg = parse(siu_s12().as_bytes()).unwrap();
    let h = Header::from_message(&msg).unwrap();
    assert!(h.is("SIU", "S12"));
    assert_eq!(h.structure.as_deref(), Some("SIU_S12"));
    assert_eq!(h.control_id.as_deref(), Some("MSG00001"));
    assert_eq!(h.version.as_deref(), Some("2.5.1"));
    assert_eq!(h.sending_application.unwrap().key(), Some("PRACTO_EMR"));
    assert_eq!(h.sending_facility.unwrap().key(), Some("SUNRISE_BLR"));
}

#[test]
fn siu_s12_from_an_indian_clinic() {
    let msg = parse(siu_s12().as_bytes()).unwrap();
    let a = Appointment::from_message(&msg, Kolkata).unwrap();
    assert_eq!(a.event, SiuEvent::Booked);
    assert_eq!(a.id(), Some("FL12345"));
    assert_eq!(a.placer_id.as_deref(), Some("PL778"));
    let start = a.start.unwrap();
    assert_eq!(start.utc, utc("2024-03-22T05:00:00Z"));
    assert_eq!(start.precision, Precision::Minute);
    assert_eq!(a.end.unwrap().utc, utc("2024-03-22T05:20:00Z"));
    assert_eq!(a.duration, Some(Duration::minutes(20)));
    assert_eq!(a.reason.unwrap().display(), Some("Knee pain follow-up"));
    assert_eq!(
        a.appointment_type.unwrap().identifier.as_deref(),
        Some("FOLLOWUP")
    );
    assert_eq!(
        a.event_reason.unwrap().identifier.as_deref(),
        Some("ROUTINE")
    );
    assert_eq!(a.status.unwrap().identifier.as_deref(), Some("Booked"));
    let doctor = a.doctor.unwrap();
    assert_eq!(doctor.id.as_deref(), Some("DOC123"));
    assert_eq!(doctor.name.unwrap().display(), "Dr Anil Rao");
    let loc = a.location.unwrap();
    assert_eq!(loc.point_of_care.as_deref(), Some("OPD-2"));
    assert_eq!(loc.room.as_deref(), Some("Room 5"));
    assert_eq!(loc.facility.unwrap().key(), Some("SUNRISE"));
    assert_eq!(loc.description.as_deref(), Some("Orthopaedics OPD"));

    let p = a.patient.unwrap();
    assert_eq!(p.primary_identifier().unwrap().id, "MRN-99812");
    assert_eq!(p.name.as_ref().unwrap().family.as_deref(), Some("Sharma"));
    assert_eq!(p.language_code(), Some("hi"));
    let numbers: Vec<_> = p.phones.iter().map(|ph| ph.number.clone()).collect();
    assert_eq!(
        numbers,
        [
            Some("08041234567".to_string()),
            None,
            Some("+919845067890".to_string()),
            Some("+919845012345".to_string()),
            Some("+919845011111".to_string()),
        ]
    );
    assert_eq!(p.phones[1].email.as_deref(), Some("priya@example.in"));
    // Mobile with a residence use code wins: ORN CP (5+6+7) comes first in PID-13.
    assert_eq!(p.mobile().unwrap().number.as_deref(), Some("+919845067890"));
}

#[test]
fn siu_start_fallbacks_and_duration() {
    let base = |sch: String, extra: Vec<String>| {
        let mut segs = vec![msh("EMR", "C1", "SIU^S13", "2", "2.3"), sch];
        segs.extend(extra);
        parse(message(&segs).as_bytes()).unwrap()
    };
    // SCH-11.4 only (v2.3 TS with a degree-of-precision sub-component).
    let msg = base(
        seg(
            "SCH",
            &[(1, "P1"), (9, "1"), (10, "HR"), (11, "^^^20240401093000&S")],
        ),
        vec![],
    );
    let a = Appointment::from_message(&msg, Kolkata).unwrap();
    assert_eq!(a.event, SiuEvent::Rescheduled);
    assert_eq!(a.id(), Some("P1"));
    assert_eq!(a.start.unwrap().utc, utc("2024-04-01T04:00:00Z"));
    assert_eq!(a.end.unwrap().utc, utc("2024-04-01T05:00:00Z"));
    // Only AIS-4 / AIS-7/8.
    let msg = base(
        seg("SCH", &[(2, "F9")]),
        vec![seg(
            "AIS",
            &[(1, "1"), (4, "202404011000+0000"), (7, "15"), (8, "min")],
        )],
    );
    let a = Appointment::from_message(&msg, Kolkata).unwrap();
    assert_eq!(a.start.unwrap().utc, utc("2024-04-01T10:00:00Z"));
    assert_eq!(a.end.unwrap().utc, utc("2024-04-01T10:15:00Z"));
    // Only AIP-6; no PID at all.
    let msg = base(
        seg("SCH", &[(2, "F9")]),
        vec![seg("AIP", &[(1, "1"), (3, "D1^Das"), (6, "20240401")])],
    );
    let a = Appointment::from_message(&msg, Kolkata).unwrap();
    assert_eq!(a.start.unwrap().precision, Precision::Day);
    assert_eq!(a.end, None);
    assert_eq!(a.patient, None);
    assert_eq!(
        a.doctor.unwrap().name.unwrap().family.as_deref(),
        Some("Das")
    );
}

#[test]
fn siu_errors_point_at_the_field() {
    let msg = parse(
        message(&[
            msh("EMR", "C1", "SIU^S12", "2", "2.5"),
            seg("SCH", &[(1, "P1"), (11, "^^^2024-04-01")]),
        ])
        .as_bytes(),
    )
    .unwrap();
    let err = Appointment::from_message(&msg, Kolkata).unwrap_err();
    assert!(matches!(
        err,
        ViewError::Timestamp {
            source: TimestampError::Malformed { .. },
            ..
        }
    ));
    assert_eq!(err.location().unwrap().to_string(), "SCH-11.4");
    let msg = parse(message(&[msh("EMR", "C1", "SIU^S12", "2", "2.5")]).as_bytes()).unwrap();
    assert_eq!(
        Appointment::from_message(&msg, Kolkata).unwrap_err(),
        ViewError::MissingSegment { segment: "SCH" }
    );
    let msg = parse(adt_a03().as_bytes()).unwrap();
    assert!(matches!(
        Appointment::from_message(&msg, Kolkata),
        Err(ViewError::WrongMessageType { .. })
    ));
}

#[test]
fn oru_r01_with_pdf_split_over_two_obx() {
    let pdf = minimal_pdf();
    let msg = parse(oru_r01(&pdf, "F").as_bytes()).unwrap();
    let r = LabReport::from_message(&msg, Kolkata).unwrap();
    assert_eq!(r.result_status(), Some(&ResultStatus::Final));
    assert_eq!(r.orders.len(), 1);
    let order = &r.orders[0];
    assert_eq!(order.filler_order.as_deref(), Some("FIL1"));
    assert_eq!(
        order.service.as_ref().unwrap().identifier.as_deref(),
        Some("CBC")
    );
    assert_eq!(order.observed_at.unwrap().utc, utc("2024-03-16T03:00:00Z"));
    assert_eq!(order.documents.len(), 1);
    let doc = order.documents[0].as_ref().unwrap();
    assert_eq!(doc.parts, 2);
    assert_eq!(doc.bytes, pdf);
    assert!(doc.is_pdf());
    assert_eq!(doc.location.to_string(), "OBX[2]-5");
    assert_eq!(r.pdfs().count(), 1);
    assert_eq!(order.references[0].pointer, "https://lab.example.in/r/1");
    let p = r.patient.unwrap();
    assert_eq!(p.mobile().unwrap().number.as_deref(), Some("+919876543210"));

    for (code, status) in [
        ("C", ResultStatus::Corrected),
        ("P", ResultStatus::Preliminary),
        ("X", ResultStatus::Other("X".into())),
    ] {
        let msg = parse(oru_r01(&pdf, code).as_bytes()).unwrap();
        assert_eq!(
            LabReport::from_message(&msg, Kolkata)
                .unwrap()
                .result_status(),
            Some(&status)
        );
    }
}

#[test]
fn oru_document_errors() {
    let obx = |n: &str, sub: &str, ed: &str| {
        seg(
            "OBX",
            &[(1, n), (2, "ED"), (3, "PDF^Report"), (4, sub), (5, ed)],
        )
    };
    let raw = message(&[
        msh("LIS", "L", "ORU^R01", "9", "2.5"),
        seg("OBR", &[(1, "1"), (25, "F")]),
        // Not a PDF although declared as one.
        obx("1", "", &format!("^AP^PDF^Base64^{}", b64(b"hello"))),
        // Invalid base64.
        seg(
            "OBX",
            &[(1, "2"), (2, "ED"), (3, "DOC2"), (5, "^AP^PDF^Base64^!!!!")],
        ),
        // Unknown encoding.
        seg(
            "OBX",
            &[(1, "3"), (2, "ED"), (3, "DOC3"), (5, "^AP^PDF^Q^abc")],
        ),
        // Empty data.
        seg(
            "OBX",
            &[(1, "4"), (2, "ED"), (3, "DOC4"), (5, "^AP^PDF^Base64^")],
        ),
    ]);
    let r = LabReport::from_message(&parse(raw.as_bytes()).unwrap(), Kolkata).unwrap();
    let errs: Vec<_> = r.orders[0]
        .documents
        .iter()
        .map(|d| d.as_ref().unwrap_err().clone())
        .collect();
    assert!(matches!(errs[0], DocumentError::NotPdf { .. }));
    assert!(matches!(errs[1], DocumentError::Undecodable { .. }));
    assert!(matches!(errs[2], DocumentError::UnsupportedEncoding { .. }));
    assert!(matches!(errs[3], DocumentError::Empty { .. }));
    assert_eq!(errs[1].location().to_string(), "OBX[2]-5");
}

#[test]
fn separately_padded_parts_and_same_code_restarts() {
    let pdf = minimal_pdf();
    let (a, b) = pdf.split_at(101); // 101 bytes: the first part's base64 ends in padding
    let obx = |n: &str, sub: &str, data: &str| {
        seg(
            "OBX",
            &[
                (1, n),
                (2, "ED"),
                (3, "PDF^Report"),
                (4, sub),
                (5, &format!("^application^pdf^Base64^{data}")),
            ],
        )
    };
    let raw = message(&[
        msh("LIS", "L", "ORU^R01", "9", "2.5"),
        seg("OBR", &[(1, "1"), (25, "F")]),
        obx("1", "1", &b64(a)),
        obx("2", "2", &b64(b)),
        // Same code, sub-id not increasing: a second document.
        obx("3", "1", &b64(&pdf)),
    ]);
    let r = LabReport::from_message(&parse(raw.as_bytes()).unwrap(), Kolkata).unwrap();
    let docs: Vec<_> = r.pdfs().collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].bytes, pdf);
    assert_eq!(docs[0].parts, 2);
    assert_eq!(docs[1].bytes, pdf);
}

#[test]
fn mdm_t02_prescription() {
    let pdf = minimal_pdf();
    let msg = parse(mdm_t02(&pdf).as_bytes()).unwrap();
    let d = MedicalDocument::from_message(&msg, Kolkata).unwrap();
    assert_eq!(d.event, MdmEvent::Original);
    assert_eq!(d.document_type.as_deref(), Some("RX"));
    assert_eq!(d.document_number.as_deref(), Some("RX-2024-001"));
    assert_eq!(d.completion_status.as_deref(), Some("AU"));
    assert_eq!(d.activity_at.unwrap().utc, utc("2024-03-20T06:25:00Z"));
    let docs: Vec<_> = d.pdfs().collect();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].bytes, pdf);
    assert_eq!(docs[0].type_of_data.as_deref(), Some("application"));
    let p = d.patient.unwrap();
    assert_eq!(p.mobile().unwrap().number.as_deref(), Some("9845012345"));
}

#[test]
fn adt_a03_discharge() {
    let msg = parse(adt_a03().as_bytes()).unwrap();
    let a = AdtMessage::from_message(&msg, Kolkata).unwrap();
    assert_eq!(a.event, AdtEvent::Discharge);
    assert_eq!(a.event_reason.unwrap().display(), Some("Discharged home"));
    let v = a.visit.unwrap();
    assert_eq!(v.patient_class.as_deref(), Some("O"));
    assert_eq!(v.visit_number.as_deref(), Some("V-2024-889"));
    assert_eq!(v.hospital_service.as_deref(), Some("MED"));
    assert_eq!(
        v.attending.unwrap().name.unwrap().display(),
        "Dr Lakshmi Menon"
    );
    assert_eq!(v.discharged_at.unwrap().utc, utc("2024-03-21T12:15:00Z"));
    assert_eq!(v.admitted_at.unwrap().utc, utc("2024-03-21T04:00:00Z"));
    assert_eq!(v.location.unwrap().point_of_care.as_deref(), Some("OPD"));
    let p = a.patient.unwrap();
    assert_eq!(p.mobile(), None);
    assert_eq!(
        p.best_phone().unwrap().number.as_deref(),
        Some("09876543210")
    );
}

#[test]
fn adt_a04_a08_without_pid_or_pv1() {
    for (trigger, event) in [
        ("A04", AdtEvent::Registration),
        ("A08", AdtEvent::Update),
        ("A31", AdtEvent::Other("A31".into())),
    ] {
        let raw = message(&[msh("HIS", "H", &format!("ADT^{trigger}"), "1", "2.5")]);
        let a = AdtMessage::from_message(&parse(raw.as_bytes()).unwrap(), Kolkata).unwrap();
        assert_eq!(a.event, event);
        assert_eq!(a.patient, None);
        assert_eq!(a.visit, None);
    }
}

#[test]
fn patient_identifier_without_mr_and_null_values() {
    let raw = message(&[
        msh("HIS", "H", "ADT^A08", "1", "2.5"),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "X1^^^A^PI~X2^^^B^AN"),
                (5, "\"\"^Anu"),
                (13, "\"\"~^PRN^CP^^^^"),
            ],
        ),
    ]);
    let p = Patient::from_message(&parse(raw.as_bytes()).unwrap()).unwrap();
    assert_eq!(p.primary_identifier().unwrap().id, "X1");
    assert_eq!(p.name.unwrap().family, None);
    assert!(p.phones.is_empty());
}
