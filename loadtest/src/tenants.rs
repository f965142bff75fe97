//! `tenants`: clinics as tenants at scale. Provisions many clinics through the admin API (one
//! business number, WABA, API key and wallet credit each), opens many customer-service windows
//! with signed inbound webhooks, follows the gateway's resident memory through provisioning,
//! windows and an idle period, then measures accept latency with K active clinics and checks at
//! the sandbox that every accepted message arrived.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxHandle, SandboxState, TemplateCategory, TemplateStatus,
};
use whatsapp_cloud::signature::{sign, SIGNATURE_HEADER};

use crate::e2e::{
    cpu_between, number_id, prepare, redis_info_field, sample, waba_id, CpuReport, Gateway,
    RunSetup, APP_SECRET, TEMPLATE,
};
use crate::finish;
use crate::kit;
use crate::procstat;
use crate::stats::{Latencies, LatencySummary};

/// Most clinics a run may provision (patient numbers are derived from the clinic index).
pub const MAX_CLINICS: usize = 40_000;
/// Patients per clinic before patient numbers wrap around.
pub const PATIENTS_PER_CLINIC: usize = 100_000;
/// Micro-units credited to every clinic's wallet (1,000,000.00): never the limiting factor.
pub const CREDIT: i64 = 1_000_000_000_000;

#[derive(Debug, Clone)]
pub struct TenantsOptions {
    pub clinics: usize,
    pub windows: usize,
    pub active: usize,
    pub duration: Duration,
    /// Closed-loop API clients of the active phase.
    pub concurrency: usize,
    /// Clinics provisioned concurrently (each: create, API key, credit, in that order).
    pub provision_concurrency: usize,
    /// Webhook POSTs in flight while opening windows.
    pub webhook_concurrency: usize,
    /// Inbound messages per webhook POST (one business number per POST).
    pub batch: usize,
    /// Idle period after the windows, with RSS samples.
    pub idle: Duration,
    pub tier_mps: u32,
    /// A different app secret per clinic (the sandbox then sends no status webhooks, since it
    /// signs every webhook with one secret).
    pub per_clinic_secrets: bool,
    pub provision_timeout: Duration,
    pub windows_timeout: Duration,
    pub delivery_timeout: Duration,
    /// RSS target; a reading above it is a problem.
    pub max_rss_mib: u64,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    pub sim_workers: usize,
    pub sim_unlimited: bool,
    pub status_latency: Duration,
    pub read_receipts: bool,
    pub gateway_log_level: String,
    /// Extra environment of the gateway child (`CLINIC_GATEWAY__…` overrides).
    pub gateway_env: Vec<(String, String)>,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
}

pub fn clinic_id(i: usize) -> String {
    format!("lg_{i:05}")
}

/// The app secret clinic `i` is created with.
pub fn app_secret(i: usize, per_clinic: bool) -> String {
    if per_clinic {
        format!("loadgen-secret-{i:05}")
    } else {
        APP_SECRET.to_owned()
    }
}

/// Patient `k` of clinic `i`, as WhatsApp digits (`wa_id`, no `+`): a distinct Indian mobile
/// number per (clinic, patient) for up to [`MAX_CLINICS`] × [`PATIENTS_PER_CLINIC`].
pub fn patient(i: usize, k: usize) -> String {
    let n = 6_000_000_000u64
        + (i % MAX_CLINICS) as u64 * PATIENTS_PER_CLINIC as u64
        + (k % PATIENTS_PER_CLINIC) as u64;
    format!("91{n}")
}

/// The gateway's `--config`: the admin key's hash and a per-clinic API rate that never binds.
pub fn gateway_toml(admin_key: &str) -> String {
    let hash = hex::encode(Sha256::digest(admin_key.as_bytes()));
    format!(
        "# written by loadgen tenants\n[admin]\napi_key_sha256 = [\"{hash}\"]\n\n\
         [api]\nrate_per_second = 1000000\nburst = 1000000\n"
    )
}

/// Windows per clinic slot: `windows` spread evenly over `clinics`.
fn windows_of(slot: usize, clinics: usize, windows: usize) -> usize {
    windows / clinics + usize::from(slot < windows % clinics)
}

/// Webhook POSTs that open `windows` windows over `clinics` clinic slots, at most `batch`
/// inbound messages each, round-robin over the clinics: (slot, first patient, count).
pub fn window_jobs(
    clinics: usize,
    windows: usize,
    batch: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let batch = batch.max(1);
    let max_per = if clinics == 0 {
        0
    } else {
        windows_of(0, clinics, windows)
    };
    let chunks = max_per.div_ceil(batch);
    (0..chunks).flat_map(move |chunk| {
        (0..clinics).filter_map(move |slot| {
            let start = chunk * batch;
            let total = windows_of(slot, clinics, windows);
            (start < total).then(|| (slot, start, batch.min(total - start)))
        })
    })
}

