//! What an HL7 v2 message asks of the gateway: pure functions from a parsed message and the
//! sending clinic to a clinical request, or the reason it cannot be acted on.
//!
//! | message | becomes |
//! |---|---|
//! | SIU^S12 | [`Action::Book`] |
//! | SIU^S13 / S14 | [`Action::Change`] (new start, end, doctor; SCH-25 Cancelled cancels), booking it when the gateway never saw it |
//! | SIU^S15 / S26 | [`Action::Change`] to cancelled / no-show (unknown appointments: nothing to do) |
//! | ORU^R01, OBR-25 F or C, PDF in OBX ED | [`Action::Documents`], lab reports keyed by filler order (a C with other bytes is a correction) |
//! | MDM^T02 / T10 with a PDF | [`Action::Documents`]: prescription (TXA-2 RX), discharge summary (DS), else health record |
//! | ADT^A03 | [`Action::Visit`] (PV1-45 end, PV1-10 / PV1-2 visit type, PV1-19 id; moves a known patient's last visit) |
//! | ADT^A04 / A08 | [`Action::UpsertPatient`] into the clinic's patient directory (see [`patient`]) |
//!
//! Refusals say which acknowledgment they deserve: [`Verdict::Reject`] (AR: unparsable,
//! structurally incomplete, unsupported type, version or processing id) or
//! [`Verdict::Unprocessable`] (a valid message the gateway cannot act on: no patient phone, no
//! start time, a PDF that is not one; AE or AA by the clinic's link).

use chrono_tz::Tz;
use hl7_v2::ack::ErrorCode;
use hl7_v2::views::{
    AdtEvent, AdtMessage, Appointment as SiuAppointment, Coded, FieldLocation, Header, LabReport,
    MdmEvent, MedicalDocument, Practitioner, ResultStatus, SiuEvent, ViewError,
};
use hl7_v2::Message;

use super::Hl7Link;
use crate::clinical::{BookRequest, ChangeRequest, DocumentRequest, VisitRequest};
use crate::clock::now_ms;
use crate::domain::appointment::{AppointmentStatus, Patient};
use crate::domain::records::DocumentKind;
use crate::domain::E164;
use crate::patients::PatientRecord;
use crate::tenants::ClinicSettings;

pub mod patient;

/// The longest external id the clinical layer takes.
const MAX_EXTERNAL_ID: usize = 128;
/// Names and titles are cut to this many characters.
const MAX_TEXT: usize = 100;

/// What a message asks for.
#[derive(Debug, Clone)]
pub enum Action {
    Book(BookRequest),
    /// Change the appointment the EMR knows as `external_id`.
    Change {
        external_id: String,
        change: ChangeRequest,
        if_unknown: IfUnknown,
    },
    /// Deliver each document (one per PDF).
    Documents(Vec<DocumentRequest>),
    /// Record the completed visit; then move the last visit of the directory's patient with this
    /// external id (PID-3), if the clinic has them, to the visit's end.
    Visit {
        request: VisitRequest,
        patient: Option<String>,
    },
    /// Create or update the patient in the clinic's directory (consent not stated: the stored
    /// consent stays).
    UpsertPatient(Box<PatientRecord>),
    /// Accepted; nothing to do (why, for the log).
    Ignore(String),
}

/// What to do with a change for an appointment the gateway has never seen.
#[derive(Debug, Clone)]
pub enum IfUnknown {
    /// Nothing (a cancellation or no-show of an appointment the gateway never confirmed).
    Ignore,
    /// Book it (a reschedule of an appointment booked before the link existed).
    Book(Box<BookRequest>),
    /// It cannot be booked from this message either.
    Refuse(Refusal),
}

/// Which acknowledgment a refusal deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// AR: the message cannot be read or is not one the gateway takes.
    Reject,
    /// AE (or AA, per the link): valid, but the gateway cannot act on it.
    Unprocessable,
    /// AE: something on the gateway's side failed; the sender should try again.
    Retry,
}

/// Why a message was not acted on, for the ACK's ERR segment. Never carries patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub verdict: Verdict,
    pub code: ErrorCode,
    pub location: Option<FieldLocation>,
    pub message: String,
}

