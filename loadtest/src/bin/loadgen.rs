//! `loadgen`: load-test scenarios for Clinic Gateway and its Meta simulator, with reports.
//!
//! Exit status: 0 when the scenario passed, 1 when it ran but found a problem (missing, duplicated
//! or rejected messages, a tier exceeded, API errors), 2 when it could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use loadtest::e2e::{self, E2eOptions};
use loadtest::parse_duration;
use loadtest::sim_ceiling::{self, SimCeilingOptions};

/// Load-test scenarios for Clinic Gateway (loopback only, bounded in time and count).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Cli {
    /// Print the report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Short run for CI: sim-ceiling runs 2 s; e2e caps --messages at 200 and --concurrency at 8.
    #[arg(long, global = true)]
    quick: bool,
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
    /// Concurrent closed-loop API clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
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
