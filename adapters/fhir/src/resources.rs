//! Resource models (R4, the elements the gateway needs). Unknown elements are ignored.

use serde::{Deserialize, Deserializer, Serialize};

use crate::codes::*;
use crate::datatypes::*;
use crate::error::FhirError;
use crate::primitives::{Counter, Date, DateTime, Instant};
use crate::resource::Resource;

// ---------------------------------------------------------------- Appointment

/// Appointment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Extensions (raw).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    /// Business identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Status (required).
    pub status: AppointmentStatus,
    /// Why it was cancelled (one "l", as in the specification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelation_reason: Option<CodeableConcept>,
    /// Broad service category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_category: Vec<CodeableConcept>,
    /// Specific service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_type: Vec<CodeableConcept>,
    /// Specialty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specialty: Vec<CodeableConcept>,
    /// v2-0276 CHECKUP | EMERGENCY | FOLLOWUP | ROUTINE | WALKIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_type: Option<CodeableConcept>,
    /// Coded reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reason_code: Vec<CodeableConcept>,
    /// Priority (0 = undefined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Shown on a subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Start instant (with offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Instant>,
    /// End instant (with offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Instant>,
    /// Duration in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes_duration: Option<u32>,
    /// Creation date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Patient instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_instruction: Option<String>,
    /// Participants (required 1..*; an empty list is accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participant: Vec<AppointmentParticipant>,
}

/// Appointment.participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentParticipant {
    /// Role.
    #[serde(default, rename = "type", skip_serializing_if = "Vec::is_empty")]
    pub type_: Vec<CodeableConcept>,
    /// Patient, Practitioner, Location, … .
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Reference>,
    /// required | optional | information-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<String>,
    /// Participation status (required).
    pub status: ParticipationStatus,
}

impl Appointment {
    fn actors_of<'a>(&'a self, types: &'a [&'a str]) -> impl Iterator<Item = &'a Reference> + 'a {
        self.participant
            .iter()
            .filter_map(|p| p.actor.as_ref())
            .filter(move |a| a.target_type().is_some_and(|t| types.contains(&t)))
    }

    /// The patient participant.
    pub fn patient_ref(&self) -> Option<&Reference> {
        self.actors_of(&["Patient"]).next()
    }

    /// Practitioner (and PractitionerRole) participants.
    pub fn practitioner_refs(&self) -> Vec<&Reference> {
        self.actors_of(&["Practitioner", "PractitionerRole"])
            .collect()
    }

    /// The location participant.
    pub fn location_ref(&self) -> Option<&Reference> {
        self.actors_of(&["Location"]).next()
    }
}

// ---------------------------------------------------------------- Patient

/// Patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Extensions (raw).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    /// Identifiers (MRN, ABHA …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Whether the record is in active use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<HumanName>,
    /// Phones, emails …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telecom: Vec<ContactPoint>,
    /// Administrative gender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<AdministrativeGender>,
    /// Date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Date>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<Address>,
    /// Languages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communication: Vec<PatientCommunication>,
    /// Managing organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managing_organization: Option<Reference>,
}

/// Patient.communication.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientCommunication {
    /// BCP-47 language (system `urn:ietf:bcp:47`).
    pub language: CodeableConcept,
    /// Preferred language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred: Option<bool>,
}

/// The BCP-47 code system.
pub const BCP47: &str = "urn:ietf:bcp:47";

impl Patient {
    /// The number to message: `telecom` with system phone|sms (never use `old`), preferring
    /// `use = mobile` (or system sms), then the lowest `rank`, then document order; else any phone.
    pub fn mobile(&self) -> Option<&str> {
        let candidates = self.telecom.iter().enumerate().filter(|(_, t)| {
            matches!(
                t.system,
                Some(ContactPointSystem::Phone) | Some(ContactPointSystem::Sms)
            ) && t.use_ != Some(ContactPointUse::Old)
                && t.value.as_deref().is_some_and(|v| !v.trim().is_empty())
        });
        candidates
            .min_by_key(|(i, t)| {
                let mobile = t.use_ == Some(ContactPointUse::Mobile)
                    || t.system == Some(ContactPointSystem::Sms);
                (!mobile, t.rank.unwrap_or(u32::MAX), *i)
            })
            .and_then(|(_, t)| t.value.as_deref())
            .map(str::trim)
    }

