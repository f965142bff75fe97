//! `RedisStore`'s tenancy half: clinics, API keys, wallets with their ledgers, templates,
//! customer-service windows and messaging limits. Layout in [`super::keys`].
//!
//! A tenant's own data lives under `{t:<tenant>}` and every wallet movement is one script on that
//! slot. The directory's global keys (`clinics`, `number:<pnid>`, `apikey:<hash>`,
//! `directory:version`) are single-key commands on other slots, so writes that span them are not
//! atomic in Cluster. They are ordered so that a crash between two steps fails closed:
//! - a number's owner key is its uniqueness lock: claimed (set-if-absent) *before* the clinic
//!   record names the number, released only after the record dropped it. A crash can leave a
//!   number reserved for a clinic whose record does not list it (putting the clinic again repairs
//!   it); it can never leave one number in two clinics' records.
//! - an API key's lookup is written *after* its record and deleted *before* its revocation is
//!   recorded: a crash leaves a key that does not authenticate, never a key that authenticates
//!   without a record that can revoke it.
//! - the clinic set is added to after the record is written; the directory version is bumped last.

use ::redis::Value;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::template_field;
use super::reply::{corrupt, int, items, pairs, stream_entry, text};
use super::{json_err, unavailable, RedisStore};
use crate::domain::{MessageId, Money, TenantId};
use crate::store::memory_tenancy::{
    api_key_conflict, ledger_position, non_negative, number_conflict, patient_part, WINDOW_MS,
};
use crate::store::tenancy::{
    ApiKeyRecord, ConversationStore, LedgerEntry, LedgerKind, LimitDecision, LimitStore,
    Reservation, TemplateRecord, TemplateStore, TenantStore, WalletSnapshot, WalletStore,
};
use crate::store::StoreError;
use crate::tenants::model::ClinicSettings;

/// Keys per pipeline when loading the directory.
const PIPELINE_CHUNK: usize = 256;

/// The outcome of the `claim` script.
enum Claim {
    /// Claimed now.
    New,
    /// Already held by this value.
    Held,
    /// Held by another value.
    Other(String),
}

fn encode<T: Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Unavailable(format!("encoding {what}: {e}")))
}

fn decode<T: DeserializeOwned>(key: &str, what: &str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| json_err(key, what, e))
}

/// `<tenant>|<key id>`: what an API key's lookup holds.
fn lookup_value(tenant: &TenantId, key_id: &str) -> String {
    format!("{}|{}", tenant.as_str(), key_id)
}

/// A string reply, `None` for nil.
fn opt_text(key: &str, v: &Value) -> Result<Option<String>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        other => text(other)
            .map(Some)
            .ok_or_else(|| corrupt(key, "not a string")),
    }
}

/// The clinic record under `key`, checked to be the clinic asked for.
fn clinic_from(
    key: &str,
    id: &TenantId,
    raw: &str,
    secrets: Option<&crate::secrets::SecretKeys>,
) -> Result<ClinicSettings, StoreError> {
    let clinic: ClinicSettings = match secrets {
        None => decode(key, "clinic", raw)?,
        Some(keys) => {
            let mut v: serde_json::Value = decode(key, "clinic", raw)?;
            crate::secrets::map_clinic_secrets(&mut v, |s| keys.open(s))
                .map_err(|e| corrupt(key, e.to_string()))?;
            serde_json::from_value(v).map_err(|e| json_err(key, "clinic", e))?
        }
    };
    if &clinic.id != id {
        return Err(corrupt(key, format!("holds clinic {}", clinic.id)));
    }
    Ok(clinic)
}

