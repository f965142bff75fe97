//! Clinical touchpoints end to end on real Redis + the sandbox, driven through the REST API and
//! the sandbox's inbound injection: documents, visits with follow-up and feedback, STOP/START,
//! the inbox, clarifying questions, quiet hours, session forms and the no-show view.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::wire::Content;

fn text_to(app: &TestApp, to: &str, needle: &str) -> bool {
    app.sim.sent().iter().any(|r| {
        r.to == digits(to)
            && matches!(&r.message.content, Content::Text { text } if text.body.contains(needle))
    })
}

async fn configure(app: &TestApp, patch: Value) {
    let (s, v) = app
        .call(
            Method::PATCH,
            "/admin/v1/clinics/clinic_a",
            ADMIN_KEY,
            Some(patch),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The directory picks the change up on its next refresh.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
}

fn events(captured: &Captured, kind: &str) -> Vec<Value> {
    captured
        .lock()
        .iter()
        .filter_map(|(_, body)| serde_json::from_slice::<Value>(body).ok())
        .filter(|e| e["type"] == kind)
        .collect()
}

async fn post_lab_report(app: &TestApp, body: &Value) -> (u16, Value) {
    app.call(Method::POST, "/v1/lab-reports", KEY_A, Some(body.clone()))
        .await
}

#[actix_rt::test]
async fn prescriptions_and_lab_reports_arrive_as_documents_once_and_corrections_again() {
    let app = spawn_app(
        "touch_documents",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let p = patient(31);
    // A prescription as multipart: metadata + file.
    let pdf = clinic_gateway::pdf::sample("Rx: Paracetamol 500 mg", 5_000);
    let form = reqwest::multipart::Form::new()
        .text(
            "metadata",
            json!({"external_id": "RX-1", "patient": {"phone": p, "name": "Meena", "language": "ta"}, "doctor": "Dr. Iyer"}).to_string(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(pdf.clone())
                .file_name("rx.pdf")
                .mime_str("application/pdf")
                .unwrap_or_else(|e| panic!("{e}")),
        );
    let resp = app
        .http
        .post(format!("{}/v1/prescriptions", app.base))
        .bearer_auth(KEY_A)
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    let doc: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{doc}");
    let rx = sent_template(&app, &p, "prescription_ready", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no prescription reached Meta"));
    let Content::Template { template } = &rx.message.content else {
        panic!("template")
    };
    assert_eq!(template.language.code, "ta");
    assert_eq!(body_texts(&rx), vec!["Meena", "Dr. Iyer", "clinic_a"]);
    let media = header_document(&rx).unwrap_or_else(|| panic!("no document header"));
    assert_eq!(Some(media.as_str()), doc["media_id"].as_str());
    let (mime, uploaded) = app
        .sim
        .media(&media)
        .unwrap_or_else(|| panic!("media {media} not uploaded to Meta"));
    assert_eq!(
        (mime.as_str(), uploaded.as_ref()),
        ("application/pdf", pdf.as_slice())
    );

    // A lab report as JSON + base64 (line-wrapped, as EMRs do).
    let report = clinic_gateway::pdf::sample("CBC: Hb 13.2 g/dL", 200_000);
    let wrapped: String = b64(&report)
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let body = json!({"external_id": "LAB-7", "patient": {"phone": p, "name": "Meena"}, "title": "Complete blood count", "pdf_base64": wrapped});
    let started = Instant::now();
    let (s, first) = post_lab_report(&app, &body).await;
    assert_eq!(s, 201, "{first}");
    let lab = sent_template(&app, &p, "lab_report_ready", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no lab report reached Meta"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(body_texts(&lab)[1], "Complete blood count");
    assert_eq!(first["revision"], 1);
    // Sent again (a retry): nothing new.
    let (s, again) = post_lab_report(&app, &body).await;
    assert_eq!((s, &again["id"]), (200, &first["id"]), "{again}");
    // Corrected by the lab: different bytes under the same id go again, as corrected.
    let corrected = clinic_gateway::pdf::sample("CBC: Hb 12.9 g/dL (corrected)", 200_000);
    let (s, fixed) = post_lab_report(
        &app,
        &json!({"external_id": "LAB-7", "patient": {"phone": p, "name": "Meena"}, "title": "Complete blood count", "pdf_base64": b64(&corrected)}),
    )
    .await;
    assert_eq!((s, fixed["revision"].as_u64()), (201, Some(2)), "{fixed}");
    let c = sent_template(&app, &p, "lab_report_corrected", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no corrected report"));
    assert_ne!(header_document(&c), header_document(&lab));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(templates_to(&app, &p, "lab_report_ready").len(), 1);
    assert_eq!(templates_to(&app, &p, "lab_report_corrected").len(), 1);

    // Not a PDF, a truncated one, a missing file: 422 naming the field.
    for (bytes, why) in [
        (b"<html>Internal error</html>".to_vec(), "not a PDF"),
        (report[..report.len() / 2].to_vec(), "%%EOF"),
    ] {
        let (s, v) = post_lab_report(
            &app,
            &json!({"patient": {"phone": p}, "pdf_base64": b64(&bytes)}),
        )
        .await;
        assert_eq!((s, v["field"].as_str()), (422, Some("pdf")), "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| d.contains(why)), "{v}");
    }
    let (s, v) = post_lab_report(&app, &json!({"patient": {"phone": p}})).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("pdf_base64")), "{v}");
    let (s, v) = post_lab_report(
        &app,
        &json!({"patient": {"phone": p}, "pdf_base64": "%%%not base64"}),
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("pdf_base64")), "{v}");
}

#[actix_rt::test]
async fn oversized_pdfs_are_refused_before_they_are_read_whole() {
    let app = spawn_app(
        "touch_big_pdf",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    // 16 MiB is the default limit; 17 MiB of PDF is 22+ MiB of base64.
    let big = clinic_gateway::pdf::sample("big", 17 * 1024 * 1024);
    let (s, v) = post_lab_report(
        &app,
        &json!({"patient": {"phone": patient(32)}, "pdf_base64": b64(&big)}),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(
        v["type"].as_str().map(|t| t.ends_with("body-too-large")),
        Some(true),
        "{v}"
    );
}

#[actix_rt::test]
async fn a_visit_brings_a_follow_up_and_a_feedback_request_whose_rating_and_comment_are_recorded() {
    let app = spawn_app(
        "touch_visits",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let (url, captured) = callback_receiver();
    configure(
        &app,
        json!({"callback": {"url": url, "secret": "callback-secret-0123456789"},
               // Three days less a minute: the request was due a minute ago, the follow-up
               // comes in two seconds.
               "feedback_delay_minutes": 3 * 1440 - 1,
               "follow_up": {"default_days": 7, "by_visit_type": {"surgery": 3}}}),
    )
    .await;
    let p = patient(33);
    // A surgery follow-up is due 3 days after; this one finished 3 days ago (less 2 s).
    let (s, visit) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_A,
            Some(json!({"external_id": "ENC-1", "patient": {"phone": p, "name": "Kiran", "language": "kn"},
                "visit_type": "Surgery", "doctor": "Dr. Shah", "completed_at": at(-3 * DAY_MS + 2_000)})),
        )
        .await;
    assert_eq!(s, 201, "{visit}");
    let vid = visit["id"].as_str().unwrap_or_default().to_owned();
    // Feedback first (delay 0), then the follow-up two seconds later.
    let feedback = sent_template(&app, &p, "feedback_request", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no feedback request"));
    let taps = payloads(&feedback);
    assert_eq!(taps.len(), 5, "{taps:?}");
    assert!(taps[0].ends_with(":5") && taps[4].ends_with(":1"));
    let follow = sent_template(&app, &p, "visit_follow_up", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no follow-up"));
    assert_eq!(body_texts(&follow), vec!["Kiran", "Dr. Shah", "clinic_a"]);
    // The EMR reports the visit again: nothing new is scheduled.
    let (s, again) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_A,
            Some(json!({"external_id": "ENC-1", "patient": {"phone": p}, "visit_type": "Surgery"})),
        )
        .await;
    assert_eq!((s, again["id"].as_str()), (200, Some(vid.as_str())));

    // The patient taps "4 - Good", then writes a comment.
    app.sim
        .inject_button_tap(NUMBER_A, digits(&p), &feedback.wamid, "4", &taps[1]);
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "Thank you for your rating"
        ))
        .await
    );
    app.sim
        .inject_inbound_text(NUMBER_A, digits(&p), "The nurse was very kind");
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "passed your comment"
        ))
        .await
    );
    let (s, list) = app.call(Method::GET, "/v1/feedback", KEY_A, None).await;
    assert_eq!(s, 200);
    let items = list["feedback"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        (
            items[0]["visit"].as_str(),
            items[0]["rating"].as_u64(),
            items[0]["comment"].as_str()
        ),
        (Some(vid.as_str()), Some(4), Some("The nurse was very kind"))
    );
    assert_eq!(list["average_rating"], 4.0);
    assert!(
        eventually(Duration::from_secs(5), || events(
            &captured,
            "feedback.received"
        )
        .len()
            == 2)
        .await
    );
    // The rating was the patient's answer, not a message for the inbox.
    let (_, inbox) = app.call(Method::GET, "/v1/inbox", KEY_A, None).await;
    assert_eq!(
        inbox["messages"].as_array().map(Vec::len),
        Some(0),
        "{inbox}"
    );
    // Another clinic sees none of it.
    let (_, other) = app.call(Method::GET, "/v1/feedback", KEY_B, None).await;
    assert_eq!(other["count"], 0);
}

#[actix_rt::test]
async fn stop_silences_reminders_and_follow_ups_but_not_reports_until_start() {
    let app = spawn_app(
        "touch_consent",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    configure(&app, json!({"feedback_delay_minutes": null})).await;
    let p = patient(34);
    app.sim.inject_inbound_text(NUMBER_A, digits(&p), "STOP");
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "no longer receive"
        ))
        .await
    );
    let visit = |ext: &str| json!({"external_id": ext, "patient": {"phone": p}, "visit_type": "consultation", "completed_at": at(-7 * DAY_MS + 1_000)});
    let (s, _) = app
        .call(Method::POST, "/v1/visits", KEY_A, Some(visit("ENC-A")))
        .await;
    assert_eq!(s, 201);
    let (s, v) = post_lab_report(
        &app,
        &json!({"patient": {"phone": p}, "title": "Lipid profile", "pdf_base64": b64(&clinic_gateway::pdf::sample("LDL 90", 0))}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // The patient just wrote (STOP), so the report goes as a free document message.
    let report = sent_where(&app, &p, Duration::from_secs(10), |r| {
        matches!(&r.message.content, Content::Document { document } if document.caption.as_deref().is_some_and(|c| c.contains("Lipid profile")))
    })
    .await;
    assert!(report.is_some(), "reports still reach an opted-out patient");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        templates_to(&app, &p, "visit_follow_up").len(),
        0,
        "follow-up sent after STOP"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            "clinic_gateway_touchpoints_total{result=\"refused\",touchpoint=\"follow_up\"} 1"
        ),
        "{metrics}"
    );

    app.sim.inject_inbound_text(NUMBER_A, digits(&p), "शुरू");
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "Welcome back"
        ))
        .await
    );
    let (s, _) = app
        .call(Method::POST, "/v1/visits", KEY_A, Some(visit("ENC-B")))
        .await;
    assert_eq!(s, 201);
    // The window is open (the patient just wrote): the follow-up goes as a free text.
    assert!(eventually(Duration::from_secs(10), || text_to(&app, &p, "clinic_a")
        && app.sim.sent().iter().any(|r| r.to == digits(&p) && matches!(&r.message.content, Content::Text { text } if text.body.contains("feeling")))).await,
        "follow-up after START");
}

