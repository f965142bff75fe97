use base64::Engine;
use serde_json::json;

use super::*;
use crate::tenants::model::{ClinicLocation, Doctor};

fn clinic() -> ClinicSettings {
    let config: crate::config::ClinicConfig = serde_json::from_value(json!({
        "id": "c", "name": "Sunrise Clinic", "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
        "numbers": [{"phone_number_id": "1", "tier_mps": 80}]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
    let mut c = crate::tenants::bootstrap::clinic_from_config(&config, &settings);
    c.locations = vec![ClinicLocation {
        name: "MG Road".into(),
        address: "12 MG Road".into(),
        latitude: 12.97,
        longitude: 77.6,
    }];
    c.doctors = vec![Doctor {
        id: "D7".into(),
        name: "Dr. Meera Rao".into(),
    }];
    c
}

fn link() -> Hl7Link {
    Hl7Link {
        sending_application: "EMR".into(),
        ..Hl7Link::default()
    }
}

fn parse(segments: &[&str]) -> (Message, Header) {
    let raw: String = segments.iter().map(|s| format!("{s}\r")).collect();
    let msg = hl7_v2::parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let header = Header::from_message(&msg).unwrap_or_else(|e| panic!("{e}"));
    (msg, header)
}

fn run(segments: &[&str]) -> Result<Action, Refusal> {
    let (msg, header) = parse(segments);
    map(&msg, &header, &clinic(), &link())
}

fn msh(kind: &str) -> String {
    format!("MSH|^~\\&|EMR|SUNRISE|GW|GW|20300101090000||{kind}|C1|P|2.5.1")
}

const PID: &str = "PID|1||MRN-1^^^SUN^MR||Sharma^Priya^K^^Mrs||19880412|F|||||^WPN^PH^^^080^41234567~^PRN^CP^^^^^^^^^98450 67890||hin";

fn siu(kind: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        msh(kind),
        "SCH|P-1|F-9|||||^Checkup|FOLLOWUP|30|MIN|^^30^20300115103000^20300115110000||||||||||||||Booked".to_owned(),
    ];
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

/// A segment with (field number, value) pairs (not for MSH).
fn seg(id: &str, fields: &[(usize, &str)]) -> String {
    let max = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut v = vec![String::new(); max];
    for (n, value) in fields {
        v[n - 1] = (*value).to_owned();
    }
    format!("{id}|{}", v.join("|"))
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{e}"))
        .timestamp_millis()
}

#[test]
fn s12_books_with_local_time_doctor_location_and_mobile() {
    let m = siu(
        "SIU^S12^SIU_S12",
        &[PID, "AIL|1||MG Road^^^SUNRISE", "AIP|1||D7^Rao^Meera^^^Dr"],
    );
    let Ok(Action::Book(b)) = run(&refs(&m)) else {
        panic!("not a booking: {:?}", run(&refs(&m)));
    };
    assert_eq!(b.external_id.as_deref(), Some("F-9"));
    // 10:30 in Asia/Kolkata is 05:00 UTC.
    assert_eq!(b.start_ms, ms("2030-01-15T05:00:00Z"));
    assert_eq!(b.end_ms, Some(ms("2030-01-15T05:30:00Z")));
    assert_eq!(b.patient.phone.as_str(), "+919845067890");
    assert_eq!(b.patient.name, "Priya Sharma");
    assert_eq!(b.patient.language.as_deref(), Some("hi"));
    assert_eq!(b.doctor.as_deref(), Some("Dr. Meera Rao"));
    assert_eq!(b.location, Some(0));
}

#[test]
fn the_link_time_zone_wins_over_the_clinic_one() {
    let m = siu("SIU^S12", &[PID]);
    let (msg, header) = parse(&refs(&m));
    let mut l = link();
    l.time_zone = Some("UTC".into());
    let Ok(Action::Book(b)) = map(&msg, &header, &clinic(), &l) else {
        panic!("not a booking");
    };
    assert_eq!(b.start_ms, ms("2030-01-15T10:30:00Z"));
}

#[test]
fn s12_without_a_phone_or_start_is_unprocessable_and_says_where() {
    let m = siu("SIU^S12", &["PID|1||MRN-1||Sharma^Priya"]);
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.verdict, Verdict::Unprocessable);
    assert_eq!(r.code, ErrorCode::RequiredFieldMissing);
    assert_eq!(r.location.map(|l| l.to_string()).as_deref(), Some("PID-13"));

    let m = siu("SIU^S12", &[]);
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert!(r.message.contains("PID-13"), "{r}");

    let m = vec![msh("SIU^S12"), "SCH|P-1|F-9".to_owned(), PID.to_owned()];
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(
        r.location.map(|l| l.to_string()).as_deref(),
        Some("SCH-11.4")
    );
}

#[test]
fn bad_numbers_are_skipped_for_a_valid_one() {
    let m = siu(
        "SIU^S12",
        &[&seg(
            "PID",
            &[
                (1, "1"),
                (5, "Rao^Ravi"),
                (13, "12~^PRN^PH^^91^98765^43210"),
            ],
        )],
    );
    let Ok(Action::Book(b)) = run(&refs(&m)) else {
        panic!("not a booking");
    };
    assert_eq!(b.patient.phone.as_str(), "+919876543210");
    let m = siu(
        "SIU^S12",
        &[&seg("PID", &[(1, "1"), (5, "Rao^Ravi"), (13, "12")])],
    );
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert!(r.message.contains("valid"), "{r}");
}

#[test]
fn s13_s14_change_and_can_book_unknown_appointments() {
    let m = siu("SIU^S13", &[PID, "AIP|1||X1^Sen^Amit^^^Dr"]);
    let Ok(Action::Change {
        external_id,
        change,
        if_unknown,
    }) = run(&refs(&m))
    else {
        panic!("not a change");
    };
    assert_eq!(external_id, "F-9");
    assert_eq!(change.start_ms, Some(ms("2030-01-15T05:00:00Z")));
    assert_eq!(change.doctor.as_deref(), Some("Dr Amit Sen"));
    assert!(change.status.is_none());
    assert!(matches!(if_unknown, IfUnknown::Book(_)));

    // S14 without PID: a change, but it could not book an unknown appointment.
    let m = siu("SIU^S14", &[]);
    let Ok(Action::Change { if_unknown, .. }) = run(&refs(&m)) else {
        panic!("not a change");
    };
    assert!(matches!(if_unknown, IfUnknown::Refuse(r) if r.verdict == Verdict::Unprocessable));

    // S14 saying Cancelled in SCH-25 cancels.
    let m = vec![
        msh("SIU^S14"),
        "SCH|P-1|F-9|||||||||^^^20300115103000||||||||||||||Cancelled".to_owned(),
    ];
    let Ok(Action::Change { change, .. }) = run(&refs(&m)) else {
        panic!("not a change");
    };
    assert_eq!(change.status, Some(AppointmentStatus::Cancelled));
}

#[test]
fn s15_and_s26_change_status_and_ignore_unknown_ones() {
    for (kind, status) in [
        ("SIU^S15", AppointmentStatus::Cancelled),
        ("SIU^S26", AppointmentStatus::NoShow),
    ] {
        // No PID needed: the appointment is found by its id.
        let m = vec![msh(kind), "SCH||A-77".to_owned()];
        let Ok(Action::Change {
            external_id,
            change,
            if_unknown,
        }) = run(&refs(&m))
        else {
            panic!("{kind}: not a change");
        };
        assert_eq!(
            (external_id.as_str(), change.status),
            ("A-77", Some(status))
        );
        assert!(matches!(if_unknown, IfUnknown::Ignore));
    }
}

#[test]
fn siu_without_any_id_or_sch_is_refused() {
    let m = vec![msh("SIU^S15"), "SCH|||".to_owned()];
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.location.map(|l| l.to_string()).as_deref(), Some("SCH-2"));
    let m = vec![msh("SIU^S12"), PID.to_owned()];
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.verdict, Verdict::Reject);
    assert!(r.message.contains("SCH"), "{r}");
}

