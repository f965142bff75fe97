//! Clinic Gateway: clinic events in, WhatsApp messages out.

pub mod admission;
pub mod api;
pub mod app;
pub mod callbacks;
pub mod catalog;
pub mod clinical;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod emr;
pub mod meta;
pub mod metrics;
pub mod outbound;
pub mod pdf;
pub mod pricing;
pub mod retry;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod template_library;
pub mod template_submit;
pub mod tenants;
pub mod testing;
pub mod workflows;
