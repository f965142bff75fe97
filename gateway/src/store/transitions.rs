//! Record transitions shared by every store: each takes the current record and returns whether it
//! changed. The Redis store runs the same rules inside Lua for atomicity; the contract tests hold
//! both to them.

use crate::domain::message::{
    decide_status, state_after_accept, MessageRecord, StatusDecision, TimelineEvent,
};
use crate::domain::{MessageState, StatusUpdate};

use super::AttemptOutcome;

fn push(rec: &mut MessageRecord, at_ms: i64, event: impl Into<String>, detail: Option<String>) {
    rec.timeline.push(TimelineEvent {
        at_ms,
        event: event.into(),
        detail,
    });
}

/// `queued`/`sending` without a wamid → `sending`; returns the new attempt number.
pub fn begin_attempt(rec: &mut MessageRecord, now_ms: i64) -> Option<u32> {
    if rec.state.left_gateway() || rec.wamid.is_some() {
        return None;
    }
    rec.state = MessageState::Sending;
    rec.attempts += 1;
    rec.send_started_ms = Some(now_ms);
    let n = rec.attempts;
    push(rec, now_ms, "sending", Some(format!("attempt {n}")));
    Some(n)
}

/// Applies a send attempt's conclusion; returns the resulting state, or `None` if the record had
/// already moved on and nothing changed.
pub fn finish_attempt(
    rec: &mut MessageRecord,
    outcome: &AttemptOutcome,
    now_ms: i64,
) -> Option<MessageState> {
    if rec.state.left_gateway() {
        return None;
    }
    match outcome {
        AttemptOutcome::Accepted { wamid } => {
            if rec.wamid.is_none() {
                rec.wamid = Some(wamid.clone());
            }
            rec.state = state_after_accept(rec.early);
            push(rec, now_ms, "accepted", rec.wamid.clone());
            if rec.state != MessageState::Accepted {
                push(
                    rec,
                    now_ms,
                    rec.state.as_str(),
                    Some("status received while sending".into()),
                );
            }
        }
        AttemptOutcome::Ended { state, error } => {
            rec.state = *state;
            if error.is_some() {
                rec.error = error.clone();
            }
            let detail = error.as_ref().map(|e| format!("({}) {}", e.code, e.detail));
            push(rec, now_ms, state.as_str(), detail);
        }
        AttemptOutcome::Retry { error } => {
            rec.state = MessageState::Queued;
            rec.error = Some(error.clone());
            push(
                rec,
                now_ms,
                "retry",
                Some(format!("({}) {}", error.code, error.detail)),
            );
        }
        AttemptOutcome::Unknown { error } => {
            rec.error = Some(error.clone());
            push(
                rec,
                now_ms,
                "outcome-unknown",
                Some(format!(
                    "({}) {}: waiting for a status",
                    error.code, error.detail
                )),
            );
        }
    }
    Some(rec.state)
}

/// Applies a status item. Returns the decision taken.
pub fn apply_status(rec: &mut MessageRecord, update: &StatusUpdate) -> StatusDecision {
    let decision = decide_status(rec.state, rec.early, update.state);
    match decision {
        StatusDecision::Advance(state) => {
            rec.state = state;
            if state == MessageState::Failed {
                rec.error = update.error.clone();
            }
            if rec.wamid.is_none() {
                rec.wamid = Some(update.wamid.clone());
            }
            let detail = update
                .error
                .as_ref()
                .map(|e| format!("({}) {}", e.code, e.detail));
            push(rec, update.at_ms, state.as_str(), detail);
        }
        StatusDecision::KeepEarly(state) => {
            rec.early = Some(state);
            if rec.wamid.is_none() {
                rec.wamid = Some(update.wamid.clone());
            }
            if state == MessageState::Failed {
                rec.error = update.error.clone();
            }
            push(
                rec,
                update.at_ms,
                format!("early-{}", update.state.as_str()),
                None,
            );
        }
        StatusDecision::Ignore => {}
    }
    decision
}