#[test]
fn unsupported_types_events_versions_and_processing_ids_are_rejected() {
    let cases = [
        (msh("ORM^O01"), ErrorCode::UnsupportedMessageType, "MSH-9.1"),
        (msh("SIU^S17"), ErrorCode::UnsupportedEventCode, "MSH-9.2"),
        (msh("ADT^A01"), ErrorCode::UnsupportedEventCode, "MSH-9.2"),
        (
            "MSH|^~\\&|EMR|S|GW|GW|2030||SIU^S12|1|P|3.0".to_owned(),
            ErrorCode::UnsupportedVersionId,
            "MSH-12",
        ),
        (
            "MSH|^~\\&|EMR|S|GW|GW|2030||SIU^S12|1|T|2.5".to_owned(),
            ErrorCode::UnsupportedProcessingId,
            "MSH-11",
        ),
    ];
    for (header, code, place) in cases {
        let m = vec![header.clone(), "SCH||A".to_owned(), PID.to_owned()];
        let r = run(&refs(&m))
            .err()
            .unwrap_or_else(|| panic!("{header} accepted"));
        assert_eq!((r.verdict, r.code), (Verdict::Reject, code), "{header}");
        assert_eq!(r.location.map(|l| l.to_string()).as_deref(), Some(place));
    }
    // The link can allow training messages.
    let m = siu("SIU^S12", &[PID]);
    let mut m = m;
    m[0] = "MSH|^~\\&|EMR|S|GW|GW|2030||SIU^S12|1|T|2.5".to_owned();
    let (msg, header) = parse(&refs(&m));
    let mut l = link();
    l.accept_test_messages = true;
    assert!(matches!(
        map(&msg, &header, &clinic(), &l),
        Ok(Action::Book(_))
    ));
}

