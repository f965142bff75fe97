//! Signed callbacks to a clinic's URL (`X-Clinic-Gateway-Signature: sha256=<hex HMAC>` over the raw
//! body, the same scheme as Meta's webhooks), retried with backoff, each with a unique event id.

use std::time::Duration;

use serde_json::{json, Value};
use whatsapp_cloud::signature::sign;

use crate::clock::now_ms;
use crate::tenants::ClinicSettings;

pub const SIGNATURE_HEADER: &str = "X-Clinic-Gateway-Signature";

#[derive(Clone)]
pub struct Callbacks {
    http: reqwest::Client,
    attempts: u32,
}

impl Callbacks {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self { http, attempts: 6 }
    }

    /// Queues one event for the clinic's callback URL, if it has one. Never blocks the caller.
    pub fn send(&self, clinic: &ClinicSettings, event: &str, data: Value) {
        self.send_as(clinic, &format!("evt_{}", ulid::Ulid::new()), event, data);
    }

    /// As [`send`](Self::send) with the event id fixed by its cause, so the same event raised
    /// twice (a job run again, a webhook delivered twice) reaches the clinic with the same id and
    /// the clinic can drop the repeat.
    pub fn send_as(&self, clinic: &ClinicSettings, id: &str, event: &str, data: Value) {
        let Some(cb) = clinic.callback.clone() else {
            return;
        };
        let id = id.to_owned();
        let body =
            json!({"id": id, "type": event, "clinic": clinic.id, "at_ms": now_ms(), "data": data})
                .to_string();
        let signature = sign(cb.secret.expose().as_bytes(), body.as_bytes());
        let http = self.http.clone();
        let attempts = self.attempts;
        let tenant = clinic.id.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=attempts {
                let result = http
                    .post(&cb.url)
                    .header("Content-Type", "application/json")
                    .header(SIGNATURE_HEADER, &signature)
                    .header("X-Clinic-Gateway-Event", &id)
                    .body(body.clone())
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(tenant = %tenant, status = r.status().as_u16(), attempt, "callback refused")
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, attempt, "callback failed")
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            tracing::error!(tenant = %tenant, event = %id, "callback given up");
        });
    }
}

impl Default for Callbacks {
    fn default() -> Self {
        Self::new()
    }
}
