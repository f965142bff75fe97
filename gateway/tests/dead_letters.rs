//! Dead letters: messages that failed permanently or expired are listed per clinic
//! (`GET /v1/messages?status=failed|expired`) and re-driven where it makes sense
//! (`POST /v1/messages/{id}/retry`): a new message through the normal submit path, once.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::Faults;

fn opts() -> Options {
    Options {
        max_attempts: 2,
        retry_base_ms: 50,
        retry_max_ms: 100,
        ..Options::default()
    }
}

async fn list(app: &TestApp, key: &str, query: &str) -> (u16, Value) {
    app.call(Method::GET, &format!("/v1/messages{query}"), key, None)
        .await
}

fn ids(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn retry(app: &TestApp, key: &str, id: &str, body: Option<Value>) -> (u16, Value) {
    app.call(Method::POST, &format!("/v1/messages/{id}/retry"), key, body)
        .await
}

/// One of each: failed for good (131026), failed after transient errors ran out of attempts
/// (131000), expired; then a healthy one that is not a dead letter.
async fn seed(app: &TestApp) -> (String, String, String, String) {
    let (not_on_wa, v) = app.send_to_number_not_on_whatsapp(&patient(1)).await;
    assert_eq!(v["error"]["code"], 131026, "{v}");

    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_code: 131000,
        ..Faults::default()
    });
    let transient = app.send(&template(&patient(2))).await;
    let v = app
        .wait_for(&transient, &["failed"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], 131000, "{v}");

    let mut body = template(&patient(3));
    body["deadline"] =
        json!((chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339());
    let expired = app.send(&body).await;
    // The first attempts fail with 131000; the next decision falls after the deadline.
    let v = app
        .wait_for(&expired, &["expired", "failed"], Duration::from_secs(10))
        .await;
    app.sim.set_faults(Faults::default());
    assert!(
        matches!(v["status"].as_str(), Some("expired" | "failed")),
        "{v}"
    );

    let healthy = app.send(&template(&patient(4))).await;
    let v = app
        .wait_for(&healthy, &["delivered", "read"], Duration::from_secs(10))
        .await;
    assert!(
        matches!(v["status"].as_str(), Some("delivered" | "read")),
        "{v}"
    );
    (not_on_wa, transient, expired, healthy)
}

#[actix_rt::test]
async fn failed_and_expired_messages_are_listed_by_status_and_time() {
    let opts = Options {
        max_attempts: 50,
        ..opts()
    };
    let app = spawn_app("dead_letters_list", opts).await;
    let gone = patient(1);
    app.sim.mark_not_on_whatsapp(gone.trim_start_matches('+'));
    let failed = app.send(&template(&gone)).await;
    app.wait_for(&failed, &["failed"], Duration::from_secs(10))
        .await;

    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_code: 131000,
        ..Faults::default()
    });
    let mut body = template(&patient(3));
    body["deadline"] =
        json!((chrono::Utc::now() + chrono::Duration::milliseconds(400)).to_rfc3339());
    let expired = app.send(&body).await;
    let v = app
        .wait_for(&expired, &["expired"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "expired", "{v}");
    app.sim.set_faults(Faults::default());
    let healthy = app.send(&template(&patient(4))).await;
    app.wait_for(&healthy, &["delivered", "read"], Duration::from_secs(10))
        .await;

    let (status, all) = list(&app, KEY_A, "").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), vec![failed.clone(), expired.clone()], "{all}");
    let first = &all["messages"][0];
    assert_eq!(first["status"], "failed", "{all}");
    assert_eq!(first["error"]["code"], 131026, "{all}");
    assert_eq!(first["retryable"], false, "{all}");
    assert_eq!(first["to"], gone.as_str(), "{all}");
    assert!(first["ended_at"].as_str().is_some(), "{all}");
    assert_eq!(all["messages"][1]["retryable"], true, "{all}");

    let (_, only_failed) = list(&app, KEY_A, "?status=failed").await;
    assert_eq!(ids(&only_failed), vec![failed.clone()], "{only_failed}");
    let (_, only_expired) = list(&app, KEY_A, "?status=expired").await;
    assert_eq!(ids(&only_expired), vec![expired.clone()], "{only_expired}");
    let (_, both) = list(&app, KEY_A, "?status=failed,expired&limit=1").await;
    assert_eq!(ids(&both), vec![failed.clone()], "{both}");
    assert!(both["next_from"].as_str().is_some(), "a next page: {both}");
    let next = both["next_from"].as_str().unwrap_or_default();
    let (_, page2) = list(&app, KEY_A, &format!("?limit=1&from={}", urlencode(next))).await;
    // `from` is inclusive: the page may start with the last one again when both ended in the
    // same millisecond; it always reaches the second.
    assert!(
        ids(&page2).contains(&expired) || ids(&page2) == vec![failed.clone()],
        "{page2}"
    );

    // Time window: nothing ended in the future.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, none) = list(&app, KEY_A, &format!("?from={}", urlencode(&future))).await;
    assert_eq!(status, 200, "{none}");
    assert!(ids(&none).is_empty(), "{none}");

    // Bad filters are problems that name the field.
    for (q, field) in [
        ("?status=delivered", "status"),
        ("?status=bogus", "status"),
        ("?limit=0", "limit"),
        ("?limit=100000", "limit"),
        ("?from=yesterday", "query"),
    ] {
        let (status, p) = list(&app, KEY_A, q).await;
        assert_eq!(
            (status, p["field"].as_str()),
            (422, Some(field)),
            "{q}: {p}"
        );
    }

    // Clinic B sees none of clinic A's dead letters.
    let (status, b) = list(&app, KEY_B, "").await;
    assert_eq!(status, 200, "{b}");
    assert!(ids(&b).is_empty(), "{b}");
    // No key: 401.
    let resp = app
        .http
        .get(format!("{}/v1/messages", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 401);
}

