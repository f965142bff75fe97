//! The one way a message enters the outbox: admission (template, window, price), the portfolio's
//! messaging limit, the wallet reservation, then the atomic outbox write. Every touchpoint and the
//! API use this, one message at a time or (the scheduler's reminders) a batch at a time: the rules
//! are the same, a batch only shares the round trips.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use whatsapp_cloud::wire::Content;

use crate::admission::{admit, Admission, Facts, Refusal};
use crate::callbacks::Callbacks;
use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::{Lane, MessageId, Money, NewMessage};
use crate::metrics::Metrics;
use crate::pricing::RateCard;
use crate::store::tenancy::{Catalog, LimitDecision, Reservation, TemplateRecord};
use crate::store::{Accepted, Backend, StoreError};
use crate::tenants::ClinicSettings;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error("insufficient balance: {available} available, {price} needed")]
    InsufficientBalance { available: Money, price: Money },
    #[error("messaging limit of {limit} patients reached until {frees_at_ms}")]
    LimitReached { limit: u32, frees_at_ms: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Outbound {
    pub store: Arc<dyn Backend>,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    pub callbacks: Callbacks,
    /// Woken after each accept, so an idle number sends at once instead of at its next poll.
    pub dispatchers: Option<Arc<crate::dispatch::Dispatchers>>,
}

impl Outbound {
    pub async fn submit(
        &self,
        clinic: &ClinicSettings,
        msg: &NewMessage,
    ) -> Result<Accepted, SubmitError> {
        self.submit_with(clinic, msg, None).await
    }

    /// As `submit`, with the clinic's template catalog when the caller has it cached.
    pub async fn submit_with(
        &self,
        clinic: &ClinicSettings,
        msg: &NewMessage,
        catalog: Option<&Catalog>,
    ) -> Result<Accepted, SubmitError> {
        // One way to submit: a batch of one.
        self.submit_many(clinic, std::slice::from_ref(msg), catalog, None)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("submit: no result".into()).into()))
    }

    /// Admits and accepts several messages of one clinic, each by the same rules as one alone,
    /// with one round trip per step for the whole batch (windows, messaging limit, wallet,
    /// outbox) instead of one per message. `windows`: each recipient's window (`until`) when the
    /// caller already read them, in the order of `msgs`. Results in the order of `msgs`.
    pub async fn submit_many(
        &self,
        clinic: &ClinicSettings,
        msgs: &[NewMessage],
        catalog: Option<&Catalog>,
        windows: Option<&[Option<i64>]>,
    ) -> Vec<Result<Accepted, SubmitError>> {
        let store = &self.store;
        let now = now_ms();
        let mut out: Vec<Option<Result<Accepted, SubmitError>>> =
            msgs.iter().map(|_| None).collect();
        let fail_all = |e: StoreError| msgs.iter().map(|_| Err(e.clone().into())).collect();
        let windows = match windows.filter(|w| w.len() == msgs.len()) {
            Some(w) => w.to_vec(),
            None => {
                let patients: Vec<&str> = msgs.iter().map(|m| m.to.digits()).collect();
                match store.contacts(&clinic.id, &patients).await {
                    Ok(c) => c.iter().map(|c| c.window_until).collect(),
                    Err(e) => return fail_all(e),
                }
            }
        };

        // Admission, the pure rules, per message; each template read once per batch.
        let card = clinic.rate_card.as_ref().unwrap_or(&self.settings.pricing);
        let free = clinic.mode == crate::tenants::model::Mode::Sandbox;
        let mut templates: HashMap<(&str, &str), Option<TemplateRecord>> = HashMap::new();
        for msg in msgs {
            if let Content::Template { template } = &msg.content {
                let key = (template.name.as_str(), template.language.code.as_str());
                if templates.contains_key(&key) {
                    continue;
                }
                let owned = (key.0.to_owned(), key.1.to_owned());
                let t = match catalog.and_then(|c| c.get(&owned)) {
                    Some(t) => Some(t.clone()),
                    None => match store.template(&clinic.id, key.0, key.1).await {
                        Ok(t) => t,
                        Err(e) => return fail_all(e),
                    },
                };
                templates.insert(key, t);
            }
        }
        let mut admitted: Vec<(usize, Admission)> = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            let template = match &msg.content {
                Content::Template { template } => templates
                    .get(&(template.name.as_str(), template.language.code.as_str()))
                    .and_then(Option::as_ref),
                _ => None,
            };
            let facts = Facts {
                content: &msg.content,
                to: &msg.to,
                template,
                window_open: windows[i].is_some_and(|until| until > now),
                rate_card: card,
            };
            match admit(&facts) {
                Ok(mut admission) => {
                    if free {
                        // Sandbox clinics' messages never reach Meta and cost nothing.
                        admission.price = Money::ZERO;
                    }
                    admitted.push((i, admission));
                }
                Err(refusal) => out[i] = Some(Err(SubmitError::Refused(refusal))),
            }
        }

        // Bulk sends are counted when the dispatcher is about to send them, and wait there for
        // budget; everything else is refused now rather than sent into a Meta error.
        if let Some(limit) = clinic.messaging_limit {
            let counted: Vec<usize> = admitted
                .iter()
                .filter(|(i, a)| a.counts_against_limit && msgs[*i].lane != Lane::Bulk)
                .map(|(i, _)| *i)
                .collect();
            let patients: Vec<&str> = counted.iter().map(|i| msgs[*i].to.digits()).collect();
            if !patients.is_empty() {
                match store
                    .reach_patients(&clinic.portfolio_id, &patients, limit, now)
                    .await
                {
                    Ok(decisions) => {
                        for (i, d) in counted.iter().zip(decisions) {
                            if let LimitDecision::Reached { limit, frees_at_ms } = d {
                                self.metrics
                                    .refusals
                                    .with_label_values(&["messaging-limit-reached"])
                                    .inc();
                                out[*i] =
                                    Some(Err(SubmitError::LimitReached { limit, frees_at_ms }));
                            }
                        }
                    }
                    Err(e) => {
                        for i in &counted {
                            out[*i] = Some(Err(e.clone().into()));
                        }
                    }
                }
                admitted.retain(|(i, _)| out[*i].is_none());
            }
        }

        // The wallet: one reservation per message, in order.
        let items: Vec<(&MessageId, Money)> = admitted
            .iter()
            .map(|(i, a)| (&msgs[*i].id, a.price))
            .collect();
        let reserved = match store.reserve_many(&clinic.id, &items, now).await {
            Ok(r) => r,
            Err(e) => {
                for (i, _) in &admitted {
                    out[*i] = Some(Err(e.clone().into()));
                }
                Vec::new()
            }
        };
        let mut held: Vec<usize> = Vec::with_capacity(reserved.len());
        for ((i, admission), r) in admitted.iter().zip(reserved) {
            match r {
                Reservation::Held { available } => {
                    self.metrics.wallet.with_label_values(&["reserved"]).inc();
                    self.low_balance(clinic, card, available, admission.price);
                    held.push(*i);
                }
                Reservation::Insufficient { available } => {
                    self.metrics
                        .refusals
                        .with_label_values(&["insufficient-balance"])
                        .inc();
                    out[*i] = Some(Err(SubmitError::InsufficientBalance {
                        available,
                        price: admission.price,
                    }));
                }
            }
        }

        // The record expires on the clinic's retention once it ends.
        let retained: Vec<Cow<'_, NewMessage>> = held
            .iter()
            .map(|i| {
                let msg = &msgs[*i];
                if msg.retain_days == clinic.retention_days {
                    Cow::Borrowed(msg)
                } else {
                    Cow::Owned(NewMessage {
                        retain_days: clinic.retention_days,
                        ..msg.clone()
                    })
                }
            })
            .collect();
        let refs: Vec<&NewMessage> = retained.iter().map(|m| &**m).collect();
        let accepted = store
            .accept_many(&refs, self.settings.dispatch.max_queue)
            .await;
        let mut wake: Vec<&crate::domain::PhoneNumberId> = Vec::new();
        for ((i, msg), result) in held.iter().zip(&refs).zip(accepted) {
            out[*i] = Some(match result {
                Ok(a) => {
                    if a == Accepted::Created {
                        self.metrics
                            .accepted
                            .with_label_values(&[
                                msg.lane.as_str(),
                                msg.touchpoint.as_deref().unwrap_or("api"),
                            ])
                            .inc();
                    }
                    if !wake.contains(&&msg.number) {
                        wake.push(&msg.number);
                    }
                    Ok(a)
                }
                Err(e) => {
                    // Nothing was accepted: give the money back.
                    if let Err(r) = store.release(&clinic.id, &msg.id, now_ms()).await {
                        tracing::error!(message = %msg.id, error = %r, "could not release a reservation after a failed accept");
                    }
                    Err(e.into())
                }
            });
        }
        if let Some(d) = &self.dispatchers {
            for number in wake {
                d.wake(number);
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(StoreError::Unavailable("submit: not decided".into()).into())
                })
            })
            .collect()
    }

    /// Tells the clinic when this reservation took its balance below its threshold.
    fn low_balance(
        &self,
        clinic: &ClinicSettings,
        card: &RateCard,
        available: Money,
        price: Money,
    ) {
        if available < clinic.low_balance_threshold
            && available + price >= clinic.low_balance_threshold
        {
            self.metrics.low_balance.inc();
            self.callbacks.send(
                clinic,
                "wallet.low_balance",
                serde_json::json!({"available": available.micros(), "threshold": clinic.low_balance_threshold.micros(),
                                   "currency": card.currency}),
            );
        }
    }
}
