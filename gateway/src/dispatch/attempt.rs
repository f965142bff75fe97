//! One claimed queue entry: decide, pace, send, record, acknowledge.

use std::rc::Rc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use whatsapp_cloud::wire::OutgoingMessage;
use whatsapp_cloud::ClientError;

use super::dispatcher::Core;
use crate::clock::now_ms;
use crate::domain::message::{decide_send, MessageRecord, SendDecision};
use crate::domain::{MessageError, MessageState};
use crate::retry::{Next, SendFailure};
use crate::store::{AttemptOutcome, QueueEntry};

pub(super) async fn process(core: Rc<Core>, entry: QueueEntry, _permit: OwnedSemaphorePermit) {
    let store = &core.deps.store;
    // Meta already answered this one while the store was away: record that, never send again.
    let pending = core.unrecorded.borrow_mut().remove(&entry.message);
    if let Some(outcome) = pending {
        match store
            .finish_attempt(&entry.number, &entry.message, &outcome, now_ms())
            .await
        {
            Ok(_) => {
                tracing::info!(message = %entry.message, "recorded an outcome kept while the store was away");
                ack(&core, &entry).await;
            }
            Err(e) => {
                tracing::warn!(message = %entry.message, error = %e, "store still away; outcome kept");
                core.unrecorded
                    .borrow_mut()
                    .insert(entry.message.clone(), outcome);
            }
        }
        return;
    }
    let record = match store.load(&entry.number, &entry.message).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            tracing::warn!(message = %entry.message, "queue entry without a record; dropping it");
            ack(&core, &entry).await;
            return;
        }
        // Left unacknowledged: it is reclaimed and decided again later.
        Err(e) => {
            return tracing::warn!(message = %entry.message, error = %e, "could not load record")
        }
    };
    let grace = core.deps.settings.status_grace_ms as i64;
    match decide_send(&record, now_ms(), grace) {
        SendDecision::AlreadyDone => ack(&core, &entry).await,
        SendDecision::ResolveFromStatus => {
            let wamid = record.wamid.clone().unwrap_or_default();
            finish(&core, &entry, AttemptOutcome::Accepted { wamid }).await;
            core.deps
                .metrics
                .sends
                .with_label_values(&["accepted"])
                .inc();
            ack(&core, &entry).await;
        }
        SendDecision::WaitForStatus { until_ms } => defer(&core, &entry, until_ms).await,
        SendDecision::Expire => end(&core, &entry, &record, MessageState::Expired, None).await,
        SendDecision::Send => send(&core, &entry, record).await,
    }
}

/// Ends a message that will never be sent, and gives its reservation back.
async fn end(
    core: &Core,
    entry: &QueueEntry,
    record: &MessageRecord,
    state: MessageState,
    error: Option<MessageError>,
) {
    finish(core, entry, AttemptOutcome::Ended { state, error }).await;
    let (tenant, id) = (&record.message.tenant, &record.message.id);
    crate::api::dead_letters::remember(&*core.deps.store, tenant, id, state).await;
    release(core, record).await;
    core.deps
        .metrics
        .sends
        .with_label_values(&[state.as_str()])
        .inc();
    ack(core, entry).await;
}

async fn release(core: &Core, record: &MessageRecord) {
    if let Err(e) = core
        .deps
        .store
        .release(&record.message.tenant, &record.message.id, now_ms())
        .await
    {
        tracing::error!(message = %record.message.id, error = %e, "could not release a reservation");
    }
}

