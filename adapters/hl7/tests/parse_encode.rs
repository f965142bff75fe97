mod common;

use common::*;
use hl7_v2::{parse, Charset, Delimiters, Field, Message, ParseError, Segment};

#[test]
fn model_accessors_and_paths() {
    let raw = siu_s12();
    let msg = parse(raw.as_bytes()).unwrap();
    assert_eq!(msg.all_segments().len(), 8);
    let msh = msg.segment("MSH").unwrap();
    assert_eq!(msh.value(1), "|");
    assert_eq!(msh.value(2), "^~\\&");
    assert_eq!(msh.field(9).unwrap().component_value(2), "S12");
    let pid = msg.segment("PID").unwrap();
    let phones = pid.field(13).unwrap().repetitions();
    assert_eq!(phones.len(), 5);
    assert_eq!(phones[1].component(4).unwrap().value(), "priya@example.in");
    assert_eq!(msg.get("MSH-1").unwrap(), Some("|"));
    assert_eq!(msg.get("MSH-10").unwrap(), Some("MSG00001"));
    assert_eq!(msg.get("PID-13[3].5").unwrap(), Some("91"));
    assert_eq!(msg.get("PID-3[2].4").unwrap(), Some("SUNRISE"));
    assert_eq!(msg.get("PID-13[9]").unwrap(), None);
    assert_eq!(msg.get("AIL-3.4").unwrap(), Some("SUNRISE"));
    assert_eq!(msg.get("ZZZ-1").unwrap(), None);
    assert!(msg.get("PID13").is_err());
    assert_eq!(msg.segments("AIS").count(), 1);
}

#[test]
fn subcomponents_and_occurrences() {
    let raw = message(&[
        msh("A", "B", "ORU^R01", "1", "2.5"),
        seg("OBX", &[(1, "1"), (5, "x")]),
        seg("OBX", &[(1, "2"), (5, "a&b&c^d")]),
    ]);
    let msg = parse(raw.as_bytes()).unwrap();
    assert_eq!(msg.get("OBX[2]-5.1.3").unwrap(), Some("c"));
    assert_eq!(msg.get("OBX(2)-5.2").unwrap(), Some("d"));
    let comp = msg
        .segments("OBX")
        .nth(1)
        .unwrap()
        .field(5)
        .unwrap()
        .component(1)
        .unwrap();
    assert_eq!(comp.subcomponents(), ["a", "b", "c"]);
}

#[test]
fn canonical_messages_round_trip() {
    let pdf = minimal_pdf();
    for raw in [siu_s12(), mdm_t02(&pdf), adt_a03()] {
        let msg = parse(raw.as_bytes()).unwrap();
        assert_eq!(msg.encode(), raw);
    }
}

