//! Booking, moving, cancelling and marking appointments, whoever asks (REST, HL7, FHIR).

use std::sync::Arc;

use super::{Cause, Clinical, ClinicalError};
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentId, AppointmentStatus, Patient};
use crate::tenants::ClinicSettings;
use crate::workflows::appointments;

/// A booking, parsed at the edge.
#[derive(Debug, Clone)]
pub struct BookRequest {
    pub external_id: Option<String>,
    pub patient: Patient,
    pub doctor: Option<String>,
    /// Index into the clinic's locations.
    pub location: Option<usize>,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// The appointment, and whether it already existed (the EMR sent the booking again).
#[derive(Debug, Clone)]
pub struct Booked {
    pub appointment: Appointment,
    pub replayed: bool,
}

/// A change; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ChangeRequest {
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub status: Option<AppointmentStatus>,
    pub doctor: Option<String>,
}

impl Clinical {
    pub async fn book(
        &self,
        clinic: &Arc<ClinicSettings>,
        input: BookRequest,
    ) -> Result<Booked, ClinicalError> {
        let now = now_ms();
        if input.start_ms <= now {
            return Err(ClinicalError::invalid("start", "must be in the future"));
        }
        if input.end_ms.is_some_and(|e| e <= input.start_ms) {
            return Err(ClinicalError::invalid("end", "must be after start"));
        }
        if input.location.is_some_and(|i| i >= clinic.locations.len()) {
            return Err(ClinicalError::invalid(
                "location",
                "no such location of this clinic",
            ));
        }
        if let Some(ext) = input.external_id.as_deref() {
            if ext.is_empty() || ext.len() > 128 {
                return Err(ClinicalError::invalid("external_id", "1 to 128 characters"));
            }
            // The EMR sends bookings again after timeouts: the same id is the same appointment.
            if let Some(existing) = self.by_external(clinic, ext).await? {
                return Ok(Booked {
                    appointment: existing,
                    replayed: true,
                });
            }
        }
        let a = Appointment {
            id: AppointmentId::generate(),
            tenant: clinic.id.clone(),
            external_id: input.external_id,
            patient: input.patient,
            doctor: input.doctor,
            location: input.location,
            start_ms: input.start_ms,
            end_ms: input.end_ms,
            status: AppointmentStatus::Booked,
            response: None,
            version: 1,
            reminders: Vec::new(),
            created_ms: now,
            updated_ms: now,
        };
        if let Some(ext) = a.external_id.as_deref() {
            // Two deliveries of the same booking at once (two nodes, a retry racing the first
            // attempt): one claims the EMR id, the other answers with its appointment.
            if let Some(holder) = self.store.claim_external(&clinic.id, ext, &a.id).await? {
                if let Some(existing) = self.store.appointment(&clinic.id, &holder).await? {
                    return Ok(Booked {
                        appointment: existing,
                        replayed: true,
                    });
                }
                // The holder's record is not written yet: the first delivery is mid-way.
                return Err(ClinicalError::Conflict(format!(
                    "appointment {ext} is being booked by a concurrent request; retry"
                )));
            }
        }
        self.store.put_appointment(&a).await?;
        let commands = appointments::booked(&a, clinic, &clinic.reminder_offsets_minutes, now);
        let key = format!("book|{}|{}", a.id, a.version);
        self.execute(
            clinic,
            a.id.as_str(),
            commands,
            Cause {
                key: &key,
                at_ms: a.updated_ms,
            },
        )
        .await?;
        Ok(Booked {
            appointment: a,
            replayed: false,
        })
    }

    pub async fn by_external(
        &self,
        clinic: &ClinicSettings,
        external_id: &str,
    ) -> Result<Option<Appointment>, ClinicalError> {
        match self
            .store
            .appointment_by_external(&clinic.id, external_id)
            .await?
        {
            Some(id) => Ok(self.store.appointment(&clinic.id, &id).await?),
            None => Ok(None),
        }
    }

    /// Moves, cancels, re-assigns or marks (arrived, attended, no-show) an appointment. A change
    /// that changes nothing (the EMR re-sent it) sends nothing.
    pub async fn change(
        &self,
        clinic: &Arc<ClinicSettings>,
        id: &AppointmentId,
        input: ChangeRequest,
    ) -> Result<Appointment, ClinicalError> {
        let mut a = self
            .store
            .appointment(&clinic.id, id)
            .await?
            .ok_or_else(|| ClinicalError::NotFound("no such appointment".into()))?;
        let now = now_ms();
        if a.status == AppointmentStatus::Cancelled {
            if input.status == Some(AppointmentStatus::Cancelled) {
                return Ok(a);
            }
            return Err(ClinicalError::Conflict(
                "a cancelled appointment cannot change; book a new one".into(),
            ));
        }
        if input.status == Some(AppointmentStatus::Booked) {
            return Err(ClinicalError::invalid(
                "status",
                "use cancelled, arrived, attended or no_show",
            ));
        }
        let mut changed = false;
        if let Some(d) = input.doctor {
            changed |= a.doctor.as_deref() != Some(&d);
            a.doctor = Some(d);
        }
        if let Some(end) = input.end_ms {
            changed |= a.end_ms != Some(end);
            a.end_ms = Some(end);
        }
        let moved = match input.start_ms {
            Some(start) if start != a.start_ms => {
                if start <= now {
                    return Err(ClinicalError::invalid("start", "must be in the future"));
                }
                a.start_ms = start;
                a.version += 1;
                a.response = None;
                true
            }
            _ => false,
        };
        let cancelled = input.status == Some(AppointmentStatus::Cancelled);
        let status_before = a.status;
        if let Some(status) = input.status.filter(|s| *s != a.status) {
            a.status = status;
            changed = true;
            if cancelled {
                a.version += 1;
            }
        }
        if !(changed || moved) {
            return Ok(a);
        }
        a.updated_ms = now;
        self.store.put_appointment(&a).await?;
        if a.status != status_before {
            crate::metrics::ops::count_attendance(&self.metrics, &*self.store, &a).await;
        }
        let commands = if cancelled {
            appointments::cancelled_by_clinic(&a, clinic, now)
        } else if moved {
            appointments::rescheduled(&a, clinic, &clinic.reminder_offsets_minutes, now)
        } else {
            Vec::new()
        };
        let key = format!("change|{}|{}", a.id, a.version);
        self.execute(
            clinic,
            a.id.as_str(),
            commands,
            Cause {
                key: &key,
                at_ms: a.updated_ms,
            },
        )
        .await?;
        Ok(a)
    }
}
