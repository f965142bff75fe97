//! Key layout. Every key starts with the store's prefix; keys used together carry a Redis Cluster
//! hash tag:
//! `{n:<phone_number_id>}` for a business number's records and queues, `{t:<tenant>}` for a
//! tenant's pointers, idempotency keys, clinic record, API key records, wallet, ledger, templates
//! and windows, `{p:<portfolio>}` for a portfolio's messaging-limit count. A script only ever
//! touches keys of one tag. The directory's global keys (`clinics`, `number:<pnid>`,
//! `apikey:<hash>`, `directory:version`) are only used by single-key commands.

use sha2::{Digest, Sha256};

use crate::domain::{Lane, MessageId, PhoneNumberId, TenantId};
use crate::store::leases::Leased;
use crate::store::memory_tenancy::{key_part, patient_part};

/// The consumer group of every lane stream.
pub(super) const GROUP: &str = "dispatch";
/// The consumer group of the clinics' inbound queues.
pub(super) const INBOX_GROUP: &str = "inbox";

#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn number(&self, number: &PhoneNumberId) -> String {
        format!("{}{{n:{}}}", self.prefix, number.as_str())
    }

    fn tenant(&self, tenant: &TenantId) -> String {
        format!("{}{{t:{}}}", self.prefix, tenant.as_str())
    }

    /// Hash: the record's mutable fields and the immutable `NewMessage` as JSON.
    pub(super) fn record(&self, number: &PhoneNumberId, id: &MessageId) -> String {
        format!("{}:m:{}", self.number(number), id.as_str())
    }

    /// List: one `TimelineEvent` JSON per item.
    pub(super) fn timeline(&self, number: &PhoneNumberId, id: &MessageId) -> String {
        format!("{}:tl:{}", self.number(number), id.as_str())
    }

    /// String: Meta's message id → our message id.
    pub(super) fn wamid(&self, number: &PhoneNumberId, wamid: &str) -> String {
        format!("{}:w:{}", self.number(number), wamid)
    }

    /// Stream with consumer group [`GROUP`]: entries `{id: <message id>}`.
    pub(super) fn lane(&self, number: &PhoneNumberId, lane: Lane) -> String {
        format!("{}:q:{}", self.number(number), lane.as_str())
    }

    pub(super) fn lanes(&self, number: &PhoneNumberId) -> [String; 3] {
        Lane::ALL.map(|l| self.lane(number, l))
    }

    /// String with a TTL: the clinic's API rate limit state (GCRA arrival time, µs).
    pub(super) fn api_rate(&self, tenant: &TenantId) -> String {
        format!("{}:apirate", self.tenant(tenant))
    }

    /// The hash tag a leased thing's keys live under (its own slot).
    fn leased(&self, what: &Leased) -> String {
        match what {
            Leased::Number(n) => self.number(n),
            Leased::Tenant(t) => self.tenant(t),
        }
    }

    /// String with a TTL: `<node>|<fencing token>` of the node that owns a number or clinic.
    pub(super) fn lease(&self, what: &Leased) -> String {
        format!("{}:lease", self.leased(what))
    }

    /// String counter: the last fencing token granted (never reused, never expires).
    pub(super) fn fence(&self, what: &Leased) -> String {
        format!("{}:fence", self.leased(what))
    }

    /// Stream with consumer group [`INBOX_GROUP`]: a clinic's inbound webhook messages waiting
    /// for the clinic's owner (several nodes), field `m` = the message JSON.
    pub(super) fn inbox_queue(&self, tenant: &TenantId) -> String {
        format!("{}:inq", self.tenant(tenant))
    }

    /// Pub/sub channel: numbers that got work, for their owner to wake its dispatcher.
    pub(super) fn work_channel(&self) -> String {
        format!("{}work", self.prefix)
    }

    /// Sorted set (no hash tag: single-key commands only): node id, score = alive until ms.
    pub(super) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Sorted set: members `<lane>|<message id>|<uniquifier>`, score = due unix ms.
    pub(super) fn delayed(&self, number: &PhoneNumberId) -> String {
        format!("{}:delayed", self.number(number))
    }

    /// String: the number a tenant's message was accepted on.
    pub(super) fn tenant_message(&self, tenant: &TenantId, id: &MessageId) -> String {
        format!("{}:m:{}", self.tenant(tenant), id.as_str())
    }

    /// Sorted set: a tenant's message ids to one recipient (score = accepted unix ms), so a
    /// patient's erasure finds their outbox records.
    pub(super) fn messages_to(&self, tenant: &TenantId, digits: &str) -> String {
        format!("{}:mto:{}", self.tenant(tenant), digits)
    }

    /// String: `<fingerprint>|<message id>`; the client's key is hashed (any length, any bytes).
    pub(super) fn idempotency(&self, tenant: &TenantId, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        format!("{}:idem:{}", self.tenant(tenant), hex::encode(digest))
    }
}

