//! MSH: who sent the message, what it is, and how to acknowledge it.

use crate::charset::Charset;
use crate::message::Message;
use crate::views::{text, HierarchicDesignator, ViewError};

/// The parts of MSH every consumer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// MSH-3.
    pub sending_application: Option<HierarchicDesignator>,
    /// MSH-4 (with the appointment or document id, the dedupe key).
    pub sending_facility: Option<HierarchicDesignator>,
    /// MSH-5.
    pub receiving_application: Option<HierarchicDesignator>,
    /// MSH-6.
    pub receiving_facility: Option<HierarchicDesignator>,
    /// MSH-7 as written (parse with [`crate::parse_timestamp`] if needed).
    pub message_time: Option<String>,
    /// MSH-9.1, e.g. `SIU` (empty if absent).
    pub message_type: String,
    /// MSH-9.2, e.g. `S12`.
    pub trigger_event: Option<String>,
    /// MSH-9.3, e.g. `SIU_S12`.
    pub structure: Option<String>,
    /// MSH-10.
    pub control_id: Option<String>,
    /// MSH-11.1 (P, T, D).
    pub processing_id: Option<String>,
    /// MSH-12.1, e.g. `2.5.1`.
    pub version: Option<String>,
    /// MSH-15 accept acknowledgment type.
    pub accept_ack_type: Option<String>,
    /// MSH-16 application acknowledgment type.
    pub application_ack_type: Option<String>,
    /// MSH-18.
    pub charset: Charset,
}

impl Header {
    /// Reads MSH, which must be the first segment.
    pub fn from_message(msg: &Message) -> Result<Self, ViewError> {
        let msh = msg
            .header()
            .ok_or(ViewError::MissingSegment { segment: "MSH" })?;
        let msh9 = msh.field(9);
        let comp = |n| msh9.map_or("", |f| f.component_value(n));
        Ok(Self {
            sending_application: HierarchicDesignator::from_field(msh.field(3)),
            sending_facility: HierarchicDesignator::from_field(msh.field(4)),
            receiving_application: HierarchicDesignator::from_field(msh.field(5)),
            receiving_facility: HierarchicDesignator::from_field(msh.field(6)),
            message_time: text(msh.value(7)),
            message_type: text(comp(1)).unwrap_or_default(),
            trigger_event: text(comp(2)),
            structure: text(comp(3)),
            control_id: text(msh.value(10)),
            processing_id: text(msh.value(11)),
            version: text(msh.value(12)),
            accept_ack_type: text(msh.value(15)),
            application_ack_type: text(msh.value(16)),
            charset: msg.charset(),
        })
    }

    /// True for `type^trigger` (case-insensitive).
    pub fn is(&self, message_type: &str, trigger: &str) -> bool {
        self.message_type.eq_ignore_ascii_case(message_type)
            && self
                .trigger_event
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(trigger))
    }
}
