//! Appointment touchpoints: confirmation, reminders with 1-tap replies, reschedule and
//! cancellation notices, and what a patient's reply does.
//!
//! Templates (Meta's create format lives in the template library), body placeholders in order:
//! - `appointment_confirmation`: name, date, time, doctor, clinic; LOCATION header (when the
//!   clinic has a location) so the patient gets a map.
//! - `visit_reminder`: name, date, time, doctor; quick replies Confirm / Cancel / Reschedule
//!   (buttons 0, 1, 2) whose payloads carry the appointment and its version.
//! - `appointment_rescheduled`: name, date, time, doctor.
//! - `appointment_cancelled`: name, date, time.

use serde_json::json;
use whatsapp_cloud::wire::{Component, Content, Location, Parameter, Text};

use super::compose::{self, body, quick_replies};
use super::intents::{payload, Intent};
use super::render::date_time;
use super::{Command, Job, PatientChange, SessionForm, Touchpoint};
use crate::domain::appointment::{Appointment, AppointmentStatus, PatientResponse};
use crate::domain::Lane;
use crate::tenants::ClinicSettings;

pub const CONFIRMATION: &str = "appointment_confirmation";
pub const REMINDER: &str = "visit_reminder";
pub const RESCHEDULED: &str = "appointment_rescheduled";
pub const CANCELLED: &str = "appointment_cancelled";

const DAY_MS: i64 = 24 * 3600 * 1000;

fn template(
    name: &str,
    a: &Appointment,
    clinic: &ClinicSettings,
    components: Vec<Component>,
) -> Content {
    compose::template(name, &a.patient, clinic, components)
}

fn send(
    touchpoint: Touchpoint,
    a: &Appointment,
    content: Content,
    lane: Lane,
    deadline_ms: i64,
    session: Option<SessionForm>,
) -> Command {
    compose::send(touchpoint, &a.patient, content, lane, deadline_ms, session)
}

/// The reminder jobs of `version` of the appointment, whether due yet or not.
fn reminder_jobs(a: &Appointment, version: u32, offsets: &[u32]) -> Vec<Job> {
    offsets
        .iter()
        .map(|&offset_minutes| Job::Reminder {
            appointment: a.id.clone(),
            version,
            offset_minutes,
        })
        .collect()
}

/// Reminder jobs still in the future and before the start, for the appointment's version.
fn reminders(a: &Appointment, offsets: &[u32], now_ms: i64) -> Vec<Command> {
    offsets
        .iter()
        .filter_map(|&offset_minutes| {
            let due_ms = a.start_ms - i64::from(offset_minutes) * 60_000;
            (due_ms > now_ms).then(|| Command::Schedule {
                job: Job::Reminder {
                    appointment: a.id.clone(),
                    version: a.version,
                    offset_minutes,
                },
                due_ms,
            })
        })
        .collect()
}

/// A new booking: confirmation now, reminders later.
pub fn booked(
    a: &Appointment,
    clinic: &ClinicSettings,
    offsets: &[u32],
    now_ms: i64,
) -> Vec<Command> {
    let (date, time) = date_time(a.start_ms, &clinic.time_zone);
    let doctor = a.doctor.clone().unwrap_or_default();
    let mut components = Vec::new();
    if let Some(loc) = a
        .location
        .and_then(|i| clinic.locations.get(i))
        .or(clinic.locations.first())
    {
        components.push(Component::Header {
            parameters: vec![Parameter::Location {
                location: Location {
                    latitude: loc.latitude,
                    longitude: loc.longitude,
                    name: Some(loc.name.clone()),
                    address: Some(loc.address.clone()),
                },
            }],
        });
    }
    components.push(body(&[
        &a.patient.name,
        &date,
        &time,
        &doctor,
        &clinic.display_name,
    ]));
    let mut out = vec![send(
        Touchpoint::Confirmation,
        a,
        template(CONFIRMATION, a, clinic, components),
        Lane::Care,
        a.start_ms,
        None,
    )];
    out.extend(reminders(a, offsets, now_ms));
    out
}

