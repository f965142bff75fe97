//! A clinic as stored and as the admin API accepts it. Parsed once here; the core trusts it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{Money, PhoneNumberId, TenantId};
use crate::pricing::RateCard;

/// A secret (access token, app secret, signing secret). Stored, never shown: `Debug` and the API
/// views redact it; only the store serialises it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Sends go to Meta and cost money.
    #[default]
    Live,
    /// Sends go to the in-process sandbox and cost nothing.
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClinicStatus {
    #[default]
    Active,
    /// Keeps its data; its API keys are refused and nothing is sent.
    Suspended,
}

/// What happens when Meta re-categorises one of the clinic's templates (e.g. utility → marketing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecategorisationPolicy {
    /// Sends of that template are refused until the clinic accepts the new price.
    #[default]
    Hold,
    /// The new category (and price) applies at once.
    Accept,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessNumber {
    pub phone_number_id: PhoneNumberId,
    #[serde(default)]
    pub display: String,
    /// 20, 80 or 1000 messages/s; 0 = unlimited (sandbox benchmarks only).
    pub tier_mps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClinicLocation {
    pub name: String,
    #[serde(default)]
    pub address: String,
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doctor {
    pub id: String,
    pub name: String,
}

/// Local times `HH:MM`; a window that wraps midnight (21:00–08:00) is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub url: String,
    pub secret: Secret,
}

/// A clinic (tenant), complete and valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClinicSettings {
    pub id: TenantId,
    pub display_name: String,
    #[serde(default)]
    pub status: ClinicStatus,
    #[serde(default)]
    pub mode: Mode,
    pub waba_id: String,
    /// Meta business portfolio: clinics of one portfolio share its messaging limit.
    pub portfolio_id: String,
    #[serde(default)]
    pub meta_app_id: String,
    pub app_secret: Secret,
    pub access_token: Secret,
    pub numbers: Vec<BusinessNumber>,
    pub time_zone: String,
    pub default_country_code: String,
    pub default_language: String,
    #[serde(default)]
    pub locations: Vec<ClinicLocation>,
    #[serde(default)]
    pub doctors: Vec<Doctor>,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    #[serde(default)]
    pub rate_card: Option<RateCard>,
    pub low_balance_threshold: Money,
    #[serde(default)]
    pub callback: Option<Callback>,
    #[serde(default)]
    pub recategorisation: RecategorisationPolicy,
    /// Reminders before each appointment, in minutes (default one, 24 h before).
    #[serde(default = "default_reminder_offsets")]
    pub reminder_offsets_minutes: Vec<u32>,
    /// Follow-up message N days after a completed visit, N by visit type.
    #[serde(default)]
    pub follow_up: FollowUpSettings,
    /// Feedback request this many minutes after a completed visit; `None` = never.
    #[serde(default = "default_feedback_delay")]
    pub feedback_delay_minutes: Option<u32>,
    /// The clinic's EMR links (HL7 v2 / FHIR R4) for ingest and write-back.
    #[serde(default)]
    pub emr: crate::emr::EmrSettings,
    /// Messaging-limit tier of the portfolio (unique patients outside their window per 24 h);
    /// `None` = unlimited.
    #[serde(default)]
    pub messaging_limit: Option<u32>,
    /// Days clinical records (inbox, feedback, visits, documents, dead letters, callbacks,
    /// broadcast recipient chunks) and ended appointments are kept; `None` = kept until erased.
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub created_ms: i64,
    #[serde(default)]
    pub updated_ms: i64,
}

/// The longest retention a clinic can set (10 years).
pub const MAX_RETENTION_DAYS: u32 = 3_650;

impl ClinicSettings {
    pub fn number(&self, id: &PhoneNumberId) -> Option<&BusinessNumber> {
        self.numbers.iter().find(|n| &n.phone_number_id == id)
    }

    pub fn is_active(&self) -> bool {
        self.status == ClinicStatus::Active
    }
}

fn default_reminder_offsets() -> Vec<u32> {
    vec![24 * 60]
}

fn default_feedback_delay() -> Option<u32> {
    Some(120)
}

fn default_follow_up_days() -> u32 {
    7
}

/// Days after a visit until its follow-up; 0 = no follow-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUpSettings {
    #[serde(default = "default_follow_up_days")]
    pub default_days: u32,
    /// Per visit type (e.g. `surgery` 3, `vaccination` 0), matched case-insensitively.
    #[serde(default)]
    pub by_visit_type: std::collections::BTreeMap<String, u32>,
}

impl Default for FollowUpSettings {
    fn default() -> Self {
        Self {
            default_days: default_follow_up_days(),
            by_visit_type: Default::default(),
        }
    }
}

impl FollowUpSettings {
    pub fn days_for(&self, visit_type: &str) -> u32 {
        self.by_visit_type
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(visit_type))
            .map_or(self.default_days, |(_, d)| *d)
    }
}

/// A rule the admin input broke, with the JSON path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct InvalidClinic {
    pub field: String,
    pub detail: String,
}

