//! `webhook-storm`: status webhooks at a fixed rate, straight at the gateway's
//! `/webhooks/whatsapp`, for messages the gateway really sent.
//!
//! 1. The gateway sends N template messages (one number, no limiter) to the sandbox, which is
//!    told to send no webhooks of its own; their wamids, recipients and prices come from the
//!    sandbox's record.
//! 2. Each phase replays `sent`, `delivered` and `read` for its share of those messages at the
//!    phase's rate (status items per second, open loop: POSTs leave on schedule whether or not
//!    earlier ones were answered, up to `--max-in-flight`), `--batch` items per POST, signed with
//!    the app secret like Meta's (`X-Hub-Signature-256`). A share of the messages
//!    (`--reorder-rate`) gets two of its statuses swapped, and a share of the items
//!    (`--duplicate-rate`) is delivered twice, a little later.
//! 3. Measured per phase: POST handling latency (send → answer, and from the scheduled moment, so
//!    a stalled server cannot hide), the rate offered and the rate handled, and the gateway's own
//!    status counters and handling-time histogram.
//! 4. Every message must end `read` (`GET /v1/messages/{id}`), settled once
//!    (`wallet_movements_total{kind="settled"}` grows by exactly N) with nothing left reserved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxHandle, SandboxState, TemplateCategory, TemplateStatus,
};
use whatsapp_cloud::signature::{sign, SIGNATURE_HEADER};
use whatsapp_cloud::wire::Pricing;

use crate::e2e::{
    api_key, cpu_between, gateway_toml, number_id, prepare, recipient, sample, waba_id, CpuReport,
    RunSetup, APP_SECRET, LARGE_TIER, TEMPLATE,
};
use crate::finish;
use crate::kit::{self, Check, CommandsPer, RunInfo, Scrape};
use crate::stats::{Latencies, LatencySummary};

/// Issue #9: webhook handling p99 ≤ 10 ms at 10,000 status updates/s.
pub const P99_TARGET_MS: f64 = 10.0;
pub const P99_TARGET_RATE: u32 = 10_000;
/// Seconds between a message's statuses in virtual time (as the sandbox's default latency).
const STEP_S: f64 = 0.05;
const DISPLAY: &str = "918045500000";

#[derive(Debug, Clone)]
pub struct StormOptions {
    /// Status items per second, one phase each.
    pub rates: Vec<u32>,
    pub phase_duration: Duration,
    pub batch: usize,
    pub duplicate_rate: f64,
    pub reorder_rate: f64,
    pub max_in_flight: usize,
    /// Closed-loop API clients sending the messages first.
    pub send_concurrency: usize,
    /// Check every message's final state through the API.
    pub verify: bool,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    pub sim_workers: usize,
    pub gateway_log_level: String,
    pub gateway_env: Vec<(String, String)>,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
}

/// `loadgen webhook-storm` flags.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    /// Status updates per second, one phase each (--quick: each ÷ 5, at most 5,000).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pub rates: Vec<u32>,
    /// Length of each phase; its messages are rate × this ÷ 3.3 (--quick: at most 2 s).
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub phase_duration: Duration,
    /// Status items per webhook POST.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Share of the status items delivered twice.
    #[arg(long, default_value_t = 0.1)]
    pub duplicate_rate: f64,
    /// Share of the messages whose statuses arrive out of order.
    #[arg(long, default_value_t = 0.1)]
    pub reorder_rate: f64,
    /// Webhook POSTs in flight at most (open loop below that).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Closed-loop API clients sending the messages first.
    #[arg(long, default_value_t = 64)]
    pub send_concurrency: usize,
    /// Skip checking every message's final state through the API.
    #[arg(long)]
    pub no_verify: bool,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    pub gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    pub sim_workers: usize,
    /// RUST_LOG of the gateway child.
    #[arg(long, default_value = "warn")]
    pub gateway_log: String,
    /// Extra environment for the gateway child, KEY=VALUE, repeatable.
    #[arg(long = "gateway-env", value_parser = kit::parse_env)]
    pub gateway_env: Vec<(String, String)>,
    /// Leave the run's Redis keys in place.
    #[arg(long)]
    pub keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    pub keep_files: bool,
}

