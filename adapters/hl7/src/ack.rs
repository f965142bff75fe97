//! ACK messages: MSH (sender and receiver swapped), MSA and ERR.
//!
//! [`AckContext`] holds what an ACK copies from the inbound message, so an AR can still be built
//! when only MSH was readable ([`AckContext::salvage`]) or nothing at all.

use chrono::{DateTime, Utc};

use crate::charset::Charset;
use crate::delimiters::Delimiters;
use crate::message::{Component, Field, Message, Repetition, Segment};
use crate::parse::{parse, parse_field};
use crate::timestamp::format_timestamp;
use crate::views::FieldLocation;

/// The acknowledgment outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA / CA: accepted (send only once the event is durably stored).
    Accept,
    /// AE / CE: accepted but in error.
    Error,
    /// AR / CR: rejected (unparsable, unsupported type or version).
    Reject,
}

/// Original mode (AA/AE/AR) or enhanced mode (CA/CE/CR), chosen from MSH-15/16 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// MSH-15 and MSH-16 empty.
    Original,
    /// MSH-15 or MSH-16 present: a commit acknowledgment.
    Enhanced,
}

impl AckCode {
    /// MSA-1 for this code in `mode`.
    pub fn msa1(self, mode: AckMode) -> &'static str {
        match (mode, self) {
            (AckMode::Original, Self::Accept) => "AA",
            (AckMode::Original, Self::Error) => "AE",
            (AckMode::Original, Self::Reject) => "AR",
            (AckMode::Enhanced, Self::Accept) => "CA",
            (AckMode::Enhanced, Self::Error) => "CE",
            (AckMode::Enhanced, Self::Reject) => "CR",
        }
    }
}

/// HL7 table 0357, message error condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0
    MessageAccepted,
    /// 100
    SegmentSequenceError,
    /// 101
    RequiredFieldMissing,
    /// 102
    DataTypeError,
    /// 103
    TableValueNotFound,
    /// 200
    UnsupportedMessageType,
    /// 201
    UnsupportedEventCode,
    /// 202
    UnsupportedProcessingId,
    /// 203
    UnsupportedVersionId,
    /// 204
    UnknownKeyIdentifier,
    /// 205
    DuplicateKeyIdentifier,
    /// 206
    ApplicationRecordLocked,
    /// 207
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::MessageAccepted => 0,
            Self::SegmentSequenceError => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataTypeError => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEventCode => 201,
            Self::UnsupportedProcessingId => 202,
            Self::UnsupportedVersionId => 203,
            Self::UnknownKeyIdentifier => 204,
            Self::DuplicateKeyIdentifier => 205,
            Self::ApplicationRecordLocked => 206,
            Self::ApplicationInternalError => 207,
        }
    }

    /// The table's description.
    pub fn text(self) -> &'static str {
        match self {
            Self::MessageAccepted => "Message accepted",
            Self::SegmentSequenceError => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataTypeError => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing id",
            Self::UnsupportedVersionId => "Unsupported version id",
            Self::UnknownKeyIdentifier => "Unknown key identifier",
            Self::DuplicateKeyIdentifier => "Duplicate key identifier",
            Self::ApplicationRecordLocked => "Application record locked",
            Self::ApplicationInternalError => "Application internal error",
        }
    }
}

/// ERR-4 severity (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// E
    Error,
    /// W
    Warning,
    /// I
    Information,
}

impl Severity {
    fn code(self) -> &'static str {
        match self {
            Self::Error => "E",
            Self::Warning => "W",
            Self::Information => "I",
        }
    }
}

/// One ERR segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// ERR-2: where the problem is.
    pub location: Option<FieldLocation>,
    /// ERR-3.
    pub code: ErrorCode,
    /// ERR-4.
    pub severity: Severity,
    /// ERR-8: text for the sender's operators. Never put patient data here.
    pub message: Option<String>,
}

impl AckError {
    /// An error-severity entry.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            location: None,
            code,
            severity: Severity::Error,
            message: None,
        }
    }

    /// Sets ERR-2.
    pub fn at(mut self, location: FieldLocation) -> Self {
        self.location = Some(location);
        self
    }

    /// Sets ERR-4.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Sets ERR-8.
    pub fn message(mut self, text: impl Into<String>) -> Self {
        self.message = Some(text.into());
        self
    }
}

