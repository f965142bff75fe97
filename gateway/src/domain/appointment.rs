//! Appointments as the gateway tracks them: what the clinic booked, what the patient answered,
//! and how each reminder went (the no-show view).

use serde::{Deserialize, Serialize};

use super::{MessageId, TenantId, E164};

/// `apt_` + ULID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppointmentId(String);

impl AppointmentId {
    pub fn generate() -> Self {
        Self(format!("apt_{}", ulid::Ulid::new()))
    }

    /// Parses an id as echoed in a button payload or a path.
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("apt_")
            .filter(|u| u.parse::<ulid::Ulid>().is_ok())
            .map(|_| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AppointmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
    Arrived,
    Attended,
    NoShow,
}

/// What the patient said through WhatsApp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientResponse {
    Confirmed,
    Cancelled,
    RescheduleRequested,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    pub phone: E164,
    #[serde(default)]
    pub name: String,
    /// Meta language code (`hi`, `ta`, `en` …); the clinic's default when absent.
    #[serde(default)]
    pub language: Option<String>,
}

/// One reminder of the sequence and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderRecord {
    /// Minutes before the start.
    pub offset_minutes: u32,
    pub message: MessageId,
    pub sent_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub id: AppointmentId,
    pub tenant: TenantId,
    /// The EMR's id for it, if it has one (idempotency and write-back).
    #[serde(default)]
    pub external_id: Option<String>,
    pub patient: Patient,
    #[serde(default)]
    pub doctor: Option<String>,
    /// Index into the clinic's locations.
    #[serde(default)]
    pub location: Option<usize>,
    pub start_ms: i64,
    #[serde(default)]
    pub end_ms: Option<i64>,
    pub status: AppointmentStatus,
    #[serde(default)]
    pub response: Option<PatientResponse>,
    /// Bumped by every reschedule and cancellation, so a reminder scheduled for an older
    /// version is recognised as stale when it falls due.
    pub version: u32,
    #[serde(default)]
    pub reminders: Vec<ReminderRecord>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_our_shape() {
        let id = AppointmentId::generate();
        assert_eq!(AppointmentId::parse(id.as_str()), Some(id));
        assert_eq!(AppointmentId::parse("apt_nope"), None);
        assert_eq!(AppointmentId::parse("msg_01JDEXAMPLE"), None);
    }
}
