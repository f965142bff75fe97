//! `raw`: the send path's ceiling on this machine. Closed-loop template sends straight at the Meta
//! sandbox through the gateway's own Graph client (`whatsapp_cloud::GraphClient` with the
//! gateway's `ClientConfig`: pooled HTTP/1.1 keep-alive, TCP_NODELAY, 3 s connect and 10 s
//! request timeouts, 256 idle connections per host), no gateway in between. The sandbox runs in
//! loadgen's process (unlimited: no tier or pair-rate checks) unless `--target` names a running
//! `meta-sim`. [`crate::aggregator`] measures it in the same run as its yardstick.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxState, TemplateCategory, TemplateStatus,
};
use whatsapp_cloud::wire::OutgoingMessage;
use whatsapp_cloud::{ClientConfig, GraphClient};

use crate::kit::{self, Check, RunInfo};
use crate::procstat;
use crate::stats::{Latencies, LatencySummary};

const PNID: &str = "1001";
const WABA: &str = "waba_1001";
const TOKEN: &str = "raw-token";

#[derive(Debug, Clone)]
pub struct RawOptions {
    /// A running `meta-sim` (started with `--unlimited`); `None` starts the sandbox in process.
    pub target: Option<String>,
    /// Sends in flight (the gateway's default `dispatch.max_in_flight` per number is 64).
    pub concurrency: usize,
    pub duration: Duration,
    /// actix workers of the in-process sandbox.
    pub sim_workers: usize,
}

/// `loadgen raw` flags.
#[derive(Debug, clap::Args)]
pub struct RawArgs {
    /// A running `meta-sim` (start it with --unlimited); by default the sandbox runs in
    /// loadgen's process.
    #[arg(long)]
    pub target: Option<String>,
    /// Sends in flight (the gateway's `dispatch.max_in_flight` per number is 64).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to send (--quick: at most 2 s).
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    pub sim_workers: usize,
}

impl RawArgs {
    pub fn options(self, quick: bool) -> RawOptions {
        RawOptions {
            target: self.target,
            concurrency: self.concurrency,
            duration: if quick {
                self.duration.min(Duration::from_secs(2))
            } else {
                self.duration
            },
            sim_workers: self.sim_workers,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RawReport {
    pub scenario: &'static str,
    pub run: RunInfo,
    pub target: String,
    pub in_process_sandbox: bool,
    pub concurrency: usize,
    pub duration_s: f64,
    pub ok: u64,
    /// Failed sends by error (Meta code or transport).
    pub errors: BTreeMap<String, u64>,
    pub sends_per_sec: f64,
    pub latency: LatencySummary,
    /// CPU of loadgen's process while sending (100 % = one core): the sandbox's threads and the
    /// client's.
    pub sandbox_cpu_pct: f64,
    pub client_cpu_pct: f64,
    pub problems: Vec<String>,
}

impl RawReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn checks(&self) -> Vec<Check> {
        vec![
            Check::new(
                "raw send ceiling (loadgen → sandbox, gateway's Graph client)",
                "the yardstick (no target)",
                format!(
                    "{} sends/s, {} connections, p50 {:.2} ms, p99 {:.2} ms",
                    kit::thousands(self.sends_per_sec as u64),
                    self.concurrency,
                    self.latency.p50_ms,
                    self.latency.p99_ms
                ),
                None,
            ),
            Check::new(
                "errors",
                "0",
                self.errors.values().sum::<u64>().to_string(),
                Some(self.errors.is_empty()),
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        format!(
            "## raw\n\n{}\n{}\nCPU while sending: sandbox {:.0} %, client {:.0} % (100 % = one core).\n",
            self.run.markdown(),
            kit::checks_table(&self.checks()),
            self.sandbox_cpu_pct,
            self.client_cpu_pct
        )
    }
}

impl std::fmt::Display for RawReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "raw: {} connections for {:.1} s against {}{}",
            self.concurrency,
            self.duration_s,
            self.target,
            if self.in_process_sandbox {
                " (sandbox in process)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  {} ok = {:.0} sends/s; errors {:?}",
            self.ok, self.sends_per_sec, self.errors
        )?;
        writeln!(f, "  latency {}", self.latency)?;
        writeln!(
            f,
            "  CPU: sandbox {:.0} %, client {:.0} %",
            self.sandbox_cpu_pct, self.client_cpu_pct
        )?;
        if self.problems.is_empty() {
            write!(f, "  PASS")
        } else {
            write!(f, "  FAIL: {}", self.problems.join("; "))
        }
    }
}

fn message(slot: usize) -> Result<OutgoingMessage> {
    serde_json::from_value(json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": format!("+9198{:08}", slot),
        "type": "template",
        "biz_opaque_callback_data": format!("msg_raw_{slot}"),
        "template": {
            "name": "appointment_reminder",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Asha"}, {"type": "text", "text": "10:30"}
            ]}]
        }
    }))
    .context("building the raw send")
}

