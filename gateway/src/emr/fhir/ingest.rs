//! FHIR resources → the clinical layer's requests, as pure functions (no I/O): what an
//! Appointment, DiagnosticReport, DocumentReference or Encounter asks the gateway to do, given
//! what the gateway already knows. Reading referenced resources from the clinic's server and
//! running the requests is `service.rs`'s job.
//!
//! Idempotency: every resource is keyed by `ResourceType/id` (its [`external_id`]), and the
//! clinical layer is idempotent by that key (bookings by external id, documents by external id
//! plus content hash, visits by external id), so the same resource sent twice, or a new
//! `versionId` that changes nothing the patient sees, never sends a second message.
//!
//! Patients: a `Patient` resource on its own sends nothing; with a usable mobile it is created or
//! updated in the clinic's patient directory ([`patient_record`]), keyed `Patient/<id>` (else by
//! its first identifier). Where other resources need their patient, it is read where it is:
//! contained in the resource (`#id`), in the same transaction/batch/document Bundle, or from the
//! clinic's FHIR server by reference.

use chrono::TimeZone;
use fhir_r4::{
    Appointment as FhirAppointment, AppointmentStatus as FhirStatus, Bundle, CodeableConcept,
    DiagnosticReport, DiagnosticReportStatus, DocumentReference, DocumentReferenceStatus,
    Encounter, EncounterStatus, Identifier, Pdf, Reference, Resource,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::outcome::Failure;
use crate::clinical::ChangeRequest;
use crate::domain::appointment::{Appointment, AppointmentStatus, Patient};
use crate::domain::records::DocumentKind;
use crate::domain::E164;
use crate::emr::hl7::ingest::patient::lenient_record;
use crate::patients::input::{FieldError, InputContext, PatientInput};
use crate::patients::PatientRecord;
use crate::tenants::ClinicSettings;

/// The consent source recorded for what FHIR states (it never states consent today).
pub const FHIR_SOURCE: &str = "fhir";

/// Resource types the gateway acts on (or, for Patient, accepts).
pub const ACCEPTED_TYPES: [&str; 5] = [
    "Appointment",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Patient",
];

/// Types that ride along in a Bundle as what the others reference: accepted, not acted on.
pub const CONTEXT_TYPES: [&str; 9] = [
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Organization",
    "Binary",
    "Observation",
    "Medication",
    "MedicationRequest",
    "Specimen",
];

/// Longest text passed on as a name, title or doctor.
const MAX_LABEL: usize = 100;
/// Longest external id the clinical layer takes.
const MAX_EXTERNAL_ID: usize = 128;

pub fn is_accepted(resource_type: &str) -> bool {
    ACCEPTED_TYPES.contains(&resource_type)
}

pub fn is_context(resource_type: &str) -> bool {
    CONTEXT_TYPES.contains(&resource_type)
}

/// A FHIR logical id: 1–64 of `[A-Za-z0-9-.]`.
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn bounded(s: &str, max: usize) -> String {
    let t = s.trim();
    match t.char_indices().nth(max) {
        Some((i, _)) => t[..i].trim_end().to_owned(),
        None => t.to_owned(),
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The key the clinical layer dedupes on: `Type/id`; without an id, the first business
/// identifier (`Type?identifier=system|value`, hashed when long); without either, the content
/// hash (the same bytes again are the same resource).
pub fn external_id(
    resource_type: &str,
    id: Option<&str>,
    identifiers: &[Identifier],
    content: &[u8],
) -> String {
    if let Some(id) = id.filter(|i| is_fhir_id(i)) {
        return format!("{resource_type}/{id}");
    }
    if let Some(i) = identifiers
        .iter()
        .find(|i| i.value.as_deref().is_some_and(|v| !v.trim().is_empty()))
    {
        let token = format!(
            "{}|{}",
            i.system.as_deref().unwrap_or(""),
            i.value.as_deref().unwrap_or("").trim()
        );
        let plain = format!("{resource_type}?identifier={token}");
        if plain.len() <= MAX_EXTERNAL_ID {
            return plain;
        }
        return format!(
            "{resource_type}?identifier-sha256={}",
            &hex_sha256(token.as_bytes())[..32]
        );
    }
    format!("{resource_type}?content-sha256={}", hex_sha256(content))
}

/// Resources reachable without I/O: the resource's own `contained` and the Bundle it came in.
#[derive(Debug, Default)]
pub struct Local<'a> {
    pub contained: Vec<Resource>,
    pub bundle: Option<&'a Bundle>,
}

impl<'a> Local<'a> {
    /// Parses `contained` from the raw JSON of the resource (the typed models do not keep it).
    pub fn new(raw: &Value, bundle: Option<&'a Bundle>) -> Result<Self, Failure> {
        let mut contained = Vec::new();
        let rt = raw
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Resource");
        if let Some(items) = raw.get("contained").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                let r = Resource::from_value(item.clone()).map_err(|e| {
                    super::outcome::from_fhir_error(&e).at(&format!("{rt}.contained[{i}]"))
                })?;
                contained.push(r);
            }
        }
        Ok(Self { contained, bundle })
    }

    pub fn resolve(&self, r: &Reference) -> Option<&Resource> {
        let text = r.reference.as_deref()?.trim();
        if let Some(id) = text.strip_prefix('#') {
            return self.contained.iter().find(|c| c.id() == Some(id));
        }
        self.bundle.and_then(|b| b.resolve(r))
    }
}

