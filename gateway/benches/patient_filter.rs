//! The patient directory at 1,000,000 patients of one clinic on a real Redis: import rate, cold
//! index load from Redis, the resident memory the index takes, and filter evaluation with the
//! index warm (matches only, and matches plus their full records).
//!
//! ```sh
//! cargo bench -p clinic-gateway --bench patient_filter                       # own redis-server
//! REDIS_URL=redis://127.0.0.1:6379 PATIENTS=1000000 cargo bench -p clinic-gateway --bench patient_filter
//! ```
//! With `REDIS_URL`, the patients are kept under `bench:patients:` and reused by the next run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clinic_gateway::domain::{TenantId, E164};
use clinic_gateway::patients::{
    ConsentState, PatientDirectory, PatientFilter, PatientRecord, Purpose, Sex,
};
use clinic_gateway::store::{Backend, RedisStore};
use criterion::{criterion_group, criterion_main, Criterion};

const PREFIX: &str = "bench:patients:";
const BATCH: usize = 5_000;

/// A small deterministic generator (xorshift), so every run builds the same clinic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn patient(i: usize, rng: &mut Rng) -> PatientRecord {
    let phone = E164::parse(&format!("+91{}", 7_000_000_000u64 + i as u64))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut p = PatientRecord::new(format!("MRN-{i:07}"), phone);
    p.name = format!("Patient {i}");
    const LANGS: [&str; 8] = ["en", "hi", "ta", "te", "kn", "ml", "bn", "mr"];
    p.language = Some(LANGS[rng.below(8) as usize].to_owned());
    let days = rng.below(90 * 365) as i64;
    p.birth_date = NaiveDate::from_ymd_opt(1935, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::Duration::days(days)));
    p.sex = Some(if rng.chance(50) {
        Sex::Female
    } else {
        Sex::Male
    });
    for (tag, percent) in [
        ("diabetic", 12),
        ("hypertensive", 20),
        ("antenatal", 3),
        ("senior", 15),
        ("asthma", 6),
        ("cardiac", 5),
        ("thyroid", 8),
        ("smoker", 10),
    ] {
        if rng.chance(percent) {
            p.tags.push(tag.to_owned());
        }
    }
    // A long tail of camp tags: more than 64 distinct ones, so the overflow lists are used.
    if rng.chance(30) {
        p.tags.push(format!("camp-{}", rng.below(200)));
    }
    if p.tags.iter().any(|t| t == "diabetic") {
        p.conditions.push(format!("E11.{}", rng.below(10)));
    }
    if rng.chance(20) {
        p.conditions.push("I10".to_owned());
    }
    let now = 1_795_000_000_000i64;
    p.last_visit_ms = rng
        .chance(80)
        .then(|| now - rng.below(3 * 365 * 86_400_000) as i64);
    p.consent.promotional = ConsentState::new(rng.chance(50), now, "import");
    if rng.chance(2) {
        p.consent.care = ConsentState::new(false, now, "patient:STOP");
    }
    p
}

fn typical() -> PatientFilter {
    PatientFilter {
        tags_all: vec!["diabetic".into()],
        age_min: Some(40),
        age_max: Some(70),
        consent: Some(Purpose::Promotional),
        ..Default::default()
    }
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // The Redis connections spawn their tasks on this runtime.
    let _entered = rt.enter();
    let (url, prefix) = match std::env::var("REDIS_URL") {
        Ok(u) if !u.trim().is_empty() => (u, PREFIX.to_owned()),
        _ => (
            clinic_gateway::testing::shared_redis().url.clone(),
            clinic_gateway::testing::unique_prefix("patient_bench"),
        ),
    };
    let store: Arc<dyn Backend> =
        Arc::new(RedisStore::connect(&url, &prefix, 4).unwrap_or_else(|e| panic!("redis: {e}")));
    let tenant = TenantId::parse("bench_clinic").unwrap_or_else(|e| panic!("{e}"));
    let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap_or_default();

    // Import (skipped when a kept clinic already has them).
    let writer = PatientDirectory::new(store.clone());
    let have = rt.block_on(writer.count(&tenant)).unwrap_or(0) as usize;
    if have != n {
        let started = Instant::now();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..n {
            batch.push(patient(i, &mut rng));
            if batch.len() == BATCH || i + 1 == n {
                rt.block_on(writer.put_many(&tenant, std::mem::take(&mut batch)))
                    .unwrap_or_else(|e| panic!("import: {e}"));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "import: {n} patients in {secs:.1} s ({:.0}/s, batches of {BATCH}, PatientDirectory::put_many)",
            n as f64 / secs
        );
    }
    drop(writer);

    // Cold loads: a fresh directory each time (as a node after a restart).
    let mut loads = Vec::new();
    let mut index_bytes = 0u64;
    for _ in 0..3 {
        let before = rss();
        let dir = PatientDirectory::new(store.clone());
        let started = Instant::now();
        let held = rt
            .block_on(dir.load_index(&tenant))
            .unwrap_or_else(|e| panic!("{e}"));
        loads.push(started.elapsed());
        if loads.len() == 1 {
            // Only the first load is measured: later ones reuse the pages the earlier index freed.
            index_bytes = rss().saturating_sub(before);
        }
        assert_eq!(held, Some(n), "the whole clinic is indexed");
    }
    loads.sort();
    println!(
        "cold index load from Redis: {n} patients, best {:.2} s, median {:.2} s; RSS +{:.0} MB (~{} B/patient)",
        loads[0].as_secs_f64(),
        loads[loads.len() / 2].as_secs_f64(),
        index_bytes as f64 / 1e6,
        index_bytes / n.max(1) as u64
    );

    // Warm: the feed check (one round trip) plus the filter over every entry.
    let dir = PatientDirectory::new(store.clone());
    rt.block_on(dir.load_index(&tenant))
        .unwrap_or_else(|e| panic!("{e}"));
    let f = typical();
    let matched = rt
        .block_on(dir.select_matches(&tenant, &f, today))
        .unwrap_or_else(|e| panic!("{e}"))
        .len();
    println!("typical filter (tags_all=[diabetic], age 40-70, consent promotional): {matched} of {n} match");

    let mut g = c.benchmark_group(format!("patients_{n}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    g.bench_function("select_matches/typical", |b| {
        b.iter(|| {
            rt.block_on(dir.select_matches(&tenant, black_box(&f), today))
                .map(|m| m.len())
        })
    });
    let broad = PatientFilter {
        tags_any: vec!["hypertensive".into(), "camp-150".into()],
        conditions_any: vec!["E11".into(), "I10".into()],
        languages: vec!["hi".into(), "ta".into()],
        last_visit_from_ms: Some(1_795_000_000_000 - 365 * 86_400_000),
        ..Default::default()
    };
    g.bench_function("select_matches/tags_any+conditions+languages+visit", |b| {
        b.iter(|| {
            rt.block_on(dir.select_matches(&tenant, black_box(&broad), today))
                .map(|m| m.len())
        })
    });
    g.bench_function("select/typical (matches + full records from Redis)", |b| {
        b.iter(|| {
            rt.block_on(dir.select(&tenant, black_box(&f), today))
                .map(|m| m.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
