//! The node's scheduler: claims due jobs from Redis (atomically, so each runs on one node) and
//! runs them, several at a time. A job whose node dies mid-run comes back when its lease ends;
//! jobs that send use ids derived from the job, so a second run sends nothing twice.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;

use crate::clinical::{Clinical, ClinicalError, JobOutcome};
use crate::clock::now_ms;
use crate::domain::TenantId;
use crate::store::clinical::ClaimedJob;
use crate::workflows::Job;

/// Jobs claimed per poll.
const BATCH: usize = 500;
/// Jobs (or reminder batches) run at once: each mostly waits on Redis and the clinic's actor.
const CONCURRENCY: usize = 64;
/// Due reminders of one clinic run as one batch, at most this many: small enough that a claim's
/// batches overlap (one waits on Redis while another is built), large enough that the round
/// trips per reminder are a small fraction.
const REMINDER_BATCH: usize = 128;
/// A claimed job not completed within this long runs again.
const LEASE_MS: i64 = 60_000;
/// The retention sweep runs at most this often per node.
const SWEEP_EVERY_MS: i64 = 3_600_000;
/// Records and appointments deleted per sweep, all clinics together; the rest waits for the
/// next sweep.
pub const SWEEP_BUDGET: usize = 5_000;

pub fn spawn(clinical: Clinical, poll: Duration) {
    actix::spawn(async move {
        let mut next_sweep = 0;
        loop {
            if now_ms() >= next_sweep {
                next_sweep = now_ms() + SWEEP_EVERY_MS;
                sweep(&clinical).await;
            }
            let claimed = match clinical.store.claim_due(now_ms(), BATCH, LEASE_MS).await {
                Ok(c) => c,
                Err(e) => {
                    if matches!(e, crate::store::StoreError::Unavailable(_)) {
                        crate::metrics::store_unavailable("scheduler");
                    }
                    tracing::warn!(error = %e, "scheduler could not claim jobs");
                    tokio::time::sleep(poll * 4).await;
                    continue;
                }
            };
            let busy = claimed.len() == BATCH;
            let done = run_all(&clinical, &claimed).await;
            if let Err(e) = clinical.store.complete_many(&done).await {
                tracing::warn!(error = %e, "could not complete jobs; they run again (idempotent)");
            }
            if !busy {
                tokio::time::sleep(poll).await;
            }
        }
    });
}

/// Deletes what is older than each clinic's retention, within [`SWEEP_BUDGET`].
pub async fn sweep(clinical: &Clinical) -> usize {
    let mut deleted = 0;
    for clinic in clinical.directory.all() {
        if clinic.retention_days.is_none() || deleted >= SWEEP_BUDGET {
            continue;
        }
        match clinical
            .sweep_retention(&clinic, now_ms(), SWEEP_BUDGET - deleted)
            .await
        {
            Ok(n) => deleted += n,
            Err(e) => {
                tracing::warn!(error = %e, tenant = %clinic.id, "retention sweep failed; retried next sweep")
            }
        }
    }
    deleted
}

/// What the scheduler runs as one unit: a job, or due reminders of one clinic.
enum Unit<'a> {
    One(&'a ClaimedJob),
    Reminders(TenantId, Vec<&'a ClaimedJob>),
}

/// Splits claimed jobs into units: reminders by clinic in batches of at most
/// [`REMINDER_BATCH`] (a clinic's keys share one hash tag, so its batch can share round trips),
/// every other job on its own.
fn units(claimed: &[ClaimedJob]) -> Vec<Unit<'_>> {
    let mut out = Vec::new();
    let mut reminders: HashMap<&TenantId, Vec<&ClaimedJob>> = HashMap::new();
    for job in claimed {
        if matches!(job.job, Job::Reminder { .. }) {
            reminders.entry(&job.tenant).or_default().push(job);
        } else {
            out.push(Unit::One(job));
        }
    }
    for (tenant, jobs) in reminders {
        for chunk in jobs.chunks(REMINDER_BATCH) {
            out.push(Unit::Reminders(tenant.clone(), chunk.to_vec()));
        }
    }
    out
}

async fn run_unit<'a>(
    clinical: &Clinical,
    unit: Unit<'a>,
) -> Vec<(&'a ClaimedJob, Result<JobOutcome, ClinicalError>)> {
    match unit {
        Unit::One(job) => vec![(job, clinical.run_job(job).await)],
        Unit::Reminders(tenant, jobs) => {
            let results = match clinical.directory.get(&tenant) {
                Some(clinic) => clinical.run_reminders(&clinic, &jobs).await,
                // The clinic is gone: nothing to send.
                None => jobs.iter().map(|_| Ok(JobOutcome::Done)).collect(),
            };
            jobs.into_iter().zip(results).collect()
        }
    }
}

/// Runs the jobs; returns those to remove (done). Deferred jobs were re-scored by their run;
/// failed ones stay claimed and run again when their lease ends.
async fn run_all<'a>(clinical: &Clinical, claimed: &'a [ClaimedJob]) -> Vec<&'a ClaimedJob> {
    futures::stream::iter(units(claimed))
        .map(|unit| run_unit(clinical, unit))
        .buffer_unordered(CONCURRENCY)
        .flat_map(futures::stream::iter)
        .filter_map(|(job, result)| async move {
            match result {
                Ok(JobOutcome::Done) => Some(job),
                Ok(JobOutcome::Deferred { .. }) => None,
                Err(e) => {
                    tracing::warn!(error = %e, tenant = %job.tenant, "job failed; retried after its lease");
                    None
                }
            }
        })
        .collect()
        .await
}
