//! Runs the clinical workflows: loads state, calls the pure workflow, executes its commands
//! (sends through the clinic's actor, jobs into the scheduler, callbacks to the clinic, write-back
//! to the EMR), and stores what changed. The REST API, the EMR adapters, the scheduler and inbound
//! replies all come through here, so each touchpoint behaves the same whoever triggered it.

mod appointments;
mod documents;
mod erasure;
mod inbound;
mod jobs;
mod visits;
pub mod writeback;

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use whatsapp_cloud::wire::Content;

pub use appointments::{BookRequest, Booked, ChangeRequest};
pub use documents::{Delivered, DocumentRequest};
pub use inbound::InboundMessage;
pub use jobs::JobOutcome;
pub use visits::VisitRequest;
pub use writeback::{EmrLink, WriteBackError};

use crate::callbacks::Callbacks;
use crate::clock::now_ms;
use crate::domain::{MessageId, NewMessage};
use crate::metrics::Metrics;
use crate::outbound::SubmitError;
use crate::store::clinical::Contact;
use crate::store::records::{RecordKind, RecordPut};
use crate::store::{Backend, StoreError};
use crate::tenants::actors::Actors;
use crate::tenants::{ClinicSettings, Directory};
use crate::workflows::session::{session_content, TemplateTexts};
use crate::workflows::{Command, SessionForm, Touchpoint};

/// Why a clinical request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClinicalError {
    /// A field is wrong; names it.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. changing a cancelled appointment).
    #[error("{0}")]
    Conflict(String),
    /// Meta refused or could not take the media upload.
    #[error("media upload: {0}")]
    Upload(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClinicalError {
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            detail: detail.into(),
        }
    }
}

#[derive(Clone)]
pub struct Clinical {
    pub store: Arc<dyn Backend>,
    pub actors: Arc<Actors>,
    pub directory: Arc<Directory>,
    pub callbacks: Callbacks,
    pub metrics: Metrics,
    pub meta: Arc<crate::meta::Meta>,
    /// The template library's texts, for session forms.
    pub texts: Arc<dyn TemplateTexts>,
    /// The EMR links patients' decisions are written back through (none: callbacks only).
    pub emr: Vec<Arc<dyn EmrLink>>,
    pub broadcasts: crate::broadcasts::Broadcasts,
}

/// What caused a batch of commands: a stable text and a stable time (the event's own, never
/// "now"), so running the same cause twice derives the same message ids.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    pub key: &'a str,
    pub at_ms: i64,
}

/// A message id fixed by what caused it, so a job run twice (its node died after sending) or a
/// webhook delivered twice is accepted once: the outbox treats the second accept of the same id
/// as a no-op.
fn derived_id(cause: &str, at_ms: i64) -> MessageId {
    let digest = Sha256::digest(cause.as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let id = ulid::Ulid::from_parts(at_ms.max(0) as u64, u128::from_be_bytes(random));
    MessageId::parse_issued(&format!("msg_{id}")).unwrap_or_else(|_| MessageId::generate())
}

/// A window that closes within this long is treated as closed: the session message could reach
/// Meta after it closed.
const WINDOW_MARGIN_MS: i64 = 5 * 60_000;

/// One subject's commands, for [`Clinical::execute_many`].
pub struct Plan<'a> {
    /// An appointment, document or visit id.
    pub subject: &'a str,
    pub commands: Vec<Command>,
    pub cause: Cause<'a>,
}

/// A send prepared by `execute_many`, waiting for its batch's submit.
struct Prepared<'a> {
    plan: usize,
    subject: &'a str,
    touchpoint: Touchpoint,
    msg: NewMessage,
}

