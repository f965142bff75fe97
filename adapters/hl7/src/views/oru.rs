//! ORU^R01: lab results, the report usually a PDF in OBX.

use chrono_tz::Tz;

use crate::message::Message;
use crate::timestamp::Timestamp;
use crate::views::document::extract;
use crate::views::{
    expect_type, text, timestamp_at, Coded, Document, DocumentError, ExternalReference, Header,
    Patient, ViewError,
};

/// OBR-25 result status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultStatus {
    /// F: final; dispatch the report.
    Final,
    /// C: corrected; resend as corrected.
    Corrected,
    /// P: preliminary; nothing to send.
    Preliminary,
    /// Anything else, as received (R, S, X, I, …).
    Other(String),
}

impl ResultStatus {
    fn from_code(code: &str) -> Self {
        match code.trim().to_ascii_uppercase().as_str() {
            "F" => Self::Final,
            "C" => Self::Corrected,
            "P" => Self::Preliminary,
            other => Self::Other(other.to_string()),
        }
    }
}

/// One OBR and the OBX segments that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Order {
    /// OBR-2.1.
    pub placer_order: Option<String>,
    /// OBR-3.1.
    pub filler_order: Option<String>,
    /// OBR-4 universal service id (the test).
    pub service: Option<Coded>,
    /// OBR-7 observation time.
    pub observed_at: Option<Timestamp>,
    /// OBR-22 results reported/status changed.
    pub reported_at: Option<Timestamp>,
    /// OBR-25.
    pub result_status: Option<ResultStatus>,
    /// ED observations, each decoded or with the reason it could not be.
    pub documents: Vec<Result<Document, DocumentError>>,
    /// RP observations.
    pub references: Vec<ExternalReference>,
}

impl Order {
    /// Decoded PDFs of this order.
    pub fn pdfs(&self) -> impl Iterator<Item = &Document> {
        self.documents
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .filter(|d| d.is_pdf())
    }
}

/// A lab report (ORU^R01).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabReport {
    /// MSH.
    pub header: Header,
    /// PID, when present.
    pub patient: Option<Patient>,
    /// OBR groups in order. OBX before any OBR land in an order with no OBR fields.
    pub orders: Vec<Order>,
}

impl LabReport {
    /// Reads an ORU message; timestamps without an offset are read in `zone`.
    pub fn from_message(msg: &Message, zone: Tz) -> Result<Self, ViewError> {
        let header = Header::from_message(msg)?;
        expect_type(&header, "ORU")?;
        let mut orders: Vec<Order> = Vec::new();
        let mut obx_of_order: Vec<Vec<(usize, &crate::Segment)>> = Vec::new();
        let (mut obr_seq, mut obx_seq) = (0, 0);
        for seg in msg.all_segments() {
            match seg.id() {
                "OBR" => {
                    obr_seq += 1;
                    orders.push(Order {
                        placer_order: text(seg.value(2)),
                        filler_order: text(seg.value(3)),
                        service: Coded::from_field(seg.field(4)),
                        observed_at: timestamp_at(seg, obr_seq, 7, 1, zone)?,
                        reported_at: timestamp_at(seg, obr_seq, 22, 1, zone)?,
                        result_status: text(seg.value(25)).map(|s| ResultStatus::from_code(&s)),
                        ..Order::default()
                    });
                    obx_of_order.push(Vec::new());
                }
                "OBX" => {
                    obx_seq += 1;
                    if orders.is_empty() {
                        orders.push(Order::default());
                        obx_of_order.push(Vec::new());
                    }
                    if let Some(list) = obx_of_order.last_mut() {
                        list.push((obx_seq, seg));
                    }
                }
                _ => {}
            }
        }
        for (order, obx) in orders.iter_mut().zip(obx_of_order) {
            let found = extract(obx);
            order.documents = found.documents;
            order.references = found.references;
        }
        Ok(Self {
            header,
            patient: Patient::from_message(msg),
            orders,
        })
    }

    /// Every decoded PDF in the message.
    pub fn pdfs(&self) -> impl Iterator<Item = &Document> {
        self.orders.iter().flat_map(Order::pdfs)
    }

    /// The first order's OBR-25 (most reports have one order).
    pub fn result_status(&self) -> Option<&ResultStatus> {
        self.orders.iter().find_map(|o| o.result_status.as_ref())
    }
}
