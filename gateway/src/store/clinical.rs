//! Clinical state: appointments (with their EMR ids and the patient's pending question) and the
//! scheduler's due jobs.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::appointment::{Appointment, AppointmentId};
use crate::domain::TenantId;
use crate::workflows::Job;

#[async_trait]
pub trait AppointmentStore: Send + Sync + 'static {
    /// Creates or replaces an appointment; indexes its EMR id and start time.
    async fn put_appointment(&self, a: &Appointment) -> Result<(), StoreError>;
    async fn appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<Option<Appointment>, StoreError>;
    async fn appointment_by_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<AppointmentId>, StoreError>;
    /// Claims the EMR id for `id` unless another appointment holds it (atomic across nodes):
    /// `None` when claimed (or already ours), else the holder.
    async fn claim_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
        id: &AppointmentId,
    ) -> Result<Option<AppointmentId>, StoreError>;
    /// Appointments starting in `[from_ms, to_ms)`, by start time, at most `limit`.
    async fn appointments(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Appointment>, StoreError>;
    /// The appointment a patient's next free-text reply refers to (the last one we asked about).
    async fn set_pending(
        &self,
        tenant: &TenantId,
        patient: &str,
        id: &AppointmentId,
        ttl_ms: i64,
    ) -> Result<(), StoreError>;
    async fn pending(
        &self,
        tenant: &TenantId,
        patient: &str,
    ) -> Result<Option<AppointmentId>, StoreError>;
    /// Forgets the patient's pending question.
    async fn clear_pending(&self, tenant: &TenantId, patient: &str) -> Result<(), StoreError>;
    /// Deletes an appointment, its time-index entry and its EMR-id entry (if it still points
    /// at this appointment). `true` when it existed. Its jobs are the caller's to unschedule.
    async fn delete_appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<bool, StoreError>;
}

/// A job claimed from the scheduler, to complete once done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub tenant: TenantId,
    pub job: Job,
    /// The scheduler's own handle of the job.
    pub member: String,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Schedules a job (idempotent: the same job scheduled twice runs once, at the later time).
    async fn schedule(&self, tenant: &TenantId, job: &Job, due_ms: i64) -> Result<(), StoreError>;
    /// Claims due jobs atomically across nodes. A claimed job not completed within `lease_ms`
    /// (its node died) becomes due again.
    async fn claim_due(
        &self,
        now_ms: i64,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError>;
    async fn complete(&self, job: &ClaimedJob) -> Result<(), StoreError>;
    /// Completes several jobs in one round trip.
    async fn complete_many(&self, jobs: &[&ClaimedJob]) -> Result<(), StoreError> {
        for job in jobs {
            self.complete(job).await?;
        }
        Ok(())
    }
    /// Removes jobs that will not be wanted (an appointment cancelled or moved); unknown jobs
    /// are ignored.
    async fn unschedule(&self, tenant: &TenantId, jobs: &[Job]) -> Result<(), StoreError>;
    /// Jobs waiting (due or not).
    async fn scheduled(&self) -> Result<u64, StoreError>;
    /// The due time of the job that should have run first: the most overdue one (claimed jobs
    /// count from the end of their lease). `None` when nothing is scheduled. For scheduler lag.
    async fn oldest_due(&self) -> Result<Option<i64>, StoreError>;
    /// When the oldest entry still waiting to be claimed in each lane of `number` was queued
    /// (unix ms, by `Lane::index`), for the queue-age gauges. Stores that do not keep the time
    /// of their entries answer `None` for every lane. (Kept beside the scheduler's probe rather
    /// than on `Store`, whose contract the queue tests pin down.)
    async fn oldest_ready(
        &self,
        _number: &crate::domain::PhoneNumberId,
    ) -> Result<[Option<i64>; 3], StoreError> {
        Ok([None; 3])
    }
}

/// The scheduler's member string for a job: stable, so scheduling is idempotent.
pub fn job_member(tenant: &TenantId, job: &Job) -> String {
    let json = serde_json::to_string(job).unwrap_or_default();
    format!("{tenant}|{json}")
}

pub fn parse_member(member: &str) -> Option<(TenantId, Job)> {
    let (tenant, json) = member.split_once('|')?;
    Some((
        TenantId::parse(tenant).ok()?,
        serde_json::from_str(json).ok()?,
    ))
}
