//! Errors raised while reading the wire format. Each variant names the place that failed so that
//! an ACK's ERR segment (and a log line) can point at it.

use thiserror::Error;

/// A message could not be split into segments and fields.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Nothing but whitespace was received.
    #[error("message is empty")]
    Empty,
    /// The first segment is not a header (MSH, or FHS/BHS for batches), so there are no delimiters.
    #[error("message must start with an MSH header segment, found {found:?}")]
    MissingHeader {
        /// The first few characters that were found instead.
        found: String,
    },
    /// MSH-1/MSH-2 do not define a usable set of delimiters.
    #[error("MSH-2 encoding characters {value:?} are invalid: {reason}")]
    InvalidEncodingCharacters {
        /// MSH-1 followed by MSH-2 as received.
        value: String,
        /// Why the set was refused.
        reason: &'static str,
    },
    /// MSH-18 names a character set this library cannot decode.
    #[error("MSH-18 character set {value:?} is not supported (ASCII, 8859/1, UNICODE UTF-8)")]
    UnsupportedCharset {
        /// MSH-18 as received.
        value: String,
    },
    /// A segment does not start with a three-character upper-case id.
    #[error("segment {index} has an invalid segment id {id:?}")]
    InvalidSegmentId {
        /// 1-based position of the segment in the message.
        index: usize,
        /// The id that was found (truncated).
        id: String,
    },
}

/// A path such as `PID-13[2].1` could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid HL7 path {path:?}: {reason}")]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}
