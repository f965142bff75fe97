//! `spike`: one broadcast to a large explicit list (`POST /v1/broadcasts` with `recipients`) on one
//! business number at the 1,000 mps tier, with a lab report posted every 100 ms while it runs.
//!
//! The sandbox enforces the tier (Meta's 130429 beyond `tier` sends in any rolling second) and
//! sends `sent`/`delivered`/`read` webhooks back. The gateway runs with
//! `dispatch.tier_headroom` = `--tier-headroom` (default 0.995, so the pacer targets the whole tier;
//! the gateway's own default is 0.9 for safety). Reported: the broadcast's duration against the
//! ideal `recipients / tier` seconds, 130429 answers at the sandbox, the most sends of the number
//! in any rolling second, and each lab report's latency from its enqueue to the sandbox's
//! receipt of its `lab_report_ready` send (bounded from both sides: from the API call's start,
//! which includes the PDF's upload to Meta, and from the moment its 201 was read).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxHandle, SandboxState, TemplateCategory,
};
use whatsapp_cloud::wire::{Content, TemplateStatus};

use crate::e2e::{
    api_key, cpu_between, gateway_toml, number_id, prepare, sample, waba_id, CpuReport, RunSetup,
    APP_SECRET,
};
use crate::finish;
use crate::kit::{self, Check, CommandsPer, RunInfo, Scrape};
use crate::stats::{max_in_window, Latencies, LatencySummary};

pub const TEMPLATE: &str = "spike_notice";
/// Issue #9: the broadcast ends within 2 % of the ideal, lab reports p99 ≤ 50 ms.
pub const DURATION_TOLERANCE: f64 = 0.02;
pub const LAB_P99_TARGET_MS: f64 = 50.0;

#[derive(Debug, Clone)]
pub struct SpikeOptions {
    pub recipients: usize,
    /// Country codes of the recipients, 10,000 consecutive recipients each (round robin).
    pub country_codes: Vec<String>,
    pub tier_mps: u32,
    pub tier_headroom: f64,
    pub lab_interval: Duration,
    pub pdf_bytes: usize,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    pub templates_dir: PathBuf,
    pub sim_workers: usize,
    pub status_latency: Duration,
    pub read_receipts: bool,
    pub gateway_log_level: String,
    pub gateway_env: Vec<(String, String)>,
    /// Give up this long after the ideal duration.
    pub slack: Duration,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
}

/// `loadgen spike` flags.
#[derive(Debug, clap::Args)]
pub struct SpikeArgs {
    /// Broadcast recipients, an explicit list (--quick: at most 2,000).
    #[arg(long, default_value_t = 100_000)]
    pub recipients: usize,
    /// Country codes of the recipients, 10,000 consecutive recipients each, round robin
    /// (e.g. 91,44,61,65,971,94,880,49,33,81). With Indian numbers only, recipients beyond
    /// 10,000 share the first two and last four digits with an earlier one (gateways before
    /// commit 0b5db23 keyed broadcast copies on those and lost such recipients).
    #[arg(long, value_delimiter = ',', default_value = "91")]
    pub country_codes: Vec<String>,
    /// Throughput tier of the number (gateway config and sandbox).
    #[arg(long, default_value_t = 1_000)]
    pub tier_mps: u32,
    /// `dispatch.tier_headroom` of the gateway: the share of the tier its pacer targets (the
    /// gateway's default is 0.9).
    #[arg(long, default_value_t = 0.995)]
    pub tier_headroom: f64,
    /// A lab report this often while the broadcast runs.
    #[arg(long, default_value = "100ms", value_parser = crate::parse_duration)]
    pub lab_interval: Duration,
    /// Size of each lab report PDF (0: the bare one-page PDF, ~600 bytes).
    #[arg(long, default_value_t = 0)]
    pub pdf_bytes: usize,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    pub gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The template library (the sandbox gets `lab_report_ready` from it).
    #[arg(long, default_value = "config/templates")]
    pub templates_dir: PathBuf,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    pub sim_workers: usize,
    /// Sandbox delay before each status webhook (sent, delivered, read).
    #[arg(long, default_value = "50ms", value_parser = crate::parse_duration)]
    pub status_latency: Duration,
    /// The sandbox sends no `read` statuses.
    #[arg(long)]
    pub no_read_receipts: bool,
    /// RUST_LOG of the gateway child.
    #[arg(long, default_value = "warn")]
    pub gateway_log: String,
    /// Extra environment for the gateway child, KEY=VALUE, repeatable.
    #[arg(long = "gateway-env", value_parser = kit::parse_env)]
    pub gateway_env: Vec<(String, String)>,
    /// Give up this long after 1.5 × the ideal duration.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    pub slack: Duration,
    /// Leave the run's Redis keys in place.
    #[arg(long)]
    pub keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    pub keep_files: bool,
}

