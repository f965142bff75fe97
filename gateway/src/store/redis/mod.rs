//! Redis store: the system of record.
//!
//! Layout (see [`keys`]): per business number, under the hash tag `{n:<pnid>}`, a record hash, a
//! timeline list, a wamid index, three lane streams with the consumer group `dispatch` and a
//! delayed sorted set; per tenant, under `{t:<tenant>}`, a pointer to the number of each message
//! and the idempotency keys. Every script touches the keys of one hash tag only.
//!
//! Record transitions (`begin_attempt`, `finish_attempt`, `apply_status`) run the very functions of
//! [`transitions`] in Rust on the record as read, then commit the result with a compare-and-set
//! script on the record's version (`ver`), retrying on a concurrent change. So both stores share
//! one implementation of the rules and Lua holds no state-machine logic; the write itself is one
//! atomic script (fields, timeline lines, wamid index, TTL).

mod clinical;
mod connection;
mod inbox;
mod keys;
mod leases;
mod patients;
mod rate;
mod records;
mod reply;
mod scripts;
mod tenancy;

use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

pub use self::connection::{raw as raw_connection, Conn as RedisConnection, CLUSTER_SCHEME};
use self::connection::{Conn, Connections};
use self::keys::{delayed_member, Keys, GROUP};
use self::reply::{corrupt, int, items, pairs, stream_entry, text, xread_entries};
use self::scripts::Scripts;
use super::{
    transitions, Accepted, AttemptOutcome, IdempotencyClaim, MessageErasure, Promoted, QueueDepth,
    QueueEntry, StatusOutcome, Store, StoreError,
};
use crate::domain::message::{MessageRecord, StatusDecision};
use crate::domain::{
    Lane, MessageError, MessageId, MessageState, NewMessage, PhoneNumberId, StatusUpdate, TenantId,
    TimelineEvent, E164,
};

/// How long terminal records, their timelines and the wamid index are kept (30 days).
pub const TERMINAL_TTL_SECS: u64 = 30 * 24 * 3600;
/// The recipient index lives this much longer than the records it lists (a record's TTL starts
/// when it ends, after its last accept refreshed the index's).
const RECIPIENT_INDEX_SLACK_SECS: u64 = 7 * 24 * 3600;

/// Response and connect timeout of every pooled connection. None of the store's commands block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Multiplexed connections per store (each pipelines any number of concurrent commands).
const MAX_CONNECTIONS: usize = 4;

/// Compare-and-set attempts before a transition gives up as unavailable.
const CAS_RETRIES: usize = 32;

/// XAUTOCLAIM round trips per `reclaim` call (each scans a bounded part of the pending list).
const RECLAIM_ROUNDS: usize = 64;

/// Upper bound of XAUTOCLAIM's COUNT per round trip.
const RECLAIM_COUNT: usize = 1000;

/// Redis implementation of [`Store`]. Cheap to clone; all clones share one connection pool.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conns: Arc<Connections>,
    /// A single node to subscribe to announcements on (on a cluster, any node sees every
    /// `PUBLISH`).
    pubsub_url: String,
    keys: Keys,
    scripts: Scripts,
    terminal_ttl_secs: u64,
    /// Seals clinics' secrets before they are stored (see `crate::secrets`); set once at start.
    secrets: std::sync::OnceLock<Arc<crate::secrets::SecretKeys>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn json_err(key: &str, what: &str, e: serde_json::Error) -> StoreError {
    corrupt(key, format!("{what}: {e}"))
}

/// Hash fields to set (name, value) and to delete (name).
type FieldChanges = (Vec<(&'static str, String)>, Vec<&'static str>);

/// The record's mutable fields as written to its hash. `None` fields are deleted.
fn mutable_fields(rec: &MessageRecord) -> Result<FieldChanges, StoreError> {
    let mut set = vec![
        ("state", rec.state.as_str().to_owned()),
        ("attempts", rec.attempts.to_string()),
    ];
    let mut del = Vec::new();
    let mut opt = |name: &'static str, v: Option<String>| match v {
        Some(v) => set.push((name, v)),
        None => del.push(name),
    };
    opt("wamid", rec.wamid.clone());
    opt("early", rec.early.map(|s| s.as_str().to_owned()));
    opt("started", rec.send_started_ms.map(|v| v.to_string()));
    let error = match &rec.error {
        Some(e) => Some(
            serde_json::to_string(e)
                .map_err(|e| StoreError::Unavailable(format!("encoding an error: {e}")))?,
        ),
        None => None,
    };
    opt("error", error);
    Ok((set, del))
}

