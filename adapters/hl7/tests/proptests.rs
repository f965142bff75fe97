//! Property tests: encode → parse reproduces any message built through the API, whatever its
//! text (delimiters, escape characters, line breaks, non-ASCII), and escaping is reversible.

use hl7_v2::{
    escape, parse, unescape, Charset, Component, Delimiters, Field, Message, Repetition, Segment,
};
use proptest::prelude::*;

/// Text biased towards the characters that need escaping.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            3 => proptest::sample::select(vec!['|', '^', '~', '\\', '&', '#', '*', '@', '!', '%', '\r', '\n', ' ', '.', 'X', 'F']),
            1 => any::<char>(),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn delimiters() -> impl Strategy<Value = Delimiters> {
    prop_oneof![
        Just(Delimiters::default()),
        Just(Delimiters::new('#', "*@!%").unwrap()),
        Just(Delimiters::new('|', "^~\\&#").unwrap()),
        Just(Delimiters::new('!', "$%/,").unwrap()),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    let comp = proptest::collection::vec(text(), 1..3).prop_map(Component::from_subcomponents);
    let rep = proptest::collection::vec(comp, 1..4).prop_map(Repetition::from_components);
    proptest::collection::vec(rep, 1..3).prop_map(Field::from_repetitions)
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        proptest::sample::select(vec!["PID", "OBX", "NTE", "ZX1", "PV1"]),
        proptest::collection::vec(field(), 0..6),
    )
        .prop_map(|(id, fields)| {
            let mut seg = Segment::new(id);
            for (i, f) in fields.into_iter().enumerate() {
                seg.set_field(i + 1, f);
            }
            seg
        })
}

fn message() -> impl Strategy<Value = Message> {
    (
        delimiters(),
        proptest::collection::vec(field(), 0..10),
        proptest::collection::vec(segment(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(d, header_fields, segments, latin1)| {
            let mut msh = Segment::header(&d);
            for (i, f) in header_fields.into_iter().enumerate() {
                msh.set_field(i + 3, f);
            }
            let charset = if latin1 {
                Charset::Latin1
            } else {
                Charset::Utf8
            };
            msh.set(18, charset.msh18());
            let mut all = vec![msh];
            all.extend(segments);
            Message::new(d, charset, all)
        })
}

/// Latin-1 cannot carry characters above U+00FF; keep generated text representable.
fn representable(msg: &Message) -> bool {
    msg.charset() != Charset::Latin1 || msg.encode().chars().all(|c| u32::from(c) <= 0xFF)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_parse_is_identity(msg in message()) {
        prop_assume!(representable(&msg));
        let text = msg.encode();
        let parsed = parse(&msg.to_bytes()).unwrap();
        prop_assert_eq!(&parsed, &msg);
        // And the canonical text is stable.
        prop_assert_eq!(parsed.encode(), text);
    }

    #[test]
    fn escape_then_unescape_is_identity(d in delimiters(), s in text()) {
        let escaped = escape(&s, &d);
        prop_assert!(!escaped.contains(['\r', '\n', d.field(), d.component(), d.repetition(), d.subcomponent()]));
        let back = unescape(&escaped, &d, Charset::Utf8).into_owned();
        prop_assert_eq!(back, s);
    }

    #[test]
    fn parse_is_total_and_reencoding_is_stable(bytes in proptest::collection::vec(any::<u8>(), 0..200), prefix in any::<bool>()) {
        let input = if prefix { [b"MSH|^~\\&|".as_slice(), &bytes].concat() } else { bytes };
        if let Ok(msg) = parse(&input) {
            let again = parse(&msg.to_bytes()).unwrap();
            prop_assert_eq!(again.encode(), msg.encode());
        }
    }
}
