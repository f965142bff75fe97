//! Meta's admission rules as small pure pieces: throughput, pair rate, templates, window, and the
//! HTTP status each error code is answered with.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::wire::{Component, Content, TemplateStatus};

const ONE_SECOND: Duration = Duration::from_secs(1);
/// Pair rate: one message per 6 s per (business number, recipient) ...
pub const PAIR_EMISSION: Duration = Duration::from_secs(6);
/// ... with bursts of up to 45 back-to-back messages borrowing from future quota.
pub const PAIR_BURST: u32 = 45;
/// The customer-service window opened by a patient's message.
pub const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Accepted sends in the last second. A sliding log rather than a token bucket, because Meta's
/// limit is "never more than tier in any 1 s window" and tests count exactly that.
#[derive(Debug, Default)]
pub struct ThroughputLog {
    accepted: VecDeque<Instant>,
}

impl ThroughputLog {
    pub fn would_admit(&mut self, now: Instant, tier: u32) -> bool {
        while let Some(&front) = self.accepted.front() {
            if now.duration_since(front) >= ONE_SECOND {
                self.accepted.pop_front();
            } else {
                break;
            }
        }
        self.accepted.len() < tier as usize
    }

    pub fn commit(&mut self, now: Instant) {
        self.accepted.push_back(now);
    }
}

/// GCRA over theoretical arrival time: allowed while `tat - now <= (burst - 1) * emission`.
#[derive(Debug, Clone, Copy)]
pub struct PairGcra {
    tat: Instant,
}

impl PairGcra {
    pub fn new(now: Instant) -> Self {
        Self { tat: now }
    }

    pub fn would_admit(&self, now: Instant) -> bool {
        let tolerance = PAIR_EMISSION * (PAIR_BURST - 1);
        self.tat.saturating_duration_since(now) <= tolerance
    }

    pub fn commit(&mut self, now: Instant) {
        self.tat = self.tat.max(now) + PAIR_EMISSION;
    }

    /// A pair whose quota has fully recovered carries no information and may be forgotten.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.tat <= now
    }
}

/// True while the patient's latest message is less than 24 h old.
pub fn window_open(last_inbound: Option<SystemTime>, now: SystemTime) -> bool {
    last_inbound
        .and_then(|t| now.duration_since(t).ok().or(Some(Duration::ZERO)))
        .is_some_and(|age| age < SERVICE_WINDOW)
}

/// Why a template send is refused, as Meta's code and details.
pub fn template_status_error(status: TemplateStatus) -> Option<(i64, &'static str)> {
    match status {
        TemplateStatus::Approved => None,
        TemplateStatus::Paused => Some((132015, "template is paused")),
        TemplateStatus::Disabled => Some((132016, "template is disabled")),
        _ => Some((132001, "template is not approved in this language")),
    }
}

/// Body parameters a send supplies (summed over its body components).
pub fn body_parameters_sent(content: &Content) -> usize {
    match content {
        Content::Template { template } => template
            .components
            .iter()
            .map(|c| match c {
                Component::Body { parameters } => parameters.len(),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// The HTTP status Meta answers an error code with. Callers must decide by code, but tests of
/// the gateway's HTTP handling need the statuses third parties report.
pub fn http_status_for(code: i64) -> u16 {
    match code {
        130429 | 131056 | 80007 | 4 => 429,
        190 => 401,
        1 | 2 | 131000 | 133004 | 131016 => 500,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_never_exceeds_tier_in_any_second() {
        let mut log = ThroughputLog::default();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(log.would_admit(t0, 5), "{i}");
            log.commit(t0);
        }
        assert!(!log.would_admit(t0 + Duration::from_millis(999), 5));
        assert!(log.would_admit(t0 + ONE_SECOND, 5));
    }

    #[test]
    fn pair_rate_allows_45_then_one_per_6s() {
        let t0 = Instant::now();
        let mut g = PairGcra::new(t0);
        for i in 0..45 {
            assert!(g.would_admit(t0), "send {i}");
            g.commit(t0);
        }
        assert!(!g.would_admit(t0));
        assert!(!g.would_admit(t0 + Duration::from_secs(5)));
        assert!(g.would_admit(t0 + PAIR_EMISSION));
    }

    #[test]
    fn window_rules() {
        let now = SystemTime::now();
        assert!(!window_open(None, now));
        assert!(window_open(Some(now - Duration::from_secs(3600)), now));
        assert!(!window_open(Some(now - SERVICE_WINDOW), now));
    }

    #[test]
    fn statuses_by_code() {
        assert_eq!(http_status_for(130429), 429);
        assert_eq!(http_status_for(190), 401);
        assert_eq!(http_status_for(131000), 500);
        assert_eq!(http_status_for(132001), 400);
    }
}
