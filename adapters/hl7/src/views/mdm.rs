//! MDM^T02/T10: a clinical document (prescription, discharge letter) in OBX ED.

use chrono_tz::Tz;

use crate::message::Message;
use crate::timestamp::Timestamp;
use crate::views::document::extract;
use crate::views::{
    expect_type, occurrences, text, timestamp_at, Document, DocumentError, ExternalReference,
    Header, Patient, ViewError,
};

/// The document event in MSH-9.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdmEvent {
    /// T02: original document notification and content.
    Original,
    /// T10: document replacement notification and content.
    Replacement,
    /// Any other trigger, as received.
    Other(String),
}

/// A document notification (MDM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MedicalDocument {
    /// MSH.
    pub header: Header,
    /// MSH-9.2.
    pub event: MdmEvent,
    /// PID, when present.
    pub patient: Option<Patient>,
    /// TXA-2 document type (e.g. `DS` discharge summary, `RX`).
    pub document_type: Option<String>,
    /// TXA-4 activity time.
    pub activity_at: Option<Timestamp>,
    /// TXA-12.1 unique document number.
    pub document_number: Option<String>,
    /// TXA-17 completion status (AU authenticated, DO documented, …).
    pub completion_status: Option<String>,
    /// ED observations, decoded or with the reason they could not be.
    pub documents: Vec<Result<Document, DocumentError>>,
    /// RP observations.
    pub references: Vec<ExternalReference>,
}

impl MedicalDocument {
    /// Reads an MDM message; timestamps without an offset are read in `zone`.
    pub fn from_message(msg: &Message, zone: Tz) -> Result<Self, ViewError> {
        let header = Header::from_message(msg)?;
        expect_type(&header, "MDM")?;
        let txa = msg
            .segment("TXA")
            .ok_or(ViewError::MissingSegment { segment: "TXA" })?;
        let event = match header
            .trigger_event
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("T02") => MdmEvent::Original,
            Some("T10") => MdmEvent::Replacement,
            other => MdmEvent::Other(other.unwrap_or_default().to_string()),
        };
        let found = extract(occurrences(msg, "OBX"));
        Ok(Self {
            event,
            patient: Patient::from_message(msg),
            document_type: text(txa.value(2)),
            activity_at: timestamp_at(txa, 1, 4, 1, zone)?,
            document_number: text(txa.value(12)),
            completion_status: text(txa.value(17)),
            documents: found.documents,
            references: found.references,
            header,
        })
    }

    /// Decoded PDFs.
    pub fn pdfs(&self) -> impl Iterator<Item = &Document> {
        self.documents
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .filter(|d| d.is_pdf())
    }
}
