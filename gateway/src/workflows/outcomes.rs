//! The no-show view: what became of each appointment's reminders and of the appointment, and the
//! clinic's rates over a date range. Pure: the message states are looked up by the caller.

use serde::{Deserialize, Serialize};

use crate::domain::appointment::{Appointment, AppointmentStatus, PatientResponse};
use crate::domain::MessageState;

/// What the reminders achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderOutcome {
    /// No reminder was sent (booked too late, or not due yet).
    NotReminded,
    /// Sent, and Meta has not (yet) reported it delivered.
    Pending,
    /// Every reminder failed or expired.
    Undeliverable,
    Confirmed,
    Cancelled,
    RescheduleRequested,
    /// Delivered (or read) and no answer.
    Ignored,
}

/// Whether the patient came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attendance {
    /// Not yet known (upcoming, or not marked).
    Unknown,
    Arrived,
    Attended,
    NoShow,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub reminders_sent: usize,
    pub reminder_delivered: bool,
    pub reminder_read: bool,
    pub reminder: ReminderOutcome,
    pub attendance: Attendance,
}

/// `states` are the states of the appointment's reminder messages (same order as
/// `a.reminders`).
pub fn outcome(a: &Appointment, states: &[MessageState]) -> Outcome {
    let delivered = states
        .iter()
        .any(|s| matches!(s, MessageState::Delivered | MessageState::Read));
    let read = states.contains(&MessageState::Read);
    let all_failed = !states.is_empty()
        && states
            .iter()
            .all(|s| matches!(s, MessageState::Failed | MessageState::Expired));
    let reminder = match a.response {
        Some(PatientResponse::Confirmed) => ReminderOutcome::Confirmed,
        Some(PatientResponse::Cancelled) => ReminderOutcome::Cancelled,
        Some(PatientResponse::RescheduleRequested) => ReminderOutcome::RescheduleRequested,
        None if states.is_empty() => ReminderOutcome::NotReminded,
        None if all_failed => ReminderOutcome::Undeliverable,
        None if delivered => ReminderOutcome::Ignored,
        None => ReminderOutcome::Pending,
    };
    let attendance = match a.status {
        AppointmentStatus::Booked => Attendance::Unknown,
        AppointmentStatus::Arrived => Attendance::Arrived,
        AppointmentStatus::Attended => Attendance::Attended,
        AppointmentStatus::NoShow => Attendance::NoShow,
        AppointmentStatus::Cancelled => Attendance::Cancelled,
    };
    Outcome {
        reminders_sent: states.len(),
        reminder_delivered: delivered,
        reminder_read: read,
        reminder,
        attendance,
    }
}

/// Attended vs no-show among appointments whose attendance is known, for one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Attendances {
    pub appointments: u64,
    pub attended: u64,
    pub no_show: u64,
    /// no_show / (attended + no_show); `None` when neither is known yet.
    pub no_show_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub appointments: u64,
    pub cancelled: u64,
    /// Appointments that got at least one reminder.
    pub reminded: u64,
    /// reminded / appointments.
    pub reminder_coverage: Option<f64>,
    /// Reminders Meta reported delivered / reminded.
    pub delivery_rate: Option<f64>,
    /// Confirmed by the patient / reminded.
    pub confirmation_rate: Option<f64>,
    pub no_show_rate: Option<f64>,
    /// The no-show rate for each reminder outcome: does confirming predict attending?
    pub by_reminder_outcome: std::collections::BTreeMap<String, Attendances>,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| (n as f64 / d as f64 * 10_000.0).round() / 10_000.0)
}

