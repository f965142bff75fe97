//! FHIR R4: the `/fhir/r4` endpoints (resources, transaction/batch and ABDM document Bundles,
//! subscription notifications, `metadata`), their mapping onto the clinical layer, and the
//! write-back of patients' answers to the clinic's FHIR server.
//!
//! | module | does |
//! |---|---|
//! | `http` | handlers: auth (the clinic's API key), bounded bodies, routing by type |
//! | `ingest` | pure mapping of resources to clinical requests (unit-tested) |
//! | `service` | plan (read what is needed) then execute against `crate::clinical::Clinical` |
//! | `transaction` | transaction (all or nothing) and batch Bundles |
//! | `abdm` | India's ABDM document Bundles → prescription / lab report / … |
//! | `notify` | rest-hook pings and topic-based notifications (R4 backport, R4B, R5) |
//! | `remote` | the clinic's FHIR server: reads, searches, attachments (allow-listed) |
//! | `writeback` | [`crate::clinical::EmrLink`] for FHIR (`PATCH` with `test` + `If-Match`) |
//! | `outcome` | OperationOutcome errors |

pub mod abdm;
pub mod http;
pub mod ingest;
pub mod notify;
pub mod outcome;
pub mod remote;
pub mod service;
pub mod transaction;
pub mod writeback;

use actix_web::web;
use serde::{Deserialize, Serialize};

use crate::tenants::model::Secret;

pub use writeback::FhirWriteBack;

/// A clinic's FHIR link. Every field but `base_url` has a default; `base_url` may be empty for
/// a clinic that only pushes resources with their Patients and PDFs inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FhirLink {
    /// The FHIR base URL (e.g. `https://emr.example/fhir`): referenced Patients, focus resources
    /// after a notification, attachments (`Binary/…`) and write-back.
    #[serde(default)]
    pub base_url: String,
    /// Bearer token for the clinic's FHIR server (sent only to URLs under `base_url`).
    #[serde(default, skip_serializing_if = "Secret::is_empty")]
    pub auth_token: Secret,
    /// URL prefixes besides `base_url` that attachments may be fetched from (e.g. a document
    /// store); fetched without the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_allow_list: Vec<String>,
    /// Write patients' confirmations, cancellations and reschedule requests back to the
    /// Appointment (off by default: the gateway writes to an EMR only when asked to).
    #[serde(default)]
    pub write_back: bool,
    /// With write-back, also create a `Communication` for each patient reply.
    #[serde(default)]
    pub record_communications: bool,
}

/// The `/fhir/r4` routes (one `.configure(crate::emr::fhir::routes)` in the route table).
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Every resource answers other methods with an OperationOutcome too (not a bare 405).
    let other = || web::to(http::unsupported);
    cfg.service(
        web::scope("/fhir/r4")
            .service(
                web::resource("/metadata")
                    .route(web::get().to(http::metadata))
                    .default_service(other()),
            )
            .service(
                web::resource(["", "/"])
                    .route(web::post().to(http::base))
                    .default_service(other()),
            )
            .service(
                web::resource("/{type}")
                    .route(web::post().to(http::create))
                    .route(web::put().to(http::update_by_body))
                    .default_service(other()),
            )
            .service(
                web::resource("/{type}/{id}")
                    .route(web::put().to(http::update))
                    .route(web::delete().to(http::delete))
                    .default_service(other()),
            )
            .default_service(other()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_default_everything_but_the_base() {
        let l: FhirLink =
            serde_json::from_value(serde_json::json!({"base_url": "https://emr.example/fhir"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(!l.write_back && !l.record_communications);
        assert!(l.auth_token.is_empty() && l.attachment_allow_list.is_empty());
        let l: FhirLink =
            serde_json::from_value(serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert!(l.base_url.is_empty());
        let shown = format!(
            "{:?}",
            FhirLink {
                auth_token: Secret::new("s3cret"),
                ..l
            }
        );
        assert!(!shown.contains("s3cret"));
    }
}
