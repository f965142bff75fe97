//! `RedisStore`'s clinical half: appointments under the tenant's tag, the scheduler's job set,
//! and the batched accept path of the scheduler's reminder batches (one round trip per hash tag:
//! pipelines of the one-message scripts, never a pipeline across tags).

use ::redis::{Script, Value};
use async_trait::async_trait;

use std::collections::BTreeMap;

use super::reply::{corrupt, items, text as reply_text};
use super::tenancy::window_from;
use super::{unavailable, RedisStore};
use crate::clock::now_ms;
use crate::domain::appointment::{Appointment, AppointmentId};
use crate::domain::message::TimelineEvent;
use crate::domain::{NewMessage, PhoneNumberId, TenantId};
use crate::store::clinical::{
    job_member, parse_member, AppointmentStore, BatchStore, ClaimedJob, Contact, JobStore,
};
use crate::store::memory_tenancy::patient_part;
use crate::store::{Accepted, StoreError};
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

/// Messages (or reservations) per script call: a script blocks Redis while it runs, so a large
/// batch is cut into calls of this many (pipelined, so still one round trip).
pub(super) const SCRIPT_CHUNK: usize = 256;

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
        appointment_from(key, &self.cmd(::redis::cmd("GET").arg(key)).await?)
    }

    /// Adds the writes of `put_appointment` to `pipe`: the record, its place in the time index,
    /// its EMR id.
    fn add_put(&self, pipe: &mut ::redis::Pipeline, a: &Appointment) -> Result<(), StoreError> {
        let keys = self.keys();
        let json = serde_json::to_string(a)
            .map_err(|e| StoreError::Unavailable(format!("encoding an appointment: {e}")))?;
        pipe.cmd("SET")
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
        Ok(())
    }
}

/// An appointment record from a GET/MGET reply; `None` for nil.
fn appointment_from(key: &str, v: &Value) -> Result<Option<Appointment>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        v => {
            let raw = text(key, v)?;
            serde_json::from_str(&raw)
                .map(Some)
                .map_err(|e| corrupt(key, format!("appointment: {e}")))
        }
    }
}

/// What the accept script writes for a message: the `NewMessage` JSON and its first timeline
/// line.
fn accept_args(msg: &NewMessage) -> Result<(String, String), StoreError> {
    let body = serde_json::to_string(msg)
        .map_err(|e| StoreError::Unavailable(format!("encoding a message: {e}")))?;
    let first = serde_json::to_string(&TimelineEvent::queued(msg.created_ms))
        .map_err(|e| StoreError::Unavailable(format!("encoding the first timeline line: {e}")))?;
    Ok((body, first))
}

#[async_trait]
impl AppointmentStore for RedisStore {
    async fn put_appointment(&self, a: &Appointment) -> Result<(), StoreError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        self.add_put(&mut pipe, a)?;
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

