//! `touchpoints`: the clinical touchpoints' event-to-send latency on an idle gateway, and
//! reminders falling due all at once.
//!
//! Starts the Meta sandbox in process (the template library seeded, approved, on the clinic's
//! WABA) and `clinic-gateway serve` as a child against Redis, with one clinic and one number.
//!
//! 1. **Latency per touchpoint**, one event at a time: each event is sent, its send awaited at the
//!    sandbox, then `gap` passes before the next. Measured from the moment the gateway's answer
//!    was read (the event accepted) to the sandbox's receive timestamp of the send
//!    (`SentRecord::at`, same clock): booking → `appointment_confirmation`, lab report →
//!    `lab_report_ready`, prescription → `prescription_ready`, and a patient's tap on Cancel
//!    (injected into the sandbox, which delivers it as Meta does: a signed webhook) → the
//!    cancellation text, measured from the injection.
//! 2. **Reminder burst**: `reminders` appointments booked (their confirmations drained) so that all
//!    their 24 h reminders fall due at the same moment; measures how fast the scheduler turns
//!    them into accepted outbox messages (the gateway's `touchpoints_total{touchpoint="reminder",
//!    result="accepted"}`) and how fast they reach the sandbox.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxState, SentRecord};
use whatsapp_cloud::wire::{Content, CreateTemplateRequest, TemplateStatus};

use crate::e2e::{
    api_key, cpu_between, gateway_toml, number_id, prepare, recipient, redis_info_field, sample,
    waba_id, CpuReport, Gateway, RunSetup, APP_SECRET, LARGE_TIER,
};
use crate::finish;
use crate::kit;
use crate::stats::{Latencies, LatencySummary};

/// Target of issue #5: lab report accepted → sent to Meta, p99, on an idle gateway.
pub const LAB_REPORT_P99_TARGET_MS: f64 = 200.0;
/// How long one event's send may take before it counts as missing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct TouchpointsOptions {
    /// Events per touchpoint in the latency phase (0 skips it).
    pub events: usize,
    /// Pause after an event's send reached the sandbox, before the next event.
    pub gap: Duration,
    /// Size of each prescription and lab report PDF.
    pub pdf_bytes: usize,
    /// Reminders falling due at once in the burst phase (0 skips it).
    pub reminders: usize,
    /// Bookings in flight while preparing the burst.
    pub booking_concurrency: usize,
    /// From the start of the burst's bookings to the moment all its reminders fall due
    /// (`None`: 10 s + 3 ms per reminder). Keep the idle time between the last confirmation and
    /// the due moment under the dispatcher's `passivate_after_ms` (60 s): a passivated
    /// dispatcher is not woken by the scheduler (see BENCHMARKS.md, "Clinical touchpoints").
    pub reminder_lead: Option<Duration>,
    /// How long to wait after the due moment for every reminder to reach the sandbox.
    pub burst_timeout: Duration,
    /// Throughput tier of the clinic's number (0 = no limiter in the gateway).
    pub tier_mps: u32,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    /// The template library the sandbox is seeded with.
    pub templates_dir: PathBuf,
    pub sim_workers: usize,
    pub status_latency: Duration,
    pub read_receipts: bool,
    pub gateway_log_level: String,
    pub gateway_env: Vec<(String, String)>,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
}

/// One touchpoint's latency over `events` events.
#[derive(Debug, Clone, Serialize)]
pub struct TouchpointLatency {
    pub touchpoint: &'static str,
    /// What reaches the sandbox (template name, or `text` for the reply).
    pub sends: &'static str,
    pub events: usize,
    /// Events the gateway accepted (2xx; 200 for the webhook).
    pub accepted: usize,
    /// Accepted events whose send reached the sandbox within the timeout.
    pub sent: usize,
    /// The API call itself (`None` for the tap, which the sandbox delivers as a webhook).
    pub api: Option<LatencySummary>,
    /// Accepted (answer read) → the sandbox recorded the send.
    pub accept_to_send: LatencySummary,
    /// Sends the sandbox recorded before loadgen had read the answer (counted as 0 ms).
    pub sent_before_answer_read: u64,
    pub target_p99_ms: Option<f64>,
    pub first_error: Option<String>,
}