/// One signed-webhook body: `count` patients of clinic `i` (from `start`) each write a text,
/// shaped like Meta's inbound delivery (`shared/fixtures/meta/inbound-text-hindi.json`).
pub fn inbound_body(i: usize, start: usize, count: usize, unix_s: u64) -> String {
    let mut contacts = String::new();
    let mut messages = String::new();
    for k in start..start + count {
        let from = patient(i, k);
        if k > start {
            contacts.push(',');
            messages.push(',');
        }
        let _ = write!(
            contacts,
            r#"{{"profile":{{"name":"Patient {k}"}},"wa_id":"{from}"}}"#
        );
        let _ = write!(
            messages,
            r#"{{"from":"{from}","id":"wamid.LG{i:05}X{k:07}T{unix_s}","timestamp":"{unix_s}","type":"text","text":{{"body":"मुझे अपॉइंटमेंट बदलना है ({k})"}}}}"#
        );
    }
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{waba}","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"91804555{i:05}","phone_number_id":"{pnid}"}},"contacts":[{contacts}],"messages":[{messages}]}}}}]}}]}}"#,
        waba = waba_id(i),
        pnid = number_id(i),
    )
}

fn template_body(to: &str) -> Result<bytes::Bytes> {
    let v = json!({
        "to": format!("+{to}"),
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

// ----------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemorySnapshot {
    pub label: String,
    /// Seconds since the gateway was ready.
    pub at_s: f64,
    pub gateway_rss_mib: Option<f64>,
    /// Peak RSS so far (`VmHWM`).
    pub gateway_hwm_mib: Option<f64>,
    pub redis_used_memory_mib: Option<f64>,
    pub redis_used_memory_human: Option<String>,
    /// `clinic_gateway_resident_actors` by kind, from `/metrics`.
    pub resident_actors: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProvisionReport {
    pub requested: usize,
    pub provisioned: usize,
    pub failed: usize,
    /// Not attempted because `--provision-timeout` passed.
    pub skipped: usize,
    pub wall_s: f64,
    pub clinics_per_sec: f64,
    pub create_latency: LatencySummary,
    pub api_key_latency: LatencySummary,
    pub credit_latency: LatencySummary,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// (clinics provisioned, seconds since the start) at every tenth of the run.
    pub progress: Vec<(usize, f64)>,
    pub cpu: CpuReport,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowsReport {
    pub requested: usize,
    /// Inbound messages in webhook POSTs the gateway answered 200.
    pub opened: usize,
    pub posts: usize,
    pub failed_posts: usize,
    /// Windows not attempted because `--windows-timeout` passed.
    pub skipped: usize,
    pub wall_s: f64,
    pub windows_per_sec: f64,
    pub post_latency: LatencySummary,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub cpu: CpuReport,
    /// Window keys found under the run's Redis prefix at the end (SCAN).
    pub window_keys_in_redis: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ActiveReport {
    pub active_clinics: usize,
    pub concurrency: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub accepted: usize,
    pub accept_per_sec: f64,
    pub latency: LatencySummary,
    /// Non-202 answers by status, and transport errors.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Accepted messages the sandbox received (distinct ids), and how long that took after the
    /// last accept.
    pub delivered: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub delivery_wait_s: f64,
    pub sim_rejections: BTreeMap<i64, u64>,
    pub cpu: CpuReport,
    pub cpu_draining: CpuReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantsReport {
    pub scenario: &'static str,
    pub clinics: usize,
    pub windows: usize,
    pub tier_mps: u32,
    pub per_clinic_secrets: bool,
    pub max_rss_mib: u64,
    pub provision: ProvisionReport,
    pub windows_phase: WindowsReport,
    pub idle_s: f64,
    /// (seconds into the idle period, gateway RSS MiB).
    pub idle_rss: Vec<(f64, f64)>,
    pub cpu_idle: CpuReport,
    pub active: ActiveReport,
    pub memory: Vec<MemorySnapshot>,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

impl TenantsReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

fn opt_mib(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
}

fn cpu_line(c: &CpuReport) -> String {
    let p = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.0} %"));
    let threads: Vec<String> = c
        .gateway_threads
        .iter()
        .map(|(n, v)| format!("{n} {v:.0} %"))
        .collect();
    format!(
        "CPU over {:.1} s (100 % = one core): gateway {}, redis-server {}, sandbox {:.0} %, loadgen {:.0} %; busiest gateway threads: {}",
        c.wall_s,
        p(c.gateway_pct),
        p(c.redis_pct),
        c.sandbox_pct,
        c.loadgen_pct,
        threads.join(", ")
    )
}

impl std::fmt::Display for TenantsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.provision;
        writeln!(
            f,
            "tenants: {} clinics (tier {} mps), {} windows, {} active clinics{}",
            self.clinics,
            self.tier_mps,
            self.windows,
            self.active.active_clinics,
            if self.per_clinic_secrets {
                ", one app secret per clinic"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  provision: {} of {} clinics in {:.1} s = {:.1} clinics/s ({} failed, {} skipped); errors {:?}",
            p.provisioned, p.requested, p.wall_s, p.clinics_per_sec, p.failed, p.skipped, p.errors
        )?;
        if let Some(e) = &p.first_error {
            writeln!(f, "             first error: {e}")?;
        }
        writeln!(f, "             create clinic {}", p.create_latency)?;
        writeln!(f, "             api key       {}", p.api_key_latency)?;
        writeln!(f, "             credit        {}", p.credit_latency)?;
        let prog: Vec<String> = p
            .progress
            .iter()
            .map(|(n, s)| format!("{n}@{s:.0}s"))
            .collect();
        writeln!(f, "             progress {}", prog.join(" "))?;
        writeln!(f, "             {}", cpu_line(&p.cpu))?;
        let w = &self.windows_phase;
        writeln!(
            f,
            "  windows:   {} of {} opened in {:.1} s = {:.0} windows/s ({} POSTs, {} failed, {} skipped); errors {:?}",
            w.opened, w.requested, w.wall_s, w.windows_per_sec, w.posts, w.failed_posts, w.skipped, w.errors
        )?;
        if let Some(e) = &w.first_error {
            writeln!(f, "             first error: {e}")?;
        }
        writeln!(f, "             POST latency {}", w.post_latency)?;
        if let Some(n) = w.window_keys_in_redis {
            writeln!(f, "             window keys in redis at the end: {n}")?;
        }
        writeln!(f, "             {}", cpu_line(&w.cpu))?;
        let samples: Vec<String> = self
            .idle_rss
            .iter()
            .map(|(s, m)| format!("{m:.0}@{s:.0}s"))
            .collect();
        writeln!(
            f,
            "  idle:      {:.0} s, gateway RSS MiB {}",
            self.idle_s,
            samples.join(" ")
        )?;
        writeln!(f, "             {}", cpu_line(&self.cpu_idle))?;
        let a = &self.active;
        writeln!(
            f,
            "  active:    {} clinics, {} clients, {:.1} s: {} accepted of {} = {:.0} msgs/s; errors {:?}",
            a.active_clinics, a.concurrency, a.duration_s, a.accepted, a.requests, a.accept_per_sec, a.errors
        )?;
        if let Some(e) = &a.first_error {
            writeln!(f, "             first error: {e}")?;
        }
        writeln!(f, "             accept latency {}", a.latency)?;
        writeln!(
            f,
            "             sandbox received {} ({} missing, {} duplicates) {:.1} s after the last accept; rejections {:?}",
            a.delivered, a.missing, a.duplicates, a.delivery_wait_s, a.sim_rejections
        )?;
        writeln!(f, "             accepting: {}", cpu_line(&a.cpu))?;
        writeln!(f, "             draining:  {}", cpu_line(&a.cpu_draining))?;
        writeln!(
            f,
            "  memory (target gateway RSS ≤ {} MiB):",
            self.max_rss_mib
        )?;
        for m in &self.memory {
            writeln!(
                f,
                "    {:<22} t={:>6.1} s  gateway RSS {:>9} (peak {:>9}), redis used_memory {} ({}), actors {:?}",
                m.label,
                m.at_s,
                opt_mib(m.gateway_rss_mib),
                opt_mib(m.gateway_hwm_mib),
                opt_mib(m.redis_used_memory_mib),
                m.redis_used_memory_human.as_deref().unwrap_or("n/a"),
                m.resident_actors
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

// ----------------------------------------------------------------------------------------------
// Running

struct Ctx {
    http: reqwest::Client,
    base: String,
    admin_auth: String,
    started: Instant,
    gateway_pid: Option<u32>,
    redis_pid: Option<u32>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn resident_actors(ctx: &Ctx) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let Ok(r) = ctx.http.get(format!("{}/metrics", ctx.base)).send().await else {
        return out;
    };
    let text = r.text().await.unwrap_or_default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("clinic_gateway_resident_actors{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let kind = labels.split('"').nth(1).unwrap_or(labels).to_owned();
        if let Ok(v) = value.trim().parse::<f64>() {
            out.insert(kind, v as i64);
        }
    }
    out
}

async fn snapshot(
    ctx: &Ctx,
    redis: &mut redis::aio::MultiplexedConnection,
    label: &str,
) -> MemorySnapshot {
    let mem = ctx.gateway_pid.and_then(procstat::memory_kib);
    let used = redis_info_field(redis, "memory", "used_memory").await;
    let human: Option<String> = redis::cmd("INFO")
        .arg("memory")
        .query_async::<String>(redis)
        .await
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("used_memory_human:"))
                .map(|v| v.trim().to_owned())
        });
    let s = MemorySnapshot {
        label: label.to_owned(),
        at_s: ctx.started.elapsed().as_secs_f64(),
        gateway_rss_mib: mem.map(|(rss, _)| mib(rss)),
        gateway_hwm_mib: mem.map(|(_, hwm)| mib(hwm)),
        redis_used_memory_mib: used.map(|b| b as f64 / 1_048_576.0),
        redis_used_memory_human: human,
        resident_actors: resident_actors(ctx).await,
    };
    eprintln!(
        "loadgen: memory {label}: gateway RSS {} (peak {}), redis {}, actors {:?}",
        opt_mib(s.gateway_rss_mib),
        opt_mib(s.gateway_hwm_mib),
        s.redis_used_memory_human.as_deref().unwrap_or("n/a"),
        s.resident_actors
    );
    s
}

fn start_sandbox(o: &TenantsOptions, gateway_base: &str) -> Result<SandboxHandle> {
    let state = SandboxState::new(SandboxConfig {
        // One secret signs every sandbox webhook: with per-clinic secrets no statuses are sent.
        webhook_url: (!o.per_clinic_secrets).then(|| format!("{gateway_base}/webhooks/whatsapp")),
        app_secret: APP_SECRET.into(),
        unlimited: o.sim_unlimited,
        status_latency: o.status_latency,
        read_receipts: o.read_receipts,
        webhook_retry_interval: Duration::from_millis(300),
        record_limit: 2_000_000,
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    Sandbox::spawn_state(state, o.sim_workers.max(1)).context("starting the sandbox")
}

fn spawn_gateway(
    o: &TenantsOptions,
    dir: &Path,
    port: u16,
    prefix: &str,
    sandbox_url: &str,
    admin_key: &str,
) -> Result<Gateway> {
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(admin_key),
        port,
        redis_url: &o.redis_url,
        prefix,
        sandbox_url,
        templates_dir: None,
        log_level: &o.gateway_log_level,
        env: &o.gateway_env,
    };
    kit::spawn_gateway(&spec, dir)
}

/// One HTTP call's outcome: the status and body, or a transport error kind and text.
async fn call(
    req: reqwest::RequestBuilder,
) -> std::result::Result<(u16, bytes::Bytes), (String, String)> {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(b) => Ok((status, b)),
                Err(e) => Err(("transport".into(), e.to_string())),
            }
        }
        Err(e) => {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            };
            Err((kind.into(), e.to_string()))
        }
    }
}

struct Provisioned {
    index: usize,
    key: String,
    latencies: [Duration; 3],
}

enum ProvisionOutcome {
    Ok(Provisioned),
    Failed { kind: String, detail: String },
    Skipped,
}

async fn provision_one(
    ctx: &Ctx,
    sim: &SandboxState,
    o: &TenantsOptions,
    i: usize,
    deadline: Instant,
) -> ProvisionOutcome {
    if Instant::now() >= deadline {
        return ProvisionOutcome::Skipped;
    }
    let (pnid, waba, id) = (number_id(i), waba_id(i), clinic_id(i));
    // Meta's side first: the gateway reads the WABA's templates when the clinic is created.
    sim.register_number(&pnid, &waba, &format!("91804555{i:05}"), o.tier_mps);
    sim.add_template(
        &waba,
        TEMPLATE,
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}, see you at {{2}}.",
        TemplateStatus::Approved,
    );
    let fail = |stage: &str, r: std::result::Result<(u16, bytes::Bytes), (String, String)>| {
        let (kind, detail) = match r {
            Ok((status, b)) => (
                format!("{stage} http {status}"),
                format!(
                    "clinic {i} {stage}: http {status}: {:.300}",
                    String::from_utf8_lossy(&b)
                ),
            ),
            Err((kind, e)) => (
                format!("{stage} {kind}"),
                format!("clinic {i} {stage}: {e}"),
            ),
        };
        ProvisionOutcome::Failed { kind, detail }
    };
    let clinic = json!({
        "id": id,
        "display_name": format!("Loadgen clinic {i}"),
        "waba_id": waba,
        "app_secret": app_secret(i, o.per_clinic_secrets),
        "access_token": format!("loadgen-token-{i}"),
        "default_country_code": "91",
        "numbers": [{"phone_number_id": pnid, "display": format!("+91 80 4555 {i:05}"), "tier_mps": o.tier_mps}]
    });
    let t0 = Instant::now();
    let r = call(
        ctx.http
            .post(format!("{}/admin/v1/clinics", ctx.base))
            .header("authorization", &ctx.admin_auth)
            .json(&clinic),
    )
    .await;
    let create = t0.elapsed();
    if !matches!(r, Ok((201, _))) {
        return fail("create", r);
    }
    let t1 = Instant::now();
    let r = call(
        ctx.http
            .post(format!("{}/admin/v1/clinics/{id}/api-keys", ctx.base))
            .header("authorization", &ctx.admin_auth)
            .json(&json!({"label": "loadgen"})),
    )
    .await;
    let key_latency = t1.elapsed();
    let key = match &r {
        Ok((201, b)) => serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|v| v["key"].as_str().map(str::to_owned)),
        _ => None,
    };
    let Some(key) = key else {
        return fail("api-key", r);
    };
    let t2 = Instant::now();
    let r = call(
        ctx.http
            .post(format!("{}/admin/v1/clinics/{id}/wallet/credits", ctx.base))
            .header("authorization", &ctx.admin_auth)
            .header("Idempotency-Key", format!("loadgen-credit-{i}"))
            .json(&json!({"amount": CREDIT})),
    )
    .await;
    let credit = t2.elapsed();
    if !matches!(r, Ok((200 | 201, _))) {
        return fail("credit", r);
    }
    ProvisionOutcome::Ok(Provisioned {
        index: i,
        key,
        latencies: [create, key_latency, credit],
    })
}

async fn provision(
    ctx: &Ctx,
    sim: &SandboxState,
    o: &TenantsOptions,
) -> (ProvisionReport, Vec<Provisioned>) {
    let start = Instant::now();
    let deadline = start + o.provision_timeout;
    let cpu0 = sample(ctx.gateway_pid, ctx.redis_pid);
    let mut lat = [Latencies::new(), Latencies::new(), Latencies::new()];
    let mut report = ProvisionReport {
        requested: o.clinics,
        ..ProvisionReport::default()
    };
    let mut done = Vec::with_capacity(o.clinics);
    let tenth = (o.clinics / 10).max(1);
    let mut last_print = Instant::now();
    let mut results = stream::iter(0..o.clinics)
        .map(|i| provision_one(ctx, sim, o, i, deadline))
        .buffer_unordered(o.provision_concurrency.max(1));
    while let Some(r) = results.next().await {
        match r {
            ProvisionOutcome::Ok(p) => {
                for (l, d) in lat.iter_mut().zip(p.latencies) {
                    l.record(d);
                }
                done.push(p);
                if done.len() % tenth == 0 {
                    report
                        .progress
                        .push((done.len(), start.elapsed().as_secs_f64()));
                }
            }
            ProvisionOutcome::Failed { kind, detail } => {
                report.failed += 1;
                *report.errors.entry(kind).or_default() += 1;
                report.first_error.get_or_insert(detail);
            }
            ProvisionOutcome::Skipped => report.skipped += 1,
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "loadgen: provisioned {} of {} clinics in {:.0} s ({} failed)",
                done.len(),
                o.clinics,
                start.elapsed().as_secs_f64(),
                report.failed
            );
        }
    }
    done.sort_by_key(|p| p.index);
    report.provisioned = done.len();
    report.wall_s = start.elapsed().as_secs_f64();
    report.clinics_per_sec = done.len() as f64 / report.wall_s.max(1e-9);
    report.create_latency = lat[0].summary();
    report.api_key_latency = lat[1].summary();
    report.credit_latency = lat[2].summary();
    report.cpu = cpu_between(&cpu0, &sample(ctx.gateway_pid, ctx.redis_pid));
    (report, done)
}

