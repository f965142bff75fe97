//! `loadgen`: load-test scenarios for Clinic Gateway and its Meta simulator, with reports.
//!
//! Exit status: 0 when the scenario passed, 1 when it ran but found a problem (missing, duplicated
//! or rejected messages, a tier exceeded, API errors), 2 when it could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use loadtest::aggregator::{self, AggregatorArgs};
use loadtest::e2e::{self, E2eOptions};
use loadtest::mllp::{self, MessageKind, MllpOptions};
use loadtest::parse_duration;
use loadtest::raw::{self, RawArgs};
use loadtest::sim_ceiling::{self, SimCeilingOptions};
use loadtest::spike::{self, SpikeArgs};
use loadtest::tenants::{self, TenantsOptions};
use loadtest::touchpoints::{self, TouchpointsOptions};
use loadtest::webhook_storm::{self, StormArgs};
use loadtest::{kit, residency};

/// The same allocator as the gateway, so the harness takes as little of the shared cores as it can.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load-test scenarios for Clinic Gateway (loopback only, bounded in time and count).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Print the report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Short run for CI: sim-ceiling and each mllp phase run 2 s; e2e caps --messages at 200 and
    /// --concurrency at 8; tenants caps --clinics at 50, --windows at 2,000, --duration at 5 s and --idle at 3 s;
    /// raw runs 2 s; aggregator 20 clinics for 5 s; spike 2,000 recipients; webhook-storm
    /// phases of 2 s at a fifth of each rate.
    #[arg(long, global = true)]
    quick: bool,
    /// Where raw, aggregator, spike, webhook-storm and tenants/residency write
    /// `<scenario>.json` and `<scenario>.md`.
    #[arg(long, global = true, default_value = "target/loadgen")]
    out_dir: PathBuf,
    /// Tokio worker threads of loadgen's own client (the in-process sandbox has its own threads).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Closed-loop template sends straight at a running `meta-sim` (start it with --unlimited),
    /// over HTTP/1.1 keep-alive: the simulator's own ceiling, sends/s and latency.
    SimCeiling(SimCeilingArgs),
    /// End to end through the real gateway binary: starts the Meta sandbox in process and
    /// `clinic-gateway serve` as a child against Redis, sends --messages through POST
    /// /v1/messages, then checks that each reached the sandbox exactly once within the tier.
    E2e(E2eArgs),
    /// The send path's ceiling: closed-loop sends through the gateway's own Graph client
    /// straight at the sandbox (in process, unlimited) or a running meta-sim (--target).
    Raw(RawArgs),
    /// 2,000 clinics with a number each at 80 mps: a mixed day of API traffic (appointments, lab
    /// reports, prescriptions, free texts, patient replies) with the sandbox's status webhooks;
    /// messages/s end to end (accepted → sent → read → settled) next to raw in the same run.
    Aggregator(AggregatorArgs),
    /// A 100,000-recipient broadcast on one number at 1,000 mps with a lab report every 100 ms:
    /// duration against the ideal, 130429 at the sandbox, busiest second, lab-report latency.
    Spike(SpikeArgs),
    /// Signed status webhooks at 10,000 and 50,000 updates/s (10 % duplicates, 10 % out of
    /// order) for messages the gateway sent: handling latency, applied rate, final states.
    WebhookStorm(StormArgs),
    /// Clinics as tenants at scale: starts the sandbox in process and `clinic-gateway serve` as a
    /// child, provisions --clinics through the admin API (number, WABA, approved template, API
    /// key, wallet credit each), opens --windows customer-service windows with signed inbound
    /// webhooks, samples the gateway's RSS after provisioning, after the windows and through an
    /// --idle period, then measures POST /v1/messages accept latency with --active clinics for
    /// --duration and checks that the sandbox received every accepted message.
    /// Also `residency` (issue #9's name); writes residency.json and residency.md.
    #[command(alias = "residency")]
    Tenants(TenantsArgs),
    /// HL7 v2 over MLLP: starts the sandbox in process and `clinic-gateway serve` (MLLP enabled)
    /// as a child, then runs closed-loop EMR connections (send a small SIU, wait for its ACK) for
    /// --duration at each --connections count, and reports acknowledged messages/s and ACK
    /// latency. Every ACK must be AA.
    Mllp(MllpArgs),
    /// Clinical touchpoints: event-to-send latency per touchpoint on an idle gateway (booking,
    /// lab report, prescription, a patient's tap on Cancel; one event at a time), then
    /// --reminders reminders falling due at the same moment (scheduler → outbox → sandbox).
    /// Starts the sandbox (template library approved) in process and `clinic-gateway serve`.
    Touchpoints(TouchpointsArgs),
}

