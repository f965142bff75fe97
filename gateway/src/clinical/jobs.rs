//! Due jobs: reminders, follow-ups and feedback requests. Non-essential sends wait out the
//! clinic's quiet hours; a reminder that would land after the appointment started is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Cause, Clinical, ClinicalError, Plan};
use crate::clock::now_ms;
use crate::domain::appointment::{AppointmentId, ReminderRecord};
use crate::domain::records::Visit;
use crate::store::clinical::ClaimedJob;
use crate::store::records::RecordKind;
use crate::tenants::ClinicSettings;
use crate::workflows::quiet::quiet_until;
use crate::workflows::{appointments, visits, Job, Touchpoint};

/// How long a patient's free-text reply is taken to refer to the last appointment asked about.
const PENDING_MS: i64 = 48 * 3_600_000;
/// The slot of the visit whose rating the patient's next digit is.
pub(super) const RATING_SLOT: &str = "rate";

/// What became of a due job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done, or nothing to do (stale, cancelled, gone): remove it.
    Done,
    /// Moved to a later time (quiet hours): keep it.
    Deferred { until_ms: i64 },
}

impl Clinical {
    /// Runs one due job.
    pub async fn run_job(&self, claimed: &ClaimedJob) -> Result<JobOutcome, ClinicalError> {
        let Some(clinic) = self.directory.get(&claimed.tenant) else {
            return Ok(JobOutcome::Done);
        };
        let now = now_ms();
        let quiet = clinic
            .quiet_hours
            .as_ref()
            .and_then(|q| quiet_until(q, &clinic.time_zone, now));
        match &claimed.job {
            Job::Callback { id, attempt } => {
                let outcome = self
                    .callbacks
                    .deliver_stored(&*self.store, &clinic, id, *attempt)
                    .await?;
                let label = match outcome {
                    crate::callbacks::Delivery::Delivered => "delivered",
                    crate::callbacks::Delivery::Failed(_) => "failed",
                    crate::callbacks::Delivery::NoEndpoint => "no_endpoint",
                };
                self.metrics.callbacks.with_label_values(&[label]).inc();
                Ok(JobOutcome::Done)
            }
            Job::Broadcast { id } => {
                if let Some(next) = self.broadcasts.step(&clinic, id).await? {
                    // The next chunk is a new run of the same job: re-scored, not completed.
                    self.store.schedule(&clinic.id, &claimed.job, next).await?;
                    return Ok(JobOutcome::Deferred { until_ms: next });
                }
                Ok(JobOutcome::Done)
            }
            Job::WriteBack {
                link,
                appointment,
                change,
                attempt,
            } => {
                self.run_write_back(&clinic, link, appointment, *change, *attempt)
                    .await
            }
            Job::Reminder { .. } => {
                // One way to run reminders: a batch of one.
                self.run_reminders(&clinic, &[claimed])
                    .await
                    .pop()
                    .unwrap_or(Ok(JobOutcome::Done))
            }
            Job::FollowUp { visit } | Job::Feedback { visit } => {
                let Some(v) = self
                    .load::<Visit>(&clinic.id, RecordKind::Visit, visit)
                    .await?
                else {
                    return Ok(JobOutcome::Done);
                };
                let feedback = matches!(claimed.job, Job::Feedback { .. });
                if let Some(until_ms) = quiet {
                    let touchpoint = if feedback {
                        Touchpoint::Feedback
                    } else {
                        Touchpoint::FollowUp
                    };
                    return self
                        .defer(&clinic, &claimed.job, until_ms, touchpoint)
                        .await;
                }
                let (commands, due_ms) = if feedback {
                    let existing = self.feedback_of(&clinic.id, &v.id).await?;
                    (
                        visits::feedback_due(&v, existing.as_ref(), &clinic, now),
                        v.feedback_due_ms.unwrap_or(v.completed_ms),
                    )
                } else {
                    (
                        visits::follow_up_due(&v, &clinic, now),
                        v.follow_up_due_ms.unwrap_or(v.completed_ms),
                    )
                };
                let sent = self
                    .execute(
                        &clinic,
                        &v.id,
                        commands,
                        Cause {
                            key: &claimed.member,
                            at_ms: due_ms,
                        },
                    )
                    .await?;
                if feedback && !sent.is_empty() {
                    self.store
                        .set_marker(
                            &clinic.id,
                            v.patient.phone.digits(),
                            RATING_SLOT,
                            Some(&v.id),
                            visits::FEEDBACK_OPEN_MS,
                        )
                        .await?;
                }
                Ok(JobOutcome::Done)
            }
        }
    }

