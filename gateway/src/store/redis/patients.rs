//! `RedisStore`'s patient directory, all under the tenant's hash tag: a hash of records, a hash of
//! their index entries, a lex sorted set as the phone index, a version counter and a stream as the
//! change feed. Every write is one script over those five keys, so a record, its index entries
//! and its feed entry never disagree.

use std::sync::LazyLock;

use ::redis::{Script, Value};
use async_trait::async_trait;

use super::reply::{corrupt, int, items, text};
use super::{unavailable, RedisStore};
use crate::domain::TenantId;
use crate::store::patients::{
    Expect, PatientChanges, PatientPage, PatientStore, PatientWrite, PutOutcome, FEED_LEN,
};
use crate::store::StoreError;

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/patient_put.lua")));
static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/patient_del.lua")));
static CHANGES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/patient_changes.lua")));

/// Writes per pipeline (one round trip each).
const PUT_PIPELINE: usize = 500;
/// Ids per HMGET, and HMGETs per pipeline.
const MGET_CHUNK: usize = 1_000;
const MGETS_PER_PIPELINE: usize = 8;

fn expectation(e: &Expect<'_>) -> String {
    match e {
        Expect::Any => "*".to_owned(),
        Expect::Absent => String::new(),
        Expect::Json(j) => format!("={j}"),
    }
}

fn opt_text(key: &str, v: &Value) -> Result<Option<String>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        v => text(v)
            .map(Some)
            .ok_or_else(|| corrupt(key, format!("expected a string, got {v:?}"))),
    }
}

/// A string reply, moved out of the value.
fn owned_text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        other => text(&other),
    }
}

fn put_outcome(key: &str, v: &Value) -> Result<PutOutcome, StoreError> {
    let parts = items(v).ok_or_else(|| corrupt(key, format!("put answered {v:?}")))?;
    let (Some(version), Some(created)) = (parts.first().and_then(int), parts.get(1).and_then(int))
    else {
        return Err(corrupt(key, format!("put answered {v:?}")));
    };
    if version < 0 {
        return Ok(PutOutcome::Conflict);
    }
    Ok(PutOutcome::Written {
        version: version as u64,
        created: created == 1,
    })
}

impl RedisStore {
    fn patient_keys(&self, tenant: &TenantId) -> [String; 5] {
        let k = self.keys();
        [
            k.patients(tenant),
            k.patient_phones(tenant),
            k.patient_version(tenant),
            k.patient_feed(tenant),
            k.patient_index(tenant),
        ]
    }

    async fn hscan(
        &self,
        key: &str,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError> {
        let mut c = self.conn().await?;
        let v: Value = ::redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor.unwrap_or("0"))
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        // Taken apart by value: the strings move out of the reply instead of being copied.
        let Value::Array(mut parts) = v else {
            return Err(corrupt(key, "HSCAN reply is not an array"));
        };
        let (Some(flat), Some(next), None) = (parts.pop(), parts.pop(), parts.pop()) else {
            return Err(corrupt(key, "HSCAN reply is not [cursor, items]"));
        };
        let next = text(&next).ok_or_else(|| corrupt(key, "HSCAN cursor"))?;
        let flat = match flat {
            Value::Array(a) => a,
            Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => return Err(corrupt(key, "HSCAN items are not an array")),
        };
        if flat.len() % 2 != 0 {
            return Err(corrupt(key, "HSCAN items are not pairs"));
        }
        let mut page = PatientPage {
            items: Vec::with_capacity(flat.len() / 2),
            next: (next != "0").then_some(next),
        };
        let mut it = flat.into_iter();
        while let (Some(id), Some(value)) = (it.next(), it.next()) {
            let (Some(id), Some(value)) = (owned_text(id), owned_text(value)) else {
                return Err(corrupt(key, "HSCAN returned a non-string"));
            };
            page.items.push((id, value));
        }
        Ok(page)
    }
}

