//! Write-back to the clinic's FHIR server when a patient answers on WhatsApp (a scheduler job
//! per change, retried with backoff by the clinical layer):
//!
//! * confirmed → the Patient participant's status becomes `accepted` (the appointment stays
//!   `booked`; guarded by `test` of both);
//! * cancelled → `status = cancelled` with `cancelationReason` `pat` (Patient), guarded by a
//!   `test` of the status read just before;
//! * reschedule requested → a line in `Appointment.comment` ("Patient asked to reschedule via
//!   WhatsApp on …"): the appointment stays booked (the patient has not given up the slot yet)
//!   and the note is where front-desk staff look at the appointment in every EMR. The clinic's
//!   callback `appointment.reschedule_requested` carries the same news to systems that listen.
//!
//! Each is a `PATCH [base]/Appointment/<id>` (JSON Patch with `test` ops) with `If-Match` of the
//! version just read; when the server does not do PATCH (405, 415, 501) the same operations are
//! applied to the resource as read and it is `PUT` back with `If-Match`. A version conflict (409,
//! 412, or a `test` that no longer holds) re-reads and tries again; 5xx and timeouts are
//! `Retry`; other 4xx are `Rejected` (the clinic gets `writeback.failed`). With
//! `record_communications`, a `Communication` (sender: the patient; about: the appointment)
//! records the reply after the appointment is updated.
//!
//! Only appointments the clinic's FHIR server booked (external id `Appointment/<id>`) are
//! written back; others are a no-op for this link.

use async_trait::async_trait;
use chrono::TimeZone;
use fhir_r4::{
    weak_etag, AppointmentStatus as FhirStatus, ClientError, JsonPatch, PatchOp, Resource,
};
use serde_json::{json, Value};

use super::ingest::is_fhir_id;
use super::remote::{Remote, RemoteError};
use crate::clinical::{EmrLink, WriteBackError};
use crate::clock::now_ms;
use crate::domain::appointment::Appointment;
use crate::tenants::ClinicSettings;
use crate::workflows::PatientChange;

/// Reads and retries after version conflicts before leaving it to the job's backoff.
const CONFLICT_ATTEMPTS: usize = 3;
/// The words that mark the gateway's reschedule note (and make it idempotent).
const RESCHEDULE_NOTE: &str = "Patient asked to reschedule via WhatsApp";
/// Identifier system of the Communication records.
pub const COMMUNICATION_SYSTEM: &str = "urn:clinic-gateway:patient-reply";
/// Longest `Appointment.comment` the gateway writes.
const MAX_COMMENT: usize = 2_000;

/// The FHIR write-back link.
#[derive(Debug, Default, Clone, Copy)]
pub struct FhirWriteBack;

/// The JSON Pointer of an array item's member.
fn pointer(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| format!("/{}", fhir_r4::patch::pointer_token(p)))
        .collect()
}

/// Index of the Patient participant (a `Patient/…` reference, a `type` of Patient, or a
/// contained Patient).
fn patient_participant(current: &Value) -> Option<usize> {
    let contained_patients: Vec<String> = current
        .get("contained")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
                .filter_map(|r| r.get("id").and_then(Value::as_str))
                .map(|id| format!("#{id}"))
                .collect()
        })
        .unwrap_or_default();
    current
        .get("participant")?
        .as_array()?
        .iter()
        .position(|p| {
            let actor = p.get("actor");
            let reference = actor
                .and_then(|a| a.get("reference"))
                .and_then(Value::as_str)
                .unwrap_or("");
            actor.and_then(|a| a.get("type")).and_then(Value::as_str) == Some("Patient")
                || fhir_r4::Reference::to(reference).target_type() == Some("Patient")
                || contained_patients.iter().any(|c| c == reference)
        })
}

