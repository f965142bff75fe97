//! Dates and times as the patient reads them, in the clinic's time zone.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

/// `(date, time)` such as `("Tue, 25 Nov", "10:30 AM")` in `zone` (UTC if the zone is unknown).
pub fn date_time(ms: i64, zone: &str) -> (String, String) {
    let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => {
            let local = t.with_timezone(&tz);
            (
                local.format("%a, %-d %b").to_string(),
                local.format("%-I:%M %p").to_string(),
            )
        }
        None => (String::new(), String::new()),
    }
}

/// The calendar date at `ms` in `zone` (UTC if the zone is unknown).
pub fn today(ms: i64, zone: &str) -> chrono::NaiveDate {
    let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.with_timezone(&tz).date_naive())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_the_clinic_zone() {
        // 2026-11-25T05:00:00Z is 10:30 in Asia/Kolkata.
        let ms = 1_795_582_800_000;
        assert_eq!(
            date_time(ms, "Asia/Kolkata"),
            ("Wed, 25 Nov".to_owned(), "10:30 AM".to_owned())
        );
        assert_eq!(date_time(ms, "Nowhere/Else").1, "5:00 AM");
    }
}
