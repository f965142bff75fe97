//! Signed callbacks to a clinic's URL (`X-Clinic-Gateway-Signature: sha256=<hex HMAC>` over the raw
//! body, the same scheme as Meta's webhooks), each with an event id fixed by its cause.
//!
//! Durable mode (the server's): an event is stored in Redis and delivered by a scheduler job,
//! retried with backoff for about a day, so a clinic endpoint that is down for an hour loses
//! nothing, a restart loses nothing, and one slow endpoint holds no one else's events (each
//! attempt is one bounded job). Without a store (tools, unit tests) events are delivered in
//! process with a few retries.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use whatsapp_cloud::signature::sign;

use crate::clock::now_ms;
use crate::domain::TenantId;
use crate::store::records::{RecordKind, RecordPut};
use crate::store::{Backend, StoreError};
use crate::tenants::ClinicSettings;
use crate::workflows::Job;

pub const SIGNATURE_HEADER: &str = "X-Clinic-Gateway-Signature";

/// Attempts of a durable event: with [`backoff_ms`], about a day.
pub const MAX_ATTEMPTS: u32 = 40;

/// 5 s, 10 s, 20 s … capped at 30 minutes.
pub fn backoff_ms(attempt: u32) -> i64 {
    (5_000i64 << attempt.min(9)).min(1_800_000)
}

/// A stored event waiting for delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: String,
    pub tenant: TenantId,
    /// The exact body delivered (and signed) on every attempt.
    pub body: String,
    pub created_ms: i64,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Try again later (why).
    Failed(String),
    /// The clinic has no callback URL (any more): nothing to do.
    NoEndpoint,
}

#[derive(Clone)]
pub struct Callbacks {
    http: reqwest::Client,
    attempts: u32,
    store: Option<Arc<dyn Backend>>,
}

impl Callbacks {
    /// In-process delivery with a few retries (no store).
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self {
            http,
            attempts: 6,
            store: None,
        }
    }

    /// Events stored in `store` and delivered by the scheduler.
    pub fn durable(store: Arc<dyn Backend>) -> Self {
        Self {
            store: Some(store),
            ..Self::new()
        }
    }

    /// Queues one event for the clinic's callback URL, if it has one. Never blocks the caller.
    pub fn send(&self, clinic: &ClinicSettings, event: &str, data: Value) {
        self.send_as(clinic, &format!("evt_{}", ulid::Ulid::new()), event, data);
    }

    /// As [`send`](Self::send) with the event id fixed by its cause, so the same event raised
    /// twice (a job run again, a webhook delivered twice) reaches the clinic with the same id and
    /// the clinic can drop the repeat.
    pub fn send_as(&self, clinic: &ClinicSettings, id: &str, event: &str, data: Value) {
        if clinic.callback.is_none() {
            return;
        }
        let body =
            json!({"id": id, "type": event, "clinic": clinic.id, "at_ms": now_ms(), "data": data})
                .to_string();
        match &self.store {
            Some(store) => {
                let store = store.clone();
                let stored = StoredEvent {
                    id: id.to_owned(),
                    tenant: clinic.id.clone(),
                    body,
                    created_ms: now_ms(),
                };
                tokio::spawn(async move {
                    if let Err(e) = enqueue(&*store, &stored).await {
                        tracing::error!(tenant = %stored.tenant, event = %stored.id, error = %e, "callback event not stored");
                    }
                });
            }
            None => self.in_process(clinic, id.to_owned(), body),
        }
    }

    fn in_process(&self, clinic: &ClinicSettings, id: String, body: String) {
        let this = self.clone();
        let clinic = clinic.clone();
        let attempts = self.attempts;
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=attempts {
                match this.post(&clinic, &id, &body).await {
                    Delivery::Delivered | Delivery::NoEndpoint => return,
                    Delivery::Failed(why) => {
                        tracing::warn!(tenant = %clinic.id, attempt, error = %why, "callback failed")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            tracing::error!(tenant = %clinic.id, event = %id, "callback given up");
        });
    }

    /// One signed POST of `body` to the clinic's current callback URL.
    pub async fn post(&self, clinic: &ClinicSettings, id: &str, body: &str) -> Delivery {
        let Some(cb) = &clinic.callback else {
            return Delivery::NoEndpoint;
        };
        let signature = sign(cb.secret.expose().as_bytes(), body.as_bytes());
        let result = self
            .http
            .post(&cb.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header("X-Clinic-Gateway-Event", id)
            .body(body.to_owned())
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => Delivery::Delivered,
            Ok(r) => Delivery::Failed(format!("answered {}", r.status().as_u16())),
            Err(e) => Delivery::Failed(e.to_string()),
        }
    }

    /// The scheduler's part: delivers a stored event once; on failure schedules the next attempt.
    pub async fn deliver_stored(
        &self,
        store: &dyn Backend,
        clinic: &ClinicSettings,
        id: &str,
        attempt: u32,
    ) -> Result<Delivery, StoreError> {
        let Some(json) = store.record(&clinic.id, RecordKind::Callback, id).await? else {
            return Ok(Delivery::NoEndpoint);
        };
        let event: StoredEvent = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
            key: format!("callback:{id}"),
            why: e.to_string(),
        })?;
        let outcome = self.post(clinic, id, &event.body).await;
        if let Delivery::Failed(why) = &outcome {
            if attempt + 1 < MAX_ATTEMPTS {
                let next = Job::Callback {
                    id: id.to_owned(),
                    attempt: attempt + 1,
                };
                store
                    .schedule(&clinic.id, &next, now_ms() + backoff_ms(attempt))
                    .await?;
                tracing::warn!(tenant = %clinic.id, event = %id, attempt, error = %why, "callback failed; retrying");
            } else {
                tracing::error!(tenant = %clinic.id, event = %id, attempt, error = %why, "callback given up after a day of retries");
            }
        }
        Ok(outcome)
    }
}

async fn enqueue(store: &dyn Backend, e: &StoredEvent) -> Result<(), StoreError> {
    let json = serde_json::to_string(e)
        .map_err(|err| StoreError::Unavailable(format!("encoding an event: {err}")))?;
    store
        .put_record(RecordPut {
            tenant: &e.tenant,
            kind: RecordKind::Callback,
            id: &e.id,
            at_ms: e.created_ms,
            json: &json,
            external: None,
        })
        .await?;
    store
        .schedule(
            &e.tenant,
            &Job::Callback {
                id: e.id.clone(),
                attempt: 0,
            },
            now_ms(),
        )
        .await
}

impl Default for Callbacks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_half_an_hour_and_spans_a_day() {
        assert_eq!(backoff_ms(0), 5_000);
        assert_eq!(backoff_ms(8), 1_280_000);
        assert_eq!(backoff_ms(30), 1_800_000);
        let total: i64 = (0..MAX_ATTEMPTS).map(backoff_ms).sum();
        assert!(total > 12 * 3_600_000 && total < 30 * 3_600_000, "{total}");
    }
}
