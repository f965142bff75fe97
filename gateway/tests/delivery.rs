//! Delivery against the sandbox over HTTP: pacing, retries by error class, permanent failures,
//! status webhooks (duplicates, out of order, forged) and deadlines.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use whatsapp_cloud::sandbox::Faults;
use whatsapp_cloud::signature::sign;

async fn send_many(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app.send(&template(&patient(i))).await);
    }
    ids
}

async fn assert_each_delivered_once(app: &TestApp, ids: &[String], timeout: Duration) {
    for id in ids {
        // `failed` ends the wait early: the assertion below then shows why.
        let v = app
            .wait_for(id, &["delivered", "read", "failed"], timeout)
            .await;
        assert!(
            matches!(v["status"].as_str(), Some("delivered" | "read")),
            "{v}"
        );
        assert_eq!(
            app.sent_for(id).len(),
            1,
            "exactly one send reached Meta for {id}: {v}"
        );
    }
}

#[actix_rt::test]
async fn pacing_keeps_the_number_under_its_tier() {
    let app = spawn_app(
        "pacing",
        Options {
            tier_mps: 20,
            ..Options::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let ids = send_many(&app, 60).await;
    assert_each_delivered_once(&app, &ids, Duration::from_secs(20)).await;
    let sent = app.sim.sent_to(NUMBER_A);
    assert_eq!(sent.len(), 60);
    assert!(
        max_per_second(&sent) <= 20,
        "max per second {}",
        max_per_second(&sent)
    );
    assert!(
        app.sim.rejected().is_empty(),
        "Meta never had to refuse: {:?}",
        app.sim.rejected()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "60 messages at 20/s take over 2 s"
    );
}

#[actix_rt::test]
async fn throttling_errors_are_retried_without_amplifying() {
    let app = spawn_app(
        "throttle",
        Options {
            tier_mps: 20,
            ..Options::default()
        },
    )
    .await;
    app.sim.set_faults(Faults {
        error_rate: 0.3,
        error_code: 130429,
        ..Faults::default()
    });
    let ids = send_many(&app, 40).await;
    assert_each_delivered_once(&app, &ids, Duration::from_secs(30)).await;
    let sent = app.sim.sent_to(NUMBER_A);
    let rejected = app.sim.rejected();
    assert!(!rejected.is_empty(), "faults were injected");
    assert!(rejected.iter().all(|r| r.code == 130429));
    // Retries never amplify: accepted plus refused requests stay under the tier in every second.
    let mut attempts: Vec<std::time::SystemTime> = sent.iter().map(|r| r.at).collect();
    attempts.extend(rejected.iter().map(|r| r.at));
    assert!(
        max_per_second_at(&attempts) <= 20,
        "{}",
        max_per_second_at(&attempts)
    );
    let v = app
        .wait_for(&ids[0], &["read"], Duration::from_secs(5))
        .await;
    assert!(v["attempts"].as_u64().unwrap_or(0) >= 1);
}

#[actix_rt::test]
async fn pair_rate_and_server_errors_are_retried() {
    // Enough attempts that 20 % + 20 % injected failures cannot exhaust a message by chance
    // (0.36^20 per message).
    let opts = Options {
        max_attempts: 20,
        ..Options::default()
    };
    let app = spawn_app("pair_and_5xx", opts).await;
    app.sim.set_faults(Faults {
        error_rate: 0.2,
        error_code: 131056,
        http_5xx_rate: 0.2,
        ..Faults::default()
    });
    let ids = send_many(&app, 30).await;
    assert_each_delivered_once(&app, &ids, Duration::from_secs(40)).await;
    let codes: std::collections::HashSet<i64> = app.sim.rejected().iter().map(|r| r.code).collect();
    assert!(!codes.is_empty(), "faults were injected");
    let retried = ids.len() + app.sim.rejected().len();
    let m = app.metrics_text().await;
    assert!(
        m.contains("clinic_gateway_sends_total{outcome=\"retried\"}"),
        "{m}"
    );
    assert!(retried > ids.len());
}

#[actix_rt::test]
async fn timeouts_wait_for_the_status_and_never_duplicate() {
    let opts = Options {
        request_timeout_ms: 400,
        status_grace_ms: 1_500,
        ..Options::default()
    };
    let app = spawn_app("timeouts", opts).await;
    // Half the timed-out sends were acted on by Meta (statuses flow), half were not.
    app.sim.set_faults(Faults {
        timeout_rate: 0.3,
        timeout_sends: true,
        hold_ms: 1_000,
        ..Faults::default()
    });
    let mut ids = send_many(&app, 15).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.sim.set_faults(Faults {
        timeout_rate: 0.3,
        timeout_sends: false,
        hold_ms: 1_000,
        ..Faults::default()
    });
    for i in 100..115 {
        ids.push(app.send(&template(&patient(i))).await);
    }
    assert_each_delivered_once(&app, &ids, Duration::from_secs(40)).await;
    let m = app.metrics_text().await;
    assert!(
        m.contains("clinic_gateway_sends_total{outcome=\"unknown\"}"),
        "timeouts happened: {m}"
    );
}

#[actix_rt::test]
async fn permanent_errors_fail_with_metas_code_and_text() {
    let app = spawn_app("permanent", Options::default()).await;
    let (_, v) = app.send_to_number_not_on_whatsapp(&patient(7)).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], 131026, "{v}");
    assert!(
        v["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{v}"
    );

    // Unknown to the catalog: refused at the edge, before Meta.
    let missing = json!({"to": PATIENT, "type": "template",
        "template": {"name": "no_such_template", "language": {"code": "en"}}});
    let (status, v) = app.post(KEY_A, &missing).await;
    assert_eq!(
        (status, v["type"].as_str()),
        (422, Some("/problems/template-not-approved")),
        "{v}"
    );
    // The catalog believes in a template Meta does not have (deleted behind the gateway's back):
    // Meta's 132001 fails the message for good.
    use clinic_gateway::store::tenancy::TemplateRecord;
    let ghost = TemplateRecord {
        name: "ghost_template".into(),
        language: "en".into(),
        category: whatsapp_cloud::wire::TemplateCategory::Utility,
        status: whatsapp_cloud::wire::TemplateStatus::Approved,
        meta_id: String::new(),
        body_parameters: 0,
        pending_category: None,
        reason: None,
        updated_ms: 0,
    };
    let tenant =
        clinic_gateway::domain::TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    app.store
        .put_template(&tenant, &ghost)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = json!({"to": PATIENT, "type": "template",
        "template": {"name": "ghost_template", "language": {"code": "en"}}});
    let id = app.send(&missing).await;
    let v = app
        .wait_for(&id, &["failed"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], 132001, "{v}");
    assert!(
        v["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{v}"
    );
    assert_eq!(v["attempts"], 1, "permanent errors are not retried: {v}");
    assert!(app.sent_for(&id).is_empty());
}

#[actix_rt::test]
async fn duplicate_and_out_of_order_statuses_never_move_backwards() {
    let opts = Options {
        duplicate_rate: 1.0,
        reorder: true,
        ..Options::default()
    };
    let app = spawn_app("dup_reorder", opts).await;
    let ids = send_many(&app, 10).await;
    for id in &ids {
        let v = app.wait_for(id, &["read"], Duration::from_secs(10)).await;
        assert_eq!(v["status"], "read", "{v}");
    }
    // Replay a stale `sent` and `delivered` for a read message: it stays read.
    let (_, v) = app.get_message(KEY_A, &ids[0]).await;
    let wamid = v["wamid"].as_str().unwrap_or_default().to_owned();
    for status in ["sent", "delivered", "failed"] {
        let body = status_webhook(NUMBER_A, &wamid, &ids[0], status);
        let r = post_webhook(&app, &body, &sign(APP_SECRET.as_bytes(), body.as_bytes())).await;
        assert_eq!(r, 200);
    }
    let (_, after) = app.get_message(KEY_A, &ids[0]).await;
    assert_eq!(after["status"], "read", "{after}");
    assert_eq!(
        after["timeline"], v["timeline"],
        "nothing was added by stale statuses"
    );
}

#[actix_rt::test]
async fn a_bad_signature_is_401_and_changes_nothing() {
    let app = spawn_app(
        "bad_signature",
        Options {
            read_receipts: false,
            ..Options::default()
        },
    )
    .await;
    let id = app.send(&template(PATIENT)).await;
    let v = app
        .wait_for(&id, &["delivered"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "delivered", "{v}");
    let wamid = v["wamid"].as_str().unwrap_or_default().to_owned();
    let body = status_webhook(NUMBER_A, &wamid, &id, "read");
    for sig in ["sha256=00", &sign(b"wrong-secret", body.as_bytes()), ""] {
        assert_eq!(
            post_webhook(&app, &body, sig).await,
            401,
            "signature {sig:?}"
        );
    }
    let (_, same) = app.get_message(KEY_A, &id).await;
    assert_eq!(same["status"], "delivered", "{same}");
    assert_eq!(
        post_webhook(&app, &body, &sign(APP_SECRET.as_bytes(), body.as_bytes())).await,
        200
    );
    let (_, read) = app.get_message(KEY_A, &id).await;
    assert_eq!(read["status"], "read", "{read}");
}

#[actix_rt::test]
async fn expired_messages_are_never_sent() {
    let opts = Options {
        retry_base_ms: 1_500,
        retry_max_ms: 3_000,
        ..Options::default()
    };
    let app = spawn_app("expiry", opts).await;
    // Meta keeps answering a transient error, so the retry falls after the deadline.
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_code: 131000,
        ..Faults::default()
    });
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(1_000);
    let mut body = template(PATIENT);
    body["deadline"] = json!(deadline.to_rfc3339());
    let id = app.send(&body).await;
    let v = app
        .wait_for(&id, &["expired"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "expired", "{v}");
    app.sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.sent_for(&id).is_empty(),
        "an expired message never reaches Meta"
    );
}

fn status_webhook(number: &str, wamid: &str, id: &str, status: &str) -> String {
    let mut item = json!({"id": wamid, "status": status, "timestamp": "1764000000",
        "recipient_id": PATIENT.trim_start_matches('+'), "biz_opaque_callback_data": id});
    if status == "failed" {
        item["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": WABA_A, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "918045550001", "phone_number_id": number},
                  "statuses": [item]}}]}]})
    .to_string()
}

async fn post_webhook(app: &TestApp, body: &str, signature: &str) -> u16 {
    app.http
        .post(format!("{}/webhooks/whatsapp", app.base))
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

#[actix_rt::test]
async fn passivated_dispatchers_wake_for_new_work() {
    let opts = Options {
        passivate_after_ms: 300,
        ..Options::default()
    };
    let app = spawn_app("passivation", opts).await;
    let first = app.send(&template(&patient(1))).await;
    app.wait_for(&first, &["read"], Duration::from_secs(10))
        .await;
    // Idle well past the passivation time: the dispatchers have stopped by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m = app.metrics_text().await;
    assert!(
        m.contains("clinic_gateway_resident_actors{kind=\"dispatcher\"} 0"),
        "{m}"
    );
    let started = std::time::Instant::now();
    let second = app.send(&template(&patient(2))).await;
    let v = app
        .wait_for(&second, &["read"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "read", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken at once, not by a slow poll"
    );
    assert_eq!(app.sent_for(&second).len(), 1);
}