impl Refusal {
    pub fn reject(
        code: ErrorCode,
        location: Option<FieldLocation>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            verdict: Verdict::Reject,
            code,
            location,
            message: message.into(),
        }
    }

    pub fn unprocessable(
        code: ErrorCode,
        location: Option<FieldLocation>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            verdict: Verdict::Unprocessable,
            code,
            location,
            message: message.into(),
        }
    }

    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Retry,
            code: ErrorCode::ApplicationInternalError,
            location: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{} ({l}): {}", self.code.code(), self.message),
            None => write!(f, "{}: {}", self.code.code(), self.message),
        }
    }
}

/// `SEG-field.component` as ERR-2 reports it.
pub fn at(segment: &str, field: usize, component: Option<usize>) -> FieldLocation {
    FieldLocation {
        segment: segment.to_owned(),
        sequence: 1,
        field,
        component,
    }
}

/// The message type as a metrics label: the supported events by name, anything else `other`
/// (labels stay bounded whatever senders write in MSH-9).
pub fn type_label(header: &Header) -> &'static str {
    const KNOWN: [&str; 11] = [
        "SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15", "SIU^S26", "ORU^R01", "MDM^T02", "MDM^T10",
        "ADT^A03", "ADT^A04", "ADT^A08",
    ];
    KNOWN
        .iter()
        .find(|k| k.split_once('^').is_some_and(|(t, e)| header.is(t, e)))
        .copied()
        .unwrap_or("other")
}

/// The zone of timestamps without an offset: the link's, else the clinic's.
pub fn zone(clinic: &ClinicSettings, link: &Hl7Link) -> Tz {
    link.time_zone
        .as_deref()
        .and_then(|z| z.parse().ok())
        .or_else(|| clinic.time_zone.parse().ok())
        .unwrap_or(chrono_tz::Asia::Kolkata)
}

/// Checks MSH-11/MSH-12 and maps the message.
pub fn map(
    msg: &Message,
    header: &Header,
    clinic: &ClinicSettings,
    link: &Hl7Link,
) -> Result<Action, Refusal> {
    if let Some(v) = header.version.as_deref() {
        if !v.trim().starts_with("2.") {
            return Err(Refusal::reject(
                ErrorCode::UnsupportedVersionId,
                Some(at("MSH", 12, None)),
                format!("MSH-12 version {v:?} is not HL7 v2.x"),
            ));
        }
    }
    if let Some(p) = header.processing_id.as_deref() {
        let p = p.trim();
        let production = p.eq_ignore_ascii_case("P");
        if !production
            && !(link.accept_test_messages
                && (p.eq_ignore_ascii_case("T") || p.eq_ignore_ascii_case("D")))
        {
            return Err(Refusal::reject(
                ErrorCode::UnsupportedProcessingId,
                Some(at("MSH", 11, None)),
                format!("MSH-11 processing id {p:?} is not accepted (P only; the clinic's link can allow T and D)"),
            ));
        }
    }
    let tz = zone(clinic, link);
    let trigger = header.trigger_event.as_deref().unwrap_or_default();
    let unsupported_event = || {
        Refusal::reject(
            ErrorCode::UnsupportedEventCode,
            Some(at("MSH", 9, Some(2))),
            format!(
                "{}^{trigger} is not supported (SIU^S12/S13/S14/S15/S26, ORU^R01, MDM^T02/T10, ADT^A03/A04/A08)",
                header.message_type
            ),
        )
    };
    match header.message_type.to_ascii_uppercase().as_str() {
        "SIU" => siu(msg, clinic, tz),
        "ORU" if header.is("ORU", "R01") => oru(msg, header, clinic, tz),
        "MDM" if header.is("MDM", "T02") || header.is("MDM", "T10") => mdm(msg, header, clinic, tz),
        "ADT" if header.is("ADT", "A03") => adt_discharge(msg, header, clinic, tz),
        "ADT" if header.is("ADT", "A04") || header.is("ADT", "A08") => {
            patient::registration(msg, clinic, tz, now_ms())
        }
        "ORU" | "MDM" | "ADT" => Err(unsupported_event()),
        "" => Err(Refusal::reject(
            ErrorCode::RequiredFieldMissing,
            Some(at("MSH", 9, Some(1))),
            "MSH-9 message type is empty",
        )),
        other => Err(Refusal::reject(
            ErrorCode::UnsupportedMessageType,
            Some(at("MSH", 9, Some(1))),
            format!("message type {other:?} is not supported (SIU, ORU, MDM, ADT)"),
        )),
    }
}