/// What an ACK copies from the message it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckContext {
    delimiters: Delimiters,
    charset: Charset,
    /// MSH-3..MSH-6 of the inbound message.
    sending_application: Option<Field>,
    sending_facility: Option<Field>,
    receiving_application: Option<Field>,
    receiving_facility: Option<Field>,
    trigger: Option<String>,
    control_id: Option<String>,
    processing_id: Option<Field>,
    version: Option<Field>,
    enhanced: bool,
}

impl Default for AckContext {
    /// Nothing was readable: default delimiters, version 2.5, processing id P.
    fn default() -> Self {
        Self {
            delimiters: Delimiters::default(),
            charset: Charset::Undeclared,
            sending_application: None,
            sending_facility: None,
            receiving_application: None,
            receiving_facility: None,
            trigger: None,
            control_id: None,
            processing_id: None,
            version: None,
            enhanced: false,
        }
    }
}

impl AckContext {
    /// From a parsed message.
    pub fn from_message(msg: &Message) -> Self {
        match msg.header() {
            Some(msh) => Self::from_header(msh, *msg.delimiters(), msg.charset()),
            None => Self {
                delimiters: *msg.delimiters(),
                ..Self::default()
            },
        }
    }

    /// From raw bytes that may not parse: the whole message if possible, else just the MSH
    /// line (any character set), else defaults.
    pub fn salvage(raw: &[u8]) -> Self {
        if let Ok(msg) = parse(raw) {
            return Self::from_message(&msg);
        }
        salvage_header(raw).unwrap_or_default()
    }

    fn from_header(msh: &Segment, delimiters: Delimiters, charset: Charset) -> Self {
        let field = |n| msh.field(n).filter(|f| !f.is_empty()).cloned();
        let value = |n| {
            let v = msh.value(n).trim();
            (!v.is_empty()).then(|| v.to_string())
        };
        Self {
            delimiters,
            charset,
            sending_application: field(3),
            sending_facility: field(4),
            receiving_application: field(5),
            receiving_facility: field(6),
            trigger: msh
                .field(9)
                .map(|f| f.component_value(2).trim().to_string())
                .filter(|t| !t.is_empty()),
            control_id: value(10),
            processing_id: field(11),
            version: field(12),
            enhanced: value(15).is_some() || value(16).is_some(),
        }
    }

    /// MSH-10 of the inbound message (MSA-2 of the ACK).
    pub fn control_id(&self) -> Option<&str> {
        self.control_id.as_deref()
    }

    /// The mode MSH-15/16 ask for.
    pub fn mode(&self) -> AckMode {
        if self.enhanced {
            AckMode::Enhanced
        } else {
            AckMode::Original
        }
    }

    /// MSH-12.1, e.g. "2.5.1".
    pub fn version(&self) -> Option<&str> {
        self.version
            .as_ref()
            .map(Field::value)
            .filter(|v| !v.is_empty())
    }
}

fn salvage_header(raw: &[u8]) -> Option<AckContext> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace())?;
    let raw = &raw[start..];
    let end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    let line = &raw[..end];
    if !line.starts_with(b"MSH") {
        return None;
    }
    let fs = *line.get(3)?;
    let mut tokens = line.get(4..)?.split(|&b| b == fs);
    let encoding = std::str::from_utf8(tokens.next()?).ok()?;
    let d = Delimiters::new(char::from(fs), encoding).ok()?;
    let mut msh = Segment::header(&d);
    // The character set may be what failed, so read leniently.
    let cs = Charset::Undeclared;
    msh.fields
        .extend(tokens.map(|t| parse_field(&cs.decode(t), &d, cs)));
    Some(AckContext::from_header(&msh, d, cs))
}

/// Builds an ACK for an [`AckContext`].
#[derive(Debug, Clone)]
pub struct AckBuilder {
    context: AckContext,
    code: AckCode,
    mode: AckMode,
    errors: Vec<AckError>,
    text: Option<String>,
}

impl AckBuilder {
    /// An ACK with `code`, in the mode the inbound MSH-15/16 ask for.
    pub fn new(context: AckContext, code: AckCode) -> Self {
        let mode = context.mode();
        Self {
            context,
            code,
            mode,
            errors: Vec::new(),
            text: None,
        }
    }

    /// Overrides the acknowledgment mode.
    pub fn mode(mut self, mode: AckMode) -> Self {
        self.mode = mode;
        self
    }

    /// Adds an ERR segment.
    pub fn error(mut self, error: AckError) -> Self {
        self.errors.push(error);
        self
    }

