//! A broadcast as stored: what to send, to whom (a directory filter or an explicit list), and
//! how far it got.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{PhoneNumberId, TenantId, E164};
use crate::patients::PatientFilter;

/// Where a body parameter's value comes from, per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamSource {
    /// A directory field: `name`, `first_name`, `external_id`, `language`.
    Field { field: String },
    /// The same text for everyone.
    Value { value: String },
}

/// A recipient of an explicit list, with its own parameters (overriding `parameters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedRecipient {
    pub phone: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub parameters: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Filter(PatientFilter),
    List(Vec<ListedRecipient>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastStatus {
    /// Waiting for its start time.
    Scheduled,
    /// Recipients are being queued.
    Queuing,
    /// Everything is queued; the dispatcher paces it out.
    Queued,
    Cancelled,
    /// Stopped by the gateway (e.g. the wallet ran dry); `stop_reason` says why.
    Stopped,
}

/// Why a patient of the audience was not sent the broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No consent for this purpose (promotional for marketing templates, care otherwise).
    NoConsent,
    /// Sent STOP.
    OptedOut,
    /// Meta said earlier the number is not on WhatsApp (131026).
    NotOnWhatsapp,
    /// Listed twice (the same phone already gets this broadcast).
    Duplicate,
    InvalidPhone,
    /// A parameter the template needs has no value for this patient.
    MissingParameter,
    /// The wallet could not pay for it.
    InsufficientBalance,
    /// The broadcast was cancelled or stopped before it was queued.
    NotQueued,
}

/// One resolved recipient, ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub phone: E164,
    pub language: String,
    pub parameters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    pub id: String,
    pub tenant: TenantId,
    #[serde(default)]
    pub name: String,
    pub template: String,
    /// The template's language when the patient's own is not available.
    pub language: String,
    pub parameters: Vec<ParamSource>,
    pub audience: Audience,
    pub number: PhoneNumberId,
    pub status: BroadcastStatus,
    #[serde(default)]
    pub stop_reason: Option<String>,
    pub scheduled_ms: i64,
    /// Not sent after this (a vaccination drive on Saturday is pointless on Sunday).
    pub deadline_ms: i64,
    /// Resolved recipients (set when the broadcast starts), stored in chunks of `CHUNK`.
    #[serde(default)]
    pub recipients: Option<u64>,
    #[serde(default)]
    pub chunks: u32,
    /// Chunks already queued.
    #[serde(default)]
    pub queued_chunks: u32,
    #[serde(default)]
    pub queued: u64,
    #[serde(default)]
    pub skipped: BTreeMap<SkipReason, u64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Recipients per stored chunk (and per scheduler run).
pub const CHUNK: usize = 1_000;
