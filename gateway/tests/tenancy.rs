//! Clinics as tenants, on real Redis + the sandbox over HTTP: the admin API, API keys, wallets,
//! templates, service windows, Meta's limits and cross-tenant isolation.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::wire::{TemplateCategory, TemplateStatus};

const UTILITY: i64 = 115_000;
const MARKETING: i64 = 863_100;

async fn wallet(app: &TestApp, key: &str) -> Value {
    app.call(Method::GET, "/v1/wallet", key, None).await.1
}

async fn ledger(app: &TestApp, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, v) = app
            .call(
                Method::GET,
                &format!("/v1/wallet/ledger?limit=7&cursor={cursor}"),
                key,
                None,
            )
            .await;
        all.extend(v["entries"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return all,
        }
    }
}

#[actix_rt::test]
async fn admin_provisions_clinics_keys_and_credits() {
    let app = spawn_app("admin", Options::default()).await;
    let new_clinic = json!({
        "id": "clinic_new", "display_name": "Lotus Eye Care", "waba_id": "500000000000005",
        "app_secret": "lotus-app-secret", "access_token": "lotus-token",
        "numbers": [{"phone_number_id": "500000000000006", "display": "+91 80 4555 0006", "tier_mps": 80}],
        "locations": [{"name": "Main", "address": "MG Road", "latitude": 12.97, "longitude": 77.59}],
        "doctors": [{"id": "d1", "name": "Dr. Iyer"}],
        "callback": {"url": "https://clinic.example/cb", "secret": "0123456789abcdef-secret"}
    });
    let (status, v) = app
        .call(
            Method::POST,
            "/admin/v1/clinics",
            ADMIN_KEY,
            Some(new_clinic.clone()),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let shown = v.to_string();
    for secret in ["lotus-app-secret", "lotus-token", "0123456789abcdef-secret"] {
        assert!(!shown.contains(secret), "secrets are write-only: {shown}");
    }
    assert_eq!(v["app_secret_set"], true);
    assert_eq!(v["time_zone"], "Asia/Kolkata");
    let (dup, _) = app
        .call(
            Method::POST,
            "/admin/v1/clinics",
            ADMIN_KEY,
            Some(new_clinic),
        )
        .await;
    assert_eq!(dup, 409);
    let (bad, v) = app
        .call(
            Method::POST,
            "/admin/v1/clinics",
            ADMIN_KEY,
            Some(
                json!({"display_name": "X", "waba_id": "1", "access_token": "t", "app_secret": "s",
            "numbers": [{"phone_number_id": "600000000000006", "tier_mps": 55}]}),
            ),
        )
        .await;
    assert_eq!(
        (bad, v["field"].as_str()),
        (422, Some("numbers[0].tier_mps")),
        "{v}"
    );
    let (taken, v) = app
        .call(Method::POST, "/admin/v1/clinics", ADMIN_KEY, Some(json!({"display_name": "Thief", "waba_id": "1", "access_token": "t", "app_secret": "s",
            "numbers": [{"phone_number_id": NUMBER_A, "tier_mps": 80}]})))
        .await;
    assert_eq!(taken, 409, "a number belongs to one clinic: {v}");
    let (unauth, _) = app
        .call(Method::GET, "/admin/v1/clinics", KEY_A, None)
        .await;
    assert_eq!(unauth, 401, "clinic keys are not admin keys");

    // Keys: shown once, usable at once, listed without the key, revoked for good.
    let (status, key) = app
        .call(
            Method::POST,
            "/admin/v1/clinics/clinic_new/api-keys",
            ADMIN_KEY,
            Some(json!({"label": "EMR"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("cgk_"));
    let (status, w) = app.call(Method::GET, "/v1/wallet", &secret, None).await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["available"], 0);
    let (_, listed) = app
        .call(
            Method::GET,
            "/admin/v1/clinics/clinic_new/api-keys",
            ADMIN_KEY,
            None,
        )
        .await;
    assert!(!listed.to_string().contains(&secret));
    let key_id = key["id"].as_str().unwrap_or_default();

    // Credits are idempotent by key.
    let credit = |k: &'static str| {
        app.http
            .post(format!(
                "{}/admin/v1/clinics/clinic_new/wallet/credits",
                app.base
            ))
            .bearer_auth(ADMIN_KEY)
            .header("Idempotency-Key", k)
            .json(&json!({"amount": 5_000_000}))
            .send()
    };
    assert_eq!(
        credit("topup-1")
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        201
    );
    assert_eq!(
        credit("topup-1")
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
    assert_eq!(wallet(&app, &secret).await["available"], 5_000_000);

    // Suspension refuses the clinic's keys; resuming restores them.
    let (s, _) = app
        .call(
            Method::POST,
            "/admin/v1/clinics/clinic_new/suspend",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        app.call(Method::GET, "/v1/wallet", &secret, None).await.0,
        401
    );
    app.call(
        Method::POST,
        "/admin/v1/clinics/clinic_new/resume",
        ADMIN_KEY,
        None,
    )
    .await;
    assert_eq!(
        app.call(Method::GET, "/v1/wallet", &secret, None).await.0,
        200
    );

    // Update: a PATCH changes only what it names; secrets stay.
    let (s, v) = app
        .call(Method::PATCH, "/admin/v1/clinics/clinic_new", ADMIN_KEY, Some(json!({"numbers": [{"phone_number_id": "500000000000006", "tier_mps": 1000}], "time_zone": "Asia/Dubai"})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["numbers"][0]["tier_mps"], 1000);
    assert_eq!(v["display_name"], "Lotus Eye Care");
    assert_eq!(v["access_token_set"], true);
    let (s, v) = app
        .call(
            Method::PATCH,
            "/admin/v1/clinics/clinic_new",
            ADMIN_KEY,
            Some(json!({"time_zone": "Mars/Olympus"})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("time_zone")), "{v}");

    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/admin/v1/clinics/clinic_new/api-keys/{key_id}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        app.call(Method::GET, "/v1/wallet", &secret, None).await.0,
        401
    );
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/admin/v1/clinics/clinic_a/api-keys/{key_id}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(s, 404, "a key is revoked through its own clinic only");
}

#[actix_rt::test]
async fn wallet_reserves_settles_and_releases_to_the_micro_unit() {
    let opts = Options {
        duplicate_rate: 0.5,
        reorder: true,
        ..Options::default()
    };
    let app = spawn_app("wallet", opts).await;
    let start = wallet(&app, KEY_A).await["available"].as_i64().unwrap_or(0);
    let gone = patient(90);
    app.sim.mark_not_on_whatsapp(gone.trim_start_matches('+'));
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(app.send(&template(&patient(i))).await);
    }
    let failed = app.send(&template(&gone)).await;
    for id in &ids {
        app.wait_for(id, &["read"], Duration::from_secs(10)).await;
    }
    app.wait_for(&failed, &["failed"], Duration::from_secs(10))
        .await;
    // Let duplicate and late statuses land.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let w = wallet(&app, KEY_A).await;
    assert_eq!(w["reserved"], 0, "{w}");
    assert_eq!(
        w["settled"].as_i64(),
        Some(6 * UTILITY),
        "six delivered utility templates: {w}"
    );
    assert_eq!(w["available"].as_i64(), Some(start - 6 * UTILITY), "{w}");
    let entries = ledger(&app, KEY_A).await;
    assert_eq!(
        replay_ledger(&entries),
        w["available"].as_i64().unwrap_or(-1),
        "ledger replays to the balance"
    );
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "release").count(),
        1,
        "the failed message was refunded"
    );
    let b = wallet(&app, KEY_B).await;
    assert_eq!(b["settled"], 0, "clinic B paid nothing for clinic A");
}

