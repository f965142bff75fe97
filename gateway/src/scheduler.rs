//! The node's scheduler: claims due jobs from Redis (atomically, so each runs on one node) and
//! runs them, several at a time. A job whose node dies mid-run comes back when its lease ends;
//! jobs that send use ids derived from the job, so a second run sends nothing twice.

use std::time::Duration;

use futures::StreamExt;

use crate::clinical::{Clinical, JobOutcome};
use crate::clock::now_ms;
use crate::store::clinical::ClaimedJob;

/// Jobs claimed per poll.
const BATCH: usize = 500;
/// Jobs run at once: each mostly waits on Redis and the clinic's actor.
const CONCURRENCY: usize = 64;
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

/// Runs the jobs; returns those to remove (done). Deferred jobs were re-scored by their run;
/// failed ones stay claimed and run again when their lease ends.
async fn run_all<'a>(clinical: &Clinical, claimed: &'a [ClaimedJob]) -> Vec<&'a ClaimedJob> {
    futures::stream::iter(claimed)
        .map(|job| async move { (job, clinical.run_job(job).await) })
        .buffer_unordered(CONCURRENCY)
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