#[derive(Debug, Args)]
struct TouchpointsArgs {
    /// Events per touchpoint in the latency phase (0 skips it; --quick caps it at 20 and
    /// --reminders at 200).
    #[arg(long, default_value_t = 500)]
    events: usize,
    /// Pause after each event's send reached the sandbox.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    gap: Duration,
    /// Size of each lab report and prescription PDF in bytes.
    #[arg(long, default_value_t = 50_000)]
    pdf_bytes: usize,
    /// Reminders falling due at the same moment (0 skips the burst).
    #[arg(long, default_value_t = 10_000)]
    reminders: usize,
    /// Bookings in flight while preparing the burst.
    #[arg(long, default_value_t = 32)]
    booking_concurrency: usize,
    /// From the first booking of the burst to its due moment (default 10 s + 3 ms per reminder;
    /// more than 60 s idle before it lets the number's dispatcher passivate).
    #[arg(long, value_parser = parse_duration)]
    reminder_lead: Option<Duration>,
    /// Wait at most this long after the due moment for every reminder to reach the sandbox.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    burst_timeout: Duration,
    /// Throughput tier of the clinic's number (0 = no limiter in the gateway).
    #[arg(long, default_value_t = 0)]
    tier_mps: u32,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The template library seeded into the sandbox (and given to the gateway).
    #[arg(long, default_value = "config/templates")]
    templates_dir: PathBuf,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    sim_workers: usize,
    /// Sandbox delay before each status webhook (sent, delivered, read).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    status_latency: Duration,
    /// The sandbox sends no `read` statuses.
    #[arg(long)]
    no_read_receipts: bool,
    /// RUST_LOG of the gateway child (its log file is in the run's temporary directory).
    #[arg(long, default_value = "warn")]
    gateway_log: String,
    /// Extra environment for the gateway child, KEY=VALUE, repeatable.
    #[arg(long = "gateway-env", value_parser = parse_env)]
    gateway_env: Vec<(String, String)>,
    /// Leave the run's Redis keys in place (default: SCAN + UNLINK of the prefix).
    #[arg(long)]
    keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    keep_files: bool,
}

#[derive(Debug, Args)]
struct MllpArgs {
    /// Connection counts, one phase each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    connections: Vec<usize>,
    /// How long each phase sends (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// book: SIU^S12 for a new appointment each (stored, confirmation queued, reminder
    /// scheduled); cancel-unknown: SIU^S15 for appointments never booked (nothing to do: the
    /// listener's own ceiling).
    #[arg(long, value_enum, default_value = "book")]
    kind: MessageKind,
    /// Clinics, one EMR facility each; connections are spread over them.
    #[arg(long, default_value_t = 10)]
    clinics: usize,
    /// Throughput tier of each clinic's number (0 = no limiter). A tier keeps the confirmations
    /// queued rather than sent during the run, so the figure is the MLLP path alone.
    #[arg(long, default_value_t = 0)]
    tier_mps: u32,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The template library (the sandbox gets appointment_confirmation from it).
    #[arg(long, default_value = "config/templates")]
    templates_dir: PathBuf,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    sim_workers: usize,
    /// RUST_LOG of the gateway child.
    #[arg(long, default_value = "warn")]
    gateway_log: String,
    /// Extra environment for the gateway child, KEY=VALUE, repeatable.
    #[arg(long = "gateway-env", value_parser = parse_env)]
    gateway_env: Vec<(String, String)>,
    /// After the last phase, wait at most this long for the confirmations to reach the sandbox.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// Leave the run's Redis keys in place.
    #[arg(long)]
    keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    keep_files: bool,
}

