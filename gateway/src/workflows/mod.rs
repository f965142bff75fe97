//! Clinical touchpoints as pure functions: an event, the clinic's settings and the current state
//! in; commands out (send, schedule, callback). No I/O here, so every rule is unit-tested; the
//! scheduler, the API and the conversation actors execute the commands.

pub mod appointments;
pub mod compose;
pub mod documents;
pub mod intents;
pub mod outcomes;
pub mod quiet;
pub mod render;
pub mod session;
pub mod visits;

use serde_json::Value;
use whatsapp_cloud::wire::Content;

use crate::domain::appointment::AppointmentId;
use crate::domain::{Lane, E164};

/// What a workflow asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send a message through the outbox (the one way: admission, wallet, queue).
    Send {
        touchpoint: Touchpoint,
        to: E164,
        content: Content,
        lane: Lane,
        /// Not after this (e.g. a reminder is pointless once the appointment started).
        deadline_ms: i64,
        /// How to send it as a free session message when the patient's window is open (`None`:
        /// always the template).
        session: Option<SessionForm>,
    },
    /// Run a job at `due_ms`.
    Schedule { job: Job, due_ms: i64 },
    /// Drop jobs no longer wanted (the appointment moved or was cancelled).
    Unschedule { jobs: Vec<Job> },
    /// Tell the clinic (signed callback).
    Callback { event: &'static str, data: Value },
    /// Tell the clinic's EMR what the patient decided (FHIR PATCH or an HL7 message).
    WriteBack {
        appointment: AppointmentId,
        change: PatientChange,
    },
}

/// A patient's decision the EMR should learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientChange {
    Confirmed,
    Cancelled,
    RescheduleRequested,
}

/// The free-form shape of a template touchpoint inside the service window: the same words (from
/// the template library, in the patient's language) at no charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionForm {
    /// Body as text.
    Text,
    /// Body with the quick replies as reply buttons (at most 3), same payloads.
    Buttons,
    /// Body with the quick replies as a list (more than 3 choices).
    List,
    /// The header's document with the body as its caption.
    Document,
}

/// The touchpoints the gateway sends, for metrics and the no-show view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Touchpoint {
    Confirmation,
    Rescheduled,
    Cancelled,
    Reminder,
    ReplyAck,
    Prescription,
    LabReport,
    LabReportCorrected,
    HealthRecord,
    FollowUp,
    Feedback,
    Clarify,
    Consent,
}

impl Touchpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Touchpoint::Confirmation => "confirmation",
            Touchpoint::Rescheduled => "rescheduled",
            Touchpoint::Cancelled => "cancelled",
            Touchpoint::Reminder => "reminder",
            Touchpoint::ReplyAck => "reply_ack",
            Touchpoint::Prescription => "prescription",
            Touchpoint::LabReport => "lab_report",
            Touchpoint::LabReportCorrected => "lab_report_corrected",
            Touchpoint::HealthRecord => "health_record",
            Touchpoint::FollowUp => "follow_up",
            Touchpoint::Feedback => "feedback",
            Touchpoint::Clarify => "clarify",
            Touchpoint::Consent => "consent",
        }
    }

    /// Care the patient is waiting for (a report, an answer) goes out even in quiet hours and
    /// after STOP; reminders, follow-ups and feedback requests wait or are skipped.
    pub fn is_essential(self) -> bool {
        !matches!(
            self,
            Touchpoint::Reminder | Touchpoint::FollowUp | Touchpoint::Feedback
        )
    }
}

/// A scheduled unit of work.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// The reminder `offset_minutes` before the start of `version` of the appointment.
    Reminder {
        appointment: AppointmentId,
        version: u32,
        offset_minutes: u32,
    },
    /// The follow-up message after a visit.
    FollowUp { visit: String },
    /// The feedback request after a visit.
    Feedback { visit: String },
    /// Deliver a stored clinic callback event (attempt `attempt`).
    Callback { id: String, attempt: u32 },
    /// Queue the next chunk of a broadcast (or start it).
    Broadcast { id: String },
    /// Tell the EMR (through the link named `link`) what the patient decided.
    WriteBack {
        link: String,
        appointment: AppointmentId,
        change: PatientChange,
        attempt: u32,
    },
}
