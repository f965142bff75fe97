//! A bounded, deterministic stand-in for cargo-fuzz (which needs nightly): thousands of random and
//! mutated inputs through the parser, every view, the ACK builder and the MLLP decoder. Passing
//! means nothing panicked and re-encoding parsed messages is stable.

mod common;

use bytes::BytesMut;
use chrono::DateTime;
use chrono_tz::Asia::Kolkata;
use hl7_v2::ack::{reject, AckError, ErrorCode};
use hl7_v2::mllp::MllpCodec;
use hl7_v2::views::{AdtMessage, Appointment, LabReport, MedicalDocument};
use hl7_v2::{parse, parse_timestamp};
use tokio_util::codec::Decoder;

/// xorshift64*: tiny, seeded, good enough to drive mutations.
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

const INTERESTING: &[u8] = b"|^~\\&#\r\n\x0b\x1c\x0d\\XF\\.brEHN0123456789+-.ED^AP^PDF^Base64^";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let pos = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if pos < v.len() => v[pos] = rng.next() as u8,
            1 if pos < v.len() => v[pos] = INTERESTING[rng.below(INTERESTING.len())],
            2 => v.insert(pos, INTERESTING[rng.below(INTERESTING.len())]),
            3 if pos < v.len() => {
                let end = (pos + rng.below(32)).min(v.len());
                v.drain(pos..end);
            }
            4 => {
                let start = rng.below(v.len());
                let end = (start + rng.below(64)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(pos..pos, chunk);
            }
            _ => v.truncate(pos),
        }
    }
    v
}

fn exercise(input: &[u8]) {
    let now = DateTime::UNIX_EPOCH;
    if let Ok(msg) = parse(input) {
        let again = parse(&msg.to_bytes()).expect("re-encoded message parses");
        assert_eq!(again.encode(), msg.encode());
        let _ = Appointment::from_message(&msg, Kolkata);
        let _ = LabReport::from_message(&msg, Kolkata);
        let _ = MedicalDocument::from_message(&msg, Kolkata);
        let _ = AdtMessage::from_message(&msg, Kolkata);
        let _ = msg.get("PID-13[2].5");
        let _ = hl7_v2::ack::ack(&msg, hl7_v2::ack::AckCode::Accept, "F", now);
    }
    let ack = reject(
        input,
        AckError::new(ErrorCode::ApplicationInternalError),
        "F",
        now,
    );
    parse(&ack.to_bytes()).expect("an AR always parses");
    if let Ok(s) = std::str::from_utf8(input) {
        let _ = parse_timestamp(s, Kolkata);
    }
}

fn decode_all(rng: &mut Rng, input: &[u8]) {
    let mut codec = MllpCodec::new(256);
    let mut buf = BytesMut::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= 256),
                Ok(None) => break,
                // Oversized frame: reported, then decoding continues.
                Err(_) => continue,
            }
        }
        // Never more than one frame's worth (plus start and end block) is held.
        assert!(buf.len() <= 256 + 2, "{}", buf.len());
    }
    let _ = codec.decode_eof(&mut buf);
}

#[test]
fn fuzz_smoke() {
    let pdf = common::minimal_pdf();
    let seeds: Vec<Vec<u8>> = vec![
        common::siu_s12().into_bytes(),
        common::oru_r01(&pdf, "F").into_bytes(),
        common::mdm_t02(&pdf).into_bytes(),
        common::adt_a03().into_bytes(),
        b"MSH|^~\\&|A|B|C|D|2024||ADT^A04|1|P|2.5||||||8859/1\rPID|1||\\XE9\\\r".to_vec(),
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for i in 0..4000 {
        let input = if i % 5 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        exercise(&input);
        let mut framed = vec![0x0b];
        framed.extend_from_slice(&input);
        framed.extend_from_slice(b"\x1c\x0d");
        let framed = mutate(&mut rng, &framed);
        decode_all(&mut rng, &framed);
    }
}