/// Rebuilds a record from its hash fields and timeline lines. `Ok(None)` if the hash is empty.
fn record_from(
    key: &str,
    fields: Vec<(String, String)>,
    timeline: &[String],
) -> Result<Option<(MessageRecord, String)>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut msg = None;
    let mut state = None;
    let mut attempts = None;
    let mut ver = None;
    let mut wamid = None;
    let mut early = None;
    let mut error = None;
    let mut started = None;
    for (k, v) in fields {
        match k.as_str() {
            "msg" => {
                msg = Some(
                    serde_json::from_str::<NewMessage>(&v)
                        .map_err(|e| json_err(key, "field msg", e))?,
                )
            }
            "state" => {
                state = Some(
                    MessageState::parse(&v)
                        .ok_or_else(|| corrupt(key, format!("unknown state {v:?}")))?,
                )
            }
            "attempts" => {
                attempts = Some(
                    v.parse::<u32>()
                        .map_err(|_| corrupt(key, format!("attempts {v:?}")))?,
                )
            }
            "ver" => ver = Some(v),
            "wamid" => wamid = Some(v),
            "early" => {
                early = Some(
                    MessageState::parse(&v)
                        .ok_or_else(|| corrupt(key, format!("unknown early state {v:?}")))?,
                )
            }
            "error" => {
                error = Some(
                    serde_json::from_str::<MessageError>(&v)
                        .map_err(|e| json_err(key, "field error", e))?,
                )
            }
            "started" => {
                started = Some(
                    v.parse::<i64>()
                        .map_err(|_| corrupt(key, format!("started {v:?}")))?,
                )
            }
            _ => {}
        }
    }
    let (Some(message), Some(state), Some(ver)) = (msg, state, ver) else {
        return Err(corrupt(key, "missing msg, state or ver"));
    };
    let timeline = timeline
        .iter()
        .map(|line| {
            serde_json::from_str::<TimelineEvent>(line)
                .map_err(|e| json_err(key, "timeline line", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rec = MessageRecord {
        message,
        state,
        attempts: attempts.unwrap_or(0),
        wamid,
        error,
        send_started_ms: started,
        early,
        timeline,
    };
    Ok(Some((rec, ver)))
}

/// The outcome of one compare-and-set.
enum Cas {
    Written,
    Conflict,
    Gone,
    /// The fence given is no longer the number's lease.
    Fenced,
}

impl RedisStore {
    /// A store on `url` (`redis://…`, `rediss://…`, `unix://…`, or `redis+cluster://h1:p1,h2:p2/`
    /// for a Redis Cluster) whose keys all start with
    /// `key_prefix` (may be empty; must not contain `{` or `}`, which would break the hash tags).
    /// Connections are opened lazily; call [`Store::ping`] to check the server answers.
    pub fn connect(
        url: &str,
        key_prefix: &str,
        pool_size: usize,
    ) -> Result<RedisStore, StoreError> {
        if key_prefix.contains(['{', '}']) {
            return Err(StoreError::Unavailable(format!(
                "key prefix {key_prefix:?} must not contain braces"
            )));
        }
        let conns =
            Connections::open(url, pool_size, MAX_CONNECTIONS, IO_TIMEOUT).map_err(unavailable)?;
        let pubsub_url = match connection::cluster_nodes(url) {
            Some(Ok(nodes)) => nodes.into_iter().next().unwrap_or_default(),
            _ => url.to_owned(),
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conns: Arc::new(conns),
                pubsub_url,
                keys: Keys::new(key_prefix),
                scripts: Scripts::new(),
                terminal_ttl_secs: TERMINAL_TTL_SECS,
                secrets: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Overrides how long terminal records and index keys live (default [`TERMINAL_TTL_SECS`]).
    pub fn with_terminal_ttl(self, secs: u64) -> RedisStore {
        let inner = Inner {
            conns: self.inner.conns.clone(),
            pubsub_url: self.inner.pubsub_url.clone(),
            keys: self.inner.keys.clone(),
            scripts: Scripts::new(),
            terminal_ttl_secs: secs.max(1),
            secrets: self.inner.secrets.clone(),
        };
        RedisStore {
            inner: Arc::new(inner),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.inner.conns.get().await.map_err(unavailable)
    }

    /// `XREADGROUP` of one stream from `from` (`>`: new entries; `0`: the consumer's pending
    /// ones). `None` when the stream or its group does not exist yet.
    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        from: &str,
        max: usize,
    ) -> Result<Option<Value>, StoreError> {
        let mut c = self.conn().await?;
        let res: Result<Value, _> = ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("STREAMS")
            .arg(stream)
            .arg(from)
            .query_async(&mut c)
            .await;
        match res {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some("NOGROUP") => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Seals clinics' secrets with `keys` from now on (and opens what they sealed). Once only.
    pub fn set_secret_keys(&self, keys: Arc<crate::secrets::SecretKeys>) -> bool {
        self.inner.secrets.set(keys).is_ok()
    }

    fn secret_keys(&self) -> Option<&crate::secrets::SecretKeys> {
        self.inner.secrets.get().map(|k| &**k)
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The record's hash fields only (no timeline), with its version, for a transition.
    async fn load_fields(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
    ) -> Result<Option<(MessageRecord, String)>, StoreError> {
        let key = self.keys().record(number, id);
        let mut c = self.conn().await?;
        let v: Value = ::redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let fields =
            pairs(&v).ok_or_else(|| corrupt(&key, "HGETALL reply is not field/value pairs"))?;
        record_from(&key, fields, &[])
    }

    /// How long an ended message's record lives: its clinic's retention, else the default.
    fn terminal_ttl(&self, retain_days: &Option<u32>) -> u64 {
        retain_days.map_or(self.inner.terminal_ttl_secs, |d| {
            u64::from(d.max(1)) * 86_400
        })
    }

    /// Writes `rec` (read at version `ver`, timeline empty then) back: its mutable fields, the
    /// timeline lines the transition pushed, the wamid index (`index`), and a TTL when terminal.
    async fn commit(
        &self,
        rec: &MessageRecord,
        ver: &str,
        index: Option<&str>,
    ) -> Result<Cas, StoreError> {
        self.commit_fenced(rec, ver, index, None).await
    }

    /// As [`Self::commit`], and only while `fence` holds the number's lease.
    async fn commit_fenced(
        &self,
        rec: &MessageRecord,
        ver: &str,
        index: Option<&str>,
        fence: Option<&super::leases::Fence>,
    ) -> Result<Cas, StoreError> {
        let number = &rec.message.number;
        let id = &rec.message.id;
        let key = self.keys().record(number, id);
        let (set, del) = mutable_fields(rec)?;
        let ttl = self.terminal_ttl(&rec.message.retain_days);
        let mut inv = self.inner.scripts.commit.prepare_invoke();
        inv.key(&key).key(self.keys().timeline(number, id));
        match index {
            Some(wamid) => inv.key(self.keys().wamid(number, wamid)),
            None => inv.key(&key),
        };
        inv.key(
            self.keys()
                .lease(&super::leases::Leased::Number(number.clone())),
        );
        // Once Meta has it the record only waits for statuses: it expires on the retention
        // from the last one (a delivered message that is never read expires too).
        let expires = rec.state.is_terminal() || rec.state.left_gateway();
        inv.arg(ver)
            .arg(if expires { ttl } else { 0 })
            .arg(if index.is_some() { id.as_str() } else { "" })
            .arg(ttl)
            .arg(fence.map(|f| f.value()).unwrap_or_default())
            .arg(set.len());
        for (f, v) in &set {
            inv.arg(*f).arg(v);
        }
        inv.arg(del.len());
        for f in &del {
            inv.arg(*f);
        }
        for ev in &rec.timeline {
            inv.arg(
                serde_json::to_string(ev).map_err(|e| {
                    StoreError::Unavailable(format!("encoding a timeline line: {e}"))
                })?,
            );
        }
        let mut c = self.conn().await?;
        let r: i64 = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        drop(c);
        Ok(match r {
            1 => {
                if expires {
                    self.expire_tenant_pointer(rec).await;
                }
                Cas::Written
            }
            0 => Cas::Conflict,
            -2 => Cas::Fenced,
            _ => Cas::Gone,
        })
    }

    /// Best effort: the tenant pointer lives as long as the terminal record (another slot, so not
    /// in the commit script; a pointer outliving its record only reads as "not found").
    async fn expire_tenant_pointer(&self, rec: &MessageRecord) {
        let key = self
            .keys()
            .tenant_message(&rec.message.tenant, &rec.message.id);
        let res: Result<(), StoreError> = async {
            let mut c = self.conn().await?;
            let _: Value = ::redis::cmd("EXPIRE")
                .arg(&key)
                .arg(self.terminal_ttl(&rec.message.retain_days))
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            Ok(())
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not set the TTL of a tenant pointer");
        }
    }

    fn contention(what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "{what}: the record kept changing ({CAS_RETRIES} attempts)"
        ))
    }

    fn entry_from(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        stream: &str,
        v: &Value,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let Some((entry_id, fields)) = stream_entry(stream, v)? else {
            return Ok(None);
        };
        let raw = fields
            .into_iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v)
            .ok_or_else(|| corrupt(stream, format!("entry {entry_id} has no id field")))?;
        let message = MessageId::parse(&raw)
            .map_err(|e| corrupt(stream, format!("entry {entry_id}: {e}")))?;
        Ok(Some(QueueEntry {
            number: number.clone(),
            lane,
            entry_id,
            message,
        }))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn accept(&self, msg: &NewMessage, max_queue: u64) -> Result<Accepted, StoreError> {
        // One way to accept: a batch of one (`BatchStore::accept_many`, in `clinical.rs`).
        use crate::store::clinical::BatchStore;
        self.accept_many(&[msg], max_queue)
            .await
            .pop()
            .unwrap_or_else(|| Err(StoreError::Unavailable("accept: no reply".into())))
    }

    async fn message(
        &self,
        tenant: &TenantId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let key = self.keys().tenant_message(tenant, id);
        let v: Value = {
            let mut c = self.conn().await?;
            ::redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        if matches!(v, Value::Nil) {
            return Ok(None);
        }
        let raw = text(&v).ok_or_else(|| corrupt(&key, "not a string"))?;
        let number = PhoneNumberId::parse(&raw).map_err(|e| corrupt(&key, e.to_string()))?;
        Ok(self
            .load(&number, id)
            .await?
            .filter(|r| &r.message.tenant == tenant && &r.message.id == id))
    }

    async fn load(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let key = self.keys().record(number, id);
        let (fields, lines): (Value, Value) = {
            let mut c = self.conn().await?;
            ::redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(&key)
                .cmd("LRANGE")
                .arg(self.keys().timeline(number, id))
                .arg(0)
                .arg(-1)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        let fields = pairs(&fields)
            .ok_or_else(|| corrupt(&key, "HGETALL reply is not field/value pairs"))?;
        let lines = items(&lines)
            .ok_or_else(|| corrupt(&key, "timeline is not a list"))?
            .iter()
            .map(|l| text(l).ok_or_else(|| corrupt(&key, "timeline line is not text")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(record_from(&key, fields, &lines)?.map(|(rec, _)| rec))
    }

    async fn begin_fenced_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        now_ms: i64,
        fence: Option<&super::leases::Fence>,
    ) -> Result<Option<u32>, StoreError> {
        for _ in 0..CAS_RETRIES {
            let Some((mut rec, ver)) = self.load_fields(number, id).await? else {
                return Ok(None);
            };
            let Some(n) = transitions::begin_attempt(&mut rec, now_ms) else {
                return Ok(None);
            };
            match self.commit_fenced(&rec, &ver, None, fence).await? {
                Cas::Written => return Ok(Some(n)),
                Cas::Gone => return Ok(None),
                Cas::Conflict => continue,
                Cas::Fenced => return Err(StoreError::Fenced(number.clone())),
            }
        }
        Err(Self::contention("begin_attempt"))
    }

    async fn finish_attempt(
        &self,
        number: &PhoneNumberId,
        id: &MessageId,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> Result<Option<MessageState>, StoreError> {
        for _ in 0..CAS_RETRIES {
            let Some((mut rec, ver)) = self.load_fields(number, id).await? else {
                return Ok(None);
            };
            let Some(state) = transitions::finish_attempt(&mut rec, outcome, now_ms) else {
                return Ok(None);
            };
            let index = rec.wamid.clone();
            match self.commit(&rec, &ver, index.as_deref()).await? {
                Cas::Written => return Ok(Some(state)),
                Cas::Gone => return Ok(None),
                Cas::Conflict => continue,
                Cas::Fenced => return Err(StoreError::Fenced(number.clone())),
            }
        }
        Err(Self::contention("finish_attempt"))
    }

    async fn apply_status(
        &self,
        number: &PhoneNumberId,
        update: &StatusUpdate,
    ) -> Result<StatusOutcome, StoreError> {
        for _ in 0..CAS_RETRIES {
            // Our id from biz_opaque_callback_data if that record is on this number, else the index.
            let mut found = match &update.message {
                Some(id) => self.load_fields(number, id).await?,
                None => None,
            };
            if found.is_none() {
                let key = self.keys().wamid(number, &update.wamid);
                let v: Value = {
                    let mut c = self.conn().await?;
                    ::redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?
                };
                if !matches!(v, Value::Nil) {
                    let raw = text(&v).ok_or_else(|| corrupt(&key, "not a string"))?;
                    let id = MessageId::parse(&raw).map_err(|e| corrupt(&key, e.to_string()))?;
                    found = self.load_fields(number, &id).await?;
                }
            }
            let Some((mut rec, ver)) = found else {
                return Ok(StatusOutcome::UnknownMessage);
            };
            let id = rec.message.id.clone();
            let tenant = rec.message.tenant.clone();
            let outcome = match transitions::apply_status(&mut rec, update) {
                StatusDecision::Advance(state) => StatusOutcome::Applied {
                    tenant,
                    id,
                    state,
                    touchpoint: rec.message.touchpoint.clone(),
                },
                StatusDecision::KeepEarly(_) => StatusOutcome::KeptEarly { id },
                StatusDecision::Ignore => return Ok(StatusOutcome::Duplicate),
            };
            match self.commit(&rec, &ver, Some(&update.wamid)).await? {
                Cas::Written => return Ok(outcome),
                Cas::Gone => return Ok(StatusOutcome::UnknownMessage),
                Cas::Conflict => continue,
                Cas::Fenced => return Err(StoreError::Fenced(number.clone())),
            }
        }
        Err(Self::contention("apply_status"))
    }

    async fn claim(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let stream = self.keys().lane(number, lane);
        // No stream or group yet: nothing was ever queued on this lane.
        let Some(v) = self.read_group(&stream, GROUP, consumer, ">", max).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in xread_entries(&stream, &v)? {
            if let Some(entry) = self.entry_from(number, lane, &stream, &e)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    async fn reclaim(
        &self,
        number: &PhoneNumberId,
        lane: Lane,
        consumer: &str,
        min_idle_ms: u64,
        max: usize,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let stream = self.keys().lane(number, lane);
        let mut out = Vec::new();
        let mut cursor = "0-0".to_owned();
        let mut c = self.conn().await?;
        for _ in 0..RECLAIM_ROUNDS {
            if out.len() >= max {
                break;
            }
            let res: Result<Value, _> = ::redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg((max - out.len()).min(RECLAIM_COUNT))
                .query_async(&mut c)
                .await;
            let v = match res {
                Ok(v) => v,
                Err(e) if e.code() == Some("NOGROUP") => return Ok(out),
                Err(e) => return Err(unavailable(e)),
            };
            let parts =
                items(&v).ok_or_else(|| corrupt(&stream, "XAUTOCLAIM reply is not an array"))?;
            let (Some(next), Some(claimed)) =
                (parts.first().and_then(text), parts.get(1).and_then(items))
            else {
                return Err(corrupt(
                    &stream,
                    "XAUTOCLAIM reply is not [cursor, entries, ...]",
                ));
            };
            for e in claimed {
                // Entries deleted while pending come back as nil (Redis 6.2) and are skipped.
                if let Some(entry) = self.entry_from(number, lane, &stream, e)? {
                    out.push(entry);
                }
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    async fn ack(&self, entry: &QueueEntry) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .inner
            .scripts
            .ack
            .key(self.keys().lane(&entry.number, entry.lane))
            .arg(&entry.entry_id)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn defer(&self, entry: &QueueEntry, due_ms: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .inner
            .scripts
            .defer
            .key(self.keys().lane(&entry.number, entry.lane))
            .key(self.keys().delayed(&entry.number))
            .arg(&entry.entry_id)
            .arg(due_ms)
            .arg(delayed_member(entry.lane, &entry.message, &entry.entry_id))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn promote_due(
        &self,
        number: &PhoneNumberId,
        now_ms: i64,
        max: usize,
    ) -> Result<Promoted, StoreError> {
        let k = self.keys();
        let delayed = k.delayed(number);
        let [care, reminders, bulk] = k.lanes(number);
        let mut c = self.conn().await?;
        let v: Value = self
            .inner
            .scripts
            .promote
            .key(&delayed)
            .key(care)
            .key(reminders)
            .key(bulk)
            .arg(now_ms)
            .arg(max)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let parts = items(&v).ok_or_else(|| corrupt(&delayed, "promote reply is not an array"))?;
        let (Some(moved), Some(bad), Some(next)) = (
            parts.first().and_then(int),
            parts.get(1).and_then(text),
            parts.get(2).and_then(text),
        ) else {
            return Err(corrupt(
                &delayed,
                "promote reply is not [moved, member, next]",
            ));
        };
        if !bad.is_empty() {
            return Err(corrupt(
                &delayed,
                format!("unreadable member {bad:?} ({moved} moved before it)"),
            ));
        }
        let next_due = match next.as_str() {
            "" => None,
            score => Some(
                score
                    .parse::<f64>()
                    .ok()
                    .filter(|due| due.is_finite())
                    .ok_or_else(|| corrupt(&delayed, format!("score {score:?}")))?
                    as i64,
            ),
        };
        Ok(Promoted {
            moved: usize::try_from(moved).map_err(|_| corrupt(&delayed, "negative count"))?,
            next_due,
        })
    }

    async fn depth(&self, number: &PhoneNumberId) -> Result<QueueDepth, StoreError> {
        let k = self.keys();
        let delayed = k.delayed(number);
        let [care, reminders, bulk] = k.lanes(number);
        let mut c = self.conn().await?;
        let v: Value = self
            .inner
            .scripts
            .depth
            .key(care)
            .key(reminders)
            .key(bulk)
            .key(&delayed)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let n = items(&v)
            .ok_or_else(|| corrupt(&delayed, "depth reply is not an array"))?
            .iter()
            .map(|x| int(x).and_then(|i| u64::try_from(i).ok()))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| corrupt(&delayed, "depth reply has a non-count"))?;
        let [r0, r1, r2, in_flight, delayed_n] = n[..] else {
            return Err(corrupt(&delayed, "depth reply has the wrong length"));
        };
        Ok(QueueDepth {
            ready: [r0, r1, r2],
            in_flight,
            delayed: delayed_n,
        })
    }

    async fn claim_idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        message: &MessageId,
        ttl_secs: u64,
    ) -> Result<IdempotencyClaim, StoreError> {
        let k = self.keys().idempotency(tenant, key);
        let value = format!("{fingerprint}|{}", message.as_str());
        let ttl_ms = ttl_secs.saturating_mul(1000).max(1);
        let mut c = self.conn().await?;
        // A key can expire between a failed SET NX and the GET: then try again.
        for _ in 0..3 {
            let set: Value = ::redis::cmd("SET")
                .arg(&k)
                .arg(&value)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            if !matches!(set, Value::Nil) {
                return Ok(IdempotencyClaim::Fresh);
            }
            let got: Value = ::redis::cmd("GET")
                .arg(&k)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            if matches!(got, Value::Nil) {
                continue;
            }
            let raw = text(&got).ok_or_else(|| corrupt(&k, "not a string"))?;
            let (fp, id) = raw
                .rsplit_once('|')
                .ok_or_else(|| corrupt(&k, "no separator"))?;
            let message = MessageId::parse(id).map_err(|e| corrupt(&k, e.to_string()))?;
            return Ok(IdempotencyClaim::Seen {
                fingerprint: fp.to_owned(),
                message,
            });
        }
        Err(StoreError::Unavailable(
            "idempotency key kept expiring".into(),
        ))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: Value = ::redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn erase_messages_to(
        &self,
        tenant: &TenantId,
        to: &E164,
    ) -> Result<MessageErasure, StoreError> {
        let k = self.keys();
        let index = k.messages_to(tenant, to.digits());
        let ids: Vec<String> = {
            let mut c = self.conn().await?;
            ::redis::cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(MAX_ERASED_MESSAGES - 1)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        // The tenant pointers name each message's number: one MGET (they share the tenant's slot).
        let pointers: Vec<Option<String>> = ids
            .iter()
            .map(|raw| {
                MessageId::parse(raw)
                    .ok()
                    .map(|id| k.tenant_message(tenant, &id))
            })
            .collect();
        let wanted: Vec<&String> = pointers.iter().flatten().collect();
        let numbers: Vec<Option<String>> = if wanted.is_empty() {
            Vec::new()
        } else {
            let mut c = self.conn().await?;
            ::redis::cmd("MGET")
                .arg(&wanted)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        let mut numbers = numbers.into_iter();
        let mut report = MessageErasure::default();
        // One command per key, pipelined on one server; the keys lie in the numbers' and the
        // tenant's slots, so a cluster gets each command on its own node.
        let mut doomed: Vec<::redis::Cmd> = Vec::new();
        for (raw, pointer) in ids.iter().zip(&pointers) {
            let number = match pointer {
                Some(_) => numbers.next().flatten(),
                None => None,
            };
            let number = number.and_then(|n| PhoneNumberId::parse(&n).ok());
            let id = MessageId::parse(raw).ok();
            let found = match (&number, &id) {
                (Some(n), Some(id)) => self.load_fields(n, id).await?,
                _ => None,
            };
            if let (Some((rec, _)), Some(n), Some(id)) = (&found, &number, &id) {
                if &rec.message.tenant == tenant {
                    if !rec.state.settled() {
                        report.live += 1;
                        continue;
                    }
                    doomed.push(::redis::cmd("DEL").arg(k.record(n, id)).to_owned());
                    doomed.push(::redis::cmd("DEL").arg(k.timeline(n, id)).to_owned());
                    if let Some(w) = &rec.wamid {
                        doomed.push(::redis::cmd("DEL").arg(k.wamid(n, w)).to_owned());
                    }
                    report.erased += 1;
                }
            }
            if let Some(p) = pointer {
                doomed.push(::redis::cmd("DEL").arg(p).to_owned());
            }
            doomed.push(::redis::cmd("ZREM").arg(&index).arg(raw).to_owned());
        }
        if !doomed.is_empty() {
            self.inner
                .conns
                .cross_slot(&doomed, 1_000)
                .await
                .map_err(unavailable)?;
        }
        Ok(report)
    }
}

/// Message records one erasure looks at, at most (a patient with more keeps the rest until
/// they expire; the next erasure continues).
const MAX_ERASED_MESSAGES: i64 = 100_000;
