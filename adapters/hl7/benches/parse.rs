//! Parse throughput of a small SIU and a ~2 MB PDF-bearing ORU, view extraction, ACK building.
//! Run: `cargo bench -p hl7-v2 -- --warm-up-time 1 --measurement-time 3`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use chrono::DateTime;
use chrono_tz::Asia::Kolkata;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_v2::ack::{ack, AckCode};
use hl7_v2::views::{Appointment, LabReport};
use hl7_v2::{parse, Message};

/// A PDF of about 1.5 MB (2 MB once base64-encoded): header, incompressible body, trailer.
fn big_pdf() -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    pdf.extend((0..1_500_000).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    pdf.extend_from_slice(b"\n%%EOF\n");
    pdf
}

fn benches(c: &mut Criterion) {
    let siu = common::siu_s12().into_bytes();
    let oru = common::oru_r01(&big_pdf(), "F").into_bytes();

    let mut g = c.benchmark_group("siu_small");
    g.throughput(Throughput::Bytes(siu.len() as u64));
    g.bench_function("parse", |b| b.iter(|| parse(black_box(&siu)).unwrap()));
    g.bench_function("parse+appointment", |b| {
        b.iter(|| Appointment::from_message(&parse(black_box(&siu)).unwrap(), Kolkata).unwrap())
    });
    let msg = parse(&siu).unwrap();
    g.bench_function("encode", |b| b.iter(|| black_box(&msg).encode()));
    g.finish();

    let mut g = c.benchmark_group("oru_2mb_pdf");
    g.throughput(Throughput::Bytes(oru.len() as u64));
    g.sample_size(20);
    g.bench_function("parse", |b| b.iter(|| parse(black_box(&oru)).unwrap()));
    g.bench_function("parse+lab_report_pdf", |b| {
        b.iter(|| {
            let r = LabReport::from_message(&parse(black_box(&oru)).unwrap(), Kolkata).unwrap();
            assert_eq!(r.pdfs().count(), 1);
            r
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ack");
    let now = DateTime::UNIX_EPOCH;
    g.bench_function("build+encode", |b| {
        b.iter(|| ack(black_box(&msg), AckCode::Accept, "ACK-1", now).encode())
    });
    g.bench_function("build+encode_from_2mb_oru", |b| {
        let oru_msg: Message = parse(&oru).unwrap();
        b.iter(|| ack(black_box(&oru_msg), AckCode::Accept, "ACK-1", now).encode())
    });
    g.finish();
}

criterion_group!(parse_benches, benches);
criterion_main!(parse_benches);