/// The operations that record `change` on the Appointment as read (`None`: already recorded or
/// nothing to record). Pure.
pub fn plan_patch(
    current: &Value,
    change: PatientChange,
    clinic: &ClinicSettings,
    now_ms: i64,
) -> Result<Option<JsonPatch>, WriteBackError> {
    let id = current.get("id").and_then(Value::as_str).unwrap_or("?");
    let status_text = current.get("status").and_then(Value::as_str).unwrap_or("");
    let status = FhirStatus::from_code(status_text).ok_or_else(|| {
        WriteBackError::Rejected(format!(
            "Appointment/{id} on the EMR has status `{status_text}`, which is not an appointment status"
        ))
    })?;
    let gone = matches!(status, FhirStatus::Cancelled | FhirStatus::EnteredInError);
    match change {
        PatientChange::Confirmed => {
            if gone {
                return Err(WriteBackError::Rejected(format!(
                    "the patient confirmed, but Appointment/{id} is {status} on the EMR"
                )));
            }
            if status != FhirStatus::Booked {
                return Ok(None);
            }
            let i = patient_participant(current).ok_or_else(|| {
                WriteBackError::Rejected(format!(
                    "Appointment/{id} has no Patient participant to mark accepted"
                ))
            })?;
            let index = i.to_string();
            let participant_status = current
                .pointer(&pointer(&["participant", &index, "status"]))
                .cloned()
                .unwrap_or(Value::Null);
            if participant_status == json!("accepted") {
                return Ok(None);
            }
            Ok(Some(
                JsonPatch::new()
                    .test("/status", json!("booked"))
                    .test(pointer(&["participant", &index, "status"]), participant_status)
                    .replace(pointer(&["participant", &index, "status"]), json!("accepted")),
            ))
        }
        PatientChange::Cancelled => match status {
            FhirStatus::Cancelled | FhirStatus::EnteredInError => Ok(None),
            FhirStatus::Arrived
            | FhirStatus::CheckedIn
            | FhirStatus::Fulfilled
            | FhirStatus::Noshow => Err(WriteBackError::Rejected(format!(
                "the patient cancelled, but Appointment/{id} is already {status} on the EMR; not cancelling"
            ))),
            s => Ok(Some(JsonPatch::cancel_appointment_by_patient(
                s,
                Some("Cancelled by the patient on WhatsApp"),
            ))),
        },
        PatientChange::RescheduleRequested => {
            if gone
                || matches!(
                    status,
                    FhirStatus::Fulfilled | FhirStatus::Noshow | FhirStatus::Arrived
                )
            {
                return Ok(None);
            }
            let old = current.get("comment").and_then(Value::as_str);
            if old.is_some_and(|c| c.contains(RESCHEDULE_NOTE)) {
                return Ok(None);
            }
            let tz: chrono_tz::Tz = clinic.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC);
            let when = tz
                .timestamp_millis_opt(now_ms)
                .single()
                .map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string())
                .unwrap_or_default();
            let note = format!("{RESCHEDULE_NOTE} on {when}; please call them to find a new time.");
            let patch = JsonPatch::new().test("/status", json!(status.as_str()));
            Ok(Some(match old {
                Some(o) => {
                    let mut text = format!("{o}\n{note}");
                    if text.chars().count() > MAX_COMMENT {
                        text = note;
                    }
                    patch
                        .test("/comment", json!(o))
                        .replace("/comment", json!(text))
                }
                None => patch.add("/comment", json!(note)),
            }))
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Applies a JSON Patch to a document (for the GET-modify-PUT fallback). A `test` that fails is
/// `Err("conflict: …")`.
pub fn apply_patch(doc: &mut Value, patch: &JsonPatch) -> Result<(), String> {
    fn parent<'v>(doc: &'v mut Value, path: &str) -> Result<(&'v mut Value, String), String> {
        let (head, last) = path
            .rsplit_once('/')
            .ok_or_else(|| format!("`{path}` is not a JSON Pointer"))?;
        let target = if head.is_empty() {
            Some(doc)
        } else {
            doc.pointer_mut(head)
        };
        target
            .map(|t| (t, unescape(last)))
            .ok_or_else(|| format!("`{head}` does not exist"))
    }
    for op in &patch.0 {
        match op {
            PatchOp::Test { path, value } => {
                if doc.pointer(path) != Some(value) {
                    return Err(format!("conflict: `{path}` is no longer {value}"));
                }
            }
            PatchOp::Add { path, value } | PatchOp::Replace { path, value } => {
                let replace = matches!(op, PatchOp::Replace { .. });
                let (target, key) = parent(doc, path)?;
                match target {
                    Value::Object(m) => {
                        if replace && !m.contains_key(&key) {
                            return Err(format!("`{path}` does not exist"));
                        }
                        m.insert(key, value.clone());
                    }
                    Value::Array(a) => {
                        if key == "-" && !replace {
                            a.push(value.clone());
                        } else {
                            let i: usize = key
                                .parse()
                                .map_err(|_| format!("`{path}`: `{key}` is not an index"))?;
                            if replace {
                                *a.get_mut(i)
                                    .ok_or_else(|| format!("`{path}` does not exist"))? =
                                    value.clone();
                            } else if i <= a.len() {
                                a.insert(i, value.clone());
                            } else {
                                return Err(format!("`{path}` is past the end"));
                            }
                        }
                    }
                    _ => return Err(format!("`{path}`: the parent is not a container")),
                }
            }
            PatchOp::Remove { path } => {
                let (target, key) = parent(doc, path)?;
                let removed = match target {
                    Value::Object(m) => m.remove(&key).is_some(),
                    Value::Array(a) => match key.parse::<usize>() {
                        Ok(i) if i < a.len() => {
                            a.remove(i);
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                };
                if !removed {
                    return Err(format!("`{path}` does not exist"));
                }
            }
        }
    }
    Ok(())
}

fn remote_error(e: RemoteError, id: &str) -> WriteBackError {
    if e.is_transient() {
        WriteBackError::Retry(e.to_string())
    } else if matches!(e.status(), Some(404 | 410)) {
        WriteBackError::Rejected(format!(
            "Appointment/{id} is not on the clinic's FHIR server: {e}"
        ))
    } else {
        WriteBackError::Rejected(e.to_string())
    }
}

/// What a write (PATCH/PUT/POST) came to.
enum Wrote {
    Done,
    Conflict(String),
    PatchUnsupported,
}

fn classify(r: Result<fhir_r4::Versioned<Resource>, ClientError>) -> Result<Wrote, WriteBackError> {
    match r {
        // A 2xx whose body is empty or not a resource is still a success.
        Ok(_) | Err(ClientError::EmptyBody { .. }) | Err(ClientError::Parse { .. }) => {
            Ok(Wrote::Done)
        }
        Err(e @ ClientError::VersionConflict { .. }) => Ok(Wrote::Conflict(e.to_string())),
        Err(ClientError::Status {
            status: 405 | 415 | 501,
            ..
        }) => Ok(Wrote::PatchUnsupported),
        Err(e @ ClientError::Status { status, .. }) if status >= 500 || status == 429 => {
            Err(WriteBackError::Retry(e.to_string()))
        }
        Err(e @ ClientError::Transport { .. }) => Err(WriteBackError::Retry(e.to_string())),
        Err(e) => Err(WriteBackError::Rejected(e.to_string())),
    }
}

/// The Communication that records the patient's reply.
pub fn communication(
    appointment_id: &str,
    patient: Option<&Value>,
    a: &Appointment,
    change: PatientChange,
    now_ms: i64,
) -> Value {
    let text = match change {
        PatientChange::Confirmed => "The patient confirmed the appointment on WhatsApp.",
        PatientChange::Cancelled => "The patient cancelled the appointment on WhatsApp.",
        PatientChange::RescheduleRequested => {
            "The patient asked on WhatsApp to reschedule the appointment."
        }
    };
    let change_code = serde_json::to_value(change)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut v = json!({
        "resourceType": "Communication",
        "identifier": [{"system": COMMUNICATION_SYSTEM, "value": format!("{}:{change_code}:{}", a.id, a.version)}],
        "status": "completed",
        "category": [{"text": "Appointment reply"}],
        "medium": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "WRITTEN", "display": "written"}], "text": "WhatsApp"}],
        "about": [{"reference": format!("Appointment/{appointment_id}")}],
        "received": chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "payload": [{"contentString": text}]
    });
    if let (Some(p), Some(o)) = (patient.filter(|p| !p.is_null()), v.as_object_mut()) {
        o.insert("subject".into(), p.clone());
        o.insert("sender".into(), p.clone());
    }
    v
}

