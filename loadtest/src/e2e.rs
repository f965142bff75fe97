//! `e2e`: the real gateway binary between a closed-loop API client and the in-process Meta
//! sandbox. Every accepted message must reach the sandbox exactly once, within the number's tier.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxHandle, SandboxState, TemplateCategory, TemplateStatus,
};

use crate::finish;
use crate::kit;
use crate::procstat;
use crate::stats::{max_in_window, Latencies, LatencySummary};

pub const APP_SECRET: &str = "loadgen-app-secret";
pub const TEMPLATE: &str = "appointment_reminder";
/// Sandbox tier of numbers when the gateway runs without a limiter (`--tier-mps 0`).
pub const LARGE_TIER: u32 = 1_000_000;

#[derive(Debug, Clone)]
pub struct E2eOptions {
    pub numbers: usize,
    pub tier_mps: u32,
    pub messages: usize,
    pub concurrency: usize,
    /// Open loop: requests start on a fixed schedule of this many per second (at most
    /// `concurrency` in flight); `None`: closed loop.
    pub rate: Option<u32>,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    pub sim_unlimited: bool,
    pub sim_workers: usize,
    pub status_latency: Duration,
    pub read_receipts: bool,
    pub gateway_workers: Option<usize>,
    pub arbiters: Option<usize>,
    pub gateway_log_level: String,
    /// How long to wait for the sandbox to receive everything after the last accept; derived
    /// from the tier when `None`.
    pub delivery_timeout: Option<Duration>,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
    /// Gateway processes on the same Redis and prefix; more than one runs them in cluster mode
    /// (issue #11) as `node-1..N`.
    pub nodes: usize,
    /// Cluster mode (leases, pub/sub announcements) even with one node, to measure its cost.
    pub cluster: bool,
}

impl E2eOptions {
    /// Whether the gateways run with `cluster.enabled`.
    pub fn clustered(&self) -> bool {
        self.cluster || self.nodes > 1
    }
}

pub fn number_id(i: usize) -> String {
    (110_000_000_000_000u64 + i as u64).to_string()
}

pub fn waba_id(i: usize) -> String {
    (120_000_000_000_000u64 + i as u64).to_string()
}

pub fn api_key(i: usize) -> String {
    format!("loadgen-key-{i:05}")
}

/// A distinct patient per message (below 10^8 messages), so the pair rate never binds.
pub fn recipient(i: usize) -> String {
    format!("+9197{:08}", i % 100_000_000)
}

/// The gateway's `--config` file: one clinic (own API key and WABA) per business number, and a
/// per-clinic API rate limit that never binds (the gateway's default, 200/s per clinic, would
/// otherwise answer most of a one-number run with 429).
pub fn gateway_toml(numbers: usize, tier_mps: u32) -> String {
    let mut s = String::from(
        "# written by loadgen e2e\n[api]\nrate_per_second = 1000000\nburst = 1000000\n",
    );
    for i in 0..numbers {
        let key_hash = hex::encode(Sha256::digest(api_key(i).as_bytes()));
        let _ = write!(
            s,
            "\n[[clinics]]\nid = \"loadgen_{i:05}\"\nname = \"Loadgen clinic {i}\"\n\
             api_key_sha256 = \"{key_hash}\"\ndefault_country_code = \"91\"\nwallet_credit = 1000000000000\n\
             waba_id = \"{waba}\"\napp_secret = \"{APP_SECRET}\"\naccess_token = \"loadgen-token-{i}\"\n\
             [[clinics.numbers]]\nphone_number_id = \"{pnid}\"\ndisplay = \"+91 80 4555 {i:04}\"\n\
             tier_mps = {tier_mps}\n",
            waba = waba_id(i),
            pnid = number_id(i),
        );
    }
    s
}

/// The sustained rate the gateway aims at (it uses 90 % of each tier by default).
pub fn expected_rate(numbers: usize, tier_mps: u32) -> Option<f64> {
    (tier_mps > 0).then(|| numbers as f64 * f64::from(tier_mps) * 0.9)
}

pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// The gateway child; SIGKILLed on drop so no error path leaves it running.
pub(crate) struct Gateway {
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Gateway {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub(crate) fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU use while messages were flowing, in percent of one core.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuReport {
    pub wall_s: f64,
    /// The gateway's busiest threads (name/tid, percent of one core).
    pub gateway_threads: Vec<(String, f64)>,
    pub gateway_pct: Option<f64>,
    pub redis_pct: Option<f64>,
    pub sandbox_pct: f64,
    pub loadgen_pct: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    at: Instant,
    gateway_threads: HashMap<u32, (String, u64)>,
    gateway: Option<u64>,
    redis: Option<u64>,
    sim: u64,
    own: u64,
}

pub(crate) fn sample(gateway: Option<u32>, redis: Option<u32>) -> CpuSample {
    sample_all(gateway.as_slice(), redis.as_slice())
}

/// A sample summed over several gateway processes (nodes) and Redis servers (cluster masters);
/// a total is `None` when there is no such process or one of them is gone.
pub(crate) fn sample_all(gateways: &[u32], redis: &[u32]) -> CpuSample {
    let (sim, own) = procstat::own_ticks_split();
    let total = |pids: &[u32]| -> Option<u64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|p| procstat::process_ticks(*p)).sum()
    };
    CpuSample {
        at: Instant::now(),
        // Thread ids are unique machine-wide, so the nodes' threads can share one map.
        gateway_threads: gateways
            .iter()
            .flat_map(|p| procstat::thread_ticks(*p))
            .collect(),
        gateway: total(gateways),
        redis: total(redis),
        sim,
        own,
    }
}