#[actix_rt::test]
async fn unanswered_messages_reach_the_inbox_and_the_clinic_can_reply() {
    let app = spawn_app(
        "touch_inbox",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let (url, captured) = callback_receiver();
    configure(
        &app,
        json!({"callback": {"url": url, "secret": "callback-secret-0123456789"}}),
    )
    .await;
    let p = patient(35);
    let wamid = app
        .sim
        .inject_inbound_text(NUMBER_A, digits(&p), "What are your Sunday timings?");
    let mut inbox = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            !events(&captured, "message.received").is_empty()
        })
        .await
    );
    for _ in 0..50 {
        inbox = app.call(Method::GET, "/v1/inbox", KEY_A, None).await.1;
        if inbox["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = &inbox["messages"][0];
    assert_eq!(
        (m["id"].as_str(), m["text"].as_str()),
        (Some(wamid.as_str()), Some("What are your Sunday timings?")),
        "{inbox}"
    );
    let event = &events(&captured, "message.received")[0];
    assert_eq!(event["data"]["text"], "What are your Sunday timings?");
    assert!(event["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("evt_")));
    // The clinic answers inside the window with a free-form message.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/messages",
            KEY_A,
            Some(text(&p, "Sundays 9 AM to 1 PM.")),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "Sundays 9 AM"
        ))
        .await
    );
}

