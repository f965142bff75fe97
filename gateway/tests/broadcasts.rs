//! Broadcasts end to end on real Redis + the sandbox: filters pick exactly the right patients,
//! dry runs match runs, consent, STOP and "not on WhatsApp" are honoured, cancelling stops sending and refunds, a
//! lab report overtakes a running broadcast, and the tier is never exceeded.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::SentRecord;
use whatsapp_cloud::wire::{Content, TemplateCategory, TemplateStatus};

fn broadcast_sends(app: &TestApp, template: &str) -> Vec<SentRecord> {
    app.sim
        .sent()
        .into_iter()
        .filter(|r| matches!(&r.message.content, Content::Template { template: t } if t.name == template))
        .collect()
}

/// The answer to `request` sent as a dry run (asserted 200).
async fn dry_run(app: &TestApp, request: &Value) -> Value {
    let mut dry = request.clone();
    dry["dry_run"] = json!(true);
    let (s, d) = app
        .call(Method::POST, "/v1/broadcasts", KEY_A, Some(dry))
        .await;
    assert_eq!(s, 200, "{d}");
    d
}

/// The broadcast's sends once at least `n` reached the sandbox within `within`, and half a
/// second more passed, so that a send to someone who should not get one would be there too.
async fn settled_sends(
    app: &TestApp,
    template: &str,
    n: usize,
    within: Duration,
) -> Vec<SentRecord> {
    assert!(
        eventually(within, || broadcast_sends(app, template).len() >= n).await,
        "fewer than {n} {template} sends within {within:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    broadcast_sends(app, template)
}

/// Adds the drive templates to clinic A's WABA and syncs the gateway's catalog.
async fn drive_templates(app: &TestApp) {
    app.sim.add_template(
        WABA_A,
        "flu_drive",
        "en",
        TemplateCategory::Marketing,
        "Hi {{1}}, flu shots are free at the clinic on {{2}}.",
        TemplateStatus::Approved,
    );
    app.sim.add_template(
        WABA_A,
        "flu_drive",
        "hi",
        TemplateCategory::Marketing,
        "नमस्ते {{1}}, {{2}} को क्लिनिक में फ्लू का टीका मुफ़्त है।",
        TemplateStatus::Approved,
    );
    app.sim.add_template(
        WABA_A,
        "review_due",
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}, your diabetes review is due. Reply to book.",
        TemplateStatus::Approved,
    );
    let (s, v) = app
        .call(Method::POST, "/v1/templates/sync", KEY_A, None)
        .await;
    assert!(s < 300, "{s} {v}");
}

