//! HL7 v2 for the clinic gateway: parse, encode and escape messages, read SIU/ORU/MDM/ADT through
//! typed views, build ACKs, and frame messages with MLLP.
//!
//! This crate knows HL7 and nothing about clinics: the gateway maps the views into its own
//! domain.
//!
//! ```
//! use hl7_v2::{parse, views::Appointment};
//!
//! let raw = "MSH|^~\\&|EMR|CLINIC|GW|GW|20240315103000||SIU^S12|42|P|2.5.1\r\
//!            SCH||A100|||||^Checkup|FOLLOWUP||||^^^202403151100\r";
//! let msg = parse(raw.as_bytes())?;
//! assert_eq!(msg.get("MSH-9.2")?, Some("S12"));
//! let appt = Appointment::from_message(&msg, chrono_tz::Asia::Kolkata)?;
//! assert_eq!(appt.id(), Some("A100"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod ack;
mod charset;
mod delimiters;
mod encode;
mod error;
mod escape;
mod message;
pub mod mllp;
mod parse;
mod path;
mod timestamp;
pub mod views;

pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::{ParseError, PathError};
pub use escape::{escape, unescape};
pub use message::{Component, Field, Message, Repetition, Segment};
pub use parse::{parse, parse_str};
pub use path::Path;
pub use timestamp::{format_timestamp, parse_timestamp, Precision, Timestamp, TimestampError};