#[actix_rt::test]
async fn an_ambiguous_reply_gets_the_question_again_as_buttons_inside_the_window() {
    let app = spawn_app(
        "touch_clarify",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let p = patient(36);
    let (s, a) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"patient": {"phone": p, "name": "Arjun", "language": "hi"}, "doctor": "Dr. Rao", "start": at(DAY_MS + 2_000)})),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    let reminder = sent_template(&app, &p, "visit_reminder", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no reminder"));
    assert_eq!(payloads(&reminder).len(), 3);
    app.sim
        .inject_inbound_text(NUMBER_A, digits(&p), "cancel or confirm? not sure");
    let clarify = sent_where(&app, &p, Duration::from_secs(10), |r| {
        matches!(&r.message.content, Content::Interactive { .. })
    })
    .await
    .unwrap_or_else(|| panic!("no clarifying question"));
    let taps = payloads(&clarify);
    assert_eq!(taps.len(), 3, "{taps:?}");
    assert!(taps.iter().all(|t| t.contains(&id)));
    let Content::Interactive { interactive } = &clarify.message.content else {
        panic!("interactive")
    };
    assert!(
        interactive.body.text.contains("Arjun"),
        "{}",
        interactive.body.text
    );
    assert!(
        !interactive.body.text.is_ascii(),
        "in Hindi: {}",
        interactive.body.text
    );
    // Nothing changed yet; the patient then answers with a tap on the interactive button.
    assert_eq!(
        app.call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
            .await
            .1["status"],
        "booked"
    );
    app.sim
        .inject_button_tap(NUMBER_A, digits(&p), &clarify.wamid, "Confirm", &taps[0]);
    let mut v = Value::Null;
    for _ in 0..100 {
        v = app
            .call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
            .await
            .1;
        if v["response"] == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(v["response"], "confirmed", "{v}");
    assert_eq!(v["outcome"]["reminder"], "confirmed", "{v}");
}

#[actix_rt::test]
async fn quiet_hours_hold_reminders_and_cancelling_removes_them() {
    let app = spawn_app(
        "touch_quiet",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    // Quiet from an hour ago to an hour from now, in the clinic's zone.
    let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap_or(chrono_tz::UTC);
    let local = chrono::Utc::now().with_timezone(&tz);
    let hhmm = |t: chrono::DateTime<chrono_tz::Tz>| t.format("%H:%M").to_string();
    configure(
        &app,
        json!({"time_zone": "Asia/Kolkata", "quiet_hours": {"start": hhmm(local - chrono::Duration::hours(1)), "end": hhmm(local + chrono::Duration::hours(1))},
               "reminder_offsets_minutes": [1440, 120]}),
    )
    .await;
    let p = patient(37);
    let (s, a) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"patient": {"phone": p, "name": "Leela"}, "start": at(DAY_MS + 2_000)})),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        sent_template(
            &app,
            &p,
            "appointment_confirmation",
            Duration::from_secs(10)
        )
        .await
        .is_some(),
        "a booking confirmation is not held"
    );
    assert_eq!(
        app.store.scheduled().await.unwrap_or_default(),
        2,
        "24 h and 2 h reminders"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        templates_to(&app, &p, "visit_reminder").len(),
        0,
        "sent in quiet hours"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("touchpoint=\"reminder\"} 1") && metrics.contains("result=\"deferred\""),
        "{metrics}"
    );
    assert_eq!(
        app.store.scheduled().await.unwrap_or_default(),
        2,
        "deferred, not dropped"
    );
    // The clinic cancels: both reminders leave the schedule at once.
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/v1/appointments/{id}"),
            KEY_A,
            Some(json!({"status": "cancelled"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        app.store.scheduled().await.unwrap_or_default(),
        0,
        "reminders left after cancelling"
    );
}

#[actix_rt::test]
async fn the_no_show_view_and_stats_follow_replies_and_attendance() {
    let app = spawn_app(
        "touch_stats",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = patient(40 + i);
        let (s, a) = app
            .call(
                Method::POST,
                "/v1/appointments",
                KEY_A,
                Some(json!({"patient": {"phone": p, "name": "P"}, "start": at(DAY_MS + 1_500)})),
            )
            .await;
        assert_eq!(s, 201, "{a}");
        ids.push((p, a["id"].as_str().unwrap_or_default().to_owned()));
    }
    let mut reminders = Vec::new();
    for (p, _) in &ids {
        reminders.push(
            sent_template(&app, p, "visit_reminder", Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("reminder")),
        );
    }
    // Patient 0 confirms; 1 and 2 say nothing. 0 and 1 come; 2 does not.
    let confirm = payloads(&reminders[0])[0].clone();
    app.sim.inject_button_tap(
        NUMBER_A,
        digits(&ids[0].0),
        &reminders[0].wamid,
        "Confirm",
        &confirm,
    );
    for _ in 0..100 {
        if app
            .call(
                Method::GET,
                &format!("/v1/appointments/{}", ids[0].1),
                KEY_A,
                None,
            )
            .await
            .1["response"]
            == "confirmed"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Delivered receipts arrive from the sandbox.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, status) in ["attended", "attended", "no_show"].iter().enumerate() {
        let (s, v) = app
            .call(
                Method::PATCH,
                &format!("/v1/appointments/{}", ids[i].1),
                KEY_A,
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, list) = app
        .call(Method::GET, "/v1/appointments?outcome=no_show", KEY_A, None)
        .await;
    assert_eq!(s, 200, "{list}");
    let shown: Vec<&str> = list["appointments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(shown, vec![ids[2].1.as_str()]);
    assert_eq!(
        list["appointments"][0]["outcome"]["reminder"], "ignored",
        "{list}"
    );
    let (s, list) = app
        .call(
            Method::GET,
            "/v1/appointments?outcome=confirmed",
            KEY_A,
            None,
        )
        .await;
    assert_eq!(
        (s, list["appointments"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (s, bad) = app
        .call(Method::GET, "/v1/appointments?outcome=maybe", KEY_A, None)
        .await;
    assert_eq!((s, bad["field"].as_str()), (422, Some("outcome")));
    let range = format!(
        "/v1/stats/appointments?from={}&to={}",
        urlencode(&at(-DAY_MS)),
        urlencode(&at(2 * DAY_MS))
    );
    let (s, stats) = app.call(Method::GET, &range, KEY_A, None).await;
    assert_eq!(s, 200, "{stats}");
    let st = &stats["stats"];
    assert_eq!(
        (st["appointments"].as_u64(), st["reminded"].as_u64()),
        (Some(3), Some(3)),
        "{stats}"
    );
    assert_eq!(st["reminder_coverage"], 1.0);
    assert_eq!(st["confirmation_rate"], 0.3333);
    assert_eq!(st["no_show_rate"], 0.3333);
    assert_eq!(st["by_reminder_outcome"]["confirmed"]["no_show_rate"], 0.0);
    assert_eq!(st["by_reminder_outcome"]["ignored"]["no_show_rate"], 0.5);
}

#[actix_rt::test]
async fn after_a_reschedule_the_old_reminders_go_and_a_tap_on_an_old_one_acts_on_the_current_time()
{
    let app = spawn_app(
        "touch_old_tap",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    configure(&app, json!({"reminder_offsets_minutes": [1440, 120]})).await;
    let p = patient(38);
    let (s, a) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"patient": {"phone": p, "name": "Devi"}, "start": at(DAY_MS + 2_000)})),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    let old = sent_template(&app, &p, "visit_reminder", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no reminder"));
    let old_taps = payloads(&old);
    assert!(old_taps[0].ends_with(":1"), "{old_taps:?}");
    assert_eq!(
        app.store.scheduled().await.unwrap_or_default(),
        1,
        "the 2 h reminder waits"
    );
    // Moved three days out: the old 2 h reminder leaves, two new ones arrive.
    let (s, moved) = app
        .call(
            Method::PATCH,
            &format!("/v1/appointments/{id}"),
            KEY_A,
            Some(json!({"start": at(3 * DAY_MS)})),
        )
        .await;
    assert_eq!((s, moved["version"].as_u64()), (200, Some(2)), "{moved}");
    assert_eq!(
        app.store.scheduled().await.unwrap_or_default(),
        2,
        "reminders of the new time only"
    );
    // The patient taps Confirm on the old reminder: the new time is not confirmed blindly.
    app.sim
        .inject_button_tap(NUMBER_A, digits(&p), &old.wamid, "Confirm", &old_taps[0]);
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "has moved to"
        ))
        .await
    );
    let v = app
        .call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
        .await
        .1;
    assert_eq!(
        (v["response"].clone(), v["status"].clone()),
        (Value::Null, json!("booked")),
        "{v}"
    );
    // Cancel on the old reminder cancels the appointment as it is now, and its reminders go.
    app.sim
        .inject_button_tap(NUMBER_A, digits(&p), &old.wamid, "Cancel", &old_taps[1]);
    let mut v = Value::Null;
    for _ in 0..100 {
        v = app
            .call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
            .await
            .1;
        if v["status"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (v["status"].as_str(), v["version"].as_u64()),
        (Some("cancelled"), Some(3)),
        "{v}"
    );
    // The reply's commands (unscheduling among them) run right after the state is stored.
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = app.store.scheduled().await.unwrap_or_default();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "cancelled: no reminder left");
}

#[actix_rt::test]
async fn a_reschedule_tap_tells_the_clinic_and_the_patient() {
    let app = spawn_app(
        "touch_resched",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    let (url, captured) = callback_receiver();
    configure(
        &app,
        json!({"callback": {"url": url, "secret": "callback-secret-0123456789"}}),
    )
    .await;
    let p = patient(39);
    let (s, a) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"external_id": "EMR-77", "patient": {"phone": p, "name": "Farah", "language": "bn"}, "start": at(DAY_MS + 1_500)})),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap_or_default().to_owned();
    let reminder = sent_template(&app, &p, "visit_reminder", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no reminder"));
    let Content::Template { template } = &reminder.message.content else {
        panic!("template")
    };
    assert_eq!(template.language.code, "bn", "the patient's language");
    let taps = payloads(&reminder);
    app.sim.inject_button_tap(
        NUMBER_A,
        digits(&p),
        &reminder.wamid,
        "Reschedule",
        &taps[2],
    );
    assert!(
        eventually(Duration::from_secs(10), || text_to(
            &app,
            &p,
            "will call you"
        ))
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || !events(
            &captured,
            "appointment.reschedule_requested"
        )
        .is_empty())
        .await
    );
    let event = &events(&captured, "appointment.reschedule_requested")[0];
    assert_eq!(
        (
            event["data"]["appointment"].as_str(),
            event["data"]["external_id"].as_str()
        ),
        (Some(id.as_str()), Some("EMR-77"))
    );
    let v = app
        .call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
        .await
        .1;
    assert_eq!(
        (v["status"].as_str(), v["response"].as_str()),
        (Some("booked"), Some("reschedule_requested")),
        "{v}"
    );
    assert_eq!(v["outcome"]["reminder"], "reschedule_requested");
}
