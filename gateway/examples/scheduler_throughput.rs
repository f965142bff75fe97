//! Scheduler throughput against a real Redis: how fast due jobs leave the scheduler's sorted set
//! through `RedisStore::claim_due` (the Lua script) and `complete_many`, the store calls the
//! node's scheduler makes per batch of jobs. Running the jobs themselves (sends, callbacks) is not
//! measured here; `loadgen touchpoints` measures reminders end to end.
//!
//! ```sh
//! cargo run --release -p clinic-gateway --example scheduler_throughput -- --jobs 200000
//! ```
//!
//! Two ways to complete: one `complete_many` (one ZREM) per claimed batch, as the scheduler does,
//! and one `complete` per job, as it did before.
//!
//! Flags: `--jobs N` (200,000), `--batch N` (1,000 per claim), `--redis URL` (`REDIS_URL`, else
//! `redis://127.0.0.1:6379`), `--concurrency N` (256 schedules in flight while seeding). Keys go
//! under a unique prefix, deleted at the end.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clinic_gateway::domain::appointment::AppointmentId;
use clinic_gateway::domain::TenantId;
use clinic_gateway::store::clinical::{ClaimedJob, JobStore};
use clinic_gateway::store::RedisStore;
use clinic_gateway::workflows::Job;
use futures::stream::{self, StreamExt};

const LEASE_MS: i64 = 60_000;

struct Args {
    jobs: usize,
    batch: usize,
    redis: String,
    concurrency: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        jobs: 200_000,
        batch: 1_000,
        redis: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        concurrency: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--jobs" => a.jobs = number(value()?)?,
            "--batch" => a.batch = number(value()?)?.max(1),
            "--concurrency" => a.concurrency = number(value()?)?.max(1),
            "--redis" => a.redis = value()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn tenant(i: usize) -> Result<TenantId, String> {
    TenantId::parse(&format!("clinic_{:03}", i % 100)).map_err(|e| e.to_string())
}

/// Schedules `n` reminder jobs, all already due, `concurrency` at a time.
async fn seed(store: &RedisStore, n: usize, concurrency: usize) -> Result<f64, String> {
    let due = now_ms() - 1_000;
    let started = Instant::now();
    let mut results = stream::iter(0..n)
        .map(|i| async move {
            let job = Job::Reminder {
                appointment: AppointmentId::generate(),
                version: 1,
                offset_minutes: 1_440,
            };
            store
                .schedule(&tenant(i)?, &job, due)
                .await
                .map_err(|e| e.to_string())
        })
        .buffer_unordered(concurrency);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[derive(Default)]
struct Drain {
    jobs: usize,
    claims: usize,
    wall: Duration,
    in_claim: Duration,
    in_complete: Duration,
}

/// Claims due jobs `batch` at a time and completes them, until none is due: with one
/// `complete_many` per claimed batch (`many`, as the node's scheduler does), or one `complete`
/// per job.
async fn drain(store: &RedisStore, batch: usize, many: bool) -> Result<Drain, String> {
    let mut d = Drain::default();
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let claimed: Vec<ClaimedJob> = store
            .claim_due(now_ms(), batch, LEASE_MS)
            .await
            .map_err(|e| e.to_string())?;
        d.in_claim += t.elapsed();
        if claimed.is_empty() {
            break;
        }
        d.claims += 1;
        d.jobs += claimed.len();
        let t = Instant::now();
        if many {
            let refs: Vec<&ClaimedJob> = claimed.iter().collect();
            store
                .complete_many(&refs)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            for job in &claimed {
                store.complete(job).await.map_err(|e| e.to_string())?;
            }
        }
        d.in_complete += t.elapsed();
    }
    d.wall = started.elapsed();
    Ok(d)
}

async fn delete_prefix(url: &str, prefix: &str) -> Result<u64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut con)
                .await
                .map_err(|e| e.to_string())?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

async fn run(a: &Args, store: &RedisStore) -> Result<(), String> {
    println!(
        "scheduler throughput: {} due jobs, claim_due batch {}, lease {} s, Redis {}",
        a.jobs,
        a.batch,
        LEASE_MS / 1000,
        a.redis
    );
    for (name, many) in [
        (
            "complete_many per claimed batch (as gateway/src/scheduler.rs does)",
            true,
        ),
        (
            "complete one by one (the scheduler before complete_many)",
            false,
        ),
    ] {
        let seed_s = seed(store, a.jobs, a.concurrency).await?;
        let before = store.scheduled().await.map_err(|e| e.to_string())?;
        let d = drain(store, a.batch, many).await?;
        let left = store.scheduled().await.map_err(|e| e.to_string())?;
        let secs = d.wall.as_secs_f64().max(1e-9);
        println!("\n{name}:");
        println!(
            "  seeded {before} jobs in {seed_s:.2} s ({:.0} schedule/s, {} in flight)",
            a.jobs as f64 / seed_s.max(1e-9),
            a.concurrency
        );
        println!(
            "  claimed + completed {} jobs in {secs:.2} s = {:.0} jobs/s ({} claims)",
            d.jobs,
            d.jobs as f64 / secs,
            d.claims
        );
        println!(
            "  time in claim_due {:.2} s ({:.1} ms per claim of {}), in complete {:.2} s ({:.1} µs per job)",
            d.in_claim.as_secs_f64(),
            d.in_claim.as_secs_f64() * 1e3 / d.claims.max(1) as f64,
            a.batch,
            d.in_complete.as_secs_f64(),
            d.in_complete.as_secs_f64() * 1e6 / d.jobs.max(1) as f64
        );
        println!(
            "  claim alone: {:.0} jobs/s",
            d.jobs as f64 / d.in_claim.as_secs_f64().max(1e-9)
        );
        if left != 0 || d.jobs != a.jobs {
            return Err(format!(
                "{} jobs claimed of {}, {left} left in the set",
                d.jobs, a.jobs
            ));
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scheduler_throughput: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let prefix = format!(
        "bench:sched:{}{:x}:",
        std::process::id(),
        now_ms() & 0xff_ffff
    );
    let store = match RedisStore::connect(&a.redis, &prefix, 4) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scheduler_throughput: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = run(&a, &store).await;
    match delete_prefix(&a.redis, &prefix).await {
        Ok(n) => println!("\nredis keys deleted under {prefix}: {n}"),
        Err(e) => eprintln!("scheduler_throughput: could not delete {prefix}*: {e}"),
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scheduler_throughput: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