#[derive(Debug, Args)]
struct SimCeilingArgs {
    /// Base URL of the running meta-sim.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    target: String,
    /// Concurrent keep-alive connections, one closed-loop task each.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to send (500ms, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Phone-number id the sends go to.
    #[arg(long, default_value = "1001")]
    phone_number_id: String,
    /// WABA of that number (default waba_<phone-number-id>, meta-sim's auto-registration id).
    #[arg(long)]
    waba_id: Option<String>,
    /// Graph API version prefix.
    #[arg(long, default_value = "v25.0")]
    api_version: String,
    /// Bearer token sent to the simulator (any non-empty value is accepted).
    #[arg(long, default_value = "bench-token")]
    token: String,
    /// Do not register the number and the appointment_reminder template through /_sim/numbers
    /// and /_sim/templates first (seed them with meta-sim's --number/--template instead).
    #[arg(long)]
    no_seed: bool,
}

#[derive(Debug, Args)]
struct E2eArgs {
    /// Business numbers (one clinic, API key and WABA each); messages go round-robin over them.
    #[arg(long, default_value_t = 2)]
    numbers: usize,
    /// Throughput tier of every number, messages/s (gateway config and sandbox); 0 = the
    /// gateway applies no limiter and the sandbox gets a very large tier.
    #[arg(long, default_value_t = 80)]
    tier_mps: u32,
    /// Messages to send (one distinct recipient each, so the pair rate never binds).
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Concurrent API clients (closed loop; with --rate, at most this many requests in flight).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Open loop: start requests on a fixed schedule of this many per second and report the
    /// latency from each one's scheduled start too (issue #9's accept latency at 5,000 req/s).
    #[arg(long)]
    rate: Option<u32>,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Sandbox without throughput or pair-rate checks.
    #[arg(long)]
    sim_unlimited: bool,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    sim_workers: usize,
    /// Sandbox delay before each status webhook (sent, delivered, read), e.g. 50ms.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    status_latency: Duration,
    /// The sandbox sends no `read` statuses (fewer webhooks to the gateway).
    #[arg(long)]
    no_read_receipts: bool,
    /// Gateway HTTP workers (CLINIC_GATEWAY__SERVER__WORKERS; default: the gateway's, one per core).
    #[arg(long)]
    gateway_workers: Option<usize>,
    /// Gateway dispatcher arbiters (CLINIC_GATEWAY__DISPATCH__ARBITERS; default: the gateway's).
    #[arg(long)]
    arbiters: Option<usize>,
    /// RUST_LOG of the gateway child (its log file is in the run's temporary directory).
    #[arg(long, default_value = "warn")]
    gateway_log: String,
    /// Wait at most this long after the last accept for the sandbox to receive everything
    /// (default: twice the time the tier needs, plus 10 s, at most 10 min).
    #[arg(long, value_parser = parse_duration)]
    delivery_timeout: Option<Duration>,
    /// Leave the run's Redis keys in place (default: SCAN + UNLINK of the prefix).
    #[arg(long)]
    keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    keep_files: bool,
    /// Gateway processes on the same Redis and prefix (issue #11); more than one runs them in
    /// cluster mode as node-1..N, API requests round-robin over them, webhooks to node-1.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Cluster mode (number leases, pub/sub announcements) even with one node.
    #[arg(long)]
    cluster: bool,
}

