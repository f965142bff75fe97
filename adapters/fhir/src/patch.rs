//! JSON Patch (RFC 6902) documents for writing back to the EMR.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::codes::AppointmentStatus;

/// Media type of a JSON Patch body.
pub const JSON_PATCH_CONTENT_TYPE: &str = "application/json-patch+json";

/// Code system of Appointment.cancelationReason (R4 `appointment-cancellation-reason`).
pub const CANCELLATION_REASON_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    /// `add`
    Add {
        /// JSON Pointer.
        path: String,
        /// Value.
        value: Value,
    },
    /// `remove`
    Remove {
        /// JSON Pointer.
        path: String,
    },
    /// `replace`
    Replace {
        /// JSON Pointer.
        path: String,
        /// Value.
        value: Value,
    },
    /// `test`
    Test {
        /// JSON Pointer.
        path: String,
        /// Expected value.
        value: Value,
    },
}

/// A JSON Patch document (serialises as the JSON array of operations).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonPatch(pub Vec<PatchOp>);

/// Escape one reference token of a JSON Pointer (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl JsonPatch {
    /// Empty document.
    pub fn new() -> Self {
        JsonPatch(Vec::new())
    }

    /// Append `test`.
    pub fn test(mut self, path: impl Into<String>, value: Value) -> Self {
        self.0.push(PatchOp::Test {
            path: path.into(),
            value,
        });
        self
    }

    /// Append `replace`.
    pub fn replace(mut self, path: impl Into<String>, value: Value) -> Self {
        self.0.push(PatchOp::Replace {
            path: path.into(),
            value,
        });
        self
    }

    /// Append `add`.
    pub fn add(mut self, path: impl Into<String>, value: Value) -> Self {
        self.0.push(PatchOp::Add {
            path: path.into(),
            value,
        });
        self
    }

    /// Append `remove`.
    pub fn remove(mut self, path: impl Into<String>) -> Self {
        self.0.push(PatchOp::Remove { path: path.into() });
        self
    }

    /// Change Appointment.status, guarded by `test` of the current status when given.
    pub fn appointment_status(expected: Option<AppointmentStatus>, new: AppointmentStatus) -> Self {
        let p = JsonPatch::new();
        let p = match expected {
            Some(e) => p.test("/status", json!(e.as_str())),
            None => p,
        };
        p.replace("/status", json!(new.as_str()))
    }

    /// Cancel an appointment on the patient's request: `test` status = `expected`, `replace`
    /// status = cancelled, `add` cancelationReason with code `pat` (Patient).
    pub fn cancel_appointment_by_patient(
        expected: AppointmentStatus,
        reason_text: Option<&str>,
    ) -> Self {
        let mut reason = json!({
            "coding": [{
                "system": CANCELLATION_REASON_SYSTEM,
                "code": "pat",
                "display": "Patient"
            }]
        });
        if let (Some(t), Value::Object(m)) = (reason_text, &mut reason) {
            m.insert("text".into(), Value::String(t.to_owned()));
        }
        JsonPatch::appointment_status(Some(expected), AppointmentStatus::Cancelled)
            .add("/cancelationReason", reason)
    }

    /// The body bytes (send with [`JSON_PATCH_CONTENT_TYPE`]).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising Values and Strings into a Vec cannot fail.
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    /// Media type of the body.
    pub fn content_type(&self) -> &'static str {
        JSON_PATCH_CONTENT_TYPE
    }
}
