//! `RedisStore`'s records, consent and markers, all under the tenant's hash tag.

use ::redis::Value;
use async_trait::async_trait;

use super::reply::{corrupt, items, text as reply_text};
use super::{unavailable, RedisStore};
use crate::domain::TenantId;
use crate::store::records::{RecordEntry, RecordKind, RecordPut, RecordStore};
use crate::store::StoreError;

/// Deletes a record (KEYS[1]), its index member ARGV[1] in KEYS[2] and, when KEYS[3] is
/// given, the external-id entry if it still names ARGV[1]. Answers 1 when something existed.
pub(super) const DELETE_INDEXED: &str = r"
local found = redis.call('DEL', KEYS[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
if found > 0 then return 1 end
return 0
";

fn opt_text(key: &str, v: Value) -> Result<Option<String>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        v => reply_text(&v)
            .map(Some)
            .ok_or_else(|| corrupt(key, format!("expected a string, got {v:?}"))),
    }
}

impl RedisStore {
    async fn run(&self, cmd: &::redis::Cmd) -> Result<Value, StoreError> {
        let mut c = self.conn().await?;
        cmd.query_async(&mut c).await.map_err(unavailable)
    }
}

#[async_trait]
impl RecordStore for RedisStore {
    async fn put_record(&self, put: RecordPut<'_>) -> Result<(), StoreError> {
        let keys = self.keys();
        let kind = put.kind.as_str();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(keys.record_of(put.tenant, kind, put.id))
            .arg(put.json)
            .ignore()
            .cmd("ZADD")
            .arg(keys.records_of(put.tenant, kind))
            .arg(put.at_ms)
            .arg(put.id)
            .ignore();
        if let Some(ext) = put.external {
            pipe.cmd("SET")
                .arg(keys.record_external(put.tenant, kind, ext))
                .arg(put.id)
                .ignore();
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys().record_of(tenant, kind.as_str(), id);
        opt_text(&key, self.run(::redis::cmd("GET").arg(&key)).await?)
    }

    async fn record_by_external(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        external: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys().record_external(tenant, kind.as_str(), external);
        opt_text(&key, self.run(::redis::cmd("GET").arg(&key)).await?)
    }

    async fn records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let keys = self.keys();
        let index = keys.records_of(tenant, kind.as_str());
        let ids = self
            .run(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg(from_ms)
                    .arg(format!("({to_ms}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let ids = items(&ids)
            .ok_or_else(|| corrupt(&index, format!("expected an array, got {ids:?}")))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = ::redis::cmd("MGET");
        for id in ids {
            let id = reply_text(id).ok_or_else(|| corrupt(&index, "a non-string member"))?;
            mget.arg(keys.record_of(tenant, kind.as_str(), &id));
        }
        let values = self.run(&mget).await?;
        let values =
            items(&values).ok_or_else(|| corrupt(&index, format!("MGET answered {values:?}")))?;
        // A member whose record is gone (never the case today) is skipped, not an error.
        Ok(values.iter().filter_map(reply_text).collect())
    }

    async fn record_entries(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<RecordEntry>, StoreError> {
        let keys = self.keys();
        let index = keys.records_of(tenant, kind.as_str());
        let reply = self
            .run(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg(from_ms)
                    .arg(format!("({to_ms}"))
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let flat = items(&reply)
            .ok_or_else(|| corrupt(&index, format!("expected an array, got {reply:?}")))?;
        let mut entries = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [id, score] = pair else {
                return Err(corrupt(&index, "an odd WITHSCORES reply"));
            };
            let id = reply_text(id).ok_or_else(|| corrupt(&index, "a non-string member"))?;
            let at_ms = match score {
                Value::Double(d) => *d as i64,
                v => reply_text(v)
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(|d| d as i64)
                    .ok_or_else(|| corrupt(&index, format!("a score {v:?}")))?,
            };
            entries.push(RecordEntry {
                id,
                at_ms,
                json: None,
            });
        }
        if entries.is_empty() {
            return Ok(entries);
        }
        let mut mget = ::redis::cmd("MGET");
        for e in &entries {
            mget.arg(keys.record_of(tenant, kind.as_str(), &e.id));
        }
        let values = self.run(&mget).await?;
        let values =
            items(&values).ok_or_else(|| corrupt(&index, format!("MGET answered {values:?}")))?;
        for (e, v) in entries.iter_mut().zip(values) {
            e.json = reply_text(v);
        }
        Ok(entries)
    }

    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        id: &str,
        external: Option<&str>,
    ) -> Result<bool, StoreError> {
        let keys = self.keys();
        let delete = ::redis::Script::new(DELETE_INDEXED);
        let mut script = delete.prepare_invoke();
        script
            .key(keys.record_of(tenant, kind.as_str(), id))
            .key(keys.records_of(tenant, kind.as_str()))
            .arg(id);
        if let Some(ext) = external {
            script.key(keys.record_external(tenant, kind.as_str(), ext));
        }
        let mut c = self.conn().await?;
        let v: i64 = script.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(v == 1)
    }

    async fn set_opted_out(
        &self,
        tenant: &TenantId,
        patient: &str,
        opted_out: bool,
    ) -> Result<(), StoreError> {
        let key = self.keys().opted_out(tenant);
        let member = crate::store::memory_tenancy::patient_part(patient);
        let cmd = if opted_out { "SADD" } else { "SREM" };
        self.run(::redis::cmd(cmd).arg(key).arg(member)).await?;
        Ok(())
    }

    async fn opted_out(&self, tenant: &TenantId, patient: &str) -> Result<bool, StoreError> {
        let key = self.keys().opted_out(tenant);
        let v = self
            .run(
                ::redis::cmd("SISMEMBER")
                    .arg(&key)
                    .arg(crate::store::memory_tenancy::patient_part(patient)),
            )
            .await?;
        match v {
            Value::Int(n) => Ok(n == 1),
            Value::Boolean(b) => Ok(b),
            other => Err(corrupt(&key, format!("SISMEMBER answered {other:?}"))),
        }
    }

    async fn set_marker(
        &self,
        tenant: &TenantId,
        patient: &str,
        slot: &str,
        value: Option<&str>,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.keys().marker(tenant, patient, slot);
        let cmd = match value {
            Some(v) => {
                let mut c = ::redis::cmd("SET");
                c.arg(key).arg(v).arg("PX").arg(ttl_ms.max(1));
                c
            }
            None => {
                let mut c = ::redis::cmd("DEL");
                c.arg(key);
                c
            }
        };
        self.run(&cmd).await?;
        Ok(())
    }

    async fn marker(
        &self,
        tenant: &TenantId,
        patient: &str,
        slot: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = self.keys().marker(tenant, patient, slot);
        opt_text(&key, self.run(::redis::cmd("GET").arg(&key)).await?)
    }

    async fn markers(
        &self,
        tenant: &TenantId,
        patients: &[&str],
        slot: &str,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if patients.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let keys: Vec<String> = patients.iter().map(|p| k.marker(tenant, p, slot)).collect();
        // One {t:} slot: one MGET.
        let reply = self.run(::redis::cmd("MGET").arg(&keys)).await?;
        let values = items(&reply)
            .ok_or_else(|| corrupt(&keys[0], format!("expected an array, got {reply:?}")))?;
        if values.len() != keys.len() {
            return Err(corrupt(&keys[0], "MGET answered another number of values"));
        }
        keys.iter()
            .zip(values)
            .map(|(key, v)| opt_text(key, v.clone()))
            .collect()
    }
}
