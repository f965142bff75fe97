//! Tenants and wallets in the store: clinics, API keys, and each clinic's wallet with its ledger.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{MessageId, Money, TenantId};
use crate::tenants::model::ClinicSettings;

/// An API key as stored: only its SHA-256, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// `key_<ulid>`: how the key is listed and revoked.
    pub id: String,
    pub tenant: TenantId,
    /// SHA-256 hex of the key.
    pub hash: String,
    #[serde(default)]
    pub label: String,
    pub created_ms: i64,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates or replaces a clinic, indexes its numbers, and bumps the directory version.
    /// Fails with `Conflict` if one of its numbers belongs to another clinic.
    async fn put_clinic(&self, clinic: &ClinicSettings) -> Result<(), StoreError>;
    async fn clinic(&self, id: &TenantId) -> Result<Option<ClinicSettings>, StoreError>;
    /// Every clinic (directory load).
    async fn clinics(&self) -> Result<Vec<ClinicSettings>, StoreError>;
    /// Changes whenever a clinic or API key changes, so nodes know to reload their directory.
    async fn directory_version(&self) -> Result<u64, StoreError>;

    /// Stores a new key (bumps the directory version).
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Every key that is not revoked (directory load).
    async fn active_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Marks a key revoked; `false` if the tenant has no such key.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
}

/// A wallet's totals. `available = credited − settled − reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WalletSnapshot {
    pub credited: Money,
    pub settled: Money,
    pub reserved: Money,
}

impl WalletSnapshot {
    pub fn available(&self) -> Money {
        self.credited - self.settled - self.reserved
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    Credit,
    Reserve,
    Release,
    Settle,
}

/// One wallet movement. For `Settle`, `amount` is what was charged and `reserved` what the
/// reservation held; for the others `reserved` is zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Sortable id; also the pagination cursor.
    pub id: String,
    pub kind: LedgerKind,
    pub amount: Money,
    #[serde(default)]
    pub reserved: Money,
    /// The message, or the credit's reference.
    pub reference: String,
    /// `available` after this movement.
    pub available_after: Money,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Held (or already held for this message: idempotent).
    Held {
        available: Money,
    },
    Insufficient {
        available: Money,
    },
}

#[async_trait]
pub trait WalletStore: Send + Sync + 'static {
    /// Adds funds once per `reference` (an idempotency key). Returns whether it was applied now.
    async fn credit(
        &self,
        tenant: &TenantId,
        amount: Money,
        reference: &str,
        now_ms: i64,
    ) -> Result<(bool, WalletSnapshot), StoreError>;
    /// Holds `amount` for a message if available (idempotent per message).
    async fn reserve(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        amount: Money,
        now_ms: i64,
    ) -> Result<Reservation, StoreError>;
    /// [`Self::reserve`] for several messages of one tenant, in order (a later one sees the
    /// earlier ones' holds).
    async fn reserve_many(
        &self,
        tenant: &TenantId,
        items: &[(&MessageId, Money)],
        now_ms: i64,
    ) -> Result<Vec<Reservation>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for (message, amount) in items {
            out.push(self.reserve(tenant, message, *amount, now_ms).await?);
        }
        Ok(out)
    }
    /// Replaces the message's reservation by the final charge. `None` if nothing was reserved
    /// (already settled or released): settling twice charges once.
    async fn settle(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        charge: Money,
        now_ms: i64,
    ) -> Result<Option<WalletSnapshot>, StoreError>;
    /// Frees the message's reservation. `None` if there was none.
    async fn release(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        now_ms: i64,
    ) -> Result<Option<WalletSnapshot>, StoreError>;
    async fn wallet(&self, tenant: &TenantId) -> Result<WalletSnapshot, StoreError>;
    /// Ledger entries after `cursor` (oldest first), at most `limit`.
    async fn ledger(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, StoreError>;
}

/// A clinic's template as the gateway knows it (synced from Meta, updated by webhooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    pub language: String,
    pub category: whatsapp_cloud::wire::TemplateCategory,
    pub status: whatsapp_cloud::wire::TemplateStatus,
    /// Meta's template id.
    #[serde(default)]
    pub meta_id: String,
    /// Placeholders in the BODY (what a send must fill).
    #[serde(default)]
    pub body_parameters: usize,
    /// Set when Meta re-categorised the template and the clinic has not accepted the new price.
    #[serde(default)]
    pub pending_category: Option<whatsapp_cloud::wire::TemplateCategory>,
    /// Meta's reason for the last status change (e.g. a rejection reason).
    #[serde(default)]
    pub reason: Option<String>,
    pub updated_ms: i64,
}

#[async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    /// Creates or replaces the template `(name, language)` of a clinic.
    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &TemplateRecord,
    ) -> Result<(), StoreError>;
    async fn template(
        &self,
        tenant: &TenantId,
        name: &str,
        language: &str,
    ) -> Result<Option<TemplateRecord>, StoreError>;
    async fn templates(&self, tenant: &TenantId) -> Result<Vec<TemplateRecord>, StoreError>;
}

#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// A patient wrote at `at_ms`: their customer-service window is open until `at_ms` + 24 h
    /// (never moved backwards by a late, older message).
    async fn touch_window(
        &self,
        tenant: &TenantId,
        patient: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Until when the patient's window is open, if it was ever opened in the last 24 h.
    async fn window_until(
        &self,
        tenant: &TenantId,
        patient: &str,
    ) -> Result<Option<i64>, StoreError>;
}

/// Outcome of asking the portfolio's messaging limit for one more patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitDecision {
    /// Counted (or already counted in the moving 24 h).
    Allowed { used: u32 },
    /// The portfolio reached `limit` unique patients; the oldest frees at `frees_at_ms`.
    Reached { limit: u32, frees_at_ms: i64 },
}

#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Counts `patient` against the portfolio's moving-24 h limit of unique patients reached
    /// outside their window, if there is room. Atomic across clinics and nodes.
    async fn reach_patient(
        &self,
        portfolio: &str,
        patient: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError>;
    /// [`Self::reach_patient`] for several patients, in order (a later one sees the earlier
    /// ones counted).
    async fn reach_patients(
        &self,
        portfolio: &str,
        patients: &[&str],
        limit: u32,
        now_ms: i64,
    ) -> Result<Vec<LimitDecision>, StoreError> {
        let mut out = Vec::with_capacity(patients.len());
        for p in patients {
            out.push(self.reach_patient(portfolio, p, limit, now_ms).await?);
        }
        Ok(out)
    }
}

/// A clinic's templates by `(name, language)`.
pub type Catalog = std::collections::HashMap<(String, String), TemplateRecord>;