pub fn stats(outcomes: &[Outcome]) -> Stats {
    let mut s = Stats {
        appointments: outcomes.len() as u64,
        ..Stats::default()
    };
    let (mut delivered, mut confirmed, mut attended, mut no_show) = (0, 0, 0, 0);
    for o in outcomes {
        if o.reminders_sent > 0 {
            s.reminded += 1;
        }
        delivered += u64::from(o.reminder_delivered);
        confirmed += u64::from(o.reminder == ReminderOutcome::Confirmed);
        s.cancelled += u64::from(o.attendance == Attendance::Cancelled);
        let key = serde_json::to_value(o.reminder)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let group = s.by_reminder_outcome.entry(key).or_default();
        group.appointments += 1;
        match o.attendance {
            Attendance::Attended | Attendance::Arrived => {
                group.attended += 1;
                attended += 1;
            }
            Attendance::NoShow => {
                group.no_show += 1;
                no_show += 1;
            }
            _ => {}
        }
    }
    for g in s.by_reminder_outcome.values_mut() {
        g.no_show_rate = ratio(g.no_show, g.attended + g.no_show);
    }
    s.reminder_coverage = ratio(s.reminded, s.appointments);
    s.delivery_rate = ratio(delivered, s.reminded);
    s.confirmation_rate = ratio(confirmed, s.reminded);
    s.no_show_rate = ratio(no_show, attended + no_show);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appointment::{AppointmentId, Patient};
    use crate::domain::{TenantId, E164};

    fn apt(status: AppointmentStatus, response: Option<PatientResponse>) -> Appointment {
        Appointment {
            id: AppointmentId::generate(),
            tenant: TenantId::parse("c").unwrap_or_else(|e| panic!("{e}")),
            external_id: None,
            patient: Patient {
                phone: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
                name: String::new(),
                language: None,
            },
            doctor: None,
            location: None,
            start_ms: 0,
            end_ms: None,
            status,
            response,
            version: 1,
            reminders: vec![],
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn outcomes_from_reminder_states_and_answers() {
        use AppointmentStatus::*;
        use MessageState as M;
        let o = |a: &Appointment, s: &[M]| outcome(a, s).reminder;
        assert_eq!(o(&apt(Booked, None), &[]), ReminderOutcome::NotReminded);
        assert_eq!(o(&apt(Booked, None), &[M::Sent]), ReminderOutcome::Pending);
        assert_eq!(
            o(&apt(NoShow, None), &[M::Failed, M::Expired]),
            ReminderOutcome::Undeliverable
        );
        assert_eq!(
            o(&apt(NoShow, None), &[M::Failed, M::Read]),
            ReminderOutcome::Ignored
        );
        assert_eq!(
            o(&apt(Attended, Some(PatientResponse::Confirmed)), &[M::Read]),
            ReminderOutcome::Confirmed
        );
        assert_eq!(
            outcome(
                &apt(Cancelled, Some(PatientResponse::Cancelled)),
                &[M::Delivered]
            )
            .attendance,
            Attendance::Cancelled
        );
    }

    #[test]
    fn rates_over_a_range() {
        use AppointmentStatus::*;
        use MessageState as M;
        let confirmed = Some(PatientResponse::Confirmed);
        let outcomes = vec![
            outcome(&apt(Attended, confirmed), &[M::Read]),
            outcome(&apt(Attended, confirmed), &[M::Delivered]),
            outcome(&apt(NoShow, None), &[M::Delivered]),
            outcome(&apt(Attended, None), &[M::Delivered]),
            outcome(&apt(NoShow, None), &[]),
            outcome(
                &apt(Cancelled, Some(PatientResponse::Cancelled)),
                &[M::Read],
            ),
        ];
        let s = stats(&outcomes);
        assert_eq!((s.appointments, s.reminded, s.cancelled), (6, 5, 1));
        assert_eq!(s.reminder_coverage, Some(0.8333));
        assert_eq!(s.confirmation_rate, Some(0.4));
        assert_eq!(s.no_show_rate, Some(0.4), "2 of 5 with known attendance");
        assert_eq!(s.by_reminder_outcome["confirmed"].no_show_rate, Some(0.0));
        assert_eq!(s.by_reminder_outcome["ignored"].no_show_rate, Some(0.5));
        assert_eq!(
            s.by_reminder_outcome["not_reminded"].no_show_rate,
            Some(1.0)
        );
        assert_eq!(stats(&[]).confirmation_rate, None);
    }
}
