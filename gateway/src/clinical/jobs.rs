//! Due jobs: reminders, follow-ups and feedback requests. Non-essential sends wait out the
//! clinic's quiet hours; a reminder that would land after the appointment started is dropped.

use super::{Cause, Clinical, ClinicalError};
use crate::clock::now_ms;
use crate::domain::appointment::ReminderRecord;
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
            Job::Reminder {
                appointment,
                version,
                offset_minutes,
            } => {
                let Some(mut a) = self.store.appointment(&clinic.id, appointment).await? else {
                    return Ok(JobOutcome::Done);
                };
                let commands = appointments::reminder_due(&a, *version, &clinic, now);
                if commands.is_empty() {
                    return Ok(JobOutcome::Done);
                }
                if let Some(until_ms) = quiet {
                    // After the night is over, if there is still time before the visit.
                    return if until_ms < a.start_ms {
                        self.defer(&clinic, &claimed.job, until_ms, Touchpoint::Reminder)
                            .await
                    } else {
                        Ok(JobOutcome::Done)
                    };
                }
                let due_ms = a.start_ms - i64::from(*offset_minutes) * 60_000;
                let sent = self
                    .execute(
                        &clinic,
                        a.id.as_str(),
                        commands,
                        Cause {
                            key: &claimed.member,
                            at_ms: due_ms,
                        },
                    )
                    .await?;
                if let Some((_, message)) =
                    sent.into_iter().find(|(t, _)| *t == Touchpoint::Reminder)
                {
                    self.store
                        .set_pending(&clinic.id, a.patient.phone.digits(), &a.id, PENDING_MS)
                        .await?;
                    if !a.reminders.iter().any(|r| r.message == message) {
                        a.reminders.push(ReminderRecord {
                            offset_minutes: *offset_minutes,
                            message,
                            sent_ms: now_ms(),
                        });
                        self.store.put_appointment(&a).await?;
                    }
                }
                Ok(JobOutcome::Done)
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