/// What a reference to a Patient leads to without I/O.
#[derive(Debug)]
pub enum PatientRef<'r> {
    /// Found in `contained` or the Bundle.
    Local(&'r fhir_r4::Patient),
    /// `Type/id` or an absolute URL: read it from the clinic's server.
    Remote { type_: String, id: String },
}

/// The patient a reference names, locally or as something to read; `expression` is where the
/// reference is (`Appointment.participant`).
pub fn patient_ref<'r>(
    reference: Option<&Reference>,
    local: &'r Local<'_>,
    expression: &str,
) -> Result<PatientRef<'r>, Failure> {
    let no_phone = |why: String| {
        Failure::invalid(
            format!("{expression}: no Patient with a mobile phone ({why})"),
            expression,
        )
    };
    let Some(r) = reference else {
        return Err(no_phone("no Patient is referenced".into()));
    };
    let Some(text) = r
        .reference
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        let label = r.display.as_deref().unwrap_or("");
        return Err(no_phone(format!(
            "the reference has only a display `{}` and no Patient resource",
            bounded(label, 60)
        )));
    };
    if let Some(found) = local.resolve(r) {
        return match found {
            Resource::Patient(p) => Ok(PatientRef::Local(p)),
            other => Err(Failure::invalid(
                format!(
                    "{expression}: `{text}` is a {}, not a Patient",
                    other.resource_type()
                ),
                expression,
            )),
        };
    }
    if text.starts_with('#') {
        return Err(Failure::invalid(
            format!("{expression}: contained resource `{text}` is not in the resource"),
            expression,
        ));
    }
    if text.starts_with("urn:") {
        return Err(Failure::invalid(
            format!("{expression}: `{text}` does not resolve inside the Bundle"),
            expression,
        ));
    }
    match r.type_and_id() {
        Some(("Patient", id)) => Ok(PatientRef::Remote {
            type_: "Patient".into(),
            id: id.to_owned(),
        }),
        Some((t, _)) => Err(Failure::invalid(
            format!("{expression}: `{text}` is a {t}, not a Patient"),
            expression,
        )),
        None => Err(no_phone(format!("`{text}` is not a Patient reference"))),
    }
}

/// A Meta language code from a BCP-47 tag: its primary language (`hi-IN` → `hi`).
pub fn meta_language(bcp47: &str) -> Option<String> {
    let primary = bcp47.split(['-', '_']).next()?.trim().to_ascii_lowercase();
    ((2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_lowercase()))
        .then_some(primary)
}

/// The patient to message: the mobile (else any phone) in the clinic's numbering, the display
/// name, the preferred language.
pub fn patient_of(
    p: &fhir_r4::Patient,
    label: &str,
    clinic: &ClinicSettings,
    expression: &str,
) -> Result<Patient, Failure> {
    let mobile = p.mobile().ok_or_else(|| {
        Failure::invalid(
            format!(
                "{expression}: no Patient with a mobile phone ({label} has no telecom with system phone or sms)"
            ),
            expression,
        )
    })?;
    let phone = E164::parse_with_default(mobile, Some(&clinic.default_country_code)).map_err(|e| {
        Failure::invalid(
            format!(
                "{expression}: the mobile phone of {label} is not a number WhatsApp can reach ({e}); send it in E.164 (+<country code><number>)"
            ),
            format!("{expression}.telecom"),
        )
    })?;
    Ok(Patient {
        phone,
        name: p
            .display_name()
            .map(|n| bounded(&n, MAX_LABEL))
            .unwrap_or_default(),
        language: p.preferred_language().and_then(meta_language),
    })
}

/// A Patient as a record of the clinic's patient directory: external id `Patient/<id>` (else its
/// first identifier, as [`external_id`] keys it), the mobile, name and preferred language as
/// [`patient_of`] reads them, `birthDate` (full dates only) and `gender`. Consent is not stated
/// (the stored consent stays). `Err` says why it cannot be stored: no id or identifier, no usable
/// mobile. Fields the directory would refuse (a birth date in the future) are left out and
/// listed.
pub fn patient_record(
    p: &fhir_r4::Patient,
    label: &str,
    clinic: &ClinicSettings,
    now_ms: i64,
) -> Result<(PatientRecord, Vec<FieldError>), String> {
    let keyed = p.id.as_deref().is_some_and(is_fhir_id)
        || p.identifier
            .iter()
            .any(|i| i.value.as_deref().is_some_and(|v| !v.trim().is_empty()));
    if !keyed {
        return Err(format!(
            "{label} has neither an id nor an identifier to keep it by"
        ));
    }
    let id = external_id("Patient", p.id.as_deref(), &p.identifier, &[]);
    let who = patient_of(p, label, clinic, "Patient").map_err(|f| {
        f.outcome
            .issue
            .first()
            .and_then(|i| i.diagnostics.clone())
            .unwrap_or_else(|| format!("{label} has no usable mobile phone"))
    })?;
    let input = PatientInput {
        external_id: Some(id),
        phone: who.phone.as_str().to_owned(),
        name: Some(who.name).filter(|n| !n.trim().is_empty()),
        language: who.language,
        birth_date: p
            .birth_date
            .as_ref()
            .map(|d| d.as_str().trim().to_owned())
            .filter(|d| d.len() == 10),
        sex: p.gender.map(|g| g.as_str().to_owned()),
        ..PatientInput::default()
    };
    let ctx = InputContext {
        default_country_code: clinic.default_country_code.clone(),
        time_zone: clinic.time_zone.parse().unwrap_or(chrono_tz::UTC),
        now_ms,
        source: FHIR_SOURCE.to_owned(),
    };
    lenient_record(input, &ctx).map_err(|e| {
        let field = match e.field.as_str() {
            "phone" => "Patient.telecom",
            "external_id" => "Patient.id",
            other => other,
        };
        format!("{label}: {field}: {}", e.detail)
    })
}

