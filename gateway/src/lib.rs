//! Clinic Gateway: clinic events in, WhatsApp messages out.

pub mod domain;
pub mod store;
