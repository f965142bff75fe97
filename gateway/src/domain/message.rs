//! The outbox record and its state machine. Decisions here are pure functions so the memory store,
//! the Redis scripts and the dispatcher agree on one set of rules.

use serde::{Deserialize, Serialize};
use whatsapp_cloud::wire::Content;

use super::{Lane, MessageId, PhoneNumberId, TenantId, E164};

/// `queued → sending → accepted → sent → delivered → read`, or `failed` / `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    Queued,
    Sending,
    Accepted,
    Sent,
    Delivered,
    Read,
    Failed,
    Expired,
}

impl MessageState {
    pub const ALL: [MessageState; 8] = [
        MessageState::Queued,
        MessageState::Sending,
        MessageState::Accepted,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Read,
        MessageState::Failed,
        MessageState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Accepted => "accepted",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Read => "read",
            MessageState::Failed => "failed",
            MessageState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Progress rank of the delivery path; terminal failure states rank above everything.
    pub fn rank(self) -> u8 {
        match self {
            MessageState::Queued => 0,
            MessageState::Sending => 1,
            MessageState::Accepted => 2,
            MessageState::Sent => 3,
            MessageState::Delivered => 4,
            MessageState::Read => 5,
            MessageState::Failed | MessageState::Expired => 6,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MessageState::Read | MessageState::Failed | MessageState::Expired
        )
    }

    /// Nothing will act on the message again: delivered or read (settled by their status), failed
    /// or expired (released). Queued, in-flight and merely sent ones still get sent or move money,
    /// so a patient's erasure keeps them.
    pub fn settled(self) -> bool {
        matches!(
            self,
            MessageState::Delivered
                | MessageState::Read
                | MessageState::Failed
                | MessageState::Expired
        )
    }

    /// Meta has the message (or had it and failed it): never send it again.
    pub fn left_gateway(self) -> bool {
        self.rank() >= MessageState::Accepted.rank()
    }
}

/// Why a message failed: Meta's code and text, or the gateway's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageError {
    pub code: i64,
    pub title: String,
    pub detail: String,
}

/// One line of a message's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at_ms: i64,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl TimelineEvent {
    /// The first line of every message's history: accepted into the outbox at `at_ms`.
    pub fn queued(at_ms: i64) -> Self {
        Self {
            at_ms,
            event: "queued".into(),
            detail: None,
        }
    }
}

/// What the API accepted: immutable after accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    pub id: MessageId,
    pub tenant: TenantId,
    pub number: PhoneNumberId,
    pub to: E164,
    pub lane: Lane,
    pub content: Content,
    /// Unix ms after which the message must not be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
    pub created_ms: i64,
    /// The broadcast this message belongs to (so cancelling the broadcast stops it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<String>,
    /// The clinical touchpoint that sent it (`lab_report`, `reminder` …), for event-to-send
    /// latency; `None` for messages sent through `POST /v1/messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touchpoint: Option<String>,
    /// The clinic's retention when it was accepted: the record (recipient, parameters, text)
    /// expires this many days after the message ends; `None` = the store's default (30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_days: Option<u32>,
}

/// The outbox record: the accepted message and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    #[serde(flatten)]
    pub message: NewMessage,
    pub state: MessageState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    /// When the current send attempt started (crash reconciliation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_started_ms: Option<i64>,
    /// The highest status Meta reported before the send call recorded the wamid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early: Option<MessageState>,
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
}

impl MessageRecord {
    pub fn new(message: NewMessage) -> Self {
        let at_ms = message.created_ms;
        Self {
            message,
            state: MessageState::Queued,
            attempts: 0,
            wamid: None,
            error: None,
            send_started_ms: None,
            early: None,
            timeline: vec![TimelineEvent::queued(at_ms)],
        }
    }
}

/// A delivery status from Meta, mapped into the domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub wamid: String,
    /// `Sent`, `Delivered`, `Read` or `Failed`.
    pub state: MessageState,
    pub at_ms: i64,
    /// Our id, from `biz_opaque_callback_data`.
    pub message: Option<MessageId>,
    pub error: Option<MessageError>,
}

/// What an incoming status does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusDecision {
    /// Move the record to this state.
    Advance(MessageState),
    /// The send call has not recorded the wamid yet: remember the status for when it does.
    KeepEarly(MessageState),
    /// Duplicate, stale or after a terminal state: change nothing.
    Ignore,
}

/// Monotonic and idempotent: the highest rank wins; `failed` ends only states that are not yet
/// delivered; nothing moves a terminal state.
pub fn decide_status(
    current: MessageState,
    early: Option<MessageState>,
    incoming: MessageState,
) -> StatusDecision {
    use MessageState::*;
    if !matches!(incoming, Sent | Delivered | Read | Failed) {
        return StatusDecision::Ignore;
    }
    match current {
        Queued | Sending => {
            let merged = merge_early(early, incoming);
            if Some(merged) == early {
                StatusDecision::Ignore
            } else {
                StatusDecision::KeepEarly(merged)
            }
        }
        Failed | Expired | Read => StatusDecision::Ignore,
        Accepted | Sent | Delivered => {
            if incoming == Failed {
                if current == Delivered {
                    StatusDecision::Ignore
                } else {
                    StatusDecision::Advance(Failed)
                }
            } else if incoming.rank() > current.rank() {
                StatusDecision::Advance(incoming)
            } else {
                StatusDecision::Ignore
            }
        }
    }
}

