//! Subscription notifications, in the three styles EMRs use:
//!
//! * R4 criteria-based rest-hook: an empty `POST [base]` ("something changed") — the gateway
//!   searches the clinic's server for what changed since its last look; with a payload, servers
//!   `PUT [base]/Type/id` (and `DELETE`) the full resource, which the resource endpoints take.
//! * Topic-based (R5 `subscription-notification` with SubscriptionStatus; R4 backport `history`
//!   with Parameters; R4B `history` with SubscriptionStatus): handshakes, heartbeats and status
//!   queries are answered 200 without acting; events are acted on with the resource the Bundle
//!   carries (full-resource), the focus read from the clinic's server (id-only), or a search of
//!   what changed (empty).
//!
//! Event numbers are remembered per subscription so a redelivered notification does not redo
//! work (the clinical layer is idempotent anyway); a gap (events the gateway never received)
//! triggers the same search as an empty ping, so nothing is lost.

use fhir_r4::{Bundle, Notification, NotificationKind, Reference, Resource};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ingest::{is_accepted, is_fhir_id};
use super::outcome::{from_fhir_error, Failure};
use super::service::{Done, Ingest};
use crate::clock::now_ms;

/// The marker "patient" under which a clinic's FHIR bookkeeping is kept.
pub const MARKER_OWNER: &str = "fhir";
/// The last search after a ping: kept for a month.
const MARKER_TTL_MS: i64 = 30 * 24 * 3_600_000;
/// First ping ever: look back this far.
const FIRST_LOOK_BACK_MS: i64 = 3_600_000;
/// Searches overlap the previous one by this much (clock skew between gateway and EMR).
const OVERLAP_MS: i64 = 120_000;
/// The types searched after a ping.
pub const SEARCHED_TYPES: [&str; 4] = [
    "Appointment",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
];

fn store_failure(e: crate::store::StoreError) -> Failure {
    tracing::error!(error = %e, "store error during a FHIR notification");
    Failure::unavailable("the gateway's store is unavailable; nothing was acted on")
}

/// The marker slot of a subscription's last event number (tests clear it to replay).
pub fn subscription_slot(subscription: &Reference) -> String {
    let key = subscription.reference.as_deref().unwrap_or("");
    format!("sub:{}", &hex::encode(Sha256::digest(key.as_bytes()))[..24])
}

/// What a notification led to, for the 200 answer.
#[derive(Debug, Default)]
pub struct Summary {
    pub acted: usize,
    pub nothing: usize,
    pub refused: Vec<String>,
    pub notes: Vec<String>,
}

impl Summary {
    fn add(&mut self, done: Done) {
        if done.acted {
            self.acted += 1;
        } else {
            self.nothing += 1;
        }
    }

    pub fn message(&self) -> String {
        let mut m = format!(
            "{} resource(s) acted on, {} with nothing to send",
            self.acted, self.nothing
        );
        if !self.refused.is_empty() {
            m.push_str(&format!(
                ", {} refused (first: {})",
                self.refused.len(),
                self.refused[0]
            ));
        }
        for n in &self.notes {
            m.push_str("; ");
            m.push_str(n);
        }
        m
    }
}