/// A view that could not be built: structure and syntax are AR, a missing value is AE.
pub fn view_refusal(e: ViewError) -> Refusal {
    let location = e.location();
    let message = e.to_string();
    match e {
        ViewError::WrongMessageType { .. } => {
            Refusal::reject(ErrorCode::UnsupportedMessageType, location, message)
        }
        ViewError::MissingSegment { .. } => {
            Refusal::reject(ErrorCode::SegmentSequenceError, location, message)
        }
        ViewError::Timestamp { .. } => Refusal::reject(ErrorCode::DataTypeError, location, message),
        ViewError::MissingField { .. } => {
            Refusal::unprocessable(ErrorCode::RequiredFieldMissing, location, message)
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    s.trim().chars().take(max).collect()
}

fn external_id(raw: &str, field: FieldLocation) -> Result<String, Refusal> {
    let id = raw.trim();
    if id.is_empty() || id.len() > MAX_EXTERNAL_ID {
        return Err(Refusal::unprocessable(
            ErrorCode::DataTypeError,
            Some(field),
            format!("the id must be 1 to {MAX_EXTERNAL_ID} characters"),
        ));
    }
    Ok(id.to_owned())
}

/// PID → the gateway's patient: a number that parses (mobiles first), the name, the language.
pub fn patient(
    pid: Option<&hl7_v2::views::Patient>,
    clinic: &ClinicSettings,
) -> Result<Patient, Refusal> {
    let Some(pid) = pid else {
        return Err(Refusal::unprocessable(
            ErrorCode::RequiredFieldMissing,
            Some(at("PID", 13, None)),
            "no PID segment: the patient's phone number (PID-13) is needed",
        ));
    };
    let candidates = pid
        .mobile()
        .into_iter()
        .chain(pid.best_phone())
        .chain(pid.phones.iter())
        .filter_map(|p| p.number.as_deref());
    let phone = phone_from(candidates, clinic)?;
    let name = pid
        .name
        .as_ref()
        .map(|n| {
            let short = [&n.given, &n.family]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            if short.is_empty() {
                n.display()
            } else {
                short
            }
        })
        .unwrap_or_default();
    Ok(Patient {
        phone,
        name: cut(&name, MAX_TEXT),
        language: pid.language.as_ref().and_then(language),
    })
}

/// The first candidate that is a valid number in the clinic's numbering, else AE at PID-13.
fn phone_from<'a>(
    candidates: impl Iterator<Item = &'a str>,
    clinic: &ClinicSettings,
) -> Result<E164, Refusal> {
    let mut saw_number = false;
    for raw in candidates {
        saw_number = true;
        if let Ok(p) = E164::parse_with_default(raw, Some(&clinic.default_country_code)) {
            return Ok(p);
        }
    }
    let why = if saw_number {
        "PID-13: no phone number of the patient is a valid mobile number"
    } else {
        "PID-13: the patient has no phone number"
    };
    Err(Refusal::unprocessable(
        ErrorCode::RequiredFieldMissing,
        Some(at("PID", 13, None)),
        why,
    ))
}

/// PID-15 → a Meta language code: ISO 639-1 as is, ISO 639-2 for India's languages and
/// English mapped, anything else left to the clinic's default.
fn language(coded: &Coded) -> Option<String> {
    let raw = coded.identifier.as_deref().or(coded.text.as_deref())?;
    let code = raw
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mapped = match code.as_str() {
        "eng" | "english" => "en",
        "hin" | "hindi" => "hi",
        "tam" | "tamil" => "ta",
        "tel" | "telugu" => "te",
        "mar" | "marathi" => "mr",
        "ben" | "bengali" | "bangla" => "bn",
        "kan" | "kannada" => "kn",
        "guj" | "gujarati" => "gu",
        "mal" | "malayalam" => "ml",
        "pan" | "punjabi" => "pa",
        "urd" | "urdu" => "ur",
        "ori" | "ory" | "odia" => "or",
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_lowercase()) => c,
        _ => return None,
    };
    Some(mapped.to_owned())
}

