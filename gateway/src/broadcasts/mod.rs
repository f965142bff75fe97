//! Broadcasts: one template to a filtered list of a clinic's patients (vaccination drives,
//! diabetic reviews). The audience is resolved when the broadcast starts, stored in chunks, and
//! queued chunk by chunk by the scheduler into the number's `bulk` lane, where the dispatcher
//! paces it under the tier while care and reminder lanes keep priority. Cancelling stops what is
//! not queued yet and makes the dispatcher end (and refund) what is.

pub mod cancel;
pub mod model;
pub mod plan;
mod progress;

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use whatsapp_cloud::wire::{Component, Content, Language, Parameter, Template, TemplateCategory};

pub use model::{
    Audience, Broadcast, BroadcastStatus, ListedRecipient, ParamSource, SkipReason, Target,
};
pub use progress::Progress;

use crate::clinical::ClinicalError;
use crate::clock::now_ms;
use crate::domain::{Lane, MessageId, NewMessage, E164};
use crate::metrics::Metrics;
use crate::outbound::SubmitError;
use crate::patients::{PatientDirectory, Purpose};
use crate::pricing::Category;
use crate::store::clinical::Contact;
use crate::store::records::RecordKind;
use crate::store::{Backend, StoreError};
use crate::tenants::actors::Actors;
use crate::tenants::ClinicSettings;
use model::CHUNK;
use plan::Candidate;
pub use plan::Resolved;

/// Phones read per store round trip when resolving or estimating a broadcast.
const LOOKUP_CHUNK: usize = 500;

/// The marker slot remembering Meta said a number is not on WhatsApp (131026).
pub const NOT_ON_WHATSAPP: &str = "nowa";

#[derive(Clone)]
pub struct Broadcasts {
    pub store: Arc<dyn Backend>,
    pub actors: Arc<Actors>,
    pub patients: PatientDirectory,
    pub settings: Arc<crate::config::Settings>,
    pub metrics: Metrics,
}

/// Dry-run answer.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub recipients: u64,
    pub skipped: std::collections::BTreeMap<SkipReason, u64>,
    pub category: TemplateCategory,
    /// Micro-units of the clinic's currency, at the rate card (free-window sends cost less).
    pub estimated_cost: i64,
    pub estimated_duration_secs: f64,
    pub tier_mps: u32,
    /// Unique patients outside their window this needs from the portfolio's daily messaging
    /// limit, and that limit (`None` = unlimited).
    pub messaging_limit_needed: u64,
    pub messaging_limit: Option<u32>,
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> ClinicalError {
    ClinicalError::Store(StoreError::Corrupt {
        key: key.to_owned(),
        why: e.to_string(),
    })
}