/// A label for a reference: the clinic's own doctor of that id, the display, or the resolved
/// resource's name.
fn practitioner_name(r: &Reference, clinic: &ClinicSettings, local: &Local<'_>) -> Option<String> {
    if let Some((_, id)) = r.type_and_id() {
        if let Some(d) = clinic.doctors.iter().find(|d| d.id == id) {
            return Some(d.name.clone());
        }
    }
    if let Some(d) = r.display.as_deref().filter(|d| !d.trim().is_empty()) {
        return Some(bounded(d, MAX_LABEL));
    }
    match local.resolve(r) {
        Some(Resource::Practitioner(p)) => p
            .name
            .iter()
            .find_map(fhir_r4::HumanName::display)
            .map(|n| bounded(&n, MAX_LABEL)),
        _ => None,
    }
}

/// Participants' actors of one of `types`: by the reference's type, or by what a `#contained`
/// or in-Bundle (`urn:uuid:`) reference resolves to.
fn actors<'r>(
    a: &'r FhirAppointment,
    local: &'r Local<'_>,
    types: &'r [&'r str],
) -> impl Iterator<Item = &'r Reference> + 'r {
    a.participant
        .iter()
        .filter_map(|p| p.actor.as_ref())
        .filter(move |r| {
            r.target_type().is_some_and(|t| types.contains(&t))
                || local
                    .resolve(r)
                    .is_some_and(|x| types.contains(&x.resource_type()))
        })
}

/// The Patient participant.
pub fn patient_participant<'r>(
    a: &'r FhirAppointment,
    local: &'r Local<'_>,
) -> Option<&'r Reference> {
    actors(a, local, &["Patient"]).next()
}

/// The doctor: the first Practitioner participant that has a name.
pub fn doctor_of(
    a: &FhirAppointment,
    clinic: &ClinicSettings,
    local: &Local<'_>,
) -> Option<String> {
    actors(a, local, &["Practitioner", "PractitionerRole"])
        .find_map(|r| practitioner_name(r, clinic, local))
}

/// The clinic location whose name matches the Location participant's display or name.
pub fn location_of(
    a: &FhirAppointment,
    clinic: &ClinicSettings,
    local: &Local<'_>,
) -> Option<usize> {
    let r = actors(a, local, &["Location"]).next()?;
    let name = r.display.clone().or_else(|| match local.resolve(r) {
        Some(Resource::Location(l)) => l.name.clone(),
        _ => None,
    })?;
    clinic
        .locations
        .iter()
        .position(|l| l.name.trim().eq_ignore_ascii_case(name.trim()))
}

/// Start and end in Unix ms (end from `minutesDuration` when absent).
pub fn appointment_times(a: &FhirAppointment) -> (Option<i64>, Option<i64>) {
    let start = a.start.as_ref().map(|s| s.value().timestamp_millis());
    let end = a
        .end
        .as_ref()
        .map(|e| e.value().timestamp_millis())
        .or_else(|| {
            start
                .zip(a.minutes_duration)
                .map(|(s, m)| s + i64::from(m) * 60_000)
        });
    (start, end)
}

/// What an Appointment asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum AppointmentAction {
    /// A new booking (the patient is resolved next).
    Book {
        start_ms: i64,
        end_ms: Option<i64>,
        doctor: Option<String>,
        location: Option<usize>,
    },
    /// A change to an appointment the gateway knows.
    Change {
        start_ms: Option<i64>,
        end_ms: Option<i64>,
        status: Option<AppointmentStatus>,
        doctor: Option<String>,
    },
    /// Nothing to send; says why.
    Nothing(String),
}

impl AppointmentAction {
    pub fn change_request(&self) -> Option<ChangeRequest> {
        match self {
            AppointmentAction::Change {
                start_ms,
                end_ms,
                status,
                doctor,
            } => Some(ChangeRequest {
                start_ms: *start_ms,
                end_ms: *end_ms,
                status: *status,
                doctor: doctor.clone(),
            }),
            _ => None,
        }
    }
}

