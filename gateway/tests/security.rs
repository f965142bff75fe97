//! Security: one clinic's credentials never reach another clinic's data on any `/v1`, `/fhir/r4`
//! or MLLP route (BOLA: the answer for another clinic's resource is the answer for one that does
//! not exist); admin routes refuse clinic keys; webhooks verify per app secret and replays are
//! harmless; bodies are bounded; slow clients are cut off; and secrets, full phone numbers and
//! document bytes never reach the logs.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clinic_gateway::config::Settings;
use clinic_gateway::domain::TenantId;
use clinic_gateway::emr::hl7::Hl7Link;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whatsapp_cloud::signature::sign;

const STATS: &str = "/v1/stats/appointments?from=2020-01-01T00:00:00Z&to=2040-01-01T00:00:00Z";

/// A well-formed id that was never issued: the last character of a real one, changed.
fn sibling(id: &str) -> String {
    let mut s = id.to_owned();
    let last = s.pop().unwrap_or('0');
    s.push(if last == '0' { '1' } else { '0' });
    s
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

/// A JSON call that also returns the content type.
async fn call_ct(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(key)
        .timeout(Duration::from_secs(20));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let ct = content_type(&resp);
    (status, ct, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts the answer is the plain 404 a made-up id gets: nothing reveals that it exists.
async fn assert_not_found(app: &TestApp, method: Method, path: &str, body: Option<Value>) {
    let (status, ct, v) = call_ct(app, method, path, KEY_B, body).await;
    assert_eq!(
        (status, ct.as_str(), v["type"].as_str()),
        (404, "application/problem+json", Some("/problems/not-found")),
        "clinic B on {path}: {v}"
    );
}

// ------------------------------------------------------------------ the route table

/// `(method, pattern)` of every `.route(...)` in `src/api/mod.rs`.
fn route_table() -> BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs");
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let Some(q1) = rest.find('"') else { break };
        let Some(q2) = rest[q1 + 1..].find('"') else {
            break;
        };
        let pattern = rest[q1 + 1..q1 + 1 + q2].to_owned();
        let Some(w) = rest.find("web::") else { break };
        let method: String = rest[w + 5..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        out.insert((method.to_uppercase(), pattern));
    }
    out
}

/// Every clinic route and the BOLA case that covers it (in `clinic_b_cannot_reach_clinic_a`,
/// `sandbox_clinics_see_only_their_own`).
const COVERED: &[(&str, &str)] = &[
    ("POST", "/v1/messages"),
    ("GET", "/v1/messages"),
    ("GET", "/v1/messages/{id}"),
    ("POST", "/v1/messages/{id}/retry"),
    ("POST", "/v1/prescriptions"),
    ("POST", "/v1/lab-reports"),
    ("POST", "/v1/health-records"),
    ("GET", "/v1/documents/{id}"),
    ("POST", "/v1/broadcasts"),
    ("GET", "/v1/broadcasts/{id}"),
    ("POST", "/v1/broadcasts/{id}/cancel"),
    ("GET", "/v1/patients"),
    ("POST", "/v1/patients/import"),
    ("PUT", "/v1/patients/{external_id}"),
    ("GET", "/v1/patients/{external_id}"),
    ("DELETE", "/v1/patients/{external_id}"),
    ("POST", "/v1/visits"),
    ("GET", "/v1/feedback"),
    ("GET", "/v1/inbox"),
    ("GET", "/v1/stats/appointments"),
    ("POST", "/v1/appointments"),
    ("GET", "/v1/appointments"),
    ("GET", "/v1/appointments/{id}"),
    ("PATCH", "/v1/appointments/{id}"),
    ("GET", "/v1/wallet"),
    ("GET", "/v1/wallet/ledger"),
    ("GET", "/v1/templates"),
    ("POST", "/v1/templates"),
    ("POST", "/v1/templates/sync"),
    ("POST", "/v1/templates/{name}/{language}/accept-category"),
    ("POST", "/v1/sandbox/inbound"),
    ("GET", "/v1/sandbox/sent"),
];

#[test]
fn every_clinic_route_has_a_bola_case() {
    let table = route_table();
    assert!(table.len() > 20, "the route table was read: {table:?}");
    let covered: BTreeSet<(String, String)> = COVERED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = table
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/"))
        .filter(|r| !covered.contains(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a cross-clinic test in tests/security.rs: {missing:?}"
    );
    let admin: Vec<_> = table
        .iter()
        .filter(|(_, p)| p.starts_with("/admin/"))
        .collect();
    let tested: BTreeSet<_> = ADMIN_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    for (m, p) in admin {
        let concrete = p
            .replace("{id}", "clinic_a")
            .replace("{key}", "key_00000000000000000000000000");
        assert!(
            tested.contains(&(m.clone(), concrete.clone())),
            "admin route {m} {p} is not in ADMIN_ROUTES"
        );
    }
}

// ------------------------------------------------------------------ BOLA over /v1

/// Clinic A creates one of everything; clinic B's key then tries every route on it.
#[actix_rt::test]
async fn clinic_b_cannot_reach_clinic_a() {
    let app = spawn_app(
        "sec_bola",
        Options {
            full_library: true,
            max_attempts: 1,
            ..Options::default()
        },
    )
    .await;
    let (s, v) = app
        .call(Method::POST, "/v1/templates/sync", KEY_A, None)
        .await;
    assert_eq!(s, 200, "{v}");

    // ---- clinic A's data
    let msg = app.send(&template(&patient(1))).await;
    app.wait_for(&msg, &["delivered", "read"], Duration::from_secs(10))
        .await;
    let (dead, v) = app.send_to_number_not_on_whatsapp(&patient(2)).await;
    assert_eq!(v["status"], "failed", "{v}");
    let pdf = clinic_gateway::pdf::sample("Hb 13.2 g/dL", 2_000);
    let (s, doc) = app
        .call(
            Method::POST,
            "/v1/lab-reports",
            KEY_A,
            Some(
                json!({"external_id": "LAB-SEC-1", "patient": {"phone": patient(3), "name": "Asha"},
                "title": "CBC", "pdf_base64": b64(&pdf)}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{doc}");
    let doc_id = doc["id"].as_str().unwrap_or_default().to_owned();
    let (s, apt) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(
                json!({"external_id": "EMR-SEC-1", "patient": {"phone": patient(4), "name": "Ravi"},
                "doctor": "Dr. Rao", "start": at(3 * DAY_MS)}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{apt}");
    let apt_id = apt["id"].as_str().unwrap_or_default().to_owned();
    let (s, v) = app
        .call(
            Method::PUT,
            "/v1/patients/SEC-P1",
            KEY_A,
            Some(json!({"phone": patient(5), "name": "Meena", "tags": ["a-only"]})),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let (s, brd) = app
        .call(
            Method::POST,
            "/v1/broadcasts",
            KEY_A,
            Some(
                json!({"template": {"name": "appointment_reminder", "language": "en"},
                "parameters": [{"field": "name"}, {"value": "10:30"}],
                "recipients": [{"phone": patient(6), "name": "Devi"}],
                "scheduled_at": at(3_600_000)}),
            ),
        )
        .await;
    assert_eq!(s, 202, "{brd}");
    let brd_id = brd["broadcast"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    app.open_window(&patient(7)).await; // an inbox entry for clinic A
    let (s, visit) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_A,
            Some(json!({"external_id": "ENC-SEC-1", "patient": {"phone": patient(8), "name": "Kiran"},
                "visit_type": "Consultation"})),
        )
        .await;
    assert_eq!(s, 201, "{visit}");
    let a_inbox = eventually_async(Duration::from_secs(10), || async {
        let (_, inbox) = app.call(Method::GET, "/v1/inbox", KEY_A, None).await;
        inbox["messages"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert!(a_inbox, "clinic A's inbox has the patient's message");

    // ---- clinic B, route by route
    // Messages.
    assert_not_found(&app, Method::GET, &format!("/v1/messages/{msg}"), None).await;
    assert_not_found(
        &app,
        Method::GET,
        &format!("/v1/messages/{}", sibling(&msg)),
        None,
    )
    .await;
    assert_not_found(
        &app,
        Method::POST,
        &format!("/v1/messages/{dead}/retry"),
        None,
    )
    .await;
    let (s, listed) = app.call(Method::GET, "/v1/messages", KEY_B, None).await;
    assert_eq!(s, 200, "{listed}");
    assert!(!listed.to_string().contains(&dead), "{listed}");
    let mut from_a = template(PATIENT);
    from_a["from"] = json!(NUMBER_A);
    let (s, v) = app.post(KEY_B, &from_a).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("from")), "{v}");

    // Documents: B's external ids are B's own; A's document is not B's to read.
    assert_not_found(&app, Method::GET, &format!("/v1/documents/{doc_id}"), None).await;
    for route in ["/v1/lab-reports", "/v1/prescriptions", "/v1/health-records"] {
        let (s, v) = app
            .call(
                Method::POST,
                route,
                KEY_B,
                Some(json!({"external_id": "LAB-SEC-1", "patient": {"phone": patient(3), "name": "Asha"},
                    "title": "CBC", "pdf_base64": b64(&pdf)})),
            )
            .await;
        assert!(
            s == 200 || s == 201 || s == 422,
            "{route}: B's own document or a refusal, never A's: {s} {v}"
        );
        assert_ne!(v["id"].as_str(), Some(doc_id.as_str()), "{route}: {v}");
        assert_ne!(v["tenant"], "clinic_a", "{route}: {v}");
    }
    let (s, a_doc) = app
        .call(Method::GET, &format!("/v1/documents/{doc_id}"), KEY_A, None)
        .await;
    assert_eq!((s, &a_doc["revision"]), (200, &json!(1)), "{a_doc}");

    // Broadcasts.
    assert_not_found(&app, Method::GET, &format!("/v1/broadcasts/{brd_id}"), None).await;
    assert_not_found(
        &app,
        Method::POST,
        &format!("/v1/broadcasts/{brd_id}/cancel"),
        None,
    )
    .await;
    let (_, a_brd) = app
        .call(
            Method::GET,
            &format!("/v1/broadcasts/{brd_id}"),
            KEY_A,
            None,
        )
        .await;
    assert_ne!(a_brd["status"], "cancelled", "{a_brd}");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/broadcasts",
            KEY_B,
            Some(
                json!({"template": {"name": "appointment_reminder", "language": "en"},
                "recipients": [{"phone": patient(6)}], "number": NUMBER_A, "dry_run": true}),
            ),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("number")), "{v}");

    // Patients.
    assert_not_found(&app, Method::GET, "/v1/patients/SEC-P1", None).await;
    assert_not_found(&app, Method::DELETE, "/v1/patients/SEC-P1", None).await;
    let (_, b_list) = app.call(Method::GET, "/v1/patients", KEY_B, None).await;
    assert!(!b_list.to_string().contains("SEC-P1"), "{b_list}");
    let resp = app
        .http
        .post(format!("{}/v1/patients/import", app.base))
        .bearer_auth(KEY_B)
        .header("Content-Type", "text/csv")
        .body("external_id,phone,name\nSEC-P1,9876500999,Impostor\n")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let (s, v) = app
        .call(
            Method::PUT,
            "/v1/patients/SEC-P1",
            KEY_B,
            Some(json!({"phone": "+919876500998", "name": "Other"})),
        )
        .await;
    assert!(s == 200 || s == 201, "B's own SEC-P1: {s} {v}");
    let (_, a_p) = app
        .call(Method::GET, "/v1/patients/SEC-P1", KEY_A, None)
        .await;
    assert_eq!(
        (a_p["phone"].as_str(), a_p["name"].as_str()),
        (Some(patient(5).as_str()), Some("Meena")),
        "{a_p}"
    );

    // Stats: B has no appointments yet; A has one.
    let (s, stats) = app.call(Method::GET, STATS, KEY_B, None).await;
    assert_eq!(s, 200, "{stats}");
    let (_, a_stats) = app.call(Method::GET, STATS, KEY_A, None).await;
    assert_eq!(
        (
            stats["stats"]["appointments"].as_u64(),
            a_stats["stats"]["appointments"].as_u64()
        ),
        (Some(0), Some(1)),
        "{stats} vs {a_stats}"
    );

    // Appointments.
    assert_not_found(
        &app,
        Method::GET,
        &format!("/v1/appointments/{apt_id}"),
        None,
    )
    .await;
    assert_not_found(
        &app,
        Method::PATCH,
        &format!("/v1/appointments/{apt_id}"),
        Some(json!({"status": "cancelled"})),
    )
    .await;
    let (_, b_apts) = app.call(Method::GET, "/v1/appointments", KEY_B, None).await;
    assert!(!b_apts.to_string().contains(&apt_id), "{b_apts}");
    let (s, b_apt) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_B,
            Some(
                json!({"external_id": "EMR-SEC-1", "patient": {"phone": patient(4), "name": "Ravi"},
                "start": at(4 * DAY_MS)}),
            ),
        )
        .await;
    assert_eq!(s, 201, "B's own appointment, not a replay of A's: {b_apt}");
    assert_ne!(b_apt["id"].as_str(), Some(apt_id.as_str()));
    // A visit naming A's appointment is refused exactly like one naming no appointment.
    let visit_with = |apt: &str| json!({"patient": {"phone": patient(4)}, "visit_type": "Consultation", "appointment_id": apt});
    let (s1, v1) = app
        .call(Method::POST, "/v1/visits", KEY_B, Some(visit_with(&apt_id)))
        .await;
    let (s2, v2) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_B,
            Some(visit_with(&sibling(&apt_id))),
        )
        .await;
    assert_eq!((s1, &v1["detail"]), (s2, &v2["detail"]), "{v1} vs {v2}");
    assert!(s1 >= 400, "{v1}");
    let (_, a_apt) = app
        .call(
            Method::GET,
            &format!("/v1/appointments/{apt_id}"),
            KEY_A,
            None,
        )
        .await;
    assert_eq!(a_apt["status"], "booked", "{a_apt}");

    // Feedback, inbox, stats: B's own only.
    let (_, fb) = app.call(Method::GET, "/v1/feedback", KEY_B, None).await;
    assert_eq!(fb["count"], 0, "{fb}");
    let (_, inbox) = app.call(Method::GET, "/v1/inbox", KEY_B, None).await;
    assert_eq!(
        inbox["messages"].as_array().map(Vec::len),
        Some(0),
        "{inbox}"
    );

    // Wallet.
    let (_, ledger) = app
        .call(Method::GET, "/v1/wallet/ledger?limit=1000", KEY_B, None)
        .await;
    for id in [&msg, &dead] {
        assert!(!ledger.to_string().contains(id.as_str()), "{ledger}");
    }

    // Templates: B's WABA only.
    let a_before = app.sim.templates(WABA_A).len();
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/templates",
            KEY_B,
            Some(
                json!({"name": "b_only_notice", "category": "UTILITY", "language": "en",
                "components": [{"type": "BODY", "text": "Hello {{1}}"}]}),
            ),
        )
        .await;
    assert!(s < 300, "{s} {v}");
    assert_eq!(
        app.sim.templates(WABA_A).len(),
        a_before,
        "nothing in A's WABA"
    );
    assert!(app
        .sim
        .templates(WABA_B)
        .iter()
        .any(|t| t.name == "b_only_notice"));
    let (_, a_tpl) = app.call(Method::GET, "/v1/templates", KEY_A, None).await;
    assert!(!a_tpl.to_string().contains("b_only_notice"), "{a_tpl}");
    let (s, _) = app
        .call(Method::POST, "/v1/templates/sync", KEY_B, None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/templates/appointment_reminder/en/accept-category",
            KEY_B,
            None,
        )
        .await;
    assert_eq!(s, 409, "B's own template, nothing pending");

    // Sandbox routes: B is a live clinic.
    for (m, p) in [
        (Method::GET, "/v1/sandbox/sent"),
        (Method::POST, "/v1/sandbox/inbound"),
    ] {
        let (s, _, v) = call_ct(
            &app,
            m,
            p,
            KEY_B,
            Some(json!({"from": PATIENT, "text": "x"})),
        )
        .await;
        assert!(s == 403 || s == 409 || s == 422, "{p}: {s} {v}");
        assert!(!v.to_string().contains(NUMBER_A), "{v}");
    }

    // Nothing of A's changed: the message, the dead letter, the broadcast.
    let (_, m) = app.get_message(KEY_A, &msg).await;
    assert!(
        matches!(m["status"].as_str(), Some("delivered" | "read")),
        "{m}"
    );
    let (_, d) = app.get_message(KEY_A, &dead).await;
    assert_eq!(d["status"], "failed");
}

/// Two sandbox clinics: each plays only its own patients and sees only its own sends.
#[actix_rt::test]
async fn sandbox_clinics_see_only_their_own() {
    let app = spawn_app("sec_sandbox", Options::default()).await;
    let mut keys = Vec::new();
    for (id, waba, number) in [
        ("clinic_s1", "710000000000001", "710000000000002"),
        ("clinic_s2", "720000000000001", "720000000000002"),
    ] {
        let (s, v) = app
            .call(Method::POST, "/admin/v1/clinics", ADMIN_KEY, Some(json!({
                "id": id, "display_name": id, "waba_id": waba, "mode": "sandbox",
                "numbers": [{"phone_number_id": number, "display": "+91 80 4555 0009", "tier_mps": 80}]})))
            .await;
        assert_eq!(s, 201, "{v}");
        let (_, key) = app
            .call(
                Method::POST,
                &format!("/admin/v1/clinics/{id}/api-keys"),
                ADMIN_KEY,
                None,
            )
            .await;
        keys.push(key["key"].as_str().unwrap_or_default().to_owned());
    }
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/sandbox/inbound",
            &keys[0],
            Some(json!({"from": "9876543210", "text": "hello"})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let mut sent = false;
    for _ in 0..100 {
        if app
            .call(
                Method::POST,
                "/v1/messages",
                &keys[0],
                Some(text(PATIENT, "hi")),
            )
            .await
            .0
            == 202
        {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent, "clinic_s1's window opened");
    let s1_sees = eventually_async(Duration::from_secs(10), || async {
        let (_, v) = app
            .call(Method::GET, "/v1/sandbox/sent", &keys[0], None)
            .await;
        v["sent"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert!(s1_sees);
    let (_, s2_sent) = app
        .call(Method::GET, "/v1/sandbox/sent", &keys[1], None)
        .await;
    assert_eq!(s2_sent["sent"], json!([]), "{s2_sent}");
    // s1's patient never wrote to s2: a free-form message from s2 is outside the window.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/messages",
            &keys[1],
            Some(text(PATIENT, "hi")),
        )
        .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (422, Some("/problems/outside-service-window")),
        "{v}"
    );
}

// ------------------------------------------------------------------ admin routes

const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("POST", "/admin/v1/clinics"),
    ("GET", "/admin/v1/clinics"),
    ("GET", "/admin/v1/clinics/clinic_a"),
    ("PATCH", "/admin/v1/clinics/clinic_a"),
    ("POST", "/admin/v1/clinics/clinic_a/suspend"),
    ("POST", "/admin/v1/clinics/clinic_a/resume"),
    ("POST", "/admin/v1/clinics/clinic_a/api-keys"),
    ("GET", "/admin/v1/clinics/clinic_a/api-keys"),
    (
        "DELETE",
        "/admin/v1/clinics/clinic_a/api-keys/key_00000000000000000000000000",
    ),
    ("POST", "/admin/v1/clinics/clinic_a/wallet/credits"),
    ("GET", "/admin/v1/clinics/clinic_a/stats"),
    ("POST", "/admin/v1/clinics/clinic_a/retention/sweep"),
];

#[actix_rt::test]
async fn admin_routes_refuse_clinic_keys_and_never_show_secrets() {
    let app = spawn_app("sec_admin", Options::default()).await;
    let (_, wallet_before) = app.call(Method::GET, "/v1/wallet", KEY_A, None).await;
    for key in [KEY_A, KEY_B, "", "cgk_not_a_key"] {
        for (m, p) in ADMIN_ROUTES {
            let method = Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET);
            let body = json!({"amount": 1_000_000, "reference": "theft", "id": "clinic_x",
                "display_name": "x", "waba_id": "1", "suspended": true});
            // Valid queries, so only the credential decides.
            let path = if p.ends_with("/stats") {
                format!("{p}?from=2020-01-01T00:00:00Z&to=2030-01-01T00:00:00Z")
            } else {
                (*p).to_owned()
            };
            let (s, ct, v) = call_ct(&app, method, &path, key, Some(body)).await;
            assert_eq!(
                (s, ct.as_str()),
                (401, "application/problem+json"),
                "{m} {p} with {key:?}: {v}"
            );
        }
    }
    // Nothing happened: the wallet, the clinic, its keys.
    let (_, wallet_after) = app.call(Method::GET, "/v1/wallet", KEY_A, None).await;
    assert_eq!(wallet_before, wallet_after);
    assert_eq!(
        app.post(KEY_A, &template(PATIENT)).await.0,
        202,
        "A is not suspended"
    );

    // The admin sees the clinic, never its secrets.
    let (s, c) = app
        .call(Method::GET, "/admin/v1/clinics/clinic_a", ADMIN_KEY, None)
        .await;
    assert_eq!(s, 200, "{c}");
    let shown = c.to_string();
    for secret in [APP_SECRET, "token-clinic_a", KEY_A] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let (_, list) = app
        .call(Method::GET, "/admin/v1/clinics", ADMIN_KEY, None)
        .await;
    for secret in [APP_SECRET, "token-clinic_a", "token-clinic_b"] {
        assert!(!list.to_string().contains(secret), "{secret} in {list}");
    }
    let (_, keys) = app
        .call(
            Method::GET,
            "/admin/v1/clinics/clinic_a/api-keys",
            ADMIN_KEY,
            None,
        )
        .await;
    assert!(!keys.to_string().contains(KEY_A), "{keys}");
}

// ------------------------------------------------------------------ webhooks

fn inbound_webhook(number: &str, waba: &str, from: &str, wamid: &str, body: &str) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "918045550001", "phone_number_id": number},
            "contacts": [{"profile": {"name": "P"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(),
                "type": "text", "text": {"body": body}}]}}]}]})
    .to_string()
}