/// The message id of a recipient's copy: the same broadcast never reaches a phone twice, even
/// when a chunk is queued again after a crash.
pub fn message_id(broadcast: &str, phone: &E164) -> MessageId {
    // The full number: `Display` masks it, and masked numbers collide.
    let digest = Sha256::digest(format!("{broadcast}|{}", phone.as_str()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // The time part keeps ids of one broadcast together; the rest is the digest.
    let ts = u64::from_be_bytes([
        0, 0, bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5],
    ]) & 0xFFFF_FFFF_FFFF;
    let id = ulid::Ulid::from_parts(ts, u128::from_be_bytes(bytes));
    MessageId::parse_issued(&format!("msg_{id}")).unwrap_or_else(|_| MessageId::generate())
}

impl Broadcasts {
    pub async fn load(
        &self,
        clinic: &ClinicSettings,
        id: &str,
    ) -> Result<Option<Broadcast>, ClinicalError> {
        match self
            .store
            .record(&clinic.id, RecordKind::Broadcast, id)
            .await?
        {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| corrupt(id, e)),
            None => Ok(None),
        }
    }

    pub async fn save(&self, b: &Broadcast) -> Result<(), ClinicalError> {
        let json = serde_json::to_string(b).map_err(|e| corrupt(&b.id, e))?;
        self.store
            .put_record(crate::store::records::RecordPut {
                tenant: &b.tenant,
                kind: RecordKind::Broadcast,
                id: &b.id,
                at_ms: b.created_ms,
                json: &json,
                external: None,
            })
            .await?;
        Ok(())
    }

    /// The template's category and the languages the clinic has it in (approved or not: Meta
    /// decides at send time, and the dispatcher stops paused ones).
    async fn template_facts(
        &self,
        clinic: &ClinicSettings,
        name: &str,
        language: &str,
    ) -> Result<(TemplateCategory, HashSet<String>), ClinicalError> {
        let all = self.store.templates(&clinic.id).await?;
        let mine: Vec<_> = all.iter().filter(|t| t.name == name).collect();
        let Some(primary) = mine.iter().find(|t| t.language == language) else {
            return Err(ClinicalError::invalid(
                "template",
                format!("the clinic has no template {name} in {language}"),
            ));
        };
        Ok((
            primary.category,
            mine.iter().map(|t| t.language.clone()).collect(),
        ))
    }

    /// Who gets it, who does not and why.
    pub async fn resolve(
        &self,
        clinic: &ClinicSettings,
        b: &Broadcast,
    ) -> Result<(Resolved, TemplateCategory), ClinicalError> {
        let (category, languages) = self
            .template_facts(clinic, &b.template, &b.language)
            .await?;
        let purpose = if category == TemplateCategory::Marketing {
            Purpose::Promotional
        } else {
            Purpose::Care
        };
        let mut candidates = Vec::new();
        match &b.audience {
            Audience::Filter(filter) => {
                let today = crate::workflows::render::today(now_ms(), &clinic.time_zone);
                for p in self.patients.select(&clinic.id, filter, today).await? {
                    let consented = match purpose {
                        Purpose::Promotional => p.consent.promotional.granted,
                        Purpose::Care => p.consent.care.granted,
                    };
                    candidates.push(Candidate {
                        phone: Ok(p.phone.clone()),
                        name: p.name.clone(),
                        external_id: Some(p.external_id.clone()),
                        language: p.language.clone(),
                        consented,
                        opted_out: false,
                        not_on_whatsapp: false,
                        window_until: None,
                        own_parameters: None,
                    });
                }
            }
            Audience::List(list) => {
                // Lookups run 64 at a time, in order (the first listing of a phone wins).
                let found: Vec<Result<Candidate, StoreError>> = futures::stream::iter(list)
                    .map(|r| self.listed(clinic, r, purpose))
                    .buffered(64)
                    .collect()
                    .await;
                for c in found {
                    candidates.push(c?);
                }
            }
        }
        // STOP, "not on WhatsApp" and the window are per phone, whatever the source: read a
        // chunk of phones per round trip (a 100,000-recipient list took seconds one at a time).
        let phones: Vec<(usize, &str)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.phone.as_ref().ok().map(|p| (i, p.digits())))
            .collect();
        let read: Vec<Result<Vec<(Contact, bool)>, StoreError>> =
            futures::stream::iter(phones.chunks(LOOKUP_CHUNK))
                .map(|chunk| async move {
                    let digits: Vec<&str> = chunk.iter().map(|(_, d)| *d).collect();
                    let contacts = self.store.contacts(&clinic.id, &digits).await?;
                    let nowa = self
                        .store
                        .markers(&clinic.id, &digits, NOT_ON_WHATSAPP)
                        .await?;
                    Ok(contacts
                        .into_iter()
                        .zip(nowa.iter().map(Option::is_some))
                        .collect())
                })
                .buffered(4)
                .collect()
                .await;
        // The candidates each answer belongs to, in the order read.
        let indexes: Vec<usize> = phones.iter().map(|(i, _)| *i).collect();
        let mut at = indexes.into_iter();
        for chunk in read {
            for ((contact, not_on_whatsapp), i) in chunk?.into_iter().zip(&mut at) {
                if let Some(c) = candidates.get_mut(i) {
                    c.opted_out = contact.opted_out;
                    c.window_until = contact.window_until;
                    c.not_on_whatsapp = not_on_whatsapp;
                }
            }
        }
        Ok((
            plan::resolve(candidates, &b.parameters, &languages, &b.language),
            category,
        ))
    }

    /// A listed recipient, with what the directory knows of them.
    async fn listed(
        &self,
        clinic: &ClinicSettings,
        r: &ListedRecipient,
        purpose: Purpose,
    ) -> Result<Candidate, StoreError> {
        let phone = E164::parse_with_default(&r.phone, Some(&clinic.default_country_code))
            .map_err(|e| e.to_string());
        let known = match &phone {
            Ok(p) => self.patients.by_phone(&clinic.id, p).await?,
            Err(_) => None,
        };
        // A listed patient unknown to the directory: care consent is the default; promotional
        // consent must be on record.
        let consented = match (&known, purpose) {
            (Some(p), Purpose::Promotional) => p.consent.promotional.granted,
            (Some(p), Purpose::Care) => p.consent.care.granted,
            (None, Purpose::Promotional) => false,
            (None, Purpose::Care) => true,
        };
        Ok(Candidate {
            phone,
            name: r
                .name
                .clone()
                .or_else(|| known.as_ref().map(|p| p.name.clone()))
                .unwrap_or_default(),
            external_id: known.as_ref().map(|p| p.external_id.clone()),
            language: r
                .language
                .clone()
                .or_else(|| known.as_ref().and_then(|p| p.language.clone())),
            consented,
            opted_out: false,
            not_on_whatsapp: false,
            window_until: None,
            own_parameters: r.parameters.clone(),
        })
    }

    /// The dry-run figures of a resolved audience (no store reads: the windows were read while
    /// resolving).
    pub fn estimate(
        &self,
        clinic: &ClinicSettings,
        b: &Broadcast,
        resolved: &Resolved,
        category: TemplateCategory,
    ) -> Estimate {
        let card = clinic.rate_card.as_ref().unwrap_or(&self.settings.pricing);
        let now = now_ms();
        let mut cost = 0i64;
        let mut outside = 0u64;
        for (t, until) in resolved.targets.iter().zip(&resolved.window_until) {
            let open = until.is_some_and(|u| u > now);
            outside += u64::from(!open);
            cost += card
                .quote(Category::of_template(category), &t.phone, open)
                .0;
        }
        let tier = clinic.number(&b.number).map_or(0, |n| n.tier_mps);
        let n = resolved.targets.len() as u64;
        Estimate {
            recipients: n,
            skipped: resolved.skipped.clone(),
            category,
            estimated_cost: cost,
            estimated_duration_secs: (plan::duration_secs(
                n,
                tier,
                self.settings.dispatch.tier_headroom,
            ) * 10.0)
                .round()
                / 10.0,
            tier_mps: tier,
            messaging_limit_needed: outside,
            messaging_limit: clinic.messaging_limit,
        }
    }

    /// Resolves the audience and stores it in chunks (first run of a broadcast).
    async fn start(&self, clinic: &ClinicSettings, b: &mut Broadcast) -> Result<(), ClinicalError> {
        let (resolved, _) = self.resolve(clinic, b).await?;
        self.start_resolved(b, resolved).await
    }

    /// Stores an audience resolved just now in chunks and marks the broadcast queuing: the
    /// scheduler's next run of it queues the first chunk.
    pub async fn start_resolved(
        &self,
        b: &mut Broadcast,
        resolved: Resolved,
    ) -> Result<(), ClinicalError> {
        for (i, chunk) in resolved.targets.chunks(CHUNK).enumerate() {
            let json = serde_json::to_string(chunk).map_err(|e| corrupt(&b.id, e))?;
            let id = format!("{}:{i}", b.id);
            self.store
                .put_record(crate::store::records::RecordPut {
                    tenant: &b.tenant,
                    kind: RecordKind::BroadcastChunk,
                    id: &id,
                    at_ms: b.created_ms,
                    json: &json,
                    external: None,
                })
                .await?;
        }
        b.recipients = Some(resolved.targets.len() as u64);
        b.chunks = resolved.targets.len().div_ceil(CHUNK) as u32;
        b.skipped = resolved.skipped;
        b.status = BroadcastStatus::Queuing;
        b.updated_ms = now_ms();
        self.save(b).await
    }

    pub async fn chunk(&self, b: &Broadcast, n: u32) -> Result<Vec<Target>, ClinicalError> {
        let id = format!("{}:{n}", b.id);
        match self
            .store
            .record(&b.tenant, RecordKind::BroadcastChunk, &id)
            .await?
        {
            Some(json) => serde_json::from_str(&json).map_err(|e| corrupt(&id, e)),
            None => Ok(Vec::new()),
        }
    }

    fn message(&self, b: &Broadcast, t: &Target) -> NewMessage {
        let now = now_ms();
        NewMessage {
            id: message_id(&b.id, &t.phone),
            tenant: b.tenant.clone(),
            number: b.number.clone(),
            to: t.phone.clone(),
            lane: Lane::Bulk,
            content: Content::Template {
                template: Template {
                    name: b.template.clone(),
                    language: Language {
                        code: t.language.clone(),
                        policy: None,
                    },
                    components: if t.parameters.is_empty() {
                        Vec::new()
                    } else {
                        vec![Component::Body {
                            parameters: t
                                .parameters
                                .iter()
                                .map(|v| Parameter::Text {
                                    text: v.clone(),
                                    parameter_name: None,
                                })
                                .collect(),
                        }]
                    },
                },
            },
            deadline_ms: Some(b.deadline_ms),
            created_ms: now,
            broadcast: Some(b.id.clone()),
            touchpoint: Some("broadcast".to_owned()),
            retain_days: None,
        }
    }

    /// One scheduler run: starts the broadcast or queues its next chunk. Returns when to run
    /// again (`None`: finished).
    pub async fn step(
        &self,
        clinic: &Arc<ClinicSettings>,
        id: &str,
    ) -> Result<Option<i64>, ClinicalError> {
        let Some(mut b) = self.load(clinic, id).await? else {
            return Ok(None);
        };
        if b.status != BroadcastStatus::Cancelled
            && cancel::is_cancelled(&*self.store, &clinic.id, id).await?
        {
            b.status = BroadcastStatus::Cancelled;
        }
        match b.status {
            BroadcastStatus::Cancelled | BroadcastStatus::Stopped | BroadcastStatus::Queued => {
                return Ok(None)
            }
            BroadcastStatus::Scheduled => {
                self.start(clinic, &mut b).await?;
                return Ok(Some(now_ms()));
            }
            BroadcastStatus::Queuing => {}
        }
        if b.queued_chunks >= b.chunks {
            b.status = BroadcastStatus::Queued;
            b.updated_ms = now_ms();
            self.save(&b).await?;
            return Ok(None);
        }
        let targets = self.chunk(&b, b.queued_chunks).await?;
        let submitted = futures::future::join_all(targets.iter().map(|t| {
            let msg = self.message(&b, t);
            let actors = self.actors.clone();
            let clinic = clinic.clone();
            async move { actors.submit(clinic, msg).await }
        }))
        .await;
        let mut queued = 0u64;
        let mut broke = false;
        for r in submitted {
            match r {
                Ok(Ok(_)) => queued += 1,
                Ok(Err(SubmitError::Store(e))) => return Err(e.into()),
                Ok(Err(SubmitError::InsufficientBalance { available, price })) => {
                    broke = true;
                    *b.skipped
                        .entry(SkipReason::InsufficientBalance)
                        .or_insert(0) += 1;
                    b.stop_reason = Some(format!(
                        "insufficient balance: {available} available, {price} needed per message"
                    ));
                }
                Ok(Err(other)) => {
                    tracing::warn!(tenant = %clinic.id, broadcast = %b.id, error = %other, "broadcast message refused");
                    *b.skipped.entry(SkipReason::NotQueued).or_insert(0) += 1;
                }
                // The clinic's actor is busy or gone: the chunk runs again (ids are stable).
                Err(e) => {
                    return Err(ClinicalError::Store(StoreError::Unavailable(format!(
                        "clinic actor: {e}"
                    ))))
                }
            }
        }
        self.metrics
            .broadcast_messages
            .with_label_values(&["queued"])
            .inc_by(queued);
        b.queued += queued;
        b.queued_chunks += 1;
        b.updated_ms = now_ms();
        if broke {
            let left: u64 = (b.queued_chunks..b.chunks)
                .map(|c| {
                    if c + 1 == b.chunks {
                        (b.recipients.unwrap_or(0) as usize - c as usize * CHUNK) as u64
                    } else {
                        CHUNK as u64
                    }
                })
                .sum();
            *b.skipped
                .entry(SkipReason::InsufficientBalance)
                .or_insert(0) += left;
            b.status = BroadcastStatus::Stopped;
            self.save(&b).await?;
            return Ok(None);
        }
        // A cancel that landed while this chunk was queued wins.
        if cancel::is_cancelled(&*self.store, &clinic.id, id).await? {
            b.status = BroadcastStatus::Cancelled;
        }
        self.save(&b).await?;
        Ok((b.status == BroadcastStatus::Queuing).then(now_ms))
    }
}

impl Broadcasts {
    /// Stops what is not queued and makes the dispatchers end (and refund) what is.
    pub async fn cancel(
        &self,
        clinic: &ClinicSettings,
        id: &str,
    ) -> Result<Option<Broadcast>, ClinicalError> {
        let Some(mut b) = self.load(clinic, id).await? else {
            return Ok(None);
        };
        cancel::mark_cancelled(&*self.store, &clinic.id, id).await?;
        if matches!(
            b.status,
            BroadcastStatus::Scheduled | BroadcastStatus::Queuing | BroadcastStatus::Queued
        ) {
            b.status = BroadcastStatus::Cancelled;
            b.updated_ms = now_ms();
            self.save(&b).await?;
        }
        Ok(Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_broadcast_differ_per_full_number() {
        let a = E164::parse("+919812340001").unwrap_or_else(|e| panic!("{e}"));
        let b = E164::parse("+919899990001").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.to_string(), b.to_string(), "the same masked form");
        assert_ne!(message_id("brd_1", &a), message_id("brd_1", &b));
        assert_eq!(message_id("brd_1", &a), message_id("brd_1", &a));
        assert_ne!(message_id("brd_1", &a), message_id("brd_2", &a));
    }
}
