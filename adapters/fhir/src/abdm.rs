//! ABDM (NRCeS `ndhm.in` IG) document Bundles: identify the record type from the first
//! Composition, resolve the patient's mobile and the PDFs through the section entries.

use thiserror::Error;

use crate::bundle::Bundle;
use crate::codes::BundleType;
use crate::datatypes::{Identifier, Pdf, PdfSource, Reference};
use crate::error::FhirError;
use crate::primitives::{DateTime, Instant};
use crate::resource::Resource;
use crate::resources::{Composition, CompositionSection, Patient};

/// SNOMED CT system URI.
pub const SNOMED: &str = "http://snomed.info/sct";

/// Health-information types of ABDM.
///
/// Codes: ABDM sandbox documentation, "Packaging Health Data" (HI types and the SNOMED CT codes
/// the Composition.type must carry), which points to the NRCeS IG profiles
/// `https://nrces.in/ndhm/fhir/r4/StructureDefinition/<Type>Record` that fix the same codes.
/// WellnessRecord has no SNOMED code; its Composition.type.text is "Wellness Record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbdmRecordType {
    /// 440545006 |Prescription record|
    Prescription,
    /// 721981007 |Diagnostic studies report|
    DiagnosticReport,
    /// 371530004 |Clinical consultation report|
    OpConsultation,
    /// 373942005 |Discharge summary|
    DischargeSummary,
    /// 41000179103 |Immunization record|
    ImmunizationRecord,
    /// 419891008 |Record artifact|
    HealthDocumentRecord,
    /// No SNOMED code; matched on Composition.type.text "Wellness Record".
    WellnessRecord,
}

impl AbdmRecordType {
    /// All record types.
    pub const ALL: [AbdmRecordType; 7] = [
        AbdmRecordType::Prescription,
        AbdmRecordType::DiagnosticReport,
        AbdmRecordType::OpConsultation,
        AbdmRecordType::DischargeSummary,
        AbdmRecordType::ImmunizationRecord,
        AbdmRecordType::HealthDocumentRecord,
        AbdmRecordType::WellnessRecord,
    ];

    /// SNOMED CT code of Composition.type (None for WellnessRecord).
    pub fn snomed_code(self) -> Option<&'static str> {
        match self {
            AbdmRecordType::Prescription => Some("440545006"),
            AbdmRecordType::DiagnosticReport => Some("721981007"),
            AbdmRecordType::OpConsultation => Some("371530004"),
            AbdmRecordType::DischargeSummary => Some("373942005"),
            AbdmRecordType::ImmunizationRecord => Some("41000179103"),
            AbdmRecordType::HealthDocumentRecord => Some("419891008"),
            AbdmRecordType::WellnessRecord => None,
        }
    }

    /// ABDM HI type name.
    pub fn hi_type(self) -> &'static str {
        match self {
            AbdmRecordType::Prescription => "Prescription",
            AbdmRecordType::DiagnosticReport => "DiagnosticReport",
            AbdmRecordType::OpConsultation => "OPConsultation",
            AbdmRecordType::DischargeSummary => "DischargeSummary",
            AbdmRecordType::ImmunizationRecord => "ImmunizationRecord",
            AbdmRecordType::HealthDocumentRecord => "HealthDocumentRecord",
            AbdmRecordType::WellnessRecord => "WellnessRecord",
        }
    }

    /// Identify from Composition.type.
    pub fn from_composition(c: &Composition) -> Option<Self> {
        AbdmRecordType::ALL
            .into_iter()
            .find(|t| {
                t.snomed_code()
                    .is_some_and(|code| c.type_.has_code(SNOMED, code))
            })
            .or_else(|| {
                c.type_
                    .text
                    .as_deref()
                    .filter(|t| t.trim().eq_ignore_ascii_case("wellness record"))
                    .map(|_| AbdmRecordType::WellnessRecord)
            })
    }
}

