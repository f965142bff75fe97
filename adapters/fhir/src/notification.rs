//! Topic-based subscription notifications, normalised across the three wire styles:
//!
//! * R5: `Bundle.type = subscription-notification`, first entry SubscriptionStatus;
//! * R4 backport (subscriptions-backport IG): `Bundle.type = history`, first entry Parameters;
//! * R4B: `Bundle.type = history`, first entry SubscriptionStatus.

use crate::bundle::Bundle;
use crate::codes::{BundleType, NotificationType, SubscriptionState};
use crate::datatypes::{CodeableConcept, Reference};
use crate::error::FhirError;
use crate::primitives::Instant;
use crate::resource::{parse_resource, Resource};
use crate::resources::{Parameter, Parameters, SubscriptionStatus};

/// Which wire style the notification used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationStyle {
    /// R5 `subscription-notification` Bundle.
    R5,
    /// R4 backport: `history` Bundle with Parameters first.
    R4Backport,
    /// R4B: `history` Bundle with SubscriptionStatus first.
    R4B,
}

/// What the notification is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    /// Channel set-up; answer 2xx.
    Handshake,
    /// Nothing happened for a while; use `events_since_start` to detect gaps.
    Heartbeat,
    /// One or more events.
    Event,
    /// Answer to a `$status` query.
    QueryStatus,
    /// Answer to a `$events` query.
    QueryEvent,
}

impl From<NotificationType> for NotificationKind {
    fn from(t: NotificationType) -> Self {
        match t {
            NotificationType::Handshake => NotificationKind::Handshake,
            NotificationType::Heartbeat => NotificationKind::Heartbeat,
            NotificationType::EventNotification => NotificationKind::Event,
            NotificationType::QueryStatus => NotificationKind::QueryStatus,
            NotificationType::QueryEvent => NotificationKind::QueryEvent,
        }
    }
}

/// A normalised notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Wire style.
    pub style: NotificationStyle,
    /// Kind.
    pub kind: NotificationKind,
    /// Subscription status as reported.
    pub status: Option<SubscriptionState>,
    /// The Subscription.
    pub subscription: Reference,
    /// Topic canonical URL.
    pub topic: Option<String>,
    /// Events since the subscription started (inclusive of this notification).
    pub events_since_start: Option<u64>,
    /// Events carried.
    pub events: Vec<NotificationEvent>,
    /// Errors reported by the server.
    pub errors: Vec<CodeableConcept>,
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEvent {
    /// Sequential event number (dedupe key with the subscription).
    pub number: u64,
    /// When it happened.
    pub timestamp: Option<Instant>,
    /// The focus resource reference (absent for `empty` content).
    pub focus: Option<Reference>,
    /// The focus resource when the Bundle carries it (`full-resource` content).
    pub resource: Option<Resource>,
}

/// Event numbers that were never received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First missing event number.
    pub first: u64,
    /// Last missing event number (inclusive).
    pub last: u64,
}

impl Gap {
    /// How many events are missing.
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// Never true (a gap has at least one event); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parse a notification Bundle from JSON bytes.
pub fn parse_notification(bytes: &[u8]) -> Result<Notification, FhirError> {
    let bundle: Bundle = parse_resource(bytes)?.into_type()?;
    Notification::from_bundle(&bundle)
}

fn err(msg: impl Into<String>) -> FhirError {
    FhirError::Notification(msg.into())
}

impl Notification {
    /// Normalise a notification Bundle (any of the three styles).
    pub fn from_bundle(bundle: &Bundle) -> Result<Notification, FhirError> {
        let first = bundle
            .first_resource()
            .ok_or_else(|| err("Bundle.entry[0].resource is missing"))?;
        let mut n = match (bundle.type_, first) {
            (BundleType::SubscriptionNotification, Resource::SubscriptionStatus(s)) => {
                from_status(s, NotificationStyle::R5)
            }
            (BundleType::History, Resource::SubscriptionStatus(s)) => {
                from_status(s, NotificationStyle::R4B)
            }
            (BundleType::History, Resource::Parameters(p)) => from_parameters(p)?,
            (BundleType::SubscriptionNotification | BundleType::History, other) => {
                return Err(err(format!(
                    "Bundle.entry[0].resource is {}, expected SubscriptionStatus or Parameters",
                    other.resource_type()
                )))
            }
            (t, _) => {
                return Err(err(format!(
                    "Bundle.type is {t}, expected subscription-notification or history"
                )))
            }
        };
        if n.events.is_empty() && n.kind == NotificationKind::Event {
            synthesize_events(&mut n, bundle)?;
        }
        for e in &mut n.events {
            if let Some(f) = &e.focus {
                e.resource = bundle.resolve(f).cloned();
            }
        }
        Ok(n)
    }

    /// Events newer than `last_seen` (drop duplicates of a redelivery).
    pub fn new_events(&self, last_seen: u64) -> impl Iterator<Item = &NotificationEvent> {
        self.events.iter().filter(move |e| e.number > last_seen)
    }

