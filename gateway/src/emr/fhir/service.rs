//! Runs FHIR ingest against the clinical layer in two steps: [`Ingest::plan`] reads what it
//! needs (the gateway's record of the appointment, referenced Patients and attachment URLs from
//! the clinic's server) without changing anything, and [`Ingest::execute`] books, changes,
//! delivers, records, or stores a Patient in the clinic's patient directory. A transaction Bundle plans every entry before executing any, so an entry
//! that cannot be acted on (no patient phone, a broken PDF) rejects the whole Bundle untouched.

use std::sync::Arc;

use fhir_r4::{Bundle, Pdf, PdfSource, Reference, Resource};
use serde_json::Value;

use super::ingest::{
    self, AppointmentAction, DocumentPlan, DocumentsAction, Local, PatientRef, VisitAction,
};
use super::outcome::{from_clinical, Failure};
use super::remote::Remote;
use crate::clinical::{
    BookRequest, ChangeRequest, Clinical, ClinicalError, DocumentRequest, VisitRequest,
};
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentStatus, Patient};
use crate::emr::hl7::ingest::patient::{upsert_from_emr, Stored};
use crate::patients::PatientRecord;
use crate::tenants::ClinicSettings;

const APPOINTMENT_FIELDS: &[(&str, &str)] = &[
    ("start", "Appointment.start"),
    ("end", "Appointment.end"),
    ("location", "Appointment.participant"),
    ("status", "Appointment.status"),
    ("external_id", "Appointment.id"),
];

const VISIT_FIELDS: &[(&str, &str)] = &[
    ("completed_at", "Encounter.period.end"),
    ("visit_type", "Encounter.type"),
    ("appointment", "Encounter.appointment"),
    ("external_id", "Encounter.id"),
];

/// What one resource led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Something new happened (booked, changed, sent, recorded): `201` rather than `200`.
    pub acted: bool,
    pub message: String,
    /// The resource was accepted but something about it deserves attention.
    pub warning: bool,
}

impl Done {
    pub fn nothing(message: impl Into<String>) -> Self {
        Self {
            acted: false,
            message: message.into(),
            warning: false,
        }
    }
}

/// A planned action: everything read, nothing changed yet.
#[derive(Debug, Clone)]
pub enum Planned {
    Book {
        label: String,
        request: BookRequest,
    },
    Change {
        label: String,
        before: Box<Appointment>,
        change: ChangeRequest,
    },
    Documents {
        label: String,
        requests: Vec<(String, DocumentRequest)>,
    },
    Visit {
        label: String,
        request: VisitRequest,
    },
    /// Create or update a patient in the clinic's directory.
    Patient {
        label: String,
        record: Box<PatientRecord>,
        /// Fields left out because the directory would refuse them.
        notes: Vec<String>,
    },
    Nothing(Done),
}

/// A clinic's FHIR ingest.
pub struct Ingest<'a> {
    pub clinical: &'a Clinical,
    pub clinic: &'a Arc<ClinicSettings>,
    pub remote: Result<Option<Arc<Remote>>, String>,
    pub max_pdf_bytes: usize,
}

fn label_of(resource_type: &str, id: Option<&str>) -> String {
    id.map_or_else(
        || format!("the {resource_type}"),
        |id| format!("{resource_type}/{id}"),
    )
}

impl<'a> Ingest<'a> {
    pub fn new(
        clinical: &'a Clinical,
        clinic: &'a Arc<ClinicSettings>,
        max_pdf_bytes: usize,
    ) -> Self {
        Self {
            clinical,
            clinic,
            remote: Remote::for_clinic(clinic),
            max_pdf_bytes,
        }
    }

