//! `MemoryStore`'s tenancy half: clinics, API keys, wallets with their ledgers, templates,
//! customer-service windows and messaging limits. Same contract as `redis/tenancy.rs` (the tests
//! in `contract_tenancy.rs` run against both), one lock of its own.
//!
//! Also the few rules both stores share so they agree on identity: [`key_part`] and
//! [`patient_part`] (which strings name the same portfolio or patient) and the window length.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::tenancy::{
    ApiKeyRecord, ConversationStore, LedgerEntry, LedgerKind, LimitDecision, LimitStore,
    Reservation, TemplateRecord, TemplateStore, TenantStore, WalletSnapshot, WalletStore,
};
use super::{MemoryStore, StoreError};
use crate::domain::{MessageId, Money, PhoneNumberId, TenantId};
use crate::tenants::model::ClinicSettings;

/// The customer-service window and the messaging limit's moving window: 24 h.
pub(crate) const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Touches between two sweeps of expired windows in the memory store.
const WINDOW_SWEEP_EVERY: u64 = 1024;

/// A free-form string (a portfolio id, a key hash) as a safe part of a key or member: itself when
/// it is 1 to 64 letters, digits, `_` or `-`; otherwise `~` and its SHA-256 hex (`~` never occurs
/// in the first form, so the two cannot collide).
pub(crate) fn key_part(s: &str) -> String {
    let safe = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        s.to_owned()
    } else {
        format!("~{}", hex::encode(Sha256::digest(s.as_bytes())))
    }
}

/// A patient as a key part: the digits of an E.164 number (`+919876543210` and `919876543210` are
/// the same patient), anything else through [`key_part`].
pub(crate) fn patient_part(patient: &str) -> String {
    let digits = patient.strip_prefix('+').unwrap_or(patient);
    if !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.to_owned()
    } else {
        key_part(patient)
    }
}

/// Amounts the wallet takes are never negative (a negative hold or charge would mint money).
pub(crate) fn non_negative(what: &str, amount: Money) -> Result<(), StoreError> {
    if amount.is_negative() {
        return Err(StoreError::Conflict(format!(
            "{what} must not be negative ({amount})"
        )));
    }
    Ok(())
}

/// A ledger id or cursor `<ms>-<seq>` (a stream id; `<ms>` alone means `<ms>-0`).
pub(crate) fn ledger_position(cursor: &str) -> Result<(u64, u64), StoreError> {
    let (a, b) = cursor.split_once('-').unwrap_or((cursor, "0"));
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(StoreError::Conflict(format!(
            "ledger cursor {:?} is not a ledger entry id",
            cursor.chars().take(40).collect::<String>()
        ))),
    }
}

/// The refusal of a number another clinic holds (same text in both stores).
pub(crate) fn number_conflict(number: &str, owner: &str) -> StoreError {
    StoreError::Conflict(format!(
        "business number {number} belongs to clinic {owner}"
    ))
}

/// The refusal of an API key id reused for another key, or a key hash already held by another key.
pub(crate) fn api_key_conflict(key: &ApiKeyRecord) -> StoreError {
    StoreError::Conflict(format!(
        "API key {} of clinic {} clashes with a stored key",
        key.id, key.tenant
    ))
}

#[derive(Default)]
struct Wallet {
    totals: WalletSnapshot,
    reservations: HashMap<MessageId, Money>,
    credits: HashSet<String>,
    ledger: Vec<LedgerEntry>,
}

#[derive(Default)]
struct Reached {
    by_patient: HashMap<String, i64>,
    by_score: BTreeSet<(i64, String)>,
}

#[derive(Default)]
pub(crate) struct State {
    clinics: BTreeMap<TenantId, ClinicSettings>,
    numbers: HashMap<PhoneNumberId, TenantId>,
    version: u64,
    api_keys: BTreeMap<TenantId, BTreeMap<String, ApiKeyRecord>>,
    /// Key hash → (tenant, key id) of active keys.
    key_lookup: HashMap<String, (TenantId, String)>,
    wallets: HashMap<TenantId, Wallet>,
    ledger_seq: u64,
    templates: HashMap<TenantId, BTreeMap<(String, String), TemplateRecord>>,
    /// (tenant, patient) → latest inbound ms.
    windows: HashMap<(TenantId, String), i64>,
    window_touches: u64,
    reached: HashMap<String, Reached>,
}

