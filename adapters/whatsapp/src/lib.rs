//! WhatsApp Business Cloud API, both sides of the wire.
//!
//! This crate knows Meta's protocol and nothing about clinics, wallets or Redis:
//! - [`wire`]: serde types for send requests, responses, errors, media, templates and webhooks;
//! - [`validate`]: the request rules Meta applies before accepting a send (shared by the gateway's
//!   API edge and the sandbox, so both reject the same things);
//! - [`errors`]: Meta error code → what a sender should do about it;
//! - [`signature`]: `X-Hub-Signature-256` signing and constant-time verification;
//! - [`client`]: the Graph API client (one pooled HTTP client, a bearer token per call);
//! - `sandbox` (feature `sandbox`): a simulator that behaves like the Cloud API for tests and demos.

pub mod client;
pub mod errors;
pub mod signature;
pub mod validate;
pub mod wire;

#[cfg(feature = "sandbox")]
pub mod sandbox;

pub use client::{ClientConfig, ClientError, GraphClient};
pub use errors::{classify, ErrorClass};
