//! The no-show view: each appointment with its reminder outcome and attendance, and
//! `GET /v1/stats/appointments` over a date range.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::domain::appointment::Appointment;
use crate::workflows::outcomes::{outcome, stats, Attendance, Outcome, ReminderOutcome};

/// The outcome of an appointment, from the states of its reminder messages.
pub async fn outcome_of(state: &AppState, a: &Appointment) -> Result<Outcome, Problem> {
    let mut states = Vec::with_capacity(a.reminders.len());
    for r in &a.reminders {
        if let Some(m) = state.store.message(&a.tenant, &r.message).await? {
            states.push(m.state);
        }
    }
    Ok(outcome(a, &states))
}

/// The appointment as the API shows it: its fields plus `outcome`.
pub fn view(a: &Appointment, o: &Outcome) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("outcome".into(), json!(o));
    }
    v
}

/// `?outcome=` names a reminder outcome or an attendance.
#[derive(Debug, Clone, Copy)]
pub enum OutcomeFilter {
    Reminder(ReminderOutcome),
    Attendance(Attendance),
}

impl OutcomeFilter {
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        let v = Value::String(raw.to_owned());
        if let Ok(r) = serde_json::from_value(v.clone()) {
            return Ok(Self::Reminder(r));
        }
        if let Ok(a) = serde_json::from_value(v) {
            return Ok(Self::Attendance(a));
        }
        Err(Problem::invalid_field(
            "outcome",
            "one of not_reminded, pending, undeliverable, confirmed, cancelled, reschedule_requested, ignored, unknown, arrived, attended, no_show",
        ))
    }

    pub fn matches(self, o: &Outcome) -> bool {
        match self {
            Self::Reminder(r) => o.reminder == r,
            Self::Attendance(a) => o.attendance == a,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// At most this many appointments per stats request: a month of a busy clinic.
const STATS_LIMIT: usize = 20_000;

pub async fn appointment_stats(
    req: HttpRequest,
    q: web::Query<StatsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let (from, to) = (q.from.timestamp_millis(), q.to.timestamp_millis());
    if to <= from {
        return Err(Problem::invalid_field("to", "must be after from"));
    }
    let all = state
        .store
        .appointments(&clinic.id, from, to, STATS_LIMIT + 1)
        .await?;
    if all.len() > STATS_LIMIT {
        return Err(Problem::invalid_field(
            "from",
            format!("more than {STATS_LIMIT} appointments in the range; ask for a shorter one"),
        ));
    }
    let mut outcomes = Vec::with_capacity(all.len());
    for a in &all {
        outcomes.push(outcome_of(&state, a).await?);
    }
    Ok(HttpResponse::Ok().json(json!({
        "from": q.from, "to": q.to, "stats": stats(&outcomes)
    })))
}