async fn send(core: &Core, entry: &QueueEntry, record: MessageRecord) {
    let msg = &record.message;
    let Some(clinic) = core
        .deps
        .directory
        .by_number(&entry.number)
        .filter(|c| c.is_active())
    else {
        // Suspended (or unknown) clinic: hold its messages; the deadline still applies.
        return defer(core, entry, now_ms() + 30_000).await;
    };
    if let Some(broadcast) = &msg.broadcast {
        match core
            .deps
            .broadcasts
            .cancelled(&*core.deps.store, &msg.tenant, broadcast)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                let error = MessageError {
                    code: 0,
                    title: "broadcast cancelled".into(),
                    detail: format!(
                        "broadcast {broadcast} was cancelled before this message was sent"
                    ),
                };
                return end(core, entry, &record, MessageState::Expired, Some(error)).await;
            }
            // Left unacknowledged: reclaimed and decided again.
            Err(e) => {
                return tracing::warn!(message = %msg.id, error = %e, "could not check the broadcast")
            }
        }
    }
    if let whatsapp_cloud::wire::Content::Template { template } = &msg.content {
        match core
            .deps
            .store
            .template(&msg.tenant, &template.name, &template.language.code)
            .await
        {
            Ok(Some(t)) => {
                if let Some((code, title)) = crate::catalog::stops_sends(&t) {
                    let detail = t
                        .reason
                        .clone()
                        .map_or_else(|| title.to_owned(), |r| format!("{title}: {r}"));
                    let error = MessageError {
                        code,
                        title: title.to_owned(),
                        detail,
                    };
                    return end(core, entry, &record, MessageState::Failed, Some(error)).await;
                }
            }
            // Unknown to the catalog: Meta decides (132001 if it does not exist).
            Ok(None) => {}
            Err(e) => {
                return tracing::warn!(message = %msg.id, error = %e, "could not read the template")
            }
        }
        if msg.lane == crate::domain::Lane::Bulk {
            match bulk_budget(core, &clinic, msg).await {
                Ok(None) => {}
                Ok(Some(frees_at_ms)) => return defer(core, entry, frees_at_ms).await,
                Err(e) => {
                    return tracing::warn!(message = %msg.id, error = %e, "could not check the messaging limit")
                }
            }
        }
    }
    if let Err(wait) = core.pacer.check_recipient(msg.to.digits()) {
        // Pair rate: this recipient waits, the lane goes on.
        let due = now_ms() + wait.as_millis() as i64;
        return defer(core, entry, due).await;
    }
    if core.draining.get() {
        // Hand it back untouched: the next start sends it.
        return defer(core, entry, now_ms()).await;
    }
    let store = &core.deps.store;
    let attempt = match store
        .begin_fenced_attempt(&entry.number, &entry.message, now_ms(), core.fence.as_ref())
        .await
    {
        Ok(Some(n)) => n,
        Ok(None) => return ack(core, entry).await,
        Err(crate::store::StoreError::Fenced(_)) => {
            // Another node owns the number now: stop claiming; the entry stays claimed for the
            // new owner to reclaim, untouched.
            core.draining.set(true);
            return tracing::warn!(message = %entry.message, "lease lost before sending; left to the new owner");
        }
        Err(e) => {
            return tracing::warn!(message = %entry.message, error = %e, "could not start attempt")
        }
    };
    // Paced last, right before the request: what lies between the pacer and Meta (a store
    // round trip) would otherwise shift sends into the next rolling second Meta counts.
    core.wait_if_paused().await;
    let paced = Instant::now();
    let slot = core.pacer.until_tier_ready(msg.lane).await;
    if !still_owner(core) {
        // The lease moved while this send waited for the pacer: the new owner's pacer counts
        // from now, so do not send beside it. The record stays `sending`; its new owner waits
        // out the status grace and sends it then.
        core.draining.set(true);
        return tracing::warn!(message = %entry.message, "lease lost while pacing; left to the new owner");
    }
    // The tier the directory has now (the pacer follows it through `SetTier`).
    let tier = crate::metrics::ops::tier_label(
        clinic
            .numbers
            .iter()
            .find(|n| n.phone_number_id == entry.number)
            .map_or(core.number.tier_mps, |n| n.tier_mps),
    );
    let ops = &core.deps.metrics.ops;
    ops.pacing_wait
        .with_label_values(&[&tier])
        .observe(paced.elapsed().as_secs_f64());
    ops.pacing_sends.with_label_values(&[&tier]).inc();
    if attempt == 1 {
        let waited = (now_ms() - msg.created_ms).max(0) as f64 / 1000.0;
        core.deps
            .metrics
            .queue_wait
            .with_label_values(&[msg.lane.as_str()])
            .observe(waited);
    }
    let mut out = OutgoingMessage::new(msg.to.as_str(), msg.content.clone());
    out.biz_opaque_callback_data = Some(msg.id.to_string());

    let started = Instant::now();
    let result = core
        .deps
        .meta
        .client(&clinic)
        .send_message(core.deps.meta.token(&clinic), entry.number.as_str(), &out)
        .await;
    // Meta has counted it (or never will): its last second in the number's window starts now.
    drop(slot);
    let result_label = match &result {
        Ok(_) => "ok",
        Err(e) if e.outcome_unknown() => "unknown",
        Err(_) => "error",
    };
    core.deps
        .metrics
        .meta_latency
        .with_label_values(&["send", result_label])
        .observe(started.elapsed().as_secs_f64());

    let failure = match result {
        Ok(resp) => match resp.wamid() {
            Some(wamid) => {
                let outcome = AttemptOutcome::Accepted {
                    wamid: wamid.to_owned(),
                };
                finish(core, entry, outcome).await;
                core.deps
                    .metrics
                    .sends
                    .with_label_values(&["accepted"])
                    .inc();
                // Event to send: from the accept (the touchpoint's event or the API call) to
                // Meta's 2xx, by lane and touchpoint (`api` for POST /v1/messages).
                core.deps
                    .metrics
                    .ops
                    .event_to_send
                    .with_label_values(&[
                        msg.lane.as_str(),
                        msg.touchpoint.as_deref().unwrap_or("api"),
                    ])
                    .observe((now_ms() - msg.created_ms).max(0) as f64 / 1000.0);
                tracing::debug!(message = %msg.id, to = %msg.to, attempt, "accepted by Meta");
                return ack(core, entry).await;
            }
            // A 200 without a wamid cannot be correlated: treat it like a lost answer.
            None => (
                SendFailure::Ambiguous,
                gateway_error(0, "Meta answered without a message id"),
            ),
        },
        Err(e) => {
            if let ClientError::Api { error, .. } = &e {
                core.deps
                    .metrics
                    .ops
                    .meta_errors
                    .with_label_values(&[
                        &crate::metrics::ops::meta_code_label(error.code),
                        crate::metrics::ops::meta_class_label(error.code),
                        "send",
                    ])
                    .inc();
            }
            classify_failure(&e)
        }
    };

    let next = core
        .policy
        .after_failure(&failure.0, attempt, rand::random::<f64>());
    let error = failure.1;
    tracing::info!(message = %msg.id, to = %msg.to, attempt, code = error.code, next = ?next, "send attempt failed");
    match next {
        Next::Retry {
            delay,
            pause_number,
        } => {
            if let Some(p) = pause_number {
                core.pause(p);
            }
            finish(core, entry, AttemptOutcome::Retry { error }).await;
            core.deps
                .metrics
                .sends
                .with_label_values(&["retried"])
                .inc();
            defer(core, entry, now_ms() + delay.as_millis() as i64).await;
        }
        Next::AwaitStatus { delay } => {
            finish(core, entry, AttemptOutcome::Unknown { error }).await;
            core.deps
                .metrics
                .sends
                .with_label_values(&["unknown"])
                .inc();
            defer(core, entry, now_ms() + delay.as_millis() as i64).await;
        }
        Next::Fail => {
            if error.code == NOT_ON_WHATSAPP_CODE {
                remember_not_on_whatsapp(&*core.deps.store, &msg.tenant, &msg.to).await;
            }
            end(core, entry, &record, MessageState::Failed, Some(error)).await
        }
    }
}

