//! Quiet hours: a clinic's local night, when non-essential messages wait.

use chrono::{Datelike, Duration, LocalResult, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::tenants::model::QuietHours;

fn hhmm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// When `now_ms` falls inside the quiet hours (local to `zone`), the instant they end; `None`
/// when sending is fine now. A window that wraps midnight (21:00–08:00) is allowed; start ==
/// end means no quiet hours.
pub fn quiet_until(q: &QuietHours, zone: &str, now_ms: i64) -> Option<i64> {
    let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
    let (start, end) = (hhmm(&q.start)?, hhmm(&q.end)?);
    if start == end {
        return None;
    }
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()?
        .with_timezone(&tz);
    let t = now.time();
    let quiet = if start < end {
        t >= start && t < end
    } else {
        t >= start || t < end
    };
    if !quiet {
        return None;
    }
    let mut day = now.date_naive();
    if t >= end {
        day += Duration::days(1);
    }
    let local = day.and_time(end);
    let ends = match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
        // The end falls in a DST gap: an hour later exists.
        LocalResult::None => tz
            .from_local_datetime(&(local + Duration::hours(1)))
            .earliest()?,
    };
    debug_assert!(ends.year() >= 1970);
    Some(ends.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
        }
    }

    fn ist(h: u32, m: u32) -> i64 {
        // 2026-11-25 local time in Asia/Kolkata (UTC+05:30).
        chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .and_then(|d| d.and_hms_opt(h, m, 0))
            .map(|t| t.and_utc().timestamp_millis() - 330 * 60_000)
            .unwrap_or_else(|| panic!("date"))
    }

    #[test]
    fn a_night_window_wraps_midnight() {
        let night = q("21:00", "08:00");
        let z = "Asia/Kolkata";
        assert_eq!(quiet_until(&night, z, ist(12, 0)), None);
        assert_eq!(quiet_until(&night, z, ist(20, 59)), None);
        assert_eq!(
            quiet_until(&night, z, ist(21, 0)),
            Some(ist(8, 0) + 24 * 3_600_000)
        );
        assert_eq!(
            quiet_until(&night, z, ist(23, 30)),
            Some(ist(8, 0) + 24 * 3_600_000)
        );
        assert_eq!(quiet_until(&night, z, ist(2, 0)), Some(ist(8, 0)));
        assert_eq!(quiet_until(&night, z, ist(8, 0)), None);
    }

    #[test]
    fn a_daytime_window_and_no_window() {
        let lunch = q("13:00", "14:00");
        let z = "Asia/Kolkata";
        assert_eq!(quiet_until(&lunch, z, ist(13, 30)), Some(ist(14, 0)));
        assert_eq!(quiet_until(&lunch, z, ist(14, 0)), None);
        assert_eq!(quiet_until(&q("09:00", "09:00"), z, ist(9, 0)), None);
    }
}
