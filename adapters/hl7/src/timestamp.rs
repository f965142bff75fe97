//! HL7 DTM/TS values: `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`.
//!
//! Without an offset the time is the sender's local time, so the caller supplies the sender's
//! IANA zone; the result is always UTC plus how precise the sender was.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use thiserror::Error;

/// How much of the timestamp the sender gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYYMM`
    Month,
    /// `YYYYMMDD`
    Day,
    /// `YYYYMMDDHH`
    Hour,
    /// `YYYYMMDDHHMM`
    Minute,
    /// `YYYYMMDDHHMMSS`
    Second,
    /// Seconds with this many fractional digits.
    Fraction(u8),
}

/// A parsed timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// The instant, in UTC. Missing parts are the start of the period (month 1, day 1, 00:00:00).
    pub utc: DateTime<Utc>,
    /// How much the sender gave.
    pub precision: Precision,
    /// The offset written in the value, if any (otherwise the caller's zone was used).
    pub offset: Option<FixedOffset>,
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    /// The value does not follow `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`.
    #[error("timestamp {value:?} is malformed: {reason}")]
    Malformed {
        /// The value as received.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The digits form no real date or time (month 13, 25:00, …).
    #[error("timestamp {value:?} is not a valid date/time")]
    OutOfRange {
        /// The value as received.
        value: String,
    },
    /// A local time inside a daylight-saving gap of the sender's zone.
    #[error("local time {value:?} does not exist in time zone {zone}")]
    NonexistentLocalTime {
        /// The value as received.
        value: String,
        /// The zone it was read in.
        zone: String,
    },
}

/// Parses an HL7 timestamp; `zone` is used only when the value carries no offset. A local time
/// that occurs twice (DST fall-back) is read as the earlier instant.
pub fn parse_timestamp(value: &str, zone: Tz) -> Result<Timestamp, TimestampError> {
    let text = value.trim();
    let malformed = |reason| TimestampError::Malformed {
        value: value.to_string(),
        reason,
    };
    let out_of_range = || TimestampError::OutOfRange {
        value: value.to_string(),
    };
    if !text.is_ascii() {
        return Err(malformed("contains non-ASCII characters"));
    }
    // The year has no sign, so a '+' or '-' after it starts the offset.
    let (body, offset) = match text.get(4..).and_then(|t| t.find(['+', '-'])) {
        Some(i) => {
            let (b, o) = text.split_at(i + 4);
            (
                b,
                Some(parse_offset(o).ok_or_else(|| malformed("offset must be +HHMM or -HHMM"))?),
            )
        }
        None => (text, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("expected digits"));
    }
    let precision = match (digits.len(), fraction) {
        (4, None) => Precision::Year,
        (6, None) => Precision::Month,
        (8, None) => Precision::Day,
        (10, None) => Precision::Hour,
        (12, None) => Precision::Minute,
        (14, None) => Precision::Second,
        (14, Some(f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            Precision::Fraction(u8::try_from(f.len().min(9)).unwrap_or(9))
        }
        (14, Some(_)) => return Err(malformed("fraction of a second must be digits")),
        (_, Some(_)) => return Err(malformed("a fraction needs seconds")),
        _ => return Err(malformed("expected 4, 6, 8, 10, 12 or 14 digits")),
    };
    let part = |range: std::ops::Range<usize>, default: u32| -> u32 {
        digits
            .get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let year = i32::try_from(part(0..4, 0)).map_err(|_| out_of_range())?;
    let date =
        NaiveDate::from_ymd_opt(year, part(4..6, 1), part(6..8, 1)).ok_or_else(out_of_range)?;
    let nanos = match fraction {
        Some(f) => {
            let f = &f[..f.len().min(9)];
            let scale = 10u32.pow(9 - u32::try_from(f.len()).unwrap_or(9));
            f.parse::<u32>().map_err(|_| out_of_range())? * scale
        }
        None => 0,
    };
    let time =
        NaiveTime::from_hms_nano_opt(part(8..10, 0), part(10..12, 0), part(12..14, 0), nanos)
            .ok_or_else(out_of_range)?;
    let local = NaiveDateTime::new(date, time);
    let utc = match offset {
        Some(off) => off
            .from_local_datetime(&local)
            .single()
            .ok_or_else(out_of_range)?
            .with_timezone(&Utc),
        None => zone
            .from_local_datetime(&local)
            .earliest()
            .ok_or_else(|| TimestampError::NonexistentLocalTime {
                value: value.to_string(),
                zone: zone.name().to_string(),
            })?
            .with_timezone(&Utc),
    };
    Ok(Timestamp {
        utc,
        precision,
        offset,
    })
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let (sign, digits) = s.split_at_checked(1)?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if minutes >= 60 {
        return None;
    }
    let secs = hours * 3600 + minutes * 60;
    match sign {
        "+" => FixedOffset::east_opt(secs),
        "-" => FixedOffset::west_opt(secs),
        _ => None,
    }
}

/// Formats an instant as `YYYYMMDDHHMMSS+0000`, the form used in ACKs.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d%H%M%S+0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Asia::Kolkata};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn local_time_in_caller_zone() {
        let t = parse_timestamp("202403151030", Kolkata).unwrap();
        assert_eq!(t.utc, utc("2024-03-15T05:00:00Z"));
        assert_eq!(t.precision, Precision::Minute);
        assert_eq!(t.offset, None);
    }

    #[test]
    fn explicit_offset_wins() {
        let t = parse_timestamp("20240315103000-0500", Kolkata).unwrap();
        assert_eq!(t.utc, utc("2024-03-15T15:30:00Z"));
        assert_eq!(t.precision, Precision::Second);
        assert!(t.offset.is_some());
        let t = parse_timestamp("20240315103000.1234+0530", Kolkata).unwrap();
        assert_eq!(t.utc, utc("2024-03-15T05:00:00.1234Z"));
        assert_eq!(t.precision, Precision::Fraction(4));
    }

    #[test]
    fn partial_precisions() {
        assert_eq!(
            parse_timestamp("2024", Kolkata).unwrap().precision,
            Precision::Year
        );
        assert_eq!(
            parse_timestamp("202402", Kolkata).unwrap().precision,
            Precision::Month
        );
        let t = parse_timestamp("20240229", Kolkata).unwrap();
        assert_eq!(t.precision, Precision::Day);
        assert_eq!(t.utc, utc("2024-02-28T18:30:00Z"));
        assert_eq!(
            parse_timestamp("2024022913", Kolkata).unwrap().precision,
            Precision::Hour
        );
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "",
            "20",
            "2024021",
            "20241301",
            "20240230",
            "202402291261",
            "20240229.5",
            "20240229101010.",
            "20240229101010+5",
            "20240229101010+05a0",
            "2024-02-29",
            "２０２４",
        ] {
            assert!(parse_timestamp(bad, Kolkata).is_err(), "{bad}");
        }
    }

    #[test]
    fn dst_gap_and_overlap() {
        assert!(matches!(
            parse_timestamp("202403100230", New_York),
            Err(TimestampError::NonexistentLocalTime { .. })
        ));
        // 01:30 happens twice on 2024-11-03; the earlier (EDT) one is taken.
        let t = parse_timestamp("202411030130", New_York).unwrap();
        assert_eq!(t.utc, utc("2024-11-03T05:30:00Z"));
    }

    #[test]
    fn formats_for_ack() {
        assert_eq!(
            format_timestamp(utc("2024-03-15T05:00:09Z")),
            "20240315050009+0000"
        );
    }
}