    /// The preferred language as a BCP-47 code: `communication` with `preferred = true`, else the
    /// first one; its `urn:ietf:bcp:47` coding, else its first code.
    pub fn preferred_language(&self) -> Option<&str> {
        fn code(c: &PatientCommunication) -> Option<&str> {
            c.language
                .code_in(BCP47)
                .or_else(|| c.language.coding.iter().find_map(|c| c.code.as_deref()))
        }
        self.communication
            .iter()
            .filter(|c| c.preferred == Some(true))
            .chain(self.communication.iter())
            .find_map(code)
    }

    /// Display name of the first `official`/`usual` name, else the first name.
    pub fn display_name(&self) -> Option<String> {
        self.name
            .iter()
            .find(|n| matches!(n.use_.as_deref(), Some("official") | Some("usual")))
            .and_then(HumanName::display)
            .or_else(|| self.name.iter().find_map(HumanName::display))
    }
}

// ---------------------------------------------------------------- Practitioner, Location

/// Practitioner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Practitioner {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifiers (registration numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<HumanName>,
    /// Contacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telecom: Vec<ContactPoint>,
}

/// Location.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Contacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub telecom: Vec<ContactPoint>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// WGS84 position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<LocationPosition>,
}

/// Location.position (WGS84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocationPosition {
    /// Longitude.
    pub longitude: f64,
    /// Latitude.
    pub latitude: f64,
    /// Altitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
}

// ---------------------------------------------------------------- DiagnosticReport

/// DiagnosticReport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticReport {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Status (required).
    pub status: DiagnosticReportStatus,
    /// Category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    /// What was reported (required).
    pub code: CodeableConcept,
    /// Patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// Encounter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Reference>,
    /// effectiveDateTime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_date_time: Option<DateTime>,
    /// effectivePeriod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_period: Option<Period>,
    /// When released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<Instant>,
    /// Performers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performer: Vec<Reference>,
    /// Observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result: Vec<Reference>,
    /// Conclusion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    /// Rendered reports (PDF).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presented_form: Vec<Attachment>,
}

/// DiagnosticReport.effective[x].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effective<'a> {
    /// effectiveDateTime
    DateTime(&'a DateTime),
    /// effectivePeriod
    Period(&'a Period),
}

impl DiagnosticReport {
    /// effective[x].
    pub fn effective(&self) -> Option<Effective<'_>> {
        self.effective_date_time
            .as_ref()
            .map(Effective::DateTime)
            .or(self.effective_period.as_ref().map(Effective::Period))
    }

    /// `presentedForm` attachments declared `application/pdf`: inline data decoded and checked to
    /// start with `%PDF-`, or URL references. An invalid PDF attachment is an error naming it.
    pub fn pdfs(&self) -> Result<Vec<Pdf>, FhirError> {
        let mut out = Vec::new();
        for (i, a) in self.presented_form.iter().enumerate() {
            if let Some(pdf) = a.pdf_at(&format!("DiagnosticReport.presentedForm[{i}]"))? {
                out.push(pdf);
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- DocumentReference, Binary

/// DocumentReference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentReference {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Master identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_identifier: Option<Identifier>,
    /// Identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Status (required).
    pub status: DocumentReferenceStatus,
    /// preliminary | final | amended | entered-in-error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_status: Option<String>,
    /// Kind of document (LOINC/SNOMED).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<CodeableConcept>,
    /// Categories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    /// Patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// When this reference was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<Instant>,
    /// Authors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author: Vec<Reference>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Content (required 1..*; empty accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<DocumentReferenceContent>,
}

/// DocumentReference.content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentReferenceContent {
    /// The document.
    pub attachment: Attachment,
    /// Format code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Coding>,
}

impl DocumentReference {
    /// `content[].attachment` declared `application/pdf` (see [`DiagnosticReport::pdfs`]).
    pub fn pdfs(&self) -> Result<Vec<Pdf>, FhirError> {
        let mut out = Vec::new();
        for (i, c) in self.content.iter().enumerate() {
            if let Some(pdf) = c
                .attachment
                .pdf_at(&format!("DocumentReference.content[{i}].attachment"))?
            {
                out.push(pdf);
            }
        }
        Ok(out)
    }
}

/// Binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binary {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// MIME type (required).
    pub content_type: String,
    /// Access control context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Reference>,
    /// Base64 data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Binary {
    /// The data decoded (whitespace stripped, base64 validated).
    pub fn decoded_data(&self) -> Result<Option<Vec<u8>>, FhirError> {
        self.data
            .as_deref()
            .map(|d| decode_base64(d, "Binary.data"))
            .transpose()
    }

    /// The content as a PDF when `contentType` is `application/pdf` and data is present.
    pub fn pdf(&self) -> Result<Option<Pdf>, FhirError> {
        if !is_pdf_type(Some(&self.content_type)) {
            return Ok(None);
        }
        let Some(bytes) = self.decoded_data()? else {
            return Err(FhirError::EmptyAttachment {
                path: "Binary".into(),
            });
        };
        check_pdf(&bytes, "Binary.data")?;
        Ok(Some(Pdf {
            path: "Binary".into(),
            title: None,
            source: PdfSource::Inline(bytes),
        }))
    }
}

// ---------------------------------------------------------------- MedicationRequest

/// MedicationRequest (structured prescription line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicationRequest {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Status (required).
    pub status: MedicationRequestStatus,
    /// Intent (required).
    pub intent: MedicationRequestIntent,
    /// medicationCodeableConcept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medication_codeable_concept: Option<CodeableConcept>,
    /// medicationReference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medication_reference: Option<Reference>,
    /// Patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// Encounter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Reference>,
    /// When written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authored_on: Option<DateTime>,
    /// Prescriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<Reference>,
    /// Dosage instructions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dosage_instruction: Vec<Dosage>,
}