pub(crate) fn cpu_between(a: &CpuSample, b: &CpuSample) -> CpuReport {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    let pct = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (Some(x), Some(y)) => Some(procstat::percent(x, y, wall)),
        _ => None,
    };
    CpuReport {
        wall_s: wall,
        gateway_threads: procstat::busiest_threads(&a.gateway_threads, &b.gateway_threads, wall, 4),
        gateway_pct: pct(a.gateway, b.gateway),
        redis_pct: pct(a.redis, b.redis),
        sandbox_pct: procstat::percent(a.sim, b.sim, wall),
        loadgen_pct: procstat::percent(a.own, b.own, wall),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub scenario: &'static str,
    /// Gateway processes sharing the Redis prefix; API requests went round-robin over them and
    /// the sandbox's webhooks to the first.
    pub nodes: usize,
    /// Whether they ran in cluster mode (number leases, announcements).
    pub cluster: bool,
    /// Redis servers the run used (masters of a Redis Cluster, or 1).
    pub redis_masters: usize,
    /// Numbers per owning node when sending began (cluster mode only).
    pub owners: BTreeMap<String, usize>,
    /// From all nodes ready to ownership settled (cluster mode only).
    pub ownership_settle_s: Option<f64>,
    /// Numbers whose owner after the run was not the one at the start (cluster mode only).
    pub owners_moved: usize,
    pub numbers: usize,
    pub tier_mps: u32,
    /// numbers × tier × 0.9 (the gateway's headroom); `None` when unlimited.
    pub target_rate: Option<f64>,
    pub messages: usize,
    pub concurrency: usize,
    /// The open-loop schedule, requests/s (`None`: closed loop).
    pub rate: Option<u32>,
    pub sim_unlimited: bool,
    pub accepted: usize,
    /// Non-202 answers by status, and transport errors.
    pub api_errors: BTreeMap<String, u64>,
    pub first_api_error: Option<String>,
    pub send_phase_s: f64,
    pub accept_per_sec: f64,
    pub api_latency: LatencySummary,
    /// Open loop: from each request's scheduled start to its answer (a request that started
    /// late because all clients were busy counts the wait too).
    pub api_latency_from_schedule: Option<LatencySummary>,
    /// Accepted messages the sandbox received (distinct ids).
    pub delivered: usize,
    pub missing: usize,
    /// Extra sends of an already received id.
    pub duplicates: usize,
    /// Sandbox records whose `biz_opaque_callback_data` is not one of our accepted ids.
    pub unknown_records: usize,
    /// First accept to last send that reached the sandbox.
    pub delivery_span_s: f64,
    pub delivery_per_sec: f64,
    /// Sandbox receipt minus the moment the 202 reached loadgen (clamped at 0).
    pub accept_to_meta: LatencySummary,
    /// Messages the sandbox received before their 202 was read by loadgen.
    pub sent_before_202_read: u64,
    pub sim_rejections: BTreeMap<i64, u64>,
    /// Most sends of one number in any rolling second, and which number.
    pub max_per_number_1s: usize,
    pub busiest_number: Option<String>,
    pub numbers_over_tier: usize,
    /// CPU while the API accepted (dispatch runs meanwhile too).
    pub cpu_accepting: CpuReport,
    /// CPU after the last accept, until the sandbox had everything (dispatch only).
    pub cpu_draining: CpuReport,
    /// Redis commands processed during the run (server-wide) per accepted message, status
    /// webhooks included.
    pub redis_commands_per_message: Option<f64>,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

impl E2eReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for E2eReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tier = if self.tier_mps == 0 {
            "no limiter".to_owned()
        } else {
            format!("tier {} mps", self.tier_mps)
        };
        writeln!(
            f,
            "e2e: {} numbers ({tier}{}), {} messages, {} concurrent clients",
            self.numbers,
            if self.sim_unlimited {
                ", sandbox unlimited"
            } else {
                ""
            },
            self.messages,
            self.concurrency
        )?;
        let masters = if self.redis_masters > 1 {
            format!(", Redis Cluster of {} masters", self.redis_masters)
        } else {
            String::new()
        };
        if self.cluster {
            let owners: Vec<String> = self
                .owners
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect();
            writeln!(
                f,
                "  nodes:    {} in cluster mode{masters}; numbers owned {} (settled in {:.1} s), {} moved during the run",
                self.nodes,
                owners.join(", "),
                self.ownership_settle_s.unwrap_or(0.0),
                self.owners_moved
            )?;
        } else {
            writeln!(f, "  nodes:    {} (cluster mode off){masters}", self.nodes)?;
        }
        if let Some(r) = self.target_rate {
            writeln!(f, "  gateway target rate (90 % of tiers): {r:.0} msgs/s")?;
        }
        writeln!(
            f,
            "  API:      {} accepted in {:.2} s = {:.0} msgs/s; errors {:?}",
            self.accepted, self.send_phase_s, self.accept_per_sec, self.api_errors
        )?;
        if let Some(e) = &self.first_api_error {
            writeln!(f, "            first error: {e}")?;
        }
        writeln!(f, "            accept latency {}", self.api_latency)?;
        if let (Some(rate), Some(l)) = (self.rate, &self.api_latency_from_schedule) {
            writeln!(f, "            from the schedule ({rate}/s, open loop) {l}")?;
            let met = self.api_latency.p99_ms <= ACCEPT_P99_TARGET_MS
                && l.p99_ms <= ACCEPT_P99_TARGET_MS
                && self.accept_per_sec >= f64::from(rate) * 0.98;
            writeln!(
                f,
                "  accept latency p99 at {rate} req/s: {:.2} ms ({:.2} ms from the schedule), {:.0} accepted/s (target p99 ≤ {ACCEPT_P99_TARGET_MS:.0} ms at 5,000 req/s) [{}]",
                self.api_latency.p99_ms,
                l.p99_ms,
                self.accept_per_sec,
                if rate < 5_000 {
                    "below the target's rate"
                } else if met {
                    "met"
                } else {
                    "NOT MET"
                }
            )?;
        }
        writeln!(
            f,
            "  Meta:     {} received ({} missing, {} duplicates, {} unknown) in {:.2} s = {:.0} msgs/s",
            self.delivered,
            self.missing,
            self.duplicates,
            self.unknown_records,
            self.delivery_span_s,
            self.delivery_per_sec
        )?;
        writeln!(
            f,
            "            accept-to-Meta {} ({} sent before their 202 was read)",
            self.accept_to_meta, self.sent_before_202_read
        )?;
        writeln!(
            f,
            "            sandbox rejections by code {:?}; busiest number {} sends in 1 s ({}), {} numbers over tier",
            self.sim_rejections,
            self.max_per_number_1s,
            self.busiest_number.as_deref().unwrap_or("-"),
            self.numbers_over_tier
        )?;
        let p = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.0} %"));
        for (phase, c) in [
            ("accepting", &self.cpu_accepting),
            ("draining", &self.cpu_draining),
        ] {
            let threads: Vec<String> = c
                .gateway_threads
                .iter()
                .map(|(n, v)| format!("{n} {v:.0} %"))
                .collect();
            writeln!(
                f,
                "  CPU {phase} {:.2} s (100 % = one core): gateway {}, redis-server {}, sandbox {:.0} %, loadgen {:.0} %\n            busiest gateway threads: {}",
                c.wall_s,
                p(c.gateway_pct),
                p(c.redis_pct),
                c.sandbox_pct,
                c.loadgen_pct,
                threads.join(", ")
            )?;
        }
        if let Some(c) = self.redis_commands_per_message {
            writeln!(
                f,
                "  redis commands per message (server-wide, webhooks included): {c:.1}"
            )?;
        }
        finish::write_footer(
            f,
            self.redis_keys_deleted,
            &self.gateway_log,
            &self.problems,
        )
    }
}

