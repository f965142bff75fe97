//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::problem::Problem;
use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    state
        .store
        .ping()
        .await
        .map_err(|e| Problem::unavailable(format!("store not reachable: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .actors
        .with_label_values(&["dispatcher"])
        .set(state.dispatchers.active() as i64);
    let (tenants, conversations) = state.actors.sweep();
    state
        .metrics
        .actors
        .with_label_values(&["tenant"])
        .set(tenants as i64);
    state
        .metrics
        .actors
        .with_label_values(&["conversation"])
        .set(conversations as i64);
    sample_ops(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// The whole store probe of one scrape: a slow store cannot hang the scrape (gauges it could not
/// read keep their last values; `store_up` says why).
const SCRAPE_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);
/// Numbers probed at once for their queue age.
const SCRAPE_CONCURRENCY: usize = 16;

/// Scrape-time gauges: store health, pacing capacity by tier, queue age by lane, scheduler lag.
async fn sample_ops(state: &AppState) {
    use crate::metrics::ops::tier_label;
    use futures::StreamExt;

    crate::metrics::ops::initialise_known(&state.metrics);
    let ops = &state.metrics.ops;
    let numbers = state.dispatchers.active_numbers();
    let headroom = state.settings.dispatch.tier_headroom;
    let mut capacity: std::collections::BTreeMap<String, f64> = ["0", "20", "80", "1000", "other"]
        .into_iter()
        .map(|t| (t.to_owned(), 0.0))
        .collect();
    for number in &numbers {
        let tier = state
            .directory
            .by_number(number)
            .and_then(|c| {
                c.numbers
                    .iter()
                    .find(|n| &n.phone_number_id == number)
                    .map(|n| n.tier_mps)
            })
            .unwrap_or(0);
        *capacity.entry(tier_label(tier)).or_default() += (f64::from(tier) * headroom).floor();
    }
    for (tier, mps) in &capacity {
        ops.pacing_capacity.with_label_values(&[tier]).set(*mps);
    }

    let started = std::time::Instant::now();
    let up = matches!(
        tokio::time::timeout(SCRAPE_BUDGET, state.store.ping()).await,
        Ok(Ok(()))
    );
    ops.store_ping.set(started.elapsed().as_secs_f64());
    ops.store_up.set(i64::from(up));
    if !up {
        crate::metrics::store_unavailable("scrape");
        return;
    }
    let probe = async {
        let now = crate::clock::now_ms();
        let store = &state.store;
        // Numbers whose dispatcher found their queues empty hold nothing unclaimed: with
        // thousands of mostly idle numbers, asking Redis for each made a scrape take seconds.
        let backlog = state.dispatchers.numbers_with_backlog();
        let oldest: Vec<[Option<i64>; 3]> = futures::stream::iter(backlog.iter())
            .map(|n| async move { store.oldest_ready(n).await })
            .buffer_unordered(SCRAPE_CONCURRENCY)
            .filter_map(|r| async move { r.ok() })
            .collect()
            .await;
        for lane in crate::domain::Lane::ALL {
            let first = oldest.iter().filter_map(|o| o[lane.index()]).min();
            let age = first.map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0);
            ops.queue_oldest_age
                .with_label_values(&[lane.as_str()])
                .set(age);
        }
        if let Ok(due) = store.oldest_due().await {
            let lag = due.map_or(0.0, |d| (now - d).max(0) as f64 / 1000.0);
            ops.scheduler_lag.set(lag);
        }
        if let Ok(n) = store.scheduled().await {
            ops.scheduled_jobs.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    };
    let left = SCRAPE_BUDGET.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, probe).await.is_err() {
        tracing::warn!("metrics scrape: store probes timed out; some gauges are stale");
        return;
    }
    let due = {
        let mut last = ops.low_balance_sampled.lock();
        let due = last.is_none_or(|t| t.elapsed() >= crate::metrics::ops::LOW_BALANCE_EVERY);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if due {
        let left = SCRAPE_BUDGET.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, low_balance_clinics(state)).await {
            Ok(n) => ops.low_balance_clinics.set(n),
            Err(_) => {
                // Try again at the next scrape rather than in a minute.
                *ops.low_balance_sampled.lock() = None;
                tracing::warn!("metrics scrape: wallet probes timed out");
            }
        }
    }
}

/// Live, active clinics whose available balance is under their low-balance threshold.
async fn low_balance_clinics(state: &AppState) -> i64 {
    use futures::StreamExt;
    let clinics: Vec<_> = state
        .directory
        .all()
        .into_iter()
        .filter(|c| c.is_active() && c.mode == crate::tenants::model::Mode::Live)
        .collect();
    let store = &state.store;
    futures::stream::iter(clinics.iter())
        .map(|c| async move {
            store
                .wallet(&c.id)
                .await
                .is_ok_and(|w| w.available() < c.low_balance_threshold)
        })
        .buffer_unordered(SCRAPE_CONCURRENCY)
        .filter(|low| std::future::ready(*low))
        .count()
        .await as i64
}
