//! A patient's message, in the order it is understood: a button (appointment choice or rating),
//! STOP/START, a rating or comment after a feedback request, an answer to the pending appointment
//! question (asking again when it is ambiguous), and otherwise a message for the clinic's inbox.

use std::sync::Arc;

use serde_json::json;
use whatsapp_cloud::wire::{Content, Text};

use super::jobs::RATING_SLOT;
use super::{Cause, Clinical, ClinicalError};
use crate::domain::records::{Feedback, InboxMessage, Visit};
use crate::domain::{Lane, E164};
use crate::patients::Purpose;
use crate::store::records::RecordKind;
use crate::tenants::ClinicSettings;
use crate::workflows::compose::send;
use crate::workflows::intents::{
    parse_consent, parse_payload, read_text, Consent, Intent, Reading,
};
use crate::workflows::{appointments, visits, Command, Touchpoint};

/// The slot of the visit whose comment the patient's next text is.
pub(super) const COMMENT_SLOT: &str = "comment";

/// What the webhook hands over.
#[derive(Debug, Clone, Copy)]
pub struct InboundMessage<'a> {
    pub from: &'a str,
    pub wamid: &'a str,
    /// Meta's message type (`text`, `button`, `interactive`, `image` …).
    pub kind: &'a str,
    pub payload: Option<&'a str>,
    pub text: Option<&'a str>,
    pub at_ms: i64,
}

fn reply_text(to: &E164, body: String, touchpoint: Touchpoint, now_ms: i64) -> Command {
    let patient = crate::domain::appointment::Patient {
        phone: to.clone(),
        name: String::new(),
        language: None,
    };
    send(
        touchpoint,
        &patient,
        Content::Text {
            text: Text {
                body,
                preview_url: false,
            },
        },
        Lane::Care,
        now_ms + 24 * 3_600_000,
        None,
    )
}