struct Accepted {
    id: String,
    accepted_at: SystemTime,
    /// The clinic (= number index) whose API key sent it, to look it up again.
    clinic: usize,
}

/// Issue #9's accept-latency target (at 5,000 requests/s).
pub const ACCEPT_P99_TARGET_MS: f64 = 5.0;

#[derive(Default)]
struct WorkerOut {
    accepted: Vec<Accepted>,
    latency: Latencies,
    from_schedule: Latencies,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

fn template_body(i: usize, from: &str) -> Result<bytes::Bytes> {
    let v = json!({
        "to": recipient(i),
        "from": from,
        "type": "template",
        "template": {
            "name": TEMPLATE,
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Asha"}, {"type": "text", "text": "10:30"}
            ]}]
        }
    });
    Ok(bytes::Bytes::from(serde_json::to_vec(&v)?))
}

fn start_sandbox(o: &E2eOptions, gateway_base: &str) -> Result<SandboxHandle> {
    let state = SandboxState::new(SandboxConfig {
        webhook_url: Some(format!("{gateway_base}/webhooks/whatsapp")),
        app_secret: APP_SECRET.into(),
        unlimited: o.sim_unlimited,
        status_latency: o.status_latency,
        read_receipts: o.read_receipts,
        webhook_retry_interval: Duration::from_millis(300),
        record_limit: (o.messages * 2).max(100_000),
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    let tier = if o.tier_mps == 0 {
        LARGE_TIER
    } else {
        o.tier_mps
    };
    for i in 0..o.numbers {
        state.register_number(&number_id(i), &waba_id(i), &format!("9180455{i:05}"), tier);
        state.add_template(
            &waba_id(i),
            TEMPLATE,
            "en",
            TemplateCategory::Utility,
            "Hi {{1}}, your visit is at {{2}}.",
            TemplateStatus::Approved,
        );
    }
    Sandbox::spawn_state(state, o.sim_workers.max(1)).context("starting the sandbox")
}

fn spawn_gateway(
    o: &E2eOptions,
    dir: &Path,
    port: u16,
    prefix: &str,
    sandbox_url: &str,
    node: Option<&str>,
) -> Result<Gateway> {
    let mut env = Vec::new();
    if let Some(node) = node {
        env.extend(crate::nodes::cluster_env(node));
    }
    if let Some(w) = o.gateway_workers {
        env.push(("CLINIC_GATEWAY__SERVER__WORKERS".to_owned(), w.to_string()));
    }
    if let Some(a) = o.arbiters {
        env.push((
            "CLINIC_GATEWAY__DISPATCH__ARBITERS".to_owned(),
            a.to_string(),
        ));
    }
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(o.numbers, o.tier_mps),
        port,
        redis_url: &o.redis_url,
        prefix,
        sandbox_url,
        templates_dir: None,
        log_level: &o.gateway_log_level,
        env: &env,
    };
    kit::spawn_gateway(&spec, dir)
}

pub(crate) async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("connecting to redis timed out")?
    .with_context(|| format!("connecting to {url}"))
}

/// A numeric field of `INFO <section>`.
pub(crate) async fn redis_info_field(
    con: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .ok()?;
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|p| p.trim().parse().ok())
}

/// What the gateway says about (at most three) accepted messages the sandbox never got, asked
/// before the gateways stop: their status and timeline tell a lost wake-up from a send whose
/// outcome is unknown (which waits `dispatch.status_grace_ms` before it is sent again).
async fn describe_missing(
    http: &reqwest::Client,
    base: &str,
    sim: &SandboxState,
    accepted: &HashMap<String, SystemTime>,
    clinic_of: &HashMap<String, usize>,
) -> Vec<String> {
    let seen: std::collections::HashSet<String> = sim
        .sent()
        .iter()
        .filter_map(|r| r.message.biz_opaque_callback_data.clone())
        .collect();
    let mut out = Vec::new();
    for id in accepted.keys().filter(|id| !seen.contains(*id)).take(3) {
        let Some(clinic) = clinic_of.get(id) else {
            continue;
        };
        let answer = match http
            .get(format!("{base}/v1/messages/{id}"))
            .header("authorization", format!("Bearer {}", api_key(*clinic)))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        out.push(format!("{id}: {answer:.800}"));
    }
    out
}