/// A practitioner as the patient reads it: the clinic's own name for that doctor id, else the
/// name in the message, else the id.
fn doctor(p: Option<&Practitioner>, clinic: &ClinicSettings) -> Option<String> {
    let p = p?;
    if let Some(id) = p.id.as_deref() {
        if let Some(d) = clinic
            .doctors
            .iter()
            .find(|d| d.id.eq_ignore_ascii_case(id))
        {
            return Some(cut(&d.name, MAX_TEXT));
        }
    }
    let name = p
        .name
        .as_ref()
        .map(|n| n.display())
        .filter(|n| !n.is_empty());
    name.or_else(|| p.id.clone()).map(|n| cut(&n, MAX_TEXT))
}

/// An XCN field read by path (for segments the views do not cover: TXA-5, PV1-7).
fn xcn_at(msg: &Message, path: &str) -> Option<Practitioner> {
    let get = |c: usize| {
        msg.get(&format!("{path}.{c}"))
            .ok()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "\"\"")
            .map(str::to_owned)
    };
    let name = hl7_v2::views::PersonName {
        family: get(2),
        given: get(3),
        middle: get(4),
        suffix: get(5),
        prefix: get(6),
        degree: get(7),
    };
    let id = get(1);
    let has_name = name != hl7_v2::views::PersonName::default();
    (id.is_some() || has_name).then(|| Practitioner {
        id,
        name: has_name.then_some(name),
    })
}

fn siu(msg: &Message, clinic: &ClinicSettings, tz: Tz) -> Result<Action, Refusal> {
    let a = SiuAppointment::from_message(msg, tz).map_err(view_refusal)?;
    let Some(id) = a.id() else {
        return Err(Refusal::unprocessable(
            ErrorCode::RequiredFieldMissing,
            Some(at("SCH", 2, None)),
            "SCH-2 (filler) and SCH-1 (placer) appointment ids are both empty",
        ));
    };
    let field = if a.filler_id.is_some() { 2 } else { 1 };
    let external = external_id(id, at("SCH", field, None))?;
    let status_is = |word: &str| {
        a.status
            .as_ref()
            .and_then(|s| s.identifier.as_deref().or(s.text.as_deref()))
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    };
    let change = |status| Action::Change {
        external_id: external.clone(),
        change: ChangeRequest {
            status: Some(status),
            ..ChangeRequest::default()
        },
        if_unknown: IfUnknown::Ignore,
    };
    match &a.event {
        SiuEvent::Booked => Ok(Action::Book(book_request(&a, &external, clinic)?)),
        SiuEvent::Rescheduled | SiuEvent::Modified
            if status_is("Cancelled") || status_is("Deleted") =>
        {
            Ok(change(AppointmentStatus::Cancelled))
        }
        SiuEvent::Rescheduled | SiuEvent::Modified if status_is("Noshow") => {
            Ok(change(AppointmentStatus::NoShow))
        }
        SiuEvent::Rescheduled | SiuEvent::Modified => {
            if a.event == SiuEvent::Rescheduled && a.start.is_none() {
                return Err(no_start());
            }
            let if_unknown = match book_request(&a, &external, clinic) {
                Ok(b) => IfUnknown::Book(Box::new(b)),
                Err(r) => IfUnknown::Refuse(r),
            };
            Ok(Action::Change {
                external_id: external.clone(),
                change: ChangeRequest {
                    start_ms: a.start.map(|t| t.utc.timestamp_millis()),
                    end_ms: a.end.map(|t| t.utc.timestamp_millis()),
                    status: None,
                    doctor: doctor(a.doctor.as_ref(), clinic),
                },
                if_unknown,
            })
        }
        SiuEvent::Cancelled => Ok(change(AppointmentStatus::Cancelled)),
        SiuEvent::NoShow => Ok(change(AppointmentStatus::NoShow)),
        SiuEvent::Other(t) => Err(Refusal::reject(
            ErrorCode::UnsupportedEventCode,
            Some(at("MSH", 9, Some(2))),
            format!("SIU^{t} is not supported (S12, S13, S14, S15, S26)"),
        )),
    }
}

