//! FHIR primitive types that need validation: `instant`, `dateTime`, `date`,
//! and 64-bit integers that travel as JSON strings (`integer64`).
//!
//! The original text is kept so that serialising a parsed resource gives back
//! exactly what the sender wrote (FHIR allows more fractional digits than chrono
//! prints back).

use std::fmt;

use chrono::{DateTime as ChronoDateTime, FixedOffset, NaiveDate};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// FHIR `instant`: a full date-time with seconds and a mandatory offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    raw: String,
    value: ChronoDateTime<FixedOffset>,
}

impl Instant {
    /// Parse an RFC 3339 date-time with offset (`Z` or `±hh:mm`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let value = ChronoDateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("`{s}` is not an instant with offset ({e})"))?;
        Ok(Instant {
            raw: s.to_owned(),
            value,
        })
    }

    /// Build from a chrono value (formatted as RFC 3339).
    pub fn from_datetime(value: ChronoDateTime<FixedOffset>) -> Self {
        Instant {
            raw: value.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            value,
        }
    }

    /// The parsed value, with the sender's offset.
    pub fn value(&self) -> ChronoDateTime<FixedOffset> {
        self.value
    }

    /// The text as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// FHIR `dateTime`: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a full date-time with offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTime {
    raw: String,
    value: DateTimeValue,
}

/// The precision a FHIR `dateTime` (or `date`) was given with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeValue {
    /// `YYYY`
    Year(i32),
    /// `YYYY-MM`
    YearMonth(i32, u32),
    /// `YYYY-MM-DD`
    Date(NaiveDate),
    /// Full date-time with offset.
    Instant(ChronoDateTime<FixedOffset>),
}

fn parse_partial_date(s: &str) -> Option<DateTimeValue> {
    let bytes = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        bytes
            .get(r.clone())
            .filter(|b| b.iter().all(u8::is_ascii_digit))
            .and_then(|_| s.get(r))
    };
    match bytes.len() {
        4 => digits(0..4)?.parse().ok().map(DateTimeValue::Year),
        7 if bytes.get(4) == Some(&b'-') => {
            let y = digits(0..4)?.parse().ok()?;
            let m: u32 = digits(5..7)?.parse().ok()?;
            (1..=12)
                .contains(&m)
                .then_some(DateTimeValue::YearMonth(y, m))
        }
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(DateTimeValue::Date),
        _ => None,
    }
}

impl DateTime {
    /// Parse a FHIR `dateTime`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let value = if s.contains('T') {
            ChronoDateTime::parse_from_rfc3339(s)
                .map(DateTimeValue::Instant)
                .map_err(|e| format!("`{s}` is not a dateTime with offset ({e})"))?
        } else {
            parse_partial_date(s).ok_or_else(|| format!("`{s}` is not a FHIR dateTime"))?
        };
        Ok(DateTime {
            raw: s.to_owned(),
            value,
        })
    }

    /// The parsed value and its precision.
    pub fn value(&self) -> DateTimeValue {
        self.value
    }

    /// The full date-time when the value has time and offset.
    pub fn as_instant(&self) -> Option<ChronoDateTime<FixedOffset>> {
        match self.value {
            DateTimeValue::Instant(v) => Some(v),
            _ => None,
        }
    }

    /// The text as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// FHIR `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (no time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Date {
    raw: String,
    value: DateTimeValue,
}

impl Date {
    /// Parse a FHIR `date`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let value = parse_partial_date(s).ok_or_else(|| format!("`{s}` is not a FHIR date"))?;
        Ok(Date {
            raw: s.to_owned(),
            value,
        })
    }

    /// The parsed value and its precision (never `Instant`).
    pub fn value(&self) -> DateTimeValue {
        self.value
    }

    /// The text as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

macro_rules! string_backed {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.raw)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(de::Error::custom)
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t>::parse(s)
            }
        }
    };
}
string_backed!(Instant);
string_backed!(DateTime);
string_backed!(Date);

/// Unsigned 64-bit counter as FHIR sends it: R5 `integer64` and R4B `string` travel
/// as JSON strings (`"310"`), R4 `unsignedInt` as a number. Both are accepted;
/// it is written back as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Counter(pub u64);

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Counter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer (number or decimal string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Counter, E> {
                Ok(Counter(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Counter, E> {
                u64::try_from(v)
                    .map(Counter)
                    .map_err(|_| E::custom(format!("negative counter {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Counter, E> {
                v.trim()
                    .parse()
                    .map(Counter)
                    .map_err(|_| E::custom(format!("`{v}` is not a non-negative integer")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_need_offset_and_keep_text() {
        let i = Instant::parse("2020-04-17T10:24:13.1882432-05:00").unwrap();
        assert_eq!(i.as_str(), "2020-04-17T10:24:13.1882432-05:00");
        assert_eq!(i.value().offset().local_minus_utc(), -5 * 3600);
        assert!(Instant::parse("2020-04-17T10:24:13").is_err());
        assert!(Instant::parse("2020-04-17").is_err());
    }

    #[test]
    fn date_times_and_dates() {
        assert_eq!(
            DateTime::parse("2017").unwrap().value(),
            DateTimeValue::Year(2017)
        );
        assert_eq!(
            DateTime::parse("2017-03").unwrap().value(),
            DateTimeValue::YearMonth(2017, 3)
        );
        assert!(DateTime::parse("2017-13").is_err());
        assert!(DateTime::parse("2017-02-30").is_err());
        assert!(DateTime::parse("2017-03-02T10:00:00Z")
            .unwrap()
            .as_instant()
            .is_some());
        assert!(DateTime::parse("2017-03-02T10:00:00").is_err());
        assert!(Date::parse("1974-12-25").is_ok());
        assert!(Date::parse("1974-12-25T00:00:00Z").is_err());
        assert!(Date::parse("١٩٧٤").is_err());
    }

    #[test]
    fn counters_accept_numbers_and_strings() {
        let c: Counter = serde_json::from_str("\"310\"").unwrap();
        assert_eq!(c, Counter(310));
        let c: Counter = serde_json::from_str("7").unwrap();
        assert_eq!(c, Counter(7));
        assert!(serde_json::from_str::<Counter>("-1").is_err());
        assert!(serde_json::from_str::<Counter>("\"x\"").is_err());
        assert_eq!(serde_json::to_string(&Counter(2)).unwrap(), "\"2\"");
    }
}