impl State {
    fn append(&mut self, tenant: &TenantId, entry: impl FnOnce(String) -> LedgerEntry) {
        self.ledger_seq += 1;
        let id = format!("{}-0", self.ledger_seq);
        let w = self.wallets.entry(tenant.clone()).or_default();
        w.ledger.push(entry(id));
    }

    /// Settle (`Some(charge)`) or release (`None`) a message's reservation.
    fn end_reservation(
        &mut self,
        tenant: &TenantId,
        message: &MessageId,
        charge: Option<Money>,
        now_ms: i64,
    ) -> Option<WalletSnapshot> {
        let w = self.wallets.get_mut(tenant)?;
        let held = w.reservations.remove(message)?;
        w.totals.reserved = w.totals.reserved - held;
        if let Some(charge) = charge {
            w.totals.settled = w.totals.settled + charge;
        }
        let snap = w.totals;
        let (kind, amount, reserved) = match charge {
            Some(charge) => (LedgerKind::Settle, charge, held),
            None => (LedgerKind::Release, held, Money::ZERO),
        };
        self.append(tenant, |id| LedgerEntry {
            id,
            kind,
            amount,
            reserved,
            reference: message.as_str().to_owned(),
            available_after: snap.available(),
            at_ms: now_ms,
        });
        Some(snap)
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn put_clinic(&self, clinic: &ClinicSettings) -> Result<(), StoreError> {
        let mut g = self.tenancy.lock();
        for n in &clinic.numbers {
            match g.numbers.get(&n.phone_number_id) {
                Some(owner) if owner != &clinic.id => {
                    return Err(number_conflict(n.phone_number_id.as_str(), owner.as_str()));
                }
                _ => {}
            }
        }
        let dropped: Vec<PhoneNumberId> = g
            .clinics
            .get(&clinic.id)
            .map(|old| {
                old.numbers
                    .iter()
                    .map(|n| n.phone_number_id.clone())
                    .filter(|n| clinic.number(n).is_none())
                    .collect()
            })
            .unwrap_or_default();
        for n in dropped {
            if g.numbers.get(&n) == Some(&clinic.id) {
                g.numbers.remove(&n);
            }
        }
        for n in &clinic.numbers {
            g.numbers
                .insert(n.phone_number_id.clone(), clinic.id.clone());
        }
        g.clinics.insert(clinic.id.clone(), clinic.clone());
        g.version += 1;
        Ok(())
    }

    async fn clinic(&self, id: &TenantId) -> Result<Option<ClinicSettings>, StoreError> {
        Ok(self.tenancy.lock().clinics.get(id).cloned())
    }

    async fn clinics(&self) -> Result<Vec<ClinicSettings>, StoreError> {
        Ok(self.tenancy.lock().clinics.values().cloned().collect())
    }

    async fn directory_version(&self) -> Result<u64, StoreError> {
        Ok(self.tenancy.lock().version)
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut g = self.tenancy.lock();
        let same_id = g
            .api_keys
            .get(&key.tenant)
            .and_then(|keys| keys.get(&key.id));
        if same_id.is_some_and(|old| old.hash != key.hash) {
            return Err(api_key_conflict(key));
        }
        if g.key_lookup
            .get(&key.hash)
            .is_some_and(|(t, id)| t != &key.tenant || id != &key.id)
        {
            return Err(api_key_conflict(key));
        }
        g.api_keys
            .entry(key.tenant.clone())
            .or_default()
            .insert(key.id.clone(), key.clone());
        if key.revoked_ms.is_none() {
            g.key_lookup
                .insert(key.hash.clone(), (key.tenant.clone(), key.id.clone()));
        } else {
            g.key_lookup.remove(&key.hash);
        }
        g.version += 1;
        Ok(())
    }

    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(self
            .tenancy
            .lock()
            .api_keys
            .get(tenant)
            .map(|keys| keys.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn active_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let g = self.tenancy.lock();
        // Like Redis: the keys of stored clinics (a key without its clinic authenticates nobody).
        Ok(g.clinics
            .keys()
            .filter_map(|t| g.api_keys.get(t))
            .flat_map(|keys| keys.values())
            .filter(|k| k.revoked_ms.is_none())
            .cloned()
            .collect())
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut g = self.tenancy.lock();
        let Some(key) = g
            .api_keys
            .get_mut(tenant)
            .and_then(|keys| keys.get_mut(key_id))
        else {
            return Ok(false);
        };
        if key.revoked_ms.is_some() {
            return Ok(true);
        }
        key.revoked_ms = Some(now_ms);
        let hash = key.hash.clone();
        if g.key_lookup
            .get(&hash)
            .is_some_and(|(t, id)| t == tenant && id == key_id)
        {
            g.key_lookup.remove(&hash);
        }
        g.version += 1;
        Ok(true)
    }
}

#[async_trait]
impl WalletStore for MemoryStore {
    async fn credit(
        &self,
        tenant: &TenantId,
        amount: Money,
        reference: &str,
        now_ms: i64,
    ) -> Result<(bool, WalletSnapshot), StoreError> {
        non_negative("a credit", amount)?;
        let mut g = self.tenancy.lock();
        let w = g.wallets.entry(tenant.clone()).or_default();
        if !w.credits.insert(reference.to_owned()) {
            return Ok((false, w.totals));
        }
        w.totals.credited = w.totals.credited + amount;
        let snap = w.totals;
        g.append(tenant, |id| LedgerEntry {
            id,
            kind: LedgerKind::Credit,
            amount,
            reserved: Money::ZERO,
            reference: reference.to_owned(),
            available_after: snap.available(),
            at_ms: now_ms,
        });
        Ok((true, snap))
    }

    async fn reserve(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        amount: Money,
        now_ms: i64,
    ) -> Result<Reservation, StoreError> {
        non_negative("a reservation", amount)?;
        let mut g = self.tenancy.lock();
        let w = g.wallets.entry(tenant.clone()).or_default();
        let available = w.totals.available();
        if w.reservations.contains_key(message) {
            return Ok(Reservation::Held { available });
        }
        if amount > Money::ZERO && amount > available {
            return Ok(Reservation::Insufficient { available });
        }
        w.reservations.insert(message.clone(), amount);
        w.totals.reserved = w.totals.reserved + amount;
        let available = w.totals.available();
        g.append(tenant, |id| LedgerEntry {
            id,
            kind: LedgerKind::Reserve,
            amount,
            reserved: Money::ZERO,
            reference: message.as_str().to_owned(),
            available_after: available,
            at_ms: now_ms,
        });
        Ok(Reservation::Held { available })
    }

    async fn settle(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        charge: Money,
        now_ms: i64,
    ) -> Result<Option<WalletSnapshot>, StoreError> {
        non_negative("a charge", charge)?;
        Ok(self
            .tenancy
            .lock()
            .end_reservation(tenant, message, Some(charge), now_ms))
    }

    async fn release(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        now_ms: i64,
    ) -> Result<Option<WalletSnapshot>, StoreError> {
        Ok(self
            .tenancy
            .lock()
            .end_reservation(tenant, message, None, now_ms))
    }

    async fn wallet(&self, tenant: &TenantId) -> Result<WalletSnapshot, StoreError> {
        Ok(self
            .tenancy
            .lock()
            .wallets
            .get(tenant)
            .map(|w| w.totals)
            .unwrap_or_default())
    }

    async fn ledger(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let after = cursor.map(ledger_position).transpose()?;
        let g = self.tenancy.lock();
        let Some(w) = g.wallets.get(tenant) else {
            return Ok(Vec::new());
        };
        Ok(w.ledger
            .iter()
            .filter(|e| match after {
                None => true,
                Some(after) => ledger_position(&e.id).is_ok_and(|p| p > after),
            })
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl TemplateStore for MemoryStore {
    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &TemplateRecord,
    ) -> Result<(), StoreError> {
        self.tenancy
            .lock()
            .templates
            .entry(tenant.clone())
            .or_default()
            .insert(
                (template.name.clone(), template.language.clone()),
                template.clone(),
            );
        Ok(())
    }

    async fn template(
        &self,
        tenant: &TenantId,
        name: &str,
        language: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        Ok(self
            .tenancy
            .lock()
            .templates
            .get(tenant)
            .and_then(|t| t.get(&(name.to_owned(), language.to_owned())))
            .cloned())
    }

    async fn templates(&self, tenant: &TenantId) -> Result<Vec<TemplateRecord>, StoreError> {
        Ok(self
            .tenancy
            .lock()
            .templates
            .get(tenant)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn touch_window(
        &self,
        tenant: &TenantId,
        patient: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        let key = (tenant.clone(), patient_part(patient));
        let mut g = self.tenancy.lock();
        g.window_touches += 1;
        if g.window_touches % WINDOW_SWEEP_EVERY == 0 {
            g.windows.retain(|_, latest| *latest + WINDOW_MS > now);
        }
        let open = g.windows.get(&key).filter(|l| **l + WINDOW_MS > now);
        if open.is_some_and(|latest| *latest >= at_ms) {
            return Ok(());
        }
        if at_ms + WINDOW_MS > now {
            g.windows.insert(key, at_ms);
        } else {
            // Like PEXPIREAT in the past: the window closed already.
            g.windows.remove(&key);
        }
        Ok(())
    }

    async fn window_until(
        &self,
        tenant: &TenantId,
        patient: &str,
    ) -> Result<Option<i64>, StoreError> {
        let now = crate::clock::now_ms();
        let key = (tenant.clone(), patient_part(patient));
        let mut g = self.tenancy.lock();
        match g.windows.get(&key) {
            Some(latest) if *latest + WINDOW_MS > now => Ok(Some(*latest + WINDOW_MS)),
            Some(_) => {
                g.windows.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl LimitStore for MemoryStore {
    async fn reach_patient(
        &self,
        portfolio: &str,
        patient: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError> {
        let patient = patient_part(patient);
        let mut g = self.tenancy.lock();
        let r = g.reached.entry(key_part(portfolio)).or_default();
        // Drop everyone reached 24 h ago or earlier.
        while let Some(first) = r.by_score.first() {
            if first.0 > now_ms - WINDOW_MS {
                break;
            }
            if let Some((_, p)) = r.by_score.pop_first() {
                r.by_patient.remove(&p);
            }
        }
        let used = |r: &Reached| u32::try_from(r.by_patient.len()).unwrap_or(u32::MAX);
        if let Some(last) = r.by_patient.get(&patient).copied() {
            if now_ms > last {
                r.by_score.remove(&(last, patient.clone()));
                r.by_score.insert((now_ms, patient.clone()));
                r.by_patient.insert(patient, now_ms);
            }
            return Ok(LimitDecision::Allowed { used: used(r) });
        }
        let n = r.by_patient.len();
        if n < limit as usize {
            r.by_score.insert((now_ms, patient.clone()));
            r.by_patient.insert(patient, now_ms);
            return Ok(LimitDecision::Allowed { used: used(r) });
        }
        // Room comes back when the count drops below the limit.
        let frees_at_ms = r
            .by_score
            .iter()
            .nth(n - limit as usize)
            .map_or(now_ms + WINDOW_MS, |(at, _)| at + WINDOW_MS);
        Ok(LimitDecision::Reached { limit, frees_at_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_are_safe_and_agree_on_identity() {
        assert_eq!(key_part("portfolio_1"), "portfolio_1");
        let odd = key_part("a{b}:c");
        assert!(odd.starts_with('~') && odd.len() == 65, "{odd}");
        assert_ne!(key_part("a{b}:c"), key_part("a{b}:d"));
        assert!(key_part("").starts_with('~'));
        assert_eq!(patient_part("+919876543210"), "919876543210");
        assert_eq!(patient_part("919876543210"), "919876543210");
        assert!(patient_part("+91 98765").starts_with('~'));
        assert!(patient_part("+").starts_with('~'));
    }

    #[test]
    fn ledger_positions() {
        assert_eq!(ledger_position("17-3").ok(), Some((17, 3)));
        assert_eq!(ledger_position("17").ok(), Some((17, 0)));
        assert!(matches!(
            ledger_position("x-1"),
            Err(StoreError::Conflict(_))
        ));
        assert!(ledger_position("1-2-3").is_err());
        assert!(ledger_position("(1-2").is_err());
    }
}
