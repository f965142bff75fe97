//! FHIR R4 adapter for the gateway: serde models for the subset the gateway reads and writes,
//! topic-based subscription notifications (R5, R4 backport, R4B), JSON Patch write-back, ABDM
//! document Bundles and a small REST client.
//!
//! The crate knows FHIR and nothing about clinics, wallets or Redis.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod codes;

pub mod abdm;
pub mod bundle;
pub mod client;
pub mod datatypes;
pub mod error;
pub mod notification;
pub mod outcome;
pub mod patch;
pub mod primitives;
pub mod resource;
pub mod resources;

pub use abdm::{AbdmDocument, AbdmError, AbdmRecordType};
pub use bundle::{Bundle, BundleEntry, BundleLink, BundleRequest, BundleResponse};
pub use client::{
    version_from_etag, weak_etag, ClientConfig, ClientError, FhirClient, Versioned, FHIR_JSON,
};
pub use codes::*;
pub use datatypes::{
    Address, Attachment, CodeableConcept, Coding, ContactPoint, Extension, HumanName, Identifier,
    Meta, Pdf, PdfSource, Period, Quantity, Reference,
};
pub use error::FhirError;
pub use notification::{
    parse_notification, Gap, Notification, NotificationEvent, NotificationKind, NotificationStyle,
};
pub use outcome::{CapabilityStatement, OperationOutcome, OperationOutcomeIssue};
pub use patch::{JsonPatch, PatchOp, JSON_PATCH_CONTENT_TYPE};
pub use primitives::{Counter, Date, DateTime, DateTimeValue, Instant};
pub use resource::{parse_as, parse_resource, to_json, FhirResource, Resource};
pub use resources::*;