/// A tenant's API key records from its hash, checked and sorted by id.
fn api_keys_from(key: &str, tenant: &TenantId, v: &Value) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let fields = pairs(v).ok_or_else(|| corrupt(key, "HGETALL reply is not field/value pairs"))?;
    let mut out = Vec::with_capacity(fields.len());
    for (id, raw) in fields {
        let rec: ApiKeyRecord = decode(key, "API key", &raw)?;
        if rec.id != id || &rec.tenant != tenant {
            return Err(corrupt(
                key,
                format!("field {id} holds key {} of {}", rec.id, rec.tenant),
            ));
        }
        out.push(rec);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A template record from its hash field, checked to be the one the field names.
fn template_from(key: &str, field: &str, raw: &str) -> Result<TemplateRecord, StoreError> {
    let t: TemplateRecord = decode(key, "template", raw)?;
    if template_field(&t.name, &t.language) != field {
        return Err(corrupt(
            key,
            format!("field {field} holds {}|{}", t.name, t.language),
        ));
    }
    Ok(t)
}

fn money(key: &str, what: &str, v: Option<&Value>) -> Result<Money, StoreError> {
    v.and_then(int)
        .map(Money)
        .ok_or_else(|| corrupt(key, format!("{what} is not an integer")))
}

/// `{code, credited, settled, reserved}` from a wallet script; codes below 0 are corrupt data.
fn wallet_reply(
    wallet_key: &str,
    res_key: &str,
    v: &Value,
) -> Result<(i64, WalletSnapshot), StoreError> {
    wallet_parts(wallet_key, res_key, items_of(wallet_key, v)?)
}

fn items_of<'a>(wallet_key: &str, v: &'a Value) -> Result<&'a [Value], StoreError> {
    items(v).ok_or_else(|| corrupt(wallet_key, "wallet reply is not an array"))
}

/// One `{code, credited, settled, reserved}` of a wallet script's reply.
fn wallet_parts(
    wallet_key: &str,
    res_key: &str,
    parts: &[Value],
) -> Result<(i64, WalletSnapshot), StoreError> {
    let code = parts
        .first()
        .and_then(int)
        .ok_or_else(|| corrupt(wallet_key, "wallet reply has no code"))?;
    match code {
        -1 => return Err(corrupt(wallet_key, "wallet totals are not integers")),
        -2 => return Err(corrupt(res_key, "a reservation is not an integer")),
        _ => {}
    }
    let snap = WalletSnapshot {
        credited: money(wallet_key, "credited", parts.get(1))?,
        settled: money(wallet_key, "settled", parts.get(2))?,
        reserved: money(wallet_key, "reserved", parts.get(3))?,
    };
    Ok((code, snap))
}

/// A reserve script's outcome.
fn reservation(code: i64, snap: WalletSnapshot) -> Reservation {
    let available = snap.available();
    if code == 1 {
        Reservation::Held { available }
    } else {
        Reservation::Insufficient { available }
    }
}

/// The limit script's `{1, used}` or `{0, limit, frees_at}`.
fn limit_reply(key: &str, v: &Value, limit: u32) -> Result<LimitDecision, StoreError> {
    let parts = items(v).ok_or_else(|| corrupt(key, "limit reply is not an array"))?;
    let nums = parts.iter().map(int).collect::<Option<Vec<i64>>>();
    match nums.as_deref() {
        Some([1, used]) => Ok(LimitDecision::Allowed {
            used: u32::try_from(*used).map_err(|_| corrupt(key, "count out of range"))?,
        }),
        Some([0, _, frees_at_ms]) => Ok(LimitDecision::Reached {
            limit,
            frees_at_ms: *frees_at_ms,
        }),
        _ => Err(corrupt(
            key,
            "limit reply is not [1, used] or [0, limit, frees_at]",
        )),
    }
}

/// Until when a window is open, from its key's value (the latest inbound, unix ms).
pub(super) fn window_from(key: &str, raw: &str, now_ms: i64) -> Result<Option<i64>, StoreError> {
    let latest = raw
        .parse::<i64>()
        .map_err(|_| corrupt(key, format!("latest inbound {raw:?}")))?;
    let until = latest.saturating_add(WINDOW_MS);
    Ok((until > now_ms).then_some(until))
}

