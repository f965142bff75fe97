//! HL7 v2 over MLLP: how a clinic's EMR is recognised and where write-backs go.

use serde::{Deserialize, Serialize};

/// A clinic's HL7 v2 link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hl7Link {
    /// MSH-3 sending application that identifies this clinic.
    pub sending_application: String,
    /// MSH-4 sending facility that identifies this clinic.
    #[serde(default)]
    pub sending_facility: String,
}
