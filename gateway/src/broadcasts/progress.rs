//! How far a broadcast got: its queued messages by state (read from the outbox), the skipped
//! ones by reason, and an ETA at the number's tier.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use super::{message_id, Broadcast, Broadcasts, SkipReason};
use crate::clinical::ClinicalError;
use crate::domain::MessageState;
use crate::tenants::ClinicSettings;

#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub recipients: Option<u64>,
    pub queued: u64,
    /// Queued messages by their state now (`queued`, `sending`, `sent`, `delivered`, `read`,
    /// `failed`, `expired`).
    pub states: BTreeMap<&'static str, u64>,
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Seconds until the rest is sent at the number's tier.
    pub eta_secs: Option<f64>,
}

impl Broadcasts {
    pub async fn progress(
        &self,
        clinic: &ClinicSettings,
        b: &Broadcast,
    ) -> Result<Progress, ClinicalError> {
        let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
        for n in 0..b.queued_chunks.min(b.chunks) {
            let targets = self.chunk(b, n).await?;
            let found: Vec<_> = futures::stream::iter(targets.iter())
                .map(|t| {
                    let id = message_id(&b.id, &t.phone);
                    async move { self.store.message(&b.tenant, &id).await }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            for r in found {
                if let Some(m) = r? {
                    *states.entry(m.state.as_str()).or_insert(0) += 1;
                }
            }
        }
        let waiting = [MessageState::Queued, MessageState::Sending]
            .iter()
            .map(|s| states.get(s.as_str()).copied().unwrap_or(0))
            .sum::<u64>()
            + b.recipients
                .unwrap_or(0)
                .saturating_sub(b.queued + b.skipped.values().sum::<u64>());
        let tier = clinic.number(&b.number).map_or(0, |n| n.tier_mps);
        Ok(Progress {
            recipients: b.recipients,
            queued: b.queued,
            states,
            skipped: b.skipped.clone(),
            eta_secs: (tier > 0).then(|| {
                (super::plan::duration_secs(waiting, tier, self.settings.dispatch.tier_headroom)
                    * 10.0)
                    .round()
                    / 10.0
            }),
        })
    }
}