impl FhirWriteBack {
    async fn update_appointment(
        &self,
        remote: &Remote,
        clinic: &ClinicSettings,
        id: &str,
        change: PatientChange,
    ) -> Result<Option<Value>, WriteBackError> {
        let mut last_conflict = String::new();
        for _ in 0..CONFLICT_ATTEMPTS {
            let current = remote
                .read_raw("Appointment", id)
                .await
                .map_err(|e| remote_error(e, id))?;
            let patient = patient_participant(&current.value).and_then(|i| {
                current
                    .value
                    .pointer(&format!("/participant/{i}/actor"))
                    .cloned()
            });
            let Some(patch) = plan_patch(&current.value, change, clinic, now_ms())? else {
                return Ok(patient);
            };
            let if_match = current.etag.clone().or_else(|| {
                current
                    .value
                    .pointer("/meta/versionId")
                    .and_then(Value::as_str)
                    .map(weak_etag)
            });
            let patched = remote
                .client()
                .patch("Appointment", id, &patch, if_match.as_deref())
                .await;
            let wrote = match classify(patched)? {
                Wrote::PatchUnsupported => {
                    // GET-modify-PUT with the same operations on what was read.
                    let mut doc = current.value.clone();
                    match apply_patch(&mut doc, &patch) {
                        Ok(()) => {
                            let put = remote
                                .client()
                                .update(&Resource::Other(doc), if_match.as_deref())
                                .await;
                            match classify(put)? {
                                Wrote::PatchUnsupported => {
                                    return Err(WriteBackError::Rejected(format!(
                                        "the clinic's FHIR server takes neither PATCH nor PUT of Appointment/{id}"
                                    )))
                                }
                                other => other,
                            }
                        }
                        Err(e) if e.starts_with("conflict") => Wrote::Conflict(e),
                        Err(e) => return Err(WriteBackError::Rejected(e)),
                    }
                }
                other => other,
            };
            match wrote {
                Wrote::Done => return Ok(patient),
                Wrote::Conflict(why) => {
                    tracing::info!(tenant = %clinic.id, appointment = id, reason = %why, "FHIR write-back version conflict; re-reading");
                    last_conflict = why;
                }
                Wrote::PatchUnsupported => {}
            }
        }
        Err(WriteBackError::Retry(format!(
            "Appointment/{id} kept changing under the write-back: {last_conflict}"
        )))
    }
}

