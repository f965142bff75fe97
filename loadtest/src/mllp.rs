//! `mllp`: HL7 v2 over MLLP into the real gateway binary. Closed-loop EMR connections send small
//! SIU messages and wait for each ACK, as interface engines do; the report gives acknowledged
//! messages/s and ACK latency for each connection count (by default 1, then 50).
//!
//! Kinds of message:
//! - `book`: SIU^S12 for a new appointment each time (a new patient, 30 days ahead): the full
//!   path: parse, sender lookup, dedupe lookup, appointment stored, confirmation accepted into
//!   the outbox, reminder scheduled, control id remembered, AA.
//! - `cancel-unknown`: SIU^S15 for appointments the gateway never saw: parse, sender lookup,
//!   dedupe and appointment lookups, AA; nothing stored but the control id. The listener's own
//!   ceiling.
//!
//! Every ACK must be AA for the run to pass. The confirmations the bookings cause are sent to
//! the in-process sandbox meanwhile; the report says how many arrived by the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxHandle, SandboxState, TemplateStatus,
};

use crate::e2e::{
    cpu_between, free_port, prepare, redis_info_field, sample, CpuReport, Gateway, RunSetup,
    APP_SECRET, LARGE_TIER,
};
use crate::finish;
use crate::kit;
use crate::stats::{Latencies, LatencySummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MessageKind {
    Book,
    CancelUnknown,
}

#[derive(Debug, Clone)]
pub struct MllpOptions {
    /// Connection counts, one phase each, in order.
    pub connections: Vec<usize>,
    pub duration: Duration,
    pub kind: MessageKind,
    /// Clinics (one EMR facility each); connections are spread over them.
    pub clinics: usize,
    /// Throughput tier of each clinic's number (0 = no limiter): a tier keeps the confirmations
    /// the bookings cause queued instead of sent during the run, isolating the MLLP path.
    pub tier_mps: u32,
    pub gateway_bin: PathBuf,
    pub redis_url: String,
    pub templates_dir: PathBuf,
    pub sim_workers: usize,
    pub gateway_log_level: String,
    pub gateway_env: Vec<(String, String)>,
    /// Wait at most this long after the last phase for the sandbox to receive the confirmations.
    pub drain: Duration,
    pub keep_redis_keys: bool,
    pub keep_files: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub connections: usize,
    pub acked: u64,
    pub seconds: f64,
    pub acked_per_sec: f64,
    /// Non-AA acknowledgments by MSA-1 and transport errors.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub ack_latency: LatencySummary,
    pub cpu: CpuReport,
    pub redis_commands_per_message: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MllpReport {
    pub scenario: &'static str,
    pub kind: MessageKind,
    pub clinics: usize,
    pub tier_mps: u32,
    pub message_bytes: usize,
    pub phases: Vec<PhaseReport>,
    /// Confirmations the sandbox received by the end (bookings only).
    pub confirmations_received: usize,
    pub bookings_acked: u64,
    pub redis_keys_deleted: Option<u64>,
    pub gateway_log: String,
    pub problems: Vec<String>,
}

impl MllpReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for MllpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mllp: {:?} messages ({} bytes each), {} clinics, {}",
            self.kind,
            self.message_bytes,
            self.clinics,
            if self.tier_mps == 0 {
                "no send limiter".to_owned()
            } else {
                format!("sends limited to tier {} mps per clinic", self.tier_mps)
            }
        )?;
        let p = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.0} %"));
        for ph in &self.phases {
            writeln!(
                f,
                "  {:>3} connections: {} AA in {:.2} s = {:.0} msgs/s; errors {:?}",
                ph.connections, ph.acked, ph.seconds, ph.acked_per_sec, ph.errors
            )?;
            if let Some(e) = &ph.first_error {
                writeln!(f, "            first error: {e}")?;
            }
            writeln!(f, "            ACK latency {}", ph.ack_latency)?;
            let threads: Vec<String> = ph
                .cpu
                .gateway_threads
                .iter()
                .map(|(n, v)| format!("{n} {v:.0} %"))
                .collect();
            writeln!(
                f,
                "            CPU (100 % = one core): gateway {}, redis-server {}, loadgen+sandbox {:.0} %; busiest gateway threads: {}",
                p(ph.cpu.gateway_pct),
                p(ph.cpu.redis_pct),
                ph.cpu.loadgen_pct + ph.cpu.sandbox_pct,
                threads.join(", ")
            )?;
            if let Some(c) = ph.redis_commands_per_message {
                writeln!(f, "            redis commands per message: {c:.1}")?;
            }
        }
        if self.kind == MessageKind::Book {
            writeln!(
                f,
                "  confirmations at the sandbox by the end of the drain: {} of {} bookings",
                self.confirmations_received, self.bookings_acked
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

fn facility(i: usize) -> String {
    format!("FAC{i:03}")
}

fn number_id(i: usize) -> String {
    (130_000_000_000_000u64 + i as u64).to_string()
}

fn waba_id(i: usize) -> String {
    (140_000_000_000_000u64 + i as u64).to_string()
}

/// One clinic per facility, each linked to the EMR `LOADGEN`.
fn gateway_toml(clinics: usize, tier_mps: u32) -> String {
    let mut s = String::from(
        "# written by loadgen mllp\n[api]\nrate_per_second = 1000000\nburst = 1000000\n",
    );
    for i in 0..clinics {
        let key_hash = hex::encode(Sha256::digest(format!("loadgen-mllp-{i}").as_bytes()));
        let _ = write!(
            s,
            "\n[[clinics]]\nid = \"mllp_{i:03}\"\nname = \"MLLP clinic {i}\"\n\
             api_key_sha256 = \"{key_hash}\"\ndefault_country_code = \"91\"\nwallet_credit = 1000000000000\n\
             waba_id = \"{waba}\"\napp_secret = \"{APP_SECRET}\"\naccess_token = \"loadgen-token-{i}\"\n\
             [[clinics.numbers]]\nphone_number_id = \"{pnid}\"\ndisplay = \"+91 80 4666 {i:04}\"\ntier_mps = {tier_mps}\n\
             [clinics.emr.hl7]\nsending_application = \"LOADGEN\"\nsending_facility = \"{fac}\"\n",
            waba = waba_id(i),
            pnid = number_id(i),
            fac = facility(i),
        );
    }
    s
}

/// A small SIU (about 400 bytes).
fn message(kind: MessageKind, run: &str, fac: &str, i: usize, start: &str, now: &str) -> String {
    let (event, status) = match kind {
        MessageKind::Book => ("S12", "Booked"),
        MessageKind::CancelUnknown => ("S15", "Cancelled"),
    };
    format!(
        "MSH|^~\\&|LOADGEN|{fac}|GW|GW|{now}||SIU^{event}^SIU_S12|{run}{i:010}|P|2.5.1\r\
         SCH||{run}-{i}|||||^Checkup|ROUTINE|30|MIN|^^30^{start}||||||||||||||{status}\r\
         PID|1||M{i}^^^{fac}^MR||Patient^Load||19800101|F|||||^PRN^CP^^^^^^^^^+9196{:08}\r\
         RGS|1\r\
         AIP|1||D1^Rao^Meera^^^Dr\r",
        i % 100_000_000
    )
}

fn frame(payload: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 3);
    v.push(0x0b);
    v.extend_from_slice(payload.as_bytes());
    v.extend_from_slice(&[0x1c, 0x0d]);
    v
}

fn start_sandbox(o: &MllpOptions, gateway_base: &str) -> Result<SandboxHandle> {
    let state = SandboxState::new(SandboxConfig {
        webhook_url: Some(format!("{gateway_base}/webhooks/whatsapp")),
        app_secret: APP_SECRET.into(),
        unlimited: true,
        status_latency: Duration::from_millis(50),
        read_receipts: false,
        webhook_retry_interval: Duration::from_millis(300),
        record_limit: 2_000_000,
        auto_register_numbers: false,
        ..SandboxConfig::default()
    });
    let def_path = o.templates_dir.join("en/appointment_confirmation.json");
    let def: whatsapp_cloud::wire::CreateTemplateRequest = serde_json::from_slice(
        &std::fs::read(&def_path).with_context(|| format!("reading {}", def_path.display()))?,
    )
    .with_context(|| format!("parsing {}", def_path.display()))?;
    for i in 0..o.clinics {
        state.register_number(
            &number_id(i),
            &waba_id(i),
            &format!("9180466{i:05}"),
            LARGE_TIER,
        );
        state.add_template_def(&waba_id(i), &def, TemplateStatus::Approved);
    }
    Sandbox::spawn_state(state, o.sim_workers.max(1)).context("starting the sandbox")
}

fn spawn_gateway(
    o: &MllpOptions,
    dir: &Path,
    port: u16,
    mllp_port: u16,
    prefix: &str,
    sandbox_url: &str,
) -> Result<Gateway> {
    let max_conn = o.connections.iter().copied().max().unwrap_or(1) + 16;
    // The listener's settings first: `--gateway-env` may still override them.
    let mut env = vec![
        (
            "CLINIC_GATEWAY__MLLP__ENABLED".to_owned(),
            "true".to_owned(),
        ),
        (
            "CLINIC_GATEWAY__MLLP__BIND".to_owned(),
            format!("127.0.0.1:{mllp_port}"),
        ),
        (
            "CLINIC_GATEWAY__MLLP__MAX_CONNECTIONS".to_owned(),
            max_conn.to_string(),
        ),
    ];
    env.extend(o.gateway_env.iter().cloned());
    let spec = kit::GatewaySpec {
        bin: &o.gateway_bin,
        toml: gateway_toml(o.clinics, o.tier_mps),
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

#[derive(Default)]
struct ConnOut {
    acked: u64,
    latency: Latencies,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

/// One EMR connection: send, wait for the ACK, repeat until `stop`.
async fn connection(
    port: u16,
    o: Arc<MllpOptions>,
    run: Arc<str>,
    conn: usize,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> ConnOut {
    let mut out = ConnOut::default();
    let fail = |out: &mut ConnOut, kind: &str, detail: String| {
        *out.errors.entry(kind.to_owned()).or_default() += 1;
        out.first_error.get_or_insert(detail);
    };
    let mut io = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => {
            fail(&mut out, "connect", e.to_string());
            return out;
        }
    };
    let _ = io.set_nodelay(true);
    let fac = facility(conn % o.clinics.max(1));
    let start = (chrono::Utc::now() + chrono::Duration::days(30))
        .format("%Y%m%d%H%M%S+0000")
        .to_string();
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000").to_string();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let bytes = frame(&message(o.kind, &run, &fac, i, &start, &now));
        let t0 = Instant::now();
        if let Err(e) = io.write_all(&bytes).await {
            fail(&mut out, "write", e.to_string());
            return out;
        }
        buf.clear();
        let ack = loop {
            if let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
                break Some(buf[..end].to_vec());
            }
            match tokio::time::timeout(Duration::from_secs(30), io.read(&mut chunk)).await {
                Ok(Ok(0)) => break None,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => {
                    fail(&mut out, "read", e.to_string());
                    break None;
                }
                Err(_) => {
                    fail(&mut out, "timeout", "no ACK within 30 s".into());
                    break None;
                }
            }
        };
        let Some(ack) = ack else {
            fail(
                &mut out,
                "closed",
                format!("message {i}: connection closed"),
            );
            return out;
        };
        out.latency.record(t0.elapsed());
        let text = String::from_utf8_lossy(&ack);
        let code = text
            .split('\r')
            .find_map(|seg| seg.strip_prefix("MSA|"))
            .and_then(|msa| msa.split('|').next())
            .unwrap_or("none")
            .to_owned();
        if code == "AA" {
            out.acked += 1;
        } else {
            let err = text
                .split('\r')
                .find(|s| s.starts_with("ERR|"))
                .unwrap_or("")
                .to_owned();
            fail(&mut out, &code, format!("message {i}: {code} {err:.300}"));
        }
    }
    out
}

/// Runs the scenario. `Err` is a setup failure; correctness failures are in `problems`.
pub async fn run(o: MllpOptions) -> Result<MllpReport> {
    if o.connections.is_empty() || o.connections.contains(&0) || o.clinics == 0 {
        bail!("--connections (each at least 1) and --clinics must be set");
    }
    let RunSetup {
        port,
        base,
        prefix,
        dir,
        mut redis,
        redis_pid,
        suffix,
    } = prepare("mllp", &o.redis_url).await?;
    let mllp_port = free_port()?;
    let sandbox = start_sandbox(&o, &base)?;
    let sim = sandbox.state();
    eprintln!(
        "loadgen: gateway on {base} (MLLP 127.0.0.1:{mllp_port}), sandbox on {}, redis prefix {prefix}, files in {}",
        sandbox.base_url(),
        dir.display()
    );
    let mut gw = spawn_gateway(&o, &dir, port, mllp_port, &prefix, &sandbox.base_url())?;
    let http = reqwest::Client::new();
    kit::wait_ready(&http, &base, &mut gw, Duration::from_secs(20)).await?;
    let o = Arc::new(o);
    let run: Arc<str> = format!("R{}", &suffix[suffix.len().saturating_sub(6)..]).into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut phases = Vec::new();
    let mut problems = Vec::new();
    let mut total_acked = 0;
    for &n in &o.connections {
        eprintln!(
            "loadgen: {n} connections for {:.0} s",
            o.duration.as_secs_f64()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let cpu0 = sample(gw.pid(), redis_pid);
        let commands0 = redis_info_field(&mut redis, "stats", "total_commands_processed").await;
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|c| {
                tokio::spawn(connection(
                    mllp_port,
                    o.clone(),
                    run.clone(),
                    c,
                    next.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(o.duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut latency = Latencies::new();
        let (mut acked, mut errors, mut first_error) = (0u64, BTreeMap::new(), None);
        for t in tasks {
            let c = t.await.context("a connection task panicked")?;
            acked += c.acked;
            latency.merge(&c.latency);
            for (k, v) in c.errors {
                *errors.entry(k).or_default() += v;
            }
            if first_error.is_none() {
                first_error = c.first_error;
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        let cpu1 = sample(gw.pid(), redis_pid);
        let commands1 = redis_info_field(&mut redis, "stats", "total_commands_processed").await;
        if !errors.is_empty() {
            problems.push(format!("{n} connections: errors {errors:?}"));
        }
        total_acked += acked;
        phases.push(PhaseReport {
            connections: n,
            acked,
            seconds,
            acked_per_sec: acked as f64 / seconds.max(1e-9),
            errors,
            first_error,
            ack_latency: latency.summary(),
            cpu: cpu_between(&cpu0, &cpu1),
            redis_commands_per_message: match (commands0, commands1) {
                (Some(a), Some(b)) if acked > 0 => {
                    Some((b.saturating_sub(a)) as f64 / acked as f64)
                }
                _ => None,
            },
        });
        if let Some(status) = gw.exited() {
            problems.push(format!("the gateway exited ({status})"));
            break;
        }
    }
    let bookings_acked = if o.kind == MessageKind::Book {
        total_acked
    } else {
        0
    };
    if bookings_acked > 0 {
        let wait = Instant::now();
        while (sim.sent().len() as u64) < bookings_acked && wait.elapsed() < o.drain {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let confirmations_received = sim.sent().len();
    gw.stop();
    let redis_keys_deleted = if o.keep_redis_keys {
        None
    } else {
        finish::delete_prefix(&mut redis, &prefix).await.ok()
    };
    let gateway_log = gw.log.display().to_string();
    if problems.is_empty() && !o.keep_files {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let message_bytes = message(
        o.kind,
        &run,
        &facility(0),
        1,
        "20300101000000+0000",
        "20300101000000+0000",
    )
    .len();
    Ok(MllpReport {
        scenario: "mllp",
        kind: o.kind,
        clinics: o.clinics,
        tier_mps: o.tier_mps,
        message_bytes,
        phases,
        confirmations_received,
        bookings_acked,
        redis_keys_deleted,
        gateway_log,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_small_valid_frames() {
        let m = message(
            MessageKind::Book,
            "R1",
            "FAC000",
            42,
            "20300101000000+0000",
            "20300101000000+0000",
        );
        assert!(m.len() < 450, "{}", m.len());
        assert!(m.contains("SIU^S12") && m.contains("|R1-42|"));
        let f = frame(&m);
        assert_eq!((f[0], f[f.len() - 2], f[f.len() - 1]), (0x0b, 0x1c, 0x0d));
        let toml = gateway_toml(2, 0);
        assert!(toml.contains("[clinics.emr.hl7]") && toml.contains("FAC001"));
    }
}