impl Clinical {
    pub async fn inbound(
        &self,
        clinic: &Arc<ClinicSettings>,
        m: InboundMessage<'_>,
    ) -> Result<(), ClinicalError> {
        let from =
            E164::from_wa_id(m.from).map_err(|e| ClinicalError::invalid("from", e.to_string()))?;
        let key = format!("in|{}", m.wamid);
        let cause = Cause {
            key: &key,
            at_ms: m.at_ms,
        };
        if let Some((visit, rating)) = m.payload.and_then(visits::parse_rating_payload) {
            return self.rating(clinic, &from, &visit, rating, cause).await;
        }
        if let Some((intent, id, version)) = m.payload.and_then(parse_payload) {
            return self
                .answer(clinic, &from, intent, &id, Some(version), cause)
                .await;
        }
        let text = m.text.map(str::trim).filter(|t| !t.is_empty());
        if let Some(consent) = text.and_then(parse_consent) {
            return self.consent(clinic, &from, consent, cause).await;
        }
        if let Some(text) = text {
            let digits = from.digits();
            if let Some(rating) = visits::parse_rating_text(text) {
                if let Some(visit) = self.store.marker(&clinic.id, digits, RATING_SLOT).await? {
                    return self.rating(clinic, &from, &visit, rating, cause).await;
                }
            }
            let reading = read_text(text);
            let pending = self.store.pending(&clinic.id, digits).await?;
            match (reading, &pending) {
                (Reading::Clear(intent), Some(id)) => {
                    return self.answer(clinic, &from, intent, id, None, cause).await
                }
                (Reading::Ambiguous, Some(id)) => {
                    if let Some(a) = self.store.appointment(&clinic.id, id).await? {
                        let commands = appointments::clarify(&a, clinic, m.at_ms);
                        if !commands.is_empty() {
                            self.execute(clinic, a.id.as_str(), commands, cause).await?;
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
            if let Some(visit) = self.store.marker(&clinic.id, digits, COMMENT_SLOT).await? {
                return self.comment(clinic, &visit, text, cause).await;
            }
        }
        self.to_inbox(clinic, &from, m).await
    }

    /// A choice about an appointment, by button (with the version it was asked about) or text.
    async fn answer(
        &self,
        clinic: &Arc<ClinicSettings>,
        from: &E164,
        intent: Intent,
        id: &crate::domain::appointment::AppointmentId,
        version: Option<u32>,
        cause: Cause<'_>,
    ) -> Result<(), ClinicalError> {
        let Some(a) = self.store.appointment(&clinic.id, id).await? else {
            return Ok(());
        };
        if &a.patient.phone != from {
            // A payload naming someone else's appointment is ignored.
            return Ok(());
        }
        let (updated, commands) = appointments::reply(&a, intent, version, clinic, cause.at_ms);
        if let Some(u) = &updated {
            self.store.put_appointment(u).await?;
        }
        let current = updated.as_ref().unwrap_or(&a);
        self.execute(clinic, current.id.as_str(), commands, cause)
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

    async fn rating(
        &self,
        clinic: &Arc<ClinicSettings>,
        from: &E164,
        visit: &str,
        rating: u8,
        cause: Cause<'_>,
    ) -> Result<(), ClinicalError> {
        let Some(v) = self
            .load::<Visit>(&clinic.id, RecordKind::Visit, visit)
            .await?
        else {
            return Ok(());
        };
        if &v.patient.phone != from {
            return Ok(());
        }
        let existing = self.feedback_of(&clinic.id, &v.id).await?;
        let (feedback, commands) = visits::rated(&v, rating, existing.as_ref(), cause.at_ms);
        self.save_feedback(&feedback).await?;
        let digits = from.digits();
        self.store
            .set_marker(&clinic.id, digits, RATING_SLOT, None, 0)
            .await?;
        self.store
            .set_marker(
                &clinic.id,
                digits,
                COMMENT_SLOT,
                Some(&v.id),
                visits::COMMENT_OPEN_MS,
            )
            .await?;
        self.execute(clinic, &v.id, commands, cause).await?;
        self.metrics.replies.with_label_values(&["rating"]).inc();
        Ok(())
    }

    async fn comment(
        &self,
        clinic: &Arc<ClinicSettings>,
        visit: &str,
        text: &str,
        cause: Cause<'_>,
    ) -> Result<(), ClinicalError> {
        let (Some(v), Some(f)) = (
            self.load::<Visit>(&clinic.id, RecordKind::Visit, visit)
                .await?,
            self.feedback_of(&clinic.id, visit).await?,
        ) else {
            return Ok(());
        };
        let (feedback, commands): (Feedback, _) = visits::commented(&v, &f, text, cause.at_ms);
        self.save_feedback(&feedback).await?;
        self.store
            .set_marker(&clinic.id, v.patient.phone.digits(), COMMENT_SLOT, None, 0)
            .await?;
        self.execute(clinic, &v.id, commands, cause).await?;
        Ok(())
    }

    async fn consent(
        &self,
        clinic: &Arc<ClinicSettings>,
        from: &E164,
        consent: Consent,
        cause: Cause<'_>,
    ) -> Result<(), ClinicalError> {
        let stop = consent == Consent::Stop;
        self.store
            .set_opted_out(&clinic.id, from.digits(), stop)
            .await?;
        // The directory keeps when and how consent changed. STOP withdraws both purposes; START
        // restores care messages only (promotional consent is given explicitly, not by START).
        let source = if stop {
            "patient:STOP"
        } else {
            "patient:START"
        };
        let patients = &self.broadcasts.patients;
        patients
            .set_consent(&clinic.id, from, Purpose::Care, !stop, source)
            .await?;
        if stop {
            patients
                .set_consent(&clinic.id, from, Purpose::Promotional, false, source)
                .await?;
        }
        let body = if stop {
            format!("You will no longer receive reminders or updates from {}. Reports you are waiting for will still reach you. Reply START to receive messages again.", clinic.display_name)
        } else {
            format!("Welcome back! You will receive reminders and updates from {} again. Reply STOP to opt out.", clinic.display_name)
        };
        let commands = vec![
            reply_text(from, body, Touchpoint::Consent, cause.at_ms),
            Command::Callback {
                event: "patient.consent_changed",
                data: json!({"patient": from, "opted_out": stop}),
            },
        ];
        self.execute(clinic, from.digits(), commands, cause).await?;
        self.metrics
            .replies
            .with_label_values(&[if stop { "stop" } else { "start" }])
            .inc();
        Ok(())
    }

    /// No workflow answered: the clinic reads it (and may reply inside the window).
    async fn to_inbox(
        &self,
        clinic: &Arc<ClinicSettings>,
        from: &E164,
        m: InboundMessage<'_>,
    ) -> Result<(), ClinicalError> {
        let msg = InboxMessage {
            id: m.wamid.to_owned(),
            tenant: clinic.id.clone(),
            from: from.clone(),
            kind: m.kind.to_owned(),
            text: m.text.map(|t| t.chars().take(4_096).collect()),
            received_ms: m.at_ms,
        };
        self.save(
            &clinic.id,
            RecordKind::Inbox,
            &msg.id,
            msg.received_ms,
            None,
            &msg,
        )
        .await?;
        let event = super::derived_id(&format!("inbox|{}", msg.id), msg.received_ms);
        self.callbacks.send_as(
            clinic,
            &event.as_str().replacen("msg_", "evt_", 1),
            "message.received",
            json!({"id": msg.id, "from": msg.from, "type": msg.kind, "text": msg.text, "received_ms": msg.received_ms}),
        );
        Ok(())
    }
}