/// An empty ping (R4 rest-hook without payload, or a topic-based event with empty content):
/// searches the clinic's server for the types the gateway acts on, changed since the last
/// search, and acts on each. Resources that cannot be acted on (no patient phone) are skipped
/// and reported; trouble reaching the server or the store fails the ping so it is sent again
/// (the search window only moves forward after a complete pass).
pub async fn sweep(ingest: &Ingest<'_>, why: &str) -> Result<Summary, Failure> {
    let remote = ingest.remote_for("notification", why)?;
    let store = &ingest.clinical.store;
    let tenant = &ingest.clinic.id;
    let started = now_ms();
    let since_ms = store
        .marker(tenant, MARKER_OWNER, "ping-since")
        .await
        .map_err(store_failure)?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(started - FIRST_LOOK_BACK_MS);
    let since = chrono::DateTime::from_timestamp_millis(since_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut summary = Summary::default();
    for rt in SEARCHED_TYPES {
        let pages = remote.search_since(rt, &since).await.map_err(|e| {
            Failure::upstream(format!(
                "searching the clinic's FHIR server for {rt} changed since {since} failed: {e}"
            ))
        })?;
        for page in pages {
            let bundle: Bundle = Resource::from_value(page.clone())
                .and_then(|r| r.into_type())
                .map_err(|e| {
                    Failure::upstream(format!(
                        "the clinic's FHIR server answered the {rt} search with something that is not a Bundle: {e}"
                    ))
                })?;
            for (i, entry) in bundle.entry.iter().enumerate() {
                let Some(resource) = entry.resource.as_ref().filter(|r| r.resource_type() == rt)
                else {
                    continue;
                };
                let raw = page
                    .pointer(&format!("/entry/{i}/resource"))
                    .unwrap_or(&Value::Null);
                match ingest.ingest(resource, raw, Some(&bundle)).await {
                    Ok(done) => summary.add(done),
                    Err(f) if f.is_transient() => return Err(f),
                    Err(f) => {
                        let label = format!("{rt}/{}", resource.id().unwrap_or("?"));
                        tracing::warn!(tenant = %tenant, resource = %label, error = %f, "FHIR resource found after a ping was not acted on");
                        summary
                            .refused
                            .push(format!("{label}: {}", f.diagnostics()));
                    }
                }
            }
        }
    }
    let next = (started - OVERLAP_MS).to_string();
    store
        .set_marker(
            tenant,
            MARKER_OWNER,
            "ping-since",
            Some(&next),
            MARKER_TTL_MS,
        )
        .await
        .map_err(store_failure)?;
    Ok(summary)
}

/// A topic-based notification Bundle (any of the three styles).
pub async fn notification(
    ingest: &Ingest<'_>,
    raw: &Value,
    bundle: &Bundle,
) -> Result<Summary, Failure> {
    let n = Notification::from_bundle(bundle).map_err(|e| from_fhir_error(&e))?;
    let mut summary = Summary::default();
    let tenant = &ingest.clinic.id;
    let slot = subscription_slot(&n.subscription);
    let store = &ingest.clinical.store;
    let last_seen = store
        .marker(tenant, MARKER_OWNER, &slot)
        .await
        .map_err(store_failure)?
        .and_then(|v| v.parse::<u64>().ok());
    match n.kind {
        NotificationKind::Handshake => {
            summary.notes.push("handshake acknowledged".into());
            return Ok(summary);
        }
        NotificationKind::QueryStatus | NotificationKind::QueryEvent => {
            summary.notes.push("status answer acknowledged".into());
            return Ok(summary);
        }
        NotificationKind::Heartbeat => {
            summary.notes.push("heartbeat acknowledged".into());
            if let (Some(seen), Some(total)) = (last_seen, n.events_since_start) {
                if total > seen {
                    // Events happened that never reached the gateway: catch up by searching.
                    tracing::warn!(tenant = %tenant, missed = total - seen, "FHIR subscription heartbeat shows missed events; searching");
                    if let Ok(Some(_)) = &ingest.remote {
                        let s = sweep(ingest, "the heartbeat shows missed events").await?;
                        summary.acted += s.acted;
                        summary.nothing += s.nothing;
                        summary.refused.extend(s.refused);
                    }
                    remember(ingest, &slot, total).await?;
                }
            }
            return Ok(summary);
        }
        NotificationKind::Event => {}
    }
    let seen = last_seen.unwrap_or(0);
    let mut swept = false;
    if last_seen.is_some() {
        if let Some(gap) = n.gap(seen) {
            tracing::warn!(tenant = %tenant, first = gap.first, last = gap.last, "FHIR subscription events missing; searching");
            if matches!(&ingest.remote, Ok(Some(_))) {
                let s = sweep(ingest, "events are missing").await?;
                summary.acted += s.acted;
                summary.nothing += s.nothing;
                summary.refused.extend(s.refused);
                swept = true;
            }
        }
    }
    let mut events: Vec<_> = n.new_events(seen).collect();
    events.sort_by_key(|e| e.number);
    let mut highest = None;
    for event in events {
        let result = match &event.focus {
            None if swept => Ok(()),
            None => {
                let s = sweep(
                    ingest,
                    "the notification carries no resource ids (content empty), so the gateway must search for what changed",
                )
                .await?;
                summary.acted += s.acted;
                summary.nothing += s.nothing;
                summary.refused.extend(s.refused);
                swept = true;
                Ok(())
            }
            Some(focus) => focus_event(ingest, raw, bundle, focus, &mut summary).await,
        };
        if let Err(f) = result {
            if let Some(h) = highest {
                remember(ingest, &slot, h).await?;
            }
            return Err(f.note(&format!("event {}", event.number)));
        }
        highest = Some(event.number);
    }
    if let Some(h) = highest.or(n.events_since_start.filter(|t| *t > seen)) {
        remember(ingest, &slot, h).await?;
    }
    Ok(summary)
}

async fn remember(ingest: &Ingest<'_>, slot: &str, number: u64) -> Result<(), Failure> {
    ingest
        .clinical
        .store
        .set_marker(
            &ingest.clinic.id,
            MARKER_OWNER,
            slot,
            Some(&number.to_string()),
            MARKER_TTL_MS,
        )
        .await
        .map_err(store_failure)
}

/// One event with a focus: the resource in the Bundle, else read from the clinic's server.
async fn focus_event(
    ingest: &Ingest<'_>,
    raw: &Value,
    bundle: &Bundle,
    focus: &Reference,
    summary: &mut Summary,
) -> Result<(), Failure> {
    let text = focus.reference.as_deref().unwrap_or("").to_owned();
    if let Some(resource) = bundle.resolve(focus) {
        if !is_accepted(resource.resource_type()) {
            summary.notes.push(format!(
                "{text}: {} is not acted on",
                resource.resource_type()
            ));
            return Ok(());
        }
        let raw_resource = bundle
            .entry
            .iter()
            .position(|e| {
                e.resource
                    .as_ref()
                    .is_some_and(|r| std::ptr::eq(r, resource))
            })
            .and_then(|i| raw.pointer(&format!("/entry/{i}/resource")))
            .unwrap_or(&Value::Null);
        return match ingest.ingest(resource, raw_resource, Some(bundle)).await {
            Ok(done) => {
                summary.add(done);
                Ok(())
            }
            Err(f) => Err(f),
        };
    }
    let Some((rt, id)) = focus.type_and_id() else {
        return Err(Failure::invalid(
            format!("notification focus `{text}` is neither in the Bundle nor a Type/id reference"),
            "SubscriptionStatus.notificationEvent.focus",
        ));
    };
    if !is_accepted(rt) || rt == "Patient" {
        summary.notes.push(format!("{text}: {rt} is not acted on"));
        return Ok(());
    }
    if !is_fhir_id(id) {
        return Err(Failure::invalid(
            format!("notification focus `{text}` has an invalid id"),
            "SubscriptionStatus.notificationEvent.focus",
        ));
    }
    let remote = ingest.remote_for(
        "SubscriptionStatus.notificationEvent.focus",
        &format!("the notification names {rt}/{id} without the resource (content id-only)"),
    )?;
    let fetched = remote.read_raw(rt, id).await.map_err(|e| {
        if e.is_transient() {
            Failure::upstream(format!("reading {rt}/{id} from the clinic's FHIR server failed: {e}"))
        } else {
            Failure::invalid(
                format!("the notification names {rt}/{id}, which the clinic's FHIR server did not give: {e}"),
                "SubscriptionStatus.notificationEvent.focus",
            )
        }
    })?;
    let resource = Resource::from_value(fetched.value.clone()).map_err(|e| {
        from_fhir_error(&e).note(&format!("{rt}/{id} as read from the clinic's FHIR server"))
    })?;
    if resource.resource_type() != rt {
        return Err(Failure::upstream(format!(
            "the clinic's FHIR server answered {rt}/{id} with a {}",
            resource.resource_type()
        )));
    }
    let done = ingest.ingest(&resource, &fetched.value, None).await?;
    summary.add(done);
    Ok(())
}
