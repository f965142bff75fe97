//! Subscription notifications: the five official R5 examples, and R4 backport / R4B variants.

mod common;

use common::fixture;
use fhir_r4::*;
use serde_json::{json, Value};

fn notification(name: &str) -> Notification {
    parse_notification(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const SUB: &str = "http://example.org/FHIR/R5/Subscription/123";
const TOPIC: &str = "http://example.org/FHIR/R5/SubscriptionTopic/admission";

#[test]
fn r5_handshake() {
    let n = notification("r5-notification-handshake.json");
    assert_eq!(n.style, NotificationStyle::R5);
    assert_eq!(n.kind, NotificationKind::Handshake);
    assert_eq!(n.status, Some(SubscriptionState::Requested));
    assert_eq!(n.subscription.reference.as_deref(), Some(SUB));
    assert_eq!(n.topic.as_deref(), Some(TOPIC));
    assert_eq!(n.events_since_start, Some(0));
    assert!(n.events.is_empty());
    assert_eq!(n.gap(0), None);
}

#[test]
fn r5_heartbeat() {
    let n = notification("r5-notification-heartbeat.json");
    assert_eq!(n.kind, NotificationKind::Heartbeat);
    assert_eq!(n.status, Some(SubscriptionState::Active));
    assert_eq!(n.events_since_start, Some(310));
    assert!(n.events.is_empty());
    assert_eq!(n.gap(310), None);
    assert_eq!(
        n.gap(305),
        Some(Gap {
            first: 306,
            last: 310
        })
    );
    assert_eq!(n.gap(305).map(|g| g.len()), Some(5));
}

#[test]
fn r5_empty() {
    let n = notification("r5-notification-empty.json");
    assert_eq!(n.kind, NotificationKind::Event);
    assert_eq!(n.topic, None);
    assert_eq!(n.events_since_start, Some(2));
    assert_eq!(n.events.len(), 1);
    let e = &n.events[0];
    assert_eq!(e.number, 2);
    assert_eq!(
        e.timestamp.as_ref().map(|t| t.value().to_rfc3339()),
        Some("2020-04-17T10:20:00-05:00".to_owned())
    );
    assert!(e.focus.is_none());
    assert!(e.resource.is_none());
    assert_eq!(n.gap(1), None);
    assert_eq!(n.gap(0), Some(Gap { first: 1, last: 1 }));
    assert_eq!(n.new_events(2).count(), 0);
    assert_eq!(n.new_events(1).count(), 1);
}

#[test]
fn r5_id_only() {
    let n = notification("r5-notification-id-only.json");
    assert_eq!(n.kind, NotificationKind::Event);
    assert_eq!(n.events.len(), 1);
    let e = &n.events[0];
    assert_eq!(e.number, 2);
    assert_eq!(
        e.focus.as_ref().and_then(|f| f.reference.as_deref()),
        Some("http://example.org/FHIR/R5/Encounter/2")
    );
    assert_eq!(
        e.focus.as_ref().and_then(Reference::type_and_id),
        Some(("Encounter", "2"))
    );
    assert!(e.resource.is_none(), "id-only carries no resource");
}

#[test]
fn r5_full_resource() {
    let n = notification("r5-notification-full-resource.json");
    assert_eq!(n.kind, NotificationKind::Event);
    let e = &n.events[0];
    assert_eq!(e.number, 2);
    let enc: &Encounter = e
        .resource
        .as_ref()
        .and_then(Resource::as_type)
        .expect("Encounter");
    assert_eq!(enc.id.as_deref(), Some("2"));
    assert_eq!(enc.status, EncounterStatus::InProgress);
    // R5 class (CodeableConcept[]) read as its first coding.
    assert_eq!(
        enc.class.as_ref().and_then(|c| c.code.as_deref()),
        Some("VR")
    );
    assert_eq!(
        enc.subject.as_ref().unwrap().reference.as_deref(),
        Some("Patient/ABC")
    );
    assert_eq!(enc.meta.as_ref().unwrap().version_id.as_deref(), Some("1"));
}

fn backport(kind: &str, events: Value, extra: Vec<Value>, total: Value) -> Value {
    let mut params = vec![
        json!({"name": "subscription", "valueReference": {"reference": "https://emr.example/fhir/Subscription/s1"}}),
        json!({"name": "topic", "valueCanonical": "http://hl7.org/SubscriptionTopic/admission"}),
        json!({"name": "status", "valueCode": "active"}),
        json!({"name": "type", "valueCode": kind}),
        total,
    ];
    if let Value::Array(evs) = events {
        params.extend(evs);
    }
    let mut entries = vec![json!({
        "fullUrl": "urn:uuid:b21e4fae-ce73-45cb-8e37-1e203362b2ae",
        "resource": {"resourceType": "Parameters", "id": "b21e4fae-ce73-45cb-8e37-1e203362b2ae", "parameter": params},
        "request": {"method": "GET", "url": "https://emr.example/fhir/Subscription/s1/$status"},
        "response": {"status": "200"}
    })];
    entries.extend(extra);
    json!({"resourceType": "Bundle", "id": "n1", "type": "history",
           "timestamp": "2024-05-29T11:44:13.1882432+05:30", "entry": entries})
}

fn appointment_entry() -> Value {
    json!({
        "fullUrl": "https://emr.example/fhir/Appointment/a1",
        "resource": {"resourceType": "Appointment", "id": "a1", "status": "booked",
                     "start": "2024-06-01T10:30:00+05:30", "end": "2024-06-01T10:45:00+05:30",
                     "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]},
        "request": {"method": "PUT", "url": "Appointment/a1"},
        "response": {"status": "200"}
    })
}

#[test]
fn r4_backport_full_resource() {
    let b = backport(
        "event-notification",
        json!([
            {"name": "notification-event", "part": [
                {"name": "event-number", "valueString": "7"},
                {"name": "timestamp", "valueInstant": "2024-05-29T11:44:00+05:30"},
                {"name": "focus", "valueReference": {"reference": "https://emr.example/fhir/Appointment/a1"}}
            ]},
            {"name": "notification-event", "part": [
                {"name": "event-number", "valueUnsignedInt": 9},
                {"name": "focus", "valueReference": {"reference": "Appointment/a1"}}
            ]}
        ]),
        vec![appointment_entry()],
        json!({"name": "events-since-subscription-start", "valueUnsignedInt": 9}),
    );
    let n = parse_notification(&serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(n.style, NotificationStyle::R4Backport);
    assert_eq!(n.kind, NotificationKind::Event);
    assert_eq!(n.status, Some(SubscriptionState::Active));
    assert_eq!(
        n.topic.as_deref(),
        Some("http://hl7.org/SubscriptionTopic/admission")
    );
    assert_eq!(n.events_since_start, Some(9));
    let numbers: Vec<u64> = n.events.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [7, 9]);
    for e in &n.events {
        let a: &Appointment = e.resource.as_ref().and_then(Resource::as_type).unwrap();
        assert_eq!(a.status, AppointmentStatus::Booked);
    }
    assert_eq!(n.gap(6), Some(Gap { first: 8, last: 8 }));
    assert_eq!(n.gap(4), Some(Gap { first: 5, last: 6 }));
    assert_eq!(n.gap(9), None);
    assert_eq!(n.new_events(7).map(|e| e.number).collect::<Vec<_>>(), [9]);
}

#[test]
fn r4_backport_handshake_and_legacy_events() {
    let b = backport(
        "handshake",
        json!([]),
        vec![],
        json!({"name": "events-since-subscription-start", "valueString": "0"}),
    );
    let n = parse_notification(&serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(n.kind, NotificationKind::Handshake);
    assert_eq!(n.events_since_start, Some(0));

    // STU1.0 style: no notification-event, focus entries follow the status.
    let b = backport(
        "event-notification",
        json!([]),
        vec![appointment_entry()],
        json!({"name": "events-since-subscription-start", "valueUnsignedInt": 310}),
    );
    let n = parse_notification(&serde_json::to_vec(&b).unwrap()).unwrap();
    assert_eq!(n.events.len(), 1);
    assert_eq!(n.events[0].number, 310);
    assert!(n.events[0].resource.is_some());

    // Bad type code: an error naming the parameter.
    let b = backport(
        "ping",
        json!([]),
        vec![],
        json!({"name": "x", "valueString": "y"}),
    );
    let err = parse_notification(&serde_json::to_vec(&b).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("parameter[type]"), "{err}");
    // Bad event number.
    let b = backport(
        "event-notification",
        json!([{"name": "notification-event", "part": [{"name": "event-number", "valueString": "seven"}]}]),
        vec![],
        json!({"name": "x", "valueString": "y"}),
    );
    let err = parse_notification(&serde_json::to_vec(&b).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("event-number"), "{err}");
}

#[test]
fn r4b_history_with_subscription_status() {
    let mut v: Value =
        serde_json::from_slice(&fixture("r5-notification-full-resource.json")).unwrap();
    v["type"] = json!("history");
    let n = parse_notification(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(n.style, NotificationStyle::R4B);
    assert_eq!(n.kind, NotificationKind::Event);
    assert_eq!(n.events[0].number, 2);
    assert!(n.events[0].resource.is_some());
}

#[test]
fn not_a_notification() {
    let err = parse_notification(&fixture("bundle-transaction.json")).unwrap_err();
    assert!(
        err.to_string().contains("Bundle.type is transaction"),
        "{err}"
    );
    let err = parse_notification(&fixture("patient-example.json")).unwrap_err();
    assert!(matches!(err, FhirError::WrongResourceType { .. }));
    let mut v: Value = serde_json::from_slice(&fixture("r5-notification-heartbeat.json")).unwrap();
    v["entry"][0]["resource"]["type"] = json!("ping");
    let err = parse_notification(&serde_json::to_vec(&v).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("SubscriptionStatus.type"), "{err}");
}
