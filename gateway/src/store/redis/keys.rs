//! Key layout. Every key starts with the store's prefix and carries a Redis Cluster hash tag:
//! `{n:<phone_number_id>}` for a business number's records and queues, `{t:<tenant>}` for a
//! tenant's pointers and idempotency keys. A script only ever touches keys of one tag.

use sha2::{Digest, Sha256};

use crate::domain::{Lane, MessageId, PhoneNumberId, TenantId};

/// The consumer group of every lane stream.
pub(super) const GROUP: &str = "dispatch";

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

    /// Sorted set: members `<lane>|<message id>|<uniquifier>`, score = due unix ms.
    pub(super) fn delayed(&self, number: &PhoneNumberId) -> String {
        format!("{}:delayed", self.number(number))
    }

    /// String: the number a tenant's message was accepted on.
    pub(super) fn tenant_message(&self, tenant: &TenantId, id: &MessageId) -> String {
        format!("{}:m:{}", self.tenant(tenant), id.as_str())
    }

    /// String: `<fingerprint>|<message id>`; the client's key is hashed (any length, any bytes).
    pub(super) fn idempotency(&self, tenant: &TenantId, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        format!("{}:idem:{}", self.tenant(tenant), hex::encode(digest))
    }
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