#[test]
fn bad_timestamps_are_rejected_with_their_place() {
    let m = vec![
        msh("SIU^S12"),
        "SCH|P|F|||||||||^^^2030-01-15 10:30".to_owned(),
        PID.to_owned(),
    ];
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(
        (r.verdict, r.code),
        (Verdict::Reject, ErrorCode::DataTypeError)
    );
    assert_eq!(
        r.location.map(|l| l.to_string()).as_deref(),
        Some("SCH-11.4")
    );
}

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".to_vec()
}

fn oru(status: &str, data: &[u8]) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    vec![
        msh("ORU^R01^ORU_R01"),
        PID.to_owned(),
        seg(
            "OBR",
            &[
                (1, "1"),
                (2, "PL-1"),
                (3, "LAB-555"),
                (4, "CBC^Complete blood count^L"),
                (7, "20300101080000"),
                (22, "20300101090000"),
                (25, status),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "1"),
                (2, "ED"),
                (3, "PDF^Report^L"),
                (5, &format!("^AP^PDF^Base64^{b64}")),
                (11, status),
            ],
        ),
    ]
}

#[test]
fn final_and_corrected_lab_reports_are_documents_keyed_by_filler_order() {
    for status in ["F", "C"] {
        let m = oru(status, &pdf());
        let Ok(Action::Documents(docs)) = run(&refs(&m)) else {
            panic!("{status}: not documents");
        };
        assert_eq!(docs.len(), 1);
        let d = &docs[0];
        assert_eq!(d.kind, DocumentKind::LabReport);
        assert_eq!(d.external_id.as_deref(), Some("LAB-555"));
        assert_eq!(d.title.as_deref(), Some("Complete blood count"));
        assert_eq!(d.pdf, pdf());
        assert_eq!(d.patient.phone.as_str(), "+919845067890");
    }
}

#[test]
fn preliminary_reports_and_reports_without_pdf_are_ignored() {
    let m = oru("P", &pdf());
    assert!(matches!(run(&refs(&m)), Ok(Action::Ignore(_))));
    let mut m = oru("F", &pdf());
    m[3] = seg(
        "OBX",
        &[(1, "1"), (2, "NM"), (3, "HGB"), (5, "13.5"), (11, "F")],
    );
    assert!(matches!(run(&refs(&m)), Ok(Action::Ignore(_))));
}

#[test]
fn a_pdf_that_is_not_one_is_unprocessable_at_obx_5() {
    let m = oru("F", b"<html>not a pdf</html>");
    let r = run(&refs(&m)).err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(
        (r.verdict, r.code),
        (Verdict::Unprocessable, ErrorCode::DataTypeError)
    );
    assert_eq!(
        r.location.as_ref().map(|l| l.to_string()).as_deref(),
        Some("OBX-5")
    );
    assert!(r.message.contains("%PDF-"), "{r}");
}

#[test]
fn mdm_documents_by_type() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pdf());
    for (txa2, kind) in [
        ("RX", DocumentKind::Prescription),
        ("DS", DocumentKind::DischargeSummary),
        ("CN", DocumentKind::HealthRecord),
    ] {
        let m = vec![
            msh("MDM^T02^MDM_T02"),
            PID.to_owned(),
            "PV1|1|O|||||D7^Rao^Meera".to_owned(),
            seg(
                "TXA",
                &[
                    (1, "1"),
                    (2, txa2),
                    (3, "AP"),
                    (4, "20300101100000"),
                    (5, "D7^Rao^Meera"),
                    (12, "DOC-1"),
                    (17, "AU"),
                ],
            ),
            format!("OBX|1|ED|{txa2}^Document^L||^application^pdf^Base64^{b64}||||||F"),
        ];
        let Ok(Action::Documents(docs)) = run(&refs(&m)) else {
            panic!("{txa2}: not documents");
        };
        assert_eq!(docs[0].kind, kind, "{txa2}");
        assert_eq!(docs[0].external_id.as_deref(), Some("DOC-1"));
        assert_eq!(docs[0].doctor.as_deref(), Some("Dr. Meera Rao"));
    }
    // Unfinished documents wait for their final version.
    let m = vec![
        msh("MDM^T02"),
        PID.to_owned(),
        seg("TXA", &[(1, "1"), (2, "RX"), (12, "DOC-2"), (17, "IP")]),
        format!("OBX|1|ED|RX||^AP^PDF^Base64^{b64}"),
    ];
    assert!(matches!(run(&refs(&m)), Ok(Action::Ignore(_))));
}