/// Maps an Appointment and what the gateway knows of it (`existing`, found by its external id):
/// booked → book (new) or move / re-assign (known); arrived / checked-in, fulfilled, noshow,
/// cancelled → the matching status of a known appointment; entered-in-error is treated as
/// cancelled (the patient was told of an appointment that is not happening); proposed, pending
/// and waitlist send nothing until booked.
pub fn appointment_action(
    a: &FhirAppointment,
    existing: Option<&Appointment>,
    clinic: &ClinicSettings,
    local: &Local<'_>,
    now_ms: i64,
) -> Result<AppointmentAction, Failure> {
    let (start, end) = appointment_times(a);
    let label = a.id.as_deref().map_or_else(
        || "the Appointment".to_owned(),
        |id| format!("Appointment/{id}"),
    );
    let status_of_known = |s: AppointmentStatus, what: &str| match existing {
        Some(_) => AppointmentAction::Change {
            start_ms: None,
            end_ms: None,
            status: Some(s),
            doctor: None,
        },
        None => AppointmentAction::Nothing(format!(
            "{label} is {what} but was never booked through the gateway; nothing to send"
        )),
    };
    Ok(match a.status {
        FhirStatus::Booked => match existing {
            Some(e) if e.status == AppointmentStatus::Cancelled => {
                return Err(Failure::conflict(format!(
                    "{label} was cancelled; a cancelled appointment cannot be booked again: create a new Appointment"
                )))
            }
            Some(e) => {
                if let Some(s) = start.filter(|s| *s != e.start_ms && *s <= now_ms) {
                    return Err(past_start(a, s));
                }
                AppointmentAction::Change {
                    start_ms: start,
                    end_ms: end,
                    status: None,
                    doctor: doctor_of(a, clinic, local),
                }
            }
            None => {
                let Some(start_ms) = start else {
                    return Err(Failure::invalid(
                        "Appointment.start: a booked appointment needs a start (instant with offset)",
                        "Appointment.start",
                    ));
                };
                if start_ms <= now_ms {
                    return Err(past_start(a, start_ms));
                }
                if end.is_some_and(|e| e <= start_ms) {
                    return Err(Failure::invalid(
                        "Appointment.end: must be after Appointment.start",
                        "Appointment.end",
                    ));
                }
                AppointmentAction::Book {
                    start_ms,
                    end_ms: end,
                    doctor: doctor_of(a, clinic, local),
                    location: location_of(a, clinic, local),
                }
            }
        },
        FhirStatus::Arrived | FhirStatus::CheckedIn => {
            status_of_known(AppointmentStatus::Arrived, a.status.as_str())
        }
        FhirStatus::Fulfilled => status_of_known(AppointmentStatus::Attended, "fulfilled"),
        FhirStatus::Noshow => status_of_known(AppointmentStatus::NoShow, "noshow"),
        FhirStatus::Cancelled | FhirStatus::EnteredInError => match existing {
            Some(e) if e.status == AppointmentStatus::Cancelled => AppointmentAction::Nothing(
                format!("{label} is already cancelled; nothing to send"),
            ),
            _ => status_of_known(AppointmentStatus::Cancelled, a.status.as_str()),
        },
        FhirStatus::Proposed | FhirStatus::Pending | FhirStatus::Waitlist => {
            AppointmentAction::Nothing(format!(
                "{label} is {}: the patient hears from the gateway once it is booked",
                a.status
            ))
        }
    })
}

fn past_start(a: &FhirAppointment, start_ms: i64) -> Failure {
    let text = a
        .start
        .as_ref()
        .map_or_else(|| start_ms.to_string(), |s| s.as_str().to_owned());
    Failure::invalid(
        format!(
            "Appointment.start: {text} is in the past; only future appointments are confirmed and reminded"
        ),
        "Appointment.start",
    )
}

/// A PDF to deliver (its bytes, or where to fetch them, are resolved next).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentPlan {
    pub kind: DocumentKind,
    pub external_id: String,
    pub title: Option<String>,
    pub doctor: Option<String>,
    pub pdf: Pdf,
}

/// Documents to deliver, or why there is nothing to send.
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentsAction {
    Deliver(Vec<DocumentPlan>),
    Nothing(String),
}

/// One external id per PDF: the resource's, then `#pdf2`, `#pdf3` … for further ones.
fn nth_external(external: &str, i: usize) -> String {
    if i == 0 {
        external.to_owned()
    } else {
        format!("{external}#pdf{}", i + 1)
    }
}

/// A final (or amended / corrected / appended) DiagnosticReport with `presentedForm` PDFs →
/// lab reports. A correction is the same external id with different bytes: the clinical layer
/// sends it again as corrected. Registered / partial / preliminary wait for the final report;
/// cancelled and entered-in-error send nothing (a sent report cannot be recalled).
pub fn diagnostic_report_action(
    dr: &DiagnosticReport,
    external: &str,
) -> Result<DocumentsAction, Failure> {
    use DiagnosticReportStatus as S;
    let label = dr.id.as_deref().map_or_else(
        || "the DiagnosticReport".to_owned(),
        |id| format!("DiagnosticReport/{id}"),
    );
    match dr.status {
        S::Final | S::Amended | S::Corrected | S::Appended => {}
        S::Registered | S::Partial | S::Preliminary => {
            return Ok(DocumentsAction::Nothing(format!(
                "{label} is {}: the patient gets the report when it is final",
                dr.status
            )))
        }
        S::Cancelled | S::EnteredInError | S::Unknown => {
            return Ok(DocumentsAction::Nothing(format!(
                "{label} is {}: nothing is sent (a report already sent cannot be recalled from the patient's phone)",
                dr.status
            )))
        }
    }
    let pdfs = dr.pdfs().map_err(|e| super::outcome::from_fhir_error(&e))?;
    if pdfs.is_empty() {
        return Err(Failure::invalid(
            format!("DiagnosticReport.presentedForm: {label} has no application/pdf attachment; the gateway sends reports as PDFs"),
            "DiagnosticReport.presentedForm",
        ));
    }
    let doctor = dr
        .performer
        .iter()
        .filter(|r| r.target_type() == Some("Practitioner"))
        .find_map(|r| r.display.as_deref().map(|d| bounded(d, MAX_LABEL)));
    let code_title = dr.code.label().map(|t| bounded(t, MAX_LABEL));
    Ok(DocumentsAction::Deliver(
        pdfs.into_iter()
            .enumerate()
            .map(|(i, pdf)| DocumentPlan {
                kind: DocumentKind::LabReport,
                external_id: nth_external(external, i),
                title: pdf
                    .title
                    .as_deref()
                    .map(|t| bounded(t, MAX_LABEL))
                    .or_else(|| code_title.clone()),
                doctor: doctor.clone(),
                pdf,
            })
            .collect(),
    ))
}

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";