// ---------------------------------------------------------------------------------------------
// Tenancy: clinics, API keys, wallets, templates, windows, messaging limits.

impl Keys {
    /// Set (no hash tag: single-key commands only): every clinic id.
    pub(super) fn clinic_set(&self) -> String {
        format!("{}clinics", self.prefix)
    }

    /// String: the clinic's `ClinicSettings` JSON, secrets included.
    pub(super) fn clinic(&self, tenant: &TenantId) -> String {
        format!("{}:clinic", self.tenant(tenant))
    }

    /// String: the tenant a business number belongs to (the uniqueness lock of a number).
    pub(super) fn number_owner(&self, number: &PhoneNumberId) -> String {
        format!("{}number:{}", self.prefix, number.as_str())
    }

    /// String counter: bumped on every clinic or API key change.
    pub(super) fn directory_version(&self) -> String {
        format!("{}directory:version", self.prefix)
    }

    /// Hash: key id → `ApiKeyRecord` JSON.
    pub(super) fn api_keys(&self, tenant: &TenantId) -> String {
        format!("{}:apikeys", self.tenant(tenant))
    }

    /// String: `<tenant>|<key id>` of an active key, by the key's SHA-256 hex.
    pub(super) fn api_key_lookup(&self, hash: &str) -> String {
        format!("{}apikey:{}", self.prefix, key_part(hash))
    }

    /// Hash: `credited`, `settled`, `reserved` in micro-units.
    pub(super) fn wallet(&self, tenant: &TenantId) -> String {
        format!("{}:wallet", self.tenant(tenant))
    }

    /// Hash: message id → reserved micro-units.
    pub(super) fn reservations(&self, tenant: &TenantId) -> String {
        format!("{}:res", self.tenant(tenant))
    }

    /// Stream: one entry per wallet movement.
    pub(super) fn ledger(&self, tenant: &TenantId) -> String {
        format!("{}:ledger", self.tenant(tenant))
    }

    /// Set: credit references already applied.
    pub(super) fn credits(&self, tenant: &TenantId) -> String {
        format!("{}:credits", self.tenant(tenant))
    }

    /// Hash: `<name>|<language>` → `TemplateRecord` JSON.
    pub(super) fn templates(&self, tenant: &TenantId) -> String {
        format!("{}:templates", self.tenant(tenant))
    }

    /// String: the patient's latest inbound unix ms; expires when the window closes.
    pub(super) fn window(&self, tenant: &TenantId, patient: &str) -> String {
        format!("{}:win:{}", self.tenant(tenant), patient_part(patient))
    }

    /// Sorted set: patients reached outside their window, score = last reached unix ms.
    pub(super) fn reached(&self, portfolio: &str) -> String {
        format!("{}{{p:{}}}:reached", self.prefix, key_part(portfolio))
    }

    /// String: an appointment as JSON.
    pub(super) fn appointment(&self, tenant: &TenantId, id: &str) -> String {
        format!("{}:apt:{id}", self.tenant(tenant))
    }

    /// Sorted set: appointment ids by start time.
    pub(super) fn appointments(&self, tenant: &TenantId) -> String {
        format!("{}:apts", self.tenant(tenant))
    }

    /// String: the EMR's id (hashed: any text) → our appointment id.
    pub(super) fn appointment_external(&self, tenant: &TenantId, external_id: &str) -> String {
        format!(
            "{}:aptx:{}",
            self.tenant(tenant),
            hex::encode(Sha256::digest(external_id.as_bytes()))
        )
    }

    /// String with a TTL: the appointment a patient's next reply refers to.
    pub(super) fn pending(&self, tenant: &TenantId, patient: &str) -> String {
        format!("{}:pending:{}", self.tenant(tenant), patient_part(patient))
    }

