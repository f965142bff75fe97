//! EMR integration: HL7 v2 over MLLP and FHIR R4 feed the same clinical workflows as the REST
//! API (`crate::clinical::Clinical`), and patients' decisions are written back through each
//! clinic's link ([`crate::clinical::EmrLink`]).

pub mod fhir;
pub mod hl7;

use serde::{Deserialize, Serialize};

/// A clinic's EMR connections (either, both or none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmrSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hl7: Option<hl7::Hl7Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir: Option<fhir::FhirLink>,
}