#[async_trait]
impl EmrLink for FhirWriteBack {
    fn name(&self) -> &'static str {
        "fhir"
    }

    fn wants(&self, clinic: &ClinicSettings) -> bool {
        clinic
            .emr
            .fhir
            .as_ref()
            .is_some_and(|l| l.write_back && !l.base_url.trim().is_empty())
    }

    async fn write_back(
        &self,
        clinic: &ClinicSettings,
        appointment: &Appointment,
        change: PatientChange,
    ) -> Result<(), WriteBackError> {
        let Some(id) = appointment
            .external_id
            .as_deref()
            .and_then(|e| e.strip_prefix("Appointment/"))
            .filter(|id| is_fhir_id(id))
        else {
            // Not booked through FHIR: nothing on the FHIR server to update.
            return Ok(());
        };
        let remote = Remote::for_clinic(clinic)
            .map_err(WriteBackError::Rejected)?
            .ok_or_else(|| {
                WriteBackError::Rejected("the clinic has no emr.fhir.base_url".into())
            })?;
        let patient = self.update_appointment(&remote, clinic, id, change).await?;
        if remote.link().record_communications {
            let c = communication(id, patient.as_ref(), appointment, change, now_ms());
            match classify(remote.client().create(&Resource::Other(c)).await)? {
                Wrote::Done => {}
                Wrote::Conflict(e) => return Err(WriteBackError::Retry(e)),
                Wrote::PatchUnsupported => {
                    return Err(WriteBackError::Rejected(format!(
                        "Appointment/{id} was updated, but the clinic's FHIR server does not take Communication records"
                    )))
                }
            }
        }
        tracing::info!(tenant = %clinic.id, appointment = %appointment.id, change = ?change, "written back to the FHIR server");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clinic() -> ClinicSettings {
        serde_json::from_value(json!({
            "id": "clinic_t", "display_name": "Sunrise", "waba_id": "1", "portfolio_id": "1",
            "app_secret": "s", "access_token": "t", "numbers": [], "time_zone": "Asia/Kolkata",
            "default_country_code": "91", "default_language": "en", "low_balance_threshold": 0
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn appointment(status: &str) -> Value {
        json!({"resourceType": "Appointment", "id": "a1", "meta": {"versionId": "3"}, "status": status,
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
        "participant": [
            {"actor": {"reference": "Practitioner/d"}, "status": "accepted"},
            {"actor": {"reference": "Patient/p"}, "status": "needs-action"}
        ]})
    }

    fn ops(p: &JsonPatch) -> Value {
        serde_json::to_value(p).unwrap_or_default()
    }

    #[test]
    fn confirm_marks_the_patient_accepted() {
        let a = appointment("booked");
        let p = plan_patch(&a, PatientChange::Confirmed, &clinic(), 0)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("nothing"));
        assert_eq!(
            ops(&p),
            json!([
                {"op": "test", "path": "/status", "value": "booked"},
                {"op": "test", "path": "/participant/1/status", "value": "needs-action"},
                {"op": "replace", "path": "/participant/1/status", "value": "accepted"}
            ])
        );
        let mut done = a.clone();
        apply_patch(&mut done, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done["participant"][1]["status"], "accepted");
        assert_eq!(
            done["text"], a["text"],
            "PUT keeps what the gateway does not model"
        );
        // Again: nothing to write.
        assert!(plan_patch(&done, PatientChange::Confirmed, &clinic(), 0)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(matches!(
            plan_patch(
                &appointment("cancelled"),
                PatientChange::Confirmed,
                &clinic(),
                0
            ),
            Err(WriteBackError::Rejected(_))
        ));
    }

    #[test]
    fn cancel_tests_the_status_and_gives_the_reason() {
        let a = appointment("booked");
        let p = plan_patch(&a, PatientChange::Cancelled, &clinic(), 0)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("nothing"));
        let v = ops(&p);
        assert_eq!(
            v[0],
            json!({"op": "test", "path": "/status", "value": "booked"})
        );
        assert_eq!(
            v[1],
            json!({"op": "replace", "path": "/status", "value": "cancelled"})
        );
        assert_eq!(v[2]["path"], "/cancelationReason");
        assert_eq!(v[2]["value"]["coding"][0]["code"], "pat");
        let mut done = a;
        apply_patch(&mut done, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done["status"], "cancelled");
        assert!(plan_patch(&done, PatientChange::Cancelled, &clinic(), 0)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        assert!(plan_patch(
            &appointment("fulfilled"),
            PatientChange::Cancelled,
            &clinic(),
            0
        )
        .is_err());
    }

    #[test]
    fn reschedule_requests_become_a_note_once() {
        let mut a = appointment("booked");
        a["comment"] = json!("Bring reports");
        let p = plan_patch(
            &a,
            PatientChange::RescheduleRequested,
            &clinic(),
            1_767_594_600_000,
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("nothing"));
        apply_patch(&mut a, &p).unwrap_or_else(|e| panic!("{e}"));
        let c = a["comment"].as_str().unwrap_or_default();
        assert!(
            c.starts_with(
                "Bring reports\nPatient asked to reschedule via WhatsApp on 2026-01-05 12:00 IST"
            ),
            "{c}"
        );
        assert_eq!(a["status"], "booked");
        assert!(
            plan_patch(&a, PatientChange::RescheduleRequested, &clinic(), 0)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
    }

    #[test]
    fn failed_tests_are_conflicts() {
        let mut a = appointment("cancelled");
        let p = JsonPatch::new()
            .test("/status", json!("booked"))
            .replace("/status", json!("cancelled"));
        let e = apply_patch(&mut a, &p).err().unwrap_or_default();
        assert!(e.starts_with("conflict"), "{e}");
        let p = JsonPatch::new().add("/participant/-", json!({"status": "accepted"}));
        apply_patch(&mut a, &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a["participant"].as_array().map(Vec::len), Some(3));
        let p = JsonPatch::new().remove("/text");
        apply_patch(&mut a, &p).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.get("text").is_none());
        assert!(apply_patch(&mut a, &JsonPatch::new().replace("/nope", json!(1))).is_err());
    }

    #[test]
    fn answers_are_classified() {
        let status = |status: u16| {
            classify(Err(ClientError::Status {
                method: "PATCH".into(),
                url: "u".into(),
                status,
                outcome: None,
            }))
        };
        assert!(matches!(status(405), Ok(Wrote::PatchUnsupported)));
        assert!(matches!(status(415), Ok(Wrote::PatchUnsupported)));
        assert!(matches!(status(501), Ok(Wrote::PatchUnsupported)));
        assert!(matches!(status(503), Err(WriteBackError::Retry(_))));
        assert!(matches!(status(429), Err(WriteBackError::Retry(_))));
        assert!(matches!(status(404), Err(WriteBackError::Rejected(_))));
        assert!(matches!(status(422), Err(WriteBackError::Rejected(_))));
        let conflict = classify(Err(ClientError::VersionConflict {
            method: "PATCH".into(),
            url: "u".into(),
            status: 412,
            outcome: None,
        }));
        assert!(matches!(conflict, Ok(Wrote::Conflict(_))));
        let empty = classify(Err(ClientError::EmptyBody {
            method: "PATCH".into(),
            url: "u".into(),
            status: 204,
        }));
        assert!(matches!(empty, Ok(Wrote::Done)));
    }

    #[test]
    fn communications_name_the_patient_and_the_appointment() {
        let a: Appointment = serde_json::from_value(json!({
            "id": "apt_01J00000000000000000000000", "tenant": "clinic_t", "patient": {"phone": "+919876543210"},
            "start_ms": 0, "status": "cancelled", "version": 2, "created_ms": 0, "updated_ms": 0
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = communication(
            "a1",
            Some(&json!({"reference": "Patient/p"})),
            &a,
            PatientChange::Cancelled,
            0,
        );
        assert_eq!(c["about"][0]["reference"], "Appointment/a1");
        assert_eq!(c["sender"]["reference"], "Patient/p");
        assert_eq!(
            c["identifier"][0]["value"],
            "apt_01J00000000000000000000000:cancelled:2"
        );
        assert!(fhir_r4::Resource::from_value(c).is_ok());
    }
}
