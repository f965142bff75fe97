//! What a sandbox instance simulates, and the faults it injects into sends.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How one sandbox behaves. Every field has a default suited to tests: port 0, no webhooks.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub bind: SocketAddr,
    /// Where signed webhooks are POSTed; `None` means no statuses are even scheduled.
    pub webhook_url: Option<String>,
    /// Signs `X-Hub-Signature-256` of every webhook.
    pub app_secret: String,
    /// Throughput of numbers that were not registered with an explicit tier.
    pub default_tier_mps: u32,
    /// No throughput or pair-rate enforcement (raw-throughput benchmarks).
    pub unlimited: bool,
    /// Delay before `sent`; `delivered` and `read` follow after further equal delays.
    pub status_latency: Duration,
    pub read_receipts: bool,
    /// Probability that a status item is delivered twice.
    pub duplicate_rate: f64,
    /// Shuffle the items of each webhook batch.
    pub reorder: bool,
    /// Status items per webhook POST.
    pub webhook_batch_max: usize,
    /// First retry delay of a failed webhook POST; doubles up to 30 s, given up after 1 h.
    pub webhook_retry_interval: Duration,
    /// Sent and rejected records kept for read-back (oldest dropped first).
    pub record_limit: usize,
    /// Unknown phone-number ids are registered on first use (default tier, WABA `waba_<pnid>`).
    pub auto_register_numbers: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            webhook_url: None,
            app_secret: "sandbox-app-secret".into(),
            default_tier_mps: 80,
            unlimited: false,
            status_latency: Duration::from_millis(50),
            read_receipts: true,
            duplicate_rate: 0.0,
            reorder: false,
            webhook_batch_max: 50,
            webhook_retry_interval: Duration::from_secs(1),
            record_limit: 100_000,
            auto_register_numbers: true,
        }
    }
}

/// Faults injected into `/messages` sends only. Rates are probabilities in 0..=1.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer `error_code` (Meta envelope, matching HTTP status) at this rate.
    pub error_rate: f64,
    pub error_code: i64,
    /// Bare HTTP 503 with a non-JSON body; the message is not sent.
    pub http_5xx_rate: f64,
    /// Hold the answer for `hold_ms` so the client times out.
    pub timeout_rate: f64,
    /// With a timeout, the message is still recorded and its statuses flow (Meta acted).
    pub timeout_sends: bool,
    /// Every successful send is recorded and its statuses scheduled, then the answer waits this long.
    pub response_delay_ms: u64,
    /// How long a timeout holds the answer; 0 means 30 s.
    pub hold_ms: u64,
}

impl Faults {
    pub(crate) fn hold(&self) -> Duration {
        if self.hold_ms == 0 {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(self.hold_ms)
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.error_rate > 0.0
            || self.http_5xx_rate > 0.0
            || self.timeout_rate > 0.0
            || self.response_delay_ms > 0
    }
}
