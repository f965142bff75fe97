//! FHIR R4: the clinic's FHIR server, for write-back and attachments by URL.

use serde::{Deserialize, Serialize};

/// A clinic's FHIR link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FhirLink {
    /// The FHIR base URL (e.g. `https://emr.example/fhir`).
    pub base_url: String,
}
