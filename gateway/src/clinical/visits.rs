//! Completed visits: they schedule the follow-up and the feedback request, and mark the
//! appointment they came from as attended.

use std::sync::Arc;

use super::{Cause, Clinical, ClinicalError};
use crate::clock::now_ms;
use crate::domain::appointment::{AppointmentId, AppointmentStatus, Patient};
use crate::domain::records::{new_record_id, Feedback, Visit};
use crate::store::records::RecordKind;
use crate::tenants::ClinicSettings;
use crate::workflows::visits;

#[derive(Debug, Clone)]
pub struct VisitRequest {
    pub external_id: Option<String>,
    pub patient: Patient,
    pub visit_type: String,
    pub doctor: Option<String>,
    pub appointment: Option<AppointmentId>,
    pub completed_ms: i64,
}

impl Clinical {
    /// Records a completed visit; the same EMR id again returns the stored visit.
    pub async fn visit_completed(
        &self,
        clinic: &Arc<ClinicSettings>,
        input: VisitRequest,
    ) -> Result<(Visit, bool), ClinicalError> {
        let now = now_ms();
        if input.completed_ms > now + 5 * 60_000 {
            return Err(ClinicalError::invalid("completed_at", "is in the future"));
        }
        if input.visit_type.trim().is_empty() || input.visit_type.len() > 64 {
            return Err(ClinicalError::invalid("visit_type", "1 to 64 characters"));
        }
        if let Some(ext) = input.external_id.as_deref() {
            if ext.is_empty() || ext.len() > 128 {
                return Err(ClinicalError::invalid("external_id", "1 to 128 characters"));
            }
            if let Some(id) = self
                .store
                .record_by_external(&clinic.id, RecordKind::Visit, ext)
                .await?
            {
                if let Some(v) = self
                    .load::<Visit>(&clinic.id, RecordKind::Visit, &id)
                    .await?
                {
                    return Ok((v, true));
                }
            }
        }
        let mut doctor = input.doctor;
        if let Some(apt) = &input.appointment {
            let mut a = self
                .store
                .appointment(&clinic.id, apt)
                .await?
                .ok_or_else(|| ClinicalError::invalid("appointment", "no such appointment"))?;
            if a.patient.phone != input.patient.phone {
                return Err(ClinicalError::invalid(
                    "appointment",
                    "belongs to another patient",
                ));
            }
            doctor = doctor.or_else(|| a.doctor.clone());
            if a.status != AppointmentStatus::Attended {
                a.status = AppointmentStatus::Attended;
                a.updated_ms = now;
                self.store.put_appointment(&a).await?;
                crate::metrics::ops::count_attendance(&self.metrics, &*self.store, &a).await;
            }
        }
        let mut visit = Visit {
            id: new_record_id("vis"),
            tenant: clinic.id.clone(),
            external_id: input.external_id,
            patient: input.patient,
            visit_type: input.visit_type.trim().to_owned(),
            doctor,
            appointment: input.appointment,
            completed_ms: input.completed_ms,
            follow_up_due_ms: None,
            feedback_due_ms: None,
        };
        let commands = visits::completed(&mut visit, clinic, now);
        self.save_visit(&visit).await?;
        let key = format!("visit|{}", visit.id);
        self.execute(
            clinic,
            &visit.id,
            commands,
            Cause {
                key: &key,
                at_ms: visit.completed_ms,
            },
        )
        .await?;
        Ok((visit, false))
    }

    async fn save_visit(&self, v: &Visit) -> Result<(), ClinicalError> {
        self.save(
            &v.tenant,
            RecordKind::Visit,
            &v.id,
            v.completed_ms,
            v.external_id.as_deref(),
            v,
        )
        .await
    }

    pub async fn feedback_of(
        &self,
        tenant: &crate::domain::TenantId,
        visit: &str,
    ) -> Result<Option<Feedback>, ClinicalError> {
        self.load(tenant, RecordKind::Feedback, visit).await
    }

    pub async fn save_feedback(&self, f: &Feedback) -> Result<(), ClinicalError> {
        self.save(
            &f.tenant,
            RecordKind::Feedback,
            &f.visit,
            f.received_ms,
            None,
            f,
        )
        .await
    }
}