#[derive(Debug, Args)]
struct TenantsArgs {
    /// Clinics to provision through the admin API (at most 40,000).
    #[arg(long, default_value_t = 10_000)]
    clinics: usize,
    /// Customer-service windows to open (patients writing in), spread evenly over the clinics.
    #[arg(long, default_value_t = 1_000_000)]
    windows: usize,
    /// Clinics whose API keys the active phase uses, round-robin (the first K provisioned).
    #[arg(long, default_value_t = 1_000)]
    active: usize,
    /// How long the active phase sends (e.g. 20s); 0 skips it.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Closed-loop API clients in the active phase (one distinct recipient per message).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Clinics provisioned at a time (create, API key, credit in order for each).
    #[arg(long, default_value_t = 32)]
    provision_concurrency: usize,
    /// Webhook POSTs in flight while opening windows.
    #[arg(long, default_value_t = 16)]
    webhook_concurrency: usize,
    /// Inbound messages per webhook POST (all for one business number), 1 to 1000.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Idle period after the windows, RSS sampled every 5 s (the gateway's conversation actors
    /// stop after 15 s idle by default, so 90 s shows whether their memory is returned).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    idle: Duration,
    /// Throughput tier of every business number (20, 80 or 1000).
    #[arg(long, default_value_t = 80)]
    tier_mps: u32,
    /// A different app secret per clinic for the inbound webhooks. The sandbox signs all of its
    /// webhooks with one secret, so it then sends no status webhooks.
    #[arg(long)]
    per_clinic_secrets: bool,
    /// Stop starting new clinics after this long (the report says how many were reached).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    provision_timeout: Duration,
    /// Stop posting new window webhooks after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    windows_timeout: Duration,
    /// Wait at most this long after the last accept for the sandbox to receive everything.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    delivery_timeout: Duration,
    /// Gateway RSS target in MiB; a reading above it fails the run.
    #[arg(long, default_value_t = 1024)]
    max_rss_mib: u64,
    /// The gateway binary to start.
    #[arg(long, default_value = "target/release/clinic-gateway")]
    gateway_bin: PathBuf,
    /// Redis the gateway uses; keys go under a unique prefix deleted at the end.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// actix workers of the in-process sandbox.
    #[arg(long, default_value_t = 1)]
    sim_workers: usize,
    /// Sandbox without throughput or pair-rate checks.
    #[arg(long)]
    sim_unlimited: bool,
    /// Sandbox delay before each status webhook (sent, delivered, read).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    status_latency: Duration,
    /// The sandbox sends no `read` statuses.
    #[arg(long)]
    no_read_receipts: bool,
    /// RUST_LOG of the gateway child (its log file is in the run's temporary directory).
    #[arg(long, default_value = "warn")]
    gateway_log: String,
    /// Extra environment for the gateway child, KEY=VALUE, repeatable
    /// (e.g. CLINIC_GATEWAY__DISPATCH__IDLE_POLL_MS=1000).
    #[arg(long = "gateway-env", value_parser = parse_env)]
    gateway_env: Vec<(String, String)>,
    /// Leave the run's Redis keys in place (default: SCAN + UNLINK of the prefix).
    #[arg(long)]
    keep_redis_keys: bool,
    /// Keep the temporary directory (gateway config and log) even when the run passed.
    #[arg(long)]
    keep_files: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print<T: serde::Serialize + std::fmt::Display>(json: bool, report: &T) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

/// `Ok(passed)`.
async fn run(cli: Cli) -> Result<bool> {
    match cli.scenario {
        Scenario::SimCeiling(a) => {
            let duration = if cli.quick {
                a.duration.min(Duration::from_secs(2))
            } else {
                a.duration
            };
            let report = sim_ceiling::run(SimCeilingOptions {
                target: a.target,
                concurrency: a.concurrency,
                duration,
                phone_number_id: a.phone_number_id,
                waba_id: a.waba_id,
                api_version: a.api_version,
                token: a.token,
                seed: !a.no_seed,
            })
            .await?;
            print(cli.json, &report)?;
            Ok(report.ok > 0 && report.errors.is_empty())
        }
        Scenario::Raw(a) => {
            let report = raw::run(a.options(cli.quick)).await?;
            raw::save(&cli.out_dir, &report)?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::Aggregator(a) => {
            let report = aggregator::run(a.options(cli.quick)).await?;
            aggregator::save(&cli.out_dir, &report)?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::Spike(a) => {
            let report = spike::run(a.options(cli.quick)).await?;
            spike::save(&cli.out_dir, &report)?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::WebhookStorm(a) => {
            let report = webhook_storm::run(a.options(cli.quick)).await?;
            webhook_storm::save(&cli.out_dir, &report)?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::E2e(a) => {
            let (messages, concurrency) = if cli.quick {
                (a.messages.min(200), a.concurrency.min(8))
            } else {
                (a.messages, a.concurrency)
            };
            let report = e2e::run(E2eOptions {
                numbers: a.numbers,
                tier_mps: a.tier_mps,
                messages,
                concurrency,
                rate: a.rate.filter(|r| *r > 0),
                gateway_bin: a.gateway_bin,
                redis_url: a.redis_url,
                sim_unlimited: a.sim_unlimited,
                sim_workers: a.sim_workers,
                status_latency: a.status_latency,
                read_receipts: !a.no_read_receipts,
                gateway_workers: a.gateway_workers,
                arbiters: a.arbiters,
                gateway_log_level: a.gateway_log,
                delivery_timeout: a.delivery_timeout,
                keep_redis_keys: a.keep_redis_keys,
                keep_files: a.keep_files,
                nodes: a.nodes,
                cluster: a.cluster,
            })
            .await?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::Mllp(a) => {
            let (duration, drain) = if cli.quick {
                (
                    a.duration.min(Duration::from_secs(2)),
                    a.drain.min(Duration::from_secs(2)),
                )
            } else {
                (a.duration, a.drain)
            };
            let report = mllp::run(MllpOptions {
                connections: a.connections,
                duration,
                kind: a.kind,
                clinics: a.clinics,
                tier_mps: a.tier_mps,
                gateway_bin: a.gateway_bin,
                redis_url: a.redis_url,
                templates_dir: a.templates_dir,
                sim_workers: a.sim_workers,
                gateway_log_level: a.gateway_log,
                gateway_env: a.gateway_env,
                drain,
                keep_redis_keys: a.keep_redis_keys,
                keep_files: a.keep_files,
            })
            .await?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::Tenants(a) => {
            let mut o = TenantsOptions {
                clinics: a.clinics,
                windows: a.windows,
                active: a.active,
                duration: a.duration,
                concurrency: a.concurrency,
                provision_concurrency: a.provision_concurrency,
                webhook_concurrency: a.webhook_concurrency,
                batch: a.batch,
                idle: a.idle,
                tier_mps: a.tier_mps,
                per_clinic_secrets: a.per_clinic_secrets,
                provision_timeout: a.provision_timeout,
                windows_timeout: a.windows_timeout,
                delivery_timeout: a.delivery_timeout,
                max_rss_mib: a.max_rss_mib,
                gateway_bin: a.gateway_bin,
                redis_url: a.redis_url,
                sim_workers: a.sim_workers,
                sim_unlimited: a.sim_unlimited,
                status_latency: a.status_latency,
                read_receipts: !a.no_read_receipts,
                gateway_log_level: a.gateway_log,
                gateway_env: a.gateway_env,
                keep_redis_keys: a.keep_redis_keys,
                keep_files: a.keep_files,
            };
            if cli.quick {
                o.clinics = o.clinics.min(50);
                o.windows = o.windows.min(2_000);
                o.active = o.active.min(50);
                o.duration = o.duration.min(Duration::from_secs(5));
                o.idle = o.idle.min(Duration::from_secs(3));
                o.concurrency = o.concurrency.min(16);
                o.provision_timeout = o.provision_timeout.min(Duration::from_secs(10));
                o.windows_timeout = o.windows_timeout.min(Duration::from_secs(5));
                o.delivery_timeout = o.delivery_timeout.min(Duration::from_secs(10));
            }
            let mut run_info = kit::RunInfo::start();
            let report = tenants::run(o).await?;
            run_info.finish();
            residency::save(&cli.out_dir, &report, &run_info)?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
        Scenario::Touchpoints(a) => {
            let (events, reminders) = if cli.quick {
                (a.events.min(20), a.reminders.min(200))
            } else {
                (a.events, a.reminders)
            };
            let report = touchpoints::run(TouchpointsOptions {
                events,
                gap: a.gap,
                pdf_bytes: a.pdf_bytes,
                reminders,
                booking_concurrency: a.booking_concurrency,
                reminder_lead: a.reminder_lead,
                burst_timeout: a.burst_timeout,
                tier_mps: a.tier_mps,
                gateway_bin: a.gateway_bin,
                redis_url: a.redis_url,
                templates_dir: a.templates_dir,
                sim_workers: a.sim_workers,
                status_latency: a.status_latency,
                read_receipts: !a.no_read_receipts,
                gateway_log_level: a.gateway_log,
                gateway_env: a.gateway_env,
                keep_redis_keys: a.keep_redis_keys,
                keep_files: a.keep_files,
            })
            .await?;
            print(cli.json, &report)?;
            Ok(report.passed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn e2e_flags_parse() {
        let cli = Cli::parse_from([
            "loadgen",
            "e2e",
            "--numbers",
            "100",
            "--tier-mps",
            "80",
            "--messages",
            "20000",
            "--concurrency",
            "64",
            "--sim-unlimited",
            "--json",
        ]);
        assert!(cli.json);
        let Scenario::E2e(a) = cli.scenario else {
            panic!("expected e2e");
        };
        assert_eq!(
            (a.numbers, a.tier_mps, a.messages, a.concurrency),
            (100, 80, 20000, 64)
        );
        assert!(a.sim_unlimited);
        assert_eq!((a.nodes, a.cluster), (1, false));
        let cli = Cli::parse_from(["loadgen", "e2e", "--nodes", "3", "--cluster"]);
        let Scenario::E2e(a) = cli.scenario else {
            panic!("expected e2e");
        };
        assert_eq!((a.nodes, a.cluster), (3, true));
    }

    #[test]
    fn tenants_flags_parse() {
        let cli = Cli::parse_from(["loadgen", "tenants"]);
        let Scenario::Tenants(a) = cli.scenario else {
            panic!("expected tenants");
        };
        assert_eq!(
            (a.clinics, a.windows, a.active, a.duration),
            (10_000, 1_000_000, 1_000, Duration::from_secs(20))
        );
        let cli = Cli::parse_from([
            "loadgen",
            "--quick",
            "tenants",
            "--clinics",
            "200",
            "--idle",
            "30s",
            "--gateway-env",
            "CLINIC_GATEWAY__DISPATCH__IDLE_POLL_MS=1000",
        ]);
        let Scenario::Tenants(a) = cli.scenario else {
            panic!("expected tenants");
        };
        assert_eq!((a.clinics, a.idle), (200, Duration::from_secs(30)));
        assert_eq!(
            a.gateway_env,
            vec![(
                "CLINIC_GATEWAY__DISPATCH__IDLE_POLL_MS".to_owned(),
                "1000".to_owned()
            )]
        );
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn mllp_flags_parse() {
        let cli = Cli::parse_from(["loadgen", "mllp"]);
        let Scenario::Mllp(a) = cli.scenario else {
            panic!("expected mllp");
        };
        assert_eq!((a.connections, a.kind), (vec![1, 50], MessageKind::Book));
        let cli = Cli::parse_from([
            "loadgen",
            "mllp",
            "--connections",
            "4,8",
            "--kind",
            "cancel-unknown",
        ]);
        let Scenario::Mllp(a) = cli.scenario else {
            panic!("expected mllp");
        };
        assert_eq!(
            (a.connections, a.kind),
            (vec![4, 8], MessageKind::CancelUnknown)
        );
    }

    #[test]
    fn load_scenario_flags_parse() {
        let cli = Cli::parse_from(["loadgen", "--quick", "spike"]);
        let Scenario::Spike(a) = cli.scenario else {
            panic!("expected spike");
        };
        let o = a.options(cli.quick);
        assert_eq!((o.recipients, o.tier_mps), (2_000, 1_000));
        let cli = Cli::parse_from(["loadgen", "webhook-storm", "--rates", "100,200"]);
        let Scenario::WebhookStorm(a) = cli.scenario else {
            panic!("expected webhook-storm");
        };
        assert_eq!(a.rates, vec![100, 200]);
        let cli = Cli::parse_from(["loadgen", "aggregator", "--out-dir", "/tmp/x"]);
        assert!(matches!(cli.scenario, Scenario::Aggregator(_)));
        assert_eq!(cli.out_dir, PathBuf::from("/tmp/x"));
        let cli = Cli::parse_from(["loadgen", "residency", "--clinics", "5"]);
        assert!(matches!(cli.scenario, Scenario::Tenants(ref a) if a.clinics == 5));
        assert!(matches!(
            Cli::parse_from(["loadgen", "raw"]).scenario,
            Scenario::Raw(_)
        ));
    }

    #[test]
    fn sim_ceiling_flags_parse() {
        let cli = Cli::parse_from(["loadgen", "--quick", "sim-ceiling", "--duration", "3s"]);
        let Scenario::SimCeiling(a) = cli.scenario else {
            panic!("expected sim-ceiling");
        };
        assert_eq!(a.duration, Duration::from_secs(3));
        assert!(cli.quick);
    }
}
