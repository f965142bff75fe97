//! `RedisStore`'s clinical half: appointments under the tenant's tag, and the scheduler's job set.

use ::redis::{Script, Value};
use async_trait::async_trait;

use super::reply::{corrupt, items, text as reply_text};
use super::{unavailable, RedisStore};
use crate::domain::appointment::{Appointment, AppointmentId};
use crate::domain::TenantId;
use crate::store::clinical::{job_member, parse_member, AppointmentStore, ClaimedJob, JobStore};
use crate::store::StoreError;
use crate::workflows::Job;

/// Claims due jobs: each is re-scored to the end of its lease in the same step, so two nodes
/// never claim the same job, and a job whose node died comes back when its lease ends.
const CLAIM_JOBS: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], member)
end
return due
";

/// The due time (score) of the first job, as a string; nil when there is none.
const OLDEST_JOB: &str = r"
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return false end
return first[2]
";

/// Per lane stream (KEYS[1..3]), the id of the first entry not yet delivered to consumer group
/// ARGV[1] (the oldest entry waiting to be claimed), or '' when none waits.
const OLDEST_READY: &str = r"
local out = {}
for i = 1, 3 do
  local first = ''
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local last = '0-0'
    local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])
    if type(groups) == 'table' and groups.err == nil then
      for _, g in ipairs(groups) do
        local name, delivered
        for j = 1, #g - 1, 2 do
          if g[j] == 'name' then name = g[j + 1] end
          if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
        end
        if name == ARGV[1] and delivered then last = delivered end
      end
    end
    local r = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
    if #r > 0 then first = r[1][1] end
  end
  out[i] = first
end
return out
";

fn text(key: &str, v: &Value) -> Result<String, StoreError> {
    reply_text(v).ok_or_else(|| corrupt(key, format!("expected a string, got {v:?}")))
}

fn list<'a>(key: &str, v: &'a Value) -> Result<&'a [Value], StoreError> {
    items(v).ok_or_else(|| corrupt(key, format!("expected an array, got {v:?}")))
}

impl RedisStore {
    async fn cmd(&self, cmd: &::redis::Cmd) -> Result<Value, StoreError> {
        let mut c = self.conn().await?;
        cmd.query_async(&mut c).await.map_err(unavailable)
    }

    async fn get_appointment_json(&self, key: &str) -> Result<Option<Appointment>, StoreError> {
        match self.cmd(::redis::cmd("GET").arg(key)).await? {
            Value::Nil => Ok(None),
            v => {
                let raw = text(key, &v)?;
                serde_json::from_str(&raw)
                    .map(Some)
                    .map_err(|e| corrupt(key, format!("appointment: {e}")))
            }
        }
    }
}

#[async_trait]
impl AppointmentStore for RedisStore {
    async fn put_appointment(&self, a: &Appointment) -> Result<(), StoreError> {
        let keys = self.keys();
        let json = serde_json::to_string(a)
            .map_err(|e| StoreError::Unavailable(format!("encoding an appointment: {e}")))?;
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(keys.appointment(&a.tenant, a.id.as_str()))
            .arg(json)
            .ignore()
            .cmd("ZADD")
            .arg(keys.appointments(&a.tenant))
            .arg(a.start_ms)
            .arg(a.id.as_str())
            .ignore();
        if let Some(ext) = &a.external_id {
            pipe.cmd("SET")
                .arg(keys.appointment_external(&a.tenant, ext))
                .arg(a.id.as_str())
                .ignore();
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
    }

    async fn appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<Option<Appointment>, StoreError> {
        let key = self.keys().appointment(tenant, id.as_str());
        Ok(self
            .get_appointment_json(&key)
            .await?
            .filter(|a| &a.tenant == tenant))
    }

    async fn appointment_by_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
    ) -> Result<Option<AppointmentId>, StoreError> {
        let key = self.keys().appointment_external(tenant, external_id);
        match self.cmd(::redis::cmd("GET").arg(&key)).await? {
            Value::Nil => Ok(None),
            v => Ok(AppointmentId::parse(&text(&key, &v)?)),
        }
    }

