//! Telling the clinic's EMR what the patient decided. Each EMR link (HL7 v2 over MLLP, FHIR R4)
//! implements [`EmrLink`]; the workflows only say what changed. A write-back is a scheduler job
//! per link, so it survives restarts and is retried with backoff until the EMR takes it; when it
//! gives up, the clinic gets a `writeback.failed` callback and the failure is counted.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Clinical, ClinicalError, JobOutcome};
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentId};
use crate::tenants::ClinicSettings;
use crate::workflows::{Job, PatientChange};

/// Why a write-back did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteBackError {
    /// Worth trying again (timeout, 5xx, NAK with AE, connection refused).
    #[error("{0}")]
    Retry(String),
    /// Never going to work (the EMR rejected it: AR, 4xx other than a version conflict).
    #[error("{0}")]
    Rejected(String),
}

#[async_trait]
pub trait EmrLink: Send + Sync + 'static {
    /// A stable name for jobs and metrics (`hl7`, `fhir`).
    fn name(&self) -> &'static str;
    /// Whether this clinic has an EMR of this kind to write back to.
    fn wants(&self, clinic: &ClinicSettings) -> bool;
    /// Delivers the change. Called again after a `Retry` error (and after a crash), so it must
    /// be safe to repeat.
    async fn write_back(
        &self,
        clinic: &ClinicSettings,
        appointment: &Appointment,
        change: PatientChange,
    ) -> Result<(), WriteBackError>;
}

/// Attempts before giving up: with the backoff below, about a day.
const MAX_ATTEMPTS: u32 = 30;

/// 5 s, 10 s, 20 s … capped at one hour.
pub fn backoff_ms(attempt: u32) -> i64 {
    (5_000i64 << attempt.min(10)).min(3_600_000)
}

impl Clinical {
    pub(super) async fn schedule_write_back(
        &self,
        clinic: &ClinicSettings,
        appointment: &AppointmentId,
        change: PatientChange,
    ) -> Result<(), ClinicalError> {
        for link in self.emr.iter().filter(|l| l.wants(clinic)) {
            let job = Job::WriteBack {
                link: link.name().to_owned(),
                appointment: appointment.clone(),
                change,
                attempt: 0,
            };
            self.store.schedule(&clinic.id, &job, now_ms()).await?;
        }
        Ok(())
    }

    pub(super) async fn run_write_back(
        &self,
        clinic: &Arc<ClinicSettings>,
        link_name: &str,
        appointment: &AppointmentId,
        change: PatientChange,
        attempt: u32,
    ) -> Result<JobOutcome, ClinicalError> {
        let Some(link) = self.emr.iter().find(|l| l.name() == link_name) else {
            return Ok(JobOutcome::Done);
        };
        let Some(a) = self.store.appointment(&clinic.id, appointment).await? else {
            return Ok(JobOutcome::Done);
        };
        let result = link.write_back(clinic, &a, change).await;
        let label = match &result {
            Ok(()) => "ok",
            Err(WriteBackError::Retry(_)) if attempt + 1 < MAX_ATTEMPTS => "retry",
            Err(_) => "failed",
        };
        self.metrics
            .writebacks
            .with_label_values(&[link_name, label])
            .inc();
        match result {
            Ok(()) => Ok(JobOutcome::Done),
            Err(WriteBackError::Retry(why)) if attempt + 1 < MAX_ATTEMPTS => {
                tracing::warn!(tenant = %clinic.id, appointment = %a.id, link = link_name, attempt, error = %why, "EMR write-back failed; retrying");
                let next = Job::WriteBack {
                    link: link_name.to_owned(),
                    appointment: appointment.clone(),
                    change,
                    attempt: attempt + 1,
                };
                // The next attempt is a new job; this one completes.
                self.store
                    .schedule(&clinic.id, &next, now_ms() + backoff_ms(attempt))
                    .await?;
                Ok(JobOutcome::Done)
            }
            Err(e) => {
                tracing::error!(tenant = %clinic.id, appointment = %a.id, link = link_name, attempt, error = %e, "EMR write-back gave up");
                self.callbacks.send(
                    clinic,
                    "writeback.failed",
                    serde_json::json!({"appointment": a.id, "external_id": a.external_id, "link": link_name, "change": change, "error": e.to_string(), "attempts": attempt + 1}),
                );
                Ok(JobOutcome::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff_ms(0), 5_000);
        assert_eq!(backoff_ms(1), 10_000);
        assert_eq!(backoff_ms(9), 2_560_000);
        assert_eq!(backoff_ms(10), 3_600_000);
        assert_eq!(backoff_ms(29), 3_600_000);
    }
}