/// Dosage (text parts only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dosage {
    /// Order of the instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// Free-text instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Patient-oriented instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_instruction: Option<String>,
}

/// MedicationRequest.medication[x].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Medication<'a> {
    /// medicationCodeableConcept
    Concept(&'a CodeableConcept),
    /// medicationReference
    Reference(&'a Reference),
}

impl MedicationRequest {
    /// medication[x].
    pub fn medication(&self) -> Option<Medication<'_>> {
        self.medication_codeable_concept
            .as_ref()
            .map(Medication::Concept)
            .or(self
                .medication_reference
                .as_ref()
                .map(Medication::Reference))
    }
}

// ---------------------------------------------------------------- Encounter

/// Encounter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encounter {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifiers (visit number).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Status (required, R4 codes).
    pub status: EncounterStatus,
    /// Class (R4 Coding, e.g. AMB; an R5 `CodeableConcept[]` is read as its first coding).
    #[serde(
        default,
        deserialize_with = "encounter_class",
        skip_serializing_if = "Option::is_none"
    )]
    pub class: Option<Coding>,
    /// Types.
    #[serde(default, rename = "type", skip_serializing_if = "Vec::is_empty")]
    pub type_: Vec<CodeableConcept>,
    /// Service type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<CodeableConcept>,
    /// Patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// Start and end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reason_code: Vec<CodeableConcept>,
}

fn encounter_class<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Coding>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Class {
        R4(Coding),
        R5(Vec<CodeableConcept>),
    }
    Ok(match Option::<Class>::deserialize(d)? {
        None => None,
        Some(Class::R4(c)) => Some(c),
        Some(Class::R5(v)) => v.into_iter().flat_map(|cc| cc.coding).next(),
    })
}

// ---------------------------------------------------------------- Communication

/// Communication (audit of sent messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Communication {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// Status (required).
    pub status: EventStatus,
    /// Category.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<CodeableConcept>,
    /// Channel (medium).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub medium: Vec<CodeableConcept>,
    /// Patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// Encounter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Reference>,
    /// When sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<DateTime>,
    /// When received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<DateTime>,
    /// Recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipient: Vec<Reference>,
    /// Sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Reference>,
    /// Payloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payload: Vec<CommunicationPayload>,
}