impl TouchpointLatency {
    fn new(touchpoint: &'static str, sends: &'static str, target_p99_ms: Option<f64>) -> Self {
        Self {
            touchpoint,
            sends,
            events: 0,
            accepted: 0,
            sent: 0,
            api: None,
            accept_to_send: LatencySummary::default(),
            sent_before_answer_read: 0,
            target_p99_ms,
            first_error: None,
        }
    }
}

/// Reminders falling due at the same moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReminderBurst {
    pub reminders: usize,
    pub booked: usize,
    /// Booking all of them (API, confirmations drained at the sandbox).
    pub booking_s: f64,
    pub bookings_per_sec: f64,
    /// From the end of the bookings to the due moment (negative: the bookings overran it).
    pub slack_before_due_s: f64,
    /// Due moment → the first reminder accepted into the outbox (scheduler poll + first job).
    pub first_accepted_after_due_s: Option<f64>,
    /// Due moment → all reminders accepted into the outbox (the gateway's touchpoint counter,
    /// polled every 100 ms).
    pub all_accepted_after_due_s: Option<f64>,
    pub accepted: u64,
    /// reminders / all_accepted_after_due_s.
    pub accepted_per_sec: Option<f64>,
    /// Due moment → the first and the last reminder recorded by the sandbox.
    pub first_sent_after_due_s: Option<f64>,
    pub last_sent_after_due_s: Option<f64>,
    pub sent: usize,
    pub sent_per_sec: Option<f64>,
    /// Reminders recorded by the sandbox per second of the burst, in order (scheduler pace).
    pub sent_per_second_series: Vec<usize>,
    /// CPU from the due moment to the last reminder sent.
    pub cpu: CpuReport,
    /// Redis commands per reminder during the burst (server-wide: scheduler, outbox, dispatch,
    /// status webhooks).
    pub redis_commands_per_reminder: Option<f64>,
    /// The same from the due moment to all reminders accepted (the scheduler's part, plus any
    /// dispatch that started meanwhile: see `sent_before_all_accepted`).
    pub redis_commands_per_reminder_accepting: Option<f64>,
    /// Reminders the sandbox had recorded when the last one was accepted.
    pub sent_before_all_accepted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TouchpointsReport {
    pub scenario: &'static str,
    pub tier_mps: u32,
    pub events: usize,
    pub gap_ms: f64,
    pub pdf_bytes: usize,
    pub latency: Vec<TouchpointLatency>,
    pub burst: Option<ReminderBurst>,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

impl TouchpointsReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for TouchpointsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tier = if self.tier_mps == 0 {
            "no limiter".to_owned()
        } else {
            format!("tier {} mps", self.tier_mps)
        };
        writeln!(
            f,
            "touchpoints: one clinic, one number ({tier}); {} events per touchpoint, one at a time, {:.0} ms apart; {} KiB PDFs",
            self.events,
            self.gap_ms,
            self.pdf_bytes / 1024
        )?;
        for t in &self.latency {
            writeln!(
                f,
                "  {:<13} → {:<24} {}/{} accepted, {} sent",
                t.touchpoint, t.sends, t.accepted, t.events, t.sent
            )?;
            writeln!(f, "      accepted → sent  {}", t.accept_to_send)?;
            if let Some(api) = &t.api {
                writeln!(f, "      API call         {api}")?;
            }
            if t.sent_before_answer_read > 0 {
                writeln!(
                    f,
                    "      ({} sent before loadgen read the answer)",
                    t.sent_before_answer_read
                )?;
            }
            if let Some(target) = t.target_p99_ms {
                let verdict = if t.accept_to_send.count > 0 && t.accept_to_send.p99_ms <= target {
                    "met"
                } else {
                    "MISSED"
                };
                writeln!(f, "      target p99 ≤ {target:.0} ms: {verdict}")?;
            }
            if let Some(e) = &t.first_error {
                writeln!(f, "      first error: {e}")?;
            }
        }
        if let Some(b) = &self.burst {
            let s = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.2} s"));
            let r = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.0}/s"));
            writeln!(
                f,
                "  reminder burst: {} reminders due at the same moment ({} booked in {:.1} s = {:.0}/s, {:.1} s before the due moment)",
                b.reminders, b.booked, b.booking_s, b.bookings_per_sec, b.slack_before_due_s
            )?;
            writeln!(
                f,
                "      accepted into the outbox: {} of {}; first {} after due, all {} after due = {}",
                b.accepted,
                b.reminders,
                s(b.first_accepted_after_due_s),
                s(b.all_accepted_after_due_s),
                r(b.accepted_per_sec)
            )?;
            writeln!(
                f,
                "      reached the sandbox: {} of {}; first {} after due, last {} after due = {}",
                b.sent,
                b.reminders,
                s(b.first_sent_after_due_s),
                s(b.last_sent_after_due_s),
                r(b.sent_per_sec)
            )?;
            writeln!(
                f,
                "      sent per second of the burst: {:?}",
                b.sent_per_second_series
            )?;
            let p = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.0} %"));
            let threads: Vec<String> = b
                .cpu
                .gateway_threads
                .iter()
                .map(|(n, v)| format!("{n} {v:.0} %"))
                .collect();
            writeln!(
                f,
                "      CPU (100 % = one core): gateway {}, redis-server {}, sandbox {:.0} %, loadgen {:.0} %; busiest gateway threads: {}",
                p(b.cpu.gateway_pct),
                p(b.cpu.redis_pct),
                b.cpu.sandbox_pct,
                b.cpu.loadgen_pct,
                threads.join(", ")
            )?;
            if let Some(c) = b.redis_commands_per_reminder {
                writeln!(
                    f,
                    "      redis commands per reminder (server-wide, due → last sent, statuses included): {c:.1}"
                )?;
            }
            if let Some(c) = b.redis_commands_per_reminder_accepting {
                writeln!(
                    f,
                    "      redis commands per reminder while accepting (due → all accepted; {} already sent by then): {c:.1}",
                    b.sent_before_all_accepted
                )?;
            }
        }
        finish::write_footer(
            f,
            self.redis_keys_deleted,
            &self.gateway_log,
            &self.problems,
        )
    }
}