fn no_start() -> Refusal {
    Refusal::unprocessable(
        ErrorCode::RequiredFieldMissing,
        Some(at("SCH", 11, Some(4))),
        "no start time (TQ1-7, SCH-11.4, AIS-4, AIG-8, AIL-6 or AIP-6)",
    )
}

fn book_request(
    a: &SiuAppointment,
    external: &str,
    clinic: &ClinicSettings,
) -> Result<BookRequest, Refusal> {
    let start = a.start.ok_or_else(no_start)?;
    let patient = patient(a.patient.as_ref(), clinic)?;
    let location = a.location.as_ref().and_then(|l| {
        let names = [
            l.point_of_care.as_deref(),
            l.description.as_deref(),
            l.facility.as_ref().and_then(|f| f.key()),
            l.building.as_deref(),
        ];
        clinic.locations.iter().position(|c| {
            names
                .iter()
                .flatten()
                .any(|n| n.trim().eq_ignore_ascii_case(c.name.trim()))
        })
    });
    Ok(BookRequest {
        external_id: Some(external.to_owned()),
        patient,
        doctor: doctor(a.doctor.as_ref(), clinic),
        location,
        start_ms: start.utc.timestamp_millis(),
        end_ms: a
            .end
            .map(|t| t.utc.timestamp_millis())
            .filter(|e| *e > start.utc.timestamp_millis()),
    })
}

/// The first problem among an order's documents, as a refusal.
fn document_refusal(errors: &[&hl7_v2::views::DocumentError]) -> Option<Refusal> {
    let e = errors.first()?;
    Some(Refusal::unprocessable(
        ErrorCode::DataTypeError,
        Some(e.location().clone()),
        e.to_string(),
    ))
}

fn by_reference() -> Refusal {
    Refusal::unprocessable(
        ErrorCode::DataTypeError,
        Some(at("OBX", 2, None)),
        "OBX-2 RP: documents by reference are not fetched; send the PDF inline (OBX-2 ED, Base64)",
    )
}

fn fallback_id(header: &Header, kind: &str) -> Result<String, Refusal> {
    let control = header.control_id.as_deref().unwrap_or_default();
    external_id(&format!("{kind}-msg-{control}"), at("MSH", 10, None))
}

fn numbered(base: &str, n: usize) -> String {
    if n == 0 {
        base.to_owned()
    } else {
        format!("{base}#{}", n + 1)
    }
}