impl StormArgs {
    pub fn options(self, quick: bool) -> StormOptions {
        let (rates, phase_duration) = if quick {
            (
                self.rates.iter().map(|r| (r / 5).clamp(1, 5_000)).collect(),
                self.phase_duration.min(Duration::from_secs(2)),
            )
        } else {
            (self.rates, self.phase_duration)
        };
        StormOptions {
            rates,
            phase_duration,
            batch: self.batch,
            duplicate_rate: self.duplicate_rate,
            reorder_rate: self.reorder_rate,
            max_in_flight: self.max_in_flight,
            send_concurrency: self.send_concurrency,
            verify: !self.no_verify,
            gateway_bin: self.gateway_bin,
            redis_url: self.redis_url,
            sim_workers: self.sim_workers,
            gateway_log_level: self.gateway_log,
            gateway_env: self.gateway_env,
            keep_redis_keys: self.keep_redis_keys,
            keep_files: self.keep_files,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    pub target_rate: u32,
    pub messages: usize,
    pub items: usize,
    pub duplicates: usize,
    pub reordered_messages: usize,
    pub posts: usize,
    /// First POST sent → last answer read.
    pub wall_s: f64,
    /// Items per second actually sent (first → last POST start).
    pub offered_per_sec: f64,
    /// Items answered 200 per second of wall time.
    pub handled_per_sec: f64,
    /// Status items the gateway applied (moved a message) per second of wall time.
    pub applied_per_sec: f64,
    pub ok_posts: usize,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Send → answer of each POST.
    pub latency: LatencySummary,
    /// Scheduled moment → answer (includes waiting for a free connection slot).
    pub latency_from_schedule: LatencySummary,
    /// POSTs that left more than 5 ms after their scheduled moment.
    pub late_posts: usize,
    /// The gateway's `webhook_statuses_total` by result over the phase.
    pub statuses: BTreeMap<String, f64>,
    /// The gateway's `webhook_duration_seconds{result="ok"}` (bucket upper bounds, ms).
    pub gateway_p50_ms: Option<f64>,
    pub gateway_p99_ms: Option<f64>,
    pub cpu: CpuReport,
    pub redis_commands_per_item: CommandsPer,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub checked: usize,
    pub by_state: BTreeMap<String, usize>,
    pub wrong: usize,
    pub first_wrong: Option<String>,
    /// `wallet_movements_total{kind="settled"}` growth over the storm (must equal the messages).
    pub settled: f64,
    pub wallet_reserved: Option<i64>,
    pub wallet_settled: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub run: RunInfo,
    pub batch: usize,
    pub duplicate_rate: f64,
    pub reorder_rate: f64,
    pub messages: usize,
    pub send_s: f64,
    pub send_per_sec: f64,
    pub phases: Vec<PhaseReport>,
    pub verification: Verification,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

impl StormReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn checks(&self) -> Vec<Check> {
        let mut v = Vec::new();
        for p in &self.phases {
            let target = if p.target_rate <= P99_TARGET_RATE {
                format!(
                    "p99 ≤ {P99_TARGET_MS:.0} ms at {} /s",
                    kit::thousands(u64::from(P99_TARGET_RATE))
                )
            } else {
                format!("{} /s handled", kit::thousands(u64::from(p.target_rate)))
            };
            let met = if p.target_rate <= P99_TARGET_RATE {
                p.latency_from_schedule.p99_ms <= P99_TARGET_MS
                    && p.handled_per_sec >= 0.98 * f64::from(p.target_rate)
            } else {
                p.handled_per_sec >= 0.98 * f64::from(p.target_rate)
            };
            v.push(Check::new(
                format!(
                    "webhook storm at {} status updates/s ({} per POST)",
                    kit::thousands(u64::from(p.target_rate)),
                    self.batch
                ),
                target,
                format!(
                    "handled {} /s (applied {} /s); POST p50 {:.1} ms, p99 {:.1} ms (from schedule p99 {:.1} ms); gateway histogram p99 ≤ {}",
                    kit::thousands(p.handled_per_sec as u64),
                    kit::thousands(p.applied_per_sec as u64),
                    p.latency.p50_ms,
                    p.latency.p99_ms,
                    p.latency_from_schedule.p99_ms,
                    p.gateway_p99_ms
                        .map_or("n/a".into(), |v| format!("{v:.1} ms"))
                ),
                Some(met),
            ));
        }
        let vf = &self.verification;
        v.push(Check::new(
            "messages in a wrong final state (10 % duplicates, 10 % out of order)",
            "0",
            format!(
                "{} of {} checked ({:?}); settled {:.0} times for {} messages, {} reserved left",
                vf.wrong,
                vf.checked,
                vf.by_state,
                vf.settled,
                self.messages,
                vf.wallet_reserved.map_or("n/a".into(), |r| r.to_string())
            ),
            Some(
                vf.wrong == 0
                    && (vf.settled - self.messages as f64).abs() < 0.5
                    && vf.wallet_reserved.unwrap_or(0) == 0,
            ),
        ));
        v
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## webhook-storm\n\n{}- {} messages sent first ({:.0} msgs/s), then `sent`/`delivered`/`read` replayed per phase, {} items per POST, {:.0} % duplicates, {:.0} % of messages out of order\n\n",
            self.run.markdown(),
            kit::thousands(self.messages as u64),
            self.send_per_sec,
            self.batch,
            self.duplicate_rate * 100.0,
            self.reorder_rate * 100.0
        );
        s.push_str(&kit::checks_table(&self.checks()));
        for p in &self.phases {
            s.push_str(&format!(
                "\nPhase {} /s: CPU gateway {}, redis {}, loadgen {:.0} %; statuses {:?}; Redis commands per status item: {}\n",
                p.target_rate,
                p.cpu.gateway_pct.map_or("n/a".into(), |v| format!("{v:.0} %")),
                p.cpu.redis_pct.map_or("n/a".into(), |v| format!("{v:.0} %")),
                p.cpu.loadgen_pct,
                p.statuses,
                p.redis_commands_per_item.text()
            ));
        }
        if !self.problems.is_empty() {
            s.push_str(&format!("\nProblems: {}\n", self.problems.join("; ")));
        }
        s
    }
}

impl std::fmt::Display for StormReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "webhook-storm: {} messages sent in {:.1} s ({:.0}/s); {} items per POST",
            self.messages, self.send_s, self.send_per_sec, self.batch
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "  {} /s: {} messages, {} items ({} duplicates, {} messages reordered) in {} POSTs over {:.2} s",
                p.target_rate, p.messages, p.items, p.duplicates, p.reordered_messages, p.posts, p.wall_s
            )?;
            writeln!(
                f,
                "    offered {:.0}/s, handled {:.0}/s, applied {:.0}/s; {} ok, errors {:?}, {} late",
                p.offered_per_sec,
                p.handled_per_sec,
                p.applied_per_sec,
                p.ok_posts,
                p.errors,
                p.late_posts
            )?;
            if let Some(e) = &p.first_error {
                writeln!(f, "    first error: {e}")?;
            }
            writeln!(f, "    POST latency {}", p.latency)?;
            writeln!(f, "    from schedule {}", p.latency_from_schedule)?;
            writeln!(
                f,
                "    gateway statuses {:?}; gateway p50 ≤ {:?} ms, p99 ≤ {:?} ms; redis per item {}",
                p.statuses,
                p.gateway_p50_ms,
                p.gateway_p99_ms,
                p.redis_commands_per_item.text()
            )?;
        }
        write!(f, "{}", kit::checks_text(&self.checks()))?;
        finish::write_footer(
            f,
            self.redis_keys_deleted,
            &self.gateway_log,
            &self.problems,
        )
    }
}