fn invalid(field: &str, detail: impl Into<String>) -> InvalidClinic {
    InvalidClinic {
        field: field.to_owned(),
        detail: detail.into(),
    }
}

fn hhmm(s: &str) -> bool {
    let Some((h, m)) = s.split_once(':') else {
        return false;
    };
    s.len() == 5 && matches!((u8::from_str(h), u8::from_str(m)), (Ok(h), Ok(m)) if h < 24 && m < 60)
}

impl ClinicSettings {
    /// Checks everything a clinic must satisfy before it is stored.
    pub fn validate(&self) -> Result<(), InvalidClinic> {
        if self.display_name.trim().is_empty() {
            return Err(invalid("display_name", "is required"));
        }
        if self.waba_id.is_empty()
            || !self
                .waba_id
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'_' || b.is_ascii_alphabetic())
        {
            return Err(invalid(
                "waba_id",
                "is required: the WhatsApp Business Account id",
            ));
        }
        if self.portfolio_id.is_empty() {
            return Err(invalid("portfolio_id", "is required"));
        }
        if self.mode == Mode::Live {
            if self.access_token.is_empty() {
                return Err(invalid("access_token", "is required for a live clinic"));
            }
            if self.app_secret.is_empty() {
                return Err(invalid("app_secret", "is required for a live clinic"));
            }
        }
        if self.numbers.is_empty() {
            return Err(invalid(
                "numbers",
                "at least one business number is required",
            ));
        }
        for (i, n) in self.numbers.iter().enumerate() {
            if !matches!(n.tier_mps, 0 | 20 | 80 | 1000) {
                return Err(invalid(
                    &format!("numbers[{i}].tier_mps"),
                    "must be 20, 80 or 1000 (0 = unlimited, sandbox only)",
                ));
            }
            if n.tier_mps == 0 && self.mode == Mode::Live {
                return Err(invalid(
                    &format!("numbers[{i}].tier_mps"),
                    "0 (unlimited) is only for sandbox clinics",
                ));
            }
            if self.numbers[..i]
                .iter()
                .any(|o| o.phone_number_id == n.phone_number_id)
            {
                return Err(invalid(
                    &format!("numbers[{i}].phone_number_id"),
                    "is listed twice",
                ));
            }
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(invalid(
                "time_zone",
                format!(
                    "{:?} is not an IANA time zone such as Asia/Kolkata",
                    self.time_zone
                ),
            ));
        }
        if !(1..=3).contains(&self.default_country_code.len())
            || !self
                .default_country_code
                .bytes()
                .all(|b| b.is_ascii_digit())
            || self.default_country_code.starts_with('0')
        {
            return Err(invalid("default_country_code", "a calling code such as 91"));
        }
        if self.default_language.is_empty()
            || !self
                .default_language
                .bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Err(invalid(
                "default_language",
                "a Meta language code such as en or hi",
            ));
        }
        for (i, l) in self.locations.iter().enumerate() {
            if !(-90.0..=90.0).contains(&l.latitude) || !(-180.0..=180.0).contains(&l.longitude) {
                return Err(invalid(
                    &format!("locations[{i}]"),
                    "latitude -90..90 and longitude -180..180",
                ));
            }
        }
        if let Some(q) = &self.quiet_hours {
            if !hhmm(&q.start) || !hhmm(&q.end) {
                return Err(invalid("quiet_hours", "start and end as HH:MM"));
            }
        }
        if self.reminder_offsets_minutes.len() > 5
            || self
                .reminder_offsets_minutes
                .iter()
                .any(|m| *m == 0 || *m > 14 * 24 * 60)
        {
            return Err(invalid(
                "reminder_offsets_minutes",
                "up to 5 offsets, each 1 minute to 14 days before the appointment",
            ));
        }
        if self.follow_up.default_days > 365
            || self.follow_up.by_visit_type.values().any(|d| *d > 365)
        {
            return Err(invalid("follow_up", "days from 0 (none) to 365"));
        }
        if self
            .feedback_delay_minutes
            .is_some_and(|m| m > 30 * 24 * 60)
        {
            return Err(invalid("feedback_delay_minutes", "at most 30 days"));
        }
        if self
            .retention_days
            .is_some_and(|d| !(1..=MAX_RETENTION_DAYS).contains(&d))
        {
            return Err(invalid(
                "retention_days",
                format!("1 to {MAX_RETENTION_DAYS} days"),
            ));
        }
        if self.low_balance_threshold.is_negative() {
            return Err(invalid("low_balance_threshold", "must not be negative"));
        }
        if let Some(c) = &self.callback {
            if !url::Url::parse(&c.url).is_ok_and(|u| u.scheme() == "https" || u.scheme() == "http")
            {
                return Err(invalid("callback.url", "must be an http(s) URL"));
            }
            if c.secret.expose().len() < 16 {
                return Err(invalid("callback.secret", "at least 16 characters"));
            }
        }
        if let Some(card) = &self.rate_card {
            card.validate().map_err(|d| invalid("rate_card", d))?;
        }
        Ok(())
    }
}