/// The touchpoint a document's type (and category) asks for: prescription, lab report,
/// discharge summary, vaccination record, else health record. Codes: LOINC 57833-6
/// (Prescription for medication), 11502-2 (Laboratory report), 18842-5 (Discharge summary),
/// 11369-6 (History of Immunization Narrative); SNOMED CT 440545006 (Prescription record),
/// 721981007 (Diagnostic studies report), 373942005 (Discharge summary), 41000179103
/// (Immunization record); else words in the text or display.
pub fn document_kind(concepts: &[&CodeableConcept]) -> DocumentKind {
    const CODED: [(&str, &str, DocumentKind); 8] = [
        (LOINC, "57833-6", DocumentKind::Prescription),
        (SNOMED, "440545006", DocumentKind::Prescription),
        (LOINC, "11502-2", DocumentKind::LabReport),
        (SNOMED, "721981007", DocumentKind::LabReport),
        (LOINC, "18842-5", DocumentKind::DischargeSummary),
        (SNOMED, "373942005", DocumentKind::DischargeSummary),
        (LOINC, "11369-6", DocumentKind::VaccinationRecord),
        (SNOMED, "41000179103", DocumentKind::VaccinationRecord),
    ];
    for (system, code, kind) in CODED {
        if concepts.iter().any(|c| c.has_code(system, code)) {
            return kind;
        }
    }
    let words: String = concepts
        .iter()
        .flat_map(|c| {
            c.text
                .iter()
                .chain(c.coding.iter().filter_map(|k| k.display.as_ref()))
        })
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    if words.contains("prescription") {
        DocumentKind::Prescription
    } else if words.contains("discharge") {
        DocumentKind::DischargeSummary
    } else if words.contains("immuni") || words.contains("vaccin") {
        DocumentKind::VaccinationRecord
    } else if words.contains("laboratory") || words.contains("lab report") {
        DocumentKind::LabReport
    } else {
        DocumentKind::HealthRecord
    }
}

/// A current DocumentReference with PDF attachments → health records (prescription, discharge
/// summary … when its type says so). Superseded / entered-in-error and preliminary documents
/// send nothing.
pub fn document_reference_action(
    d: &DocumentReference,
    external: &str,
) -> Result<DocumentsAction, Failure> {
    let label = d.id.as_deref().map_or_else(
        || "the DocumentReference".to_owned(),
        |id| format!("DocumentReference/{id}"),
    );
    if d.status != DocumentReferenceStatus::Current {
        return Ok(DocumentsAction::Nothing(format!(
            "{label} is {}: only current documents are sent",
            d.status
        )));
    }
    if let Some(s) = d
        .doc_status
        .as_deref()
        .filter(|s| matches!(*s, "preliminary" | "entered-in-error"))
    {
        return Ok(DocumentsAction::Nothing(format!(
            "{label} has docStatus {s}: the patient gets it when it is final"
        )));
    }
    let pdfs = d.pdfs().map_err(|e| super::outcome::from_fhir_error(&e))?;
    if pdfs.is_empty() {
        let types: Vec<&str> = d
            .content
            .iter()
            .filter_map(|c| c.attachment.content_type.as_deref())
            .collect();
        return Err(Failure::invalid(
            format!(
                "DocumentReference.content: {label} has no application/pdf attachment (found: {}); the gateway sends documents as PDFs",
                if types.is_empty() { "none".to_owned() } else { types.join(", ") }
            ),
            "DocumentReference.content",
        ));
    }
    let mut concepts: Vec<&CodeableConcept> = d.type_.iter().collect();
    concepts.extend(d.category.iter());
    let kind = document_kind(&concepts);
    let doctor = d
        .author
        .iter()
        .filter(|r| r.target_type().is_none_or(|t| t == "Practitioner"))
        .find_map(|r| r.display.as_deref().map(|x| bounded(x, MAX_LABEL)));
    let title = d
        .description
        .as_deref()
        .or_else(|| d.type_.as_ref().and_then(CodeableConcept::label))
        .map(|t| bounded(t, MAX_LABEL));
    Ok(DocumentsAction::Deliver(
        pdfs.into_iter()
            .enumerate()
            .map(|(i, pdf)| DocumentPlan {
                kind,
                external_id: nth_external(external, i),
                title: pdf
                    .title
                    .as_deref()
                    .map(|t| bounded(t, MAX_LABEL))
                    .or_else(|| title.clone()),
                doctor: doctor.clone(),
                pdf,
            })
            .collect(),
    ))
}

/// A finished visit to record.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitPlan {
    pub external_id: String,
    pub visit_type: String,
    pub completed_ms: i64,
    /// `Encounter.appointment[0]` as an external id (`Appointment/<id>`).
    pub appointment: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VisitAction {
    Complete(VisitPlan),
    Nothing(String),
}