#[test]
fn escapes_round_trip_and_unescape() {
    let raw = message(&[
        msh("A", "B", "ADT^A08", "1", "2.5"),
        seg(
            "NTE",
            &[
                (1, "1"),
                (3, r"Fees: 50\S\100 \T\ more\F\less \R\ C:\E\path\E\"),
            ],
        ),
    ]);
    let msg = parse(raw.as_bytes()).unwrap();
    assert_eq!(
        msg.segment("NTE").unwrap().value(3),
        r"Fees: 50^100 & more|less ~ C:\path\"
    );
    assert_eq!(msg.encode(), raw);
}

#[test]
fn formatting_sequences_resolved() {
    let raw = message(&[
        msh("A", "B", "MDM^T02", "1", "2.5"),
        seg(
            "OBX",
            &[
                (1, "1"),
                (2, "TX"),
                (
                    5,
                    r"\H\Take\N\ 1 tablet\.br\after food \XE2809C\ok\XE2809D\",
                ),
            ],
        ),
    ]);
    let msg = parse(raw.as_bytes()).unwrap();
    assert_eq!(
        msg.get("OBX-5").unwrap(),
        Some("Take 1 tablet\nafter food \u{201c}ok\u{201d}")
    );
    // Re-encoding writes the newline as \.br\ again.
    let again = parse(msg.encode().as_bytes()).unwrap();
    assert_eq!(again, msg);
}

#[test]
fn custom_delimiters_are_honoured() {
    let raw =
        "MSH#*@!%#EMR#CLINIC#GW#GW#20240101##ADT*A04#9#P#2.5\rPID#1##M1*x%z*y##Rao*Anil@Rao*A.\r";
    let msg = parse(raw.as_bytes()).unwrap();
    assert_eq!(msg.delimiters().field(), '#');
    assert_eq!(msg.get("MSH-9.2").unwrap(), Some("A04"));
    assert_eq!(msg.get("PID-3.2.2").unwrap(), Some("z"));
    assert_eq!(msg.get("PID-5[2].2").unwrap(), Some("A."));
    assert_eq!(msg.encode(), raw);
}

#[test]
fn truncation_character_declared() {
    let raw = "MSH|^~\\&#|A|B|C|D|20240101||ADT^A08|1|P|2.7\rNTE|1||\\P\\1 and #2\r";
    let msg = parse(raw.as_bytes()).unwrap();
    assert_eq!(msg.delimiters().truncation(), Some('#'));
    assert_eq!(msg.get("NTE-3").unwrap(), Some("#1 and #2"));
    assert_eq!(msg.get("MSH-2").unwrap(), Some("^~\\&#"));
    assert_eq!(
        msg.encode(),
        "MSH|^~\\&#|A|B|C|D|20240101||ADT^A08|1|P|2.7\rNTE|1||\\P\\1 and \\P\\2\r"
    );
}

#[test]
fn line_endings_are_lenient() {
    let canonical = siu_s12();
    for sep in ["\n", "\r\n", "\r\r\n"] {
        let raw = canonical.replace('\r', sep);
        let msg = parse(raw.as_bytes()).unwrap();
        assert_eq!(msg.encode(), canonical, "separator {sep:?}");
    }
    let padded = format!("\u{feff}\r\n  {}\n\n", canonical);
    assert_eq!(parse(padded.as_bytes()).unwrap().encode(), canonical);
}

#[test]
fn latin1_message_with_msh18() {
    let mut raw: Vec<u8> = Vec::new();
    raw.extend_from_slice(b"MSH|^~\\&|EMR|CLINIC|GW|GW|20240101||ADT^A04|7|P|2.5||||||8859/1\r");
    raw.extend_from_slice(b"PID|1||M1^^^C^MR||M\xfcller^Jos\xe9||||||||||\\XE7\\a\r");
    let msg = parse(&raw).unwrap();
    assert_eq!(msg.charset(), Charset::Latin1);
    assert_eq!(msg.get("PID-5.1").unwrap(), Some("Müller"));
    assert_eq!(msg.get("PID-5.2").unwrap(), Some("José"));
    assert_eq!(msg.get("PID-15").unwrap(), Some("ça"));
    // Back to bytes in Latin-1: identical except the hex escape, now a literal byte.
    let out = msg.to_bytes();
    assert!(out.windows(7).any(|w| w == b"M\xfcller^"));
    assert_eq!(parse(&out).unwrap(), msg);
}

#[test]
fn undeclared_latin1_and_utf8() {
    let latin = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|7|P|2.5\rPID|1||M1||Jos\xe9\r";
    assert_eq!(parse(latin).unwrap().get("PID-5").unwrap(), Some("José"));
    let utf8 = "MSH|^~\\&|A|B|C|D|20240101||ADT^A04|7|P|2.5||||||UNICODE UTF-8\rPID|1||M1||प्रिया\r";
    let msg = parse(utf8.as_bytes()).unwrap();
    assert_eq!(msg.charset(), Charset::Utf8);
    assert_eq!(msg.get("PID-5").unwrap(), Some("प्रिया"));
    assert_eq!(msg.to_bytes(), utf8.as_bytes());
}

#[test]
fn parse_errors_name_the_problem() {
    assert_eq!(parse(b"  \r\n").unwrap_err(), ParseError::Empty);
    assert!(matches!(
        parse(b"PID|1\r").unwrap_err(),
        ParseError::MissingHeader { .. }
    ));
    assert!(matches!(
        parse(b"MSH|^~\r").unwrap_err(),
        ParseError::InvalidEncodingCharacters { .. }
    ));
    assert!(matches!(
        parse(b"MSH|^~\\&|A|B|C|D|1||ADT^A04|1|P|2.5||||||ISO IR87\r").unwrap_err(),
        ParseError::UnsupportedCharset { .. }
    ));
    let err = parse(b"MSH|^~\\&|A\rpid|1\r").unwrap_err();
    assert_eq!(
        err,
        ParseError::InvalidSegmentId {
            index: 2,
            id: "pid".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "segment 2 has an invalid segment id \"pid\""
    );
}

#[test]
fn building_a_message() {
    let d = Delimiters::default();
    let mut msh = Segment::header(&d);
    msh.set(3, "GW")
        .set_field(9, Field::from_components(["ADT", "A08"]))
        .set(10, "x|1")
        .set(12, "2.5");
    let mut nte = Segment::new("NTE");
    nte.set(3, "line 1\nline 2 ^ & ~ \\");
    let msg = Message::new(d, Charset::Undeclared, vec![msh, nte]);
    let text = msg.encode();
    assert_eq!(
        text,
        "MSH|^~\\&|GW||||||ADT^A08|x\\F\\1||2.5\rNTE|||line 1\\.br\\line 2 \\S\\ \\T\\ \\R\\ \\E\\\r"
    );
    assert_eq!(parse(text.as_bytes()).unwrap(), msg);
}
