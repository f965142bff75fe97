//! EMR patients → the clinic's patient directory.
//!
//! - [`registration`]: ADT^A04 (registration) and A08 (update) → [`Action::UpsertPatient`], from
//!   PID: PID-3 first identifier as the external id, PID-5 name, PID-7 birth date, PID-8 sex, the
//!   mobile of PID-13 (else of PID-14, else PID-13's best number), PID-15 language as a Meta code.
//! - [`lenient_record`]: the directory's own input checks ([`PatientInput::into_record`]), with
//!   optional fields an EMR got wrong dropped instead of refusing the patient. Shared with FHIR.
//! - [`upsert_from_emr`] and [`record_visit`]: the writes, over what the directory has (tags,
//!   condition codes and consent are the clinic's and the patient's, never the EMR's). Shared
//!   with FHIR; the only functions of the mapping that do I/O.

use chrono_tz::Tz;
use hl7_v2::ack::ErrorCode;
use hl7_v2::views::{AdtMessage, Patient as Pid, PersonName};
use hl7_v2::{Message, Segment};

use super::{at, language, phone_from, view_refusal, Action, Refusal};
use crate::domain::{TenantId, E164};
use crate::patients::input::{self, FieldError, InputContext, PatientInput, MAX_NAME};
use crate::patients::{PatientDirectory, PatientRecord};
use crate::store::StoreError;
use crate::tenants::ClinicSettings;

/// The consent source recorded for what HL7 states (it never states consent today).
pub const HL7_SOURCE: &str = "hl7";

/// Fields an EMR may get wrong without the patient being refused: dropped, with the reason.
const OPTIONAL_FIELDS: [&str; 5] = ["name", "language", "birth_date", "sex", "last_visit"];

/// [`PatientInput::into_record`], dropping a bad name, language, birth date, sex or last visit
/// (each noted) instead of refusing; a bad id or phone is still an error.
pub fn lenient_record(
    mut input: PatientInput,
    ctx: &InputContext,
) -> Result<(PatientRecord, Vec<FieldError>), FieldError> {
    let mut dropped = Vec::new();
    // One more round than there are optional fields: each round drops at most one.
    for _ in 0..=OPTIONAL_FIELDS.len() {
        match input.clone().into_record(None, ctx) {
            Ok(r) => return Ok((r, dropped)),
            Err(e) => {
                match e.field.as_str() {
                    "name" => input.name = None,
                    "language" => input.language = None,
                    "birth_date" => input.birth_date = None,
                    "sex" => input.sex = None,
                    "last_visit" => input.last_visit = None,
                    _ => return Err(e),
                }
                dropped.push(e);
            }
        }
    }
    Err(FieldError::new("patient", "could not be read"))
}

/// What [`upsert_from_emr`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A new patient.
    Created(PatientRecord),
    /// A known patient, changed.
    Updated(PatientRecord),
    /// A known patient that already read this way: nothing written.
    Unchanged(PatientRecord),
}

impl Stored {
    pub fn record(&self) -> &PatientRecord {
        match self {
            Stored::Created(r) | Stored::Updated(r) | Stored::Unchanged(r) => r,
        }
    }
}

