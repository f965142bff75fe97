//! Operations metrics (see `METRICS.md`): queue age, pacing, Meta error codes, webhook handling,
//! event-to-send latency, scheduler lag, store health and build info. Registered in the node's
//! registry by [`super::Metrics::new`]; the scrape-time gauges are set by `GET /metrics`.
//! Labels stay bounded: lanes, tiers, Meta's documented error codes, states, results.

use std::sync::LazyLock;

use prometheus::{
    Gauge, GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::{counter, histogram, register};

/// Event-to-send and pacing waits: milliseconds to an hour.
const SEND_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Webhook handling: a status batch is a few Redis round trips.
const WEBHOOK_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Store errors counted where no node's `Metrics` is at hand (the API's error conversion): one
/// counter per process, registered in every registry the process builds.
static STORE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "clinic_gateway_store_errors_total",
            "Store (Redis) operations that failed as unavailable, by where they were seen",
        ),
        &["source"],
    )
    .unwrap_or_else(|e| unreachable!("static metric definition store_errors_total: {e}"))
});

/// Counts a store operation that failed as unavailable (Redis down, timed out, connection lost).
/// `source` is a fixed word: `api`, `dispatcher`, `scheduler`, `scrape`.
pub fn store_unavailable(source: &'static str) {
    STORE_ERRORS.with_label_values(&[source]).inc();
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(format!("clinic_gateway_{name}"), help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, Box::new(g.clone()));
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(format!("clinic_gateway_{name}"), help)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, Box::new(g.clone()));
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(format!("clinic_gateway_{name}"), help)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, Box::new(g.clone()));
    g
}

#[derive(Clone)]
pub struct OpsMetrics {
    /// Age of the oldest entry waiting (not yet claimed) per lane, over all active numbers; set at
    /// scrape.
    pub queue_oldest_age: GaugeVec,
    /// Sends that passed a number's throughput pacer, by the number's tier (`20`, `80`, `1000`,
    /// `0` = unpaced).
    pub pacing_sends: IntCounterVec,
    /// Messages per second the running dispatchers may send (tier × headroom), by tier; set at
    /// scrape. `rate(pacing_sends_total)` over this is the pacing utilisation.
    pub pacing_capacity: GaugeVec,
    /// Time a send waited for its number's throughput budget, by tier.
    pub pacing_wait: HistogramVec,
    /// Meta error answers by code (documented codes; others as `other`), class and source
    /// (`send`: the Graph API refused a send; `status`: a `failed` status webhook).
    pub meta_errors: IntCounterVec,
    /// Messages moved by a status webhook, by the state reached (sent, delivered, read, failed).
    pub message_states: IntCounterVec,
    /// Webhook POST handling time, by result (as `webhook_requests_total`).
    pub webhook_duration: HistogramVec,
    /// Webhook deliveries whose every status item had been applied before (Meta re-delivered).
    pub webhook_duplicate_deliveries: IntCounter,
    /// From the message's accept (the touchpoint's event, or the API call) to Meta's 2xx, by lane.
    pub event_to_send: HistogramVec,
    /// now − due time of the most overdue scheduler job (0 when none is overdue); set at scrape.
    pub scheduler_lag: Gauge,
    /// Scheduler jobs waiting (due or not); set at scrape.
    pub scheduled_jobs: IntGauge,
    /// 1 when the store answered PING at the last scrape, else 0.
    pub store_up: IntGauge,
    /// Round trip of the scrape's PING to the store.
    pub store_ping: Gauge,
    /// Always 1, labelled with the build's version and git commit.
    pub build_info: IntGaugeVec,
    /// Template status changes Meta reported (`message_template_status_update`), by new status.
    pub template_status_updates: IntCounterVec,
    /// Live, active clinics whose available balance is under their low-balance threshold; set at
    /// scrape, at most once per [`LOW_BALANCE_EVERY`].
    pub low_balance_clinics: IntGauge,
    /// Appointments marked attended or no-show, by what their reminders achieved: the fleet's
    /// no-show rate by reminder outcome.
    pub appointment_attendance: IntCounterVec,
    /// When `low_balance_clinics` was last computed.
    pub low_balance_sampled: std::sync::Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
}

