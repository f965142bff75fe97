//! Latency histograms and rate checks.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Microsecond latencies from 1 µs to 1 h at 3 significant figures; larger values saturate.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}")),
        )
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (mean {:.2} ms, n = {})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.mean_ms, self.count
        )
    }
}

/// Largest number of events in any half-open window `[t, t + window)`: the way Meta (and the
/// sandbox) count "at most tier sends in any rolling second".
pub fn max_in_window(times: &mut [SystemTime], window: Duration) -> usize {
    times.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi]
            .duration_since(times[lo])
            .map(|d| d >= window)
            .unwrap_or(false)
        {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut l = Latencies::new();
        for i in 1..=100 {
            l.record(Duration::from_millis(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s}");
        let mut m = Latencies::new();
        m.record(Duration::from_secs(2));
        m.merge(&l);
        assert_eq!(m.summary().count, 101);
        assert!(Latencies::new().is_empty());
    }

    #[test]
    fn rolling_window_is_half_open() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // 0, 500 and 999 share a window; 1000 starts a new one relative to 0.
        let mut t = vec![ms(1000), ms(0), ms(500), ms(999)];
        assert_eq!(max_in_window(&mut t, Duration::from_secs(1)), 3);
        let mut t = vec![ms(0), ms(1000), ms(2000)];
        assert_eq!(max_in_window(&mut t, Duration::from_secs(1)), 1);
        assert_eq!(max_in_window(&mut [], Duration::from_secs(1)), 0);
    }
}