fn merge_early(early: Option<MessageState>, incoming: MessageState) -> MessageState {
    match early {
        None => incoming,
        Some(MessageState::Failed) => MessageState::Failed,
        Some(e)
            if incoming == MessageState::Failed && e.rank() < MessageState::Delivered.rank() =>
        {
            MessageState::Failed
        }
        Some(e) if incoming.rank() > e.rank() && incoming != MessageState::Failed => incoming,
        Some(e) => e,
    }
}

/// The state after the send call returns a wamid, folding in any early status.
pub fn state_after_accept(early: Option<MessageState>) -> MessageState {
    match early {
        Some(e) if e.rank() > MessageState::Accepted.rank() => e,
        _ => MessageState::Accepted,
    }
}

/// What the dispatcher does with a queue entry it has claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDecision {
    /// Send it now.
    Send,
    /// Meta already has it (or it ended): acknowledge the entry, send nothing.
    AlreadyDone,
    /// A status for it arrived while it was in flight: record the wamid as accepted, send nothing.
    ResolveFromStatus,
    /// A previous attempt may have reached Meta: wait for its status webhook until this time.
    WaitForStatus { until_ms: i64 },
    /// Its deadline passed before it could be sent.
    Expire,
}

pub fn decide_send(record: &MessageRecord, now_ms: i64, grace_ms: i64) -> SendDecision {
    if record.state.left_gateway() {
        return SendDecision::AlreadyDone;
    }
    if record.wamid.is_some() {
        return SendDecision::ResolveFromStatus;
    }
    if record.state == MessageState::Sending {
        let until_ms = record.send_started_ms.unwrap_or(0) + grace_ms;
        if now_ms < until_ms {
            return SendDecision::WaitForStatus { until_ms };
        }
    }
    match record.message.deadline_ms {
        Some(d) if now_ms >= d => SendDecision::Expire,
        _ => SendDecision::Send,
    }
}

#[cfg(test)]
mod tests {
    use super::MessageState::*;
    use super::*;

    #[test]
    fn statuses_never_move_backwards() {
        assert_eq!(decide_status(Delivered, None, Sent), StatusDecision::Ignore);
        assert_eq!(decide_status(Sent, None, Sent), StatusDecision::Ignore);
        assert_eq!(
            decide_status(Sent, None, Read),
            StatusDecision::Advance(Read)
        );
        assert_eq!(decide_status(Read, None, Delivered), StatusDecision::Ignore);
        assert_eq!(decide_status(Read, None, Failed), StatusDecision::Ignore);
        assert_eq!(
            decide_status(Accepted, None, Failed),
            StatusDecision::Advance(Failed)
        );
        assert_eq!(
            decide_status(Sent, None, Failed),
            StatusDecision::Advance(Failed)
        );
        assert_eq!(
            decide_status(Delivered, None, Failed),
            StatusDecision::Ignore
        );
        assert_eq!(decide_status(Failed, None, Read), StatusDecision::Ignore);
    }

    #[test]
    fn early_statuses_are_kept_until_the_send_completes() {
        assert_eq!(
            decide_status(Sending, None, Sent),
            StatusDecision::KeepEarly(Sent)
        );
        assert_eq!(
            decide_status(Sending, Some(Sent), Delivered),
            StatusDecision::KeepEarly(Delivered)
        );
        assert_eq!(
            decide_status(Sending, Some(Delivered), Sent),
            StatusDecision::Ignore
        );
        assert_eq!(
            decide_status(Sending, Some(Sent), Failed),
            StatusDecision::KeepEarly(Failed)
        );
        assert_eq!(
            decide_status(Sending, Some(Failed), Read),
            StatusDecision::Ignore
        );
        assert_eq!(state_after_accept(Some(Delivered)), Delivered);
        assert_eq!(state_after_accept(None), Accepted);
        assert_eq!(state_after_accept(Some(Failed)), Failed);
    }

    fn record(state: MessageState) -> MessageRecord {
        let mut r = MessageRecord::new(NewMessage {
            id: MessageId::generate(),
            tenant: TenantId::parse("t").unwrap_or_else(|e| panic!("{e}")),
            number: PhoneNumberId::parse("1").unwrap_or_else(|e| panic!("{e}")),
            to: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
            lane: Lane::Care,
            content: Content::Text {
                text: whatsapp_cloud::wire::Text {
                    body: "x".into(),
                    preview_url: false,
                },
            },
            deadline_ms: Some(10_000),
            created_ms: 0,
            broadcast: None,
            touchpoint: None,
            retain_days: None,
        });
        r.state = state;
        r
    }

    #[test]
    fn send_decisions() {
        assert_eq!(
            decide_send(&record(Queued), 5_000, 1_000),
            SendDecision::Send
        );
        assert_eq!(
            decide_send(&record(Queued), 10_000, 1_000),
            SendDecision::Expire
        );
        assert_eq!(
            decide_send(&record(Sent), 5_000, 1_000),
            SendDecision::AlreadyDone
        );
        let mut in_flight = record(Sending);
        in_flight.send_started_ms = Some(4_500);
        assert_eq!(
            decide_send(&in_flight, 5_000, 1_000),
            SendDecision::WaitForStatus { until_ms: 5_500 }
        );
        assert_eq!(decide_send(&in_flight, 5_600, 1_000), SendDecision::Send);
        in_flight.wamid = Some("wamid.X".into());
        assert_eq!(
            decide_send(&in_flight, 5_000, 1_000),
            SendDecision::ResolveFromStatus
        );
    }
}
