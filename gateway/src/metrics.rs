//! Prometheus metrics, prefixed `clinic_gateway_`. Labels stay low-cardinality: no patient,
//! message or number labels.

pub mod ops;
pub use ops::{store_unavailable, OpsMetrics};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Operations metrics: queue age, pacing, Meta error codes, webhook handling, event-to-send
    /// latency, scheduler lag, store health, build info (see `METRICS.md`).
    pub ops: OpsMetrics,
    /// API requests by route and status class.
    pub api_requests: IntCounterVec,
    pub api_latency: HistogramVec,
    /// Messages accepted into the outbox, by lane.
    pub accepted: IntCounterVec,
    /// Send attempts by outcome: accepted, retried, failed, expired, unknown.
    pub sends: IntCounterVec,
    /// Meta round trip by operation and result.
    pub meta_latency: HistogramVec,
    /// Time from accept to the first send attempt, by lane.
    pub queue_wait: HistogramVec,
    /// Entries waiting, by lane, over all numbers (`delayed` and `in_flight` as pseudo-lanes).
    pub queue_depth: IntGaugeVec,
    /// Webhook POSTs by result: ok, bad-signature, bad-payload, error.
    pub webhooks: IntCounterVec,
    /// Status items by result: applied, early, duplicate, unknown.
    pub statuses: IntCounterVec,
    /// Inbound patient messages by kind.
    pub inbound: IntCounterVec,
    /// Sends refused at the API edge by reason (insufficient-balance, messaging-limit-reached, …).
    pub refusals: IntCounterVec,
    /// Wallet movements by kind (settled, released).
    pub wallet: IntCounterVec,
    /// Clinics whose balance crossed their low-balance threshold.
    pub low_balance: prometheus::IntCounter,
    /// Resident actors by kind (tenant, conversation, dispatcher).
    pub actors: IntGaugeVec,
    /// Clinical touchpoints by kind and result (accepted, refused).
    pub touchpoints: IntCounterVec,
    /// Patient replies acted on, by intent.
    pub replies: IntCounterVec,
    /// EMR write-back attempts by link (hl7, fhir) and result (ok, retry, failed).
    pub writebacks: IntCounterVec,
    /// Broadcast messages by result (queued, skipped).
    pub broadcast_messages: IntCounterVec,
    /// Clinic callback delivery attempts by result (delivered, failed, no_endpoint).
    pub callbacks: IntCounterVec,
    /// HL7 v2 messages received over MLLP by type (`SIU^S12` …, `other`, `unparsable`) and the
    /// acknowledgment code sent (AA, AE, AR; duplicates as `AA-duplicate`).
    pub hl7_messages: IntCounterVec,
    /// MLLP connections by result: accepted, refused (over the limit), tls-failed, idle-timeout,
    /// read-timeout.
    pub hl7_connections: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("clinic_gateway_{name}"), help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, Box::new(c.clone()));
    c
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(format!("clinic_gateway_{name}"), help).buckets(buckets),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    register(registry, Box::new(h.clone()));
    h
}

fn register(registry: &Registry, c: Box<dyn prometheus::core::Collector>) {
    // Names are static and unique within this registry, so registration cannot collide.
    if let Err(e) = registry.register(c) {
        tracing::error!(error = %e, "metric registration failed");
    }
}

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let api_requests = counter(
            &registry,
            "api_requests_total",
            "API requests",
            &["route", "status"],
        );
        let api_latency = histogram(
            &registry,
            "api_request_duration_seconds",
            "API request latency",
            &["route"],
            LATENCY_BUCKETS.to_vec(),
        );
        let accepted = counter(
            &registry,
            "messages_accepted_total",
            "Messages accepted into the outbox, by lane and touchpoint",
            &["lane", "touchpoint"],
        );
        let sends = counter(
            &registry,
            "sends_total",
            "Send attempts to Meta by outcome",
            &["outcome"],
        );
        let meta_latency = histogram(
            &registry,
            "meta_request_duration_seconds",
            "Meta Graph API round trip",
            &["op", "result"],
            LATENCY_BUCKETS.to_vec(),
        );
        let queue_wait = histogram(
            &registry,
            "queue_wait_seconds",
            "Time from accept to first send attempt",
            &["lane"],
            WAIT_BUCKETS.to_vec(),
        );
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "clinic_gateway_queue_depth",
                "Queue entries by lane over all numbers",
            ),
            &["lane"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        register(&registry, Box::new(queue_depth.clone()));
        let webhooks = counter(
            &registry,
            "webhook_requests_total",
            "Webhook deliveries from Meta",
            &["result"],
        );
        let statuses = counter(
            &registry,
            "webhook_statuses_total",
            "Status items from Meta",
            &["result"],
        );
        let inbound = counter(
            &registry,
            "inbound_messages_total",
            "Inbound patient messages",
            &["kind"],
        );
        let refusals = counter(
            &registry,
            "refusals_total",
            "Sends refused at the API edge",
            &["reason"],
        );
        let wallet = counter(
            &registry,
            "wallet_movements_total",
            "Wallet settlements and releases",
            &["kind"],
        );
        let low_balance = prometheus::IntCounter::new(
            "clinic_gateway_low_balance_crossings_total",
            "Clinics crossing their low-balance threshold",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        register(&registry, Box::new(low_balance.clone()));
        let actors = IntGaugeVec::new(
            Opts::new("clinic_gateway_resident_actors", "Resident actors by kind"),
            &["kind"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        register(&registry, Box::new(actors.clone()));
        let touchpoints = counter(
            &registry,
            "touchpoints_total",
            "Clinical touchpoints by result",
            &["touchpoint", "result"],
        );
        let replies = counter(
            &registry,
            "patient_replies_total",
            "Patient replies acted on",
            &["intent"],
        );
        let broadcast_messages = counter(
            &registry,
            "broadcast_messages_total",
            "Broadcast messages by result",
            &["result"],
        );
        let callbacks = counter(
            &registry,
            "callback_deliveries_total",
            "Clinic callback delivery attempts by result",
            &["result"],
        );
        let writebacks = counter(
            &registry,
            "emr_writebacks_total",
            "EMR write-back attempts by link and result",
            &["link", "result"],
        );
        let hl7_messages = counter(
            &registry,
            "hl7_messages_total",
            "HL7 v2 messages received over MLLP by type and acknowledgment code",
            &["type", "code"],
        );
        let hl7_connections = counter(
            &registry,
            "hl7_connections_total",
            "MLLP connections by result",
            &["result"],
        );
        let ops = OpsMetrics::new(&registry);
        Self {
            registry,
            ops,
            api_requests,
            api_latency,
            accepted,
            sends,
            meta_latency,
            queue_wait,
            queue_depth,
            webhooks,
            statuses,
            inbound,
            refusals,
            wallet,
            low_balance,
            actors,
            touchpoints,
            replies,
            writebacks,
            broadcast_messages,
            callbacks,
            hl7_messages,
            hl7_connections,
        }
    }

    /// The text exposition format for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