    async fn claim_external(
        &self,
        tenant: &TenantId,
        external_id: &str,
        id: &AppointmentId,
    ) -> Result<Option<AppointmentId>, StoreError> {
        let key = self.keys().appointment_external(tenant, external_id);
        // SET NX … GET answers the holder when there is one (Redis ≥ 7.0).
        let v = self
            .cmd(
                ::redis::cmd("SET")
                    .arg(&key)
                    .arg(id.as_str())
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        match v {
            Value::Nil | Value::Okay => Ok(None),
            v => {
                let holder = text(&key, &v)?;
                Ok(AppointmentId::parse(&holder).filter(|h| h != id))
            }
        }
    }

    async fn appointments(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Appointment>, StoreError> {
        let index = self.keys().appointments(tenant);
        let ids = self
            .cmd(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg(from_ms)
                    .arg(format!("({to_ms}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let mut out = Vec::new();
        for v in list(&index, &ids)? {
            let id = text(&index, v)?;
            if let Some(a) = self
                .get_appointment_json(&self.keys().appointment(tenant, &id))
                .await?
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn set_pending(
        &self,
        tenant: &TenantId,
        patient: &str,
        id: &AppointmentId,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.keys().pending(tenant, patient);
        self.cmd(
            ::redis::cmd("SET")
                .arg(key)
                .arg(id.as_str())
                .arg("PX")
                .arg(ttl_ms.max(1)),
        )
        .await?;
        Ok(())
    }

    async fn pending(
        &self,
        tenant: &TenantId,
        patient: &str,
    ) -> Result<Option<AppointmentId>, StoreError> {
        let key = self.keys().pending(tenant, patient);
        match self.cmd(::redis::cmd("GET").arg(&key)).await? {
            Value::Nil => Ok(None),
            v => Ok(AppointmentId::parse(&text(&key, &v)?)),
        }
    }

    async fn clear_pending(&self, tenant: &TenantId, patient: &str) -> Result<(), StoreError> {
        self.cmd(::redis::cmd("DEL").arg(self.keys().pending(tenant, patient)))
            .await?;
        Ok(())
    }

    async fn delete_appointment(
        &self,
        tenant: &TenantId,
        id: &AppointmentId,
    ) -> Result<bool, StoreError> {
        let keys = self.keys();
        let Some(a) = self.appointment(tenant, id).await? else {
            // An index entry without its appointment is dropped all the same.
            self.cmd(
                ::redis::cmd("ZREM")
                    .arg(keys.appointments(tenant))
                    .arg(id.as_str()),
            )
            .await?;
            return Ok(false);
        };
        let delete = Script::new(super::records::DELETE_INDEXED);
        let mut script = delete.prepare_invoke();
        script
            .key(keys.appointment(tenant, id.as_str()))
            .key(keys.appointments(tenant))
            .arg(id.as_str());
        if let Some(ext) = &a.external_id {
            script.key(keys.appointment_external(tenant, ext));
        }
        let mut c = self.conn().await?;
        let v: i64 = script.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(v == 1)
    }
}

#[async_trait]
impl JobStore for RedisStore {
    async fn schedule(&self, tenant: &TenantId, job: &Job, due_ms: i64) -> Result<(), StoreError> {
        self.cmd(
            ::redis::cmd("ZADD")
                .arg(self.keys().jobs())
                .arg(due_ms)
                .arg(job_member(tenant, job)),
        )
        .await?;
        Ok(())
    }

    async fn claim_due(
        &self,
        now_ms: i64,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let key = self.keys().jobs();
        let mut c = self.conn().await?;
        let v: Value = Script::new(CLAIM_JOBS)
            .key(&key)
            .arg(now_ms)
            .arg(max)
            .arg(now_ms + lease_ms)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for m in list(&key, &v)? {
            let member = text(&key, m)?;
            match parse_member(&member) {
                Some((tenant, job)) => out.push(ClaimedJob {
                    tenant,
                    job,
                    member,
                }),
                None => {
                    tracing::error!(member = %member, "unreadable job dropped");
                    let _ = self.cmd(::redis::cmd("ZREM").arg(&key).arg(&member)).await;
                }
            }
        }
        Ok(out)
    }

    async fn complete(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        self.cmd(
            ::redis::cmd("ZREM")
                .arg(self.keys().jobs())
                .arg(&job.member),
        )
        .await?;
        Ok(())
    }

    async fn complete_many(&self, jobs: &[&ClaimedJob]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut zrem = ::redis::cmd("ZREM");
        zrem.arg(self.keys().jobs());
        for job in jobs {
            zrem.arg(&job.member);
        }
        self.cmd(&zrem).await?;
        Ok(())
    }

    async fn unschedule(&self, tenant: &TenantId, jobs: &[Job]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut zrem = ::redis::cmd("ZREM");
        zrem.arg(self.keys().jobs());
        for job in jobs {
            zrem.arg(job_member(tenant, job));
        }
        self.cmd(&zrem).await?;
        Ok(())
    }

    async fn oldest_due(&self) -> Result<Option<i64>, StoreError> {
        let key = self.keys().jobs();
        let mut c = self.conn().await?;
        let v: Value = Script::new(OLDEST_JOB)
            .key(&key)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        if matches!(v, Value::Nil) {
            return Ok(None);
        }
        let score = text(&key, &v)?;
        let due = score
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .ok_or_else(|| corrupt(&key, format!("job score {score:?} is not a number")))?;
        Ok(Some(due as i64))
    }

    async fn oldest_ready(
        &self,
        number: &crate::domain::PhoneNumberId,
    ) -> Result<[Option<i64>; 3], StoreError> {
        let [care, reminders, bulk] = self.keys().lanes(number);
        let mut c = self.conn().await?;
        let v: Value = Script::new(OLDEST_READY)
            .key(&care)
            .key(&reminders)
            .key(&bulk)
            .arg(super::keys::GROUP)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let ids = list(&care, &v)?;
        let mut out = [None; 3];
        for (slot, id) in out.iter_mut().zip(ids) {
            let id = text(&care, id)?;
            if id.is_empty() {
                continue;
            }
            // A stream id is `<unix ms>-<sequence>`: the time the entry was added.
            let ms = id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse::<i64>().ok())
                .ok_or_else(|| corrupt(&care, format!("{id:?} is not a stream id")))?;
            *slot = Some(ms);
        }
        Ok(out)
    }

    async fn scheduled(&self) -> Result<u64, StoreError> {
        let v = self
            .cmd(::redis::cmd("ZCARD").arg(self.keys().jobs()))
            .await?;
        match v {
            Value::Int(n) => Ok(n.max(0) as u64),
            other => Err(corrupt(
                &self.keys().jobs(),
                format!("ZCARD answered {other:?}"),
            )),
        }
    }
}