fn status_webhook(
    number: &str,
    waba: &str,
    wamid: &str,
    id: &str,
    status: &str,
    to: &str,
) -> String {
    let mut item = json!({"id": wamid, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(),
        "recipient_id": to.trim_start_matches('+'), "biz_opaque_callback_data": id});
    if status == "delivered" || status == "read" {
        item["pricing"] = json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": "utility"});
    }
    if status == "failed" {
        item["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "918045550001", "phone_number_id": number},
                  "statuses": [item]}}]}]})
    .to_string()
}

async fn post_webhook(app: &TestApp, body: &str, signature: Option<&str>) -> u16 {
    let mut req = app
        .http
        .post(format!("{}/webhooks/whatsapp", app.base))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature-256", s);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

#[actix_rt::test]
async fn webhooks_verify_per_app_secret_and_replays_change_nothing() {
    let opts = Options {
        configure: Some(Arc::new(|s: &mut Settings| {
            s.clinics[1].app_secret = "app-secret-of-clinic-b".into();
        })),
        ..Options::default()
    };
    let app = spawn_app("sec_webhooks", opts).await;
    let id = app.send(&template(PATIENT)).await;
    let v = app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    assert_eq!(v["status"], "read", "{v}");
    let wamid = v["wamid"].as_str().unwrap_or_default().to_owned();
    let (_, wallet) = app.call(Method::GET, "/v1/wallet", KEY_A, None).await;

    // A "failed" for A's message, signed with B's secret, no secret, garbage or another body's.
    let forged = status_webhook(NUMBER_A, WABA_A, &wamid, &id, "failed", PATIENT);
    let other_body = status_webhook(NUMBER_A, WABA_A, &wamid, &id, "sent", PATIENT);
    for sig in [
        Some(sign(b"app-secret-of-clinic-b", forged.as_bytes())),
        None,
        Some("sha256=".to_owned()),
        Some("sha256=zz".to_owned()),
        Some(format!("sha256={}", "0".repeat(64))),
        Some(sign(APP_SECRET.as_bytes(), other_body.as_bytes())),
        Some(sign(APP_SECRET.as_bytes(), forged.as_bytes()).to_uppercase()),
    ] {
        assert_eq!(
            post_webhook(&app, &forged, sig.as_deref()).await,
            401,
            "{sig:?}"
        );
    }
    // Clinic B's secret does not sign for clinic A's number, nor A's for B's WABA.
    let b_patient = patient(40);
    let forged_b = inbound_webhook(
        NUMBER_B,
        WABA_B,
        b_patient.trim_start_matches('+'),
        "wamid.FORGED1",
        "hi",
    );
    assert_eq!(
        post_webhook(
            &app,
            &forged_b,
            Some(&sign(APP_SECRET.as_bytes(), forged_b.as_bytes()))
        )
        .await,
        401
    );
    let (_, m) = app.get_message(KEY_A, &id).await;
    assert_eq!(m["status"], "read", "{m}");
    assert!(
        matches!(
            app.store
                .window_until(&tenant("clinic_b"), b_patient.trim_start_matches('+'))
                .await,
            Ok(None)
        ),
        "a forged inbound opened no window"
    );

    // A genuine delivery replayed many times: nothing moves, nothing is charged twice.
    let delivered = status_webhook(NUMBER_A, WABA_A, &wamid, &id, "delivered", PATIENT);
    let sig = sign(APP_SECRET.as_bytes(), delivered.as_bytes());
    for _ in 0..5 {
        assert_eq!(post_webhook(&app, &delivered, Some(&sig)).await, 200);
    }
    let failed = status_webhook(NUMBER_A, WABA_A, &wamid, &id, "failed", PATIENT);
    let fsig = sign(APP_SECRET.as_bytes(), failed.as_bytes());
    assert_eq!(post_webhook(&app, &failed, Some(&fsig)).await, 200);
    let (_, m) = app.get_message(KEY_A, &id).await;
    assert_eq!(
        m["status"], "read",
        "a late failed never moves a read message: {m}"
    );
    let (_, wallet_after) = app.call(Method::GET, "/v1/wallet", KEY_A, None).await;
    assert_eq!(wallet, wallet_after, "replays charge and release nothing");

    // A patient's message replayed: one inbox entry.
    let p = patient(41);
    let inbound = inbound_webhook(
        NUMBER_A,
        WABA_A,
        p.trim_start_matches('+'),
        "wamid.REPLAYED1",
        "what time do you open?",
    );
    let isig = sign(APP_SECRET.as_bytes(), inbound.as_bytes());
    for _ in 0..4 {
        assert_eq!(post_webhook(&app, &inbound, Some(&isig)).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, inbox) = app.call(Method::GET, "/v1/inbox", KEY_A, None).await;
    let entries = inbox["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m.to_string().contains("what time do you open?"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(entries, 1, "a replayed inbound is one inbox entry: {inbox}");
}

// ------------------------------------------------------------------ limits

#[actix_rt::test]
async fn oversized_bodies_are_413_problems_everywhere() {
    let app = spawn_app(
        "sec_limits",
        Options {
            max_message_bytes: 4_096,
            ..Options::default()
        },
    )
    .await;
    let big_text = "x".repeat(8_000);
    let (s, v) = app.post(KEY_A, &text(PATIENT, &big_text)).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (413, Some("/problems/body-too-large")),
        "{v}"
    );
    // Chunked, with no Content-Length to refuse up front.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let _ = sock.write_all(head.as_bytes()).await;
    for _ in 0..8 {
        let chunk = format!("400\r\n{}\r\n", " ".repeat(1_024));
        if sock.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 4_096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("no answer to a chunked body"))
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Every other body-taking route refuses a body declared over its bound before reading it.
    for (path, declared) in DECLARED_TOO_LARGE {
        let method = if path.starts_with("/v1/appointments/") {
            "PATCH"
        } else {
            "POST"
        };
        let (status, _) = declared_body(&app, method, path, *declared).await;
        assert_eq!(status, 413, "{method} {path}: {declared} bytes declared");
    }
    // Still serving.
    assert_eq!(app.post(KEY_A, &template(PATIENT)).await.0, 202);
}

/// Routes that take a body, and a size over each one's bound.
const DECLARED_TOO_LARGE: &[(&str, usize)] = &[
    ("/v1/appointments", 4 * 1024 * 1024),
    (
        "/v1/appointments/apt_01JNOTEXISTING00000000000",
        4 * 1024 * 1024,
    ),
    ("/v1/visits", 4 * 1024 * 1024),
    ("/v1/lab-reports", 64 * 1024 * 1024),
    ("/v1/prescriptions", 64 * 1024 * 1024),
    ("/v1/health-records", 64 * 1024 * 1024),
    ("/v1/broadcasts", 33 * 1024 * 1024),
    ("/v1/patients/import", 51 * 1024 * 1024),
    ("/v1/templates", 4 * 1024 * 1024),
    ("/webhooks/whatsapp", 4 * 1024 * 1024),
    (
        "/v1/messages/msg_01JNOTEXISTING000000000000/retry",
        1024 * 1024,
    ),
    ("/fhir/r4/Appointment", 64 * 1024 * 1024),
];

#[actix_rt::test]
async fn oversized_bodies_are_refused_in_the_apis_error_format() {
    let app = spawn_app("sec_limits_format", Options::default()).await;
    let mut wrong = Vec::new();
    for (path, declared) in DECLARED_TOO_LARGE {
        let method = if path.starts_with("/v1/appointments/") {
            "PATCH"
        } else {
            "POST"
        };
        let (status, ct) = declared_body(&app, method, path, *declared).await;
        let ok = ct.starts_with("application/problem+json")
            || (path.starts_with("/fhir/") && ct.starts_with("application/fhir+json"));
        if status != 413 || !ok {
            wrong.push(format!("{method} {path}: {status} {ct}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not a problem+json 413:\n{}",
        wrong.join("\n")
    );
}

/// Sends only the head of a request declaring `declared` body bytes; returns the status and
/// content type of the answer.
async fn declared_body(app: &TestApp, method: &str, path: &str, declared: usize) -> (u16, String) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut sock = TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ct = if path.contains("import") {
        "text/csv"
    } else {
        "application/json"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: {ct}\r\nContent-Length: {declared}\r\n\r\n"
    );
    sock.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4_096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("{path}: no answer before the body (it waits for it)"));
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => panic!("{path}: no answer before the body (it waits for it)"),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ct = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, ct)
}

#[actix_rt::test]
async fn slow_http_clients_are_cut_off() {
    let app = spawn_app("sec_slowloris", Options::default()).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Headers that never finish: closed after server.client_request_timeout_ms.
    let mut s = TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => break true, // a 408
            Err(_) => {
                if start.elapsed() > Duration::from_secs(30) {
                    break false;
                }
                let _ = s.write_all(b"X-Drip: 1\r\n").await;
            }
        }
    };
    assert!(closed, "a never-ending header block is cut off");
    // Still serving.
    assert_eq!(app.post(KEY_A, &template(PATIENT)).await.0, 202);
}