/// Communication.payload (content[x]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationPayload {
    /// contentString.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_string: Option<String>,
    /// contentAttachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_attachment: Option<Attachment>,
    /// contentReference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_reference: Option<Reference>,
}

// ---------------------------------------------------------------- Parameters

/// Parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameter: Vec<Parameter>,
}

/// Parameters.parameter: name, one value[x] (the types the gateway uses), parts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// Name (required).
    pub name: String,
    /// valueString.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_string: Option<String>,
    /// valueCode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_code: Option<String>,
    /// valueUri.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_uri: Option<String>,
    /// valueCanonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_canonical: Option<String>,
    /// valueReference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_reference: Option<Reference>,
    /// valueInteger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_integer: Option<i32>,
    /// valueUnsignedInt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_unsigned_int: Option<u32>,
    /// valueInteger64 (R5; a JSON string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_integer64: Option<Counter>,
    /// valueInstant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_instant: Option<Instant>,
    /// valueBoolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_boolean: Option<bool>,
    /// valueCoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_coding: Option<Coding>,
    /// valueCodeableConcept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_codeable_concept: Option<CodeableConcept>,
    /// A resource value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<Resource>>,
    /// Named parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part: Vec<Parameter>,
}

impl Parameter {
    /// A string-ish value: valueString, valueCode, valueUri or valueCanonical.
    pub fn text(&self) -> Option<&str> {
        self.value_string
            .as_deref()
            .or(self.value_code.as_deref())
            .or(self.value_uri.as_deref())
            .or(self.value_canonical.as_deref())
    }

    /// A non-negative number: valueUnsignedInt, valueInteger (≥ 0), valueInteger64, or a decimal
    /// valueString. `Err` names the problem when present but unusable.
    pub fn counter(&self) -> Result<Option<u64>, String> {
        if let Some(v) = self.value_unsigned_int {
            return Ok(Some(u64::from(v)));
        }
        if let Some(v) = self.value_integer {
            return u64::try_from(v)
                .map(Some)
                .map_err(|_| format!("negative value {v}"));
        }
        if let Some(v) = self.value_integer64 {
            return Ok(Some(v.0));
        }
        match self.value_string.as_deref() {
            Some(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("`{s}` is not a non-negative integer")),
            None => Ok(None),
        }
    }
}

impl Parameters {
    /// First parameter with this name.
    pub fn get(&self, name: &str) -> Option<&Parameter> {
        self.parameter.iter().find(|p| p.name == name)
    }

    /// All parameters with this name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Parameter> + 'a {
        self.parameter.iter().filter(move |p| p.name == name)
    }
}

// ---------------------------------------------------------------- SubscriptionStatus

/// SubscriptionStatus (R4B/R5 topic-based subscriptions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// requested | active | error | off | entered-in-error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SubscriptionState>,
    /// handshake | heartbeat | event-notification | query-status | query-event (required).
    #[serde(rename = "type")]
    pub type_: NotificationType,
    /// Events since the subscription started (integer64 as string in R5, string in R4B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_since_subscription_start: Option<Counter>,
    /// Events in this notification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notification_event: Vec<SubscriptionNotificationEvent>,
    /// The Subscription (required).
    pub subscription: Reference,
    /// Topic canonical URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error: Vec<CodeableConcept>,
}

/// SubscriptionStatus.notificationEvent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionNotificationEvent {
    /// Sequential event number (required).
    pub event_number: Counter,
    /// When the event occurred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Instant>,
    /// The focus resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<Reference>,
    /// Additional context.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_context: Vec<Reference>,
}

// ---------------------------------------------------------------- Composition (ABDM documents)

/// Composition (first entry of a document Bundle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Composition {
    /// Logical id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    /// Status (required).
    pub status: CompositionStatus,
    /// Kind of document (required).
    #[serde(rename = "type")]
    pub type_: CodeableConcept,
    /// Patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    /// Encounter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<Reference>,
    /// Edit time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<DateTime>,
    /// Authors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author: Vec<Reference>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Sections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub section: Vec<CompositionSection>,
}

/// Composition.section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompositionSection {
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Section code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeableConcept>,
    /// Entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<Reference>,
    /// Nested sections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub section: Vec<CompositionSection>,
}