fn ledger_entry(
    key: &str,
    id: String,
    fields: Vec<(String, String)>,
) -> Result<LedgerEntry, StoreError> {
    let mut kind = None;
    let mut amount = None;
    let mut reserved = None;
    let mut reference = None;
    let mut available = None;
    let mut at = None;
    let num = |name: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| corrupt(key, format!("entry {id}: {name} {v:?}")))
    };
    for (f, v) in fields {
        match f.as_str() {
            "kind" => {
                kind = Some(match v.as_str() {
                    "credit" => LedgerKind::Credit,
                    "reserve" => LedgerKind::Reserve,
                    "release" => LedgerKind::Release,
                    "settle" => LedgerKind::Settle,
                    other => return Err(corrupt(key, format!("entry {id}: kind {other:?}"))),
                })
            }
            "amount" => amount = Some(num("amount", &v)?),
            "reserved" => reserved = Some(num("reserved", &v)?),
            "reference" => reference = Some(v),
            "available_after" => available = Some(num("available_after", &v)?),
            "at" => at = Some(num("at", &v)?),
            _ => {}
        }
    }
    let (Some(kind), Some(amount), Some(reference), Some(available), Some(at)) =
        (kind, amount, reference, available, at)
    else {
        return Err(corrupt(key, format!("entry {id} misses a field")));
    };
    Ok(LedgerEntry {
        id,
        kind,
        amount: Money(amount),
        reserved: Money(reserved.unwrap_or(0)),
        reference,
        available_after: Money(available),
        at_ms: at,
    })
}

