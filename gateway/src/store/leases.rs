//! Ownership leases: which node owns a business number or a clinic right now, with a fencing
//! token, and which nodes are alive. Redis is the only coordinator: a lease is a key with a TTL that its
//! holder renews; the token grows with every new holder, and writes made on behalf of an owner
//! (starting a send) are refused once the token they carry is no longer the lease's.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{PhoneNumberId, TenantId};

/// What a node can own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Leased {
    /// A business number: its owner runs its Dispatcher.
    Number(PhoneNumberId),
    /// A clinic: its owner handles its patients' inbound messages, in order.
    Tenant(TenantId),
}

impl Leased {
    /// A name unique across kinds (`n:<id>`, `t:<id>`): what ownership is hashed by.
    pub fn name(&self) -> String {
        match self {
            Leased::Number(n) => format!("n:{}", n.as_str()),
            Leased::Tenant(t) => format!("t:{}", t.as_str()),
        }
    }
}

/// A node's hold on a number: the node and the token its lease was granted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub token: u64,
}

impl Fence {
    /// The lease's stored value for this holder (`<node>|<token>`; node ids have no `|`).
    pub fn value(&self) -> String {
        format!("{}|{}", self.node, self.token)
    }
}

#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease on `what` for `node` if nobody holds it, or renews it if `node` does, for
    /// `ttl_ms`. Returns the fence `node` holds it with, or `None` while another node holds it.
    async fn take_lease(
        &self,
        what: &Leased,
        node: &str,
        ttl_ms: u64,
    ) -> Result<Option<Fence>, StoreError>;

    /// Gives the lease on `what` up if `node` holds it. True if it did.
    async fn release_lease(&self, what: &Leased, node: &str) -> Result<bool, StoreError>;

    /// The current holder of `what`, if any.
    async fn lease_holder(&self, what: &Leased) -> Result<Option<Fence>, StoreError>;

    /// Says `node` is alive until `now_ms + ttl_ms`.
    async fn heartbeat(&self, node: &str, now_ms: i64, ttl_ms: u64) -> Result<(), StoreError>;

    /// The nodes whose last heartbeat has not run out at `now_ms`, sorted.
    async fn live_nodes(&self, now_ms: i64) -> Result<Vec<String>, StoreError>;

    /// Tells every node that work for `what` was queued (its owner wakes the dispatcher or the
    /// inbox consumer).
    async fn announce_work(&self, what: &Leased) -> Result<(), StoreError>;

    /// What [`LeaseStore::announce_work`] announces from now on, on any node. Ends when the
    /// subscription breaks; subscribe again.
    async fn work_announcements(&self) -> Result<Announcements, StoreError>;
}

/// A stream of announced numbers and clinics.
pub type Announcements = futures::stream::BoxStream<'static, Leased>;

/// Parses [`Leased::name`].
pub fn parse_leased(name: &str) -> Option<Leased> {
    match name.split_once(':')? {
        ("n", id) => PhoneNumberId::parse(id).ok().map(Leased::Number),
        ("t", id) => TenantId::parse(id).ok().map(Leased::Tenant),
        _ => None,
    }
}

/// Parses a lease value written by [`Fence::value`].
pub fn parse_fence(value: &str) -> Option<Fence> {
    let (node, token) = value.rsplit_once('|')?;
    Some(Fence {
        node: node.to_owned(),
        token: token.parse().ok()?,
    })
}