/// Meta's "not a WhatsApp user" (131026).
pub const NOT_ON_WHATSAPP_CODE: i64 = 131026;

/// Remembers for 90 days that Meta said the patient is not on WhatsApp, so broadcasts skip them.
pub async fn remember_not_on_whatsapp(
    store: &dyn crate::store::Backend,
    tenant: &crate::domain::TenantId,
    to: &crate::domain::E164,
) {
    const KEEP_MS: i64 = 90 * 24 * 3_600_000;
    if let Err(e) = store
        .set_marker(
            tenant,
            to.digits(),
            crate::broadcasts::NOT_ON_WHATSAPP,
            Some("131026"),
            KEEP_MS,
        )
        .await
    {
        tracing::warn!(error = %e, "could not remember a number that is not on WhatsApp");
    }
}

/// Maps a client error to the retry policy's view and the error the clinic will see.
fn classify_failure(e: &ClientError) -> (SendFailure, MessageError) {
    match e {
        ClientError::Api { error, .. } => (
            SendFailure::Meta { code: error.code },
            MessageError {
                code: error.code,
                title: whatsapp_cloud::errors::title(error.code).to_owned(),
                detail: error.text().to_owned(),
            },
        ),
        ClientError::Http { status, .. } => (
            SendFailure::Http { status: *status },
            gateway_error(i64::from(*status), &format!("HTTP {status} from Meta")),
        ),
        ClientError::Connect(m) => (SendFailure::Connect, gateway_error(0, m)),
        ClientError::Timeout | ClientError::Transport(_) => {
            (SendFailure::Ambiguous, gateway_error(0, &e.to_string()))
        }
        ClientError::Decode(m) | ClientError::Request(m) => {
            (SendFailure::Ambiguous, gateway_error(0, m))
        }
    }
}