async fn send_all(
    http: &reqwest::Client,
    bases: &[String],
    o: &E2eOptions,
) -> Result<(Vec<WorkerOut>, f64)> {
    let urls: Arc<Vec<String>> =
        Arc::new(bases.iter().map(|b| format!("{b}/v1/messages")).collect());
    let auth: Arc<Vec<String>> = Arc::new(
        (0..o.numbers)
            .map(|i| format!("Bearer {}", api_key(i)))
            .collect(),
    );
    let pnids: Arc<Vec<String>> = Arc::new((0..o.numbers).map(number_id).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let total = o.messages;
    let rate = o.rate;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(o.concurrency);
    for _ in 0..o.concurrency {
        let (http, urls, auth, pnids, next) = (
            http.clone(),
            urls.clone(),
            auth.clone(),
            pnids.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let n = i % pnids.len();
                // Round-robin over the nodes, shifted by one per pass over the numbers so each
                // number's messages also go in through every node (with `i % nodes` alone, two
                // nodes and an even count of numbers would give each number one node).
                let url = &urls[(i + i / pnids.len()) % urls.len()];
                let body = match template_body(i, &pnids[n]) {
                    Ok(b) => b,
                    Err(e) => {
                        out.first_error.get_or_insert_with(|| e.to_string());
                        *out.errors.entry("body".into()).or_default() += 1;
                        continue;
                    }
                };
                let scheduled =
                    rate.map(|r| start + Duration::from_secs_f64(i as f64 / f64::from(r.max(1))));
                if let Some(due) = scheduled {
                    tokio::time::sleep_until(due.into()).await;
                }
                let t0 = Instant::now();
                let r = http
                    .post(url)
                    .header("authorization", &auth[n])
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let b = resp.bytes().await.unwrap_or_default();
                        let accepted_at = SystemTime::now();
                        out.latency.record(t0.elapsed());
                        if let Some(s) = scheduled {
                            out.from_schedule.record(s.elapsed());
                        }
                        let id = serde_json::from_slice::<serde_json::Value>(&b)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_owned));
                        match (status, id) {
                            (202, Some(id)) => out.accepted.push(Accepted {
                                id,
                                accepted_at,
                                clinic: n,
                            }),
                            _ => {
                                *out.errors.entry(format!("http {status}")).or_default() += 1;
                                out.first_error.get_or_insert_with(|| {
                                    let text = String::from_utf8_lossy(&b);
                                    format!("message {i}: http {status}: {:.300}", text)
                                });
                            }
                        }
                    }
                    Err(e) => {
                        let kind = if e.is_timeout() {
                            "timeout"
                        } else {
                            "transport"
                        };
                        *out.errors.entry(kind.into()).or_default() += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("message {i}: {e}"));
                    }
                }
            }
            out
        }));
    }
    let mut outs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outs.push(t.await.context("a client task panicked")?);
    }
    Ok((outs, start.elapsed().as_secs_f64()))
}

/// What every gateway scenario sets up before it starts the gateway: a free port, a unique Redis
/// prefix and temporary directory, and a Redis connection to measure with.
pub(crate) struct RunSetup {
    pub port: u16,
    pub base: String,
    pub suffix: String,
    pub prefix: String,
    pub dir: std::path::PathBuf,
    pub redis: redis::aio::MultiplexedConnection,
    pub redis_pid: Option<u32>,
}