enum PostOutcome {
    Ok(usize, Duration),
    Failed { kind: String, detail: String },
    Skipped(usize),
}

async fn open_windows(ctx: &Ctx, o: &TenantsOptions, clinics: &[Provisioned]) -> WindowsReport {
    let start = Instant::now();
    let deadline = start + o.windows_timeout;
    let cpu0 = sample(ctx.gateway_pid, ctx.redis_pid);
    let url = format!("{}/webhooks/whatsapp", ctx.base);
    let mut report = WindowsReport {
        requested: o.windows,
        ..WindowsReport::default()
    };
    let mut lat = Latencies::new();
    let mut last_print = Instant::now();
    let unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let url = &url;
    let mut results = stream::iter(window_jobs(clinics.len(), o.windows, o.batch))
        .map(|(slot, first, count)| async move {
            if Instant::now() >= deadline {
                return PostOutcome::Skipped(count);
            }
            let i = clinics[slot].index;
            let body = inbound_body(i, first, count, unix_s);
            let signature = sign(
                app_secret(i, o.per_clinic_secrets).as_bytes(),
                body.as_bytes(),
            );
            let t0 = Instant::now();
            let r = call(
                ctx.http
                    .post(url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body),
            )
            .await;
            match r {
                Ok((200, _)) => PostOutcome::Ok(count, t0.elapsed()),
                Ok((status, b)) => PostOutcome::Failed {
                    kind: format!("http {status}"),
                    detail: format!(
                        "clinic {i} patients {first}..{}: http {status}: {:.300}",
                        first + count,
                        String::from_utf8_lossy(&b)
                    ),
                },
                Err((kind, e)) => PostOutcome::Failed {
                    kind,
                    detail: format!("clinic {i}: {e}"),
                },
            }
        })
        .buffer_unordered(o.webhook_concurrency.max(1));
    while let Some(r) = results.next().await {
        match r {
            PostOutcome::Ok(n, d) => {
                report.posts += 1;
                report.opened += n;
                lat.record(d);
            }
            PostOutcome::Failed { kind, detail } => {
                report.posts += 1;
                report.failed_posts += 1;
                *report.errors.entry(kind).or_default() += 1;
                report.first_error.get_or_insert(detail);
            }
            PostOutcome::Skipped(n) => report.skipped += n,
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let s = start.elapsed().as_secs_f64();
            eprintln!(
                "loadgen: opened {} of {} windows in {s:.0} s ({:.0}/s, {} failed POSTs)",
                report.opened,
                o.windows,
                report.opened as f64 / s.max(1e-9),
                report.failed_posts
            );
        }
    }
    report.wall_s = start.elapsed().as_secs_f64();
    report.windows_per_sec = report.opened as f64 / report.wall_s.max(1e-9);
    report.post_latency = lat.summary();
    report.cpu = cpu_between(&cpu0, &sample(ctx.gateway_pid, ctx.redis_pid));
    report
}