impl RedisStore {
    /// Re-saves every clinic whose secrets are not sealed with the current key (after keys were
    /// configured or rotated). Returns how many were re-saved.
    pub async fn reseal_clinics(&self) -> Result<usize, StoreError> {
        let Some(keys) = self.secret_keys() else {
            return Ok(0);
        };
        let ids = self.clinic_ids().await?;
        let mut n = 0;
        for id in ids {
            let key = self.keys().clinic(&id);
            let Some(raw) = self.get_text(&key).await? else {
                continue;
            };
            let mut v: serde_json::Value = decode(&key, "clinic", &raw)?;
            let mut stale = false;
            crate::secrets::map_clinic_secrets(&mut v, |s| {
                stale |= !keys.is_current(s);
                Ok(s.to_owned())
            })
            .map_err(|e| corrupt(&key, e.to_string()))?;
            if stale {
                if let Some(c) = self.clinic(&id).await? {
                    self.put_clinic(&c).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn query(&self, cmd: &::redis::Cmd) -> Result<Value, StoreError> {
        let mut c = self.conn().await?;
        cmd.query_async(&mut c).await.map_err(unavailable)
    }

    async fn get_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v = self.query(::redis::cmd("GET").arg(key)).await?;
        opt_text(key, &v)
    }

    async fn hget_text(&self, key: &str, field: &str) -> Result<Option<String>, StoreError> {
        let v = self.query(::redis::cmd("HGET").arg(key).arg(field)).await?;
        opt_text(key, &v)
    }

    async fn bump_directory(&self) -> Result<(), StoreError> {
        self.query(::redis::cmd("INCR").arg(self.keys().directory_version()))
            .await
            .map(drop)
    }

    /// Sets `key` to `value` unless another value holds it.
    async fn claim_key(&self, key: &str, value: &str) -> Result<Claim, StoreError> {
        let mut c = self.conn().await?;
        let v: Value = self
            .inner
            .scripts
            .claim
            .key(key)
            .arg(value)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match items(&v) {
            Some([code, holder]) => match int(code) {
                Some(1) => Ok(Claim::New),
                Some(0) => Ok(Claim::Held),
                _ => Ok(Claim::Other(text(holder).unwrap_or_default())),
            },
            _ => Err(corrupt(key, "claim reply is not [code, holder]")),
        }
    }

    /// Deletes `key` if it still holds `value`.
    async fn release_key(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .inner
            .scripts
            .del_if
            .key(key)
            .arg(value)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The ids in the clinic set, sorted.
    async fn clinic_ids(&self) -> Result<Vec<TenantId>, StoreError> {
        let key = self.keys().clinic_set();
        let v = self.query(::redis::cmd("SMEMBERS").arg(&key)).await?;
        let mut ids = items(&v)
            .ok_or_else(|| corrupt(&key, "SMEMBERS reply is not an array"))?
            .iter()
            .map(|m| {
                let raw = text(m).ok_or_else(|| corrupt(&key, "a member is not a string"))?;
                TenantId::parse(&raw).map_err(|e| corrupt(&key, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// One command per key (keys of any tenants), in chunks; the replies in order.
    async fn pipelined(&self, cmds: Vec<::redis::Cmd>) -> Result<Vec<Value>, StoreError> {
        self.inner
            .conns
            .cross_slot(&cmds, PIPELINE_CHUNK)
            .await
            .map_err(unavailable)
    }

    /// Runs one of the wallet scripts on a tenant's wallet, reservations (or credit
    /// references) and ledger.
    async fn wallet_script(
        &self,
        script: &::redis::Script,
        tenant: &TenantId,
        second: String,
        args: &[String],
    ) -> Result<(i64, WalletSnapshot), StoreError> {
        let k = self.keys();
        let wallet = k.wallet(tenant);
        let mut inv = script.prepare_invoke();
        inv.key(&wallet).key(&second).key(k.ledger(tenant));
        for a in args {
            inv.arg(a);
        }
        let mut c = self.conn().await?;
        let v: Value = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        wallet_reply(&wallet, &second, &v)
    }
}

#[async_trait]
impl TenantStore for RedisStore {
    async fn put_clinic(&self, clinic: &ClinicSettings) -> Result<(), StoreError> {
        let k = self.keys();
        let body = match self.secret_keys() {
            None => encode("a clinic", clinic)?,
            Some(keys) => {
                let mut v = serde_json::to_value(clinic)
                    .map_err(|e| StoreError::Unavailable(format!("encoding a clinic: {e}")))?;
                crate::secrets::map_clinic_secrets(&mut v, |s| keys.seal(s))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                v.to_string()
            }
        };
        let owner = clinic.id.as_str();
        let old = match self.clinic(&clinic.id).await {
            Ok(old) => old,
            // Replacing an unreadable record is how it gets repaired; its numbers stay claimed.
            Err(StoreError::Corrupt { key, why }) => {
                tracing::warn!(%key, %why, "replacing an unreadable clinic record");
                None
            }
            Err(e) => return Err(e),
        };
        // 1. The numbers' locks, before the record names them.
        let mut claimed_now = Vec::new();
        for n in &clinic.numbers {
            let key = k.number_owner(&n.phone_number_id);
            match self.claim_key(&key, owner).await? {
                Claim::New => claimed_now.push(key),
                Claim::Held => {}
                Claim::Other(holder) => {
                    for key in &claimed_now {
                        if let Err(e) = self.release_key(key, owner).await {
                            tracing::warn!(%key, error = %e, "could not undo a number claim");
                        }
                    }
                    return Err(number_conflict(n.phone_number_id.as_str(), &holder));
                }
            }
        }
        // 2. The record, then its place in the clinic set.
        self.query(::redis::cmd("SET").arg(k.clinic(&clinic.id)).arg(&body))
            .await?;
        self.query(::redis::cmd("SADD").arg(k.clinic_set()).arg(owner))
            .await?;
        // 3. The numbers it no longer has, once the record no longer names them.
        if let Some(old) = old {
            for n in &old.numbers {
                if clinic.number(&n.phone_number_id).is_none() {
                    self.release_key(&k.number_owner(&n.phone_number_id), owner)
                        .await?;
                }
            }
        }
        self.bump_directory().await
    }

    async fn clinic(&self, id: &TenantId) -> Result<Option<ClinicSettings>, StoreError> {
        let key = self.keys().clinic(id);
        match self.get_text(&key).await? {
            Some(raw) => clinic_from(&key, id, &raw, self.secret_keys()).map(Some),
            None => Ok(None),
        }
    }

    async fn clinics(&self) -> Result<Vec<ClinicSettings>, StoreError> {
        let ids = self.clinic_ids().await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys().clinic(id)).collect();
        let cmds = keys
            .iter()
            .map(|key| {
                let mut c = ::redis::cmd("GET");
                c.arg(key);
                c
            })
            .collect();
        let replies = self.pipelined(cmds).await?;
        let mut out = Vec::with_capacity(ids.len());
        for ((id, key), v) in ids.iter().zip(&keys).zip(&replies) {
            // A member without a record: its first write did not complete. Not a clinic yet.
            if let Some(raw) = opt_text(key, v)? {
                out.push(clinic_from(key, id, &raw, self.secret_keys())?);
            }
        }
        Ok(out)
    }

    async fn directory_version(&self) -> Result<u64, StoreError> {
        let key = self.keys().directory_version();
        match self.get_text(&key).await? {
            None => Ok(0),
            Some(raw) => raw
                .parse::<u64>()
                .map_err(|_| corrupt(&key, format!("version {raw:?}"))),
        }
    }

    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let k = self.keys();
        let records = k.api_keys(&key.tenant);
        let lookup = k.api_key_lookup(&key.hash);
        let value = lookup_value(&key.tenant, &key.id);
        if let Some(raw) = self.hget_text(&records, &key.id).await? {
            let old: ApiKeyRecord = decode(&records, "API key", &raw)?;
            if old.hash != key.hash {
                return Err(api_key_conflict(key));
            }
        }
        if self
            .get_text(&lookup)
            .await?
            .is_some_and(|holder| holder != value)
        {
            return Err(api_key_conflict(key));
        }
        let body = encode("an API key", key)?;
        // The record first, the lookup after it (see the module docs).
        self.query(::redis::cmd("HSET").arg(&records).arg(&key.id).arg(body))
            .await?;
        if key.revoked_ms.is_none() {
            self.query(::redis::cmd("SET").arg(&lookup).arg(&value))
                .await?;
        } else {
            self.release_key(&lookup, &value).await?;
        }
        self.bump_directory().await
    }

    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let key = self.keys().api_keys(tenant);
        let v = self.query(::redis::cmd("HGETALL").arg(&key)).await?;
        api_keys_from(&key, tenant, &v)
    }

    async fn active_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let ids = self.clinic_ids().await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys().api_keys(id)).collect();
        let cmds = keys
            .iter()
            .map(|key| {
                let mut c = ::redis::cmd("HGETALL");
                c.arg(key);
                c
            })
            .collect();
        let replies = self.pipelined(cmds).await?;
        let mut out = Vec::new();
        for ((id, key), v) in ids.iter().zip(&keys).zip(&replies) {
            out.extend(
                api_keys_from(key, id, v)?
                    .into_iter()
                    .filter(|k| k.revoked_ms.is_none()),
            );
        }
        Ok(out)
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let k = self.keys();
        let records = k.api_keys(tenant);
        let Some(raw) = self.hget_text(&records, key_id).await? else {
            return Ok(false);
        };
        let mut rec: ApiKeyRecord = decode(&records, "API key", &raw)?;
        if rec.revoked_ms.is_some() {
            return Ok(true);
        }
        // The lookup first: from here on the key authenticates nobody.
        self.release_key(&k.api_key_lookup(&rec.hash), &lookup_value(tenant, key_id))
            .await?;
        rec.revoked_ms = Some(now_ms);
        let body = encode("an API key", &rec)?;
        self.query(::redis::cmd("HSET").arg(&records).arg(key_id).arg(body))
            .await?;
        self.bump_directory().await?;
        Ok(true)
    }
}

#[async_trait]
impl WalletStore for RedisStore {
    async fn credit(
        &self,
        tenant: &TenantId,
        amount: Money,
        reference: &str,
        now_ms: i64,
    ) -> Result<(bool, WalletSnapshot), StoreError> {
        non_negative("a credit", amount)?;
        let (code, snap) = self
            .wallet_script(
                &self.inner.scripts.credit,
                tenant,
                self.keys().credits(tenant),
                &[
                    amount.micros().to_string(),
                    reference.to_owned(),
                    now_ms.to_string(),
                ],
            )
            .await?;
        Ok((code == 1, snap))
    }

    async fn reserve(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        amount: Money,
        now_ms: i64,
    ) -> Result<Reservation, StoreError> {
        non_negative("a reservation", amount)?;
        let (code, snap) = self
            .wallet_script(
                &self.inner.scripts.reserve,
                tenant,
                self.keys().reservations(tenant),
                &[
                    message.as_str().to_owned(),
                    amount.micros().to_string(),
                    now_ms.to_string(),
                ],
            )
            .await?;
        Ok(reservation(code, snap))
    }

    async fn reserve_many(
        &self,
        tenant: &TenantId,
        items: &[(&MessageId, Money)],
        now_ms: i64,
    ) -> Result<Vec<Reservation>, StoreError> {
        let k = self.keys();
        let (wallet, res, ledger) = (k.wallet(tenant), k.reservations(tenant), k.ledger(tenant));
        let script = &self.inner.scripts.reserve;
        let mut calls = Vec::new();
        for chunk in items.chunks(super::clinical::SCRIPT_CHUNK) {
            let mut inv = script.prepare_invoke();
            inv.key(&wallet).key(&res).key(&ledger);
            for (message, amount) in chunk {
                non_negative("a reservation", *amount)?;
                inv.arg(message.as_str()).arg(amount.micros()).arg(now_ms);
            }
            calls.push(inv);
        }
        // One {t:} slot: the calls run in order, as `reserve` one after another would.
        let mut out = Vec::with_capacity(items.len());
        for v in self.run_scripts(script, &calls).await? {
            let parts = items_of(&wallet, &v)?;
            for one in parts.chunks(4) {
                let (code, snap) = wallet_parts(&wallet, &res, one)?;
                out.push(reservation(code, snap));
            }
        }
        if out.len() != items.len() {
            return Err(corrupt(&wallet, "reserve answered another number of holds"));
        }
        Ok(out)
    }

    async fn settle(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        charge: Money,
        now_ms: i64,
    ) -> Result<Option<WalletSnapshot>, StoreError> {
        non_negative("a charge", charge)?;
        let (code, snap) = self
            .wallet_script(
                &self.inner.scripts.wallet_end,
                tenant,
                self.keys().reservations(tenant),
                &[
                    "settle".to_owned(),
                    message.as_str().to_owned(),
                    charge.micros().to_string(),
                    now_ms.to_string(),
                ],
            )
            .await?;
        Ok((code == 1).then_some(snap))
    }

    async fn release(
        &self,
        tenant: &TenantId,
        message: &MessageId,
        now_ms: i64,
    ) -> Result<Option<WalletSnapshot>, StoreError> {
        let (code, snap) = self
            .wallet_script(
                &self.inner.scripts.wallet_end,
                tenant,
                self.keys().reservations(tenant),
                &[
                    "release".to_owned(),
                    message.as_str().to_owned(),
                    "0".to_owned(),
                    now_ms.to_string(),
                ],
            )
            .await?;
        Ok((code == 1).then_some(snap))
    }

    async fn wallet(&self, tenant: &TenantId) -> Result<WalletSnapshot, StoreError> {
        let key = self.keys().wallet(tenant);
        let v = self
            .query(
                ::redis::cmd("HMGET")
                    .arg(&key)
                    .arg("credited")
                    .arg("settled")
                    .arg("reserved"),
            )
            .await?;
        let parts = items(&v).ok_or_else(|| corrupt(&key, "HMGET reply is not an array"))?;
        let field = |i: usize, name: &str| -> Result<Money, StoreError> {
            match parts.get(i) {
                None | Some(Value::Nil) => Ok(Money::ZERO),
                Some(v) => money(&key, name, Some(v)),
            }
        };
        Ok(WalletSnapshot {
            credited: field(0, "credited")?,
            settled: field(1, "settled")?,
            reserved: field(2, "reserved")?,
        })
    }

    async fn ledger(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let start = match cursor {
            None => "-".to_owned(),
            Some(c) => {
                let (ms, seq) = ledger_position(c)?;
                format!("({ms}-{seq}")
            }
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys().ledger(tenant);
        let v = self
            .query(
                ::redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        let entries = items(&v).ok_or_else(|| corrupt(&key, "XRANGE reply is not an array"))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some((id, fields)) = stream_entry(&key, e)? {
                out.push(ledger_entry(&key, id, fields)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TemplateStore for RedisStore {
    async fn put_template(
        &self,
        tenant: &TenantId,
        template: &TemplateRecord,
    ) -> Result<(), StoreError> {
        let body = encode("a template", template)?;
        self.query(
            ::redis::cmd("HSET")
                .arg(self.keys().templates(tenant))
                .arg(template_field(&template.name, &template.language))
                .arg(body),
        )
        .await
        .map(drop)
    }

    async fn template(
        &self,
        tenant: &TenantId,
        name: &str,
        language: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        let key = self.keys().templates(tenant);
        let field = template_field(name, language);
        match self.hget_text(&key, &field).await? {
            Some(raw) => template_from(&key, &field, &raw).map(Some),
            None => Ok(None),
        }
    }

    async fn templates(&self, tenant: &TenantId) -> Result<Vec<TemplateRecord>, StoreError> {
        let key = self.keys().templates(tenant);
        let v = self.query(::redis::cmd("HGETALL").arg(&key)).await?;
        let fields =
            pairs(&v).ok_or_else(|| corrupt(&key, "HGETALL reply is not field/value pairs"))?;
        let mut out = fields
            .iter()
            .map(|(f, raw)| template_from(&key, f, raw))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (&a.name, &a.language).cmp(&(&b.name, &b.language)));
        Ok(out)
    }
}

#[async_trait]
impl ConversationStore for RedisStore {
    async fn touch_window(
        &self,
        tenant: &TenantId,
        patient: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .inner
            .scripts
            .window
            .key(self.keys().window(tenant, patient))
            .arg(at_ms)
            .arg(at_ms.saturating_add(WINDOW_MS))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn window_until(
        &self,
        tenant: &TenantId,
        patient: &str,
    ) -> Result<Option<i64>, StoreError> {
        let key = self.keys().window(tenant, patient);
        match self.get_text(&key).await? {
            Some(raw) => window_from(&key, &raw, crate::clock::now_ms()),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl LimitStore for RedisStore {
    async fn reach_patient(
        &self,
        portfolio: &str,
        patient: &str,
        limit: u32,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError> {
        let key = self.keys().reached(portfolio);
        let mut c = self.conn().await?;
        let v: Value = self
            .inner
            .scripts
            .limit
            .key(&key)
            .arg(patient_part(patient))
            .arg(limit)
            .arg(now_ms)
            .arg(WINDOW_MS)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        limit_reply(&key, &v, limit)
    }

    async fn reach_patients(
        &self,
        portfolio: &str,
        patients: &[&str],
        limit: u32,
        now_ms: i64,
    ) -> Result<Vec<LimitDecision>, StoreError> {
        let key = self.keys().reached(portfolio);
        let script = &self.inner.scripts.limit;
        let calls: Vec<_> = patients
            .iter()
            .map(|p| {
                let mut inv = script.prepare_invoke();
                inv.key(&key)
                    .arg(patient_part(p))
                    .arg(limit)
                    .arg(now_ms)
                    .arg(WINDOW_MS);
                inv
            })
            .collect();
        // One {p:} slot, run in order: a later patient sees the earlier ones counted.
        let replies = self.run_scripts(script, &calls).await?;
        replies
            .iter()
            .map(|v| limit_reply(&key, v, limit))
            .collect()
    }
}
