//! Clinical touchpoints as pure functions: an event, the clinic's settings and the current state
//! in; commands out (send, schedule, callback). No I/O here, so every rule is unit-tested; the
//! scheduler, the API and the conversation actors execute the commands.

pub mod appointments;
pub mod intents;
pub mod render;

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
    },
    /// Run a job at `due_ms`.
    Schedule { job: Job, due_ms: i64 },
    /// Tell the clinic (signed callback).
    Callback { event: &'static str, data: Value },
}

/// The touchpoints the gateway sends, for metrics and the no-show view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Touchpoint {
    Confirmation,
    Rescheduled,
    Cancelled,
    Reminder,
    ReplyAck,
}

impl Touchpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Touchpoint::Confirmation => "confirmation",
            Touchpoint::Rescheduled => "rescheduled",
            Touchpoint::Cancelled => "cancelled",
            Touchpoint::Reminder => "reminder",
            Touchpoint::ReplyAck => "reply_ack",
        }
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
}
