//! A simulator of Meta's Cloud API for many business numbers at once (feature `sandbox`).
//!
//! It answers the Graph routes the gateway uses with Meta's rules (validation, throughput, pair
//! rate, templates, the 24 h window), emits signed status and inbound webhooks with retries, and
//! exposes a `/_sim/…` control API (and the same controls in process through [`SandboxState`]).

mod config;
mod ids;
mod multipart;
mod pricing;
mod routes_control;
mod routes_graph;
mod rules;
mod sample_pdf;
mod send;
mod server;
mod state;
mod webhooks;

pub use crate::wire::{TemplateCategory, TemplateStatus};
pub use config::{Faults, SandboxConfig};
pub use routes_control::SentView;
pub use rules::{http_status_for, PAIR_BURST, PAIR_EMISSION, SERVICE_WINDOW};
pub use sample_pdf::sample_pdf;
pub use server::{Sandbox, SandboxHandle};
pub use state::{RejectedRecord, SandboxState, SentRecord};
