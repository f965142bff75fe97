//! Appointment touchpoints end to end on real Redis + the sandbox: booking confirms, the reminder
//! arrives with 1-tap replies, a tap on Cancel cancels, reschedules make old reminders stale.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::wire::Content;

#[actix_rt::test]
async fn book_remind_and_cancel_with_one_tap() {
    let app = spawn_app("appointments_tap", Options::default()).await;
    let p = patient(11);
    // The 24 h reminder falls due three seconds from now.
    let book = json!({"external_id": "EMR-42", "patient": {"phone": p, "name": "Asha", "language": "en"},
        "doctor": "Dr. Rao", "start": at(DAY_MS + 3_000)});
    let (s, a) = app
        .call(Method::POST, "/v1/appointments", KEY_A, Some(book.clone()))
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    let confirmation = sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("no confirmation reached Meta"));
    let params = body_texts(&confirmation);
    assert_eq!(params[0], "Asha");
    assert_eq!(params[3], "Dr. Rao");
    assert_eq!(params[4], "clinic_a");
    // The EMR sends the booking again: same appointment, no second confirmation.
    let (s, again) = app
        .call(Method::POST, "/v1/appointments", KEY_A, Some(book))
        .await;
    assert_eq!((s, again["id"].as_str()), (200, Some(id.as_str())));

    let reminder = sent_template(&app, &p, "visit_reminder", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no reminder reached Meta"));
    let taps = payloads(&reminder);
    assert_eq!(taps.len(), 3, "Confirm / Cancel / Reschedule");
    let cancel = taps
        .iter()
        .find(|t| t.starts_with("CANCEL:"))
        .cloned()
        .unwrap_or_default();
    assert!(cancel.contains(&id));
    let confirmations = app.sim.sent().iter().filter(|r| matches!(&r.message.content, Content::Template { template } if template.name == "appointment_confirmation")).count();
    assert_eq!(confirmations, 1);

    // The patient taps Cancel.
    app.sim.inject_button_tap(
        NUMBER_A,
        p.trim_start_matches('+'),
        &reminder.wamid,
        "Cancel",
        &cancel,
    );
    let start = Instant::now();
    let mut now = Value::Null;
    while start.elapsed() < Duration::from_secs(10) {
        now = app.appointment(&id).await;
        if now["status"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (now["status"].as_str(), now["response"].as_str()),
        (Some("cancelled"), Some("cancelled")),
        "{now}"
    );
    assert_eq!(now["reminders"].as_array().map(Vec::len), Some(1), "{now}");
    // ... and is told, in a free-form reply inside the window the tap opened.
    let start = Instant::now();
    let mut acked = false;
    while start.elapsed() < Duration::from_secs(10) && !acked {
        acked = app.sim.sent().iter().any(|r| r.to == p.trim_start_matches('+')
            && matches!(&r.message.content, Content::Text { text } if text.body.contains("cancelled")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acked, "the patient got the cancellation confirmation");
    // A second tap changes nothing.
    app.sim.inject_button_tap(
        NUMBER_A,
        p.trim_start_matches('+'),
        &reminder.wamid,
        "Cancel",
        &cancel,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.appointment(&id).await["version"], now["version"]);
}

#[actix_rt::test]
async fn rescheduling_moves_reminders_and_old_taps_act_on_the_right_appointment() {
    let app = spawn_app("appointments_move", Options::default()).await;
    let p = patient(12);
    let book = json!({"patient": {"phone": p, "name": "Ravi"}, "doctor": "Dr. Sen", "start": at(DAY_MS + 2_000)});
    let (s, a) = app
        .call(Method::POST, "/v1/appointments", KEY_A, Some(book))
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    // Moved two days out before the first reminder fell due.
    let (s, moved) = app
        .call(
            Method::PATCH,
            &format!("/v1/appointments/{id}"),
            KEY_A,
            Some(json!({"start": at(2 * DAY_MS)})),
        )
        .await;
    assert_eq!((s, moved["version"].as_u64()), (200, Some(2)), "{moved}");
    assert!(
        sent_template(&app, &p, "appointment_rescheduled", Duration::from_secs(10))
            .await
            .is_some()
    );
    // The old reminder's time passes: nothing is sent for the old time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        sent_template(&app, &p, "visit_reminder", Duration::from_millis(100))
            .await
            .is_none(),
        "stale reminder was sent"
    );
    // Free text "Reschedule" refers to nothing yet asked (no reminder went out): no change.
    app.sim
        .inject_inbound_text(NUMBER_A, p.trim_start_matches('+'), "cancel");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.appointment(&id).await["status"], "booked");
    // The clinic cancels: the patient hears about it.
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/v1/appointments/{id}"),
            KEY_A,
            Some(json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("cancelled")), "{v}");
    // The patient wrote earlier today, so the window is open: the notice goes as free text
    // with the template's words (no charge), not as the template.
    let start = Instant::now();
    let mut told = false;
    while start.elapsed() < Duration::from_secs(10) && !told {
        told = app.sim.sent().iter().any(|r| {
            r.to == p.trim_start_matches('+')
                && matches!(&r.message.content, Content::Text { text } if text.body.contains("Ravi"))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(told, "the cancellation notice reached the patient");
    assert!(
        sent_template(&app, &p, "appointment_cancelled", Duration::from_millis(10))
            .await
            .is_none(),
        "a paid template inside the open window"
    );
    let (s, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/appointments/{id}"),
            KEY_A,
            Some(json!({"start": at(3 * DAY_MS)})),
        )
        .await;
    assert_eq!(s, 409, "a cancelled appointment cannot move");
    // Another clinic cannot see it.
    assert_eq!(
        app.call(Method::GET, &format!("/v1/appointments/{id}"), KEY_B, None)
            .await
            .0,
        404
    );
}

#[actix_rt::test]
async fn bad_bookings_are_refused_naming_the_field() {
    let app = spawn_app("appointments_bad", Options::default()).await;
    for (body, field) in [
        (
            json!({"patient": {"phone": "12"}, "start": at(DAY_MS)}),
            "patient.phone",
        ),
        (
            json!({"patient": {"phone": PATIENT}, "start": at(-DAY_MS)}),
            "start",
        ),
        (json!({"patient": {"phone": PATIENT}}), "start"),
        (
            json!({"patient": {"phone": PATIENT}, "start": at(DAY_MS), "location": 3}),
            "location",
        ),
    ] {
        let (s, v) = app
            .call(Method::POST, "/v1/appointments", KEY_A, Some(body))
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{v}");
    }
}
