//! The node's scheduler: claims due jobs from Redis (atomically, so each runs on one node) and
//! runs them. A job whose node dies mid-run comes back when its lease ends; jobs that send use
//! ids derived from the job, so a second run sends nothing twice.

use std::time::Duration;

use crate::clinical::Clinical;
use crate::clock::now_ms;

/// Jobs claimed per poll.
const BATCH: usize = 500;
/// A claimed job not completed within this long runs again.
const LEASE_MS: i64 = 60_000;

pub fn spawn(clinical: Clinical, poll: Duration) {
    actix::spawn(async move {
        loop {
            let claimed = match clinical.store.claim_due(now_ms(), BATCH, LEASE_MS).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not claim jobs");
                    tokio::time::sleep(poll * 4).await;
                    continue;
                }
            };
            let busy = claimed.len() == BATCH;
            for job in &claimed {
                match clinical.run_job(job).await {
                    Ok(crate::clinical::JobOutcome::Deferred { .. }) => {}
                    Ok(crate::clinical::JobOutcome::Done) => {
                        if let Err(e) = clinical.store.complete(job).await {
                            tracing::warn!(error = %e, "could not complete a job; it will run again (idempotent)");
                        }
                    }
                    // Left claimed: it runs again when its lease ends.
                    Err(e) => {
                        tracing::warn!(error = %e, tenant = %job.tenant, "job failed; retried after its lease")
                    }
                }
            }
            if !busy {
                tokio::time::sleep(poll).await;
            }
        }
    });
}
