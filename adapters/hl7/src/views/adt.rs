//! ADT^A03/A04/A08: discharge, registration and patient updates.

use chrono_tz::Tz;

use crate::message::{Message, Segment};
use crate::timestamp::Timestamp;
use crate::views::{
    expect_type, text, timestamp_at, Coded, Header, Location, Patient, Practitioner, ViewError,
};

/// The ADT event in MSH-9.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdtEvent {
    /// A03: visit ended / discharge.
    Discharge,
    /// A04: registration.
    Registration,
    /// A08: patient information update.
    Update,
    /// Any other trigger, as received.
    Other(String),
}

/// PV1: the visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// PV1-2 patient class (O outpatient, I inpatient, E emergency).
    pub patient_class: Option<String>,
    /// PV1-3 assigned location.
    pub location: Option<Location>,
    /// PV1-7 attending doctor.
    pub attending: Option<Practitioner>,
    /// PV1-10 hospital service.
    pub hospital_service: Option<String>,
    /// PV1-19.1 visit number.
    pub visit_number: Option<String>,
    /// PV1-44 admit time.
    pub admitted_at: Option<Timestamp>,
    /// PV1-45 discharge time (visit end).
    pub discharged_at: Option<Timestamp>,
}

impl Visit {
    fn from_segment(pv1: &Segment, zone: Tz) -> Result<Self, ViewError> {
        Ok(Self {
            patient_class: text(pv1.value(2)),
            location: Location::from_field(pv1.field(3)),
            attending: Practitioner::from_field(pv1.field(7)),
            hospital_service: text(pv1.value(10)),
            visit_number: text(pv1.value(19)),
            admitted_at: timestamp_at(pv1, 1, 44, 1, zone)?,
            discharged_at: timestamp_at(pv1, 1, 45, 1, zone)?,
        })
    }
}

/// An ADT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdtMessage {
    /// MSH.
    pub header: Header,
    /// MSH-9.2.
    pub event: AdtEvent,
    /// EVN-4 event reason.
    pub event_reason: Option<Coded>,
    /// PID, when present.
    pub patient: Option<Patient>,
    /// PV1, when present.
    pub visit: Option<Visit>,
}

impl AdtMessage {
    /// Reads an ADT message; timestamps without an offset are read in `zone`.
    pub fn from_message(msg: &Message, zone: Tz) -> Result<Self, ViewError> {
        let header = Header::from_message(msg)?;
        expect_type(&header, "ADT")?;
        let event = match header
            .trigger_event
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("A03") => AdtEvent::Discharge,
            Some("A04") => AdtEvent::Registration,
            Some("A08") => AdtEvent::Update,
            other => AdtEvent::Other(other.unwrap_or_default().to_string()),
        };
        let visit = msg
            .segment("PV1")
            .map(|pv1| Visit::from_segment(pv1, zone))
            .transpose()?;
        Ok(Self {
            event,
            event_reason: msg
                .segment("EVN")
                .and_then(|evn| Coded::from_field(evn.field(4))),
            patient: Patient::from_message(msg),
            visit,
            header,
        })
    }
}
