//! The clinic API at its edge: durability of 202, bad input, idempotency, tenant isolation.

mod common;

use std::time::Duration;

use clinic_gateway::domain::{MessageId, PhoneNumberId};
use common::*;
use serde_json::json;

#[actix_rt::test]
async fn accepted_means_stored_in_redis() {
    let app = spawn_app("accepted_means_stored", Options::default()).await;
    let id = app.send(&template(PATIENT)).await;
    // A separate connection with the same prefix sees the record right after the 202.
    let other = clinic_gateway::store::RedisStore::connect(
        &clinic_gateway::testing::shared_redis().url,
        &app.prefix,
        2,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let number = PhoneNumberId::parse(NUMBER_A).unwrap_or_else(|e| panic!("{e}"));
    let mid = MessageId::parse_issued(&id).unwrap_or_else(|e| panic!("{e}"));
    use clinic_gateway::store::Store;
    let rec = other
        .load(&number, &mid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rec.is_some(), "record must exist once 202 was answered");
    let v = app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    assert_eq!(v["status"], "read", "{v}");
    assert_eq!(app.sent_for(&id).len(), 1);
    let events: Vec<&str> = v["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"].as_str())
        .collect();
    // Statuses may overtake the send's own answer (then they are kept as early-… and folded in).
    assert_eq!(&events[..2], ["queued", "sending"], "{v}");
    assert!(events.contains(&"accepted"), "{v}");
    assert_eq!(events.last(), Some(&"read"), "{v}");
    for e in &events {
        let known = [
            "queued",
            "sending",
            "accepted",
            "sent",
            "delivered",
            "read",
            "early-sent",
            "early-delivered",
            "early-read",
        ];
        assert!(known.contains(e), "unexpected timeline event {e}: {v}");
    }
}

#[actix_rt::test]
async fn redis_down_is_503_and_nothing_is_accepted() {
    // A Redis of this test's own, so it can be stopped under the running gateway.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let url = format!("redis://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opts = Options {
        redis_url: Some(url),
        ..Options::default()
    };
    let app = spawn_app("redis_down", opts).await;
    let _ = redis.kill();
    let _ = redis.wait();
    let (status, v) = app.post(KEY_A, &template(PATIENT)).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["type"], "/problems/unavailable");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nothing was accepted")),
        "{v}"
    );
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.sim.sent().is_empty());
}

#[actix_rt::test]
async fn bad_input_is_a_problem_naming_the_field_and_queues_nothing() {
    let opts = Options {
        max_message_bytes: 4_096,
        ..Options::default()
    };
    let app = spawn_app("bad_input", opts).await;
    let cases: Vec<(Vec<u8>, u16, &str, Option<&str>)> = vec![
        (b"{\"to\": \"+91".to_vec(), 400, "/problems/malformed-json", None),
        (json!({"to": PATIENT, "type": "sticker", "sticker": {}}).to_string().into_bytes(), 422, "/problems/unknown-message-type", Some("type")),
        (text("98765-4321x", "hi").to_string().into_bytes(), 422, "/problems/invalid-field", Some("to")),
        (text(PATIENT, "").to_string().into_bytes(), 422, "/problems/invalid-field", Some("text.body")),
        (json!({"to": PATIENT, "type": "text"}).to_string().into_bytes(), 422, "/problems/invalid-field", Some("text")),
        (json!({"to": PATIENT, "type": "text", "text": {"body": 5}}).to_string().into_bytes(), 422, "/problems/invalid-field", Some("text")),
        (json!({"type": "text", "text": {"body": "x"}}).to_string().into_bytes(), 422, "/problems/invalid-field", Some("to")),
        (json!({"to": PATIENT, "from": NUMBER_B, "type": "text", "text": {"body": "x"}}).to_string().into_bytes(), 422, "/problems/invalid-field", Some("from")),
        (json!({"to": PATIENT, "deadline": "2001-01-01T00:00:00Z", "type": "text", "text": {"body": "x"}}).to_string().into_bytes(), 422, "/problems/invalid-field", Some("deadline")),
        (text(PATIENT, &"x".repeat(5_000)).to_string().into_bytes(), 413, "/problems/body-too-large", None),
    ];
    for (body, status, kind, field) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let (got, v) = app.post_raw(KEY_A, body, None).await;
        assert_eq!(got, status, "{shown}: {v}");
        assert_eq!(v["type"], kind, "{shown}: {v}");
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{shown}: {v}");
        }
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    app.open_window(PATIENT).await;
    let (status, v) = app
        .post(
            KEY_A,
            &json!({"to": PATIENT, "type": "text", "text": {"body": "x"}}),
        )
        .await;
    assert_eq!(status, 202, "a good request still works: {v}");
    let (status, _) = app.post("wrong-key", &text(PATIENT, "x")).await;
    assert_eq!(status, 401);
    let number = PhoneNumberId::parse(NUMBER_A).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let depth = app
        .store
        .depth(&number)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(depth.ready, [0, 0, 0]);
    assert_eq!(
        app.sim.sent().len() + app.sim.rejected().len(),
        1,
        "only the good request reached Meta"
    );
}

