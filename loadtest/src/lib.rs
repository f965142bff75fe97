//! The library half of `loadgen`: scenarios ([`sim_ceiling`], [`e2e`], [`tenants`], [`mllp`]) and the measurements they
//! report ([`stats`], [`procstat`]). The binary only parses flags and prints reports.

pub mod aggregator;
pub mod e2e;
mod finish;
pub mod kit;
pub mod mllp;
pub mod nodes;
pub mod procstat;
pub mod raw;
pub mod residency;
pub mod sim_ceiling;
pub mod spike;
pub mod stats;
pub mod tenants;
pub mod touchpoints;
pub mod webhook_storm;

use std::time::Duration;

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds (`10`, `2.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10h").is_err());
    }
}