impl Clinical {
    /// Executes commands about `subject` (an appointment, document or visit id); returns the ids
    /// of the messages accepted.
    pub async fn execute(
        &self,
        clinic: &Arc<ClinicSettings>,
        subject: &str,
        commands: Vec<Command>,
        cause: Cause<'_>,
    ) -> Result<Vec<(Touchpoint, MessageId)>, StoreError> {
        // One way to execute: a batch of one.
        let plan = Plan {
            subject,
            commands,
            cause,
        };
        self.execute_many(clinic, vec![plan])
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("execute: no result".into())))
    }

    /// Executes several subjects' commands for one clinic; per plan, in order, the ids of the
    /// messages accepted. The sends of all plans are read for (opt-outs, windows) and submitted
    /// as one batch, after the plans' other commands; a store error fails its plan only.
    pub async fn execute_many(
        &self,
        clinic: &Arc<ClinicSettings>,
        plans: Vec<Plan<'_>>,
    ) -> Vec<Result<Vec<(Touchpoint, MessageId)>, StoreError>> {
        let mut out: Vec<Result<Vec<(Touchpoint, MessageId)>, StoreError>> =
            plans.iter().map(|_| Ok(Vec::new())).collect();
        // What the sends need to know of their recipients, in one read for the batch: opt-outs
        // (non-essential touchpoints) and windows (session forms).
        let mut asked: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for plan in &plans {
            for c in &plan.commands {
                if let Command::Send {
                    touchpoint,
                    to,
                    session,
                    ..
                } = c
                {
                    if (!touchpoint.is_essential() || session.is_some()) && seen.insert(to.digits())
                    {
                        asked.push(to.digits());
                    }
                }
            }
        }
        let contacts: HashMap<String, Contact> = match self.store.contacts(&clinic.id, &asked).await
        {
            Ok(c) => asked.iter().map(|p| (*p).to_owned()).zip(c).collect(),
            Err(e) => return plans.iter().map(|_| Err(e.clone())).collect(),
        };

        let mut prepared: Vec<Prepared> = Vec::new();
        for (p, plan) in plans.into_iter().enumerate() {
            let Plan {
                subject,
                commands,
                cause,
            } = plan;
            for (i, command) in commands.into_iter().enumerate() {
                let done = match command {
                    Command::Send {
                        touchpoint,
                        to,
                        content,
                        lane,
                        deadline_ms,
                        session,
                    } => {
                        let now = now_ms();
                        let Some(number) = clinic.numbers.first() else {
                            continue;
                        };
                        let contact = contacts.get(to.digits()).copied().unwrap_or_default();
                        if !touchpoint.is_essential() && contact.opted_out {
                            self.refused(clinic, subject, touchpoint, "the patient sent STOP");
                            continue;
                        }
                        let content = match session {
                            Some(form) => {
                                self.session_form(content, form, contact.window_until, now)
                            }
                            None => content,
                        };
                        prepared.push(Prepared {
                            plan: p,
                            subject,
                            touchpoint,
                            msg: NewMessage {
                                id: derived_id(&format!("{}|{i}", cause.key), cause.at_ms),
                                tenant: clinic.id.clone(),
                                number: number.phone_number_id.clone(),
                                to,
                                lane,
                                content,
                                deadline_ms: Some(deadline_ms.max(now + 60_000)),
                                created_ms: now,
                                broadcast: None,
                                touchpoint: Some(touchpoint.as_str().to_owned()),
                                retain_days: None,
                            },
                        });
                        Ok(())
                    }
                    Command::Schedule { job, due_ms } => {
                        self.store.schedule(&clinic.id, &job, due_ms).await
                    }
                    Command::Unschedule { jobs } => self.store.unschedule(&clinic.id, &jobs).await,
                    Command::Callback { event, data } => {
                        let id = derived_id(&format!("{}|{i}", cause.key), cause.at_ms);
                        let id = id.as_str().replacen("msg_", "evt_", 1);
                        self.callbacks.send_as(clinic, &id, event, data);
                        Ok(())
                    }
                    Command::WriteBack {
                        appointment,
                        change,
                    } => self
                        .schedule_write_back(clinic, &appointment, change)
                        .await
                        .map_err(|e| match e {
                            ClinicalError::Store(s) => s,
                            other => StoreError::Unavailable(other.to_string()),
                        }),
                };
                if let Err(e) = done {
                    out[p] = Err(e);
                    break;
                }
            }
        }
        // A failed plan sends nothing.
        prepared.retain(|s| out[s.plan].is_ok());
        if prepared.is_empty() {
            return out;
        }

        // The windows were read above when the touchpoint has a session form; the others are
        // read by the submit.
        let windows: Option<Vec<Option<i64>>> = prepared
            .iter()
            .map(|s| contacts.get(s.msg.to.digits()).map(|c| c.window_until))
            .collect();
        let (sends, msgs): (Vec<_>, Vec<NewMessage>) = prepared
            .into_iter()
            .map(|s| ((s.plan, s.subject, s.touchpoint, s.msg.id.clone()), s.msg))
            .unzip();
        let results = match self.actors.submit_many(clinic.clone(), msgs, windows).await {
            Ok(r) => r,
            Err(e) => {
                let e = StoreError::Unavailable(format!("clinic actor: {e}"));
                for (plan, ..) in &sends {
                    out[*plan] = Err(e.clone());
                }
                return out;
            }
        };
        for ((plan, subject, touchpoint, id), result) in sends.into_iter().zip(results) {
            match result {
                Ok(_) => {
                    self.metrics
                        .touchpoints
                        .with_label_values(&[touchpoint.as_str(), "accepted"])
                        .inc();
                    if let Ok(sent) = &mut out[plan] {
                        sent.push((touchpoint, id));
                    }
                }
                Err(SubmitError::Store(e)) => out[plan] = Err(e),
                Err(refused) => self.refused(clinic, subject, touchpoint, &refused.to_string()),
            }
        }
        out
    }

    /// A stored record of `kind`, decoded.
    pub async fn load<T: serde::de::DeserializeOwned>(
        &self,
        tenant: &crate::domain::TenantId,
        kind: RecordKind,
        id: &str,
    ) -> Result<Option<T>, ClinicalError> {
        match self.store.record(tenant, kind, id).await? {
            Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| {
                ClinicalError::Store(StoreError::Corrupt {
                    key: format!("{}:{id}", kind.as_str()),
                    why: e.to_string(),
                })
            }),
            None => Ok(None),
        }
    }

    /// Records of `kind` listed in `[from_ms, to_ms)`, decoded.
    pub async fn list<T: serde::de::DeserializeOwned>(
        &self,
        tenant: &crate::domain::TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<T>, ClinicalError> {
        self.store
            .records(tenant, kind, from_ms, to_ms, limit)
            .await?
            .iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    ClinicalError::Store(StoreError::Corrupt {
                        key: kind.as_str().to_owned(),
                        why: e.to_string(),
                    })
                })
            })
            .collect()
    }

    /// Stores a record of `kind`, listed at `at_ms`, found by `external` when given.
    pub async fn save<T: serde::Serialize>(
        &self,
        tenant: &crate::domain::TenantId,
        kind: RecordKind,
        id: &str,
        at_ms: i64,
        external: Option<&str>,
        value: &T,
    ) -> Result<(), ClinicalError> {
        let json = serde_json::to_string(value)
            .map_err(|e| StoreError::Unavailable(format!("encoding a {}: {e}", kind.as_str())))?;
        self.store
            .put_record(RecordPut {
                tenant,
                kind,
                id,
                at_ms,
                json: &json,
                external,
            })
            .await?;
        Ok(())
    }

    fn refused(&self, clinic: &ClinicSettings, subject: &str, touchpoint: Touchpoint, why: &str) {
        self.metrics
            .touchpoints
            .with_label_values(&[touchpoint.as_str(), "refused"])
            .inc();
        tracing::warn!(tenant = %clinic.id, subject, touchpoint = touchpoint.as_str(), reason = why, "touchpoint not sent");
        self.callbacks.send(
            clinic,
            "touchpoint.refused",
            serde_json::json!({"subject": subject, "touchpoint": touchpoint.as_str(), "reason": why}),
        );
    }

    /// The free session form when the patient's window (open until `window_until`) is open and
    /// the library has the words; the template otherwise.
    fn session_form(
        &self,
        content: Content,
        form: SessionForm,
        window_until: Option<i64>,
        now: i64,
    ) -> Content {
        let Content::Template { template } = &content else {
            return content;
        };
        let open = window_until.is_some_and(|until| until > now + WINDOW_MARGIN_MS);
        if !open {
            return content;
        }
        let session = self
            .texts
            .definition(&template.name, &template.language.code)
            .and_then(|def| session_content(&content, &def, form));
        session.unwrap_or(content)
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