fn oru(msg: &Message, header: &Header, clinic: &ClinicSettings, tz: Tz) -> Result<Action, Refusal> {
    let r = LabReport::from_message(msg, tz).map_err(view_refusal)?;
    let mut docs = Vec::new();
    let mut problem = None;
    let mut patient_of: Option<Patient> = None;
    for (i, order) in r.orders.iter().enumerate() {
        let deliverable = matches!(
            order.result_status,
            Some(ResultStatus::Final | ResultStatus::Corrected)
        );
        if !deliverable {
            continue;
        }
        let pdfs: Vec<_> = order.pdfs().collect();
        if pdfs.is_empty() {
            let errors: Vec<_> = order
                .documents
                .iter()
                .filter_map(|d| d.as_ref().err())
                .collect();
            let not_pdf = order
                .documents
                .iter()
                .any(|d| d.as_ref().is_ok_and(|d| !d.is_pdf()));
            problem = problem
                .or_else(|| document_refusal(&errors))
                .or_else(|| {
                    not_pdf.then(|| {
                        Refusal::unprocessable(
                            ErrorCode::DataTypeError,
                            Some(at("OBX", 5, None)),
                            "the encapsulated document is not a PDF",
                        )
                    })
                })
                .or_else(|| (!order.references.is_empty()).then(by_reference));
            continue;
        }
        let patient = match &patient_of {
            Some(p) => p.clone(),
            None => {
                let p = patient(r.patient.as_ref(), clinic)?;
                patient_of = Some(p.clone());
                p
            }
        };
        let base = match order
            .filler_order
            .as_deref()
            .or(order.placer_order.as_deref())
        {
            Some(id) => external_id(
                id,
                at(
                    "OBR",
                    if order.filler_order.is_some() { 3 } else { 2 },
                    None,
                ),
            )?,
            None => fallback_id(header, &format!("lab{}", i + 1))?,
        };
        for (n, pdf) in pdfs.into_iter().enumerate() {
            docs.push(DocumentRequest {
                kind: DocumentKind::LabReport,
                external_id: Some(numbered(&base, n)),
                patient: patient.clone(),
                title: order
                    .service
                    .as_ref()
                    .and_then(Coded::display)
                    .map(|t| cut(t, MAX_TEXT)),
                doctor: None,
                filename: None,
                pdf: pdf.bytes.clone(),
            });
        }
    }
    if !docs.is_empty() {
        return Ok(Action::Documents(docs));
    }
    if let Some(p) = problem {
        return Err(p);
    }
    let statuses: Vec<&ResultStatus> = r
        .orders
        .iter()
        .filter_map(|o| o.result_status.as_ref())
        .collect();
    if statuses.is_empty()
        || statuses
            .iter()
            .all(|s| !matches!(s, ResultStatus::Final | ResultStatus::Corrected))
    {
        Ok(Action::Ignore(
            "no order with OBR-25 F (final) or C (corrected): nothing to send yet".into(),
        ))
    } else {
        Ok(Action::Ignore(
            "final results without a PDF: nothing to send".into(),
        ))
    }
}

/// TXA-2 → the touchpoint: prescriptions and discharge summaries have their own, anything else
/// is a health record.
fn document_kind(document_type: Option<&str>) -> DocumentKind {
    let t = document_type
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    match t.as_str() {
        "RX" | "ERX" | "PRESCRIPTION" | "PRESC" | "PRESCRIPTIONS" => DocumentKind::Prescription,
        "DS" | "DISCHARGE" | "DISCHARGESUMMARY" | "DISCHARGE SUMMARY" => {
            DocumentKind::DischargeSummary
        }
        "IMM" | "VACCINATION" | "IMMUNIZATION" | "IMMUNISATION" => DocumentKind::VaccinationRecord,
        other if other.contains("PRESCRIPTION") => DocumentKind::Prescription,
        _ => DocumentKind::HealthRecord,
    }
}

