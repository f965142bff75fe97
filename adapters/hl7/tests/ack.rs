mod common;

use chrono::{DateTime, Utc};
use common::*;
use hl7_v2::ack::{
    ack, reject, AckBuilder, AckCode, AckContext, AckError, AckMode, ErrorCode, Severity,
};
use hl7_v2::views::FieldLocation;
use hl7_v2::{parse, Charset};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-03-15T04:45:10Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn aa_swaps_sender_and_receiver() {
    let msg = parse(siu_s12().as_bytes()).unwrap();
    let out = ack(&msg, AckCode::Accept, "ACK-1", now()).encode();
    assert_eq!(
        out,
        "MSH|^~\\&|CLINIC_GW|GW|PRACTO_EMR|SUNRISE_BLR|20240315044510+0000||ACK^S12^ACK|ACK-1|P|2.5.1\r\
         MSA|AA|MSG00001\r"
    );
}

#[test]
fn ae_with_err_segment_v25() {
    let msg = parse(siu_s12().as_bytes()).unwrap();
    let out = AckBuilder::new(AckContext::from_message(&msg), AckCode::Error)
        .error(
            AckError::new(ErrorCode::RequiredFieldMissing)
                .at(FieldLocation {
                    segment: "SCH".into(),
                    sequence: 1,
                    field: 11,
                    component: Some(4),
                })
                .message("appointment start missing"),
        )
        .error(AckError::new(ErrorCode::DataTypeError).severity(Severity::Warning))
        .build("ACK-2", now());
    let text = out.encode();
    let lines: Vec<&str> = text.split('\r').collect();
    assert_eq!(lines[1], "MSA|AE|MSG00001");
    assert_eq!(
        lines[2],
        "ERR||SCH^1^11^1^4|101^Required field missing^HL70357|E||||appointment start missing"
    );
    assert_eq!(lines[3], "ERR|||102^Data type error^HL70357|W");
    // The ACK parses back.
    assert_eq!(
        parse(text.as_bytes()).unwrap().get("ERR-3").unwrap(),
        Some("101")
    );
}

#[test]
fn legacy_versions_get_err1_and_msa3() {
    let msg = parse(adt_a03().as_bytes()).unwrap(); // v2.4
    let out = AckBuilder::new(AckContext::from_message(&msg), AckCode::Reject)
        .error(
            AckError::new(ErrorCode::UnsupportedEventCode).at(FieldLocation {
                segment: "MSH".into(),
                sequence: 1,
                field: 9,
                component: Some(2),
            }),
        )
        .build("A3", now())
        .encode();
    let lines: Vec<&str> = out.split('\r').collect();
    assert!(lines[0].contains("|ACK^A03^ACK|A3|P|2.4"));
    assert_eq!(lines[1], "MSA|AR|ADT1|Unsupported event code");
    assert_eq!(lines[2], "ERR|MSH^1^9^201&Unsupported event code&HL70357");
}

#[test]
fn enhanced_mode_when_msh15_or_16_present() {
    let raw = message(&[seg(
        "MSH",
        &[
            (3, "LIS"),
            (4, "LAB"),
            (5, "GW"),
            (6, "GW"),
            (9, "ORU^R01"),
            (10, "C9"),
            (11, "T"),
            (12, "2.5.1"),
            (15, "AL"),
            (16, "NE"),
        ],
    )]);
    let msg = parse(raw.as_bytes()).unwrap();
    let ctx = AckContext::from_message(&msg);
    assert_eq!(ctx.mode(), AckMode::Enhanced);
    let text = AckBuilder::new(ctx.clone(), AckCode::Accept)
        .build("X", now())
        .encode();
    assert!(text.contains("|ACK^R01^ACK|X|T|2.5.1\rMSA|CA|C9\r"));
    let text = AckBuilder::new(ctx, AckCode::Error)
        .mode(AckMode::Original)
        .build("X", now())
        .encode();
    assert!(text.contains("MSA|AE|C9"));
}

#[test]
fn ack_keeps_delimiters_and_charset() {
    let raw = b"MSH#*@!%#EMR#CLINIC#GW#GW#20240101##ADT*A04#9#P#2.5######8859/1\rPID#1\r";
    let msg = parse(raw).unwrap();
    assert_eq!(msg.charset(), Charset::Latin1);
    let out = ack(&msg, AckCode::Accept, "Z1", now()).encode();
    assert!(out.starts_with("MSH#*@!%#GW#GW#EMR#CLINIC#"), "{out}");
    assert!(out.contains("#ACK*A04*ACK#Z1#P#2.5"));
    assert!(out.contains("#8859/1\r"));
}

#[test]
fn reject_when_only_msh_is_readable() {
    // Bad segment id after a good MSH, and a charset the parser refuses: still readable headers.
    for raw in [
        message(&[
            seg(
                "MSH",
                &[
                    (3, "EMR"),
                    (4, "C1"),
                    (9, "SIU^S12"),
                    (10, "M77"),
                    (11, "P"),
                    (12, "2.5"),
                ],
            ),
            "bad segment".to_string(),
        ]),
        message(&[seg(
            "MSH",
            &[
                (3, "EMR"),
                (4, "C1"),
                (9, "SIU^S12"),
                (10, "M77"),
                (11, "P"),
                (12, "2.5"),
                (18, "ISO IR87"),
            ],
        )]),
    ] {
        let out = reject(
            raw.as_bytes(),
            AckError::new(ErrorCode::SegmentSequenceError),
            "R1",
            now(),
        )
        .encode();
        let lines: Vec<&str> = out.split('\r').collect();
        assert_eq!(
            lines[0],
            "MSH|^~\\&|||EMR|C1|20240315044510+0000||ACK^S12^ACK|R1|P|2.5"
        );
        assert_eq!(lines[1], "MSA|AR|M77");
        assert_eq!(lines[2], "ERR|||100^Segment sequence error^HL70357|E");
    }
}

#[test]
fn reject_when_nothing_is_readable() {
    for raw in [&b""[..], b"\x00\x01garbage", b"MSH|", b"MSH|^~\\&"] {
        let out = reject(
            raw,
            AckError::new(ErrorCode::UnsupportedMessageType).message("cannot parse"),
            "R2",
            now(),
        );
        let text = out.encode();
        assert!(text.contains("|ACK^^ACK|R2|P|2.5\rMSA|AR|\r"), "{text}");
        assert!(text.ends_with("|E||||cannot parse\r"));
    }
}

#[test]
fn error_codes_table_0357() {
    let codes = [
        (ErrorCode::MessageAccepted, 0),
        (ErrorCode::SegmentSequenceError, 100),
        (ErrorCode::RequiredFieldMissing, 101),
        (ErrorCode::DataTypeError, 102),
        (ErrorCode::TableValueNotFound, 103),
        (ErrorCode::UnsupportedMessageType, 200),
        (ErrorCode::UnsupportedEventCode, 201),
        (ErrorCode::UnsupportedProcessingId, 202),
        (ErrorCode::UnsupportedVersionId, 203),
        (ErrorCode::UnknownKeyIdentifier, 204),
        (ErrorCode::DuplicateKeyIdentifier, 205),
        (ErrorCode::ApplicationRecordLocked, 206),
        (ErrorCode::ApplicationInternalError, 207),
    ];
    for (c, n) in codes {
        assert_eq!(c.code(), n);
        assert!(!c.text().is_empty());
    }
}