async fn seed_remote(base: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let number = json!({"phone_number_id": PNID, "waba_id": WABA,
        "display_phone_number": "918045550000", "tier_mps": 1_000_000});
    let template = json!({"waba_id": WABA, "name": "appointment_reminder", "language": "en",
        "category": "UTILITY", "body_text": "Hi {{1}}, your visit is at {{2}}.", "status": "APPROVED"});
    for (path, body) in [("numbers", number), ("templates", template)] {
        let r = http
            .post(format!("{base}/_sim/{path}"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {base}/_sim/{path}: is meta-sim running?"))?;
        if !r.status().is_success() {
            bail!("POST {base}/_sim/{path} answered {}", r.status());
        }
    }
    Ok(())
}

/// Runs the raw ceiling. `Err` is a setup failure.
pub async fn run(o: RawOptions) -> Result<RawReport> {
    if o.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let mut run = RunInfo::start();
    let (sandbox, base) = match &o.target {
        Some(t) => {
            let base = t.trim_end_matches('/').to_owned();
            seed_remote(&base).await?;
            (None, base)
        }
        None => {
            let state = SandboxState::new(SandboxConfig {
                unlimited: true,
                webhook_url: None,
                auto_register_numbers: false,
                ..SandboxConfig::default()
            });
            state.register_number(PNID, WABA, "918045550000", 1_000_000);
            state.add_template(
                WABA,
                "appointment_reminder",
                "en",
                TemplateCategory::Utility,
                "Hi {{1}}, your visit is at {{2}}.",
                TemplateStatus::Approved,
            );
            let h = Sandbox::spawn_state(state, o.sim_workers.max(1))
                .context("starting the sandbox")?;
            let base = h.base_url();
            (Some(h), base)
        }
    };
    // The gateway's client settings (gateway/src/app.rs: connect_timeout_ms 3,000,
    // request_timeout_ms 10,000, the rest `ClientConfig::default()`).
    let client = GraphClient::new(ClientConfig {
        base_url: base.clone(),
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("building the Graph client: {e}"))?;

    let (sim0, own0) = procstat::own_ticks_split();
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::with_capacity(o.concurrency);
    for slot in 0..o.concurrency {
        let msg = message(slot)?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut lat = Latencies::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match client.send_message(TOKEN, PNID, &msg).await {
                    Ok(_) => {
                        lat.record(t0.elapsed());
                        ok += 1;
                    }
                    Err(e) => {
                        lat.record(t0.elapsed());
                        let key = match e.code() {
                            Some(c) => format!("code {c}"),
                            None => e.to_string().chars().take(80).collect(),
                        };
                        *errors.entry(key).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut latency = Latencies::new();
    for t in tasks {
        let (o, e, l) = t.await.context("a raw sender panicked")?;
        ok += o;
        latency.merge(&l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (sim1, own1) = procstat::own_ticks_split();
    if let Some(h) = sandbox {
        h.stop();
    }
    run.finish();
    let mut problems = Vec::new();
    if ok == 0 {
        problems.push("no send succeeded".into());
    }
    if !errors.is_empty() {
        problems.push(format!("failed sends: {errors:?}"));
    }
    Ok(RawReport {
        scenario: "raw",
        run,
        target: base,
        in_process_sandbox: o.target.is_none(),
        concurrency: o.concurrency,
        duration_s: elapsed,
        ok,
        errors,
        sends_per_sec: ok as f64 / elapsed.max(1e-9),
        latency: latency.summary(),
        sandbox_cpu_pct: procstat::percent(sim0, sim1, elapsed),
        client_cpu_pct: procstat::percent(own0, own1, elapsed),
        problems,
    })
}

/// Writes `raw.json` and `raw.md` under `dir`.
pub fn save(dir: &Path, r: &RawReport) -> Result<()> {
    kit::save(dir, "raw", r, &r.markdown())
}