/// How often a scrape recomputes `low_balance_clinics` (one wallet read per clinic).
pub const LOW_BALANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The `code` label of a Meta error: Meta's documented codes as themselves, anything else as
/// `other`, so a surprising code cannot grow the series without bound.
pub fn meta_code_label(code: i64) -> String {
    if whatsapp_cloud::errors::title(code) == whatsapp_cloud::errors::title(i64::MIN) {
        "other".into()
    } else {
        code.to_string()
    }
}

/// The `class` label of a Meta error code: what the gateway does about it.
pub fn meta_class_label(code: i64) -> &'static str {
    use whatsapp_cloud::ErrorClass;
    match whatsapp_cloud::classify(code) {
        ErrorClass::Retry { .. } => "retry",
        ErrorClass::ThrottleNumber { .. } => "throttle_number",
        ErrorClass::ThrottleRecipient => "throttle_recipient",
        ErrorClass::RetryLater { .. } => "retry_later",
        ErrorClass::ResendAsTemplate => "resend_as_template",
        ErrorClass::TemplateProblem => "template_problem",
        ErrorClass::AuthExpired => "auth_expired",
        ErrorClass::AccountRestricted => "account_restricted",
        ErrorClass::Permanent => "permanent",
    }
}

/// The `tier` label of a business number's throughput tier.
pub fn tier_label(tier_mps: u32) -> String {
    match tier_mps {
        0 | 20 | 80 | 1000 => tier_mps.to_string(),
        _ => "other".into(),
    }
}

/// The build's commit: `CLINIC_GATEWAY_GIT_SHA` at compile time (the Dockerfile passes it).
pub const GIT_SHA: &str = match option_env!("CLINIC_GATEWAY_GIT_SHA") {
    Some(s) => s,
    None => "unknown",
};

/// Counts an appointment just marked attended or no-show under its reminder outcome (looked up
/// from its reminders' message states, as the no-show view does). Best effort: a store error
/// skips the count.
pub async fn count_attendance(
    metrics: &super::Metrics,
    store: &dyn crate::store::Backend,
    a: &crate::domain::appointment::Appointment,
) {
    use crate::workflows::outcomes::{outcome, Attendance};
    let mut states = Vec::with_capacity(a.reminders.len());
    for r in &a.reminders {
        match store.message(&a.tenant, &r.message).await {
            Ok(Some(m)) => states.push(m.state),
            Ok(None) => {}
            Err(e) => {
                return tracing::debug!(error = %e, "attendance not counted: store unavailable")
            }
        }
    }
    let o = outcome(a, &states);
    if !matches!(o.attendance, Attendance::Attended | Attendance::NoShow) {
        return;
    }
    let label = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into())
    };
    metrics
        .ops
        .appointment_attendance
        .with_label_values(&[
            &label(serde_json::to_value(o.reminder)),
            &label(serde_json::to_value(o.attendance)),
        ])
        .inc();
}

/// Creates the series of known label values at zero, so `rate()`, ratios and alerts have data
/// before the first event (a label set never touched is absent from the exposition). Cheap and
/// idempotent: `GET /metrics` calls it on every scrape.
pub fn initialise_known(m: &super::Metrics) {
    for outcome in ["accepted", "retried", "failed", "expired", "unknown"] {
        m.sends.with_label_values(&[outcome]);
    }
    for result in ["ok", "bad-signature", "bad-payload", "error"] {
        m.webhooks.with_label_values(&[result]);
    }
    for result in ["applied", "early", "duplicate", "unknown"] {
        m.statuses.with_label_values(&[result]);
    }
    for kind in ["reserved", "settled", "released"] {
        m.wallet.with_label_values(&[kind]);
    }
    let ops = &m.ops;
    for code in [130429, 131056] {
        ops.meta_errors.with_label_values(&[
            &meta_code_label(code),
            meta_class_label(code),
            "send",
        ]);
    }
    for state in ["sent", "delivered", "read"] {
        ops.message_states
            .with_label_values(&[state, "api", "none"]);
    }
    ops.message_states
        .with_label_values(&["failed", "api", "permanent"]);
    for source in ["api", "dispatcher", "scheduler", "scrape"] {
        STORE_ERRORS.with_label_values(&[source]);
    }
}