async fn put_patient(app: &TestApp, id: &str, body: Value) {
    let (s, v) = app
        .call(
            Method::PUT,
            &format!("/v1/patients/{id}"),
            KEY_A,
            Some(body),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {v}");
}

fn born(years_ago: i64) -> String {
    (chrono::Utc::now().date_naive() - chrono::Duration::days(years_ago * 366)).to_string()
}

#[actix_rt::test]
async fn filters_pick_exactly_the_right_patients_and_the_dry_run_matches_the_run() {
    let app = spawn_app("brd_filter", Options::default()).await;
    drive_templates(&app).await;
    let promo = json!({"promotional": true});
    // Who should get the flu drive: diabetic, 40–70, promotional consent.
    let cases = [
        (
            "P1",
            patient(101),
            json!(["diabetic"]),
            born(50),
            true,
            "en",
        ),
        (
            "P2",
            patient(102),
            json!(["diabetic", "antenatal"]),
            born(65),
            true,
            "hi",
        ),
        (
            "P3",
            patient(103),
            json!(["diabetic"]),
            born(30),
            true,
            "en",
        ), // too young
        ("P4", patient(104), json!(["asthma"]), born(50), true, "en"), // not diabetic
        (
            "P5",
            patient(105),
            json!(["diabetic"]),
            born(55),
            false,
            "en",
        ), // no consent
        (
            "P6",
            patient(106),
            json!(["diabetic"]),
            born(45),
            true,
            "en",
        ), // sends STOP
    ];
    for (id, phone, tags, dob, consent, lang) in &cases {
        let mut body = json!({"phone": phone, "name": format!("Patient {id}"), "language": lang, "tags": tags, "birth_date": dob});
        if *consent {
            body["consent"] = promo.clone();
        }
        put_patient(&app, id, body).await;
    }
    app.sim
        .inject_inbound_text(NUMBER_A, digits(&cases[5].1), "STOP");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let request = json!({"name": "Flu drive", "template": {"name": "flu_drive", "language": "en"},
        "parameters": [{"field": "first_name"}, {"value": "Saturday"}],
        "filter": {"tags_all": ["diabetic"], "age_min": 40, "age_max": 70}});
    let d = dry_run(&app, &request).await;
    let e = &d["estimate"];
    assert_eq!(e["recipients"], 2, "{d}");
    assert_eq!(
        (
            e["skipped"]["no_consent"].as_u64(),
            e["skipped"]["opted_out"].as_u64()
        ),
        (Some(1), Some(1)),
        "{d}"
    );
    assert_eq!(e["category"], "MARKETING");
    assert!(e["estimated_cost"].as_i64().is_some_and(|c| c > 0), "{d}");
    assert!(app.sim.sent().iter().all(|r| !matches!(&r.message.content, Content::Template { template } if template.name == "flu_drive")), "a dry run sends nothing");

    let (s, created) = app
        .call(Method::POST, "/v1/broadcasts", KEY_A, Some(request))
        .await;
    assert_eq!(s, 202, "{created}");
    let id = created["broadcast"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sent = settled_sends(&app, "flu_drive", 2, Duration::from_secs(15)).await;
    let mut to: Vec<String> = sent.iter().map(|r| r.to.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        vec![digits(&cases[0].1), digits(&cases[1].1)],
        "exactly the diabetic 40–70 with consent"
    );
    let hindi =
        sent.iter()
            .find(|r| r.to == digits(&cases[1].1))
            .map(|r| match &r.message.content {
                Content::Template { template } => template.language.code.clone(),
                _ => String::new(),
            });
    assert_eq!(
        hindi.as_deref(),
        Some("hi"),
        "the patient's language when the template has it"
    );
    let mut progress = Value::Null;
    for _ in 0..100 {
        progress = app
            .call(Method::GET, &format!("/v1/broadcasts/{id}"), KEY_A, None)
            .await
            .1;
        if progress["status"] == "queued"
            && progress["progress"]["states"]["delivered"]
                .as_u64()
                .unwrap_or(0)
                + progress["progress"]["states"]["read"].as_u64().unwrap_or(0)
                == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (progress["recipients"].as_u64(), progress["queued"].as_u64()),
        (Some(2), Some(2)),
        "{progress}"
    );
    assert_eq!(
        progress["skipped"], d["estimate"]["skipped"],
        "the run skipped what the dry run said"
    );
    // Another clinic cannot see it.
    assert_eq!(
        app.call(Method::GET, &format!("/v1/broadcasts/{id}"), KEY_B, None)
            .await
            .0,
        404
    );
}

#[actix_rt::test]
async fn cancel_mid_flight_stops_sending_and_a_lab_report_overtakes_the_broadcast() {
    let app = spawn_app(
        "brd_cancel",
        Options {
            tier_mps: 20,
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    drive_templates(&app).await;
    let recipients: Vec<Value> = (0..200)
        .map(|i| json!({"phone": patient(200 + i), "name": format!("P{i}")}))
        .collect();
    let (s, created) = app
        .call(
            Method::POST,
            "/v1/broadcasts",
            KEY_A,
            Some(json!({"template": {"name": "review_due", "language": "en"}, "parameters": [{"field": "name"}], "recipients": recipients})),
        )
        .await;
    assert_eq!(s, 202, "{created}");
    let id = created["broadcast"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(created["estimate"]["recipients"], 200);
    assert!(
        eventually(Duration::from_secs(10), || broadcast_sends(
            &app,
            "review_due"
        )
        .len()
            >= 10)
        .await
    );
    // A lab report in the middle of it reaches the patient within a second.
    let lab_patient = patient(999);
    let started = Instant::now();
    let pdf = base64::engine::general_purpose::STANDARD
        .encode(clinic_gateway::pdf::sample("HbA1c 6.9 %", 0));
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/lab-reports",
            KEY_A,
            Some(json!({"patient": {"phone": lab_patient}, "title": "HbA1c", "pdf_base64": pdf})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        eventually(Duration::from_secs(1), || app
            .sim
            .sent()
            .iter()
            .any(|r| r.to == digits(&lab_patient)))
        .await,
        "the lab report waited behind the broadcast"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (s, c) = app
        .call(
            Method::POST,
            &format!("/v1/broadcasts/{id}/cancel"),
            KEY_A,
            None,
        )
        .await;
    assert_eq!((s, c["status"].as_str()), (200, Some("cancelled")), "{c}");
    // Within a second the dispatcher stops; nothing more goes after that.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let at_cancel = broadcast_sends(&app, "review_due").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = broadcast_sends(&app, "review_due").len();
    assert_eq!(at_cancel, later, "sends continued after cancelling");
    assert!(
        later < 200,
        "everything was sent before the cancel took effect"
    );
    let all = app.sim.sent();
    assert!(
        max_per_second(&all) <= 20,
        "tier exceeded: {}",
        max_per_second(&all)
    );
    let mut v = Value::Null;
    for _ in 0..100 {
        v = app
            .call(Method::GET, &format!("/v1/broadcasts/{id}"), KEY_A, None)
            .await
            .1;
        if v["progress"]["states"]["expired"].as_u64().unwrap_or(0) + later as u64 >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let states = &v["progress"]["states"];
    assert_eq!(
        states["expired"].as_u64().unwrap_or(0) + later as u64,
        200,
        "every unsent message ended as cancelled: {v}"
    );
    // Their holds went back to the wallet: nothing stays reserved.
    let (_, w) = app.call(Method::GET, "/v1/wallet", KEY_A, None).await;
    let reserved = w["reserved"].as_i64().unwrap_or(-1);
    assert!(reserved >= 0, "{w}");
    let still_sending =
        states["queued"].as_u64().unwrap_or(0) + states["sending"].as_u64().unwrap_or(0);
    assert_eq!(still_sending, 0, "{v}");
}

#[actix_rt::test]
async fn bad_broadcasts_are_refused_naming_the_field() {
    let app = spawn_app("brd_bad", Options::default()).await;
    drive_templates(&app).await;
    for (body, field) in [
        (
            json!({"template": {"name": "review_due", "language": "en"}}),
            "filter",
        ),
        (
            json!({"template": {"name": "review_due", "language": "en"}, "recipients": []}),
            "recipients",
        ),
        (
            json!({"template": {"name": "nope", "language": "en"}, "recipients": [{"phone": PATIENT}]}),
            "template",
        ),
        (
            json!({"template": {"name": "review_due", "language": "en"}, "recipients": [{"phone": PATIENT}], "number": "999"}),
            "number",
        ),
    ] {
        let (s, v) = app
            .call(Method::POST, "/v1/broadcasts", KEY_A, Some(body))
            .await;
        assert_eq!((s, v["field"].as_str()), (422, Some(field)), "{v}");
    }
}

/// A number Meta called "not on WhatsApp" is skipped with its reason, and the estimate counts
/// only patients outside their window against the messaging limit (one patient has just
/// written in). The run sends to exactly the others.
#[actix_rt::test]
async fn numbers_not_on_whatsapp_are_skipped_and_open_windows_are_not_counted() {
    let app = spawn_app("brd_nowa", Options::default()).await;
    drive_templates(&app).await;
    let gone = patient(301);
    let (_, v) = app.send_to_number_not_on_whatsapp(&gone).await;
    assert_eq!(v["error"]["code"], 131026, "{v}");
    let (closed, open) = (patient(302), patient(303));
    app.sim
        .inject_inbound_text(NUMBER_A, digits(&open), "hello");
    // The message reached the clinic's inbox, so the patient's window is open.
    let arrived = eventually_async(Duration::from_secs(10), || async {
        let (_, inbox) = app.call(Method::GET, "/v1/inbox", KEY_A, None).await;
        inbox["messages"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert!(arrived, "the patient's message reached the inbox");

    let request = json!({"template": {"name": "review_due", "language": "en"},
        "parameters": [{"field": "name"}],
        "recipients": [{"phone": gone, "name": "Gone"}, {"phone": closed, "name": "Closed"},
                       {"phone": open, "name": "Open"}]});
    let d = dry_run(&app, &request).await;
    let e = &d["estimate"];
    assert_eq!(e["recipients"], 2, "{d}");
    assert_eq!(e["skipped"]["not_on_whatsapp"], 1, "{d}");
    assert_eq!(
        e["messaging_limit_needed"], 1,
        "only the closed window counts: {d}"
    );

    let (s, created) = app
        .call(Method::POST, "/v1/broadcasts", KEY_A, Some(request))
        .await;
    assert_eq!(s, 202, "{created}");
    let mut to: Vec<String> = settled_sends(&app, "review_due", 2, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|r| r.to)
        .collect();
    to.sort();
    let mut want = vec![digits(&closed).to_owned(), digits(&open).to_owned()];
    want.sort();
    assert_eq!(to, want);
}