    /// Highest event number this notification proves to exist.
    pub fn highest_event_number(&self) -> Option<u64> {
        self.events
            .iter()
            .map(|e| e.number)
            .chain(self.events_since_start)
            .max()
    }

    /// Missing events given the last event number processed: numbers after `last_seen`, up to the
    /// highest number this notification proves, that it does not carry. The first missing range
    /// is returned (query the server's `$events` for it).
    pub fn gap(&self, last_seen: u64) -> Option<Gap> {
        let high = self.highest_event_number()?;
        let mut n = last_seen.checked_add(1)?;
        while n <= high {
            if !self.events.iter().any(|e| e.number == n) {
                let first = n;
                let mut last = n;
                while last < high && !self.events.iter().any(|e| e.number == last + 1) {
                    last += 1;
                }
                return Some(Gap { first, last });
            }
            n += 1;
        }
        None
    }
}

fn from_status(s: &SubscriptionStatus, style: NotificationStyle) -> Notification {
    Notification {
        style,
        kind: s.type_.into(),
        status: s.status,
        subscription: s.subscription.clone(),
        topic: s.topic.clone(),
        events_since_start: s.events_since_subscription_start.map(|c| c.0),
        events: s
            .notification_event
            .iter()
            .map(|e| NotificationEvent {
                number: e.event_number.0,
                timestamp: e.timestamp.clone(),
                focus: e.focus.clone(),
                resource: None,
            })
            .collect(),
        errors: s.error.clone(),
    }
}

fn counter_of(p: &Parameter, path: &str) -> Result<Option<u64>, FhirError> {
    p.counter()
        .map_err(|m| err(format!("Parameters.{path}: {m}")))
}

fn from_parameters(p: &Parameters) -> Result<Notification, FhirError> {
    let subscription = p
        .get("subscription")
        .and_then(|x| x.value_reference.clone())
        .ok_or_else(|| err("Parameters.parameter[subscription].valueReference is missing"))?;
    let type_code = p
        .get("type")
        .and_then(Parameter::text)
        .ok_or_else(|| err("Parameters.parameter[type].valueCode is missing"))?;
    let kind = NotificationType::from_code(type_code)
        .ok_or_else(|| {
            err(format!(
                "Parameters.parameter[type].valueCode `{type_code}` is not a notification type"
            ))
        })?
        .into();
    let status = match p.get("status").and_then(Parameter::text) {
        None => None,
        Some(c) => Some(SubscriptionState::from_code(c).ok_or_else(|| {
            err(format!(
                "Parameters.parameter[status].valueCode `{c}` is not a subscription status"
            ))
        })?),
    };
    let events_since_start = match p.get("events-since-subscription-start") {
        Some(x) => counter_of(x, "parameter[events-since-subscription-start]")?,
        None => None,
    };
    let mut events = Vec::new();
    for (i, ev) in p.all("notification-event").enumerate() {
        let part = |name: &str| ev.part.iter().find(|x| x.name == name);
        let path = format!("parameter[notification-event][{i}].part[event-number]");
        let number = match part("event-number") {
            Some(x) => counter_of(x, &path)?,
            None => None,
        }
        .ok_or_else(|| err(format!("Parameters.{path} is missing")))?;
        events.push(NotificationEvent {
            number,
            timestamp: part("timestamp").and_then(|x| x.value_instant.clone()),
            focus: part("focus").and_then(|x| x.value_reference.clone()),
            resource: None,
        });
    }
    Ok(Notification {
        style: NotificationStyle::R4Backport,
        kind,
        status,
        subscription,
        topic: p.get("topic").and_then(Parameter::text).map(str::to_owned),
        events_since_start,
        events,
        errors: p
            .all("error")
            .filter_map(|x| x.value_codeable_concept.clone())
            .collect(),
    })
}

/// Older backport servers (STU1.0) list the focus resources as entries after the status without
/// `notification-event`; number them backwards from `events_since_start`.
fn synthesize_events(n: &mut Notification, bundle: &Bundle) -> Result<(), FhirError> {
    let focus: Vec<Reference> = bundle
        .entry
        .iter()
        .skip(1)
        .filter_map(|e| {
            e.full_url
                .clone()
                .or_else(|| {
                    e.resource
                        .as_ref()
                        .and_then(|r| r.id().map(|id| format!("{}/{id}", r.resource_type())))
                })
                .map(Reference::to)
        })
        .collect();
    if focus.is_empty() {
        return Ok(());
    }
    let total = n.events_since_start.ok_or_else(|| {
        err("event-notification without event numbers and without events-since-subscription-start")
    })?;
    let count = focus.len() as u64;
    let start = total
        .checked_sub(count - 1)
        .filter(|s| *s >= 1)
        .ok_or_else(|| {
            err(format!(
                "{count} events but events-since-subscription-start is {total}"
            ))
        })?;
    n.events = focus
        .into_iter()
        .zip(start..)
        .map(|(f, number)| NotificationEvent {
            number,
            timestamp: None,
            focus: Some(f),
            resource: None,
        })
        .collect();
    Ok(())
}