    /// Runs due reminder jobs of one clinic as one batch; each job's outcome, in order. Per job
    /// the rules of one reminder: nothing for a stale version, a cancelled appointment or one that
    /// has started; deferred through quiet hours (dropped if the night outlasts the
    /// appointment); STOP respected and the free form inside an open window (`execute_many`);
    /// ids derived from the job, so a re-run sends nothing twice. The batch shares the round
    /// trips: one read of the appointments, one of the recipients, one submit, one write of the
    /// pending questions and reminder records. Jobs that are not reminders are not run here
    /// (they stay claimed and run again after their lease).
    pub async fn run_reminders(
        &self,
        clinic: &Arc<ClinicSettings>,
        jobs: &[&ClaimedJob],
    ) -> Vec<Result<JobOutcome, ClinicalError>> {
        let now = now_ms();
        let quiet = clinic
            .quiet_hours
            .as_ref()
            .and_then(|q| quiet_until(q, &clinic.time_zone, now));
        let mut out: Vec<Result<JobOutcome, ClinicalError>> =
            jobs.iter().map(|_| Ok(JobOutcome::Done)).collect();
        let mut reminders = Vec::with_capacity(jobs.len());
        for (j, claimed) in jobs.iter().enumerate() {
            match &claimed.job {
                Job::Reminder {
                    appointment,
                    version,
                    offset_minutes,
                } => reminders.push((j, appointment.clone(), *version, *offset_minutes)),
                _ => out[j] = Err(ClinicalError::invalid("job", "not a reminder")),
            }
        }
        let ids: Vec<_> = reminders.iter().map(|(_, id, _, _)| id.clone()).collect();
        let mut appointments = match self.store.appointments_by_id(&clinic.id, &ids).await {
            Ok(a) => a,
            Err(e) => {
                for (j, ..) in &reminders {
                    out[*j] = Err(e.clone().into());
                }
                return out;
            }
        };

        // Decide each with the pure workflow; quiet hours move the job, not the batch.
        let mut plans = Vec::new();
        let mut planned = Vec::new();
        let mut deferred = Vec::new();
        for ((j, _, version, offset_minutes), a) in reminders.iter().zip(&appointments) {
            let Some(a) = a else { continue };
            let commands = appointments::reminder_due(a, *version, clinic, now);
            if commands.is_empty() {
                continue;
            }
            if let Some(until_ms) = quiet {
                // After the night is over, if there is still time before the visit.
                if until_ms < a.start_ms {
                    deferred.push((*j, until_ms));
                }
                continue;
            }
            plans.push(Plan {
                subject: a.id.as_str(),
                commands,
                cause: Cause {
                    key: &jobs[*j].member,
                    at_ms: a.start_ms - i64::from(*offset_minutes) * 60_000,
                },
            });
            planned.push(*j);
        }
        let deferrals = deferred.iter().map(|(j, until_ms)| {
            self.defer(clinic, &jobs[*j].job, *until_ms, Touchpoint::Reminder)
        });
        for ((j, _), r) in deferred
            .iter()
            .zip(futures::future::join_all(deferrals).await)
        {
            out[*j] = r;
        }
        let sent = self.execute_many(clinic, plans).await;

        // What the sent reminders leave behind: the patient's pending question and the
        // appointment's reminder record, one write for the batch.
        let mut changed = Vec::new();
        let mut changed_at: HashMap<AppointmentId, usize> = HashMap::new();
        let mut pending = Vec::new();
        let mut written = Vec::new();
        let slots: HashMap<usize, usize> = reminders
            .iter()
            .enumerate()
            .map(|(k, (j, ..))| (*j, k))
            .collect();
        for (j, result) in planned.into_iter().zip(sent) {
            let sent = match result {
                Ok(sent) => sent,
                Err(e) => {
                    out[j] = Err(e.into());
                    continue;
                }
            };
            let Some((_, message)) = sent.into_iter().find(|(t, _)| *t == Touchpoint::Reminder)
            else {
                continue;
            };
            let (Some(k), Job::Reminder { offset_minutes, .. }) = (slots.get(&j), &jobs[j].job)
            else {
                continue;
            };
            let Some(a) = appointments.get_mut(*k).and_then(Option::take) else {
                continue;
            };
            pending.push((a.patient.phone.digits().to_owned(), a.id.clone()));
            written.push(j);
            if a.reminders.iter().any(|r| r.message == message) {
                continue;
            }
            // Two reminders of one appointment due together (a restart, the end of quiet hours)
            // were read as two copies: both records go into one write.
            let c = *changed_at.entry(a.id.clone()).or_insert_with(|| {
                changed.push(a);
                changed.len() - 1
            });
            if let Some(a) = changed.get_mut(c) {
                a.reminders.push(ReminderRecord {
                    offset_minutes: *offset_minutes,
                    message,
                    sent_ms: now_ms(),
                });
            }
        }
        let pending: Vec<(&str, &AppointmentId)> =
            pending.iter().map(|(p, id)| (p.as_str(), id)).collect();
        if let Err(e) = self
            .store
            .put_reminded(&clinic.id, &pending, PENDING_MS, &changed)
            .await
        {
            for j in written {
                out[j] = Err(e.clone().into());
            }
        }
        out
    }

    async fn defer(
        &self,
        clinic: &ClinicSettings,
        job: &Job,
        until_ms: i64,
        touchpoint: Touchpoint,
    ) -> Result<JobOutcome, ClinicalError> {
        self.store.schedule(&clinic.id, job, until_ms).await?;
        self.metrics
            .touchpoints
            .with_label_values(&[touchpoint.as_str(), "deferred"])
            .inc();
        Ok(JobOutcome::Deferred { until_ms })
    }
}
