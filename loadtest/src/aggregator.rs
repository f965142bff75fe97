//! `aggregator`: many clinics, each with its own business number, through one gateway: a mixed
//! day of API traffic (appointments, lab reports and prescriptions with a small real PDF,
//! free-text replies to patients whose window is open, patients writing in through the sandbox)
//! with the sandbox's `sent`/`delivered`/`read` status webhooks flowing back.
//!
//! The figure is **messages/s end to end**: a message counts once it was accepted by the API,
//! sent to the sandbox, its status webhooks applied (`clinic_gateway_message_states_total{state="read"}`)
//! and its wallet reservation settled (`clinic_gateway_wallet_movements_total{kind="settled"}`),
//! from the first request of the traffic phase to the moment the last one completed. The
//! [`crate::raw`] ceiling is measured first in the same run (before the gateway starts) as the
//! yardstick. The sandbox's record is the judge of lost, duplicated and rejected sends.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxState, SentRecord};
use whatsapp_cloud::wire::{Content, TemplateStatus};

use crate::e2e::{
    api_key, cpu_between, gateway_toml, number_id, prepare, sample, waba_id, CpuReport, RunSetup,
    APP_SECRET,
};
use crate::finish;
use crate::kit::{self, Check, CommandsPer, RunInfo, Scrape};
use crate::raw::{self, RawOptions, RawReport};
use crate::stats::{max_in_window, Latencies, LatencySummary};

/// Issue #9: at least this many messages/s end to end, and half the raw figure.
pub const TARGET_PER_SEC: f64 = 20_000.0;
pub const TARGET_RAW_SHARE: f64 = 0.5;
/// The library templates the clinical touchpoints of the mix send.
const TEMPLATES: [&str; 4] = [
    "appointment_confirmation",
    "lab_report_ready",
    "prescription_ready",
    "visit_reminder",
];
const REPLY_TEXT: &str = "Thank you doctor, noted.";
const WINDOW_TEXT: &str = "Hello, I have a question for the doctor";
const FREE_TEXT: &str = "Your report is ready for collection at the front desk.";

/// Shares of the traffic by kind (weights, not necessarily summing to 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub appointments: u32,
    pub lab_reports: u32,
    pub prescriptions: u32,
    pub texts: u32,
    pub replies: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            appointments: 30,
            lab_reports: 15,
            prescriptions: 15,
            texts: 25,
            replies: 15,
        }
    }
}

/// `appointments=30,lab-reports=15,prescriptions=15,texts=25,replies=15` (missing kinds: 0).
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut m = Mix {
        appointments: 0,
        lab_reports: 0,
        prescriptions: 0,
        texts: 0,
        replies: 0,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not kind=weight"))?;
        let v: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the weight is not a whole number"))?;
        match k.trim() {
            "appointments" => m.appointments = v,
            "lab-reports" => m.lab_reports = v,
            "prescriptions" => m.prescriptions = v,
            "texts" => m.texts = v,
            "replies" => m.replies = v,
            other => {
                return Err(format!(
                "unknown kind {other:?} (appointments, lab-reports, prescriptions, texts, replies)"
            ))
            }
        }
    }
    if m.total() == 0 {
        return Err("the mix is empty".into());
    }
    Ok(m)
}

impl Mix {
    fn total(&self) -> u32 {
        self.appointments + self.lab_reports + self.prescriptions + self.texts + self.replies
    }

