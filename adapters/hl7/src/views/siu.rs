//! SIU^S12/S13/S14/S15/S26 (all share the SIU_S12 structure): an appointment.

use chrono::Duration;
use chrono_tz::Tz;

use crate::message::{Message, Segment};
use crate::timestamp::Timestamp;
use crate::views::{
    expect_type, occurrences, text, timestamp_at, Coded, Header, Location, Patient, Practitioner,
    ViewError,
};

/// The scheduling event in MSH-9.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiuEvent {
    /// S12: booked.
    Booked,
    /// S13: rescheduled.
    Rescheduled,
    /// S14: modified.
    Modified,
    /// S15: cancelled.
    Cancelled,
    /// S26: patient did not show up.
    NoShow,
    /// Any other trigger (S17 deletion, …), as received.
    Other(String),
}

impl SiuEvent {
    fn from_trigger(trigger: &str) -> Self {
        match trigger.to_ascii_uppercase().as_str() {
            "S12" => Self::Booked,
            "S13" => Self::Rescheduled,
            "S14" => Self::Modified,
            "S15" => Self::Cancelled,
            "S26" => Self::NoShow,
            other => Self::Other(other.to_string()),
        }
    }
}

/// An appointment as described by a SIU message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appointment {
    /// MSH.
    pub header: Header,
    /// MSH-9.2.
    pub event: SiuEvent,
    /// SCH-1.1 placer appointment id.
    pub placer_id: Option<String>,
    /// SCH-2.1 filler appointment id (usually the EMR's).
    pub filler_id: Option<String>,
    /// SCH-6 event reason.
    pub event_reason: Option<Coded>,
    /// SCH-7 appointment reason.
    pub reason: Option<Coded>,
    /// SCH-8 appointment type.
    pub appointment_type: Option<Coded>,
    /// TQ1-7, else SCH-11.4, else AIS-4 / AIG-8 / AIL-6 / AIP-6.
    pub start: Option<Timestamp>,
    /// TQ1-8, else SCH-11.5, else start + duration.
    pub end: Option<Timestamp>,
    /// TQ1-6, else SCH-9/10, else AIS-7/8 (minutes when no unit is given).
    pub duration: Option<Duration>,
    /// SCH-25 filler status (Booked, Cancelled, …).
    pub status: Option<Coded>,
    /// AIP-3 of the first AIP that names someone.
    pub doctor: Option<Practitioner>,
    /// AIL-3 of the first AIL that names a place.
    pub location: Option<Location>,
    /// PID, when present.
    pub patient: Option<Patient>,
}

impl Appointment {
    /// Reads a SIU message; timestamps without an offset are read in `zone`.
    pub fn from_message(msg: &Message, zone: Tz) -> Result<Self, ViewError> {
        let header = Header::from_message(msg)?;
        expect_type(&header, "SIU")?;
        let sch = msg
            .segment("SCH")
            .ok_or(ViewError::MissingSegment { segment: "SCH" })?;
        let event = SiuEvent::from_trigger(header.trigger_event.as_deref().unwrap_or_default());
        let duration = duration(msg, sch);
        let start = start(msg, sch, zone)?;
        let end = match end(msg, sch, zone)? {
            Some(end) => Some(end),
            None => start.zip(duration).and_then(|(s, d)| {
                Some(Timestamp {
                    utc: s.utc.checked_add_signed(d)?,
                    ..s
                })
            }),
        };
        let doctor = msg
            .segments("AIP")
            .find_map(|aip| Practitioner::from_field(aip.field(3)));
        let location = msg
            .segments("AIL")
            .find_map(|ail| Location::from_field(ail.field(3)));
        Ok(Self {
            event,
            placer_id: text(sch.value(1)),
            filler_id: text(sch.value(2)),
            event_reason: Coded::from_field(sch.field(6)),
            reason: Coded::from_field(sch.field(7)),
            appointment_type: Coded::from_field(sch.field(8)),
            start,
            end,
            duration,
            status: Coded::from_field(sch.field(25)),
            doctor,
            location,
            patient: Patient::from_message(msg),
            header,
        })
    }

    /// The appointment's id: filler id (SCH-2), else placer id (SCH-1). Key it with MSH-4.
    pub fn id(&self) -> Option<&str> {
        self.filler_id.as_deref().or(self.placer_id.as_deref())
    }
}

/// First non-empty timestamp among the candidates, in order.
fn first_timestamp(
    msg: &Message,
    candidates: &[(&'static str, usize, usize)],
    zone: Tz,
) -> Result<Option<Timestamp>, ViewError> {
    for &(id, field, component) in candidates {
        for (seq, seg) in occurrences(msg, id) {
            if let Some(ts) = timestamp_at(seg, seq, field, component, zone)? {
                return Ok(Some(ts));
            }
        }
    }
    Ok(None)
}

fn start(msg: &Message, sch: &Segment, zone: Tz) -> Result<Option<Timestamp>, ViewError> {
    if let Some(ts) = first_timestamp(msg, &[("TQ1", 7, 1)], zone)? {
        return Ok(Some(ts));
    }
    if let Some(ts) = timestamp_at(sch, 1, 11, 4, zone)? {
        return Ok(Some(ts));
    }
    first_timestamp(
        msg,
        &[("AIS", 4, 1), ("AIG", 8, 1), ("AIL", 6, 1), ("AIP", 6, 1)],
        zone,
    )
}

fn end(msg: &Message, sch: &Segment, zone: Tz) -> Result<Option<Timestamp>, ViewError> {
    if let Some(ts) = first_timestamp(msg, &[("TQ1", 8, 1)], zone)? {
        return Ok(Some(ts));
    }
    timestamp_at(sch, 1, 11, 5, zone)
}

fn duration(msg: &Message, sch: &Segment) -> Option<Duration> {
    let tq1 = msg.segment("TQ1").and_then(|tq1| {
        let cq = tq1.field(6)?;
        to_duration(cq.component_value(1), cq.component_value(2))
    });
    tq1.or_else(|| to_duration(sch.value(9), sch.value(10)))
        .or_else(|| {
            msg.segments("AIS")
                .find_map(|ais| to_duration(ais.value(7), ais.value(8)))
        })
}

/// A quantity and a unit code (ISO+/ANSI/UCUM spellings) as a duration.
fn to_duration(quantity: &str, unit: &str) -> Option<Duration> {
    let q: f64 = quantity.trim().parse().ok()?;
    // Bounded so a hostile value cannot overflow: a year is plenty for one appointment.
    if !q.is_finite() || q <= 0.0 || q > 366.0 * 24.0 * 60.0 {
        return None;
    }
    let seconds_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    };
    let secs = (q * seconds_per_unit).round();
    if secs > 366.0 * 86400.0 {
        return None;
    }
    // In range by the check above, so the cast cannot truncate.
    Duration::try_seconds(secs as i64)
}