impl OpsMetrics {
    pub fn new(registry: &Registry) -> Self {
        register(registry, Box::new(STORE_ERRORS.clone()));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "clinic_gateway_build_info",
                "Always 1; labelled with the running build",
            ),
            &["version", "git_sha"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition build_info: {e}"));
        register(registry, Box::new(build_info.clone()));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_SHA])
            .set(1);
        Self {
            queue_oldest_age: gauge_vec(
                registry,
                "queue_oldest_age_seconds",
                "Age of the oldest unclaimed queue entry by lane over all active numbers",
                &["lane"],
            ),
            pacing_sends: counter(
                registry,
                "pacing_sends_total",
                "Sends released by a number's throughput pacer, by tier",
                &["tier"],
            ),
            pacing_capacity: gauge_vec(
                registry,
                "pacing_capacity_messages_per_second",
                "Messages per second the running dispatchers may send (tier x headroom), by tier",
                &["tier"],
            ),
            pacing_wait: histogram(
                registry,
                "pacing_wait_seconds",
                "Time a send waited for its number's throughput budget, by tier",
                &["tier"],
                SEND_BUCKETS.to_vec(),
            ),
            meta_errors: counter(
                registry,
                "meta_errors_total",
                "Meta error answers by code, class and source (send, status)",
                &["code", "class", "source"],
            ),
            message_states: counter(
                registry,
                "message_states_total",
                "Messages moved by a status webhook, by the state reached, the touchpoint that sent them and Meta's error class",
                &["state", "touchpoint", "class"],
            ),
            webhook_duration: histogram(
                registry,
                "webhook_duration_seconds",
                "Webhook POST handling time by result",
                &["result"],
                WEBHOOK_BUCKETS.to_vec(),
            ),
            webhook_duplicate_deliveries: {
                let c = IntCounter::new(
                    "clinic_gateway_webhook_duplicate_deliveries_total",
                    "Webhook deliveries whose every status item was already applied",
                )
                .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
                register(registry, Box::new(c.clone()));
                c
            },
            event_to_send: histogram(
                registry,
                "event_to_send_seconds",
                "From a message's accept to Meta's 2xx, by lane and touchpoint",
                &["lane", "touchpoint"],
                SEND_BUCKETS.to_vec(),
            ),
            scheduler_lag: gauge(
                registry,
                "scheduler_lag_seconds",
                "How overdue the most overdue scheduler job is",
            ),
            scheduled_jobs: int_gauge(registry, "scheduled_jobs", "Scheduler jobs waiting"),
            store_up: int_gauge(
                registry,
                "store_up",
                "1 when the store answered PING at the last scrape",
            ),
            store_ping: gauge(
                registry,
                "store_ping_seconds",
                "Round trip of the last scrape's PING to the store",
            ),
            build_info,
            template_status_updates: counter(
                registry,
                "template_status_updates_total",
                "Template status changes reported by Meta, by new status",
                &["status"],
            ),
            low_balance_clinics: int_gauge(
                registry,
                "low_balance_clinics",
                "Live clinics whose available balance is under their low-balance threshold",
            ),
            appointment_attendance: counter(
                registry,
                "appointment_attendance_total",
                "Appointments marked attended or no-show, by reminder outcome",
                &["reminder_outcome", "attendance"],
            ),
            low_balance_sampled: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(meta_code_label(130429), "130429");
        assert_eq!(meta_code_label(131056), "131056");
        assert_eq!(meta_code_label(987_654), "other");
        assert_eq!(meta_class_label(130429), "throttle_number");
        assert_eq!(meta_class_label(131056), "throttle_recipient");
        assert_eq!(tier_label(80), "80");
        assert_eq!(tier_label(77), "other");
    }

    #[test]
    fn every_ops_metric_is_exposed_once_per_registry() {
        let a = super::super::Metrics::new();
        let b = super::super::Metrics::new();
        store_unavailable("api");
        for m in [&a, &b] {
            let text = m.render();
            assert!(text.contains("clinic_gateway_build_info{"), "{text}");
            assert!(text.contains("clinic_gateway_store_errors_total{source=\"api\"}"));
        }
    }
}