fn mdm(msg: &Message, header: &Header, clinic: &ClinicSettings, tz: Tz) -> Result<Action, Refusal> {
    let d = MedicalDocument::from_message(msg, tz).map_err(view_refusal)?;
    if let MdmEvent::Other(t) = &d.event {
        return Err(Refusal::reject(
            ErrorCode::UnsupportedEventCode,
            Some(at("MSH", 9, Some(2))),
            format!("MDM^{t} is not supported (T02, T10)"),
        ));
    }
    if let Some(s) = d.completion_status.as_deref() {
        if ["DI", "IN", "IP"].iter().any(|x| s.eq_ignore_ascii_case(x)) {
            return Ok(Action::Ignore(format!(
                "TXA-17 completion status {s}: the document is not finished"
            )));
        }
    }
    let pdfs: Vec<_> = d.pdfs().collect();
    if pdfs.is_empty() {
        let errors: Vec<_> = d
            .documents
            .iter()
            .filter_map(|x| x.as_ref().err())
            .collect();
        if let Some(r) = document_refusal(&errors) {
            return Err(r);
        }
        if d.documents.iter().any(|x| x.is_ok()) {
            return Err(Refusal::unprocessable(
                ErrorCode::DataTypeError,
                Some(at("OBX", 5, None)),
                "the encapsulated document is not a PDF",
            ));
        }
        if !d.references.is_empty() {
            return Err(by_reference());
        }
        return Err(Refusal::unprocessable(
            ErrorCode::RequiredFieldMissing,
            Some(at("OBX", 5, None)),
            "no PDF in OBX (OBX-2 ED, OBX-5 ^AP^PDF^Base64^…)",
        ));
    }
    let patient = patient(d.patient.as_ref(), clinic)?;
    let kind = document_kind(d.document_type.as_deref());
    let base = match d.document_number.as_deref() {
        Some(n) => external_id(n, at("TXA", 12, None))?,
        None => fallback_id(header, "doc")?,
    };
    let doc_doctor = doctor(
        xcn_at(msg, "TXA-5")
            .or_else(|| xcn_at(msg, "TXA-22"))
            .or_else(|| xcn_at(msg, "PV1-7"))
            .as_ref(),
        clinic,
    );
    let title = match kind {
        DocumentKind::HealthRecord => pdfs
            .first()
            .and_then(|p| p.observation_id.as_ref())
            .and_then(|c| c.text.as_deref())
            .map(|t| cut(t, MAX_TEXT)),
        _ => None,
    };
    let docs = pdfs
        .into_iter()
        .enumerate()
        .map(|(n, pdf)| DocumentRequest {
            kind,
            external_id: Some(numbered(&base, n)),
            patient: patient.clone(),
            title: title.clone(),
            doctor: doc_doctor.clone(),
            filename: None,
            pdf: pdf.bytes.clone(),
        })
        .collect();
    Ok(Action::Documents(docs))
}

fn adt_discharge(
    msg: &Message,
    header: &Header,
    clinic: &ClinicSettings,
    tz: Tz,
) -> Result<Action, Refusal> {
    let adt = AdtMessage::from_message(msg, tz).map_err(view_refusal)?;
    debug_assert_eq!(adt.event, AdtEvent::Discharge);
    let Some(visit) = adt.visit else {
        return Err(Refusal::reject(
            ErrorCode::SegmentSequenceError,
            None,
            "required segment PV1 is missing",
        ));
    };
    let patient_id = adt
        .patient
        .as_ref()
        .and_then(|p| patient::first_identifier(p).ok().flatten());
    let patient = patient(adt.patient.as_ref(), clinic)?;
    let completed = match visit.discharged_at {
        Some(t) => t.utc.timestamp_millis(),
        None => {
            // EVN-6 (event occurred), else EVN-2 (recorded), else MSH-7.
            let fallback = ["EVN-6", "EVN-2", "MSH-7"].iter().find_map(|p| {
                msg.get(p)
                    .ok()
                    .flatten()
                    .and_then(|v| hl7_v2::parse_timestamp(v.trim(), tz).ok())
            });
            match fallback {
                Some(t) => t.utc.timestamp_millis(),
                None => {
                    return Err(Refusal::unprocessable(
                        ErrorCode::RequiredFieldMissing,
                        Some(at("PV1", 45, None)),
                        "no discharge time (PV1-45, EVN-6, EVN-2 or MSH-7)",
                    ))
                }
            }
        }
    };
    let visit_type = visit
        .hospital_service
        .clone()
        .or_else(|| {
            visit.patient_class.as_deref().map(|c| {
                match c.trim().to_ascii_uppercase().as_str() {
                    "O" => "outpatient",
                    "I" => "inpatient",
                    "E" => "emergency",
                    "P" => "preadmit",
                    "R" => "recurring",
                    "B" => "obstetrics",
                    _ => "visit",
                }
                .to_owned()
            })
        })
        .unwrap_or_else(|| "visit".to_owned());
    let external = match visit.visit_number.as_deref() {
        Some(n) => external_id(n, at("PV1", 19, None))?,
        None => fallback_id(header, "visit")?,
    };
    Ok(Action::Visit {
        request: VisitRequest {
            external_id: Some(external),
            patient,
            visit_type: cut(&visit_type, 64),
            doctor: doctor(visit.attending.as_ref(), clinic),
            appointment: None,
            completed_ms: completed,
        },
        patient: patient_id,
    })
}

#[cfg(test)]
mod tests;