#[derive(Default)]
struct WorkerOut {
    requests: u64,
    accepted: Vec<String>,
    latency: Latencies,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

async fn active_phase(
    ctx: &Ctx,
    o: &TenantsOptions,
    clinics: &[Provisioned],
) -> Result<(ActiveReport, Vec<String>, Instant)> {
    let k = o.active.min(clinics.len()).max(1);
    let auth: Arc<Vec<(usize, String)>> = Arc::new(
        clinics[..k]
            .iter()
            .map(|c| (c.index, format!("Bearer {}", c.key)))
            .collect(),
    );
    let url: Arc<str> = format!("{}/v1/messages", ctx.base).into();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = sample(ctx.gateway_pid, ctx.redis_pid);
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::with_capacity(o.concurrency);
    for _ in 0..o.concurrency.max(1) {
        let (http, url, auth, next) = (ctx.http.clone(), url.clone(), auth.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let (index, header) = &auth[n % auth.len()];
                // Patient n / K of the clinic: its first patients have an open window.
                let to = patient(*index, n / auth.len());
                let body = match template_body(&to) {
                    Ok(b) => b,
                    Err(e) => {
                        *out.errors.entry("body".into()).or_default() += 1;
                        out.first_error.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                };
                let t0 = Instant::now();
                let r = call(
                    http.post(&*url)
                        .header("authorization", header)
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await;
                out.requests += 1;
                match r {
                    Ok((status, b)) => {
                        out.latency.record(t0.elapsed());
                        let id = serde_json::from_slice::<serde_json::Value>(&b)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_owned));
                        match (status, id) {
                            (202, Some(id)) => out.accepted.push(id),
                            _ => {
                                *out.errors.entry(format!("http {status}")).or_default() += 1;
                                out.first_error.get_or_insert_with(|| {
                                    format!(
                                        "clinic {index} to +{to}: http {status}: {:.300}",
                                        String::from_utf8_lossy(&b)
                                    )
                                });
                            }
                        }
                    }
                    Err((kind, e)) => {
                        *out.errors.entry(kind).or_default() += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("clinic {index}: {e}"));
                    }
                }
            }
            out
        }));
    }
    let mut report = ActiveReport {
        active_clinics: k,
        concurrency: o.concurrency.max(1),
        ..ActiveReport::default()
    };
    let mut latency = Latencies::new();
    let mut accepted = Vec::new();
    for t in tasks {
        let w = t.await.context("an API client task panicked")?;
        report.requests += w.requests;
        latency.merge(&w.latency);
        for (k, v) in w.errors {
            *report.errors.entry(k).or_default() += v;
        }
        if report.first_error.is_none() {
            report.first_error = w.first_error;
        }
        accepted.extend(w.accepted);
    }
    let ended = Instant::now();
    report.duration_s = start.elapsed().as_secs_f64();
    report.accepted = accepted.len();
    report.accept_per_sec = accepted.len() as f64 / report.duration_s.max(1e-9);
    report.latency = latency.summary();
    report.cpu = cpu_between(&cpu0, &sample(ctx.gateway_pid, ctx.redis_pid));
    Ok((report, accepted, ended))
}