/// Moved to a new time (the appointment already carries the new version).
pub fn rescheduled(
    a: &Appointment,
    clinic: &ClinicSettings,
    offsets: &[u32],
    now_ms: i64,
) -> Vec<Command> {
    let (date, time) = date_time(a.start_ms, &clinic.time_zone);
    let doctor = a.doctor.clone().unwrap_or_default();
    let content = template(
        RESCHEDULED,
        a,
        clinic,
        vec![body(&[&a.patient.name, &date, &time, &doctor])],
    );
    let mut out = vec![
        send(
            Touchpoint::Rescheduled,
            a,
            content,
            Lane::Care,
            a.start_ms,
            Some(SessionForm::Text),
        ),
        // The old time's reminders go; were one to survive, `reminder_due` finds it stale.
        Command::Unschedule {
            jobs: reminder_jobs(a, a.version.saturating_sub(1), offsets),
        },
    ];
    out.extend(reminders(a, offsets, now_ms));
    out
}

/// Cancelled by the clinic (the appointment already carries the new version).
pub fn cancelled_by_clinic(a: &Appointment, clinic: &ClinicSettings, now_ms: i64) -> Vec<Command> {
    let (date, time) = date_time(a.start_ms, &clinic.time_zone);
    let content = template(
        CANCELLED,
        a,
        clinic,
        vec![body(&[&a.patient.name, &date, &time])],
    );
    vec![
        send(
            Touchpoint::Cancelled,
            a,
            content,
            Lane::Care,
            now_ms + DAY_MS,
            Some(SessionForm::Text),
        ),
        Command::Unschedule {
            jobs: reminder_jobs(
                a,
                a.version.saturating_sub(1),
                &clinic.reminder_offsets_minutes,
            ),
        },
    ]
}

/// A reminder job fell due. Nothing for a stale version, a cancelled appointment, or one that
/// has started.
pub fn reminder_due(
    a: &Appointment,
    version: u32,
    clinic: &ClinicSettings,
    now_ms: i64,
) -> Vec<Command> {
    if version != a.version || a.status != AppointmentStatus::Booked || now_ms >= a.start_ms {
        return Vec::new();
    }
    vec![ask(a, clinic, Touchpoint::Reminder, Lane::Reminders)]
}

/// The reminder's question with its three choices, for the reminder itself and to ask again
/// when a reply was ambiguous.
fn ask(a: &Appointment, clinic: &ClinicSettings, touchpoint: Touchpoint, lane: Lane) -> Command {
    let (date, time) = date_time(a.start_ms, &clinic.time_zone);
    let doctor = a.doctor.clone().unwrap_or_default();
    let mut components = vec![body(&[&a.patient.name, &date, &time, &doctor])];
    components.extend(quick_replies(
        [Intent::Confirm, Intent::Cancel, Intent::Reschedule]
            .into_iter()
            .map(|intent| payload(intent, &a.id, a.version))
            .collect(),
    ));
    send(
        touchpoint,
        a,
        template(REMINDER, a, clinic, components),
        lane,
        a.start_ms,
        Some(SessionForm::Buttons),
    )
}

/// A reply that named more than one choice ("cancel or confirm?"): the question again, as
/// buttons (the patient just wrote, so the window is open and it costs nothing).
pub fn clarify(a: &Appointment, clinic: &ClinicSettings, now_ms: i64) -> Vec<Command> {
    if a.status != AppointmentStatus::Booked || now_ms >= a.start_ms {
        return Vec::new();
    }
    vec![ask(a, clinic, Touchpoint::Clarify, Lane::Care)]
}