    /// The clinic's FHIR server, or a 422 saying why it was needed (`expression`: `why`).
    pub fn remote_for(&self, expression: &str, why: &str) -> Result<Arc<Remote>, Failure> {
        match &self.remote {
            Ok(Some(r)) => Ok(r.clone()),
            Ok(None) => Err(Failure::invalid(
                format!(
                    "{expression}: {why}, and the clinic has no FHIR server (emr.fhir.base_url) to read it from"
                ),
                expression,
            )),
            Err(e) => {
                tracing::error!(tenant = %self.clinic.id, error = %e, "the clinic's FHIR link is misconfigured");
                Err(Failure::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    fhir_r4::OperationOutcome::exception(format!(
                        "the clinic's FHIR link is misconfigured ({e}); ask the gateway operator to fix emr.fhir"
                    )),
                ))
            }
        }
    }

    /// Plans and executes one resource.
    pub async fn ingest(
        &self,
        resource: &Resource,
        raw: &Value,
        bundle: Option<&Bundle>,
    ) -> Result<Done, Failure> {
        let planned = self.plan(resource, raw, bundle).await?;
        self.execute(planned).await
    }

    /// What a resource asks for, with everything it needs read; changes nothing.
    pub async fn plan(
        &self,
        resource: &Resource,
        raw: &Value,
        bundle: Option<&Bundle>,
    ) -> Result<Planned, Failure> {
        let content = serde_json::to_vec(raw).unwrap_or_default();
        let rt = resource.resource_type();
        if let Some(id) = resource.id() {
            if !ingest::is_fhir_id(id) {
                return Err(Failure::invalid(
                    format!(
                        "{rt}.id: `{}` is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
                        id.chars().take(80).collect::<String>()
                    ),
                    format!("{rt}.id"),
                ));
            }
        }
        let local = Local::new(raw, bundle)?;
        let now = now_ms();
        match resource {
            Resource::Appointment(a) => {
                let ext = ingest::external_id(rt, a.id.as_deref(), &a.identifier, &content);
                let label = label_of(rt, a.id.as_deref());
                let existing = self
                    .clinical
                    .by_external(self.clinic, &ext)
                    .await
                    .map_err(|e| from_clinical(e, APPOINTMENT_FIELDS))?;
                match ingest::appointment_action(a, existing.as_ref(), self.clinic, &local, now)? {
                    AppointmentAction::Book {
                        start_ms,
                        end_ms,
                        doctor,
                        location,
                    } => {
                        let patient = self
                            .patient(
                                ingest::patient_participant(a, &local),
                                &local,
                                "Appointment.participant",
                            )
                            .await?;
                        Ok(Planned::Book {
                            label,
                            request: BookRequest {
                                external_id: Some(ext),
                                patient,
                                doctor,
                                location,
                                start_ms,
                                end_ms,
                            },
                        })
                    }
                    action @ AppointmentAction::Change { .. } => match existing {
                        Some(before) => Ok(Planned::Change {
                            label,
                            before: Box::new(before),
                            change: action.change_request().unwrap_or_default(),
                        }),
                        None => Ok(Planned::Nothing(Done::nothing(format!(
                            "{label}: nothing to change"
                        )))),
                    },
                    AppointmentAction::Nothing(m) => Ok(Planned::Nothing(Done::nothing(m))),
                }
            }
            Resource::DiagnosticReport(dr) => {
                let ext = ingest::external_id(rt, dr.id.as_deref(), &dr.identifier, &content);
                let action = ingest::diagnostic_report_action(dr, &ext)?;
                self.documents(
                    label_of(rt, dr.id.as_deref()),
                    action,
                    dr.subject.as_ref(),
                    &local,
                    "DiagnosticReport.subject",
                )
                .await
            }
            Resource::DocumentReference(d) => {
                let mut ids = d.identifier.clone();
                ids.extend(d.master_identifier.clone());
                let ext = ingest::external_id(rt, d.id.as_deref(), &ids, &content);
                let action = ingest::document_reference_action(d, &ext)?;
                self.documents(
                    label_of(rt, d.id.as_deref()),
                    action,
                    d.subject.as_ref(),
                    &local,
                    "DocumentReference.subject",
                )
                .await
            }
            Resource::Encounter(e) => {
                let ext = ingest::external_id(rt, e.id.as_deref(), &e.identifier, &content);
                let label = label_of(rt, e.id.as_deref());
                match ingest::encounter_action(e, raw, &ext, self.clinic, now) {
                    VisitAction::Nothing(m) => Ok(Planned::Nothing(Done::nothing(m))),
                    VisitAction::Complete(v) => {
                        let patient = self
                            .patient(e.subject.as_ref(), &local, "Encounter.subject")
                            .await?;
                        let appointment = match v.appointment.as_deref() {
                            Some(a) => self
                                .clinical
                                .by_external(self.clinic, a)
                                .await
                                .map_err(|e| from_clinical(e, VISIT_FIELDS))?
                                .filter(|x| x.patient.phone == patient.phone)
                                .map(|x| x.id),
                            None => None,
                        };
                        Ok(Planned::Visit {
                            label,
                            request: VisitRequest {
                                external_id: Some(v.external_id),
                                patient,
                                visit_type: v.visit_type,
                                doctor: encounter_doctor(raw),
                                appointment,
                                completed_ms: v.completed_ms,
                            },
                        })
                    }
                }
            }
            Resource::Patient(p) => {
                let label = label_of(rt, p.id.as_deref());
                Ok(match ingest::patient_record(p, &label, self.clinic, now) {
                    Ok((record, dropped)) => Planned::Patient {
                        label,
                        record: Box::new(record),
                        notes: dropped
                            .iter()
                            .map(|e| format!("{} left out ({})", e.field, e.detail))
                            .collect(),
                    },
                    Err(why) => Planned::Nothing(Done {
                        acted: false,
                        message: format!(
                            "{label} accepted but not stored in the clinic's patient directory, and nothing is sent for a Patient. Note: {why}"
                        ),
                        warning: true,
                    }),
                })
            }
            other => Err(Failure::not_supported(format!(
                "{} is not taken here: the gateway acts on {}",
                other.resource_type(),
                ingest::ACCEPTED_TYPES.join(", ")
            ))),
        }
    }

    async fn documents(
        &self,
        label: String,
        action: DocumentsAction,
        subject: Option<&Reference>,
        local: &Local<'_>,
        expression: &str,
    ) -> Result<Planned, Failure> {
        let plans = match action {
            DocumentsAction::Nothing(m) => return Ok(Planned::Nothing(Done::nothing(m))),
            DocumentsAction::Deliver(plans) => plans,
        };
        let patient = self.patient(subject, local, expression).await?;
        let mut requests = Vec::with_capacity(plans.len());
        for plan in plans {
            requests.push(self.document_request(plan, &patient, local).await?);
        }
        Ok(Planned::Documents { label, requests })
    }

    /// A document request with the PDF's bytes (inline, a Binary in the Bundle, or fetched).
    pub async fn document_request(
        &self,
        plan: DocumentPlan,
        patient: &Patient,
        local: &Local<'_>,
    ) -> Result<(String, DocumentRequest), Failure> {
        let pdf = self.pdf_bytes(&plan.pdf, local).await?;
        Ok((
            plan.pdf.path.clone(),
            DocumentRequest {
                kind: plan.kind,
                external_id: Some(plan.external_id),
                patient: patient.clone(),
                title: plan.title,
                doctor: plan.doctor,
                filename: None,
                pdf,
            },
        ))
    }

    async fn pdf_bytes(&self, pdf: &Pdf, local: &Local<'_>) -> Result<Vec<u8>, Failure> {
        let url = match &pdf.source {
            PdfSource::Inline(bytes) => return Ok(bytes.clone()),
            PdfSource::Url(u) => u,
        };
        if let Some(Resource::Binary(b)) = local.resolve(&Reference::to(url.clone())) {
            return match b.pdf() {
                Ok(Some(Pdf {
                    source: PdfSource::Inline(bytes),
                    ..
                })) => Ok(bytes),
                Ok(_) => Err(Failure::invalid(
                    format!(
                        "{}.url: the Binary `{url}` is {}, not application/pdf",
                        pdf.path, b.content_type
                    ),
                    format!("{}.url", pdf.path),
                )),
                Err(e) => Err(super::outcome::from_fhir_error(&e).at(&pdf.path)),
            };
        }
        let remote = self.remote_for(
            &format!("{}.url", pdf.path),
            &format!("the PDF is by URL ({url})"),
        )?;
        remote.attachment(url, self.max_pdf_bytes, &pdf.path).await
    }

    /// The patient a reference names: contained, in the Bundle, or read from the clinic's
    /// server with the fhir-r4 client.
    pub async fn patient(
        &self,
        reference: Option<&Reference>,
        local: &Local<'_>,
        expression: &str,
    ) -> Result<Patient, Failure> {
        let text = reference
            .and_then(|r| r.reference.as_deref())
            .unwrap_or("")
            .trim()
            .to_owned();
        match ingest::patient_ref(reference, local, expression)? {
            PatientRef::Local(p) => {
                ingest::patient_of(p, &format!("`{text}`"), self.clinic, expression)
            }
            PatientRef::Remote { type_, id } => {
                let remote =
                    self.remote_for(expression, &format!("`{text}` is not in the request"))?;
                let url = remote
                    .url_for(&text)
                    .map_err(|m| Failure::invalid(format!("{expression}: {m}"), expression))?;
                if !remote.on_server(&url) || !ingest::is_fhir_id(&id) {
                    return Err(Failure::invalid(
                        format!(
                            "{expression}: `{text}` is not on the clinic's FHIR server {}; send the Patient contained or in the same Bundle",
                            remote.base()
                        ),
                        expression,
                    ));
                }
                let label = format!("{type_}/{id}");
                let read = remote
                    .client()
                    .read_as::<fhir_r4::Patient>(&id)
                    .await
                    .map_err(|e| read_failure(&e, &label, expression))?;
                ingest::patient_of(&read.resource, &label, self.clinic, expression)
            }
        }
    }

    /// Books, changes, delivers, records or stores what was planned.
    pub async fn execute(&self, planned: Planned) -> Result<Done, Failure> {
        match planned {
            Planned::Nothing(done) => Ok(done),
            Planned::Patient {
                label,
                record,
                notes,
            } => {
                let stored =
                    upsert_from_emr(&self.clinical.broadcasts.patients, &self.clinic.id, *record)
                        .await
                        .map_err(|e| from_clinical(ClinicalError::Store(e), &[]))?;
                let r = stored.record();
                let (acted, what) = match &stored {
                    Stored::Created(_) => (true, "added to"),
                    Stored::Updated(_) => (true, "updated in"),
                    Stored::Unchanged(_) => (false, "already up to date in"),
                };
                let mut message = format!(
                    "{label} {what} the clinic's patient directory as `{}` ({}); nothing is sent for a Patient",
                    r.external_id,
                    r.phone.masked()
                );
                if !notes.is_empty() {
                    message.push_str(&format!(". Note: {}", notes.join("; ")));
                }
                Ok(Done {
                    acted,
                    message,
                    warning: !notes.is_empty(),
                })
            }
            Planned::Book { label, request } => {
                let to = request.patient.phone.masked();
                let booked = self
                    .clinical
                    .book(self.clinic, request)
                    .await
                    .map_err(|e| from_clinical(e, APPOINTMENT_FIELDS))?;
                let id = &booked.appointment.id;
                Ok(if booked.replayed {
                    Done::nothing(format!(
                        "{label} was booked before as {id}; nothing sent again"
                    ))
                } else {
                    Done {
                        acted: true,
                        message: format!(
                            "{label} booked as {id}; the confirmation goes to {to} and reminders are scheduled"
                        ),
                        warning: false,
                    }
                })
            }
            Planned::Change {
                label,
                before,
                change,
            } => {
                let after = self
                    .clinical
                    .change(self.clinic, &before.id, change)
                    .await
                    .map_err(|e| from_clinical(e, APPOINTMENT_FIELDS))?;
                Ok(if after == *before {
                    Done::nothing(format!(
                        "{label} ({}): nothing changed; nothing sent",
                        after.id
                    ))
                } else {
                    let what = if after.status == AppointmentStatus::Cancelled
                        && before.status != AppointmentStatus::Cancelled
                    {
                        "cancelled; the patient is told".to_owned()
                    } else if after.start_ms != before.start_ms {
                        "moved; the patient is told and reminders follow the new time".to_owned()
                    } else {
                        format!("updated (status {:?})", after.status).to_lowercase()
                    };
                    Done {
                        acted: true,
                        message: format!("{label} ({}) {what}", after.id),
                        warning: false,
                    }
                })
            }
            Planned::Documents { label, requests } => {
                let mut sent = Vec::new();
                let mut replayed = 0;
                for (path, request) in requests {
                    let kind = request.kind;
                    let fields = [("pdf", path.as_str())];
                    let delivered = self
                        .clinical
                        .deliver_document(self.clinic, request, self.max_pdf_bytes)
                        .await
                        .map_err(|e| from_clinical(e, &fields))?;
                    if delivered.replayed {
                        replayed += 1;
                    } else {
                        let d = &delivered.document;
                        sent.push(format!(
                            "{} {} (revision {}){}",
                            kind.as_str(),
                            d.id,
                            d.revision,
                            if d.revision > 1 {
                                ", sent as corrected"
                            } else {
                                ""
                            }
                        ));
                    }
                }
                Ok(if sent.is_empty() {
                    Done::nothing(format!(
                        "{label}: already delivered with the same content ({replayed} PDF); nothing sent again"
                    ))
                } else {
                    Done {
                        acted: true,
                        message: format!("{label} delivered: {}", sent.join("; ")),
                        warning: false,
                    }
                })
            }
            Planned::Visit { label, request } => {
                let (visit, replayed) = self
                    .clinical
                    .visit_completed(self.clinic, request)
                    .await
                    .map_err(|e| from_clinical(e, VISIT_FIELDS))?;
                Ok(if replayed {
                    Done::nothing(format!(
                        "{label} was recorded before as {}; nothing scheduled again",
                        visit.id
                    ))
                } else {
                    Done {
                        acted: true,
                        message: format!(
                            "{label} recorded as visit {} ({}); follow-up and feedback scheduled as the clinic configured",
                            visit.id, visit.visit_type
                        ),
                        warning: false,
                    }
                })
            }
        }
    }

    /// `DELETE [base]/Type/id`: a known Appointment is cancelled (the patient was told of it);
    /// other deletions change nothing (the gateway keeps no copy, and a sent document cannot be
    /// recalled).
    pub async fn delete(&self, resource_type: &str, id: &str) -> Result<Done, Failure> {
        let label = format!("{resource_type}/{id}");
        if resource_type != "Appointment" {
            return Ok(Done::nothing(format!(
                "{label} deleted in the EMR: the gateway keeps no copy; nothing was recalled from the patient"
            )));
        }
        let Some(before) = self
            .clinical
            .by_external(self.clinic, &label)
            .await
            .map_err(|e| from_clinical(e, APPOINTMENT_FIELDS))?
        else {
            return Ok(Done::nothing(format!(
                "{label} was never booked through the gateway; nothing to cancel"
            )));
        };
        if before.status == AppointmentStatus::Cancelled {
            return Ok(Done::nothing(format!("{label} is already cancelled")));
        }
        self.execute(Planned::Change {
            label,
            before: Box::new(before),
            change: ChangeRequest {
                status: Some(AppointmentStatus::Cancelled),
                ..ChangeRequest::default()
            },
        })
        .await
    }
}