/// Why a document Bundle cannot be delivered.
#[derive(Debug, Error)]
pub enum AbdmError {
    /// Bundle.type is not `document`.
    #[error("Bundle.type is {0}, expected document")]
    NotADocument(BundleType),
    /// The first entry is not a Composition.
    #[error("Bundle.entry[0].resource is {0}, expected Composition")]
    NoComposition(String),
    /// Composition.type has no ABDM record-type code.
    #[error("Composition.type has no ABDM record type code (found {0})")]
    UnknownRecordType(String),
    /// Composition.subject missing.
    #[error("Composition.subject is missing")]
    NoSubject,
    /// A reference does not resolve inside the Bundle.
    #[error("{path} reference `{reference}` does not resolve inside the Bundle")]
    Unresolved {
        /// Where the reference is, e.g. `Composition.section[0].entry[1]`.
        path: String,
        /// The reference text.
        reference: String,
    },
    /// Composition.subject is not a Patient.
    #[error("Composition.subject resolves to {0}, expected Patient")]
    SubjectNotPatient(String),
    /// The patient has no phone.
    #[error("no patient mobile (Patient.telecom has no phone or sms)")]
    NoPatientMobile,
    /// No PDF anywhere in the sections.
    #[error("no PDF in the document (DocumentReference/Binary attachments, DiagnosticReport.presentedForm)")]
    NoPdf,
    /// An attachment is broken.
    #[error(transparent)]
    Attachment(#[from] FhirError),
}

/// What the gateway needs from an ABDM document.
#[derive(Debug, Clone, PartialEq)]
pub struct AbdmDocument {
    /// Record type.
    pub record_type: AbdmRecordType,
    /// Bundle.identifier.
    pub bundle_identifier: Option<Identifier>,
    /// Bundle.timestamp.
    pub timestamp: Option<Instant>,
    /// Composition.title.
    pub title: Option<String>,
    /// Composition.date.
    pub date: Option<DateTime>,
    /// The patient.
    pub patient: Patient,
    /// Mobile from [`Patient::mobile`].
    pub mobile: String,
    /// Preferred language (BCP-47).
    pub language: Option<String>,
    /// PDFs, in section order (URLs to Binaries inside the Bundle are inlined).
    pub pdfs: Vec<Pdf>,
}

fn unresolved(path: String, r: &Reference) -> AbdmError {
    AbdmError::Unresolved {
        path,
        reference: r
            .reference
            .clone()
            .unwrap_or_else(|| "(no literal reference)".into()),
    }
}

impl AbdmDocument {
    /// Summarise a `document` Bundle with the Composition first.
    pub fn from_bundle(bundle: &Bundle) -> Result<AbdmDocument, AbdmError> {
        if bundle.type_ != BundleType::Document {
            return Err(AbdmError::NotADocument(bundle.type_));
        }
        let composition = match bundle.first_resource() {
            Some(Resource::Composition(c)) => c,
            Some(other) => return Err(AbdmError::NoComposition(other.resource_type().into())),
            None => return Err(AbdmError::NoComposition("nothing".into())),
        };
        let record_type = AbdmRecordType::from_composition(composition).ok_or_else(|| {
            let found: Vec<String> = composition
                .type_
                .coding
                .iter()
                .map(|c| {
                    format!(
                        "{}|{}",
                        c.system.as_deref().unwrap_or(""),
                        c.code.as_deref().unwrap_or("")
                    )
                })
                .collect();
            AbdmError::UnknownRecordType(if found.is_empty() {
                "no coding".into()
            } else {
                found.join(", ")
            })
        })?;
        let subject = composition.subject.as_ref().ok_or(AbdmError::NoSubject)?;
        let patient = match bundle.resolve(subject) {
            Some(Resource::Patient(p)) => p.as_ref().clone(),
            Some(other) => return Err(AbdmError::SubjectNotPatient(other.resource_type().into())),
            None => return Err(unresolved("Composition.subject".into(), subject)),
        };
        let mobile = patient
            .mobile()
            .map(str::to_owned)
            .ok_or(AbdmError::NoPatientMobile)?;
        let mut pdfs = Vec::new();
        for (i, s) in composition.section.iter().enumerate() {
            collect_section(
                bundle,
                s,
                &format!("Composition.section[{i}]"),
                &mut pdfs,
                0,
            )?;
        }
        if pdfs.is_empty() {
            return Err(AbdmError::NoPdf);
        }
        Ok(AbdmDocument {
            record_type,
            bundle_identifier: bundle.identifier.clone(),
            timestamp: bundle.timestamp.clone(),
            title: composition.title.clone(),
            date: composition.date.clone(),
            language: patient.preferred_language().map(str::to_owned),
            patient,
            mobile,
            pdfs,
        })
    }
}

/// Nesting bound for sections (malicious input).
const MAX_SECTION_DEPTH: usize = 16;

fn collect_section(
    bundle: &Bundle,
    section: &CompositionSection,
    path: &str,
    out: &mut Vec<Pdf>,
    depth: usize,
) -> Result<(), AbdmError> {
    if depth > MAX_SECTION_DEPTH {
        return Ok(());
    }
    for (j, r) in section.entry.iter().enumerate() {
        let entry_path = format!("{path}.entry[{j}]");
        let resource = bundle
            .resolve(r)
            .ok_or_else(|| unresolved(entry_path.clone(), r))?;
        let found = match resource {
            Resource::DocumentReference(d) => d.pdfs()?,
            Resource::DiagnosticReport(d) => d.pdfs()?,
            Resource::Binary(b) => b.pdf()?.into_iter().collect(),
            _ => Vec::new(),
        };
        for pdf in found {
            out.push(inline_bundle_binary(bundle, pdf)?);
        }
    }
    for (k, s) in section.section.iter().enumerate() {
        collect_section(bundle, s, &format!("{path}.section[{k}]"), out, depth + 1)?;
    }
    Ok(())
}

/// A PDF URL pointing at a Binary inside the Bundle becomes inline bytes.
fn inline_bundle_binary(bundle: &Bundle, pdf: Pdf) -> Result<Pdf, AbdmError> {
    let PdfSource::Url(url) = &pdf.source else {
        return Ok(pdf);
    };
    match bundle.resolve(&Reference::to(url.clone())) {
        Some(Resource::Binary(b)) => match b.pdf()? {
            Some(inner) => Ok(Pdf {
                path: pdf.path,
                title: pdf.title,
                source: inner.source,
            }),
            None => Ok(pdf),
        },
        _ => Ok(pdf),
    }
}