#[actix_rt::test]
async fn insufficient_balance_is_402_with_balance_and_price() {
    let opts = Options {
        wallet_credit: 2 * UTILITY,
        ..Options::default()
    };
    let app = spawn_app("insufficient", opts).await;
    app.send(&template(&patient(1))).await;
    app.send(&template(&patient(2))).await;
    let (status, v) = app.post(KEY_A, &template(&patient(3))).await;
    assert_eq!(status, 402, "{v}");
    assert_eq!(v["type"], "/problems/insufficient-balance");
    assert_eq!(v["balance"], 0);
    assert_eq!(v["price"], UTILITY);
    // Free-form replies inside the window cost nothing, so they still go.
    app.open_window(&patient(3)).await;
    let (status, v) = app
        .post(KEY_A, &text(&patient(3), "We got your message"))
        .await;
    assert_eq!(status, 202, "{v}");
}

#[actix_rt::test]
async fn the_service_window_decides_free_form_and_price() {
    let app = spawn_app("window", Options::default()).await;
    let p = patient(5);
    let (status, v) = app.post(KEY_A, &text(&p, "hello")).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["type"], "/problems/outside-service-window");
    let before = wallet(&app, KEY_A).await["available"].as_i64().unwrap_or(0);
    app.open_window(&p).await;
    let id = app.send(&text(&p, "hello")).await;
    let t = app.send(&template(&p)).await;
    for id in [&id, &t] {
        let v = app.wait_for(id, &["read"], Duration::from_secs(10)).await;
        assert_eq!(v["status"], "read", "{v}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = wallet(&app, KEY_A).await;
    assert_eq!(
        after["available"].as_i64(),
        Some(before),
        "service and utility-in-window are free: {after}"
    );
    // Clinic B has no window with this patient.
    let (status, _) = app.post(KEY_B, &text(&p, "hello")).await;
    assert_eq!(status, 422);
}

#[actix_rt::test]
async fn templates_follow_meta_status_and_category() {
    let app = spawn_app("templates", Options::default()).await;
    let (_, list) = app.call(Method::GET, "/v1/templates", KEY_A, None).await;
    let t = list["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "appointment_reminder")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (
            t["name"].as_str(),
            t["status"].as_str(),
            t["body_parameters"].as_u64()
        ),
        (Some("appointment_reminder"), Some("APPROVED"), Some(2)),
        "{list}"
    );

    // Wrong parameter count is caught before Meta.
    let mut bad = template(PATIENT);
    bad["template"]["components"][0]["parameters"] = json!([{"type": "text", "text": "only one"}]);
    let (s, v) = app.post(KEY_A, &bad).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("template.components")),
        "{v}"
    );

    // Meta pauses it: new sends are refused naming the status; queued ones fail with the reason.
    app.sim
        .set_template_status(WABA_A, "appointment_reminder", "en", TemplateStatus::Paused);
    let mut paused = false;
    for _ in 0..100 {
        let (s, v) = app.post(KEY_A, &template(&patient(40))).await;
        if s == 422 {
            assert_eq!(v["type"], "/problems/template-not-approved");
            assert!(
                v["detail"].as_str().is_some_and(|d| d.contains("PAUSED")),
                "{v}"
            );
            paused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(paused, "the PAUSED webhook reached the catalog");
    app.sim.set_template_status(
        WABA_A,
        "appointment_reminder",
        "en",
        TemplateStatus::Approved,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meta re-categorises it as marketing: held until the clinic accepts the new price.
    app.sim.set_template_category(
        WABA_A,
        "appointment_reminder",
        "en",
        TemplateCategory::Marketing,
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, v) = app.post(KEY_A, &template(&patient(41))).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (422, Some("/problems/template-recategorised")),
        "{v}"
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/templates/appointment_reminder/en/accept-category",
            KEY_A,
            None,
        )
        .await;
    assert_eq!(s, 200);
    let before = wallet(&app, KEY_A).await["available"].as_i64().unwrap_or(0);
    let id = app.send(&template(&patient(41))).await;
    app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = wallet(&app, KEY_A).await["available"].as_i64().unwrap_or(0);
    assert_eq!(before - after, MARKETING, "billed as marketing now");

    // A new template goes to Meta as PENDING and becomes sendable when Meta approves it.
    let new = json!({"name": "lab_report_ready", "category": "UTILITY", "language": "en",
        "components": [{"type": "BODY", "text": "Hi {{1}}, your report is ready."}]});
    let (s, v) = app
        .call(Method::POST, "/v1/templates", KEY_A, Some(new))
        .await;
    assert_eq!((s, v["status"].as_str()), (201, Some("PENDING")), "{v}");
    let lab = json!({"to": PATIENT, "type": "template", "template": {"name": "lab_report_ready", "language": {"code": "en"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Asha"}]}]}});
    assert_eq!(app.post(KEY_A, &lab).await.0, 422);
    app.sim
        .set_template_status(WABA_A, "lab_report_ready", "en", TemplateStatus::Approved);
    let mut sent = false;
    for _ in 0..100 {
        if app.post(KEY_A, &lab).await.0 == 202 {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(sent, "approved by webhook");
}

#[actix_rt::test]
async fn queued_sends_of_a_paused_template_fail_and_are_refunded() {
    let app = spawn_app(
        "paused_queue",
        Options {
            tier_mps: 20,
            ..Options::default()
        },
    )
    .await;
    let before = wallet(&app, KEY_A).await["available"].as_i64().unwrap_or(0);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(app.send(&template(&patient(i))).await);
    }
    app.sim
        .set_template_status(WABA_A, "appointment_reminder", "en", TemplateStatus::Paused);
    let mut failed = 0;
    for id in &ids {
        let v = app
            .wait_for(id, &["read", "failed"], Duration::from_secs(15))
            .await;
        if v["status"] == "failed" {
            assert_eq!(v["error"]["code"], 132015, "{v}");
            assert_eq!(app.sent_for(id).len(), 0);
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "some were still queued when Meta paused the template"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = wallet(&app, KEY_A).await;
    assert_eq!(w["reserved"], 0, "{w}");
    assert_eq!(
        w["available"].as_i64(),
        Some(before - (40 - failed) * UTILITY),
        "{w}"
    );
}

#[actix_rt::test]
async fn clinics_of_one_portfolio_share_the_messaging_limit() {
    let opts = Options {
        shared_portfolio_limit: Some(3),
        ..Options::default()
    };
    let app = spawn_app("messaging_limit", opts).await;
    app.send(&template(&patient(1))).await;
    app.send(&template(&patient(2))).await;
    app.send(&template(&patient(1))).await; // the same patient counts once
    let (s, _) = app.post(KEY_B, &template(&patient(3))).await;
    assert_eq!(s, 202, "clinic B uses the third slot");
    let (s, v) = app.post(KEY_B, &template(&patient(4))).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["type"], "/problems/messaging-limit-reached");
    let (s, _) = app.post(KEY_A, &template(&patient(5))).await;
    assert_eq!(s, 429, "shared by the portfolio");
    // A patient inside their window does not count against the limit.
    app.open_window(&patient(6)).await;
    let (s, v) = app.post(KEY_A, &template(&patient(6))).await;
    assert_eq!(s, 202, "{v}");
}

#[actix_rt::test]
async fn meta_quality_updates_move_tiers_and_limits() {
    let app = spawn_app("quality", Options::default()).await;
    app.sim
        .quality_update(NUMBER_A, "THROUGHPUT_UPGRADE", Some(1000), Some("TIER_2K"));
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = app
            .call(Method::GET, "/admin/v1/clinics/clinic_a", ADMIN_KEY, None)
            .await
            .1;
        if seen["numbers"][0]["tier_mps"] == 1000 && seen["messaging_limit"] == 2000 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("tier and limit not applied: {seen}");
}

#[actix_rt::test]
async fn the_api_rate_limit_is_429_with_retry_after() {
    let app = spawn_app(
        "rate_limit",
        Options {
            api_rate_per_second: 5,
            ..Options::default()
        },
    )
    .await;
    let mut limited = None;
    for i in 0..20 {
        let resp = app
            .http
            .post(format!("{}/v1/messages", app.base))
            .bearer_auth(KEY_A)
            .json(&template(&patient(i)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if resp.status().as_u16() == 429 {
            limited = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            break;
        }
    }
    assert!(
        limited.is_some(),
        "a burst over the limit is refused with Retry-After"
    );
    // Clinic B has its own budget.
    assert_eq!(app.post(KEY_B, &template(PATIENT)).await.0, 202);
}

#[actix_rt::test]
async fn no_clinic_can_reach_another_clinics_data() {
    let app = spawn_app("isolation_all", Options::default()).await;
    let id = app.send(&template(PATIENT)).await;
    app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    // Every /v1 route, called with clinic B's key, sees only clinic B.
    assert_eq!(app.get_message(KEY_B, &id).await.0, 404);
    let (_, lb) = app
        .call(Method::GET, "/v1/wallet/ledger", KEY_B, None)
        .await;
    assert!(!lb.to_string().contains(&id), "{lb}");
    let (_, la) = app
        .call(Method::GET, "/v1/wallet/ledger", KEY_A, None)
        .await;
    assert!(la.to_string().contains(&id), "{la}");
    let (_, wb) = app.call(Method::GET, "/v1/wallet", KEY_B, None).await;
    assert_eq!(wb["settled"], 0);
    let (s, v) = app.post(KEY_B, &json!({"to": PATIENT, "from": NUMBER_A, "type": "template", "template": {"name": "appointment_reminder", "language": {"code": "en"}}})).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("from")),
        "clinic B cannot send from clinic A's number"
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/templates/appointment_reminder/en/accept-category",
            KEY_B,
            None,
        )
        .await;
    assert_eq!(
        s, 409,
        "B's own template, with nothing pending: A's state is not visible"
    );
    let (_, tb) = app.call(Method::GET, "/v1/templates", KEY_B, None).await;
    let own: Vec<&str> = tb["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        own.contains(&"appointment_reminder") && !own.contains(&"lab_report_ready"),
        "{own:?}"
    );
    for (method, path) in [
        (Method::GET, "/v1/wallet"),
        (Method::GET, "/v1/templates"),
        (Method::GET, "/v1/wallet/ledger"),
        (Method::POST, "/v1/templates/sync"),
    ] {
        assert_eq!(
            app.call(method, path, "nobody", None).await.0,
            401,
            "{path}"
        );
    }
}

#[actix_rt::test]
async fn crossing_the_low_balance_threshold_sends_a_signed_callback() {
    let app = spawn_app(
        "low_balance",
        Options {
            wallet_credit: 3 * UTILITY,
            ..Options::default()
        },
    )
    .await;
    let (url, captured) = callback_receiver();
    let secret = "callback-secret-0123456789";
    app.patch_clinic(
        "clinic_a",
        json!({
            "callback": {"url": url, "secret": secret}, "low_balance_threshold": 2 * UTILITY}),
    )
    .await;
    app.send(&template(&patient(1))).await; // 2 × UTILITY left: at the threshold, not below
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(captured.lock().is_empty(), "no callback before crossing");
    app.send(&template(&patient(2))).await; // crosses below
    let start = std::time::Instant::now();
    while captured.lock().is_empty() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = captured.lock().clone();
    assert_eq!(got.len(), 1, "exactly one crossing");
    let (sig, body) = &got[0];
    assert!(
        whatsapp_cloud::signature::verify(secret.as_bytes(), body, Some(sig)).is_ok(),
        "signed with the clinic's secret"
    );
    let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    assert_eq!(event["type"], "wallet.low_balance", "{event}");
    assert_eq!(event["clinic"], "clinic_a");
    assert_eq!(event["data"]["available"], UTILITY);
    assert!(event["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("evt_")));
    app.send(&template(&patient(3))).await; // already below: no second callback
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(captured.lock().len(), 1);
}

#[actix_rt::test]
async fn sandbox_clinics_build_against_the_gateway_for_free() {
    let app = spawn_app("sandbox_mode", Options::default()).await;
    let (s, v) = app
        .call(Method::POST, "/admin/v1/clinics", ADMIN_KEY, Some(json!({
            "id": "clinic_try", "display_name": "Trial Clinic", "waba_id": "700000000000007", "mode": "sandbox",
            "numbers": [{"phone_number_id": "700000000000008", "display": "+91 80 4555 0008", "tier_mps": 80}]})))
        .await;
    assert_eq!(s, 201, "a sandbox clinic needs no Meta token: {v}");
    let (_, key) = app
        .call(
            Method::POST,
            "/admin/v1/clinics/clinic_try/api-keys",
            ADMIN_KEY,
            None,
        )
        .await;
    let key = key["key"].as_str().unwrap_or_default().to_owned();
    // Submitted templates are "approved by Meta" shortly after.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/templates",
            &key,
            Some(
                json!({"name": "welcome", "category": "UTILITY", "language": "en",
            "components": [{"type": "BODY", "text": "Welcome {{1}}!"}]}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let welcome = json!({"to": PATIENT, "type": "template", "template": {"name": "welcome", "language": {"code": "en"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Asha"}]}]}});
    let mut id = None;
    for _ in 0..100 {
        let (s, v) = app
            .call(Method::POST, "/v1/messages", &key, Some(welcome.clone()))
            .await;
        if s == 202 {
            id = v["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = id.unwrap_or_else(|| panic!("the template was never approved"));
    // It costs nothing: the wallet was never credited.
    let mut status = Value::Null;
    for _ in 0..100 {
        status = app
            .call(Method::GET, &format!("/v1/messages/{id}"), &key, None)
            .await
            .1;
        if status["status"] == "read" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "read", "{status}");
    let (_, sent) = app.call(Method::GET, "/v1/sandbox/sent", &key, None).await;
    assert_eq!(sent["sent"].as_array().map(Vec::len), Some(1), "{sent}");
    assert!(
        app.sim.sent().is_empty(),
        "nothing reached the (live) Meta of this test"
    );
    // Play the patient: their reply opens the window for free-form messages.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/sandbox/inbound",
            &key,
            Some(json!({"from": "9876543210", "text": "Thanks!"})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let mut accepted = false;
    for _ in 0..100 {
        if app
            .call(
                Method::POST,
                "/v1/messages",
                &key,
                Some(text(PATIENT, "You're welcome")),
            )
            .await
            .0
            == 202
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted);
    assert_eq!(
        app.call(Method::GET, "/v1/wallet", &key, None).await.1["settled"],
        0
    );
    // Live clinics cannot use the sandbox routes.
    assert_eq!(
        app.call(
            Method::POST,
            "/v1/sandbox/inbound",
            KEY_A,
            Some(json!({"from": PATIENT, "text": "x"}))
        )
        .await
        .0,
        409
    );
}

#[actix_rt::test]
async fn bulk_sends_wait_for_messaging_limit_budget_instead_of_failing() {
    let opts = Options {
        shared_portfolio_limit: Some(2),
        ..Options::default()
    };
    let app = spawn_app("bulk_limit", opts).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut body = template(&patient(i));
        body["lane"] = json!("bulk");
        let (s, v) = app.post(KEY_A, &body).await;
        assert_eq!(s, 202, "bulk is accepted and waits for budget: {v}");
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(
            app.get_message(KEY_A, id).await.1["status"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    let sent = statuses
        .iter()
        .filter(|s| matches!(s.as_str(), "accepted" | "sent" | "delivered" | "read"))
        .count();
    let waiting = statuses.iter().filter(|s| s.as_str() == "queued").count();
    assert_eq!((sent, waiting), (2, 2), "{statuses:?}");
    assert_eq!(app.sim.sent().len(), 2, "only the budget went to Meta");
    assert!(app.sim.rejected().is_empty());
    // A care message for a third patient is refused outright at the API.
    let (s, _) = app.post(KEY_A, &template(&patient(9))).await;
    assert_eq!(s, 429);
}

#[actix_rt::test]
async fn clinic_and_conversation_actors_stop_when_idle_and_rebuild_from_redis() {
    let app = spawn_app(
        "actor_lifecycle",
        Options {
            actor_idle_secs: 1,
            ..Options::default()
        },
    )
    .await;
    app.open_window(&patient(1)).await;
    app.send(&template(&patient(1))).await;
    let m = app.metrics_text().await;
    assert!(
        m.contains("clinic_gateway_resident_actors{kind=\"tenant\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("clinic_gateway_resident_actors{kind=\"conversation\"} 1"),
        "{m}"
    );
    // Idle past their time: both stop; their state (window, catalog, wallet) is in Redis.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let m = app.metrics_text().await;
    assert!(
        m.contains("clinic_gateway_resident_actors{kind=\"tenant\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("clinic_gateway_resident_actors{kind=\"conversation\"} 0"),
        "{m}"
    );
    // Next use starts a fresh clinic actor that still knows the window the stopped one saw.
    let id = app.send(&text(&patient(1), "Your report is ready")).await;
    let v = app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    assert_eq!(v["status"], "read", "{v}");
}