/// `incoming` over `stored`: the EMR's phone, and its name, language, birth date and sex when it
/// sent them; the stored tags, condition codes and consent; the later last visit.
pub fn merge(mut incoming: PatientRecord, stored: &PatientRecord) -> PatientRecord {
    if incoming.name.trim().is_empty() {
        incoming.name = stored.name.clone();
    }
    incoming.language = incoming.language.or_else(|| stored.language.clone());
    incoming.birth_date = incoming.birth_date.or(stored.birth_date);
    incoming.sex = incoming.sex.or(stored.sex);
    incoming.tags = stored.tags.clone();
    incoming.conditions = stored.conditions.clone();
    incoming.last_visit_ms = match (incoming.last_visit_ms, stored.last_visit_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    incoming.consent = stored.consent.clone();
    incoming.updated_ms = stored.updated_ms;
    incoming.normalise();
    incoming
}

/// Creates or updates the patient an EMR registered ([`merge`]d over the stored record). A
/// record that would not change is not written, so a re-sent registration changes nothing.
pub async fn upsert_from_emr(
    directory: &PatientDirectory,
    tenant: &TenantId,
    mut incoming: PatientRecord,
) -> Result<Stored, StoreError> {
    incoming.normalise();
    match directory.get(tenant, &incoming.external_id).await? {
        Some(stored) => {
            let merged = merge(incoming, &stored);
            if merged == stored {
                return Ok(Stored::Unchanged(stored));
            }
            Ok(Stored::Updated(directory.put(tenant, merged).await?.record))
        }
        None => {
            let done = directory.put(tenant, incoming).await?;
            Ok(if done.created {
                Stored::Created(done.record)
            } else {
                Stored::Updated(done.record)
            })
        }
    }
}

/// Moves a known patient's last visit forward to `at_ms`. `false` when the patient is unknown or
/// already has that visit or a later one.
pub async fn record_visit(
    directory: &PatientDirectory,
    tenant: &TenantId,
    external_id: &str,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let Some(mut p) = directory.get(tenant, external_id).await? else {
        return Ok(false);
    };
    if p.last_visit_ms.is_some_and(|v| v >= at_ms) {
        return Ok(false);
    }
    p.last_visit_ms = Some(at_ms);
    directory.put(tenant, p).await?;
    Ok(true)
}

/// PID-3's first identifier, checked as a directory id. `Ok(None)` when PID-3 is empty.
pub(super) fn first_identifier(pid: &Pid) -> Result<Option<String>, Refusal> {
    let Some(first) = pid.identifiers.first() else {
        return Ok(None);
    };
    input::external_id(first.id.trim()).map(Some).map_err(|e| {
        Refusal::unprocessable(
            ErrorCode::DataTypeError,
            Some(at("PID", 3, Some(1))),
            format!("PID-3.1 patient id: {}", e.detail),
        )
    })
}

/// PID-13's mobile, else PID-14's mobile, else PID-13's best number, else any PID-13 number:
/// the first that is a valid number in the clinic's numbering.
fn phone(
    pid_segment: Option<&Segment>,
    pid: &Pid,
    clinic: &ClinicSettings,
) -> Result<E164, Refusal> {
    // PID-14 (business phones) read with the PID-13 view by moving the field over.
    let business = pid_segment.and_then(|s| {
        let mut moved = s.clone();
        moved.set_field(13, s.field(14)?.clone());
        Some(Pid::from_segment(&moved))
    });
    let candidates = pid
        .mobile()
        .into_iter()
        .chain(business.as_ref().and_then(Pid::mobile))
        .chain(pid.best_phone())
        .chain(pid.phones.iter())
        .filter_map(|p| p.number.as_deref());
    phone_from(candidates, clinic)
}

fn name(n: &PersonName) -> String {
    let short = [&n.given, &n.middle, &n.family]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let name = if short.trim().is_empty() {
        n.display()
    } else {
        short
    };
    name.trim().chars().take(MAX_NAME).collect()
}

/// PID-7 (`YYYYMMDD[HHMM…]`) → `YYYY-MM-DD`; partial dates are left out.
fn birth_date(raw: &str) -> Option<String> {
    let d = raw.trim().get(..8)?;
    d.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]))
}

/// PID-8 (table 0001) → the directory's sex: F, M, O, U; A (ambiguous) is other, N (not
/// applicable) unknown; anything else is left out.
fn sex(raw: &str) -> Option<String> {
    let s = match raw.trim().to_ascii_uppercase().as_str() {
        "F" => "female",
        "M" => "male",
        "O" | "A" => "other",
        "U" | "N" => "unknown",
        _ => return None,
    };
    Some(s.to_owned())
}