/// SCAN of the run's prefix: (keys, window keys), UNLINKing them when `delete`.
async fn scan_prefix(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    delete: bool,
) -> Result<(u64, u64)> {
    let pattern = format!("{prefix}*");
    let mut cursor: u64 = 0;
    let (mut total, mut windows) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(2000)
            .query_async(con)
            .await?;
        windows += keys.iter().filter(|k| k.contains(":win:")).count() as u64;
        if delete && !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(con).await?;
            total += n;
        } else {
            total += keys.len() as u64;
        }
        if next == 0 {
            return Ok((total, windows));
        }
        cursor = next;
    }
}

/// Runs the scenario. `Err` is a setup failure; everything else is in `problems`.
pub async fn run(o: TenantsOptions) -> Result<TenantsReport> {
    if o.clinics == 0 || o.clinics > MAX_CLINICS {
        bail!("--clinics must be 1 to {MAX_CLINICS}");
    }
    if o.concurrency == 0 || o.provision_concurrency == 0 || o.webhook_concurrency == 0 {
        bail!("concurrency flags must be at least 1");
    }
    if o.batch == 0 || o.batch > 1_000 {
        bail!("--batch must be 1 to 1000 inbound messages per webhook");
    }
    if !matches!(o.tier_mps, 20 | 80 | 1000) {
        bail!("--tier-mps must be one of Meta's tiers: 20, 80 or 1000");
    }
    let RunSetup {
        port,
        base,
        suffix,
        prefix,
        dir,
        mut redis,
        redis_pid,
    } = prepare("tenants", &o.redis_url).await?;
    let sandbox = start_sandbox(&o, &base)?;
    let sim = sandbox.state();
    let admin_key = format!("loadgen-admin-{suffix}");
    kit::announce(&base, &sandbox.base_url(), &prefix, &dir);
    let mut gw = match spawn_gateway(&o, &dir, port, &prefix, &sandbox.base_url(), &admin_key) {
        Ok(gw) => gw,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let pool = o
        .concurrency
        .max(o.provision_concurrency)
        .max(o.webhook_concurrency);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    kit::wait_ready(&http, &base, &mut gw, Duration::from_secs(20)).await?;
    let ctx = Ctx {
        http,
        base,
        admin_auth: format!("Bearer {admin_key}"),
        started: Instant::now(),
        gateway_pid: gw.pid(),
        redis_pid,
    };
    let mut memory = vec![snapshot(&ctx, &mut redis, "ready (no clinics)").await];
    let mut problems = Vec::new();

    // 1. Clinics.
    eprintln!(
        "loadgen: provisioning {} clinics ({} at a time)",
        o.clinics, o.provision_concurrency
    );
    let (provision, clinics) = provision(&ctx, &sim, &o).await;
    eprintln!(
        "loadgen: {} clinics provisioned in {:.1} s ({} failed, {} skipped)",
        provision.provisioned, provision.wall_s, provision.failed, provision.skipped
    );
    memory.push(snapshot(&ctx, &mut redis, "provisioned").await);
    if provision.provisioned < o.clinics {
        problems.push(format!(
            "{} of {} clinics provisioned ({} failed {:?}, {} not attempted within --provision-timeout {:.0} s)",
            provision.provisioned,
            o.clinics,
            provision.failed,
            provision.errors,
            provision.skipped,
            o.provision_timeout.as_secs_f64()
        ));
    }

    // 2. Windows.
    let mut windows_phase = WindowsReport {
        requested: o.windows,
        ..WindowsReport::default()
    };
    if !clinics.is_empty() && o.windows > 0 {
        eprintln!(
            "loadgen: opening {} windows ({} per webhook, {} webhooks in flight)",
            o.windows, o.batch, o.webhook_concurrency
        );
        windows_phase = open_windows(&ctx, &o, &clinics).await;
        eprintln!(
            "loadgen: {} windows opened in {:.1} s = {:.0}/s",
            windows_phase.opened, windows_phase.wall_s, windows_phase.windows_per_sec
        );
    }
    memory.push(snapshot(&ctx, &mut redis, "windows open").await);
    if windows_phase.opened < o.windows {
        problems.push(format!(
            "{} of {} windows opened ({} failed POSTs {:?}, {} windows not attempted within --windows-timeout {:.0} s)",
            windows_phase.opened,
            o.windows,
            windows_phase.failed_posts,
            windows_phase.errors,
            windows_phase.skipped,
            o.windows_timeout.as_secs_f64()
        ));
    }

    // 3. Idle.
    eprintln!(
        "loadgen: idle for {:.0} s (RSS sampled)",
        o.idle.as_secs_f64()
    );
    let idle_start = Instant::now();
    let cpu_idle0 = sample(ctx.gateway_pid, redis_pid);
    let step = Duration::from_secs(5).min(o.idle.max(Duration::from_millis(100)));
    let mut idle_rss = Vec::new();
    while idle_start.elapsed() < o.idle {
        let left = o.idle.saturating_sub(idle_start.elapsed());
        tokio::time::sleep(step.min(left)).await;
        if let Some((rss, _)) = ctx.gateway_pid.and_then(procstat::memory_kib) {
            idle_rss.push((idle_start.elapsed().as_secs_f64(), mib(rss)));
        }
        if let Some(status) = gw.exited() {
            bail!(
                "the gateway exited ({status}) while idle; log {}:\n{}",
                gw.log.display(),
                gw.log_tail(30)
            );
        }
    }
    let cpu_idle = cpu_between(&cpu_idle0, &sample(ctx.gateway_pid, redis_pid));
    let idle_s = idle_start.elapsed().as_secs_f64();
    memory.push(snapshot(&ctx, &mut redis, &format!("after {idle_s:.0} s idle")).await);

    // 4. Active clinics.
    let mut active = ActiveReport::default();
    if !clinics.is_empty() && !o.duration.is_zero() {
        eprintln!(
            "loadgen: {} clients send templates over {} clinics for {:.0} s",
            o.concurrency,
            o.active.min(clinics.len()),
            o.duration.as_secs_f64()
        );
        let (mut a, accepted, ended) = active_phase(&ctx, &o, &clinics).await?;
        eprintln!(
            "loadgen: {} accepted ({:.0}/s, p99 {:.1} ms); waiting for the sandbox",
            a.accepted, a.accept_per_sec, a.latency.p99_ms
        );
        let cpu_d0 = sample(ctx.gateway_pid, redis_pid);
        let ids: HashSet<&str> = accepted.iter().map(String::as_str).collect();
        let wait_start = Instant::now();
        loop {
            let seen = sim
                .sent()
                .iter()
                .filter_map(|r| r.message.biz_opaque_callback_data.as_deref())
                .filter(|id| ids.contains(id))
                .collect::<HashSet<_>>()
                .len();
            if seen >= ids.len() || wait_start.elapsed() >= o.delivery_timeout {
                break;
            }
            if let Some(status) = gw.exited() {
                eprintln!("loadgen: the gateway exited ({status}) during the run");
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        a.delivery_wait_s = ended.elapsed().as_secs_f64();
        a.cpu_draining = cpu_between(&cpu_d0, &sample(ctx.gateway_pid, redis_pid));
        // A short settle so late duplicates and rejections are visible.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut seen: HashSet<&str> = HashSet::with_capacity(ids.len());
        let records = sim.sent();
        for r in &records {
            if let Some(id) = r.message.biz_opaque_callback_data.as_deref() {
                if ids.contains(id) && !seen.insert(id) {
                    a.duplicates += 1;
                }
            }
        }
        a.delivered = seen.len();
        a.missing = ids.len() - seen.len();
        for r in sim.rejected() {
            *a.sim_rejections.entry(r.code).or_default() += 1;
        }
        let errors: u64 = a.errors.values().sum();
        if errors > 0 {
            problems.push(format!(
                "{errors} of {} API requests were not accepted {:?}",
                a.requests, a.errors
            ));
        }
        if a.accepted == 0 {
            problems.push("no message was accepted".into());
        }
        if a.missing > 0 {
            problems.push(format!(
                "{} accepted messages never reached the sandbox within {:.0} s",
                a.missing,
                o.delivery_timeout.as_secs_f64()
            ));
        }
        if a.duplicates > 0 {
            problems.push(format!(
                "{} messages reached the sandbox more than once",
                a.duplicates
            ));
        }
        if !a.sim_rejections.is_empty() {
            problems.push(format!(
                "the sandbox rejected sends: {:?}",
                a.sim_rejections
            ));
        }
        active = a;
        memory.push(snapshot(&ctx, &mut redis, "after active phase").await);
    }
    for m in &memory {
        if let Some(rss) = m.gateway_rss_mib {
            if rss > o.max_rss_mib as f64 {
                problems.push(format!(
                    "gateway RSS {rss:.0} MiB {} is over the {} MiB target (by {:.0} MiB)",
                    m.label,
                    o.max_rss_mib,
                    rss - o.max_rss_mib as f64
                ));
            }
        }
    }
    if let Some(status) = gw.exited() {
        problems.push(format!("the gateway exited during the run ({status})"));
    }
    gw.stop();

    let scanned = scan_prefix(&mut redis, &prefix, !o.keep_redis_keys).await;
    let redis_keys_deleted = match &scanned {
        Ok((n, w)) => {
            windows_phase.window_keys_in_redis = Some(*w);
            (!o.keep_redis_keys).then_some(*n)
        }
        Err(e) => {
            eprintln!("loadgen: could not scan keys under {prefix}: {e}");
            None
        }
    };
    if let Some(w) = windows_phase.window_keys_in_redis {
        if (w as usize) < windows_phase.opened {
            problems.push(format!(
                "{} windows were acknowledged but only {w} window keys are in Redis",
                windows_phase.opened
            ));
        }
    }
    let gateway_log = finish::tidy_run_dir(&gw, &dir, &problems, o.keep_files);
    sandbox.stop();

    Ok(TenantsReport {
        scenario: "tenants",
        clinics: o.clinics,
        windows: o.windows,
        tier_mps: o.tier_mps,
        per_clinic_secrets: o.per_clinic_secrets,
        max_rss_mib: o.max_rss_mib,
        provision,
        windows_phase,
        idle_s,
        idle_rss,
        cpu_idle,
        active,
        memory,
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_cloud::signature::verify;
    use whatsapp_cloud::wire::WebhookEnvelope;

    #[test]
    fn window_jobs_cover_every_window_once() {
        for (clinics, windows, batch) in [(3, 10, 4), (50, 2_000, 100), (7, 3, 100), (4, 0, 10)] {
            let mut seen = HashSet::new();
            let mut total = 0;
            for (slot, start, count) in window_jobs(clinics, windows, batch) {
                assert!(slot < clinics && count >= 1 && count <= batch);
                for k in start..start + count {
                    assert!(seen.insert((slot, k)), "window ({slot}, {k}) twice");
                }
                total += count;
            }
            assert_eq!(total, windows, "{clinics} clinics, {windows} windows");
        }
        // Round-robin: the first POSTs go to different clinics.
        let first: Vec<usize> = window_jobs(5, 1_000, 100).take(5).map(|j| j.0).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn patients_are_distinct_indian_mobiles() {
        assert_eq!(patient(0, 0), "916000000000");
        assert_eq!(patient(9_999, 99), "916999900099");
        assert_ne!(patient(1, 0), patient(0, 1));
        assert_eq!(patient(MAX_CLINICS - 1, PATIENTS_PER_CLINIC - 1).len(), 12);
    }

    #[test]
    fn inbound_webhook_parses_and_verifies() {
        let body = inbound_body(7, 200, 3, 1_764_000_000);
        let env: WebhookEnvelope = serde_json::from_str(&body).expect("a webhook envelope");
        assert_eq!(env.entry.len(), 1);
        assert_eq!(env.entry[0].id, waba_id(7));
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let value = &v["entry"][0]["changes"][0]["value"];
        assert_eq!(value["metadata"]["phone_number_id"], number_id(7));
        let msgs = value["messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0]["from"], patient(7, 200));
        assert_eq!(msgs[2]["from"], patient(7, 202));
        assert_eq!(value["contacts"][1]["wa_id"], patient(7, 201));
        let secret = app_secret(7, true);
        let sig = sign(secret.as_bytes(), body.as_bytes());
        assert!(verify(secret.as_bytes(), body.as_bytes(), Some(&sig)).is_ok());
        assert_eq!(app_secret(7, false), APP_SECRET);
    }

    #[test]
    fn config_holds_only_the_admin_key_hash() {
        let t = gateway_toml("adm-key");
        assert!(t.contains(&hex::encode(Sha256::digest(b"adm-key"))));
        assert!(!t.contains("adm-key\""), "only the hash is written");
        assert!(t.contains("rate_per_second = 1000000"));
    }
}
