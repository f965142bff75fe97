//! Wallet movements driven by status webhooks: settle at the price Meta reports on delivery,
//! release when the message failed.

use whatsapp_cloud::wire::Status;

use super::AppState;
use crate::clock::now_ms;
use crate::domain::{MessageId, MessageState, E164};
use crate::store::StoreError;
use crate::tenants::ClinicSettings;

pub async fn on_status(
    state: &AppState,
    clinic: &ClinicSettings,
    id: &MessageId,
    status: &Status,
    new_state: MessageState,
) -> Result<(), StoreError> {
    if new_state == MessageState::Failed
        && status
            .errors
            .iter()
            .any(|e| e.code == crate::dispatch::attempt::NOT_ON_WHATSAPP_CODE)
    {
        if let Ok(to) = E164::from_wa_id(&status.recipient_id) {
            crate::dispatch::attempt::remember_not_on_whatsapp(&*state.store, &clinic.id, &to)
                .await;
        }
    }
    if new_state == MessageState::Failed {
        super::dead_letters::remember(&*state.store, &clinic.id, id, new_state).await;
    }
    match new_state {
        MessageState::Failed
            if state
                .store
                .release(&clinic.id, id, now_ms())
                .await?
                .is_some() =>
        {
            state.metrics.wallet.with_label_values(&["released"]).inc();
        }
        // Meta bills per delivered message; `pricing` rides on delivered (or read when delivered
        // was skipped).
        MessageState::Delivered | MessageState::Read => {
            let Some(pricing) = &status.pricing else {
                return Ok(());
            };
            let Ok(to) = E164::parse(&format!("+{}", status.recipient_id.trim_start_matches('+')))
            else {
                return Ok(());
            };
            let card = clinic.rate_card.as_ref().unwrap_or(&state.settings.pricing);
            let charge = if state.meta.is_sandbox(clinic) {
                crate::domain::Money::ZERO
            } else {
                card.settle(pricing.kind, pricing.category, &to)
            };
            if state
                .store
                .settle(&clinic.id, id, charge, now_ms())
                .await?
                .is_some()
            {
                state.metrics.wallet.with_label_values(&["settled"]).inc();
            }
        }
        _ => {}
    }
    Ok(())
}