/// `Encounter.participant[].individual.display` of the first participant that has one.
fn encounter_doctor(raw: &Value) -> Option<String> {
    raw.get("participant")?
        .as_array()?
        .iter()
        .filter_map(|p| p.get("individual"))
        .filter(|i| {
            i.get("reference")
                .and_then(Value::as_str)
                .is_none_or(|r| r.contains("Practitioner"))
        })
        .find_map(|i| i.get("display").and_then(Value::as_str))
        .map(|d| d.trim().chars().take(100).collect())
}

/// A failed read of a referenced resource from the clinic's server.
pub fn read_failure(e: &fhir_r4::ClientError, label: &str, expression: &str) -> Failure {
    use fhir_r4::ClientError as E;
    match e {
        E::Status { status, .. } if *status == 404 || *status == 410 => Failure::invalid(
            format!(
                "{expression}: {label} was not found on the clinic's FHIR server (HTTP {status})"
            ),
            expression,
        ),
        E::Status { status, .. } if *status < 500 && *status != 429 => Failure::upstream(format!(
            "{expression}: the clinic's FHIR server refused to read {label}: {e}"
        )),
        E::Parse { .. } | E::EmptyBody { .. } => Failure::invalid(
            format!("{expression}: the clinic's FHIR server did not return a valid {label}: {e}"),
            expression,
        ),
        _ => Failure::upstream(format!(
            "{expression}: could not read {label} from the clinic's FHIR server: {e}"
        )),
    }
}
