//! The one way a message enters the outbox: admission (template, window, price), the portfolio's
//! messaging limit, the wallet reservation, then the atomic outbox write. Every touchpoint and the
//! API use this.

use std::sync::Arc;

use whatsapp_cloud::wire::Content;

use crate::admission::{admit, Facts, Refusal};
use crate::callbacks::Callbacks;
use crate::clock::now_ms;
use crate::config::Settings;
use crate::domain::{Money, NewMessage};
use crate::metrics::Metrics;
use crate::store::tenancy::{Catalog, LimitDecision, Reservation};
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
        let store = &self.store;
        let now = now_ms();
        let template = match &msg.content {
            Content::Template { template } => {
                let key = (template.name.clone(), template.language.code.clone());
                match catalog.and_then(|c| c.get(&key)) {
                    Some(t) => Some(t.clone()),
                    None => {
                        store
                            .template(&clinic.id, &template.name, &template.language.code)
                            .await?
                    }
                }
            }
            _ => None,
        };
        let window_open = store
            .window_until(&clinic.id, msg.to.digits())
            .await?
            .is_some_and(|until| until > now);
        let card = clinic.rate_card.as_ref().unwrap_or(&self.settings.pricing);
        let free = clinic.mode == crate::tenants::model::Mode::Sandbox;
        let mut admission = admit(&Facts {
            content: &msg.content,
            to: &msg.to,
            template: template.as_ref(),
            window_open,
            rate_card: card,
        })
        .map_err(SubmitError::Refused)?;
        if free {
            // Sandbox clinics' messages never reach Meta and cost nothing.
            admission.price = Money::ZERO;
        }

        // Bulk sends are counted when the dispatcher is about to send them, and wait there for
        // budget; everything else is refused now rather than sent into a Meta error.
        if admission.counts_against_limit && msg.lane != crate::domain::Lane::Bulk {
            if let Some(limit) = clinic.messaging_limit {
                if let LimitDecision::Reached { limit, frees_at_ms } = store
                    .reach_patient(&clinic.portfolio_id, msg.to.digits(), limit, now)
                    .await?
                {
                    self.metrics
                        .refusals
                        .with_label_values(&["messaging-limit-reached"])
                        .inc();
                    return Err(SubmitError::LimitReached { limit, frees_at_ms });
                }
            }
        }

        let available = match store
            .reserve(&clinic.id, &msg.id, admission.price, now)
            .await?
        {
            Reservation::Held { available } => {
                self.metrics.wallet.with_label_values(&["reserved"]).inc();
                available
            }
            Reservation::Insufficient { available } => {
                self.metrics
                    .refusals
                    .with_label_values(&["insufficient-balance"])
                    .inc();
                return Err(SubmitError::InsufficientBalance {
                    available,
                    price: admission.price,
                });
            }
        };
        if available < clinic.low_balance_threshold
            && available + admission.price >= clinic.low_balance_threshold
        {
            self.metrics.low_balance.inc();
            self.callbacks.send(
                clinic,
                "wallet.low_balance",
                serde_json::json!({"available": available.micros(), "threshold": clinic.low_balance_threshold.micros(),
                                   "currency": card.currency}),
            );
        }
        // The record expires on the clinic's retention once it ends.
        let retained;
        let msg = if msg.retain_days == clinic.retention_days {
            msg
        } else {
            retained = NewMessage {
                retain_days: clinic.retention_days,
                ..msg.clone()
            };
            &retained
        };
        match store.accept(msg, self.settings.dispatch.max_queue).await {
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
                if let Some(d) = &self.dispatchers {
                    d.wake(&msg.number);
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
        }
    }
}