fn gateway_error(code: i64, detail: &str) -> MessageError {
    MessageError {
        code,
        title: "gateway".into(),
        detail: detail.to_owned(),
    }
}

async fn finish(core: &Core, entry: &QueueEntry, outcome: AttemptOutcome) {
    if let Err(e) = core
        .deps
        .store
        .finish_attempt(&entry.number, &entry.message, &outcome, now_ms())
        .await
    {
        // Kept in memory: when the entry is reclaimed the outcome is recorded then, so a send
        // Meta accepted is not sent again because the store could not hear about it.
        tracing::error!(message = %entry.message, error = %e, "could not record attempt outcome; kept until the store is back");
        core.unrecorded
            .borrow_mut()
            .insert(entry.message.clone(), outcome);
    }
}

async fn ack(core: &Core, entry: &QueueEntry) {
    if let Err(e) = core.deps.store.ack(entry).await {
        // Unacknowledged entries are reclaimed and found already done: nothing is sent twice.
        tracing::warn!(message = %entry.message, error = %e, "ack failed");
    }
}

async fn defer(core: &Core, entry: &QueueEntry, due_ms: i64) {
    match core.deps.store.defer(entry, due_ms).await {
        // Wakes the loop when this is now the earliest deferral, so it sleeps no longer than that.
        Ok(()) => core.note_deferred(due_ms),
        Err(e) => {
            tracing::warn!(message = %entry.message, error = %e, "defer failed; entry will be reclaimed")
        }
    }
}

/// For a bulk template to a patient outside their window: takes one patient from the portfolio's
/// messaging limit, or says when budget frees (the entry waits; nothing is sent into an error).
async fn bulk_budget(
    core: &Core,
    clinic: &crate::tenants::ClinicSettings,
    msg: &crate::domain::NewMessage,
) -> Result<Option<i64>, crate::store::StoreError> {
    let Some(limit) = clinic.messaging_limit else {
        return Ok(None);
    };
    let store = &core.deps.store;
    let now = now_ms();
    if store
        .window_until(&msg.tenant, msg.to.digits())
        .await?
        .is_some_and(|until| until > now)
    {
        return Ok(None);
    }
    Ok(
        match store
            .reach_patient(&clinic.portfolio_id, msg.to.digits(), limit, now)
            .await?
        {
            crate::store::tenancy::LimitDecision::Allowed { .. } => None,
            crate::store::tenancy::LimitDecision::Reached { frees_at_ms, .. } => {
                tracing::info!(message = %msg.id, frees_at_ms, "messaging limit reached; bulk send waits");
                Some(frees_at_ms)
            }
        },
    )
}

/// True on a single node, or while this node still holds the lease it started with.
fn still_owner(core: &Core) -> bool {
    match (&core.deps.ownership, &core.fence) {
        (Some(o), Some(fence)) => o.fence(&core.number.phone_number_id).as_ref() == Some(fence),
        _ => true,
    }
}