impl SpikeArgs {
    pub fn options(self, quick: bool) -> SpikeOptions {
        SpikeOptions {
            recipients: if quick {
                self.recipients.min(2_000)
            } else {
                self.recipients
            },
            country_codes: self.country_codes,
            tier_mps: self.tier_mps,
            tier_headroom: self.tier_headroom,
            lab_interval: self.lab_interval,
            pdf_bytes: self.pdf_bytes,
            gateway_bin: self.gateway_bin,
            redis_url: self.redis_url,
            templates_dir: self.templates_dir,
            sim_workers: self.sim_workers,
            status_latency: self.status_latency,
            read_receipts: !self.no_read_receipts,
            gateway_log_level: self.gateway_log,
            gateway_env: self.gateway_env,
            slack: if quick {
                self.slack.min(Duration::from_secs(15))
            } else {
                self.slack
            },
            keep_redis_keys: self.keep_redis_keys,
            keep_files: self.keep_files,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LabReports {
    pub posted: usize,
    pub accepted: usize,
    pub sent: usize,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// The API call itself (includes the PDF's upload to the sandbox's media endpoint).
    pub api: LatencySummary,
    /// API call start → the sandbox recorded the send (upper bound of enqueue → sent).
    pub call_to_sent: LatencySummary,
    /// 201 read → the sandbox recorded the send (lower bound; 0 when it was sent first).
    pub answer_to_sent: LatencySummary,
    pub sent_before_answer_read: u64,
    /// The gateway's own `event_to_send_seconds{lane="care"}` over the spike, from its buckets
    /// (upper bounds, seconds).
    pub gateway_p50_s: Option<f64>,
    pub gateway_p99_s: Option<f64>,
    /// The same for the lab reports posted while the broadcast was being sent (between its
    /// first and last send at the sandbox): the target's "during the spike".
    pub during_broadcast: usize,
    pub during_call_to_sent: LatencySummary,
    pub during_answer_to_sent: LatencySummary,
    /// Enqueue → sent: the message's `created_at` (set when the gateway builds it, just before
    /// the outbox accept, after the PDF's upload) → the sandbox recorded the send. Both clocks
    /// are this machine's wall clock.
    pub during_enqueue_to_sent: LatencySummary,
    /// Lab reports whose message could not be read back (no enqueue time).
    pub enqueue_unknown: usize,
    /// Lab reports posted before the broadcast's first send (the number idle, the broadcast
    /// being created and queued).
    pub before_broadcast_call_to_sent: LatencySummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpikeReport {
    pub scenario: &'static str,
    pub run: RunInfo,
    pub recipients: usize,
    pub tier_mps: u32,
    pub tier_headroom: f64,
    /// recipients / tier.
    pub ideal_s: f64,
    /// recipients / ⌊tier × headroom⌋: what the pacer aims at.
    pub paced_ideal_s: f64,
    /// (recipients + lab reports) / ⌊tier × headroom⌋: the lab reports share the tier.
    pub paced_ideal_with_labs_s: f64,
    pub country_codes: Vec<String>,
    /// Recipients with distinct masked forms (first two and last four digits). Gateways before
    /// commit 0b5db23 derived each copy's message id from the masked number, so recipients
    /// sharing one were one message id (and all but the first were lost).
    pub distinct_masked_recipients: usize,
    pub broadcast_id: Option<String>,
    pub create_latency_ms: f64,
    /// POST /v1/broadcasts sent → the last broadcast send recorded by the sandbox.
    pub duration_s: Option<f64>,
    /// First → last broadcast send at the sandbox.
    pub first_to_last_s: Option<f64>,
    /// The 202 of POST /v1/broadcasts → the last broadcast send (the list resolved and checked
    /// inside the API call is left out).
    pub from_accepted_s: Option<f64>,
    /// How far `from_accepted_s` is over the ideal, in %: what the duration check judges. The
    /// broadcast exists from its 202; the API call before it uploads, validates and resolves the
    /// list (1.4 s for 100,000 explicit recipients), reported as `create_latency_ms`.
    pub over_ideal_pct: Option<f64>,
    pub broadcast_sent: usize,
    pub broadcast_missing: usize,
    pub broadcast_duplicates: usize,
    pub rejections_130429: u64,
    pub sim_rejections: BTreeMap<i64, u64>,
    /// Most sends of the number in any rolling second (broadcast and lab reports).
    pub max_sends_1s: usize,
    /// Sends per second of the run at the sandbox, in order.
    pub sends_per_second: Vec<usize>,
    pub lab_reports: LabReports,
    /// `GET /v1/broadcasts/{id}` at the end.
    pub final_progress: Option<Value>,
    /// The gateway's `sends_total` by outcome and `meta_errors_total` by code over the spike.
    pub gateway_sends: BTreeMap<String, f64>,
    pub meta_errors: BTreeMap<String, f64>,
    /// The gateway's send round trips to the sandbox (`meta_request_duration_seconds{op="send"}`):
    /// mean, and the p50 / p99 buckets' upper bounds, in ms. Each send holds its place in the
    /// number's window from its release until one second after this answer, so the mean is what
    /// the window costs of the tier (tier / (1 s + mean)).
    pub meta_send_ms: MetaRoundTrip,
    pub cpu: CpuReport,
    pub redis_commands_per_message: CommandsPer,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MetaRoundTrip {
    pub mean: Option<f64>,
    pub p50_le: Option<f64>,
    pub p99_le: Option<f64>,
}

impl MetaRoundTrip {
    fn between(m0: &Scrape, m1: &Scrape) -> Self {
        const NAME: &str = "clinic_gateway_meta_request_duration_seconds";
        let labels = [("op", "send")];
        let count =
            m1.sum(&format!("{NAME}_count"), &labels) - m0.sum(&format!("{NAME}_count"), &labels);
        let sum = m1.sum(&format!("{NAME}_sum"), &labels) - m0.sum(&format!("{NAME}_sum"), &labels);
        let ms = |q| Scrape::histogram_quantile(m0, m1, NAME, &labels, q).map(|s| s * 1000.0);
        Self {
            mean: (count > 0.0).then(|| sum / count * 1000.0),
            p50_le: ms(0.5),
            p99_le: ms(0.99),
        }
    }

    fn text(&self) -> String {
        let f = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} ms"));
        format!(
            "mean {}, p50 ≤ {}, p99 ≤ {}",
            f(self.mean),
            f(self.p50_le),
            f(self.p99_le)
        )
    }
}

impl SpikeReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn checks(&self) -> Vec<Check> {
        let l = &self.lab_reports;
        vec![
            Check::new(
                format!(
                    "{}-recipient broadcast at {} mps (tier_headroom {})",
                    kit::thousands(self.recipients as u64),
                    self.tier_mps,
                    self.tier_headroom
                ),
                format!(
                    "≤ {:.1} s (ideal {:.1} s + 2 %)",
                    self.ideal_s * (1.0 + DURATION_TOLERANCE),
                    self.ideal_s
                ),
                match (self.from_accepted_s, self.over_ideal_pct) {
                    (Some(d), Some(p)) => format!(
                        "{d:.2} s from the 202 to the last send ({p:+.2} %); first → last send {:.2} s; creating it (the API call with the list) {:.1} s, so {:.2} s from the POST; the pacer's own ideal with the lab reports {:.2} s",
                        self.first_to_last_s.unwrap_or(0.0),
                        self.create_latency_ms / 1000.0,
                        self.duration_s.unwrap_or(0.0),
                        self.paced_ideal_with_labs_s
                    ),
                    _ => "did not finish".into(),
                },
                Some(self.over_ideal_pct.is_some_and(|p| p <= DURATION_TOLERANCE * 100.0)),
            ),
            Check::new(
                "130429 at the sandbox",
                "0",
                self.rejections_130429.to_string(),
                Some(self.rejections_130429 == 0),
            ),
            Check::new(
                "max sends in any 1 s at the sandbox",
                format!("≤ {}", self.tier_mps),
                self.max_sends_1s.to_string(),
                Some(self.max_sends_1s <= self.tier_mps as usize),
            ),
            Check::new(
                "lab report enqueue → sent p99 during the spike",
                format!("≤ {LAB_P99_TARGET_MS:.0} ms"),
                format!(
                    "{} reports while the broadcast was sent: p50 {:.1} ms, p99 {:.1} ms from the enqueue ({} not read back); p50 {:.1} ms, p99 {:.1} ms from the API call's start (the call uploads the PDF to Meta first), p50 {:.1} ms, p99 {:.1} ms from its 201 (all {}: p99 {:.1} ms from the call; before the first broadcast send: p50 {:.1} ms, p99 {:.1} ms; gateway care-lane histogram p99 ≤ {})",
                    l.during_broadcast,
                    l.during_enqueue_to_sent.p50_ms,
                    l.during_enqueue_to_sent.p99_ms,
                    l.enqueue_unknown,
                    l.during_call_to_sent.p50_ms,
                    l.during_call_to_sent.p99_ms,
                    l.during_answer_to_sent.p50_ms,
                    l.during_answer_to_sent.p99_ms,
                    l.sent,
                    l.call_to_sent.p99_ms,
                    l.before_broadcast_call_to_sent.p50_ms,
                    l.before_broadcast_call_to_sent.p99_ms,
                    l.gateway_p99_s
                        .map_or("n/a".into(), |s| format!("{:.0} ms", s * 1000.0)),
                ),
                Some(
                    l.during_broadcast > 0
                        && l.enqueue_unknown == 0
                        && l.during_enqueue_to_sent.p99_ms <= LAB_P99_TARGET_MS,
                ),
            ),
            Check::new(
                "broadcast lost / duplicated; lab reports lost",
                "0 / 0; 0",
                format!(
                    "{} / {}; {}",
                    self.broadcast_missing,
                    self.broadcast_duplicates,
                    l.accepted.saturating_sub(l.sent)
                ),
                Some(
                    self.broadcast_missing == 0
                        && self.broadcast_duplicates == 0
                        && l.accepted == l.sent,
                ),
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## spike\n\n{}- one number at {} mps, `dispatch.tier_headroom` = {} (the gateway's default is 0.9), a lab report every {:.0} ms during the broadcast\n\n",
            self.run.markdown(),
            self.tier_mps,
            self.tier_headroom,
            self.lab_reports_interval_ms()
        );
        s.push_str(&kit::checks_table(&self.checks()));
        s.push_str(&format!(
            "\nGateway sends by outcome {:?}; Meta errors by code {:?}; send round trip {}.\n",
            self.gateway_sends,
            self.meta_errors,
            self.meta_send_ms.text()
        ));
        s.push_str(&format!(
            "\nCPU (100 % = one core): gateway {}, redis {}, sandbox {:.0} %, loadgen {:.0} %; busiest gateway threads: {}\n\nRedis commands per message: {}\n",
            self.cpu.gateway_pct.map_or("n/a".into(), |v| format!("{v:.0} %")),
            self.cpu.redis_pct.map_or("n/a".into(), |v| format!("{v:.0} %")),
            self.cpu.sandbox_pct,
            self.cpu.loadgen_pct,
            self.cpu
                .gateway_threads
                .iter()
                .map(|(n, v)| format!("{n} {v:.0} %"))
                .collect::<Vec<_>>()
                .join(", "),
            self.redis_commands_per_message.text()
        ));
        if !self.problems.is_empty() {
            s.push_str(&format!("\nProblems: {}\n", self.problems.join("; ")));
        }
        s
    }

    fn lab_reports_interval_ms(&self) -> f64 {
        match (self.duration_s, self.lab_reports.posted) {
            (Some(d), n) if n > 0 => d * 1000.0 / n as f64,
            _ => 0.0,
        }
    }
}

impl std::fmt::Display for SpikeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "spike: broadcast to {} recipients at {} mps (tier_headroom {}), lab report every ~{:.0} ms",
            self.recipients,
            self.tier_mps,
            self.tier_headroom,
            self.lab_reports_interval_ms()
        )?;
        writeln!(
            f,
            "  broadcast {} created in {:.1} ms; {} sent, {} missing, {} duplicates; rejections {:?}",
            self.broadcast_id.as_deref().unwrap_or("-"),
            self.create_latency_ms,
            self.broadcast_sent,
            self.broadcast_missing,
            self.broadcast_duplicates,
            self.sim_rejections
        )?;
        let l = &self.lab_reports;
        writeln!(
            f,
            "  lab reports: {} posted, {} accepted, {} sent, errors {:?}; API {}",
            l.posted, l.accepted, l.sent, l.errors, l.api
        )?;
        if let Some(e) = &l.first_error {
            writeln!(f, "    first error: {e}")?;
        }
        writeln!(f, "    call → sent {}", l.call_to_sent)?;
        writeln!(
            f,
            "    201 → sent {} ({} sent before the 201 was read)",
            l.answer_to_sent, l.sent_before_answer_read
        )?;
        write!(f, "{}", kit::checks_text(&self.checks()))?;
        writeln!(
            f,
            "  redis commands per message: {}",
            self.redis_commands_per_message.text()
        )?;
        writeln!(
            f,
            "  gateway sends by outcome {:?}; Meta errors by code {:?}; send round trip {}",
            self.gateway_sends,
            self.meta_errors,
            self.meta_send_ms.text()
        )?;
        finish::write_footer(
            f,
            self.redis_keys_deleted,
            &self.gateway_log,
            &self.problems,
        )
    }
}

/// The i-th recipient: blocks of 10,000 consecutive recipients per country code (12 digits in
/// all, national part starting with 9), so that no two recipients share both the first two and
/// the last four digits when `codes` has one code per 10,000 recipients.
pub fn broadcast_patient(i: usize, codes: &[String]) -> String {
    let cc = codes
        .get((i / 10_000) % codes.len().max(1))
        .map_or("91", String::as_str);
    let width = 12usize.saturating_sub(cc.len()).max(9);
    let base = 9 * 10u64.pow(width as u32 - 1);
    format!("+{cc}{}", base + (i as u64 % 10u64.pow(width as u32 - 1)))
}

/// How the gateway's logs show a number (`E164::masked`: the first two digits, stars, the last
/// four). Gateways before commit 0b5db23 keyed broadcast copies on it, so recipients with the
/// same masked form got one copy between them.
pub fn masked(phone: &str) -> String {
    let d = phone.trim_start_matches('+');
    let head = d.len().min(2);
    let tail = 4.min(d.len().saturating_sub(head));
    format!(
        "+{}{}{}",
        &d[..head],
        "*".repeat(d.len() - head - tail),
        &d[d.len() - tail..]
    )
}

fn lab_patient(i: usize) -> String {
    format!("+9192{:08}", i % 100_000_000)
}

fn start_sandbox(o: &SpikeOptions, gateway_base: &str) -> Result<SandboxHandle> {
    let lab = kit::library_template(&o.templates_dir, "en", "lab_report_ready")?;
    let state = SandboxState::new(SandboxConfig {
        webhook_url: Some(format!("{gateway_base}/webhooks/whatsapp")),
        app_secret: APP_SECRET.into(),
        unlimited: false,
        status_latency: o.status_latency,
        read_receipts: o.read_receipts,
        webhook_retry_interval: Duration::from_millis(300),
        record_limit: o.recipients + 100_000,
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    state.register_number(&number_id(0), &waba_id(0), "918045500000", o.tier_mps);
    state.add_template(
        &waba_id(0),
        TEMPLATE,
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}, the clinic runs a free check-up camp this Sunday.",
        TemplateStatus::Approved,
    );
    state.add_template_def(&waba_id(0), &lab, TemplateStatus::Approved);
    Sandbox::spawn_state(state, o.sim_workers.max(1)).context("starting the sandbox")
}

struct LabOutcome {
    patient: String,
    started: SystemTime,
    answered: SystemTime,
    took: Duration,
    /// The gateway's id of the lab report's message (from the 201).
    message: Option<String>,
    result: Result<(), String>,
}

async fn post_lab(
    http: reqwest::Client,
    url: String,
    auth: String,
    pdf: Arc<str>,
    k: usize,
) -> LabOutcome {
    let patient = lab_patient(k);
    let body = json!({"external_id": format!("SPIKE-LAB-{k}"),
                      "patient": {"phone": patient, "name": "Meena", "language": "en"},
                      "title": "HbA1c", "pdf_base64": &*pdf});
    let started = SystemTime::now();
    let t = Instant::now();
    let r = http
        .post(&url)
        .header("authorization", &auth)
        .json(&body)
        .send()
        .await;
    let mut message = None;
    let result = match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            if status == 201 {
                message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
                Ok(())
            } else {
                Err(format!("http {status}: {text:.200}"))
            }
        }
        Err(e) => Err(format!("transport: {e}")),
    };
    LabOutcome {
        patient,
        started,
        answered: SystemTime::now(),
        took: t.elapsed(),
        message,
        result,
    }
}