#[actix_rt::test]
async fn idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let app = spawn_app("idempotency", Options::default()).await;
    let body = template(PATIENT).to_string().into_bytes();
    let (s1, v1) = app.post_raw(KEY_A, body.clone(), Some("order-42")).await;
    let (s2, v2) = app.post_raw(KEY_A, body.clone(), Some("order-42")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(v1, v2);
    let other = text(PATIENT, "different").to_string().into_bytes();
    let (s3, v3) = app.post_raw(KEY_A, other, Some("order-42")).await;
    assert_eq!(s3, 409, "{v3}");
    assert_eq!(v3["type"], "/problems/idempotency-key-reused");
    // Another clinic's identical key is its own.
    let (s4, v4) = app.post_raw(KEY_B, body, Some("order-42")).await;
    assert_eq!(s4, 202);
    assert_ne!(v4["id"], v1["id"]);
    let id = v1["id"].as_str().unwrap_or_default().to_owned();
    app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    assert_eq!(
        app.sent_for(&id).len(),
        1,
        "one message for one idempotency key"
    );
}

#[actix_rt::test]
async fn clinics_cannot_see_each_others_messages() {
    let app = spawn_app("isolation", Options::default()).await;
    let id = app.send(&template(PATIENT)).await;
    let (own, _) = app.get_message(KEY_A, &id).await;
    assert_eq!(own, 200);
    let (other, v) = app.get_message(KEY_B, &id).await;
    assert_eq!(other, 404, "{v}");
    let (anon, _) = app.get_message("nope", &id).await;
    assert_eq!(anon, 401);
    let (bad, _) = app.get_message(KEY_A, "msg_not-an-id").await;
    assert_eq!(bad, 404);
}

#[actix_rt::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app("health", Options::default()).await;
    let id = app.send(&template(PATIENT)).await;
    app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    for path in ["/healthz", "/readyz"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let m = app.metrics_text().await;
    assert!(
        m.contains("clinic_gateway_sends_total{outcome=\"accepted\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("clinic_gateway_meta_request_duration_seconds_bucket"),
        "{m}"
    );
    assert!(
        m.contains("clinic_gateway_messages_accepted_total{lane=\"care\",touchpoint=\"api\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("clinic_gateway_webhook_statuses_total{result=\"applied\"}"),
        "{m}"
    );
}

#[actix_rt::test]
async fn webhook_verification_handshake() {
    let app = spawn_app("handshake", Options::default()).await;
    let ok = app
        .http
        .get(format!("{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=12345", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.unwrap_or_default(), "12345");
    let bad = app
        .http
        .get(format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
            app.base
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status().as_u16(), 403);
}