#[test]
fn adt_a03_is_a_completed_visit_of_the_pid_3_patient() {
    let m = vec![
        msh("ADT^A03^ADT_A03"),
        "EVN|A03|20300101120000".to_owned(),
        PID.to_owned(),
        seg(
            "PV1",
            &[
                (1, "1"),
                (2, "O"),
                (3, "OPD^1^^SUNRISE"),
                (7, "D7^Rao^Meera"),
                (10, "SURGERY"),
                (19, "V-42"),
                (44, "20290101080000"),
                (45, "20290101113000"),
            ],
        ),
    ];
    let Ok(Action::Visit {
        request: v,
        patient,
    }) = run(&refs(&m))
    else {
        panic!("not a visit: {:?}", run(&refs(&m)));
    };
    assert_eq!(v.external_id.as_deref(), Some("V-42"));
    assert_eq!(v.visit_type, "SURGERY");
    assert_eq!(v.doctor.as_deref(), Some("Dr. Meera Rao"));
    assert_eq!(v.completed_ms, ms("2029-01-01T06:00:00Z"));
    assert_eq!(patient.as_deref(), Some("MRN-1"));
}

fn upsert(segments: &[&str]) -> PatientRecord {
    match run(segments) {
        Ok(Action::UpsertPatient(p)) => *p,
        other => panic!("not a patient upsert: {other:?}"),
    }
}

#[test]
fn adt_a04_a08_upsert_the_pid_patient() {
    for kind in ["ADT^A04^ADT_A01", "ADT^A08"] {
        let m = vec![msh(kind), "EVN|A04".to_owned(), PID.to_owned()];
        let p = upsert(&refs(&m));
        assert_eq!(p.external_id, "MRN-1", "{kind}");
        assert_eq!(
            p.phone.as_str(),
            "+919845067890",
            "the mobile, not the work phone"
        );
        assert_eq!(p.name, "Priya K Sharma");
        assert_eq!(p.language.as_deref(), Some("hi"));
        assert_eq!(p.birth_date, chrono::NaiveDate::from_ymd_opt(1988, 4, 12));
        assert_eq!(p.sex, Some(crate::patients::Sex::Female));
        assert_eq!(
            p.consent,
            crate::patients::Consents::default(),
            "not stated"
        );
        assert!(p.tags.is_empty() && p.last_visit_ms.is_none());
    }
    // The first PID-3 identifier, whatever its type; a mobile in PID-14 when PID-13 has none;
    // ISO 639-2 and 639-3 languages; A (ambiguous) sex.
    let pid = seg(
        "PID",
        &[
            (1, "1"),
            (3, "AB-9^^^SUN^PI~MRN-2^^^SUN^MR"),
            (5, "^Asha"),
            (7, "1970"),
            (8, "A"),
            (13, "^PRN^PH^^^080^41234567X12"),
            (14, "^WPN^CP^^^^^^^^^+91 98450 11111"),
            (15, "tam^Tamil^ISO639"),
        ],
    );
    let p = upsert(&[&msh("ADT^A08"), &pid]);
    assert_eq!(p.external_id, "AB-9");
    assert_eq!(p.phone.as_str(), "+919845011111");
    assert_eq!(p.name, "Asha");
    assert_eq!(p.language.as_deref(), Some("ta"));
    assert_eq!(p.birth_date, None, "a year alone is left out");
    assert_eq!(p.sex, Some(crate::patients::Sex::Other));
    // A birth date in the future is left out rather than refusing the patient.
    let m = PID.replace("19880412", "29990101");
    assert_eq!(upsert(&[&msh("ADT^A04"), &m]).birth_date, None);
}