/// A body that drips one byte a second must not hold a connection for as long as the client
/// likes (slow loris on bodies: the body read is bounded in time).
#[actix_rt::test]
async fn a_dripping_body_is_cut_off() {
    let app = spawn_app("sec_slowbody", Options::default()).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let cut = loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Ok(Ok(_)) => break true,
            Err(_) => {
                if start.elapsed() > Duration::from_secs(20) {
                    break false;
                }
                if s.write_all(b" ").await.is_err() {
                    break true;
                }
            }
        }
    };
    assert!(cut, "a body dripping for 20 s is still being read");
}

// ------------------------------------------------------------------ FHIR

fn fhir_appointment(id: &str, phone: &str, start_ms_from_now: i64) -> Value {
    json!({"resourceType": "Appointment", "id": id, "status": "booked",
    "contained": [{"resourceType": "Patient", "id": "pat", "name": [{"text": "Asha Rao"}],
        "telecom": [{"system": "phone", "value": phone, "use": "mobile"}]}],
    "start": at(start_ms_from_now), "end": at(start_ms_from_now + 900_000),
    "participant": [
        {"actor": {"reference": "#pat"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/d1", "display": "Dr. Rao"}, "status": "accepted"}
    ]})
}

async fn fhir(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}/fhir/r4{path}", app.base))
        .header("Content-Type", "application/fhir+json")
        .bearer_auth(key)
        .timeout(Duration::from_secs(20));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn a_appointments(app: &TestApp) -> Vec<Value> {
    app.call(Method::GET, "/v1/appointments", KEY_A, None)
        .await
        .1["appointments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[actix_rt::test]
async fn fhir_requests_from_clinic_b_never_touch_clinic_a() {
    let app = spawn_app("sec_fhir", Options::default()).await;
    let p = patient(60);
    let (s, v) = fhir(
        &app,
        KEY_A,
        Method::PUT,
        "/Appointment/fh-sec-1",
        Some(&fhir_appointment("fh-sec-1", &p, 3 * DAY_MS)),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let before = a_appointments(&app).await;
    assert_eq!(before.len(), 1, "{before:?}");

    // B deletes, moves and cancels "the same" Appointment: B's namespace only.
    let (s, v) = fhir(&app, KEY_B, Method::DELETE, "/Appointment/fh-sec-1", None).await;
    assert!(s != 500 && s != 403, "{s} {v}");
    let moved = fhir_appointment("fh-sec-1", &p, 5 * DAY_MS);
    let (s, v) = fhir(
        &app,
        KEY_B,
        Method::PUT,
        "/Appointment/fh-sec-1",
        Some(&moved),
    )
    .await;
    assert!(s == 200 || s == 201, "B's own appointment: {s} {v}");
    let mut cancelled = fhir_appointment("fh-sec-1", &p, 5 * DAY_MS);
    cancelled["status"] = json!("cancelled");
    let (s, v) = fhir(
        &app,
        KEY_B,
        Method::PUT,
        "/Appointment/fh-sec-1",
        Some(&cancelled),
    )
    .await;
    assert!(s < 500, "{s} {v}");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Appointment/fh-sec-1"}}]});
    let (s, v) = fhir(&app, KEY_B, Method::POST, "", Some(&bundle)).await;
    assert!(s < 500, "{s} {v}");
    let after = a_appointments(&app).await;
    assert_eq!(
        (after[0]["status"].clone(), after[0]["start"].clone()),
        (before[0]["status"].clone(), before[0]["start"].clone()),
        "clinic A's appointment is untouched: {after:?}"
    );
    // No key, a wrong key: 401 OperationOutcome.
    for key in ["", "not-a-key"] {
        let (s, v) = fhir(&app, key, Method::DELETE, "/Appointment/fh-sec-1", None).await;
        assert_eq!(
            (s, v["resourceType"].as_str()),
            (401, Some("OperationOutcome")),
            "{v}"
        );
    }
}

// ------------------------------------------------------------------ MLLP

#[actix_rt::test]
async fn mllp_senders_reach_only_their_own_clinic() {
    let opts = Options {
        configure: Some(Arc::new(|s: &mut Settings| {
            enable_mllp(s);
            s.clinics[0].emr.hl7 = Some(emr_link("SUNRISE"));
            s.clinics[1].emr.hl7 = Some(emr_link("MOONRISE"));
        })),
        ..Options::default()
    };
    let app = spawn_app("sec_mllp", opts).await;
    let port = app
        .mllp_port
        .unwrap_or_else(|| panic!("MLLP is not enabled"));
    let p = patient(70);
    assert_eq!(
        mllp_call(
            port,
            &siu("EMR|SUNRISE", "SIU^S12", "A-1", "APT-SEC", &p, 3 * DAY_MS)
        )
        .await,
        "AA"
    );
    let a_id = app
        .store
        .appointment_by_external(&tenant("clinic_a"), "APT-SEC")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("A's appointment"));
    let before = app
        .call(
            Method::GET,
            &format!("/v1/appointments/{a_id}"),
            KEY_A,
            None,
        )
        .await
        .1;
    // Clinic B's EMR moves and cancels "APT-SEC": it means B's own appointment of that name.
    for (kind, control, start) in [
        ("SIU^S13", "B-1", 5 * DAY_MS),
        ("SIU^S15", "B-2", 5 * DAY_MS),
        ("SIU^S17", "B-3", 5 * DAY_MS),
    ] {
        let code = mllp_call(
            port,
            &siu("EMR|MOONRISE", kind, control, "APT-SEC", &p, start),
        )
        .await;
        assert!(
            matches!(code.as_str(), "AA" | "AE" | "AR"),
            "{kind}: {code}"
        );
    }
    let after = app
        .call(
            Method::GET,
            &format!("/v1/appointments/{a_id}"),
            KEY_A,
            None,
        )
        .await
        .1;
    assert_eq!(
        (after["status"].clone(), after["start"].clone()),
        (before["status"].clone(), before["start"].clone()),
        "{before} -> {after}"
    );
    let b_id = app
        .store
        .appointment_by_external(&tenant("clinic_b"), "APT-SEC")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(
        b_id.map(|id| id.to_string()),
        Some(a_id.to_string()),
        "B's lookups are B's"
    );
}

#[actix_rt::test]
async fn mllp_senders_outside_their_allowed_sources_are_refused() {
    let opts = Options {
        configure: Some(Arc::new(|s: &mut Settings| {
            enable_mllp(s);
            s.clinics[0].emr.hl7 = Some(Hl7Link {
                allowed_sources: vec!["10.20.0.0/16".into()],
                ..emr_link("SUNRISE")
            });
        })),
        ..Options::default()
    };
    let app = spawn_app("sec_mllp_sources", opts).await;
    let port = app
        .mllp_port
        .unwrap_or_else(|| panic!("MLLP is not enabled"));
    let p = patient(71);
    assert_eq!(
        mllp_call(
            port,
            &siu("EMR|SUNRISE", "SIU^S12", "S-1", "APT-SRC", &p, 3 * DAY_MS)
        )
        .await,
        "AR",
        "127.0.0.1 is not in 10.20.0.0/16"
    );
    assert!(matches!(
        app.store
            .appointment_by_external(&tenant("clinic_a"), "APT-SRC")
            .await,
        Ok(None)
    ));
}

// ------------------------------------------------------------------ logs

/// Everything the process logs, as production writes it (JSON lines), from the first call on.
fn captured_logs() -> Arc<parking_lot::Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<parking_lot::Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<parking_lot::Mutex<Vec<u8>>> = Arc::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,clinic_gateway=debug,whatsapp_cloud=debug,hl7_v2=debug,fhir_r4=debug",
            ))
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogSink(Arc<parking_lot::Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs of digits that are full patient numbers: 10 digits from 98…, or 12 from 9198….
fn full_phone_numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        if (run.len() == 10 && run.starts_with("98"))
            || (run.len() == 12 && run.starts_with("9198"))
        {
            out.push(run.clone());
        }
        run.clear();
    }
    out
}

#[actix_rt::test]
async fn logs_carry_no_secrets_phone_numbers_or_documents() {
    let logs = captured_logs();
    let app = spawn_app(
        "sec_logs",
        Options {
            full_library: true,
            configure: Some(Arc::new(|s: &mut Settings| {
                enable_mllp(s);
                s.clinics[0].emr.hl7 = Some(emr_link("SUNRISE"));
            })),
            ..Options::default()
        },
    )
    .await;
    let (s, _) = app
        .call(Method::POST, "/v1/templates/sync", KEY_A, None)
        .await;
    assert_eq!(s, 200);
    let (url, captured) = callback_receiver();
    let callback_secret = "callback-secret-never-logged-7f3a";
    let emr_token = "emr-token-never-logged-91c2";
    app.patch_clinic(
        "clinic_a",
        json!({"callback": {"url": url, "secret": callback_secret},
                "emr": {"fhir": {"base_url": "http://127.0.0.1:9/fhir", "auth_token": emr_token}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // the directory refreshes

    // An end-to-end run: a template, a text in the window, a lab report with a PDF, a booking,
    // the patient's reply and tap, a failed send, a bad request, a bad webhook.
    let p = patient(80);
    let id = app.send(&template(&p)).await;
    app.wait_for(&id, &["read"], Duration::from_secs(10)).await;
    app.open_window(&p).await;
    let t = app.send(&text(&p, "Your report is ready")).await;
    app.wait_for(&t, &["read"], Duration::from_secs(10)).await;
    let pdf = clinic_gateway::pdf::sample("CONFIDENTIAL-LAB-RESULT-HB-13.2", 20_000);
    let pdf_b64 = b64(&pdf);
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/lab-reports",
            KEY_A,
            Some(
                json!({"external_id": "LAB-LOG-1", "patient": {"phone": p, "name": "Asha"},
                "title": "CBC", "pdf_base64": pdf_b64}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"patient": {"phone": p, "name": "Asha"}, "doctor": "Dr. Rao", "start": at(3 * DAY_MS)})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let gone = patient(81);
    app.sim.mark_not_on_whatsapp(gone.trim_start_matches('+'));
    let failed = app.send(&template(&gone)).await;
    app.wait_for(&failed, &["failed"], Duration::from_secs(10))
        .await;
    let _ = app
        .post(
            KEY_A,
            &json!({"to": "+9198765", "type": "text", "text": {"body": "x"}}),
        )
        .await;
    let _ = app.post("wrong-key", &template(&p)).await;
    let body = status_webhook(NUMBER_A, WABA_A, "wamid.X", &id, "failed", &p);
    assert_eq!(post_webhook(&app, &body, Some("sha256=00")).await, 401);
    app.sim.inject_inbound_text(
        NUMBER_A,
        p.trim_start_matches('+'),
        "my number is 9876512345",
    );
    // The EMR side: a booking, one in the past, a lab report whose "PDF" is not one (MLLP), and
    // the same over FHIR.
    let port = app
        .mllp_port
        .unwrap_or_else(|| panic!("MLLP is not enabled"));
    let code = mllp_call(
        port,
        &siu("EMR|SUNRISE", "SIU^S12", "L-1", "APT-LOG", &p, 3 * DAY_MS),
    )
    .await;
    assert_eq!(code, "AA");
    let code = mllp_call(
        port,
        &siu("EMR|SUNRISE", "SIU^S12", "L-2", "APT-LOG2", &p, -DAY_MS),
    )
    .await;
    assert_ne!(code, "AA");
    let not_pdf = b64(b"CONFIDENTIAL-LAB-RESULT but not a PDF at all");
    let oru = [
        msh("EMR|SUNRISE", "ORU^R01^ORU_R01", "L-3"),
        pid(&p),
        "OBR|1||ORD-1|CBC^Complete blood count^L|||||||||||||||||||||F".to_owned(),
        format!("OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^{not_pdf}||||||F"),
    ]
    .iter()
    .map(|s| format!("{s}\r"))
    .collect::<String>();
    let _ = mllp_call(port, &oru).await;
    let (s, v) = fhir(
        &app,
        KEY_A,
        Method::PUT,
        "/Appointment/fh-log-1",
        Some(&fhir_appointment("fh-log-1", &p, -DAY_MS)),
    )
    .await;
    assert!((400..500).contains(&s), "{s} {v}");
    let report = json!({"resourceType": "DiagnosticReport", "id": "dr-log-1", "status": "final",
        "contained": [{"resourceType": "Patient", "id": "pat", "name": [{"text": "Asha"}],
            "telecom": [{"system": "phone", "value": p, "use": "mobile"}]}],
        "code": {"text": "Lipid panel"}, "subject": {"reference": "#pat"},
        "presentedForm": [{"contentType": "application/pdf", "data": not_pdf, "title": "Lipid panel"}]});
    let (s, v) = fhir(
        &app,
        KEY_A,
        Method::PUT,
        "/DiagnosticReport/dr-log-1",
        Some(&report),
    )
    .await;
    assert!((400..500).contains(&s), "{s} {v}");
    let _ = eventually_async(Duration::from_secs(10), || async {
        !captured.lock().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let text = String::from_utf8_lossy(&logs.lock()).into_owned();
    // Only the gateway's own lines: the in-process sandbox plays Meta and logs like Meta would.
    let gateway: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"target\":\"whatsapp_cloud::sandbox"))
        .collect();
    assert!(
        gateway.iter().any(|l| l.contains("accepted")),
        "the run was logged: {} lines",
        gateway.len()
    );
    assert!(
        gateway.iter().any(|l| l.contains("+91******")),
        "numbers are logged masked (so the grep below saw lines that carry them)"
    );
    if std::env::var_os("SECURITY_DUMP_LOGS").is_some() {
        eprintln!("{}", gateway.join("\n"));
    }
    let all = gateway.join("\n");
    let mut leaks = Vec::new();
    for (what, secret) in [
        ("clinic A's API key", KEY_A),
        ("the admin key", ADMIN_KEY),
        ("the app secret", APP_SECRET),
        ("clinic A's Meta token", "token-clinic_a"),
        ("the callback secret", callback_secret),
        ("the EMR token", emr_token),
        ("the PDF's base64", &pdf_b64[..48]),
        ("the broken PDF's base64", &not_pdf[..24]),
        ("the PDF's text", "CONFIDENTIAL-LAB-RESULT"),
        ("a message body", "Your report is ready"),
    ] {
        if let Some(line) = gateway.iter().find(|l| l.contains(secret)) {
            leaks.push(format!("{what}: {line}"));
        }
    }
    for n in full_phone_numbers(&all) {
        if let Some(line) = gateway.iter().find(|l| l.contains(&n)) {
            leaks.push(format!("full phone number {n}: {line}"));
        }
    }
    leaks.sort();
    leaks.dedup();
    assert!(leaks.is_empty(), "leaks in the logs:\n{}", leaks.join("\n"));
}
