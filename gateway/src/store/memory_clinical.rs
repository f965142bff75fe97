//! `MemoryStore`'s clinical half: appointments and scheduled jobs.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::clinical::{
    job_member, parse_member, AppointmentStore, BatchStore, ClaimedJob, JobStore,
};
use super::{MemoryStore, StoreError};
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentId};
use crate::domain::TenantId;
use crate::workflows::Job;

#[derive(Default)]
pub struct State {
    appointments: HashMap<(TenantId, AppointmentId), Appointment>,
    external: HashMap<(TenantId, String), AppointmentId>,
    pending: HashMap<(TenantId, String), (AppointmentId, i64)>,
    /// member → due ms.
    jobs: BTreeMap<String, i64>,
}

#[async_trait]
impl AppointmentStore for MemoryStore {
    async fn put_appointment(&self, a: &Appointment) -> Result<(), StoreError> {
        let mut s = self.clinical.lock();
        if let Some(ext) = &a.external_id {
            s.external
                .insert((a.tenant.clone(), ext.clone()), a.id.clone());
        }
        s.appointments
            .insert((a.tenant.clone(), a.id.clone()), a.clone());
        Ok(())
    }

    async fn appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<Option<Appointment>, StoreError> {
        Ok(self
            .clinical
            .lock()
            .appointments
            .get(&(tenant.clone(), id.clone()))
            .cloned())
    }

    async fn appointment_by_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<AppointmentId>, StoreError> {
        Ok(self
            .clinical
            .lock()
            .external
            .get(&(tenant.clone(), external_id.to_owned()))
            .cloned())
    }

    async fn claim_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
        id: &AppointmentId,
    ) -> Result<Option<AppointmentId>, StoreError> {
        let mut s = self.clinical.lock();
        let holder = s
            .external
            .entry((tenant.clone(), external_id.to_owned()))
            .or_insert_with(|| id.clone());
        Ok((holder != id).then(|| holder.clone()))
    }

    async fn appointments(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Appointment>, StoreError> {
        let s = self.clinical.lock();
        let mut out: Vec<Appointment> = s
            .appointments
            .values()
            .filter(|a| &a.tenant == tenant && a.start_ms >= from_ms && a.start_ms < to_ms)
            .cloned()
            .collect();
        out.sort_by_key(|a| (a.start_ms, a.id.clone()));
        out.truncate(limit);
        Ok(out)
    }

    async fn set_pending(
        &self,
        tenant: &TenantId,
        patient: &str,
        id: &AppointmentId,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let key = (tenant.clone(), patient.trim_start_matches('+').to_owned());
        self.clinical
            .lock()
            .pending
            .insert(key, (id.clone(), now_ms() + ttl_ms));
        Ok(())
    }

    async fn pending(
        &self,
        tenant: &TenantId,
        patient: &str,
    ) -> Result<Option<AppointmentId>, StoreError> {
        let key = (tenant.clone(), patient.trim_start_matches('+').to_owned());
        Ok(self
            .clinical
            .lock()
            .pending
            .get(&key)
            .filter(|(_, until)| *until > now_ms())
            .map(|(id, _)| id.clone()))
    }

    async fn clear_pending(&self, tenant: &TenantId, patient: &str) -> Result<(), StoreError> {
        let key = (tenant.clone(), patient.trim_start_matches('+').to_owned());
        self.clinical.lock().pending.remove(&key);
        Ok(())
    }

    async fn appointments_by_id(
        &self,
        tenant: &TenantId,
        ids: &[AppointmentId],
    ) -> Result<Vec<Option<Appointment>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.appointment(tenant, id).await?);
        }
        Ok(out)
    }

    async fn put_reminded(
        &self,
        tenant: &TenantId,
        pending: &[(&str, &AppointmentId)],
        ttl_ms: i64,
        appointments: &[Appointment],
    ) -> Result<(), StoreError> {
        super::clinical::only_of(tenant, appointments)?;
        for (patient, id) in pending {
            self.set_pending(tenant, patient, id, ttl_ms).await?;
        }
        for a in appointments {
            self.put_appointment(a).await?;
        }
        Ok(())
    }

    async fn delete_appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<bool, StoreError> {
        let mut s = self.clinical.lock();
        let Some(a) = s.appointments.remove(&(tenant.clone(), id.clone())) else {
            return Ok(false);
        };
        if let Some(ext) = a.external_id {
            let key = (tenant.clone(), ext);
            if s.external.get(&key).is_some_and(|held| held == id) {
                s.external.remove(&key);
            }
        }
        Ok(true)
    }
}

/// The one-message operations are the memory store's record: the batch is their loop.
impl BatchStore for MemoryStore {}

#[async_trait]
impl JobStore for MemoryStore {
    async fn schedule(&self, tenant: &TenantId, job: &Job, due_ms: i64) -> Result<(), StoreError> {
        self.clinical
            .lock()
            .jobs
            .insert(job_member(tenant, job), due_ms);
        Ok(())
    }

    async fn claim_due(
        &self,
        now_ms: i64,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut s = self.clinical.lock();
        let mut due: Vec<(String, i64)> = s
            .jobs
            .iter()
            .filter(|(_, d)| **d <= now_ms)
            .map(|(m, d)| (m.clone(), *d))
            .collect();
        due.sort_by_key(|(_, d)| *d);
        due.truncate(max);
        let mut out = Vec::new();
        for (member, _) in due {
            s.jobs.insert(member.clone(), now_ms + lease_ms);
            if let Some((tenant, job)) = parse_member(&member) {
                out.push(ClaimedJob {
                    tenant,
                    job,
                    member,
                });
            } else {
                s.jobs.remove(&member);
            }
        }
        Ok(out)
    }

    async fn complete(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        self.clinical.lock().jobs.remove(&job.member);
        Ok(())
    }

    async fn unschedule(&self, tenant: &TenantId, jobs: &[Job]) -> Result<(), StoreError> {
        let mut s = self.clinical.lock();
        for job in jobs {
            s.jobs.remove(&job_member(tenant, job));
        }
        Ok(())
    }

    async fn scheduled(&self) -> Result<u64, StoreError> {
        Ok(self.clinical.lock().jobs.len() as u64)
    }

    async fn oldest_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.clinical.lock().jobs.values().min().copied())
    }
}