/// A message the gateway sent, as the sandbox recorded it.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    wamid: String,
    to: String,
    pricing: Pricing,
}

/// One status item in the storm's order.
#[derive(Debug, Clone, Copy)]
struct Item {
    msg: usize,
    step: u8,
    vt: f64,
}

/// The items of one phase, in delivery order: every message's three statuses, `STEP_S` apart in
/// virtual time, with `reorder_rate` of the messages getting two statuses swapped and
/// `duplicate_rate` of the items delivered again a little later. Deterministic for a seed.
fn plan_items(
    messages: std::ops::Range<usize>,
    msgs_per_sec: f64,
    duplicate_rate: f64,
    reorder_rate: f64,
    seed: u64,
) -> (Vec<Item>, usize, usize) {
    let mut items = Vec::with_capacity(messages.len() * 4);
    let mut reordered = 0;
    let frac = |r: u64| (r >> 11) as f64 / (1u64 << 53) as f64;
    for (j, m) in messages.enumerate() {
        let base = j as f64 / msgs_per_sec.max(1e-9);
        let mut vts = [base, base + STEP_S, base + 2.0 * STEP_S];
        let r = kit::mix64(seed ^ (m as u64).wrapping_mul(0x1000_0001));
        if frac(r) < reorder_rate {
            reordered += 1;
            match r % 3 {
                0 => vts.swap(0, 1),
                1 => vts.swap(1, 2),
                _ => vts.swap(0, 2),
            }
        }
        for (step, vt) in vts.into_iter().enumerate() {
            items.push(Item {
                msg: m,
                step: step as u8,
                vt,
            });
        }
    }
    let mut dups = Vec::new();
    for (k, it) in items.iter().enumerate() {
        let r = kit::mix64(seed.wrapping_add(0x5151) ^ (k as u64));
        if frac(r) < duplicate_rate {
            dups.push(Item {
                vt: it.vt + 0.01 + frac(kit::mix64(r)) * 0.5,
                ..*it
            });
        }
    }
    let duplicates = dups.len();
    items.extend(dups);
    items.sort_by(|a, b| a.vt.total_cmp(&b.vt));
    (items, duplicates, reordered)
}