/// The visit type follow-ups are configured by: `Encounter.type`, else `serviceType`, else the
/// class (display, else code), else `visit`.
pub fn visit_type(e: &Encounter) -> String {
    e.type_
        .iter()
        .find_map(CodeableConcept::label)
        .or_else(|| e.service_type.as_ref().and_then(CodeableConcept::label))
        .or_else(|| {
            e.class
                .as_ref()
                .and_then(|c| c.display.as_deref().or(c.code.as_deref()))
        })
        .map(|t| bounded(t, 64))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "visit".to_owned())
}

/// When the visit ended: `period.end` (a date alone is noon in the clinic's zone), else
/// `meta.lastUpdated`, else now; never later than now.
pub fn completed_ms(e: &Encounter, clinic: &ClinicSettings, now_ms: i64) -> i64 {
    use fhir_r4::DateTimeValue as V;
    let from_end = e
        .period
        .as_ref()
        .and_then(|p| p.end.as_ref())
        .and_then(|end| match end.value() {
            V::Instant(t) => Some(t.timestamp_millis()),
            V::Date(d) => {
                let tz: chrono_tz::Tz = clinic.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC);
                d.and_hms_opt(12, 0, 0)
                    .and_then(|n| tz.from_local_datetime(&n).earliest())
                    .map(|t| t.timestamp_millis())
            }
            V::Year(_) | V::YearMonth(..) => None,
        });
    let updated = e
        .meta
        .as_ref()
        .and_then(|m| m.last_updated.as_ref())
        .map(|t| t.value().timestamp_millis());
    from_end.or(updated).unwrap_or(now_ms).min(now_ms)
}

