//! Static clinics from the config file: written to the store at start-up so small deployments
//! need no admin API calls. The config stays the source for those clinics.

use crate::clock::now_ms;
use crate::config::{ClinicConfig, Settings};
use crate::domain::Money;
use crate::store::tenancy::{ApiKeyRecord, TenantStore, WalletStore};
use crate::store::StoreError;

use super::model::{BusinessNumber, ClinicSettings, Mode, Secret};

pub fn clinic_from_config(c: &ClinicConfig, settings: &Settings) -> ClinicSettings {
    let now = now_ms();
    ClinicSettings {
        id: c.id.clone(),
        display_name: if c.name.is_empty() {
            c.id.to_string()
        } else {
            c.name.clone()
        },
        status: Default::default(),
        mode: Mode::Live,
        waba_id: if c.waba_id.is_empty() {
            format!("waba_{}", c.id)
        } else {
            c.waba_id.clone()
        },
        portfolio_id: if c.portfolio_id.is_empty() {
            c.waba_id.clone()
        } else {
            c.portfolio_id.clone()
        },
        meta_app_id: String::new(),
        app_secret: Secret::new(&c.app_secret),
        access_token: Secret::new(&c.access_token),
        numbers: c
            .numbers
            .iter()
            .map(|n| BusinessNumber {
                phone_number_id: n.phone_number_id.clone(),
                display: n.display.clone(),
                tier_mps: n.tier_mps,
            })
            .collect(),
        time_zone: c.time_zone.clone(),
        default_country_code: c.default_country_code.clone(),
        default_language: "en".into(),
        locations: Vec::new(),
        doctors: Vec::new(),
        quiet_hours: None,
        rate_card: None,
        low_balance_threshold: Money(settings.wallet.default_low_balance_threshold),
        callback: None,
        recategorisation: Default::default(),
        reminder_offsets_minutes: vec![24 * 60],
        follow_up: Default::default(),
        feedback_delay_minutes: Some(120),
        retention_days: None,
        emr: c.emr.clone(),
        messaging_limit: c.messaging_limit,
        created_ms: now,
        updated_ms: now,
    }
}

/// Writes the config's clinics and their API keys to the store.
pub async fn apply<S: TenantStore + WalletStore + ?Sized>(
    settings: &Settings,
    store: &S,
) -> Result<(), StoreError> {
    for c in &settings.clinics {
        let clinic = clinic_from_config(c, settings);
        let existing = store.clinic(&clinic.id).await?;
        let clinic = ClinicSettings {
            created_ms: existing
                .as_ref()
                .map_or(clinic.created_ms, |e| e.created_ms),
            ..clinic
        };
        store.put_clinic(&clinic).await?;
        if c.wallet_credit > 0 {
            // Applied once per tenant and amount, however often the node restarts.
            let reference = format!("config:{}:{}", c.id, c.wallet_credit);
            store
                .credit(&c.id, Money(c.wallet_credit), &reference, now_ms())
                .await?;
        }
        let key_id = format!("key_config_{}", c.id);
        let known = store.api_keys(&c.id).await?;
        if !known
            .iter()
            .any(|k| k.id == key_id && k.hash == c.api_key_sha256)
        {
            store
                .put_api_key(&ApiKeyRecord {
                    id: key_id,
                    tenant: c.id.clone(),
                    hash: c.api_key_sha256.to_ascii_lowercase(),
                    label: "from config".into(),
                    created_ms: now_ms(),
                    revoked_ms: None,
                })
                .await?;
        }
    }
    Ok(())
}
