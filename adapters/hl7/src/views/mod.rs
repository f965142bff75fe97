//! Typed, owned views of the messages the gateway reacts to. They copy out only the fields named
//! in the interface reference, so callers never index fields by number.

mod adt;
mod datatypes;
mod document;
mod header;
mod mdm;
mod oru;
mod patient;
mod siu;

use std::fmt;

use chrono_tz::Tz;
use thiserror::Error;

use crate::message::{Message, Segment};
use crate::timestamp::{parse_timestamp, Timestamp, TimestampError};

pub use adt::{AdtEvent, AdtMessage, Visit};
pub use datatypes::{Coded, HierarchicDesignator, Location, PersonName, Practitioner};
pub use document::{Document, DocumentError, ExternalReference};
pub use header::Header;
pub use mdm::{MdmEvent, MedicalDocument};
pub use oru::{LabReport, Order, ResultStatus};
pub use patient::{Patient, PatientIdentifier, Phone};
pub use siu::{Appointment, SiuEvent};

/// Where in a message something was found: `SCH^1^11^1^4` in ERR-2 terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLocation {
    /// Segment id.
    pub segment: String,
    /// Occurrence of that segment id in the message (1-based).
    pub sequence: usize,
    /// Field number.
    pub field: usize,
    /// Component number, when the problem is inside one.
    pub component: Option<usize>,
}

impl FieldLocation {
    pub(crate) fn new(
        segment: &str,
        sequence: usize,
        field: usize,
        component: Option<usize>,
    ) -> Self {
        Self {
            segment: segment.to_string(),
            sequence,
            field,
            component,
        }
    }
}

impl fmt::Display for FieldLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.sequence > 1 {
            write!(f, "[{}]", self.sequence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        Ok(())
    }
}

/// Why a typed view could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ViewError {
    /// MSH-9 names another message type.
    #[error("MSH-9 message type {found:?} is not {expected}")]
    WrongMessageType {
        /// The type the view reads.
        expected: &'static str,
        /// MSH-9.1 as received.
        found: String,
    },
    /// A segment the view needs is absent.
    #[error("required segment {segment} is missing")]
    MissingSegment {
        /// Segment id.
        segment: &'static str,
    },
    /// A required field is empty.
    #[error("required field {location} is empty")]
    MissingField {
        /// Where.
        location: FieldLocation,
    },
    /// A timestamp field holds something that is not a timestamp.
    #[error("{location}: {source}")]
    Timestamp {
        /// Where.
        location: FieldLocation,
        /// What is wrong with it.
        #[source]
        source: TimestampError,
    },
}

impl ViewError {
    /// The place to report in ERR-2, when the error has one.
    pub fn location(&self) -> Option<FieldLocation> {
        match self {
            Self::MissingField { location } | Self::Timestamp { location, .. } => {
                Some(location.clone())
            }
            Self::WrongMessageType { .. } => Some(FieldLocation::new("MSH", 1, 9, Some(1))),
            Self::MissingSegment { .. } => None,
        }
    }
}

/// Trimmed text, or `None` for empty values and the HL7 null `""`.
pub(crate) fn text(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty() && t != "\"\"").then(|| t.to_string())
}

/// Iterates over segments with this id, paired with their 1-based occurrence number.
pub(crate) fn occurrences<'a>(
    msg: &'a Message,
    id: &'a str,
) -> impl Iterator<Item = (usize, &'a Segment)> + 'a {
    msg.segments(id).enumerate().map(|(i, s)| (i + 1, s))
}

/// A timestamp in `seg`-`field` (component `component`, first sub-component); `Ok(None)` if empty.
pub(crate) fn timestamp_at(
    seg: &Segment,
    sequence: usize,
    field: usize,
    component: usize,
    zone: Tz,
) -> Result<Option<Timestamp>, ViewError> {
    let raw = seg
        .field(field)
        .map_or("", |f| f.component_value(component));
    let Some(raw) = text(raw) else {
        return Ok(None);
    };
    parse_timestamp(&raw, zone)
        .map(Some)
        .map_err(|source| ViewError::Timestamp {
            location: FieldLocation::new(
                seg.id(),
                sequence,
                field,
                (component > 1).then_some(component),
            ),
            source,
        })
}

/// Checks MSH-9.1 against the type a view reads.
pub(crate) fn expect_type(header: &Header, expected: &'static str) -> Result<(), ViewError> {
    if header.message_type.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ViewError::WrongMessageType {
            expected,
            found: header.message_type.clone(),
        })
    }
}