/// Each lab report's enqueue moment: its message's `created_at`, read back through the API.
async fn enqueue_times(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    outcomes: &[LabOutcome],
) -> HashMap<String, SystemTime> {
    use futures::StreamExt;
    futures::stream::iter(outcomes.iter().filter_map(|o| o.message.clone()))
        .map(|id| async move {
            let v: Value = http
                .get(format!("{base}/v1/messages/{id}"))
                .header("authorization", auth)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let at = chrono::DateTime::parse_from_rfc3339(v.get("created_at")?.as_str()?).ok()?;
            Some((id, SystemTime::from(at)))
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

fn template_of(c: &Content) -> Option<&str> {
    match c {
        Content::Template { template } => Some(template.name.as_str()),
        _ => None,
    }
}

/// Runs the scenario. `Err` is a setup failure; shortfalls are in `problems`.
pub async fn run(o: SpikeOptions) -> Result<SpikeReport> {
    if o.recipients == 0 || o.tier_mps == 0 {
        bail!("--recipients and --tier-mps must be at least 1");
    }
    if o.country_codes.is_empty()
        || o.country_codes
            .iter()
            .any(|c| c.is_empty() || c.len() > 3 || !c.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--country-codes are 1 to 3 digits each (e.g. 91,44,971)");
    }
    if !(0.1..=1.0).contains(&o.tier_headroom) {
        bail!("--tier-headroom must be within 0.1..=1.0");
    }
    let mut run = RunInfo::start();
    let RunSetup {
        port,
        base,
        prefix,
        dir,
        mut redis,
        redis_pid,
        ..
    } = prepare("spike", &o.redis_url).await?;
    let sandbox = start_sandbox(&o, &base)?;
    let sim = sandbox.state();
    kit::announce(&base, &sandbox.base_url(), &prefix, &dir);
    let mut env = vec![(
        "CLINIC_GATEWAY__DISPATCH__TIER_HEADROOM".to_owned(),
        o.tier_headroom.to_string(),
    )];
    env.extend(o.gateway_env.iter().cloned());
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(1, o.tier_mps),
        port,
        redis_url: &o.redis_url,
        prefix: &prefix,
        sandbox_url: &sandbox.base_url(),
        templates_dir: Some(&o.templates_dir),
        log_level: &o.gateway_log_level,
        env: &env,
    };
    let mut gw = match kit::spawn_gateway(&spec, &dir) {
        Ok(gw) => gw,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    kit::wait_ready(&http, &base, &mut gw, Duration::from_secs(30)).await?;
    let auth = format!("Bearer {}", api_key(0));
    // The template is in the clinic's WABA at the sandbox; make the gateway's catalog current
    // (as gateway/tests/broadcasts.rs `drive_templates` does).
    let r = http
        .post(format!("{base}/v1/templates/sync"))
        .header("authorization", &auth)
        .send()
        .await
        .context("POST /v1/templates/sync")?;
    if !r.status().is_success() {
        bail!(
            "POST /v1/templates/sync answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let distinct_masked_recipients = (0..o.recipients)
        .map(|i| masked(&broadcast_patient(i, &o.country_codes)))
        .collect::<std::collections::HashSet<_>>()
        .len();
    let recipients: Vec<Value> = (0..o.recipients)
        .map(|i| json!({"phone": broadcast_patient(i, &o.country_codes), "name": format!("P{i}")}))
        .collect();
    let body = serde_json::to_vec(&json!({
        "name": "Spike",
        "template": {"name": TEMPLATE, "language": "en"},
        "parameters": [{"field": "name"}],
        "recipients": recipients,
    }))?;
    drop(recipients);
    eprintln!(
        "loadgen: broadcasting to {} recipients ({} KiB body) at {} mps",
        o.recipients,
        body.len() / 1024,
        o.tier_mps
    );
    let m0 = kit::scrape(&http, &base).await.unwrap_or_default();
    let cmd0 = kit::commandstats(&mut redis).await;
    let cpu0 = sample(gw.pid(), redis_pid);
    let t0_wall = SystemTime::now();
    let t0 = Instant::now();
    let resp = http
        .post(format!("{base}/v1/broadcasts"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .context("POST /v1/broadcasts")?;
    let status = resp.status().as_u16();
    let created: Value = resp.json().await.unwrap_or(Value::Null);
    let create_latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let accepted_wall = SystemTime::now();
    if status != 202 {
        bail!("POST /v1/broadcasts answered {status}: {created}");
    }
    let broadcast_id = created["broadcast"]["id"].as_str().map(str::to_owned);

    // A lab report every `lab_interval` while the broadcast runs.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<LabOutcome>>> = Arc::new(Mutex::new(Vec::new()));
    let lab_task = {
        let (http, stop, outcomes) = (http.clone(), stop.clone(), outcomes.clone());
        let url = format!("{base}/v1/lab-reports");
        let auth = auth.clone();
        let pdf: Arc<str> = kit::base64(&kit::sample_pdf("HbA1c 6.9 %", o.pdf_bytes)).into();
        let interval = o.lab_interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut handles = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (http, url, auth, pdf, outcomes) = (
                    http.clone(),
                    url.clone(),
                    auth.clone(),
                    pdf.clone(),
                    outcomes.clone(),
                );
                handles.push(tokio::spawn(async move {
                    let out = post_lab(http, url, auth, pdf, k).await;
                    if let Ok(mut v) = outcomes.lock() {
                        v.push(out);
                    }
                }));
                k += 1;
            }
            for h in handles {
                let _ = h.await;
            }
        })
    };

    // Done when the bulk lane has sent every recipient (the gateway's event-to-send count for
    // the bulk lane), read from /metrics twice a second.
    let ideal_s = o.recipients as f64 / f64::from(o.tier_mps);
    let timeout = Duration::from_secs_f64(ideal_s * 1.5) + o.slack;
    let mut problems = Vec::new();
    let mut last_bulk = 0.0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(m) = kit::scrape(&http, &base).await {
            let bulk = m.sum(
                "clinic_gateway_event_to_send_seconds_count",
                &[("lane", "bulk")],
            ) - m0.sum(
                "clinic_gateway_event_to_send_seconds_count",
                &[("lane", "bulk")],
            );
            last_bulk = bulk;
            if bulk >= o.recipients as f64 {
                break;
            }
        }
        if t0.elapsed() > timeout {
            problems.push(format!(
                "the broadcast had sent {last_bulk:.0} of {} after {:.0} s",
                o.recipients,
                timeout.as_secs_f64()
            ));
            break;
        }
        if let Some(status) = gw.exited() {
            problems.push(format!("the gateway exited ({status}) during the run"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = lab_task.await;
    let cpu1 = sample(gw.pid(), redis_pid);
    // The last lab reports reach the sandbox, statuses settle.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m1 = kit::scrape(&http, &base).await.unwrap_or_default();
    let cmd1 = kit::commandstats(&mut redis).await;

    let records: Vec<_> = sim.sent().into_iter().filter(|r| r.at >= t0_wall).collect();
    let rejected = sim.rejected();
    let mut sim_rejections: BTreeMap<i64, u64> = BTreeMap::new();
    for r in rejected.iter().filter(|r| r.at >= t0_wall) {
        *sim_rejections.entry(r.code).or_default() += 1;
    }
    let mut bc_times = Vec::with_capacity(o.recipients);
    let mut bc_seen: HashMap<&str, usize> = HashMap::with_capacity(o.recipients);
    let mut lab_sent: HashMap<&str, SystemTime> = HashMap::new();
    let mut all_times = Vec::with_capacity(records.len());
    for r in &records {
        all_times.push(r.at);
        match template_of(&r.message.content) {
            Some(TEMPLATE) => {
                bc_times.push(r.at);
                *bc_seen.entry(r.to.as_str()).or_default() += 1;
            }
            Some("lab_report_ready") => {
                lab_sent.entry(r.to.as_str()).or_insert(r.at);
            }
            _ => {}
        }
    }
    bc_times.sort_unstable();
    let broadcast_sent = bc_seen.len();
    let broadcast_duplicates: usize = bc_seen.values().map(|n| n - 1).sum();
    let broadcast_missing = o.recipients.saturating_sub(broadcast_sent);
    let duration_s = if broadcast_missing == 0 {
        bc_times.last().map(|l| kit::secs_between(t0_wall, *l))
    } else {
        None
    };
    let from_accepted_s = if broadcast_missing == 0 {
        bc_times
            .last()
            .map(|l| kit::secs_between(accepted_wall, *l))
    } else {
        None
    };
    let first_to_last_s = match (bc_times.first(), bc_times.last()) {
        (Some(a), Some(b)) => Some(kit::secs_between(*a, *b)),
        _ => None,
    };
    let over_ideal_pct = from_accepted_s.map(|d| (d / ideal_s - 1.0) * 100.0);
    let max_sends_1s = max_in_window(&mut all_times, Duration::from_secs(1));
    let mut series: BTreeMap<u64, usize> = BTreeMap::new();
    for t in &all_times {
        let s = t.duration_since(t0_wall).map(|d| d.as_secs()).unwrap_or(0);
        *series.entry(s).or_default() += 1;
    }
    let sends_per_second = match series.keys().next_back() {
        Some(&last) => (0..=last)
            .map(|s| series.get(&s).copied().unwrap_or(0))
            .collect(),
        None => Vec::new(),
    };

    let mut labs = LabReports::default();
    let mut api = Latencies::new();
    let mut call_to_sent = Latencies::new();
    let mut answer_to_sent = Latencies::new();
    let mut during_call = Latencies::new();
    let mut during_answer = Latencies::new();
    let mut before_call = Latencies::new();
    let window = (bc_times.first().copied(), bc_times.last().copied());
    let outcomes = match outcomes.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => Vec::new(),
    };
    let enqueued = enqueue_times(&http, &base, &auth, &outcomes).await;
    let mut during_enqueue = Latencies::new();
    for out in &outcomes {
        labs.posted += 1;
        api.record(out.took);
        match &out.result {
            Ok(()) => {
                labs.accepted += 1;
                if let Some(at) = lab_sent.get(out.patient.trim_start_matches('+')) {
                    labs.sent += 1;
                    let call = at.duration_since(out.started).unwrap_or_default();
                    let answer = at.duration_since(out.answered).unwrap_or_else(|_| {
                        labs.sent_before_answer_read += 1;
                        Duration::ZERO
                    });
                    call_to_sent.record(call);
                    answer_to_sent.record(answer);
                    match window {
                        (Some(first), Some(last))
                            if out.started >= first && out.started <= last =>
                        {
                            labs.during_broadcast += 1;
                            during_call.record(call);
                            during_answer.record(answer);
                            match out.message.as_ref().and_then(|m| enqueued.get(m)) {
                                Some(q) => {
                                    during_enqueue.record(at.duration_since(*q).unwrap_or_default())
                                }
                                None => labs.enqueue_unknown += 1,
                            }
                        }
                        (Some(first), _) if out.started < first => before_call.record(call),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                let key = e.split(':').next().unwrap_or("error").to_owned();
                *labs.errors.entry(key).or_default() += 1;
                labs.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    labs.api = api.summary();
    labs.call_to_sent = call_to_sent.summary();
    labs.answer_to_sent = answer_to_sent.summary();
    labs.during_call_to_sent = during_call.summary();
    labs.during_answer_to_sent = during_answer.summary();
    labs.during_enqueue_to_sent = during_enqueue.summary();
    labs.before_broadcast_call_to_sent = before_call.summary();
    labs.gateway_p50_s = Scrape::histogram_quantile(
        &m0,
        &m1,
        "clinic_gateway_event_to_send_seconds",
        &[("lane", "care")],
        0.5,
    );
    labs.gateway_p99_s = Scrape::histogram_quantile(
        &m0,
        &m1,
        "clinic_gateway_event_to_send_seconds",
        &[("lane", "care")],
        0.99,
    );

    let final_progress = match &broadcast_id {
        Some(id) => match http
            .get(format!("{base}/v1/broadcasts/{id}"))
            .header("authorization", &auth)
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .map(|v| v.get("progress").cloned().unwrap_or(v)),
            Err(_) => None,
        },
        None => None,
    };
    gw.stop();

    let headroom_rate = (f64::from(o.tier_mps) * o.tier_headroom).floor().max(1.0);
    let rejections_130429 = sim_rejections.get(&130429).copied().unwrap_or(0);
    let report_problems = {
        let mut p = Vec::new();
        if broadcast_missing > 0 {
            p.push(format!(
                "{broadcast_missing} broadcast recipients got nothing ({} distinct first-two/last-four-digit forms among {} recipients)",
                distinct_masked_recipients, o.recipients
            ));
        }
        if broadcast_duplicates > 0 {
            p.push(format!(
                "{broadcast_duplicates} broadcast messages reached the sandbox twice"
            ));
        }
        if rejections_130429 > 0 {
            p.push(format!("{rejections_130429} × 130429 at the sandbox"));
        }
        if labs.accepted < labs.posted {
            p.push(format!(
                "{} of {} lab reports not accepted ({})",
                labs.posted - labs.accepted,
                labs.posted,
                labs.first_error.as_deref().unwrap_or("-")
            ));
        }
        if labs.sent < labs.accepted {
            p.push(format!(
                "{} accepted lab reports never reached the sandbox",
                labs.accepted - labs.sent
            ));
        }
        p
    };
    problems.extend(report_problems);

    let redis_keys_deleted = finish::delete_run_keys(&mut redis, &prefix, o.keep_redis_keys).await;
    let gateway_log = finish::tidy_run_dir(&gw, &dir, &problems, o.keep_files);
    sandbox.stop();
    run.finish();
    let messages = (broadcast_sent + labs.sent) as u64;
    Ok(SpikeReport {
        scenario: "spike",
        run,
        recipients: o.recipients,
        tier_mps: o.tier_mps,
        tier_headroom: o.tier_headroom,
        ideal_s,
        paced_ideal_s: o.recipients as f64 / headroom_rate,
        paced_ideal_with_labs_s: (o.recipients + labs.accepted) as f64 / headroom_rate,
        country_codes: o.country_codes.clone(),
        distinct_masked_recipients,
        broadcast_id,
        create_latency_ms,
        duration_s,
        first_to_last_s,
        from_accepted_s,
        over_ideal_pct,
        broadcast_sent,
        broadcast_missing,
        broadcast_duplicates,
        rejections_130429,
        sim_rejections,
        max_sends_1s,
        sends_per_second,
        lab_reports: labs,
        final_progress,
        gateway_sends: Scrape::delta_by_label(&m0, &m1, "clinic_gateway_sends_total", "outcome"),
        meta_errors: Scrape::delta_by_label(&m0, &m1, "clinic_gateway_meta_errors_total", "code"),
        meta_send_ms: MetaRoundTrip::between(&m0, &m1),
        cpu: cpu_between(&cpu0, &cpu1),
        redis_commands_per_message: CommandsPer::between(&cmd0, &cmd1, messages),
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

/// Writes `spike.json` and `spike.md` under `dir`.
pub fn save(dir: &Path, r: &SpikeReport) -> Result<()> {
    kit::save(dir, "spike", r, &r.markdown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_are_distinct() {
        let india = vec!["91".to_owned()];
        assert_eq!(broadcast_patient(5, &india), "+919000000005");
        assert_ne!(broadcast_patient(5, &india), lab_patient(5));
        let codes: Vec<String> = ["91", "44", "971"].iter().map(|c| c.to_string()).collect();
        assert_eq!(broadcast_patient(10_001, &codes), "+449000010001");
        assert_eq!(broadcast_patient(20_001, &codes), "+971900020001");
        assert_eq!(masked("+919876543210"), "+91******3210");
        // One country code: 10,000 distinct masked forms at most.
        let distinct: std::collections::HashSet<String> = (0..20_000)
            .map(|i| masked(&broadcast_patient(i, &india)))
            .collect();
        assert_eq!(distinct.len(), 10_000);
        let distinct: std::collections::HashSet<String> = (0..30_000)
            .map(|i| masked(&broadcast_patient(i, &codes)))
            .collect();
        assert_eq!(distinct.len(), 30_000);
    }
}