/// A finished Encounter → a completed visit (follow-up and feedback); any other status sends
/// nothing.
pub fn encounter_action(
    e: &Encounter,
    raw: &Value,
    external: &str,
    clinic: &ClinicSettings,
    now_ms: i64,
) -> VisitAction {
    let label = e.id.as_deref().map_or_else(
        || "the Encounter".to_owned(),
        |id| format!("Encounter/{id}"),
    );
    if e.status != EncounterStatus::Finished {
        return VisitAction::Nothing(format!(
            "{label} is {}: follow-up and feedback start when it is finished",
            e.status
        ));
    }
    let appointment = raw
        .get("appointment")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|r| r.get("reference"))
        .and_then(Value::as_str)
        .and_then(|r| {
            Reference::to(r)
                .type_and_id()
                .filter(|(t, id)| *t == "Appointment" && is_fhir_id(id))
                .map(|(_, id)| format!("Appointment/{id}"))
        });
    VisitAction::Complete(VisitPlan {
        external_id: external.to_owned(),
        visit_type: visit_type(e),
        completed_ms: completed_ms(e, clinic, now_ms),
        appointment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appointment::AppointmentId;
    use crate::domain::TenantId;
    use serde_json::json;

    fn clinic() -> ClinicSettings {
        serde_json::from_value(json!({
            "id": "clinic_t", "display_name": "Sunrise Clinic", "waba_id": "1", "portfolio_id": "1",
            "app_secret": "s", "access_token": "t", "numbers": [], "time_zone": "Asia/Kolkata",
            "default_country_code": "91", "default_language": "en", "low_balance_threshold": 0,
            "locations": [{"name": "Main Branch", "latitude": 12.9, "longitude": 77.6}],
            "doctors": [{"id": "dr-rao", "name": "Dr. Rao"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn appointment(v: Value) -> FhirAppointment {
        fhir_r4::Resource::from_value(v)
            .and_then(|r| r.into_type())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const NOW: i64 = 1_800_000_000_000;

    fn at(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339()
    }

    fn booked(start_ms: i64) -> Value {
        json!({
            "resourceType": "Appointment", "id": "a1", "status": "booked",
            "start": at(start_ms), "minutesDuration": 15,
            "contained": [{"resourceType": "Patient", "id": "p", "name": [{"text": "Asha Rao"}],
                "telecom": [{"system": "phone", "value": "98765 43210", "use": "mobile"}],
                "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "hi-IN"}]}, "preferred": true}]}],
            "participant": [
                {"actor": {"reference": "#p"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/dr-rao"}, "status": "accepted"},
                {"actor": {"reference": "Location/9", "display": "main branch"}, "status": "accepted"}
            ]
        })
    }

    fn existing(status: AppointmentStatus, start_ms: i64) -> Appointment {
        Appointment {
            id: AppointmentId::generate(),
            tenant: TenantId::parse("clinic_t").unwrap_or_else(|e| panic!("{e}")),
            external_id: Some("Appointment/a1".into()),
            patient: Patient {
                phone: E164::parse("+919876543210").unwrap_or_else(|e| panic!("{e}")),
                name: "Asha".into(),
                language: None,
            },
            doctor: None,
            location: None,
            start_ms,
            end_ms: None,
            status,
            response: None,
            version: 1,
            reminders: vec![],
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn a_new_booking_with_a_contained_patient() {
        let raw = booked(NOW + 3_600_000);
        let a = appointment(raw.clone());
        let local = Local::new(&raw, None).unwrap_or_else(|e| panic!("{e}"));
        let action =
            appointment_action(&a, None, &clinic(), &local, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            action,
            AppointmentAction::Book {
                start_ms: NOW + 3_600_000,
                end_ms: Some(NOW + 3_600_000 + 15 * 60_000),
                doctor: Some("Dr. Rao".into()),
                location: Some(0),
            }
        );
        let PatientRef::Local(p) = patient_ref(
            patient_participant(&a, &local),
            &local,
            "Appointment.participant",
        )
        .unwrap_or_else(|e| panic!("{e}")) else {
            panic!("contained patient not found")
        };
        let patient = patient_of(p, "#p", &clinic(), "Appointment.participant")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(patient.phone.as_str(), "+919876543210");
        assert_eq!(patient.name, "Asha Rao");
        assert_eq!(patient.language.as_deref(), Some("hi"));
    }

    #[test]
    fn bookings_in_the_past_and_without_start_are_refused() {
        let raw = booked(NOW - 1);
        let a = appointment(raw.clone());
        let local = Local::new(&raw, None).unwrap_or_else(|e| panic!("{e}"));
        let e = appointment_action(&a, None, &clinic(), &local, NOW)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.status.as_u16(), 422);
        assert!(e.diagnostics().contains("Appointment.start"), "{e}");
        assert!(e.diagnostics().contains("in the past"), "{e}");
        let mut raw = booked(NOW + 1);
        raw.as_object_mut().map(|o| o.remove("start"));
        let a = appointment(raw);
        let e = appointment_action(&a, None, &clinic(), &local, NOW)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.outcome.issue[0].expression, vec!["Appointment.start"]);
    }

    #[test]
    fn statuses_of_known_and_unknown_appointments() {
        let mut raw = booked(NOW + 3_600_000);
        let local = Local::default();
        let c = clinic();
        let known = existing(AppointmentStatus::Booked, NOW + 3_600_000);
        for (code, expected) in [
            ("cancelled", Some(AppointmentStatus::Cancelled)),
            ("entered-in-error", Some(AppointmentStatus::Cancelled)),
            ("noshow", Some(AppointmentStatus::NoShow)),
            ("arrived", Some(AppointmentStatus::Arrived)),
            ("checked-in", Some(AppointmentStatus::Arrived)),
            ("fulfilled", Some(AppointmentStatus::Attended)),
            ("pending", None),
            ("proposed", None),
            ("waitlist", None),
        ] {
            raw["status"] = json!(code);
            let a = appointment(raw.clone());
            let action = appointment_action(&a, Some(&known), &c, &local, NOW)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                action.change_request().and_then(|r| r.status),
                expected,
                "{code}"
            );
            // Unknown to the gateway: nothing to send, never an error.
            let action =
                appointment_action(&a, None, &c, &local, NOW).unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(action, AppointmentAction::Nothing(_)), "{code}");
        }
    }

    #[test]
    fn a_known_booking_moves_and_a_cancelled_one_conflicts() {
        let raw = booked(NOW + 7_200_000);
        let a = appointment(raw);
        let c = clinic();
        let local = Local::default();
        let known = existing(AppointmentStatus::Booked, NOW + 3_600_000);
        let action =
            appointment_action(&a, Some(&known), &c, &local, NOW).unwrap_or_else(|e| panic!("{e}"));
        let change = action.change_request().unwrap_or_default();
        assert_eq!(change.start_ms, Some(NOW + 7_200_000));
        assert_eq!(change.doctor.as_deref(), Some("Dr. Rao"));
        let cancelled = existing(AppointmentStatus::Cancelled, NOW + 3_600_000);
        let e = appointment_action(&a, Some(&cancelled), &c, &local, NOW)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.status.as_u16(), 409);
    }

    #[test]
    fn patients_without_a_usable_mobile_are_named() {
        let local = Local::default();
        let e = patient_ref(None, &local, "Appointment.participant")
            .err()
            .unwrap_or_else(|| panic!("resolved"));
        assert!(e
            .diagnostics()
            .contains("Appointment.participant: no Patient with a mobile phone"));
        let display_only = Reference {
            display: Some("Max Jones".into()),
            ..Reference::default()
        };
        let e = patient_ref(Some(&display_only), &local, "DiagnosticReport.subject")
            .err()
            .unwrap_or_else(|| panic!("resolved"));
        assert!(
            e.diagnostics().contains("only a display `Max Jones`"),
            "{e}"
        );
        assert!(matches!(
            patient_ref(Some(&Reference::to("Patient/example")), &local, "x"),
            Ok(PatientRef::Remote { .. })
        ));
        let e = patient_ref(Some(&Reference::to("Group/1")), &local, "x")
            .err()
            .unwrap_or_else(|| panic!("resolved"));
        assert!(e.diagnostics().contains("is a Group, not a Patient"));
        let p: fhir_r4::Patient = serde_json::from_value(json!({
            "telecom": [{"system": "email", "value": "a@b.c"}]
        }))
        .unwrap_or_default();
        let e = patient_of(&p, "Patient/x", &clinic(), "Encounter.subject")
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.diagnostics().contains("no Patient with a mobile phone"));
        // The official example's mobile is Australian without a country code.
        let p: fhir_r4::Patient = serde_json::from_value(json!({
            "telecom": [{"system": "phone", "value": "(03) 3410 5613", "use": "mobile"}]
        }))
        .unwrap_or_default();
        let e = patient_of(&p, "Patient/example", &clinic(), "Appointment.participant")
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(
            e.diagnostics().contains("not a number WhatsApp can reach"),
            "{e}"
        );
    }

    #[test]
    fn external_ids() {
        assert_eq!(
            external_id("Appointment", Some("a1"), &[], b"{}"),
            "Appointment/a1"
        );
        let ident = Identifier {
            system: Some("urn:emr".into()),
            value: Some("42".into()),
            ..Identifier::default()
        };
        assert_eq!(
            external_id("Encounter", None, std::slice::from_ref(&ident), b"{}"),
            "Encounter?identifier=urn:emr|42"
        );
        let long = Identifier {
            system: Some("x".repeat(200)),
            value: Some("42".into()),
            ..Identifier::default()
        };
        assert!(external_id("Encounter", None, &[long], b"{}").len() <= MAX_EXTERNAL_ID);
        let by_content = external_id("DiagnosticReport", None, &[], b"{}");
        assert_eq!(
            by_content,
            external_id("DiagnosticReport", None, &[], b"{}")
        );
        assert!(by_content.len() <= MAX_EXTERNAL_ID);
        assert_eq!(meta_language("mr-IN").as_deref(), Some("mr"));
        assert_eq!(meta_language("x-klingon"), None);
    }

    const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<<>>endobj\nstartxref\n0\n%%EOF\n";

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn diagnostic_reports_by_status_and_pdf() {
        let mut v = json!({"resourceType": "DiagnosticReport", "id": "r1", "status": "final",
            "code": {"text": "Lipid panel"},
            "presentedForm": [{"contentType": "application/pdf", "data": b64(PDF)}]});
        let dr: DiagnosticReport =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
        let DocumentsAction::Deliver(docs) =
            diagnostic_report_action(&dr, "DiagnosticReport/r1").unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("nothing to deliver")
        };
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].kind, DocumentKind::LabReport);
        assert_eq!(docs[0].title.as_deref(), Some("Lipid panel"));
        assert_eq!(docs[0].external_id, "DiagnosticReport/r1");
        for (status, deliver) in [
            ("corrected", true),
            ("amended", true),
            ("preliminary", false),
            ("entered-in-error", false),
        ] {
            v["status"] = json!(status);
            let dr: DiagnosticReport =
                serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
            let a = diagnostic_report_action(&dr, "DiagnosticReport/r1")
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                matches!(a, DocumentsAction::Deliver(_)),
                deliver,
                "{status}"
            );
        }
        v["status"] = json!("final");
        v["presentedForm"][0]["data"] = json!(b64(b"pdfInBase64Binary"));
        let dr: DiagnosticReport =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
        let e = diagnostic_report_action(&dr, "x")
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.diagnostics().contains("does not start with %PDF-"), "{e}");
        assert_eq!(
            e.outcome.issue[0].expression,
            vec!["DiagnosticReport.presentedForm[0]"]
        );
        v["presentedForm"] = json!([]);
        let dr: DiagnosticReport = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        let e = diagnostic_report_action(&dr, "x")
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.diagnostics().contains("no application/pdf attachment"));
    }

    #[test]
    fn document_kinds_from_type() {
        let c = |v: Value| -> CodeableConcept { serde_json::from_value(v).unwrap_or_default() };
        let rx = c(json!({"coding": [{"system": LOINC, "code": "57833-6"}]}));
        assert_eq!(document_kind(&[&rx]), DocumentKind::Prescription);
        let ds = c(json!({"text": "Discharge Summary"}));
        assert_eq!(document_kind(&[&ds]), DocumentKind::DischargeSummary);
        let other = c(
            json!({"coding": [{"system": LOINC, "code": "34108-1", "display": "Outpatient Note"}]}),
        );
        assert_eq!(document_kind(&[&other]), DocumentKind::HealthRecord);
        let d: DocumentReference = serde_json::from_value(json!({
            "status": "current", "type": {"text": "Prescription"},
            "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/9", "title": "Rx"}}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let DocumentsAction::Deliver(docs) =
            document_reference_action(&d, "DocumentReference/d").unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("nothing to deliver")
        };
        assert_eq!(docs[0].kind, DocumentKind::Prescription);
        assert_eq!(
            docs[0].pdf.source,
            fhir_r4::PdfSource::Url("Binary/9".into())
        );
    }

    #[test]
    fn finished_encounters_become_visits() {
        let raw = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "type": [{"text": "Consultation"}],
            "period": {"start": "2026-01-05T09:00:00+05:30", "end": "2026-01-05"},
            "appointment": [{"reference": "Appointment/a1"}]});
        let e: Encounter = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{e}"));
        let VisitAction::Complete(v) = encounter_action(&e, &raw, "Encounter/e1", &clinic(), NOW)
        else {
            panic!("not a visit")
        };
        assert_eq!(v.visit_type, "Consultation");
        assert_eq!(v.appointment.as_deref(), Some("Appointment/a1"));
        // 2026-01-05 12:00 in Asia/Kolkata.
        assert_eq!(v.completed_ms, 1_767_594_600_000);
        let mut raw2 = raw.clone();
        raw2["status"] = json!("in-progress");
        let e: Encounter = serde_json::from_value(raw2.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            encounter_action(&e, &raw2, "Encounter/e1", &clinic(), NOW),
            VisitAction::Nothing(_)
        ));
        let mut raw3 = raw;
        raw3.as_object_mut().map(|o| o.remove("type"));
        let e: Encounter = serde_json::from_value(raw3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(visit_type(&e), "ambulatory");
    }
}