#[actix_rt::test]
async fn a_retry_is_a_new_linked_message_sent_once() {
    let app = spawn_app("dead_letters_retry", opts()).await;
    let (not_on_wa, transient, expired, healthy) = seed(&app).await;

    // Meta said the number is not on WhatsApp: retrying would fail again.
    let (status, p) = retry(&app, KEY_A, &not_on_wa, None).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (409, Some("/problems/not-retryable")),
        "{p}"
    );
    // A live (delivered) message is not a dead letter.
    let (status, p) = retry(&app, KEY_A, &healthy, None).await;
    assert_eq!(status, 409, "{p}");
    // Another clinic's dead letter does not exist for clinic B.
    let (status, p) = retry(&app, KEY_B, &transient, None).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (404, Some("/problems/not-found")),
        "{p}"
    );
    let (status, _) = retry(&app, KEY_A, "msg_does_not_exist", None).await;
    assert_eq!(status, 404);
    // A deadline in the past is refused; unknown fields too.
    let (status, p) = retry(
        &app,
        KEY_A,
        &transient,
        Some(json!({"deadline": "2001-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(
        (status, p["field"].as_str()),
        (422, Some("deadline")),
        "{p}"
    );
    let (status, p) = retry(
        &app,
        KEY_A,
        &transient,
        Some(json!({"to": "+911111111111"})),
    )
    .await;
    assert_eq!(status, 422, "{p}");

    // The transient failure, now that Meta is healthy again: a new message, linked.
    let (status, r) = retry(&app, KEY_A, &transient, None).await;
    assert_eq!(status, 202, "{r}");
    let new_id = r["id"].as_str().unwrap_or_default().to_owned();
    assert!(new_id.starts_with("msg_") && new_id != transient, "{r}");
    assert_eq!(r["retry_of"], transient.as_str(), "{r}");
    let v = app
        .wait_for(&new_id, &["delivered", "read"], Duration::from_secs(10))
        .await;
    assert!(
        matches!(v["status"].as_str(), Some("delivered" | "read")),
        "{v}"
    );
    assert_eq!(v["to"], patient(2).as_str(), "same recipient: {v}");
    assert_eq!(app.sent_for(&new_id).len(), 1, "sent once");
    assert!(
        app.sent_for(&transient).is_empty(),
        "the old one never reached Meta"
    );

    // Retrying the same dead letter again answers with the same new message; nothing is sent.
    let (status, again) = retry(&app, KEY_A, &transient, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], new_id.as_str(), "{again}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.sent_for(&new_id).len(), 1, "still sent once");

    // The list shows the link; the old message stays failed.
    let (_, listed) = list(&app, KEY_A, "?status=failed").await;
    let old = listed["messages"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == transient.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(old["retried_by"], new_id.as_str(), "{listed}");

    // The expired one re-drives too, with its own deadline.
    let deadline = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let (status, r) = retry(&app, KEY_A, &expired, Some(json!({"deadline": deadline}))).await;
    assert_eq!(status, 202, "{r}");
    let expired_retry = r["id"].as_str().unwrap_or_default().to_owned();
    let v = app
        .wait_for(
            &expired_retry,
            &["delivered", "read"],
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(v["status"].as_str(), Some("delivered" | "read")),
        "{v}"
    );

    // The wallet balances: only the two retries and the healthy one were charged.
    let (_, w) = app.call(Method::GET, "/v1/wallet", KEY_A, None).await;
    assert_eq!(w["reserved"], 0, "{w}");
    let (_, ledger) = app
        .call(Method::GET, "/v1/wallet/ledger?limit=1000", KEY_A, None)
        .await;
    let entries = ledger["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        Some(replay_ledger(&entries)),
        w["available"].as_i64(),
        "{ledger}"
    );
}

#[actix_rt::test]
async fn a_free_form_retry_goes_through_the_window_check() {
    let app = spawn_app("dead_letters_window", opts()).await;
    // A text inside the window that failed after its attempts ran out.
    app.open_window(PATIENT).await;
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_code: 131000,
        ..Faults::default()
    });
    let id = app.send(&text(PATIENT, "your report is ready")).await;
    let v = app
        .wait_for(&id, &["failed"], Duration::from_secs(10))
        .await;
    assert_eq!(v["status"], "failed", "{v}");
    app.sim.set_faults(Faults::default());
    // Still inside the window: re-driven.
    let (status, r) = retry(&app, KEY_A, &id, None).await;
    assert_eq!(status, 202, "{r}");
    let new_id = r["id"].as_str().unwrap_or_default().to_owned();
    let v = app
        .wait_for(&new_id, &["delivered", "read"], Duration::from_secs(10))
        .await;
    assert!(
        matches!(v["status"].as_str(), Some("delivered" | "read")),
        "{v}"
    );
}