    async fn appointments_by_id(
        &self,
        tenant: &TenantId,
        ids: &[AppointmentId],
    ) -> Result<Vec<Option<Appointment>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.keys().appointment(tenant, id.as_str()))
            .collect();
        // One {t:} slot: one MGET.
        let v = self.cmd(::redis::cmd("MGET").arg(&keys)).await?;
        let values = list(&self.keys().appointments(tenant), &v)?;
        if values.len() != keys.len() {
            return Err(corrupt(&keys[0], "MGET answered another number of values"));
        }
        keys.iter()
            .zip(values)
            .map(|(key, v)| Ok(appointment_from(key, v)?.filter(|a| &a.tenant == tenant)))
            .collect()
    }

    async fn put_reminded(
        &self,
        tenant: &TenantId,
        pending: &[(&str, &AppointmentId)],
        ttl_ms: i64,
        appointments: &[Appointment],
    ) -> Result<(), StoreError> {
        crate::store::clinical::only_of(tenant, appointments)?;
        if pending.is_empty() && appointments.is_empty() {
            return Ok(());
        }
        // One {t:} slot, one transaction: each appointment's record and index entries together.
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (patient, id) in pending {
            pipe.cmd("SET")
                .arg(self.keys().pending(tenant, patient))
                .arg(id.as_str())
                .arg("PX")
                .arg(ttl_ms.max(1))
                .ignore();
        }
        for a in appointments {
            self.add_put(&mut pipe, a)?;
        }
        let mut c = self.conn().await?;
        pipe.query_async::<()>(&mut c).await.map_err(unavailable)
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
impl BatchStore for RedisStore {
    async fn contacts(
        &self,
        tenant: &TenantId,
        patients: &[&str],
    ) -> Result<Vec<Contact>, StoreError> {
        if patients.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let opt_out = k.opted_out(tenant);
        let windows: Vec<String> = patients.iter().map(|p| k.window(tenant, p)).collect();
        let mut member = ::redis::cmd("SMISMEMBER");
        member.arg(&opt_out);
        for p in patients {
            member.arg(patient_part(p));
        }
        // One {t:} slot: both reads in one round trip.
        let mut c = self.conn().await?;
        let (flags, until): (Value, Value) = ::redis::pipe()
            .add_command(member)
            .cmd("MGET")
            .arg(&windows)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let flags = list(&opt_out, &flags)?;
        let until = list(&windows[0], &until)?;
        if flags.len() != patients.len() || until.len() != patients.len() {
            return Err(corrupt(
                &opt_out,
                "a batch read answered another number of values",
            ));
        }
        let now = now_ms();
        flags
            .iter()
            .zip(until)
            .zip(&windows)
            .map(|((flag, until), key)| {
                let opted_out = match flag {
                    Value::Int(n) => *n == 1,
                    Value::Boolean(b) => *b,
                    other => {
                        return Err(corrupt(&opt_out, format!("SMISMEMBER answered {other:?}")))
                    }
                };
                let window_until = match until {
                    Value::Nil => None,
                    v => window_from(key, &text(key, v)?, now)?,
                };
                Ok(Contact {
                    opted_out,
                    window_until,
                })
            })
            .collect()
    }

    async fn accept_many(
        &self,
        msgs: &[&NewMessage],
        max_queue: u64,
    ) -> Vec<Result<Accepted, StoreError>> {
        let k = self.keys();
        let not_run = || StoreError::Unavailable("accept: no reply".into());
        let mut out: Vec<Result<Accepted, StoreError>> =
            msgs.iter().map(|_| Err(not_run())).collect();
        let mut args = Vec::with_capacity(msgs.len());
        for (slot, msg) in out.iter_mut().zip(msgs) {
            match accept_args(msg) {
                Ok(a) => args.push(Some(a)),
                Err(e) => {
                    *slot = Err(e);
                    args.push(None);
                }
            }
        }
        let recipients = |i: usize| k.messages_to(&msgs[i].tenant, msgs[i].to.digits());

        // 1. The pointers and recipient indexes, one pipeline per tenant ({t:} slot): harmless if
        //    the script below fails or finds the record. The index outlives the longest record
        //    it can point to.
        let mut by_tenant: BTreeMap<&TenantId, Vec<usize>> = BTreeMap::new();
        for i in (0..msgs.len()).filter(|i| args[*i].is_some()) {
            by_tenant.entry(&msgs[i].tenant).or_default().push(i);
        }
        let mut by_number: BTreeMap<&PhoneNumberId, Vec<usize>> = BTreeMap::new();
        for idx in by_tenant.values() {
            let mut pipe = ::redis::pipe();
            for &i in idx {
                let msg = msgs[i];
                let to = recipients(i);
                pipe.cmd("SET")
                    .arg(k.tenant_message(&msg.tenant, &msg.id))
                    .arg(msg.number.as_str())
                    .ignore()
                    .cmd("ZADD")
                    .arg(&to)
                    .arg(msg.created_ms)
                    .arg(msg.id.as_str())
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&to)
                    .arg(self.terminal_ttl(&msg.retain_days) + super::RECIPIENT_INDEX_SLACK_SECS)
                    .ignore();
            }
            let written = match self.conn().await {
                Ok(mut c) => pipe.query_async::<()>(&mut c).await.map_err(unavailable),
                Err(e) => Err(e),
            };
            for &i in idx {
                match &written {
                    Ok(()) => by_number.entry(&msgs[i].number).or_default().push(i),
                    Err(e) => out[i] = Err(e.clone()),
                }
            }
        }

        // 2. The outbox records and queue entries: per number ({n:} slot), one accept script
        //    call per chunk of messages (each message decided as if alone), the calls pipelined.
        let script = &self.inner.scripts.accept;
        let mut full = Vec::new();
        for (number, idx) in &by_number {
            let mut calls = Vec::new();
            for chunk in idx.chunks(SCRIPT_CHUNK) {
                let mut inv = script.prepare_invoke();
                inv.arg(max_queue);
                for &i in chunk {
                    let (msg, Some((body, first))) = (msgs[i], &args[i]) else {
                        continue;
                    };
                    inv.key(k.record(&msg.number, &msg.id))
                        .key(k.timeline(&msg.number, &msg.id))
                        .key(k.lane(&msg.number, msg.lane))
                        .arg(msg.id.as_str())
                        .arg(body)
                        .arg(first);
                }
                calls.push(inv);
            }
            let replies = match self.run_scripts(script, &calls).await {
                Ok(replies) => replies,
                Err(e) => {
                    for &i in idx {
                        out[i] = Err(e.clone());
                    }
                    continue;
                }
            };
            let answers = replies.iter().flat_map(|v| items(v).unwrap_or_default());
            for (&i, v) in idx.iter().zip(answers) {
                out[i] = match reply_text(v).as_deref() {
                    Some("created") => Ok(Accepted::Created),
                    Some("exists") => Ok(Accepted::AlreadyExists),
                    Some("full") => {
                        full.push(i);
                        Err(StoreError::QueueFull((*number).clone()))
                    }
                    other => Err(StoreError::Unavailable(format!(
                        "accept script answered {other:?}"
                    ))),
                };
            }
        }

        // 3. Refused for a full queue: drop the pointers and index entries written above so
        //    rejected ids do not pile up (per tenant, as in step 1).
        let mut full_by_tenant: BTreeMap<&TenantId, Vec<usize>> = BTreeMap::new();
        for i in full {
            full_by_tenant.entry(&msgs[i].tenant).or_default().push(i);
        }
        for idx in full_by_tenant.values() {
            let mut pipe = ::redis::pipe();
            for &i in idx {
                let msg = msgs[i];
                pipe.cmd("DEL")
                    .arg(k.tenant_message(&msg.tenant, &msg.id))
                    .ignore()
                    .cmd("ZREM")
                    .arg(recipients(i))
                    .arg(msg.id.as_str())
                    .ignore();
            }
            let dropped = match self.conn().await {
                Ok(mut c) => pipe.query_async::<()>(&mut c).await.map_err(unavailable),
                Err(e) => Err(e),
            };
            if let Err(e) = dropped {
                for &i in idx {
                    out[i] = Err(e.clone());
                }
            }
        }
        out
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