#[test]
fn adt_a04_a08_without_a_phone_or_id_are_unprocessable_and_say_where() {
    let no_phone = seg("PID", &[(1, "1"), (3, "MRN-1"), (5, "Sharma^Priya")]);
    let r = run(&[&msh("ADT^A08"), &no_phone]).err();
    let r = r.unwrap_or_else(|| panic!("accepted"));
    assert_eq!(r.verdict, Verdict::Unprocessable);
    assert_eq!(r.location, Some(at("PID", 13, None)));
    let bad_phone = seg("PID", &[(3, "MRN-1"), (13, "^PRN^CP^^^^^^^^^12")]);
    let r = run(&[&msh("ADT^A08"), &bad_phone]).err();
    assert_eq!(
        r.map(|r| (r.verdict, r.location)),
        Some((Verdict::Unprocessable, Some(at("PID", 13, None))))
    );
    let no_id = seg("PID", &[(1, "1"), (13, "^PRN^CP^^^^^^^^^9845067890")]);
    let r = run(&[&msh("ADT^A04"), &no_id]).err();
    assert_eq!(
        r.map(|r| (r.verdict, r.location)),
        Some((Verdict::Unprocessable, Some(at("PID", 3, None))))
    );
    let reserved = seg("PID", &[(3, "wa:919845067890"), (13, "9845067890")]);
    let r = run(&[&msh("ADT^A04"), &reserved]).err();
    assert_eq!(
        r.map(|r| (r.verdict, r.location)),
        Some((Verdict::Unprocessable, Some(at("PID", 3, Some(1)))))
    );
    let r = run(&[&msh("ADT^A04"), "EVN|A04"]).err();
    assert_eq!(r.map(|r| r.verdict), Some(Verdict::Reject), "no PID");
}

#[test]
fn labels_are_bounded() {
    let (_, h) = parse(&[&msh("SIU^S12")]);
    assert_eq!(type_label(&h), "SIU^S12");
    let (_, h) = parse(&[&msh("ZZZ^Q99")]);
    assert_eq!(type_label(&h), "other");
}

#[test]
fn languages_map_to_meta_codes() {
    let c = |s: &str| Coded {
        identifier: Some(s.into()),
        ..Coded::default()
    };
    assert_eq!(language(&c("HIN")).as_deref(), Some("hi"));
    assert_eq!(language(&c("en-IN")).as_deref(), Some("en"));
    assert_eq!(language(&c("ta")).as_deref(), Some("ta"));
    assert_eq!(language(&c("x-klingon")), None);
}

/// A bounded fuzz smoke of the mapping (the parser itself is fuzzed in `hl7-v2`): mutated
/// versions of every supported message must map or be refused, never panic.
#[test]
fn mapping_never_panics_on_mutated_messages() {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }
    const INTERESTING: &[u8] =
        b"|^~\\&\r\n0123456789+-.:\"ABCDEFPRNCPSIUORUMDMADTS12S13S15A03T02EDRP";
    let b64 = base64::engine::general_purpose::STANDARD.encode(pdf());
    let join = |v: Vec<String>| v.iter().map(|s| format!("{s}\r")).collect::<String>();
    let seeds: Vec<String> = vec![
        join(siu("SIU^S12", &[PID, "AIL|1||MG Road", "AIP|1||D7^Rao"])),
        join(siu("SIU^S13", &[PID])),
        join(vec![msh("SIU^S15"), "SCH||A-1".into()]),
        join(oru("F", &pdf())),
        join(vec![
            msh("MDM^T02"),
            PID.to_owned(),
            seg("TXA", &[(1, "1"), (2, "RX"), (12, "D-1"), (17, "AU")]),
            format!("OBX|1|ED|RX||^AP^PDF^Base64^{b64}"),
        ]),
        join(vec![
            msh("ADT^A03"),
            PID.to_owned(),
            seg("PV1", &[(2, "O"), (19, "V-1"), (45, "20290101113000")]),
        ]),
        join(vec![msh("ADT^A08"), "EVN|A08".to_owned(), PID.to_owned()]),
    ];
    let c = clinic();
    let l = link();
    let mut rng = Rng(0x00C1_141C_6A7E);
    for _ in 0..3_000 {
        let mut v = seeds[rng.below(seeds.len())].clone().into_bytes();
        for _ in 0..=rng.below(6) {
            let pos = rng.below(v.len() + 1);
            match rng.below(4) {
                0 if pos < v.len() => v[pos] = INTERESTING[rng.below(INTERESTING.len())],
                1 => v.insert(pos, INTERESTING[rng.below(INTERESTING.len())]),
                2 if pos < v.len() => {
                    let end = (pos + rng.below(24)).min(v.len());
                    v.drain(pos..end);
                }
                _ => v.truncate(pos.max(10)),
            }
        }
        let Ok(msg) = hl7_v2::parse(&v) else { continue };
        let Ok(header) = Header::from_message(&msg) else {
            continue;
        };
        let _ = type_label(&header);
        if let Err(r) = map(&msg, &header, &c, &l) {
            assert!(!r.message.is_empty());
        }
    }
}