pub(crate) async fn prepare(scenario: &str, redis_url: &str) -> Result<RunSetup> {
    let port = free_port()?;
    let suffix = unique_suffix();
    let dir = std::env::temp_dir().join(format!("loadgen-{scenario}-{suffix}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A Redis Cluster URL: measure and clean up on its first master (e2e visits them all).
    let first = crate::nodes::redis_masters(redis_url)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("{redis_url}: no Redis server"))?;
    let mut redis = redis_connection(&first).await?;
    let redis_pid = redis_info_field(&mut redis, "server", "process_id")
        .await
        .and_then(|p| u32::try_from(p).ok());
    Ok(RunSetup {
        port,
        base: format!("http://127.0.0.1:{port}"),
        prefix: format!("loadgen:{suffix}:"),
        suffix,
        dir,
        redis,
        redis_pid,
    })
}

/// Runs the scenario. `Err` is a setup failure; correctness failures are in `problems`.
pub async fn run(o: E2eOptions) -> Result<E2eReport> {
    if o.numbers == 0 || o.messages == 0 || o.concurrency == 0 {
        bail!("--numbers, --messages and --concurrency must be at least 1");
    }
    if o.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let RunSetup {
        port,
        base,
        prefix,
        dir,
        ..
    } = prepare("e2e", &o.redis_url).await?;
    // Every master of a Redis Cluster: statistics, lease reads and clean-up are per server.
    let mut masters = crate::nodes::Masters::connect(&o.redis_url).await?;
    let mut ports = vec![port];
    for _ in 1..o.nodes {
        ports.push(free_port()?);
    }
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let node_ids: Vec<String> = (0..o.nodes).map(crate::nodes::node_id).collect();
    // Meta's webhooks go to node 1 (a load balancer's job in production; any node takes them).
    let sandbox = start_sandbox(&o, &base)?;
    let sim = sandbox.state();

    kit::announce(&base, &sandbox.base_url(), &prefix, &dir);
    let mut gws = Vec::with_capacity(o.nodes);
    for (k, port) in ports.iter().enumerate() {
        // Each node writes its own gateway.toml and gateway.log, so each gets a directory.
        let node_dir = if o.nodes > 1 {
            dir.join(&node_ids[k])
        } else {
            dir.clone()
        };
        let spawned = std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("creating {}", node_dir.display()))
            .and_then(|()| {
                spawn_gateway(
                    &o,
                    &node_dir,
                    *port,
                    &prefix,
                    &sandbox.base_url(),
                    o.clustered().then_some(node_ids[k].as_str()),
                )
            });
        match spawned {
            Ok(gw) => gws.push(gw),
            Err(e) => {
                drop(gws);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    for (b, gw) in bases.iter().zip(gws.iter_mut()) {
        kit::wait_ready(&http, b, gw, Duration::from_secs(20)).await?;
    }
    let pnids: Vec<String> = (0..o.numbers).map(number_id).collect();
    let (owners_at_start, ownership_settle_s) = if o.clustered() {
        let (h, s) = crate::nodes::wait_for_owners(
            &mut masters,
            &prefix,
            &pnids,
            &node_ids,
            &mut gws,
            Duration::from_secs(60),
        )
        .await?;
        eprintln!(
            "loadgen: ownership settled in {s:.1} s: {:?}",
            crate::nodes::owner_counts(&h)
        );
        (h, Some(s))
    } else {
        (Vec::new(), None)
    };
    eprintln!(
        "loadgen: {} gateway node(s) ready; sending {} messages",
        o.nodes, o.messages
    );
    let gw_pids: Vec<u32> = gws.iter().filter_map(Gateway::pid).collect();
    let redis_pids = masters.pids.clone();

    let cpu0 = sample_all(&gw_pids, &redis_pids);
    let commands0 = masters.info_sum("stats", "total_commands_processed").await;
    let (outs, send_phase_s) = send_all(&http, &bases, &o).await?;
    let cpu_sent = sample_all(&gw_pids, &redis_pids);
    let mut api_latency = Latencies::new();
    let mut from_schedule = Latencies::new();
    let mut api_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_api_error = None;
    let mut accepted: HashMap<String, SystemTime> = HashMap::with_capacity(o.messages);
    let mut clinic_of: HashMap<String, usize> = HashMap::with_capacity(o.messages);
    for w in outs {
        api_latency.merge(&w.latency);
        from_schedule.merge(&w.from_schedule);
        for (k, v) in w.errors {
            *api_errors.entry(k).or_default() += v;
        }
        if first_api_error.is_none() {
            first_api_error = w.first_error;
        }
        for a in w.accepted {
            clinic_of.insert(a.id.clone(), a.clinic);
            accepted.insert(a.id, a.accepted_at);
        }
    }
    eprintln!(
        "loadgen: {} accepted in {send_phase_s:.2} s; waiting for the sandbox",
        accepted.len()
    );

    // Wait for every accepted id to reach the sandbox.
    let expected_s = match expected_rate(o.numbers, o.tier_mps) {
        Some(r) => o.messages as f64 / r,
        None => o.messages as f64 / 2_000.0,
    };
    let timeout = o
        .delivery_timeout
        .unwrap_or_else(|| Duration::from_secs_f64((expected_s * 2.0 + 10.0).min(600.0)));
    let wait_start = Instant::now();
    loop {
        let records = sim.sent();
        if records.len() >= accepted.len() {
            let mut seen = std::collections::HashSet::with_capacity(accepted.len());
            for r in &records {
                if let Some(id) = r.message.biz_opaque_callback_data.as_deref() {
                    if accepted.contains_key(id) {
                        seen.insert(id);
                    }
                }
            }
            if seen.len() >= accepted.len() {
                break;
            }
        }
        if wait_start.elapsed() > timeout {
            eprintln!(
                "loadgen: delivery timeout ({:.0} s) reached",
                timeout.as_secs_f64()
            );
            break;
        }
        if let Some((k, status)) = gws
            .iter_mut()
            .enumerate()
            .find_map(|(k, gw)| gw.exited().map(|s| (k, s)))
        {
            eprintln!(
                "loadgen: gateway {} exited ({status}) during the run",
                node_ids[k]
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu1 = sample_all(&gw_pids, &redis_pids);
    let commands1 = masters.info_sum("stats", "total_commands_processed").await;
    // A short settle so late duplicates and rejections of the last sends are visible.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let missing_sample = describe_missing(&http, &base, &sim, &accepted, &clinic_of).await;
    let owners_moved = if o.clustered() {
        let after = masters.lease_holders(&prefix, &pnids).await;
        owners_at_start
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .count()
    } else {
        0
    };
    for gw in &mut gws {
        gw.stop();
    }

    // Judge by the sandbox's records.
    let records = sim.sent();
    let rejected = sim.rejected();
    let mut first_seen: HashMap<&str, SystemTime> = HashMap::with_capacity(accepted.len());
    let mut duplicates = 0;
    let mut unknown_records = 0;
    let mut per_number: HashMap<&str, Vec<SystemTime>> = HashMap::new();
    let mut last_send: Option<SystemTime> = None;
    for r in &records {
        per_number
            .entry(r.phone_number_id.as_str())
            .or_default()
            .push(r.at);
        match r.message.biz_opaque_callback_data.as_deref() {
            Some(id) if accepted.contains_key(id) => {
                if first_seen.insert(id, r.at).is_some() {
                    duplicates += 1;
                }
                last_send = Some(last_send.map_or(r.at, |l| l.max(r.at)));
            }
            _ => unknown_records += 1,
        }
    }
    let mut accept_to_meta = Latencies::new();
    let mut sent_before_202_read = 0;
    for (id, at) in &first_seen {
        let acc = accepted[*id];
        match at.duration_since(acc) {
            Ok(d) => accept_to_meta.record(d),
            Err(_) => {
                sent_before_202_read += 1;
                accept_to_meta.record(Duration::ZERO);
            }
        }
    }
    let first_accept = accepted.values().min().copied();
    let delivery_span_s = match (first_accept, last_send) {
        (Some(a), Some(l)) => l.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        _ => 0.0,
    };
    let mut max_per_number_1s = 0;
    let mut busiest_number = None;
    let mut numbers_over_tier = 0;
    for (pnid, times) in per_number.iter_mut() {
        let m = max_in_window(times, Duration::from_secs(1));
        if o.tier_mps > 0 && m > o.tier_mps as usize {
            numbers_over_tier += 1;
        }
        if m > max_per_number_1s {
            max_per_number_1s = m;
            busiest_number = Some((*pnid).to_owned());
        }
    }
    let mut sim_rejections: BTreeMap<i64, u64> = BTreeMap::new();
    for r in &rejected {
        *sim_rejections.entry(r.code).or_default() += 1;
    }
    let delivered = first_seen.len();
    let missing = accepted.len() - delivered;

    let mut problems = Vec::new();
    let api_error_total: u64 = api_errors.values().sum();
    if api_error_total > 0 {
        problems.push(format!(
            "{api_error_total} of {} requests were not accepted {api_errors:?}",
            o.messages
        ));
    }
    if missing > 0 {
        problems.push(format!(
            "{missing} accepted messages never reached the sandbox within {:.0} s (as the gateway saw them: {})",
            timeout.as_secs_f64(),
            missing_sample.join(" | ")
        ));
    }
    if duplicates > 0 {
        problems.push(format!(
            "{duplicates} messages reached the sandbox more than once"
        ));
    }
    if unknown_records > 0 {
        problems.push(format!(
            "{unknown_records} sandbox records carry no accepted message id"
        ));
    }
    if !sim_rejections.is_empty() {
        problems.push(format!("the sandbox rejected sends: {sim_rejections:?}"));
    }
    if numbers_over_tier > 0 {
        problems.push(format!(
            "{numbers_over_tier} numbers exceeded {} sends in a rolling second (max {max_per_number_1s})",
            o.tier_mps
        ));
    }

    let mut redis_keys_deleted = Some(0);
    for con in &mut masters.cons {
        let n = finish::delete_run_keys(con, &prefix, o.keep_redis_keys).await;
        redis_keys_deleted = redis_keys_deleted.zip(n).map(|(a, b)| a + b);
    }
    // The other nodes' log tails first; node 1's comes with the directory's tidy-up.
    if !problems.is_empty() {
        for (k, gw) in gws.iter().enumerate().skip(1) {
            eprintln!(
                "loadgen: last {} log lines ({}):\n{}",
                node_ids[k],
                gw.log.display(),
                gw.log_tail(20)
            );
        }
    }
    let Some(first) = gws.first() else {
        bail!("no gateway was started");
    };
    let mut gateway_log = finish::tidy_run_dir(first, &dir, &problems, o.keep_files);
    if gws.len() > 1 {
        gateway_log.push_str(" (node-2.. in sibling directories)");
    }
    sandbox.stop();

    Ok(E2eReport {
        scenario: "e2e",
        nodes: o.nodes,
        cluster: o.clustered(),
        redis_masters: masters.cons.len(),
        owners: crate::nodes::owner_counts(&owners_at_start),
        ownership_settle_s,
        owners_moved,
        numbers: o.numbers,
        tier_mps: o.tier_mps,
        target_rate: expected_rate(o.numbers, o.tier_mps),
        messages: o.messages,
        concurrency: o.concurrency,
        rate: o.rate,
        sim_unlimited: o.sim_unlimited,
        accepted: accepted.len(),
        api_errors,
        first_api_error,
        send_phase_s,
        accept_per_sec: accepted.len() as f64 / send_phase_s.max(1e-9),
        api_latency: api_latency.summary(),
        api_latency_from_schedule: o.rate.map(|_| from_schedule.summary()),
        delivered,
        missing,
        duplicates,
        unknown_records,
        delivery_span_s,
        delivery_per_sec: delivered as f64 / delivery_span_s.max(1e-9),
        accept_to_meta: accept_to_meta.summary(),
        sent_before_202_read,
        sim_rejections,
        max_per_number_1s,
        busiest_number,
        numbers_over_tier,
        cpu_accepting: cpu_between(&cpu0, &cpu_sent),
        cpu_draining: cpu_between(&cpu_sent, &cpu1),
        redis_commands_per_message: match (commands0, commands1) {
            (Some(a), Some(b)) if !accepted.is_empty() => {
                Some(b.saturating_sub(a) as f64 / accepted.len() as f64)
            }
            _ => None,
        },
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_clinic_per_number() {
        let t = gateway_toml(3, 80);
        assert_eq!(t.matches("[[clinics]]").count(), 3);
        assert_eq!(t.matches("tier_mps = 80").count(), 3);
        assert!(t.contains(&number_id(2)) && t.contains(&waba_id(2)));
        let hash = hex::encode(Sha256::digest(api_key(1).as_bytes()));
        assert!(t.contains(&hash));
        assert!(!t.contains(&api_key(1)), "only the key's hash is written");
        assert!(
            t.contains("rate_per_second = 1000000"),
            "the API rate limit never binds"
        );
    }

    #[test]
    fn recipients_are_distinct_e164() {
        assert_eq!(recipient(7), "+919700000007");
        assert_ne!(recipient(1), recipient(2));
        assert_eq!(recipient(99_999_999).len(), 13);
    }

    #[test]
    fn target_rate_uses_ninety_percent() {
        assert_eq!(expected_rate(100, 80), Some(7200.0));
        assert_eq!(expected_rate(1, 0), None);
    }
}