/// Every `<dir>/<language>/<name>.json` of the template library.
pub fn load_library(dir: &Path) -> Result<Vec<CreateTemplateRequest>> {
    let mut out = Vec::new();
    for lang in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let lang = lang?.path();
        if !lang.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&lang)? {
            let path = file?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            out.push(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        }
    }
    if out.is_empty() {
        bail!(
            "no templates under {} (run from the workspace root or pass --templates-dir)",
            dir.display()
        );
    }
    Ok(out)
}

fn start_sandbox(
    o: &TouchpointsOptions,
    gateway_base: &str,
    library: &[CreateTemplateRequest],
) -> Result<SandboxHandle> {
    let state = SandboxState::new(SandboxConfig {
        webhook_url: Some(format!("{gateway_base}/webhooks/whatsapp")),
        app_secret: APP_SECRET.into(),
        unlimited: true,
        status_latency: o.status_latency,
        read_receipts: o.read_receipts,
        webhook_retry_interval: Duration::from_millis(300),
        record_limit: (o.events * 8 + o.reminders * 2).max(100_000),
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    let tier = if o.tier_mps == 0 {
        LARGE_TIER
    } else {
        o.tier_mps
    };
    state.register_number(&number_id(0), &waba_id(0), "918045500000", tier);
    for def in library {
        state.add_template_def(&waba_id(0), def, TemplateStatus::Approved);
    }
    Sandbox::spawn_state(state, o.sim_workers.max(1)).context("starting the sandbox")
}

fn spawn_gateway(
    o: &TouchpointsOptions,
    dir: &Path,
    port: u16,
    prefix: &str,
    sandbox_url: &str,
) -> Result<Gateway> {
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(1, o.tier_mps),
        port,
        redis_url: &o.redis_url,
        prefix,
        sandbox_url,
        templates_dir: Some(&o.templates_dir),
        log_level: &o.gateway_log_level,
        env: &o.gateway_env,
    };
    kit::spawn_gateway(&spec, dir)
}

fn digits(phone: &str) -> &str {
    phone.trim_start_matches('+')
}

fn template_name(r: &SentRecord) -> Option<&str> {
    match &r.message.content {
        Content::Template { template } => Some(template.name.as_str()),
        _ => None,
    }
}

/// What an event's send looks like at the sandbox.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Template(&'static str),
    TextContaining(&'static str),
}

impl Expect {
    fn matches(self, r: &SentRecord) -> bool {
        match self {
            Expect::Template(name) => template_name(r) == Some(name),
            Expect::TextContaining(needle) => {
                matches!(&r.message.content, Content::Text { text } if text.body.contains(needle))
            }
        }
    }
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    auth: String,
    sim: SandboxState,
}

impl Ctx {
    /// POSTs JSON to the clinic API: (status, body, elapsed, the moment the answer was read).
    async fn post(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Value, Duration, SystemTime), String> {
        let t0 = Instant::now();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let read = SystemTime::now();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, v, t0.elapsed(), read))
    }

    /// Waits for the first send to `to` that `expect` matches, scanning the sandbox's records
    /// from `from_index` (records are in acceptance order).
    async fn wait_send(
        &self,
        to: &str,
        expect: Expect,
        from_index: &mut usize,
    ) -> Option<SentRecord> {
        let started = Instant::now();
        loop {
            let records = self.sim.sent();
            if let Some(r) = records
                .iter()
                .skip(*from_index)
                .find(|r| r.to == digits(to) && expect.matches(r))
            {
                return Some(r.clone());
            }
            if started.elapsed() > EVENT_TIMEOUT {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

/// A booked appointment whose patient taps Cancel later.
struct BookedApt {
    patient: String,
    id: String,
    version: u64,
    confirmation_wamid: String,
}

/// Runs `events` events of one touchpoint one at a time. `event(i)` sends the i-th event and
/// returns (patient, accepted?, API latency, answer-read time, extra).
async fn sequential<F, Fut>(
    ctx: &Ctx,
    o: &TouchpointsOptions,
    mut out: TouchpointLatency,
    expect: Expect,
    mut event: F,
) -> (TouchpointLatency, Vec<(String, Value, String)>)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = (String, Result<(u16, Value, Duration, SystemTime), String>)>,
{
    let mut api = Latencies::new();
    let mut lat = Latencies::new();
    let mut cursor = ctx.sim.sent().len();
    let mut done = Vec::new();
    eprintln!("loadgen: {} × {} → {}", o.events, out.touchpoint, out.sends);
    for i in 0..o.events {
        out.events += 1;
        let (patient, r) = event(i).await;
        let (status, body, took, read) = match r {
            Ok(x) => x,
            Err(e) => {
                out.first_error.get_or_insert(format!("event {i}: {e}"));
                continue;
            }
        };
        if !took.is_zero() {
            api.record(took);
        }
        if !(200..300).contains(&status) {
            out.first_error
                .get_or_insert(format!("event {i}: HTTP {status}: {}", short(&body)));
            continue;
        }
        out.accepted += 1;
        match ctx.wait_send(&patient, expect, &mut cursor).await {
            Some(rec) => {
                out.sent += 1;
                match rec.at.duration_since(read) {
                    Ok(d) => lat.record(d),
                    Err(_) => {
                        out.sent_before_answer_read += 1;
                        lat.record(Duration::ZERO);
                    }
                }
                done.push((patient, body, rec.wamid.clone()));
            }
            None => {
                out.first_error.get_or_insert(format!(
                    "event {i}: no {:?} reached the sandbox within {} s",
                    expect,
                    EVENT_TIMEOUT.as_secs()
                ));
            }
        }
        if !o.gap.is_zero() {
            tokio::time::sleep(o.gap).await;
        }
    }
    if !api.is_empty() {
        out.api = Some(api.summary());
    }
    out.accept_to_send = lat.summary();
    (out, done)
}

/// An error body, shortened for a report.
fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.chars().take(300).collect()
}

fn appointment_body(patient: &str, start: &str) -> Value {
    json!({"patient": {"phone": patient, "name": "Asha", "language": "en"},
           "doctor": "Dr. Rao", "start": start})
}

/// RFC 3339 in UTC, as the clinic API reads it.
fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn latency_phase(
    ctx: &Ctx,
    o: &TouchpointsOptions,
    problems: &mut Vec<String>,
) -> Vec<TouchpointLatency> {
    let mut results = Vec::new();

    // Booking → confirmation. The reminders are 2 days out: none falls due during the run.
    let (booking, booked) = sequential(
        ctx,
        o,
        TouchpointLatency::new("booking", "appointment_confirmation", None),
        Expect::Template("appointment_confirmation"),
        |i| async move {
            let patient = recipient(i);
            let start = rfc3339(SystemTime::now() + Duration::from_secs(3 * 86_400 + i as u64));
            let r = ctx
                .post("/v1/appointments", &appointment_body(&patient, &start))
                .await;
            (patient, r)
        },
    )
    .await;
    results.push(booking);

    // Lab report accepted → lab_report_ready (the PDF is uploaded to Meta's media endpoint
    // inside the API call, before the answer).
    let pdf = Arc::new(kit::base64(&kit::sample_pdf(
        "Complete blood count: Hb 13.2 g/dL",
        o.pdf_bytes,
    )));
    let n = o.events;
    let (lab, _) = sequential(
        ctx,
        o,
        TouchpointLatency::new(
            "lab report",
            "lab_report_ready",
            Some(LAB_REPORT_P99_TARGET_MS),
        ),
        Expect::Template("lab_report_ready"),
        |i| {
            let pdf = pdf.clone();
            async move {
                let patient = recipient(n + i);
                let body = json!({"external_id": format!("LAB-{i}"), "patient": {"phone": patient, "name": "Meena"},
                                  "title": "Complete blood count", "pdf_base64": *pdf});
                let r = ctx.post("/v1/lab-reports", &body).await;
                (patient, r)
            }
        },
    )
    .await;
    results.push(lab);

    let (rx, _) = sequential(
        ctx,
        o,
        TouchpointLatency::new("prescription", "prescription_ready", None),
        Expect::Template("prescription_ready"),
        |i| {
            let pdf = pdf.clone();
            async move {
                let patient = recipient(2 * n + i);
                let body = json!({"external_id": format!("RX-{i}"), "patient": {"phone": patient, "name": "Ravi"},
                                  "doctor": "Dr. Rao", "pdf_base64": *pdf});
                let r = ctx.post("/v1/prescriptions", &body).await;
                (patient, r)
            }
        },
    )
    .await;
    results.push(rx);

    // The patients booked above tap Cancel on their appointment (Meta's signed webhook).
    let apts: Vec<BookedApt> = booked
        .into_iter()
        .filter_map(|(patient, body, wamid)| {
            Some(BookedApt {
                patient,
                id: body.get("id")?.as_str()?.to_owned(),
                version: body.get("version").and_then(Value::as_u64).unwrap_or(1),
                confirmation_wamid: wamid,
            })
        })
        .collect();
    if apts.len() < o.events {
        problems.push(format!(
            "only {} of {} bookings can be cancelled by tap",
            apts.len(),
            o.events
        ));
    }
    let apts = Arc::new(apts);
    let tap_opts = TouchpointsOptions {
        events: apts.len(),
        ..o.clone()
    };
    // The tap goes through the sandbox (as Meta would deliver it: a signed webhook), which also
    // opens the patient's window there, so the free-form acknowledgement is allowed.
    let (tap, _) = sequential(
        ctx,
        &tap_opts,
        TouchpointLatency::new("tap Cancel", "text \"…cancelled…\"", None),
        Expect::TextContaining("cancelled"),
        |i| {
            let apts = apts.clone();
            async move {
                let a = &apts[i];
                ctx.sim.inject_button_tap(
                    &number_id(0),
                    digits(&a.patient),
                    &a.confirmation_wamid,
                    "Cancel",
                    &format!("CANCEL:{}:{}", a.id, a.version),
                );
                let injected = SystemTime::now();
                (
                    a.patient.clone(),
                    Ok((200, Value::Null, Duration::ZERO, injected)),
                )
            }
        },
    )
    .await;
    results.push(tap);

    for t in &results {
        if t.accepted < t.events {
            problems.push(format!(
                "{}: {} of {} events not accepted ({})",
                t.touchpoint,
                t.events - t.accepted,
                t.events,
                t.first_error.as_deref().unwrap_or("-")
            ));
        } else if t.sent < t.accepted {
            problems.push(format!(
                "{}: {} of {} accepted events never reached the sandbox ({})",
                t.touchpoint,
                t.accepted - t.sent,
                t.accepted,
                t.first_error.as_deref().unwrap_or("-")
            ));
        }
        if let Some(target) = t.target_p99_ms {
            if t.accept_to_send.count > 0 && t.accept_to_send.p99_ms > target {
                problems.push(format!(
                    "{}: accepted → sent p99 {:.1} ms is above the {target:.0} ms target",
                    t.touchpoint, t.accept_to_send.p99_ms
                ));
            }
        }
    }
    results
}

/// The gateway's `clinic_gateway_touchpoints_total{touchpoint="reminder",result="accepted"}`.
async fn reminders_accepted(ctx: &Ctx) -> Option<u64> {
    let text = ctx
        .http
        .get(format!("{}/metrics", ctx.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with("clinic_gateway_touchpoints_total{")
            && line.contains("result=\"accepted\"")
            && line.contains("touchpoint=\"reminder\"")
        {
            total += line.rsplit(' ').next()?.parse::<f64>().ok()?;
        }
    }
    Some(total as u64)
}

#[allow(clippy::too_many_arguments)]
async fn burst_phase(
    ctx: &Ctx,
    o: &TouchpointsOptions,
    gw: &mut Gateway,
    redis: &mut redis::aio::MultiplexedConnection,
    redis_pid: Option<u32>,
    problems: &mut Vec<String>,
) -> ReminderBurst {
    let n = o.reminders;
    let mut b = ReminderBurst {
        reminders: n,
        ..ReminderBurst::default()
    };
    let lead = o
        .reminder_lead
        .unwrap_or_else(|| Duration::from_secs(10) + Duration::from_millis(3 * n as u64));
    let started = SystemTime::now();
    let due = started + lead;
    // Every appointment starts at the same moment, 24 h after the due moment; one patient each.
    let start = rfc3339(due + Duration::from_secs(86_400));
    let accepted_before = reminders_accepted(ctx).await.unwrap_or(0);
    let first_patient = 10 * o.events.max(1) + 1_000;
    eprintln!(
        "loadgen: booking {n} appointments whose reminders fall due together in {:.0} s",
        lead.as_secs_f64()
    );
    let t0 = Instant::now();
    let start = &start;
    let mut results = stream::iter(0..n)
        .map(|k| async move {
            let patient = recipient(first_patient + k);
            ctx.post("/v1/appointments", &appointment_body(&patient, start))
                .await
        })
        .buffer_unordered(o.booking_concurrency.max(1));
    let mut first_error = None;
    while let Some(r) = results.next().await {
        match r {
            Ok((201, _, _, _)) => b.booked += 1,
            Ok((status, body, _, _)) => {
                first_error.get_or_insert(format!("HTTP {status}: {}", short(&body)));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    drop(results);
    if let Some(e) = first_error {
        problems.push(format!(
            "burst: {} of {n} bookings failed: {e}",
            n - b.booked
        ));
    }
    // Their confirmations drain before the reminders fall due.
    let patients: HashSet<String> = (0..n)
        .map(|k| digits(&recipient(first_patient + k)).to_owned())
        .collect();
    loop {
        let confirmed = ctx
            .sim
            .sent()
            .iter()
            .filter(|r| {
                template_name(r) == Some("appointment_confirmation") && patients.contains(&r.to)
            })
            .count();
        if confirmed >= b.booked || SystemTime::now() >= due {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.booking_s = t0.elapsed().as_secs_f64();
    b.bookings_per_sec = b.booked as f64 / b.booking_s.max(1e-9);
    b.slack_before_due_s = kit::secs_between(SystemTime::now(), due);
    if b.slack_before_due_s < 1.0 {
        problems.push(format!(
            "burst: booking took {:.1} s, past the due moment (raise --reminder-lead)",
            b.booking_s
        ));
    }
    eprintln!(
        "loadgen: {} booked in {:.1} s; reminders due in {:.1} s",
        b.booked, b.booking_s, b.slack_before_due_s
    );
    if let Ok(wait) = due.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }

    let cpu0 = sample(gw.pid(), redis_pid);
    let commands0 = redis_info_field(redis, "stats", "total_commands_processed").await;
    let deadline = Instant::now() + o.burst_timeout;
    let mut first_accepted = None;
    let mut all_accepted = None;
    let mut sent_times: Vec<SystemTime> = Vec::new();
    loop {
        let accepted = reminders_accepted(ctx)
            .await
            .unwrap_or(accepted_before)
            .saturating_sub(accepted_before);
        let now = SystemTime::now();
        if accepted > 0 && first_accepted.is_none() {
            first_accepted = Some(now);
        }
        b.accepted = accepted;
        if accepted >= b.booked as u64 && all_accepted.is_none() {
            all_accepted = Some(now);
            let commands = redis_info_field(redis, "stats", "total_commands_processed").await;
            b.redis_commands_per_reminder_accepting = match (commands0, commands) {
                (Some(a), Some(c)) if b.booked > 0 => {
                    Some(c.saturating_sub(a) as f64 / b.booked as f64)
                }
                _ => None,
            };
            b.sent_before_all_accepted = ctx
                .sim
                .sent()
                .iter()
                .filter(|r| template_name(r) == Some("visit_reminder") && patients.contains(&r.to))
                .count();
        }
        if all_accepted.is_some() {
            sent_times = ctx
                .sim
                .sent()
                .iter()
                .filter(|r| template_name(r) == Some("visit_reminder") && patients.contains(&r.to))
                .map(|r| r.at)
                .collect();
            if sent_times.len() >= b.booked {
                break;
            }
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "burst: after {} s, {} of {} reminders accepted and {} sent",
                o.burst_timeout.as_secs(),
                b.accepted,
                b.booked,
                sent_times.len()
            ));
            break;
        }
        if let Some(status) = gw.exited() {
            problems.push(format!("burst: the gateway exited ({status})"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu1 = sample(gw.pid(), redis_pid);
    let commands1 = redis_info_field(redis, "stats", "total_commands_processed").await;
    if sent_times.is_empty() {
        sent_times = ctx
            .sim
            .sent()
            .iter()
            .filter(|r| template_name(r) == Some("visit_reminder") && patients.contains(&r.to))
            .map(|r| r.at)
            .collect();
    }
    sent_times.sort_unstable();
    b.sent = sent_times.len();
    b.first_accepted_after_due_s = first_accepted.map(|t| kit::secs_between(due, t));
    b.all_accepted_after_due_s = all_accepted.map(|t| kit::secs_between(due, t));
    b.accepted_per_sec = b
        .all_accepted_after_due_s
        .map(|s| b.booked as f64 / s.max(1e-9));
    b.first_sent_after_due_s = sent_times.first().map(|t| kit::secs_between(due, *t));
    b.last_sent_after_due_s = sent_times.last().map(|t| kit::secs_between(due, *t));
    if b.sent >= b.booked && b.booked > 0 {
        b.sent_per_sec = b.last_sent_after_due_s.map(|s| b.sent as f64 / s.max(1e-9));
    }
    let mut series: BTreeMap<u64, usize> = BTreeMap::new();
    for t in &sent_times {
        let s = t.duration_since(due).map(|d| d.as_secs()).unwrap_or(0);
        *series.entry(s).or_default() += 1;
    }
    if let Some((&last, _)) = series.iter().next_back() {
        b.sent_per_second_series = (0..=last)
            .map(|s| series.get(&s).copied().unwrap_or(0))
            .collect();
    }
    b.cpu = cpu_between(&cpu0, &cpu1);
    b.redis_commands_per_reminder = match (commands0, commands1) {
        (Some(a), Some(c)) if b.sent > 0 => Some(c.saturating_sub(a) as f64 / b.sent as f64),
        _ => None,
    };
    // Each patient got one reminder.
    let mut seen = HashMap::new();
    for r in ctx.sim.sent() {
        if template_name(&r) == Some("visit_reminder") && patients.contains(&r.to) {
            *seen.entry(r.to).or_insert(0usize) += 1;
        }
    }
    let twice = seen.values().filter(|&&c| c > 1).count();
    if twice > 0 {
        problems.push(format!(
            "burst: {twice} patients got more than one reminder"
        ));
    }
    b
}

/// Runs the scenario. `Err` is a setup failure; measurement failures are in `problems`.
pub async fn run(o: TouchpointsOptions) -> Result<TouchpointsReport> {
    let library = load_library(&o.templates_dir)?;
    let RunSetup {
        port,
        base,
        prefix,
        dir,
        mut redis,
        redis_pid,
        ..
    } = prepare("touchpoints", &o.redis_url).await?;
    let sandbox = start_sandbox(&o, &base, &library)?;
    kit::announce(&base, &sandbox.base_url(), &prefix, &dir);
    let mut gw = match spawn_gateway(&o, &dir, port, &prefix, &sandbox.base_url()) {
        Ok(gw) => gw,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.booking_concurrency.max(4))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    kit::wait_ready(&http, &base, &mut gw, Duration::from_secs(20)).await?;
    let ctx = Ctx {
        http,
        base,
        auth: format!("Bearer {}", api_key(0)),
        sim: sandbox.state(),
    };
    // The gateway starts its dispatcher and syncs templates; let it settle.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut problems = Vec::new();
    let latency = if o.events > 0 {
        latency_phase(&ctx, &o, &mut problems).await
    } else {
        Vec::new()
    };
    let burst = if o.reminders > 0 {
        Some(burst_phase(&ctx, &o, &mut gw, &mut redis, redis_pid, &mut problems).await)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop();

    let redis_keys_deleted = finish::delete_run_keys(&mut redis, &prefix, o.keep_redis_keys).await;
    let gateway_log = finish::tidy_run_dir(&gw, &dir, &problems, o.keep_files);
    sandbox.stop();
    Ok(TouchpointsReport {
        scenario: "touchpoints",
        tier_mps: o.tier_mps,
        events: o.events,
        gap_ms: o.gap.as_secs_f64() * 1000.0,
        pdf_bytes: o.pdf_bytes,
        latency,
        burst,
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_582_800_123);
        assert_eq!(rfc3339(t), "2026-11-25T05:00:00.123Z");
    }

    #[test]
    fn the_shipped_library_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates");
        let lib = load_library(&dir).unwrap_or_else(|e| panic!("{e:#}"));
        for name in [
            "appointment_confirmation",
            "visit_reminder",
            "lab_report_ready",
            "prescription_ready",
        ] {
            assert!(
                lib.iter().any(|t| t.name == name && t.language == "en"),
                "{name}"
            );
        }
    }
}