    /// String: a clinical record as JSON.
    pub(super) fn record_of(&self, tenant: &TenantId, kind: &str, id: &str) -> String {
        format!("{}:r:{kind}:{id}", self.tenant(tenant))
    }

    /// Sorted set: record ids of one kind by time.
    pub(super) fn records_of(&self, tenant: &TenantId, kind: &str) -> String {
        format!("{}:rs:{kind}", self.tenant(tenant))
    }

    /// String: the EMR's id (hashed) → our record id.
    pub(super) fn record_external(&self, tenant: &TenantId, kind: &str, external: &str) -> String {
        format!(
            "{}:rx:{kind}:{}",
            self.tenant(tenant),
            hex::encode(Sha256::digest(external.as_bytes()))
        )
    }

    /// Set: patients (digits) who sent STOP.
    pub(super) fn opted_out(&self, tenant: &TenantId) -> String {
        format!("{}:optout", self.tenant(tenant))
    }

    /// Hash: the patient directory, external id → `PatientRecord` JSON.
    pub(super) fn patients(&self, tenant: &TenantId) -> String {
        format!("{}:pat", self.tenant(tenant))
    }

    /// Hash: external id → the patient's index entry (the fields filters read, compact JSON).
    pub(super) fn patient_index(&self, tenant: &TenantId) -> String {
        format!("{}:patx", self.tenant(tenant))
    }

    /// Sorted set (all scores 0, read by lex range): `<phone digits>|<external id>`.
    pub(super) fn patient_phones(&self, tenant: &TenantId) -> String {
        format!("{}:patph", self.tenant(tenant))
    }

    /// String counter: the patient directory's version, bumped by every write or erasure.
    pub(super) fn patient_version(&self, tenant: &TenantId) -> String {
        format!("{}:patv", self.tenant(tenant))
    }

    /// Stream: the directory's change feed, entry id `<version>-0`, field `id` = external id.
    pub(super) fn patient_feed(&self, tenant: &TenantId) -> String {
        format!("{}:patlog", self.tenant(tenant))
    }

    /// String with a TTL: a patient's marker in `slot`.
    pub(super) fn marker(&self, tenant: &TenantId, patient: &str, slot: &str) -> String {
        format!(
            "{}:mk:{slot}:{}",
            self.tenant(tenant),
            patient_part(patient)
        )
    }

    /// Sorted set: scheduled jobs, score = due ms (claimed jobs are re-scored to their lease end).
    pub(super) fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }
}

/// The field of a template in [`Keys::templates`].
pub(super) fn template_field(name: &str, language: &str) -> String {
    format!("{name}|{language}")
}

/// A delayed-set member: the lane and message to re-enqueue, made unique by the entry id it
/// replaced (so one message can be scheduled more than once).
pub(super) fn delayed_member(lane: Lane, id: &MessageId, uniquifier: &str) -> String {
    format!("{}|{}|{}", lane.as_str(), id.as_str(), uniquifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (PhoneNumberId, TenantId, MessageId) {
        (
            PhoneNumberId::parse("1055").unwrap_or_else(|e| panic!("{e}")),
            TenantId::parse("clinic_1").unwrap_or_else(|e| panic!("{e}")),
            MessageId::parse("msg_1").unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[test]
    fn keys_carry_prefix_and_hash_tag() {
        let (n, t, m) = ids();
        let k = Keys::new("cg:");
        assert_eq!(k.record(&n, &m), "cg:{n:1055}:m:msg_1");
        assert_eq!(k.timeline(&n, &m), "cg:{n:1055}:tl:msg_1");
        assert_eq!(k.wamid(&n, "wamid.X"), "cg:{n:1055}:w:wamid.X");
        assert_eq!(k.lane(&n, Lane::Reminders), "cg:{n:1055}:q:reminders");
        assert_eq!(k.delayed(&n), "cg:{n:1055}:delayed");
        assert_eq!(k.tenant_message(&t, &m), "cg:{t:clinic_1}:m:msg_1");
        let idem = k.idempotency(&t, "abc");
        assert!(idem.starts_with("cg:{t:clinic_1}:idem:"));
        assert_eq!(idem.len(), "cg:{t:clinic_1}:idem:".len() + 64);
        assert_eq!(Keys::new("").delayed(&n), "{n:1055}:delayed");
        assert_eq!(delayed_member(Lane::Bulk, &m, "5-0"), "bulk|msg_1|5-0");
    }
}