fn status_json(s: &Sent, step: u8, base_unix: u64) -> Value {
    let kind = match step {
        0 => "sent",
        1 => "delivered",
        _ => "read",
    };
    let mut v = json!({
        "id": s.wamid,
        "status": kind,
        "timestamp": (base_unix + u64::from(step)).to_string(),
        "recipient_id": s.to,
        "biz_opaque_callback_data": s.id,
    });
    if step < 2 {
        if let (Some(o), Ok(p)) = (v.as_object_mut(), serde_json::to_value(&s.pricing)) {
            o.insert("pricing".into(), p);
        }
    }
    v
}

/// One signed POST body of status items for the number.
fn webhook_body(items: &[Item], sent: &[Sent], base_unix: u64) -> Result<(Bytes, String)> {
    let statuses: Vec<Value> = items
        .iter()
        .map(|it| status_json(&sent[it.msg], it.step, base_unix))
        .collect();
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id(0), "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY, "phone_number_id": number_id(0)},
            "statuses": statuses
        }}]}]
    }))?;
    let signature = sign(APP_SECRET.as_bytes(), &body);
    Ok((Bytes::from(body), signature))
}

fn start_sandbox(n: usize, workers: usize) -> Result<SandboxHandle> {
    let state = SandboxState::new(SandboxConfig {
        // No webhooks of its own: the storm is loadgen's.
        webhook_url: None,
        app_secret: APP_SECRET.into(),
        unlimited: true,
        record_limit: n + 10_000,
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    state.register_number(&number_id(0), &waba_id(0), DISPLAY, LARGE_TIER);
    state.add_template(
        &waba_id(0),
        TEMPLATE,
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}, your visit is at {{2}}.",
        TemplateStatus::Approved,
    );
    Sandbox::spawn_state(state, workers.max(1)).context("starting the sandbox")
}

/// Sends `n` template messages through the API; the accepted ids.
async fn send_messages(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    concurrency: usize,
) -> (Vec<String>, BTreeMap<String, u64>, Option<String>) {
    let url = format!("{base}/v1/messages");
    let auth = format!("Bearer {}", api_key(0));
    let pnid = number_id(0);
    let next = AtomicUsize::new(0);
    let results = stream::iter(0..concurrency.max(1))
        .map(|_| async {
            let mut ids = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut first = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = json!({"to": recipient(i), "from": pnid, "type": "template",
                    "template": {"name": TEMPLATE, "language": {"code": "en"},
                        "components": [{"type": "body", "parameters": [
                            {"type": "text", "text": "Asha"}, {"type": "text", "text": "10:30"}]}]}});
                match http
                    .post(&url)
                    .header("authorization", &auth)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        match (status, v["id"].as_str()) {
                            (202, Some(id)) => ids.push(id.to_owned()),
                            _ => {
                                *errors.entry(format!("http {status}")).or_default() += 1;
                                first.get_or_insert_with(|| format!("http {status}: {v}"));
                            }
                        }
                    }
                    Err(e) => {
                        *errors.entry("transport".into()).or_default() += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ids, errors, first)
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut ids = Vec::with_capacity(n);
    let mut errors = BTreeMap::new();
    let mut first = None;
    for (i, e, f) in results {
        ids.extend(i);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
        if first.is_none() {
            first = f;
        }
    }
    (ids, errors, first)
}

#[derive(Default)]
struct PostAcc {
    latency: Latencies,
    from_schedule: Latencies,
    ok_posts: usize,
    ok_items: usize,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    late: usize,
    last_answer: Option<Instant>,
    first_send: Option<Instant>,
    last_send: Option<Instant>,
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    http: &reqwest::Client,
    base: &str,
    o: &StormOptions,
    rate: u32,
    sent: &[Sent],
    range: std::ops::Range<usize>,
    seed: u64,
    redis: &mut redis::aio::MultiplexedConnection,
    gw_pid: Option<u32>,
    redis_pid: Option<u32>,
) -> Result<PhaseReport> {
    let per_msg = 3.0 * (1.0 + o.duplicate_rate);
    let msgs_per_sec = f64::from(rate) / per_msg;
    let (items, duplicates, reordered) = plan_items(
        range.clone(),
        msgs_per_sec,
        o.duplicate_rate,
        o.reorder_rate,
        seed,
    );
    let base_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let batch = o.batch.max(1);
    let mut posts = Vec::with_capacity(items.len() / batch + 1);
    for chunk in items.chunks(batch) {
        let (body, sig) = webhook_body(chunk, sent, base_unix)?;
        posts.push((body, sig, chunk.len()));
    }
    eprintln!(
        "loadgen: phase {rate}/s: {} messages, {} items ({duplicates} duplicates, {reordered} reordered) in {} POSTs",
        range.len(),
        items.len(),
        posts.len()
    );
    let url: Arc<str> = format!("{base}/webhooks/whatsapp").into();
    let acc = Arc::new(Mutex::new(PostAcc::default()));
    let sem = Arc::new(Semaphore::new(o.max_in_flight.max(1)));
    let m0 = kit::scrape(http, base).await.unwrap_or_default();
    let cmd0 = kit::commandstats(redis).await;
    let cpu0 = sample(gw_pid, redis_pid);
    let interval = batch as f64 / f64::from(rate.max(1));
    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(posts.len());
    for (k, (body, sig, n)) in posts.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(k as f64 * interval);
        tokio::time::sleep_until(due.into()).await;
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let (http, url, acc) = (http.clone(), url.clone(), acc.clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http
                .post(&*url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, sig)
                .body(body)
                .send()
                .await;
            let outcome = match r {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.bytes().await.unwrap_or_default();
                    if status == 200 {
                        Ok(())
                    } else {
                        Err((
                            format!("http {status}"),
                            format!("http {status}: {:.200}", String::from_utf8_lossy(&text)),
                        ))
                    }
                }
                Err(e) => Err(("transport".to_owned(), e.to_string())),
            };
            let done = Instant::now();
            drop(permit);
            if let Ok(mut a) = acc.lock() {
                a.latency.record(done - t);
                a.from_schedule.record(done.saturating_duration_since(due));
                if t.saturating_duration_since(due) > Duration::from_millis(5) {
                    a.late += 1;
                }
                a.first_send = Some(a.first_send.map_or(t, |f| f.min(t)));
                a.last_send = Some(a.last_send.map_or(t, |l| l.max(t)));
                a.last_answer = Some(a.last_answer.map_or(done, |l| l.max(done)));
                match outcome {
                    Ok(()) => {
                        a.ok_posts += 1;
                        a.ok_items += n;
                    }
                    Err((key, detail)) => {
                        *a.errors.entry(key).or_default() += 1;
                        a.first_error.get_or_insert(detail);
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let cpu1 = sample(gw_pid, redis_pid);
    let cmd1 = kit::commandstats(redis).await;
    let m1 = kit::scrape(http, base).await.unwrap_or_default();
    let a = match acc.lock() {
        Ok(mut a) => std::mem::take(&mut *a),
        Err(_) => PostAcc::default(),
    };
    let wall_s = match (a.first_send, a.last_answer) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let send_span = match (a.first_send, a.last_send) {
        (Some(f), Some(l)) => (l - f).as_secs_f64() + interval,
        _ => 0.0,
    };
    let mut statuses = BTreeMap::new();
    for result in ["applied", "early", "duplicate", "unknown", "ignored"] {
        let d = m1.sum(
            "clinic_gateway_webhook_statuses_total",
            &[("result", result)],
        ) - m0.sum(
            "clinic_gateway_webhook_statuses_total",
            &[("result", result)],
        );
        statuses.insert(result.to_owned(), d);
    }
    let applied = statuses.get("applied").copied().unwrap_or(0.0);
    let q = |q| {
        Scrape::histogram_quantile(
            &m0,
            &m1,
            "clinic_gateway_webhook_duration_seconds",
            &[("result", "ok")],
            q,
        )
        .map(|s| s * 1000.0)
    };
    Ok(PhaseReport {
        target_rate: rate,
        messages: range.len(),
        items: items.len(),
        duplicates,
        reordered_messages: reordered,
        posts: a.ok_posts + a.errors.values().sum::<u64>() as usize,
        wall_s,
        offered_per_sec: items.len() as f64 / send_span.max(1e-9),
        handled_per_sec: a.ok_items as f64 / wall_s.max(1e-9),
        applied_per_sec: applied / wall_s.max(1e-9),
        ok_posts: a.ok_posts,
        errors: a.errors,
        first_error: a.first_error,
        latency: a.latency.summary(),
        latency_from_schedule: a.from_schedule.summary(),
        late_posts: a.late,
        statuses,
        gateway_p50_ms: q(0.5),
        gateway_p99_ms: q(0.99),
        cpu: cpu_between(&cpu0, &cpu1),
        redis_commands_per_item: CommandsPer::between(&cmd0, &cmd1, items.len() as u64),
    })
}

async fn verify(
    http: &reqwest::Client,
    base: &str,
    sent: &[Sent],
    problems: &mut Vec<String>,
) -> Verification {
    let auth = format!("Bearer {}", api_key(0));
    let states: Vec<Result<String, String>> = stream::iter(sent.iter())
        .map(|s| {
            let (auth, url) = (&auth, format!("{base}/v1/messages/{}", s.id));
            async move {
                let r = http
                    .get(&url)
                    .header("authorization", auth)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let v: Value = r.json().await.map_err(|e| e.to_string())?;
                v["status"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("no status in {v}"))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut v = Verification {
        checked: states.len(),
        ..Verification::default()
    };
    for (s, st) in sent.iter().zip(states) {
        let state = st.unwrap_or_else(|e| format!("error: {e:.80}"));
        if state != "read" {
            v.wrong += 1;
            v.first_wrong
                .get_or_insert_with(|| format!("{} is {state}", s.id));
        }
        *v.by_state.entry(state).or_default() += 1;
    }
    if v.wrong > 0 {
        problems.push(format!(
            "{} of {} messages did not end read ({:?}; first: {})",
            v.wrong,
            v.checked,
            v.by_state,
            v.first_wrong.as_deref().unwrap_or("-")
        ));
    }
    if let Ok(r) = http
        .get(format!("{base}/v1/wallet"))
        .header("authorization", &auth)
        .send()
        .await
    {
        if let Ok(w) = r.json::<Value>().await {
            v.wallet_reserved = w["reserved"].as_i64();
            v.wallet_settled = w["settled"].as_i64();
        }
    }
    v
}

/// Runs the scenario. `Err` is a setup failure; shortfalls are in `problems`.
pub async fn run(o: StormOptions) -> Result<StormReport> {
    if o.rates.is_empty() || o.rates.contains(&0) {
        bail!("--rates needs at least one rate above 0");
    }
    if !(0.0..=1.0).contains(&o.duplicate_rate) || !(0.0..=1.0).contains(&o.reorder_rate) {
        bail!("--duplicate-rate and --reorder-rate are fractions within 0..=1");
    }
    let mut run = RunInfo::start();
    let per_msg = 3.0 * (1.0 + o.duplicate_rate);
    let shares: Vec<usize> = o
        .rates
        .iter()
        .map(|r| {
            ((f64::from(*r) * o.phase_duration.as_secs_f64() / per_msg).ceil() as usize).max(1)
        })
        .collect();
    let n: usize = shares.iter().sum();

    let RunSetup {
        port,
        base,
        prefix,
        dir,
        mut redis,
        redis_pid,
        ..
    } = prepare("webhook-storm", &o.redis_url).await?;
    let sandbox = start_sandbox(n, o.sim_workers)?;
    let sim = sandbox.state();
    kit::announce(&base, &sandbox.base_url(), &prefix, &dir);
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(1, 0),
        port,
        redis_url: &o.redis_url,
        prefix: &prefix,
        sandbox_url: &sandbox.base_url(),
        templates_dir: None,
        log_level: &o.gateway_log_level,
        env: &o.gateway_env,
    };
    let mut gw = match kit::spawn_gateway(&spec, &dir) {
        Ok(gw) => gw,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.max_in_flight.max(o.send_concurrency))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    kit::wait_ready(&http, &base, &mut gw, Duration::from_secs(30)).await?;
    let mut problems = Vec::new();

    // 1. The messages the storm is about.
    eprintln!("loadgen: sending {n} messages through the gateway");
    let t_send = Instant::now();
    let (ids, errors, first_error) = send_messages(&http, &base, n, o.send_concurrency).await;
    if !errors.is_empty() {
        problems.push(format!(
            "{} of {n} sends not accepted {errors:?} (first: {})",
            n - ids.len(),
            first_error.as_deref().unwrap_or("-")
        ));
    }
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut sent: Vec<Sent>;
    let wait_start = Instant::now();
    loop {
        let records = sim.sent();
        if records.len() >= ids.len() || wait_start.elapsed() > Duration::from_secs(120) {
            sent = records
                .into_iter()
                .filter_map(|r| {
                    let id = r.message.biz_opaque_callback_data?;
                    wanted.contains(id.as_str()).then_some(Sent {
                        id,
                        wamid: r.wamid,
                        to: r.to,
                        pricing: r.pricing,
                    })
                })
                .collect();
            if sent.len() >= ids.len() || wait_start.elapsed() > Duration::from_secs(120) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let send_s = t_send.elapsed().as_secs_f64();
    if sent.len() < ids.len() {
        problems.push(format!(
            "only {} of {} accepted messages reached the sandbox",
            sent.len(),
            ids.len()
        ));
    }
    // Let the gateway record every send's answer (wamid) before the statuses come.
    let settle_start = Instant::now();
    let m_start = kit::scrape(&http, &base).await.unwrap_or_default();
    while settle_start.elapsed() < Duration::from_secs(10) {
        if let Some(m) = kit::scrape(&http, &base).await {
            if m.sum("clinic_gateway_sends_total", &[("outcome", "accepted")]) >= sent.len() as f64
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "loadgen: {} messages at the sandbox after {send_s:.1} s",
        sent.len()
    );

    // 2. The phases, each with its own messages.
    let settled0 = kit::scrape(&http, &base).await.unwrap_or(m_start).sum(
        "clinic_gateway_wallet_movements_total",
        &[("kind", "settled")],
    );
    let mut phases = Vec::new();
    let mut from = 0;
    for (k, (&rate, &share)) in o.rates.iter().zip(&shares).enumerate() {
        let to = (from + share).min(sent.len());
        if to <= from {
            break;
        }
        let p = run_phase(
            &http,
            &base,
            &o,
            rate,
            &sent,
            from..to,
            0x57_0123 + k as u64,
            &mut redis,
            gw.pid(),
            redis_pid,
        )
        .await?;
        if !p.errors.is_empty() {
            problems.push(format!(
                "phase {rate}/s: POSTs not answered 200: {:?} (first: {})",
                p.errors,
                p.first_error.as_deref().unwrap_or("-")
            ));
        }
        phases.push(p);
        from = to;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 3. Every message read, settled once.
    let mut verification = if o.verify {
        eprintln!("loadgen: checking {} messages' final state", sent.len());
        verify(&http, &base, &sent[..from], &mut problems).await
    } else {
        Verification::default()
    };
    verification.settled = kit::scrape(&http, &base).await.unwrap_or_default().sum(
        "clinic_gateway_wallet_movements_total",
        &[("kind", "settled")],
    ) - settled0;
    if (verification.settled - from as f64).abs() > 0.5 {
        problems.push(format!(
            "{} messages got delivered statuses but the wallet settled {:.0} times",
            from, verification.settled
        ));
    }
    if verification.wallet_reserved.unwrap_or(0) != 0 && from == sent.len() {
        problems.push(format!(
            "{} micro-units still reserved after every message was delivered",
            verification.wallet_reserved.unwrap_or(0)
        ));
    }
    gw.stop();

    let redis_keys_deleted = finish::delete_run_keys(&mut redis, &prefix, o.keep_redis_keys).await;
    let gateway_log = finish::tidy_run_dir(&gw, &dir, &problems, o.keep_files);
    sandbox.stop();
    run.finish();
    Ok(StormReport {
        scenario: "webhook-storm",
        run,
        batch: o.batch,
        duplicate_rate: o.duplicate_rate,
        reorder_rate: o.reorder_rate,
        messages: from,
        send_s,
        send_per_sec: sent.len() as f64 / send_s.max(1e-9),
        phases,
        verification,
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

/// Writes `webhook-storm.json` and `webhook-storm.md` under `dir`.
pub fn save(dir: &Path, r: &StormReport) -> Result<()> {
    kit::save(dir, "webhook-storm", r, &r.markdown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_has_every_status_plus_duplicates_and_reorders() {
        let (items, dups, reordered) = plan_items(0..10_000, 3_000.0, 0.1, 0.1, 7);
        assert_eq!(items.len(), 30_000 + dups);
        assert!((2_700..3_300).contains(&dups), "{dups}");
        assert!((900..1_100).contains(&reordered), "{reordered}");
        // Sorted by virtual time.
        assert!(items.windows(2).all(|w| w[0].vt <= w[1].vt));
        // Every message has each of its three steps at least once.
        let mut seen = vec![[false; 3]; 10_000];
        for it in &items {
            seen[it.msg][it.step as usize] = true;
        }
        assert!(seen.iter().all(|s| s.iter().all(|b| *b)));
        // Some message sees a later step before an earlier one.
        let mut first_pos = vec![[usize::MAX; 3]; 10_000];
        for (k, it) in items.iter().enumerate() {
            let p = &mut first_pos[it.msg][it.step as usize];
            *p = (*p).min(k);
        }
        assert!(first_pos
            .iter()
            .any(|p| p[2] < p[1] || p[1] < p[0] || p[2] < p[0]));
    }

    #[test]
    fn bodies_are_signed_status_webhooks() {
        let sent = vec![Sent {
            id: "msg_1".into(),
            wamid: "wamid.X".into(),
            to: "919700000001".into(),
            pricing: serde_json::from_value(
                json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"}),
            )
            .unwrap_or(Pricing {
                billable: None,
                pricing_model: None,
                kind: None,
                category: None,
            }),
        }];
        let items = [
            Item {
                msg: 0,
                step: 0,
                vt: 0.0,
            },
            Item {
                msg: 0,
                step: 2,
                vt: 0.1,
            },
        ];
        let (body, sig) = webhook_body(&items, &sent, 1_700_000_000).unwrap_or_default();
        assert!(
            whatsapp_cloud::signature::verify(APP_SECRET.as_bytes(), &body, Some(&sig)).is_ok()
        );
        let env: whatsapp_cloud::wire::WebhookEnvelope =
            serde_json::from_slice(&body).unwrap_or(whatsapp_cloud::wire::WebhookEnvelope {
                object: String::new(),
                entry: Vec::new(),
            });
        let whatsapp_cloud::wire::Change::Messages(v) = &env.entry[0].changes[0] else {
            panic!("not a messages change");
        };
        assert_eq!(v.statuses.len(), 2);
        assert!(v.statuses[0].pricing.is_some());
        assert!(v.statuses[1].pricing.is_none());
        assert_eq!(
            v.statuses[1].biz_opaque_callback_data.as_deref(),
            Some("msg_1")
        );
    }
}
