//! Runs the appointment workflows: loads state, calls the pure workflow, executes its commands
//! (sends through the clinic's actor, jobs into the scheduler, callbacks to the clinic), and
//! stores what changed. Used by the API, the scheduler and inbound replies alike.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::callbacks::Callbacks;
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentId, ReminderRecord};
use crate::domain::{MessageId, NewMessage};
use crate::metrics::Metrics;
use crate::outbound::SubmitError;
use crate::store::clinical::ClaimedJob;
use crate::store::{Backend, StoreError};
use crate::tenants::actors::Actors;
use crate::tenants::{ClinicSettings, Directory};
use crate::workflows::intents::{parse_payload, parse_text, Intent};
use crate::workflows::{appointments, Command, Job, Touchpoint};

/// How long a patient's free-text reply is taken to refer to the last appointment asked about.
const PENDING_MS: i64 = 48 * 3_600_000;

#[derive(Clone)]
pub struct Clinical {
    pub store: Arc<dyn Backend>,
    pub actors: Arc<Actors>,
    pub directory: Arc<Directory>,
    pub callbacks: Callbacks,
    pub metrics: Metrics,
}

/// A message id fixed by what caused it, so a job run twice (its node died after sending) is
/// accepted once: the outbox treats the second accept of the same id as a no-op.
fn derived_id(cause: &str, at_ms: i64) -> MessageId {
    let digest = Sha256::digest(cause.as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let id = ulid::Ulid::from_parts(at_ms.max(0) as u64, u128::from_be_bytes(random));
    MessageId::parse_issued(&format!("msg_{id}")).unwrap_or_else(|_| MessageId::generate())
}

impl Clinical {
    /// Executes commands for an appointment; returns the ids of the messages accepted.
    pub async fn execute(
        &self,
        clinic: &Arc<ClinicSettings>,
        a: &Appointment,
        commands: Vec<Command>,
        cause: &str,
    ) -> Result<Vec<(Touchpoint, MessageId)>, StoreError> {
        let mut sent = Vec::new();
        for (i, command) in commands.into_iter().enumerate() {
            match command {
                Command::Send {
                    touchpoint,
                    to,
                    content,
                    lane,
                    deadline_ms,
                } => {
                    let now = now_ms();
                    let Some(number) = clinic.numbers.first() else {
                        continue;
                    };
                    let msg = NewMessage {
                        id: derived_id(&format!("{cause}|{i}"), now),
                        tenant: clinic.id.clone(),
                        number: number.phone_number_id.clone(),
                        to,
                        lane,
                        content,
                        deadline_ms: Some(deadline_ms.max(now + 60_000)),
                        created_ms: now,
                    };
                    match self.actors.submit(clinic.clone(), msg.clone()).await {
                        Ok(Ok(_)) => {
                            self.metrics
                                .touchpoints
                                .with_label_values(&[touchpoint.as_str(), "accepted"])
                                .inc();
                            sent.push((touchpoint, msg.id));
                        }
                        Ok(Err(SubmitError::Store(e))) => return Err(e),
                        Ok(Err(refused)) => {
                            self.metrics
                                .touchpoints
                                .with_label_values(&[touchpoint.as_str(), "refused"])
                                .inc();
                            tracing::warn!(tenant = %clinic.id, appointment = %a.id, touchpoint = touchpoint.as_str(), reason = %refused, "touchpoint not sent");
                            self.callbacks.send(clinic, "touchpoint.refused", serde_json::json!({
                                "appointment": a.id, "touchpoint": touchpoint.as_str(), "reason": refused.to_string()}));
                        }
                        Err(e) => {
                            return Err(StoreError::Unavailable(format!("clinic actor: {e}")))
                        }
                    }
                }
                Command::Schedule { job, due_ms } => {
                    self.store.schedule(&clinic.id, &job, due_ms).await?
                }
                Command::Callback { event, data } => self.callbacks.send(clinic, event, data),
            }
        }
        Ok(sent)
    }

    pub async fn booked(
        &self,
        clinic: &Arc<ClinicSettings>,
        a: &Appointment,
    ) -> Result<(), StoreError> {
        let commands = appointments::booked(a, clinic, &clinic.reminder_offsets_minutes, now_ms());
        self.execute(clinic, a, commands, &format!("book|{}|{}", a.id, a.version))
            .await?;
        Ok(())
    }

    pub async fn rescheduled(
        &self,
        clinic: &Arc<ClinicSettings>,
        a: &Appointment,
    ) -> Result<(), StoreError> {
        let commands =
            appointments::rescheduled(a, clinic, &clinic.reminder_offsets_minutes, now_ms());
        self.execute(clinic, a, commands, &format!("move|{}|{}", a.id, a.version))
            .await?;
        Ok(())
    }

    pub async fn cancelled_by_clinic(
        &self,
        clinic: &Arc<ClinicSettings>,
        a: &Appointment,
    ) -> Result<(), StoreError> {
        let commands = appointments::cancelled_by_clinic(a, clinic, now_ms());
        self.execute(
            clinic,
            a,
            commands,
            &format!("cancel|{}|{}", a.id, a.version),
        )
        .await?;
        Ok(())
    }

    /// Runs one due job; `Ok` means it is done (including "nothing to do": stale or gone).
    pub async fn run_job(&self, claimed: &ClaimedJob) -> Result<(), StoreError> {
        let Some(clinic) = self.directory.get(&claimed.tenant) else {
            return Ok(());
        };
        match &claimed.job {
            Job::Reminder {
                appointment,
                version,
                offset_minutes,
            } => {
                let Some(mut a) = self.store.appointment(&clinic.id, appointment).await? else {
                    return Ok(());
                };
                let commands = appointments::reminder_due(&a, *version, &clinic, now_ms());
                if commands.is_empty() {
                    return Ok(());
                }
                let sent = self.execute(&clinic, &a, commands, &claimed.member).await?;
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
                Ok(())
            }
        }
    }

    /// A patient's message: a reply to an appointment question, or nothing for us.
    pub async fn inbound(
        &self,
        clinic: &Arc<ClinicSettings>,
        from: &str,
        wamid: &str,
        button_payload: Option<&str>,
        text: Option<&str>,
    ) -> Result<(), StoreError> {
        let (intent, id, version) = match (
            button_payload.and_then(parse_payload),
            text.and_then(parse_text),
        ) {
            (Some((intent, id, version)), _) => (intent, id, Some(version)),
            (None, Some(intent)) => match self.store.pending(&clinic.id, from).await? {
                Some(id) => (intent, id, None),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let Some(a) = self.store.appointment(&clinic.id, &id).await? else {
            return Ok(());
        };
        if a.patient.phone.digits() != from.trim_start_matches('+') {
            // A payload naming someone else's appointment is ignored.
            return Ok(());
        }
        let (updated, commands) = appointments::reply(&a, intent, version, clinic, now_ms());
        if let Some(u) = &updated {
            self.store.put_appointment(u).await?;
        }
        let current = updated.as_ref().unwrap_or(&a);
        self.execute(clinic, current, commands, &format!("reply|{wamid}"))
            .await?;
        self.metrics
            .replies
            .with_label_values(&[match intent {
                Intent::Confirm => "confirm",
                Intent::Cancel => "cancel",
                Intent::Reschedule => "reschedule",
            }])
            .inc();
        Ok(())
    }

    pub async fn load(
        &self,
        clinic: &ClinicSettings,
        id: &AppointmentId,
    ) -> Result<Option<Appointment>, StoreError> {
        self.store.appointment(&clinic.id, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_per_cause() {
        let a = derived_id("job|x", 1_000);
        assert_eq!(a, derived_id("job|x", 1_000));
        assert_ne!(a, derived_id("job|y", 1_000));
        assert!(MessageId::parse_issued(a.as_str()).is_ok());
    }
}