#[async_trait]
impl PatientStore for RedisStore {
    async fn put_patients(
        &self,
        tenant: &TenantId,
        writes: &[PatientWrite<'_>],
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let keys = self.patient_keys(tenant);
        let mut out = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(PUT_PIPELINE) {
            // Loading the script first on the same connection makes the EVALSHAs safe even
            // right after a Redis restart.
            let mut pipe = ::redis::pipe();
            pipe.cmd("SCRIPT")
                .arg("LOAD")
                .arg(include_str!("lua/patient_put.lua"))
                .ignore();
            for w in chunk {
                pipe.cmd("EVALSHA")
                    .arg(PUT.get_hash())
                    .arg(keys.len())
                    .arg(&keys[..])
                    .arg(w.external_id)
                    .arg(w.phone)
                    .arg(w.json)
                    .arg(expectation(&w.expect))
                    .arg(FEED_LEN)
                    .arg(w.index);
            }
            let mut c = self.conn().await?;
            let replies: Vec<Value> = pipe.query_async(&mut c).await.map_err(unavailable)?;
            if replies.len() != chunk.len() {
                return Err(corrupt(
                    &keys[0],
                    format!("{} replies to {} writes", replies.len(), chunk.len()),
                ));
            }
            for r in &replies {
                out.push(put_outcome(&keys[0], r)?);
            }
        }
        Ok(out)
    }

    async fn patient_jsons(
        &self,
        tenant: &TenantId,
        external_ids: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let key = self.keys().patients(tenant);
        let mut out = Vec::with_capacity(external_ids.len());
        for group in external_ids.chunks(MGET_CHUNK * MGETS_PER_PIPELINE) {
            let mut pipe = ::redis::pipe();
            for chunk in group.chunks(MGET_CHUNK) {
                pipe.cmd("HMGET").arg(&key).arg(chunk);
            }
            let mut c = self.conn().await?;
            let replies: Vec<Value> = pipe.query_async(&mut c).await.map_err(unavailable)?;
            for (reply, chunk) in replies.iter().zip(group.chunks(MGET_CHUNK)) {
                let values = items(reply)
                    .ok_or_else(|| corrupt(&key, format!("HMGET answered {reply:?}")))?;
                if values.len() != chunk.len() {
                    return Err(corrupt(&key, "HMGET answered another number of values"));
                }
                for v in values {
                    out.push(opt_text(&key, v)?);
                }
            }
        }
        if out.len() != external_ids.len() {
            return Err(corrupt(&key, "HMGET answered another number of values"));
        }
        Ok(out)
    }

    async fn patient_ids_by_phone(
        &self,
        tenant: &TenantId,
        phone: &str,
    ) -> Result<Vec<String>, StoreError> {
        let key = self.keys().patient_phones(tenant);
        let mut c = self.conn().await?;
        // `|` sorts before every character an id may start with after it: `[<digits>|` ..
        // `[<digits>|\xff` spans exactly this phone's members.
        let v: Value = ::redis::cmd("ZRANGE")
            .arg(&key)
            .arg(format!("[{phone}|"))
            .arg([b"[".as_slice(), phone.as_bytes(), b"|\xff"].concat())
            .arg("BYLEX")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let members = items(&v).ok_or_else(|| corrupt(&key, format!("ZRANGE answered {v:?}")))?;
        let prefix = format!("{phone}|");
        let mut ids = Vec::with_capacity(members.len());
        for m in members {
            let m = text(m).ok_or_else(|| corrupt(&key, "a non-string member"))?;
            if let Some(id) = m.strip_prefix(&prefix) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    async fn delete_patient(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let keys = self.patient_keys(tenant);
        let mut inv = DELETE.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(external_id).arg(FEED_LEN);
        let mut c = self.conn().await?;
        let v: Value = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        match int(&v) {
            Some(0) => Ok(None),
            Some(n) if n > 0 => Ok(Some(n as u64)),
            _ => Err(corrupt(&keys[0], format!("delete answered {v:?}"))),
        }
    }

    async fn patient_count(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let key = self.keys().patients(tenant);
        let mut c = self.conn().await?;
        let v: Value = ::redis::cmd("HLEN")
            .arg(&key)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        int(&v)
            .map(|n| n.max(0) as u64)
            .ok_or_else(|| corrupt(&key, format!("HLEN answered {v:?}")))
    }

    async fn patient_version(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let key = self.keys().patient_version(tenant);
        let mut c = self.conn().await?;
        let v: Value = ::redis::cmd("GET")
            .arg(&key)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        match v {
            Value::Nil => Ok(0),
            v => int(&v)
                .map(|n| n.max(0) as u64)
                .ok_or_else(|| corrupt(&key, format!("GET answered {v:?}"))),
        }
    }

    async fn scan_patients(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError> {
        self.hscan(&self.keys().patients(tenant), cursor, count)
            .await
    }

    async fn scan_patient_index(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<PatientPage, StoreError> {
        self.hscan(&self.keys().patient_index(tenant), cursor, count)
            .await
    }

    async fn patient_changes(
        &self,
        tenant: &TenantId,
        since: u64,
        max: usize,
    ) -> Result<PatientChanges, StoreError> {
        let k = self.keys();
        let feed = k.patient_feed(tenant);
        let mut inv = CHANGES.prepare_invoke();
        inv.key(k.patient_version(tenant))
            .key(&feed)
            .key(k.patient_index(tenant))
            .arg(since)
            .arg(max.max(1));
        let mut c = self.conn().await?;
        let v: Value = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        let parts = items(&v).ok_or_else(|| corrupt(&feed, format!("changes answered {v:?}")))?;
        let (Some(version), Some(gap), Some(upto)) = (
            parts.first().and_then(int),
            parts.get(1).and_then(int),
            parts.get(2).and_then(int),
        ) else {
            return Err(corrupt(&feed, "changes reply has no version, gap, upto"));
        };
        let rest = parts.get(3..).unwrap_or_default();
        if rest.len() % 2 != 0 {
            return Err(corrupt(&feed, "changes are not (id, json) pairs"));
        }
        let mut changed = Vec::with_capacity(rest.len() / 2);
        for pair in rest.chunks(2) {
            let id = text(&pair[0]).ok_or_else(|| corrupt(&feed, "a non-string id"))?;
            changed.push((id, opt_text(&feed, &pair[1])?));
        }
        Ok(PatientChanges {
            version: version.max(0) as u64,
            upto: upto.max(0) as u64,
            changed,
            gap: gap == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract_tenancy::redis_store;

    #[tokio::test]
    async fn a_trimmed_feed_reports_a_gap() {
        let s = redis_store("patient_feed_gap").await;
        let a = TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
        for i in 0..5 {
            let id = format!("P{i}");
            s.put_patients(
                &a,
                &[PatientWrite {
                    external_id: &id,
                    phone: "919800000001",
                    json: r#"{"phone":"+919800000001"}"#,
                    index: "[]",
                    expect: Expect::Any,
                }],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut c = s.conn().await.unwrap_or_else(|e| panic!("{e}"));
        let _: Value = ::redis::cmd("XTRIM")
            .arg(s.keys().patient_feed(&a))
            .arg("MINID")
            .arg("4-0")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let behind = s
            .patient_changes(&a, 1, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(behind.gap, "versions 2 and 3 are gone");
        let recent = s
            .patient_changes(&a, 3, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!recent.gap);
        assert_eq!(recent.changed.len(), 2);
    }
}