    /// Sets MSA-3 (text message; deprecated since v2.4 but still read by older engines).
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The ACK message; `control_id` is the ACK's own new MSH-10, `at` its MSH-7.
    pub fn build(self, control_id: &str, at: DateTime<Utc>) -> Message {
        let ctx = &self.context;
        let d = ctx.delimiters;
        let mut msh = Segment::header(&d);
        let copy = |f: &Option<Field>| f.clone().unwrap_or_else(|| Field::new(""));
        msh.set_field(3, copy(&ctx.receiving_application))
            .set_field(4, copy(&ctx.receiving_facility))
            .set_field(5, copy(&ctx.sending_application))
            .set_field(6, copy(&ctx.sending_facility))
            .set(7, format_timestamp(at));
        let msh9 = match &ctx.trigger {
            Some(trigger) => Field::from_components(["ACK", trigger.as_str(), "ACK"]),
            None => Field::from_components(["ACK", "", "ACK"]),
        };
        msh.set_field(9, msh9)
            .set(10, control_id)
            .set_field(
                11,
                ctx.processing_id.clone().unwrap_or_else(|| Field::new("P")),
            )
            .set_field(12, ctx.version.clone().unwrap_or_else(|| Field::new("2.5")));
        if ctx.charset != Charset::Undeclared {
            msh.set(18, ctx.charset.msh18());
        }

        let legacy = is_before_2_5(ctx.version());
        let mut msa = Segment::new("MSA");
        msa.set(1, self.code.msa1(self.mode))
            .set(2, ctx.control_id.clone().unwrap_or_default());
        let text = self.text.clone().or_else(|| {
            // Pre-2.5 receivers have no ERR-8, so surface the first problem in MSA-3.
            let e = self.errors.first().filter(|_| legacy)?;
            Some(
                e.message
                    .clone()
                    .unwrap_or_else(|| e.code.text().to_string()),
            )
        });
        if let Some(text) = text {
            msa.set(3, text);
        }

        let mut segments = vec![msh, msa];
        segments.extend(self.errors.iter().map(|e| err_segment(e, legacy)));
        Message::new(d, ctx.charset, segments)
    }
}

/// ERR for v2.5+ (ERR-2/3/4/8) or, for older versions, the single ERR-1 they define.
fn err_segment(e: &AckError, legacy: bool) -> Segment {
    let mut err = Segment::new("ERR");
    let mut location: Vec<Component> = match &e.location {
        Some(l) => {
            let mut c = vec![
                Component::new(l.segment.clone()),
                Component::new(l.sequence.to_string()),
                Component::new(l.field.to_string()),
            ];
            if let Some(comp) = l.component {
                // ERL: field repetition (4) then component (5).
                c.push(Component::new("1"));
                c.push(Component::new(comp.to_string()));
            }
            c
        }
        None => Vec::new(),
    };
    let code = e.code.code().to_string();
    if legacy {
        // ERR-1 (CM_ELD): segment ^ sequence ^ field ^ code&text&HL70357.
        location.truncate(3);
        location.resize(3, Component::new(""));
        location.push(Component::from_subcomponents([
            code.as_str(),
            e.code.text(),
            "HL70357",
        ]));
        err.set_field(
            1,
            Field::from_repetitions([Repetition::from_components(location)]),
        );
        return err;
    }
    if !location.is_empty() {
        err.set_field(
            2,
            Field::from_repetitions([Repetition::from_components(location)]),
        );
    }
    err.set_field(
        3,
        Field::from_components([code.as_str(), e.code.text(), "HL70357"]),
    )
    .set(4, e.severity.code());
    if let Some(m) = &e.message {
        err.set(8, m.clone());
    }
    err
}

/// True for 2.1–2.4; unknown versions get the modern layout.
fn is_before_2_5(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(Some(2)), Some(Some(minor))) if minor < 5)
}

/// Shorthand: an ACK for a parsed message.
pub fn ack(msg: &Message, code: AckCode, control_id: &str, at: DateTime<Utc>) -> Message {
    AckBuilder::new(AckContext::from_message(msg), code).build(control_id, at)
}

/// An AR for bytes that could not be parsed (or read as the expected type), using whatever of
/// MSH was readable.
pub fn reject(raw: &[u8], error: AckError, control_id: &str, at: DateTime<Utc>) -> Message {
    AckBuilder::new(AckContext::salvage(raw), AckCode::Reject)
        .error(error)
        .build(control_id, at)
}