/// The patient answered (tap or text). Returns the updated appointment, if it changed, and what
/// to do. A reply to an older version (the appointment moved since) acts on the current one only
/// when that is still meaningful: cancelling and asking to reschedule are; confirming an old time
/// is not.
pub fn reply(
    a: &Appointment,
    intent: Intent,
    version: Option<u32>,
    clinic: &ClinicSettings,
    now_ms: i64,
) -> (Option<Appointment>, Vec<Command>) {
    let (date, time) = date_time(a.start_ms, &clinic.time_zone);
    let ack = |body: String| {
        send(
            Touchpoint::ReplyAck,
            a,
            Content::Text {
                text: Text {
                    body,
                    preview_url: false,
                },
            },
            Lane::Care,
            now_ms + DAY_MS,
            None,
        )
    };
    if a.status != AppointmentStatus::Booked {
        let body = format!(
            "This appointment is no longer active. Please contact {} if you need help.",
            clinic.display_name
        );
        return (None, vec![ack(body)]);
    }
    let stale = version.is_some_and(|v| v != a.version);
    let mut updated = a.clone();
    updated.updated_ms = now_ms;
    let data = json!({"appointment": a.id, "external_id": a.external_id, "start_ms": a.start_ms, "patient": a.patient.phone});
    match intent {
        Intent::Confirm if stale => {
            let body = format!("Your appointment has moved to {date} at {time}. Please reply YES to confirm the new time.");
            (None, vec![ack(body)])
        }
        Intent::Confirm => {
            updated.response = Some(PatientResponse::Confirmed);
            let body = format!(
                "Thank you, {}. See you on {date} at {time}.",
                a.patient.name
            );
            (
                Some(updated),
                vec![
                    ack(body),
                    Command::Callback {
                        event: "appointment.confirmed",
                        data,
                    },
                    Command::WriteBack {
                        appointment: a.id.clone(),
                        change: PatientChange::Confirmed,
                    },
                ],
            )
        }
        Intent::Cancel => {
            updated.response = Some(PatientResponse::Cancelled);
            updated.status = AppointmentStatus::Cancelled;
            updated.version += 1;
            let body = format!(
                "Your appointment on {date} at {time} is cancelled. We have freed the slot."
            );
            (
                Some(updated),
                vec![
                    ack(body),
                    Command::Callback {
                        event: "appointment.cancelled_by_patient",
                        data,
                    },
                    Command::WriteBack {
                        appointment: a.id.clone(),
                        change: PatientChange::Cancelled,
                    },
                    Command::Unschedule {
                        jobs: reminder_jobs(a, a.version, &clinic.reminder_offsets_minutes),
                    },
                ],
            )
        }
        Intent::Reschedule => {
            updated.response = Some(PatientResponse::RescheduleRequested);
            let body = format!(
                "Thank you. {} will call you to find a new time.",
                clinic.display_name
            );
            (
                Some(updated),
                vec![
                    ack(body),
                    Command::Callback {
                        event: "appointment.reschedule_requested",
                        data,
                    },
                    Command::WriteBack {
                        appointment: a.id.clone(),
                        change: PatientChange::RescheduleRequested,
                    },
                ],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appointment::{AppointmentId, Patient};
    use crate::domain::{TenantId, E164};
    use crate::tenants::model::ClinicLocation;
    use crate::workflows::intents::parse_payload;
    use whatsapp_cloud::wire::{ButtonParameter, Template};

    const HOUR: i64 = 3_600_000;
    const NOW: i64 = 1_795_500_000_000;

    fn clinic() -> ClinicSettings {
        let config: crate::config::ClinicConfig = serde_json::from_value(json!({
            "id": "c", "name": "Sunrise Clinic", "api_key_sha256": "0".repeat(64), "app_secret": "s", "access_token": "t",
            "numbers": [{"phone_number_id": "1", "tier_mps": 80}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        let mut c = crate::tenants::bootstrap::clinic_from_config(&config, &settings);
        c.locations = vec![ClinicLocation {
            name: "MG Road".into(),
            address: "12 MG Road".into(),
            latitude: 12.97,
            longitude: 77.6,
        }];
        c
    }

    fn appointment(start_ms: i64) -> Appointment {
        Appointment {
            id: AppointmentId::generate(),
            tenant: TenantId::parse("c").unwrap_or_else(|e| panic!("{e}")),
            external_id: Some("EMR-1".into()),
            patient: Patient {
                phone: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
                name: "Asha".into(),
                language: Some("hi".into()),
            },
            doctor: Some("Dr. Rao".into()),
            location: None,
            start_ms,
            end_ms: None,
            status: AppointmentStatus::Booked,
            response: None,
            version: 1,
            reminders: vec![],
            created_ms: NOW,
            updated_ms: NOW,
        }
    }

    fn template_of(c: &Command) -> Option<&Template> {
        match c {
            Command::Send {
                content: Content::Template { template },
                ..
            } => Some(template),
            _ => None,
        }
    }

    #[test]
    fn booking_confirms_with_a_map_and_schedules_future_reminders() {
        let a = appointment(NOW + 48 * HOUR);
        let cmds = booked(&a, &clinic(), &[72 * 60, 24 * 60, 120], NOW);
        let t = template_of(&cmds[0]).unwrap_or_else(|| panic!("{cmds:?}"));
        assert_eq!(
            (t.name.as_str(), t.language.code.as_str()),
            (CONFIRMATION, "hi")
        );
        assert!(
            matches!(&t.components[0], Component::Header { parameters } if matches!(parameters[0], Parameter::Location { .. }))
        );
        assert!(
            matches!(&t.components[1], Component::Body { parameters } if parameters.len() == 5)
        );
        let due: Vec<i64> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::Schedule { due_ms, .. } => Some(*due_ms),
                _ => None,
            })
            .collect();
        assert_eq!(
            due,
            vec![NOW + 24 * HOUR, NOW + 46 * HOUR],
            "the 72 h reminder is already past"
        );
    }

    #[test]
    fn reminders_carry_one_tap_replies_and_go_stale() {
        let c = clinic();
        let mut a = appointment(NOW + 24 * HOUR);
        let cmds = reminder_due(&a, 1, &c, NOW);
        let t = template_of(&cmds[0]).unwrap_or_else(|| panic!("{cmds:?}"));
        let payloads: Vec<String> = t
            .components
            .iter()
            .filter_map(|comp| match comp {
                Component::Button { parameters, .. } => match &parameters[0] {
                    ButtonParameter::Payload { payload } => Some(payload.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(payloads.len(), 3);
        assert_eq!(
            parse_payload(&payloads[1]).map(|p| p.0),
            Some(Intent::Cancel)
        );
        assert!(
            matches!(&cmds[0], Command::Send { lane: Lane::Reminders, deadline_ms, .. } if *deadline_ms == a.start_ms)
        );
        a.version = 2;
        assert!(
            reminder_due(&a, 1, &c, NOW).is_empty(),
            "rescheduled since: stale"
        );
        a.version = 1;
        a.status = AppointmentStatus::Cancelled;
        assert!(reminder_due(&a, 1, &c, NOW).is_empty(), "cancelled");
        a.status = AppointmentStatus::Booked;
        assert!(
            reminder_due(&a, 1, &c, a.start_ms).is_empty(),
            "already started"
        );
    }

    #[test]
    fn replies_change_the_appointment_and_tell_the_clinic() {
        let c = clinic();
        let a = appointment(NOW + 24 * HOUR);
        let (updated, cmds) = reply(&a, Intent::Cancel, Some(1), &c, NOW);
        let u = updated.unwrap_or_else(|| panic!("cancel changes it"));
        assert_eq!(
            (u.status, u.response, u.version),
            (
                AppointmentStatus::Cancelled,
                Some(PatientResponse::Cancelled),
                2
            )
        );
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::Callback {
                event: "appointment.cancelled_by_patient",
                ..
            }
        )));
        assert!(cmds.iter().any(|c| matches!(
            c,
            Command::Send {
                touchpoint: Touchpoint::ReplyAck,
                ..
            }
        )));
        // A second cancel (or any reply) to a cancelled appointment changes nothing.
        let (again, _) = reply(&u, Intent::Cancel, Some(1), &c, NOW);
        assert!(again.is_none());
        // Confirming an old time after a reschedule asks again instead.
        let mut moved = a.clone();
        moved.version = 2;
        let (none, _) = reply(&moved, Intent::Confirm, Some(1), &c, NOW);
        assert!(none.is_none());
        let (confirmed, _) = reply(&moved, Intent::Confirm, Some(2), &c, NOW);
        assert_eq!(
            confirmed.and_then(|a| a.response),
            Some(PatientResponse::Confirmed)
        );
    }

    #[test]
    fn reschedule_and_cancellation_notices() {
        let c = clinic();
        let mut a = appointment(NOW + 30 * HOUR);
        a.version = 2;
        let cmds = rescheduled(&a, &c, &[24 * 60], NOW);
        assert_eq!(
            template_of(&cmds[0]).map(|t| t.name.as_str()),
            Some(RESCHEDULED)
        );
        assert!(
            matches!(&cmds[1], Command::Unschedule { jobs } if jobs == &vec![Job::Reminder { appointment: a.id.clone(), version: 1, offset_minutes: 24 * 60 }]),
            "the old time's reminders go"
        );
        assert!(matches!(
            &cmds[2],
            Command::Schedule {
                job: Job::Reminder { version: 2, .. },
                ..
            }
        ));
        let cmds = cancelled_by_clinic(&a, &c, NOW);
        assert_eq!(
            template_of(&cmds[0]).map(|t| t.name.as_str()),
            Some(CANCELLED)
        );
    }
}