    fn pick(&self, r: u64) -> Kind {
        let mut x = (r % u64::from(self.total().max(1))) as u32;
        for (k, w) in [
            (Kind::Appointment, self.appointments),
            (Kind::LabReport, self.lab_reports),
            (Kind::Prescription, self.prescriptions),
            (Kind::Text, self.texts),
        ] {
            if x < w {
                return k;
            }
            x -= w;
        }
        Kind::Reply
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Appointment,
    LabReport,
    Prescription,
    Text,
    Reply,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Appointment,
        Kind::LabReport,
        Kind::Prescription,
        Kind::Text,
        Kind::Reply,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Appointment => "appointment (POST /v1/appointments)",
            Kind::LabReport => "lab report (POST /v1/lab-reports)",
            Kind::Prescription => "prescription (POST /v1/prescriptions)",
            Kind::Text => "free text (POST /v1/messages)",
            Kind::Reply => "patient reply (sandbox → webhook)",
        }
    }

    /// What the sandbox records for it (`None`: no outbound message).
    fn sends(self) -> Option<&'static str> {
        match self {
            Kind::Appointment => Some("appointment_confirmation"),
            Kind::LabReport => Some("lab_report_ready"),
            Kind::Prescription => Some("prescription_ready"),
            Kind::Text => Some("text"),
            Kind::Reply => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
pub struct AggregatorOptions {
    pub clinics: usize,
    pub tier_mps: u32,
    pub duration: Duration,
    pub concurrency: usize,
    /// Patients per clinic whose window is opened before the traffic (free texts and replies go
    /// to them).
    pub window_patients: usize,
    pub mix: Mix,
    pub pdf_bytes: usize,
    /// The raw ceiling measured first (0 skips it).
    pub raw_duration: Duration,
    pub raw_concurrency: usize,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    pub templates_dir: PathBuf,
    pub sim_workers: usize,
    pub status_latency: Duration,
    pub gateway_log_level: String,
    pub gateway_env: Vec<(String, String)>,
    /// After the traffic, wait at most this long for every message to complete.
    pub drain_timeout: Duration,
    pub ready_timeout: Duration,
    /// /metrics readings while the clients send.
    pub scrape_every: Duration,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
}

/// `loadgen aggregator` flags.
#[derive(Debug, clap::Args)]
pub struct AggregatorArgs {
    /// Clinics, one business number each (--quick: at most 20).
    #[arg(long, default_value_t = 2_000)]
    pub clinics: usize,
    /// Throughput tier of every number (gateway config and sandbox).
    #[arg(long, default_value_t = 80)]
    pub tier_mps: u32,
    /// How long the API clients send (--quick: at most 5 s).
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Closed-loop API clients (--quick: at most 16).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Patients per clinic who write in before the traffic (their windows are open; free
    /// texts and replies go to them). --quick: at most 5.
    #[arg(long, default_value_t = 10)]
    pub window_patients: usize,
    /// Shares of the traffic by kind.
    #[arg(long, default_value = "appointments=30,lab-reports=15,prescriptions=15,texts=25,replies=15", value_parser = parse_mix)]
    pub mix: Mix,
    /// Size of the lab report and prescription PDFs (0: the bare one-page PDF, ~600 bytes).
    #[arg(long, default_value_t = 0)]
    pub pdf_bytes: usize,
    /// The raw ceiling measured first, in the same run (0 skips it; --quick: at most 1 s).
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub raw_duration: Duration,
    /// Sends in flight during the raw measurement.
    #[arg(long, default_value_t = 64)]
    pub raw_concurrency: usize,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    pub gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The template library (the sandbox gets the touchpoints' English templates from it).
    #[arg(long, default_value = "config/templates")]
    pub templates_dir: PathBuf,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    pub sim_workers: usize,
    /// Sandbox delay before each status webhook (sent, delivered, read).
    #[arg(long, default_value = "50ms", value_parser = crate::parse_duration)]
    pub status_latency: Duration,
    /// RUST_LOG of the gateway child.
    #[arg(long, default_value = "warn")]
    pub gateway_log: String,
    /// Extra environment for the gateway child, KEY=VALUE, repeatable.
    #[arg(long = "gateway-env", value_parser = kit::parse_env)]
    pub gateway_env: Vec<(String, String)>,
    /// After the traffic, wait at most this long for every message to be sent, read and
    /// settled (--quick: at most 20 s).
    #[arg(long, default_value = "120s", value_parser = crate::parse_duration)]
    pub drain_timeout: Duration,
    /// How often the gateway's /metrics is read while the clients send. A scrape costs the
    /// gateway Redis work per running number (queue ages), so reading it often with thousands
    /// of numbers slows the run down.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub scrape_every: Duration,
    /// How long the gateway may take to start (it syncs every clinic's templates first).
    #[arg(long, default_value = "180s", value_parser = crate::parse_duration)]
    pub ready_timeout: Duration,
    /// Leave the run's Redis keys in place.
    #[arg(long)]
    pub keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    pub keep_files: bool,
}

impl AggregatorArgs {
    pub fn options(self, quick: bool) -> AggregatorOptions {
        let mut o = AggregatorOptions {
            clinics: self.clinics,
            tier_mps: self.tier_mps,
            duration: self.duration,
            concurrency: self.concurrency,
            window_patients: self.window_patients,
            mix: self.mix,
            pdf_bytes: self.pdf_bytes,
            raw_duration: self.raw_duration,
            raw_concurrency: self.raw_concurrency,
            gateway_bin: self.gateway_bin,
            redis_url: self.redis_url,
            templates_dir: self.templates_dir,
            sim_workers: self.sim_workers,
            status_latency: self.status_latency,
            gateway_log_level: self.gateway_log,
            gateway_env: self.gateway_env,
            drain_timeout: self.drain_timeout,
            ready_timeout: self.ready_timeout,
            scrape_every: self.scrape_every,
            keep_redis_keys: self.keep_redis_keys,
            keep_files: self.keep_files,
        };
        if quick {
            o.clinics = o.clinics.min(20);
            o.duration = o.duration.min(Duration::from_secs(5));
            o.concurrency = o.concurrency.min(16);
            o.window_patients = o.window_patients.min(5);
            o.raw_duration = o.raw_duration.min(Duration::from_secs(1));
            o.drain_timeout = o.drain_timeout.min(Duration::from_secs(20));
        }
        o
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub latency: LatencySummary,
    /// What reached the sandbox for it during the run (records of its template, or text).
    pub at_sandbox: Option<usize>,
}

/// One reading during the run (seconds since the traffic started; counts since then).
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub t_s: f64,
    pub api_accepted: u64,
    pub meta_accepted: f64,
    pub read: f64,
    pub settled: f64,
    /// How long this /metrics read took.
    pub scrape_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AggregatorReport {
    pub scenario: &'static str,
    pub run: RunInfo,
    pub clinics: usize,
    pub tier_mps: u32,
    /// clinics × tier × 0.9 (the gateway's default headroom).
    pub tier_capacity_per_sec: f64,
    pub concurrency: usize,
    pub duration_s: f64,
    pub mix: Mix,
    pub pdf_bytes: usize,
    pub raw: Option<RawReport>,
    pub gateway_ready_s: f64,
    pub windows_opened: usize,
    pub windows_s: f64,
    pub kinds: Vec<KindReport>,
    pub api_requests_per_sec: f64,
    /// Messages the API accepted that must reach the sandbox (replies excluded).
    pub messages: u64,
    /// First request → every message sent, read and settled.
    pub end_to_end_s: Option<f64>,
    pub end_to_end_per_sec: Option<f64>,
    /// Settlements per second over the second half of the traffic phase (steady state).
    pub settled_per_sec_steady: Option<f64>,
    /// end_to_end_per_sec ÷ raw sends/s.
    pub share_of_raw: Option<f64>,
    pub meta_accepted: f64,
    pub statuses_read: f64,
    pub settled: f64,
    pub progress: Vec<Progress>,
    /// Sandbox records of the run (with an outbox id).
    pub at_sandbox: usize,
    pub duplicates: usize,
    pub sim_rejections: BTreeMap<i64, u64>,
    pub max_per_number_1s: usize,
    pub numbers_over_tier: usize,
    pub inbound_applied: f64,
    pub replies_injected: u64,
    /// The gateway's `sends_total` by outcome and `meta_errors_total` by code over the run.
    pub gateway_sends: BTreeMap<String, f64>,
    pub meta_errors: BTreeMap<String, f64>,
    /// Mean and longest /metrics read (the gateway computes queue gauges per running number).
    pub scrape_mean_ms: f64,
    pub scrape_max_ms: f64,
    pub cpu_traffic: CpuReport,
    pub cpu_drain: CpuReport,
    pub redis_commands_per_message: CommandsPer,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

impl AggregatorReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn checks(&self) -> Vec<Check> {
        let mut v = Vec::new();
        let e2e = self.end_to_end_per_sec.unwrap_or(0.0);
        v.push(Check::new(
            "aggregator end to end (accepted → sent → read applied → settled)",
            format!("≥ {} msgs/s", kit::thousands(TARGET_PER_SEC as u64)),
            format!(
                "{} msgs/s ({} messages in {:.1} s; steady settlements {} /s)",
                kit::thousands(e2e as u64),
                kit::thousands(self.messages),
                self.end_to_end_s.unwrap_or(0.0),
                self.settled_per_sec_steady
                    .map_or("n/a".into(), |s| kit::thousands(s as u64))
            ),
            Some(e2e >= TARGET_PER_SEC),
        ));
        if let (Some(raw), Some(share)) = (&self.raw, self.share_of_raw) {
            v.push(Check::new(
                "aggregator ÷ raw (same run)",
                "≥ 50 %",
                format!(
                    "{:.1} % (raw {} sends/s)",
                    share * 100.0,
                    kit::thousands(raw.sends_per_sec as u64)
                ),
                Some(share >= TARGET_RAW_SHARE),
            ));
        }
        let lost = self.messages.saturating_sub(self.at_sandbox as u64);
        v.push(Check::new(
            "lost / duplicated at the sandbox",
            "0 / 0",
            format!("{lost} / {}", self.duplicates),
            Some(lost == 0 && self.duplicates == 0),
        ));
        let rejected: u64 = self.sim_rejections.values().sum();
        v.push(Check::new(
            "sandbox rejections (130429 etc.), numbers over tier",
            "0, 0",
            format!("{rejected}, {}", self.numbers_over_tier),
            Some(rejected == 0 && self.numbers_over_tier == 0),
        ));
        v.push(Check::new(
            "API requests (all kinds)",
            "-",
            format!(
                "{} req/s with {} clients",
                kit::thousands(self.api_requests_per_sec as u64),
                self.concurrency
            ),
            None,
        ));
        for k in &self.kinds {
            if k.requests == 0 || k.latency.count == 0 {
                continue;
            }
            v.push(Check::new(
                format!("accept latency, {}", k.kind),
                if k.kind.starts_with("free text") {
                    "p99 ≤ 5 ms at 5,000 req/s"
                } else {
                    "-"
                },
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms ({} ok)",
                    k.latency.p50_ms,
                    k.latency.p99_ms,
                    kit::thousands(k.ok)
                ),
                None,
            ));
        }
        v
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## aggregator\n\n{}- {} clinics, one number each at {} mps (gateway headroom 0.9: {} msgs/s of tier capacity), {} closed-loop API clients for {:.0} s, mix {:?}, PDF {} bytes\n\n",
            self.run.markdown(),
            kit::thousands(self.clinics as u64),
            self.tier_mps,
            kit::thousands(self.tier_capacity_per_sec as u64),
            self.concurrency,
            self.duration_s,
            self.mix,
            self.pdf_bytes
        );
        s.push_str(&kit::checks_table(&self.checks()));
        s.push_str(&format!(
            "\nGateway sends by outcome {:?}; Meta errors by code {:?}; /metrics read mean {:.0} ms, max {:.0} ms.\n",
            self.gateway_sends, self.meta_errors, self.scrape_mean_ms, self.scrape_max_ms
        ));
        s.push_str(&format!(
            "\nCPU during traffic (100 % = one core): gateway {}, redis {}, sandbox {:.0} %, loadgen {:.0} %; busiest gateway threads: {}\n\nRedis commands per message: {}\n",
            pct(self.cpu_traffic.gateway_pct),
            pct(self.cpu_traffic.redis_pct),
            self.cpu_traffic.sandbox_pct,
            self.cpu_traffic.loadgen_pct,
            threads(&self.cpu_traffic),
            self.redis_commands_per_message.text()
        ));
        if !self.problems.is_empty() {
            s.push_str(&format!("\nProblems: {}\n", self.problems.join("; ")));
        }
        s
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.0} %"))
}

fn threads(c: &CpuReport) -> String {
    c.gateway_threads
        .iter()
        .map(|(n, v)| format!("{n} {v:.0} %"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for AggregatorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "aggregator: {} clinics at {} mps, {} clients for {:.1} s",
            self.clinics, self.tier_mps, self.concurrency, self.duration_s
        )?;
        if let Some(r) = &self.raw {
            writeln!(
                f,
                "  raw ceiling: {:.0} sends/s ({} connections, p99 {:.2} ms)",
                r.sends_per_sec, r.concurrency, r.latency.p99_ms
            )?;
        }
        writeln!(
            f,
            "  gateway ready in {:.1} s; {} windows opened in {:.1} s",
            self.gateway_ready_s, self.windows_opened, self.windows_s
        )?;
        for k in &self.kinds {
            writeln!(
                f,
                "  {}: {} requests, {} ok, errors {:?}, at sandbox {}; {}",
                k.kind,
                k.requests,
                k.ok,
                k.errors,
                k.at_sandbox.map_or("-".into(), |n| n.to_string()),
                if k.latency.count > 0 {
                    k.latency.to_string()
                } else {
                    "no answer to wait for".into()
                }
            )?;
            if let Some(e) = &k.first_error {
                writeln!(f, "    first error: {e}")?;
            }
        }
        writeln!(
            f,
            "  {} messages; Meta accepted {:.0}, read {:.0}, settled {:.0}; at sandbox {}, {} duplicates, rejections {:?}, busiest number {} in 1 s",
            self.messages,
            self.meta_accepted,
            self.statuses_read,
            self.settled,
            self.at_sandbox,
            self.duplicates,
            self.sim_rejections,
            self.max_per_number_1s
        )?;
        write!(f, "{}", kit::checks_text(&self.checks()))?;
        writeln!(
            f,
            "  CPU traffic: gateway {}, redis {}, sandbox {:.0} %, loadgen {:.0} %; threads {}",
            pct(self.cpu_traffic.gateway_pct),
            pct(self.cpu_traffic.redis_pct),
            self.cpu_traffic.sandbox_pct,
            self.cpu_traffic.loadgen_pct,
            threads(&self.cpu_traffic)
        )?;
        writeln!(
            f,
            "  redis commands per message: {}",
            self.redis_commands_per_message.text()
        )?;
        writeln!(
            f,
            "  gateway sends by outcome {:?}; Meta errors by code {:?}; /metrics read mean {:.0} ms, max {:.0} ms",
            self.gateway_sends, self.meta_errors, self.scrape_mean_ms, self.scrape_max_ms
        )?;
        finish::write_footer(
            f,
            self.redis_keys_deleted,
            &self.gateway_log,
            &self.problems,
        )
    }
}

pub fn window_patient(clinic: usize, k: usize, per_clinic: usize) -> String {
    format!("+9190{:08}", (clinic * per_clinic + k) % 100_000_000)
}

fn event_patient(kind: Kind, i: usize) -> String {
    let prefix = match kind {
        Kind::Appointment => "96",
        Kind::LabReport => "95",
        Kind::Prescription => "94",
        _ => "93",
    };
    format!("+91{prefix}{:08}", i % 100_000_000)
}

fn start_sandbox(o: &AggregatorOptions, gateway_base: &str) -> Result<SandboxHandle> {
    let mut defs = Vec::new();
    for name in TEMPLATES {
        defs.push(kit::library_template(&o.templates_dir, "en", name)?);
    }
    let state = SandboxState::new(SandboxConfig {
        webhook_url: Some(format!("{gateway_base}/webhooks/whatsapp")),
        app_secret: APP_SECRET.into(),
        unlimited: false,
        status_latency: o.status_latency,
        read_receipts: true,
        webhook_retry_interval: Duration::from_millis(300),
        record_limit: 2_000_000,
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    for c in 0..o.clinics {
        state.register_number(
            &number_id(c),
            &waba_id(c),
            &format!("9180455{c:05}"),
            o.tier_mps,
        );
        for d in &defs {
            state.add_template_def(&waba_id(c), d, TemplateStatus::Approved);
        }
    }
    Sandbox::spawn_state(state, o.sim_workers.max(1)).context("starting the sandbox")
}

struct Ctx {
    http: reqwest::Client,
    base: String,
    sim: SandboxState,
    auth: Vec<String>,
    pnids: Vec<String>,
    pdf_b64: String,
    window_patients: usize,
}

#[derive(Default)]
struct KindAcc {
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    latency: Latencies,
}

struct ClientOut {
    stats: Vec<KindAcc>,
}

impl ClientOut {
    fn new() -> Self {
        Self {
            stats: Kind::ALL.iter().map(|_| KindAcc::default()).collect(),
        }
    }
}

async fn one_op(ctx: &Ctx, kind: Kind, i: usize, c: usize, r: u64) -> Result<(), String> {
    let (path, body, want) = match kind {
        Kind::Reply => {
            let k = (r >> 20) as usize % ctx.window_patients.max(1);
            ctx.sim.inject_inbound_text(
                &ctx.pnids[c],
                &window_patient(c, k, ctx.window_patients),
                REPLY_TEXT,
            );
            return Ok(());
        }
        Kind::Appointment => (
            "/v1/appointments",
            json!({"patient": {"phone": event_patient(kind, i), "name": "Asha", "language": "en"},
                   "doctor": "Dr. Rao",
                   "start": kit::rfc3339_in(Duration::from_secs(3 * 86_400 + (i % 86_400) as u64))}),
            201,
        ),
        Kind::LabReport => (
            "/v1/lab-reports",
            json!({"external_id": format!("LAB-{i}"),
                   "patient": {"phone": event_patient(kind, i), "name": "Meena", "language": "en"},
                   "title": "Complete blood count", "pdf_base64": ctx.pdf_b64}),
            201,
        ),
        Kind::Prescription => (
            "/v1/prescriptions",
            json!({"external_id": format!("RX-{i}"),
                   "patient": {"phone": event_patient(kind, i), "name": "Ravi", "language": "en"},
                   "doctor": "Dr. Rao", "pdf_base64": ctx.pdf_b64}),
            201,
        ),
        Kind::Text => {
            let k = (r >> 20) as usize % ctx.window_patients.max(1);
            (
                "/v1/messages",
                json!({"to": window_patient(c, k, ctx.window_patients), "from": ctx.pnids[c],
                       "type": "text", "text": {"body": FREE_TEXT}}),
                202,
            )
        }
    };
    let resp = ctx
        .http
        .post(format!("{}{path}", ctx.base))
        .header("authorization", &ctx.auth[c])
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_owned()
            } else {
                format!("transport: {e}")
            }
        })?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    if status == want {
        Ok(())
    } else {
        Err(format!(
            "http {status}: {:.200}",
            String::from_utf8_lossy(&bytes)
        ))
    }
}

fn kind_stats_into(
    outs: Vec<ClientOut>,
    records: &[SentRecord],
    since: SystemTime,
) -> (Vec<KindReport>, u64, u64) {
    let mut at_sandbox: HashMap<&str, usize> = HashMap::new();
    for r in records.iter().filter(|r| r.at >= since) {
        let name = match &r.message.content {
            Content::Template { template } => template.name.as_str(),
            Content::Text { .. } => "text",
            _ => "other",
        };
        *at_sandbox.entry(name).or_default() += 1;
    }
    let mut reports: Vec<KindReport> = Kind::ALL
        .iter()
        .map(|k| KindReport {
            kind: k.name(),
            at_sandbox: k.sends().map(|s| at_sandbox.get(s).copied().unwrap_or(0)),
            ..KindReport::default()
        })
        .collect();
    let mut lats: Vec<Latencies> = Kind::ALL.iter().map(|_| Latencies::new()).collect();
    for out in outs {
        for (idx, a) in out.stats.into_iter().enumerate() {
            let r = &mut reports[idx];
            r.requests += a.requests;
            r.ok += a.ok;
            for (k, v) in a.errors {
                *r.errors.entry(k).or_default() += v;
            }
            if r.first_error.is_none() {
                r.first_error = a.first_error;
            }
            lats[idx].merge(&a.latency);
        }
    }
    let mut messages = 0;
    let mut requests = 0;
    for (idx, r) in reports.iter_mut().enumerate() {
        r.latency = lats[idx].summary();
        requests += r.requests;
        if Kind::ALL[idx].sends().is_some() {
            messages += r.ok;
        }
    }
    (reports, messages, requests)
}

fn progress_point(t0: Instant, api: u64, m0: &Scrape, m: &Scrape, took: Duration) -> Progress {
    let d = |name: &str, labels: &[(&str, &str)]| m.sum(name, labels) - m0.sum(name, labels);
    Progress {
        scrape_ms: took.as_secs_f64() * 1000.0,
        t_s: t0.elapsed().as_secs_f64(),
        api_accepted: api,
        meta_accepted: d("clinic_gateway_sends_total", &[("outcome", "accepted")]),
        read: d("clinic_gateway_message_states_total", &[("state", "read")]),
        settled: d(
            "clinic_gateway_wallet_movements_total",
            &[("kind", "settled")],
        ),
    }
}

/// Runs the scenario. `Err` is a setup failure; shortfalls are in `problems`.
pub async fn run(o: AggregatorOptions) -> Result<AggregatorReport> {
    if o.clinics == 0 || o.concurrency == 0 || o.window_patients == 0 {
        bail!("--clinics, --concurrency and --window-patients must be at least 1");
    }
    let mut run = RunInfo::start();
    let raw = if o.raw_duration.is_zero() {
        None
    } else {
        eprintln!(
            "loadgen: raw ceiling first ({} connections, {:.0} s)",
            o.raw_concurrency,
            o.raw_duration.as_secs_f64()
        );
        Some(
            raw::run(RawOptions {
                target: None,
                concurrency: o.raw_concurrency,
                duration: o.raw_duration,
                sim_workers: o.sim_workers,
            })
            .await?,
        )
    };

    let RunSetup {
        port,
        base,
        prefix,
        dir,
        mut redis,
        redis_pid,
        ..
    } = prepare("aggregator", &o.redis_url).await?;
    let sandbox = start_sandbox(&o, &base)?;
    let sim = sandbox.state();
    kit::announce(&base, &sandbox.base_url(), &prefix, &dir);
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(o.clinics, o.tier_mps),
        port,
        redis_url: &o.redis_url,
        prefix: &prefix,
        sandbox_url: &sandbox.base_url(),
        templates_dir: Some(&o.templates_dir),
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
        .pool_max_idle_per_host(o.concurrency.max(8) * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let t_ready = Instant::now();
    kit::wait_ready(&http, &base, &mut gw, o.ready_timeout).await?;
    let gateway_ready_s = t_ready.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: gateway ready in {gateway_ready_s:.1} s with {} clinics",
        o.clinics
    );
    let mut problems = Vec::new();

    // Open the windows the free texts and replies need: every window patient writes in.
    let m_before = kit::scrape(&http, &base).await.unwrap_or_default();
    let t_win = Instant::now();
    let windows = o.clinics * o.window_patients;
    for c in 0..o.clinics {
        let pnid = number_id(c);
        for k in 0..o.window_patients {
            sim.inject_inbound_text(&pnid, &window_patient(c, k, o.window_patients), WINDOW_TEXT);
        }
    }
    let mut windows_opened = 0;
    loop {
        if let Some(m) = kit::scrape(&http, &base).await {
            windows_opened = (m.sum("clinic_gateway_inbound_messages_total", &[])
                - m_before.sum("clinic_gateway_inbound_messages_total", &[]))
                as usize;
        }
        if windows_opened >= windows {
            break;
        }
        if t_win.elapsed() > Duration::from_secs(120) {
            problems.push(format!(
                "only {windows_opened} of {windows} window-opening messages were applied in 120 s"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let windows_s = t_win.elapsed().as_secs_f64();
    eprintln!("loadgen: {windows_opened} windows open in {windows_s:.1} s; traffic for {:.0} s with {} clients", o.duration.as_secs_f64(), o.concurrency);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ctx = Arc::new(Ctx {
        http: http.clone(),
        base: base.clone(),
        sim: sim.clone(),
        auth: (0..o.clinics)
            .map(|i| format!("Bearer {}", api_key(i)))
            .collect(),
        pnids: (0..o.clinics).map(number_id).collect(),
        pdf_b64: kit::base64(&kit::sample_pdf(
            "Complete blood count: Hb 13.2 g/dL",
            o.pdf_bytes,
        )),
        window_patients: o.window_patients,
    });
    let m0 = kit::scrape(&http, &base).await.unwrap_or_default();
    let cmd0 = kit::commandstats(&mut redis).await;
    let cpu0 = sample(gw.pid(), redis_pid);
    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let deadline = t0 + o.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(o.concurrency);
    for _ in 0..o.concurrency {
        let (ctx, next, accepted, mix, clinics) = (
            ctx.clone(),
            next.clone(),
            accepted.clone(),
            o.mix,
            o.clinics,
        );
        tasks.push(tokio::spawn(async move {
            let mut out = ClientOut::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let r = kit::mix64(i as u64);
                let kind = mix.pick(r);
                let c = i % clinics;
                let t = Instant::now();
                let res = one_op(&ctx, kind, i, c, r).await;
                let s = &mut out.stats[kind.index()];
                s.requests += 1;
                match res {
                    Ok(()) => {
                        s.ok += 1;
                        if kind != Kind::Reply {
                            s.latency.record(t.elapsed());
                            accepted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // Replies never wait; let the other clients run.
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => {
                        s.latency.record(t.elapsed());
                        let key = e.split(':').next().unwrap_or("error").to_owned();
                        *s.errors.entry(key).or_default() += 1;
                        s.first_error.get_or_insert(e);
                    }
                }
            }
            out
        }));
    }
    // Readings while the clients send.
    let mut progress = Vec::new();
    let every = o.scrape_every.max(Duration::from_millis(200));
    while Instant::now() < deadline {
        tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
        let t = Instant::now();
        if let Some(m) = kit::scrape(&http, &base).await {
            progress.push(progress_point(
                t0,
                accepted.load(Ordering::Relaxed),
                &m0,
                &m,
                t.elapsed(),
            ));
        }
    }
    let mut outs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outs.push(t.await.context("an API client panicked")?);
    }
    let traffic_s = t0.elapsed().as_secs_f64();
    let cpu1 = sample(gw.pid(), redis_pid);
    let api_total = accepted.load(Ordering::Relaxed);
    eprintln!(
        "loadgen: traffic done in {traffic_s:.1} s ({api_total} messages accepted); draining"
    );

    // Drain: every accepted message sent, read and settled. /metrics is read only when the
    // sandbox has no status webhook left to deliver, at most every 500 ms.
    let drain_start = Instant::now();
    let mut done_at = None;
    let mut last = None;
    let mut last_scrape: Option<Instant> = None;
    loop {
        let due = sim.webhook_backlog() == 0
            && last_scrape.is_none_or(|l| l.elapsed() >= Duration::from_millis(500));
        let t = Instant::now();
        let reading = if due {
            last_scrape = Some(t);
            kit::scrape(&http, &base).await
        } else {
            None
        };
        if let Some(m) = reading {
            let p = progress_point(t0, api_total, &m0, &m, t.elapsed());
            let complete = p.meta_accepted >= api_total as f64
                && p.read >= api_total as f64
                && p.settled >= api_total as f64;
            progress.push(p.clone());
            last = Some(p);
            if complete {
                done_at = Some(t0.elapsed());
                break;
            }
        }
        if drain_start.elapsed() > o.drain_timeout {
            break;
        }
        if let Some(status) = gw.exited() {
            problems.push(format!("the gateway exited ({status}) during the run"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu2 = sample(gw.pid(), redis_pid);
    let cmd1 = kit::commandstats(&mut redis).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m_end = kit::scrape(&http, &base).await.unwrap_or_default();
    gw.stop();

    let records = sim.sent();
    let rejected = sim.rejected();
    let (kinds, messages, requests) = kind_stats_into(outs, &records, t0_wall);
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut per_number: HashMap<&str, Vec<SystemTime>> = HashMap::new();
    let mut at_sandbox = 0;
    for r in records.iter().filter(|r| r.at >= t0_wall) {
        per_number
            .entry(r.phone_number_id.as_str())
            .or_default()
            .push(r.at);
        if let Some(id) = r.message.biz_opaque_callback_data.as_deref() {
            *ids.entry(id).or_default() += 1;
            at_sandbox += 1;
        }
    }
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    let mut max_per_number_1s = 0;
    let mut numbers_over_tier = 0;
    for times in per_number.values_mut() {
        let m = max_in_window(times, Duration::from_secs(1));
        max_per_number_1s = max_per_number_1s.max(m);
        if o.tier_mps > 0 && m > o.tier_mps as usize {
            numbers_over_tier += 1;
        }
    }
    let mut sim_rejections: BTreeMap<i64, u64> = BTreeMap::new();
    for r in rejected.iter().filter(|r| r.at >= t0_wall) {
        *sim_rejections.entry(r.code).or_default() += 1;
    }

    let end_to_end_s = done_at.map(|d| d.as_secs_f64());
    let end_to_end_per_sec = end_to_end_s.map(|s| messages as f64 / s.max(1e-9));
    // Steady state: settlements between the first reading past half the traffic phase and the
    // last reading of the traffic phase.
    let in_traffic: Vec<&Progress> = progress.iter().filter(|p| p.t_s <= traffic_s).collect();
    let settled_per_sec_steady = match (
        in_traffic.iter().find(|p| p.t_s >= traffic_s / 2.0),
        in_traffic.last(),
    ) {
        (Some(a), Some(b)) if b.t_s - a.t_s > 0.5 => {
            Some((b.settled - a.settled) / (b.t_s - a.t_s))
        }
        _ => None,
    };
    let share_of_raw = match (&raw, end_to_end_per_sec) {
        (Some(r), Some(e)) if r.sends_per_sec > 0.0 => Some(e / r.sends_per_sec),
        _ => None,
    };
    let last = last.unwrap_or(Progress {
        scrape_ms: 0.0,
        t_s: 0.0,
        api_accepted: api_total,
        meta_accepted: 0.0,
        read: 0.0,
        settled: 0.0,
    });
    let scrape_mean_ms = if progress.is_empty() {
        0.0
    } else {
        progress.iter().map(|p| p.scrape_ms).sum::<f64>() / progress.len() as f64
    };
    let scrape_max_ms = progress.iter().map(|p| p.scrape_ms).fold(0.0, f64::max);
    let inbound_applied = m_end.sum("clinic_gateway_inbound_messages_total", &[])
        - m0.sum("clinic_gateway_inbound_messages_total", &[]);
    let replies_injected = kinds[Kind::Reply.index()].ok;

    for k in &kinds {
        let errors: u64 = k.errors.values().sum();
        if errors > 0 {
            problems.push(format!(
                "{}: {errors} of {} requests failed {:?} (first: {})",
                k.kind,
                k.requests,
                k.errors,
                k.first_error.as_deref().unwrap_or("-")
            ));
        }
        if let Some(n) = k.at_sandbox {
            if (n as u64) < k.ok {
                problems.push(format!(
                    "{}: {} accepted but {n} reached the sandbox",
                    k.kind, k.ok
                ));
            }
        }
    }
    if done_at.is_none() {
        problems.push(format!(
            "not every message completed within {:.0} s of the traffic's end: Meta accepted {:.0}, read {:.0}, settled {:.0} of {api_total}",
            o.drain_timeout.as_secs_f64(),
            last.meta_accepted,
            last.read,
            last.settled
        ));
    }
    if duplicates > 0 {
        problems.push(format!("{duplicates} messages reached the sandbox twice"));
    }
    if !sim_rejections.is_empty() {
        problems.push(format!("the sandbox rejected sends: {sim_rejections:?}"));
    }
    if numbers_over_tier > 0 {
        problems.push(format!(
            "{numbers_over_tier} numbers exceeded their tier in a rolling second"
        ));
    }
    if (inbound_applied as u64) < replies_injected {
        problems.push(format!(
            "{replies_injected} replies injected, {inbound_applied:.0} applied by the gateway"
        ));
    }

    let redis_keys_deleted = finish::delete_run_keys(&mut redis, &prefix, o.keep_redis_keys).await;
    let gateway_log = finish::tidy_run_dir(&gw, &dir, &problems, o.keep_files);
    sandbox.stop();
    run.finish();
    Ok(AggregatorReport {
        scenario: "aggregator",
        run,
        clinics: o.clinics,
        tier_mps: o.tier_mps,
        tier_capacity_per_sec: o.clinics as f64 * f64::from(o.tier_mps) * 0.9,
        concurrency: o.concurrency,
        duration_s: traffic_s,
        mix: o.mix,
        pdf_bytes: ctx.pdf_b64.len() / 4 * 3,
        raw,
        gateway_ready_s,
        windows_opened,
        windows_s,
        kinds,
        api_requests_per_sec: requests as f64 / traffic_s.max(1e-9),
        messages,
        end_to_end_s,
        end_to_end_per_sec,
        settled_per_sec_steady,
        share_of_raw,
        meta_accepted: last.meta_accepted,
        statuses_read: last.read,
        settled: last.settled,
        progress,
        at_sandbox,
        duplicates,
        sim_rejections,
        max_per_number_1s,
        numbers_over_tier,
        inbound_applied,
        replies_injected,
        gateway_sends: Scrape::delta_by_label(&m0, &m_end, "clinic_gateway_sends_total", "outcome"),
        meta_errors: Scrape::delta_by_label(
            &m0,
            &m_end,
            "clinic_gateway_meta_errors_total",
            "code",
        ),
        scrape_mean_ms,
        scrape_max_ms,
        cpu_traffic: cpu_between(&cpu0, &cpu1),
        cpu_drain: cpu_between(&cpu1, &cpu2),
        redis_commands_per_message: CommandsPer::between(&cmd0, &cmd1, messages),
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

/// Writes `aggregator.json` and `aggregator.md` under `dir`.
pub fn save(dir: &Path, r: &AggregatorReport) -> Result<()> {
    kit::save(dir, "aggregator", r, &r.markdown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let m = parse_mix("appointments=1,texts=1").unwrap_or_default();
        assert_eq!((m.appointments, m.texts, m.replies), (1, 1, 0));
        assert_eq!(m.pick(0), Kind::Appointment);
        assert_eq!(m.pick(1), Kind::Text);
        assert!(parse_mix("x=1").is_err());
        assert!(parse_mix("replies=0").is_err());
        let d = Mix::default();
        let mut counts = [0usize; 5];
        for i in 0..10_000u64 {
            counts[d.pick(kit::mix64(i)).index()] += 1;
        }
        // 30/15/15/25/15 within a couple of percent.
        assert!((2_800..3_200).contains(&counts[0]), "{counts:?}");
        assert!((1_300..1_700).contains(&counts[4]), "{counts:?}");
    }

    #[test]
    fn patients_are_distinct_per_kind() {
        assert_ne!(
            event_patient(Kind::Appointment, 1),
            event_patient(Kind::LabReport, 1)
        );
        assert_eq!(window_patient(2, 3, 10), "+919000000023");
    }
}