/// ADT^A04 / A08 → the patient to upsert into the clinic's directory.
pub(super) fn registration(
    msg: &Message,
    clinic: &ClinicSettings,
    tz: Tz,
    now_ms: i64,
) -> Result<Action, Refusal> {
    let adt = AdtMessage::from_message(msg, tz).map_err(view_refusal)?;
    let Some(pid) = adt.patient.as_ref() else {
        return Err(Refusal::reject(
            ErrorCode::SegmentSequenceError,
            None,
            "required segment PID is missing",
        ));
    };
    let Some(external_id) = first_identifier(pid)? else {
        return Err(Refusal::unprocessable(
            ErrorCode::RequiredFieldMissing,
            Some(at("PID", 3, None)),
            "PID-3: the patient has no identifier to keep them by",
        ));
    };
    let phone = phone(msg.segment("PID"), pid, clinic)?;
    let input = PatientInput {
        external_id: Some(external_id),
        phone: phone.as_str().to_owned(),
        name: pid.name.as_ref().map(name),
        language: pid.language.as_ref().and_then(language),
        birth_date: pid.birth_date.as_deref().and_then(birth_date),
        sex: pid.sex.as_deref().and_then(sex),
        ..PatientInput::default()
    };
    let ctx = InputContext {
        default_country_code: clinic.default_country_code.clone(),
        time_zone: tz,
        now_ms,
        source: HL7_SOURCE.to_owned(),
    };
    let (record, dropped) = lenient_record(input, &ctx).map_err(|e| {
        let location = match e.field.as_str() {
            "phone" => at("PID", 13, None),
            _ => at("PID", 3, None),
        };
        Refusal::unprocessable(ErrorCode::DataTypeError, Some(location), e.to_string())
    })?;
    for e in dropped {
        tracing::debug!(tenant = %clinic.id, field = %e.field, problem = %e.detail, "HL7 patient field left out");
    }
    Ok(Action::UpsertPatient(Box::new(record)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patients::{ConsentState, Sex};

    fn record(id: &str) -> PatientRecord {
        PatientRecord::new(
            id,
            E164::parse("+919800000001").unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn dates_and_sexes_map_or_are_left_out() {
        assert_eq!(birth_date("19880412").as_deref(), Some("1988-04-12"));
        assert_eq!(
            birth_date("198804121030+0530").as_deref(),
            Some("1988-04-12")
        );
        assert_eq!(birth_date("1988"), None);
        assert_eq!(birth_date("1988-04-12"), None);
        assert_eq!(sex("f").as_deref(), Some("female"));
        assert_eq!(sex("A").as_deref(), Some("other"));
        assert_eq!(sex("N").as_deref(), Some("unknown"));
        assert_eq!(sex("X"), None);
    }

    #[test]
    fn merging_keeps_what_the_emr_does_not_speak_for() {
        let mut stored = record("P1");
        stored.name = "Priya".into();
        stored.language = Some("hi".into());
        stored.tags = vec!["diabetic".into()];
        stored.conditions = vec!["E11.9".into()];
        stored.last_visit_ms = Some(2_000);
        stored.consent.promotional = ConsentState::new(true, 500, "api");
        stored.updated_ms = 9;
        let mut incoming = record("P1");
        incoming.name = "Priya Sharma".into();
        incoming.sex = Some(Sex::Female);
        incoming.last_visit_ms = Some(1_000);
        let m = merge(incoming, &stored);
        assert_eq!(m.name, "Priya Sharma");
        assert_eq!(m.language.as_deref(), Some("hi"), "not sent: kept");
        assert_eq!(m.sex, Some(Sex::Female));
        assert_eq!(m.tags, vec!["diabetic"]);
        assert_eq!(m.conditions, vec!["E11.9"]);
        assert_eq!(m.last_visit_ms, Some(2_000), "the later visit wins");
        assert!(m.consent.promotional.granted, "consent is not the EMR's");
        // The same again changes nothing.
        assert_eq!(merge(m.clone(), &m), m);
    }

    #[test]
    fn bad_optional_fields_are_dropped_and_noted() {
        let ctx = InputContext {
            default_country_code: "91".into(),
            time_zone: chrono_tz::Asia::Kolkata,
            now_ms: 1_772_323_200_000,
            source: HL7_SOURCE.into(),
        };
        let (r, dropped) = lenient_record(
            PatientInput {
                external_id: Some("P1".into()),
                phone: "9876543210".into(),
                birth_date: Some("2999-01-01".into()),
                language: Some("klingon!".into()),
                ..PatientInput::default()
            },
            &ctx,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.birth_date, r.language), (None, None));
        assert_eq!(dropped.len(), 2);
        assert!(lenient_record(
            PatientInput {
                external_id: Some("P1".into()),
                phone: "12".into(),
                ..PatientInput::default()
            },
            &ctx
        )
        .is_err());
    }
}
