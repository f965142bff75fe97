//! `phone_number_quality_update`: Meta moved a number's throughput or the portfolio's messaging
//! limit. The clinic's settings change, and with them the dispatcher's pacing and the admission
//! budget.

use whatsapp_cloud::wire::PhoneNumberQualityUpdate;

use super::AppState;
use crate::clock::now_ms;
use crate::store::StoreError;

/// Meta's messaging-limit tier names → unique patients per 24 h (`None` = unlimited).
pub fn messaging_limit(tier: &str) -> Option<Option<u32>> {
    Some(match tier {
        "TIER_50" => Some(50),
        "TIER_250" => Some(250),
        "TIER_1K" => Some(1_000),
        "TIER_2K" => Some(2_000),
        "TIER_10K" => Some(10_000),
        "TIER_100K" => Some(100_000),
        "TIER_UNLIMITED" => None,
        _ => return None,
    })
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

pub async fn apply_quality_update(
    state: &AppState,
    waba: &str,
    u: &PhoneNumberQualityUpdate,
) -> Result<(), StoreError> {
    let display = digits(&u.display_phone_number);
    for clinic in state.directory.by_waba(waba) {
        let mut c = (*clinic).clone();
        let mut changed = false;
        if u.event == "THROUGHPUT_UPGRADE" {
            let single = c.numbers.len() == 1;
            for n in &mut c.numbers {
                if (single || digits(&n.display) == display) && n.tier_mps != 1000 {
                    n.tier_mps = 1000;
                    changed = true;
                }
            }
        }
        let tier = u
            .max_daily_conversations_per_business
            .as_deref()
            .or(u.current_limit.as_deref());
        if let Some(limit) = tier.and_then(messaging_limit) {
            if c.messaging_limit != limit {
                c.messaging_limit = limit;
                changed = true;
            }
        }
        if changed {
            c.updated_ms = now_ms();
            tracing::info!(tenant = %c.id, event = %u.event, limit = ?c.messaging_limit, "Meta changed this clinic's limits");
            state.store.put_clinic(&c).await?;
            state.directory.upsert_clinic(c.clone());
            state.dispatchers.sync_clinic(&c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names() {
        assert_eq!(messaging_limit("TIER_2K"), Some(Some(2_000)));
        assert_eq!(messaging_limit("TIER_UNLIMITED"), Some(None));
        assert_eq!(messaging_limit("SOMETHING_NEW"), None);
    }
}
