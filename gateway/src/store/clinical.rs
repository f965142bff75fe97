//! Clinical state: appointments (with their EMR ids and the patient's pending question) and the
//! scheduler's due jobs.

use async_trait::async_trait;

use super::{Accepted, StoreError};
use crate::domain::appointment::{Appointment, AppointmentId};
use crate::domain::{NewMessage, TenantId};
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
    /// Several appointments of one tenant in one read (in order; `None` where there is none), so
    /// a batch of due reminders costs one round trip, not one per reminder.
    async fn appointments_by_id(
        &self,
        tenant: &TenantId,
        ids: &[AppointmentId],
    ) -> Result<Vec<Option<Appointment>>, StoreError>;
    /// What sending reminders leaves behind, in one write: each patient's pending question
    /// (`(patient, appointment)`, kept `ttl_ms`) and the appointments with their reminder records.
    /// Every appointment must be `tenant`'s.
    async fn put_reminded(
        &self,
        tenant: &TenantId,
        pending: &[(&str, &AppointmentId)],
        ttl_ms: i64,
        appointments: &[Appointment],
    ) -> Result<(), StoreError>;
    /// Deletes an appointment, its time-index entry and its EMR-id entry (if it still points
    /// at this appointment). `true` when it existed. Its jobs are the caller's to unschedule.
    async fn delete_appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<bool, StoreError>;
}

/// `put_reminded` writes under one tenant's tag only: refuses a batch naming another clinic's
/// appointment before anything is written.
pub(crate) fn only_of(tenant: &TenantId, appointments: &[Appointment]) -> Result<(), StoreError> {
    if appointments.iter().any(|a| &a.tenant != tenant) {
        return Err(StoreError::Conflict(
            "an appointment of another clinic in a reminder batch".into(),
        ));
    }
    Ok(())
}

/// What a send needs to know about its recipient, read for a whole batch at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contact {
    /// The patient sent STOP to this clinic.
    pub opted_out: bool,
    /// Until when the patient's customer-service window is open (`None`: closed).
    pub window_until: Option<i64>,
}

/// Batched forms of the reads and writes of the accept path, for the scheduler's reminder
/// batches: one round trip per hash tag instead of one per message. Each answers what the
/// one-message operation would have answered for each item, in order (the defaults are exactly
/// that loop; the Redis store pipelines it).
#[async_trait]
pub trait BatchStore:
    super::Store + super::records::RecordStore + super::tenancy::ConversationStore
{
    /// Opt-out and window of several patients of one tenant.
    async fn contacts(
        &self,
        tenant: &TenantId,
        patients: &[&str],
    ) -> Result<Vec<Contact>, StoreError> {
        let mut out = Vec::with_capacity(patients.len());
        for p in patients {
            out.push(Contact {
                opted_out: self.opted_out(tenant, p).await?,
                window_until: self.window_until(tenant, p).await?,
            });
        }
        Ok(out)
    }

    /// [`super::Store::accept`] of several messages (any tenants and numbers), in order; one
    /// message's failure does not stop the others.
    async fn accept_many(
        &self,
        msgs: &[&NewMessage],
        max_queue: u64,
    ) -> Vec<Result<Accepted, StoreError>> {
        let mut out = Vec::with_capacity(msgs.len());
        for msg in msgs {
            out.push(self.accept(msg, max_queue).await);
        }
        out
    }
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
