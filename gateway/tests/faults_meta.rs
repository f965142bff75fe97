//! Meta misbehaving: an outage (bare 5xx and timeouts on every send) and then a 130429 storm.
//! The gateway backs off instead of amplifying (attempts counted at the sandbox against what
//! the retry policy allows), pauses the number on 130429, honours deadlines (messages whose
//! deadline passes during the outage end `expired`, never sent, their reservation released),
//! and sends every other message exactly once when Meta recovers.
//! CI: 10 s outage and 5 s storm; `FAULTS_LONG=1`: 60 s and 20 s.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clinic_gateway::config::Settings;
use common::faults::*;
use common::*;
use serde_json::json;
use whatsapp_cloud::sandbox::{Faults, SandboxState};

const BASE_MS: u64 = 100;
const MAX_MS: u64 = 2_000;
const GRACE_MS: u64 = 1_500;
const IN_FLIGHT: usize = 8;
/// The number's stop after each 130429 (`dispatch.throughput_pause_ms`).
const PAUSE_MS: u64 = 250;

/// The most send attempts one message can make in `window` under the retry policy: each retry
/// waits at least half the capped exponential delay (the policy's jitter never goes lower).
fn attempts_allowed(window: Duration) -> usize {
    let mut elapsed = Duration::ZERO;
    let mut attempts = 1;
    loop {
        let exp = BASE_MS.saturating_mul(1 << (attempts - 1).min(20));
        let gap = Duration::from_millis(exp.min(MAX_MS) / 2);
        if elapsed + gap > window {
            return attempts;
        }
        elapsed += gap;
        attempts += 1;
    }
}

/// Send attempts that reached the sandbox for clinic A's number in `[from, to)`.
fn attempts_between(sim: &SandboxState, from: SystemTime, to: SystemTime) -> usize {
    let rejected = sim
        .rejected()
        .into_iter()
        .filter(|r| r.phone_number_id == NUMBER_A && r.at >= from && r.at < to)
        .count();
    let sent = sim
        .sent_to(NUMBER_A)
        .into_iter()
        .filter(|r| r.at >= from && r.at < to)
        .count();
    rejected + sent
}

#[actix_rt::test]
async fn meta_outage_then_130429_storm_backs_off_honours_deadlines_and_resumes() {
    let (outage, storm) = if long() {
        (Duration::from_secs(60), Duration::from_secs(20))
    } else {
        (Duration::from_secs(10), Duration::from_secs(5))
    };
    let app = spawn_app(
        "faults_meta",
        Options {
            tier_mps: 80,
            request_timeout_ms: 1_000,
            status_grace_ms: GRACE_MS,
            reclaim_idle_ms: 3_000,
            retry_base_ms: BASE_MS,
            retry_max_ms: MAX_MS,
            max_attempts: 1_000,
            configure: Some(Arc::new(|s: &mut Settings| {
                s.dispatch.max_in_flight = IN_FLIGHT;
                s.dispatch.throughput_pause_ms = PAUSE_MS;
            })),
            ..Options::default()
        },
    )
    .await;
    let sim = app.sim.clone();

    // The outage: half bare 503s, half sends held past the client timeout (not sent).
    sim.set_faults(Faults {
        http_5xx_rate: 0.5,
        timeout_rate: 1.0,
        timeout_sends: false,
        hold_ms: 1_500,
        ..Faults::default()
    });
    let outage_from = SystemTime::now();
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(app.send(&template(&patient(i))).await);
    }
    // Deadlines in the middle of the outage: these must end expired, never sent.
    let mut short = Vec::new();
    let deadline = chrono::Utc::now() + chrono::Duration::from_std(outage / 2).unwrap_or_default();
    for i in 100..105 {
        let mut body = template(&patient(i));
        body["deadline"] = json!(deadline.to_rfc3339());
        short.push(app.send(&body).await);
    }
    let messages = ids.len() + short.len();
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    let outage_to = SystemTime::now();
    let outage_attempts = attempts_between(&sim, outage_from, outage_to);
    let allowed = messages * attempts_allowed(outage);
    eprintln!(
        "outage {outage:?}: {outage_attempts} attempts for {messages} messages \
         (the policy allows at most {allowed}; {:.2} per message per second)",
        outage_attempts as f64 / messages as f64 / outage.as_secs_f64()
    );
    assert!(
        outage_attempts <= allowed,
        "retry amplification: {outage_attempts} attempts > {allowed}"
    );
    assert!(
        sim.sent_to(NUMBER_A).is_empty(),
        "nothing got through the outage"
    );

    // The 130429 storm: the whole number pauses after each one.
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_code: 130429,
        ..Faults::default()
    });
    let storm_from = SystemTime::now();
    for i in 200..205 {
        ids.push(app.send(&template(&patient(i))).await);
    }
    tokio::time::sleep(storm).await;
    let storm_to = SystemTime::now();
    let storm_attempts = attempts_between(&sim, storm_from, storm_to);
    // Timeouts of the outage still being answered land early in the storm window: allow them.
    let pauses = (storm.as_millis() as u64 / PAUSE_MS) as usize;
    let allowed = (pauses + 2) * IN_FLIGHT + IN_FLIGHT;
    eprintln!(
        "130429 storm {storm:?}: {storm_attempts} attempts (at most {allowed}: one round of \
         in-flight sends per {PAUSE_MS} ms pause); unpaced it would be {}",
        80 * storm.as_secs()
    );
    assert!(
        storm_attempts <= allowed,
        "the number did not pause: {storm_attempts} attempts in {storm:?}"
    );

    // Meta recovers: everything still due goes out, once.
    sim.set_faults(Faults::default());
    let recovered = Instant::now();
    assert!(
        wait_all_sent(&app.sandbox, &ids, Duration::from_secs(60)).await,
        "queued work resumed"
    );
    eprintln!(
        "all resumed sends out {:?} after recovery",
        recovered.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = sim.sent_to(NUMBER_A);
    let mut all = ids.clone();
    all.extend(short.iter().cloned());
    let by = sends_by_id(&sent);
    for id in &ids {
        assert_eq!(by.get(id), Some(&1), "{id} sent exactly once");
    }
    for id in &short {
        assert_eq!(by.get(id), None, "{id} was past its deadline: never sent");
        let (_, v) = app.get_message(KEY_A, id).await;
        assert_eq!(v["status"], "expired", "{v}");
    }
    assert!(by.keys().all(|id| all.contains(id)));
    let stuck = wait_states(
        &app.http,
        &app.base,
        &ids,
        &["delivered", "read"],
        Duration::from_secs(30),
    )
    .await;
    assert!(stuck.is_empty(), "{stuck:?}");
    // Expired ones released their reservations; delivered ones settled once.
    if let Err(e) = wallet_balances(&app.http, &app.base, 1_000_000_000, ids.len()).await {
        panic!("{e}");
    }
}
