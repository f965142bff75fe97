//! Patient erasure end to end on real Redis + the sandbox: after `DELETE /v1/patients/{id}` the
//! patient's inbox messages, feedback, visits, documents and appointments are gone, another
//! patient's are still there, and the STOP opt-out is kept and reported.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::wire::{Component, Content};

fn at(ms_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms_from_now)).to_rfc3339()
}

fn digits(p: &str) -> &str {
    p.trim_start_matches('+')
}

/// The rating payloads of the feedback request sent to `to`, once it is sent.
async fn rating_tap(app: &TestApp, to: &str) -> Option<(String, String)> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        for r in app.sim.sent().into_iter().filter(|r| r.to == digits(to)) {
            if let Content::Template { template } = &r.message.content {
                if template.name != "feedback_request" {
                    continue;
                }
                for c in &template.components {
                    if let Component::Button { parameters, .. } = c {
                        if let Some(p) = parameters.first() {
                            let payload = serde_json::to_value(p)
                                .ok()
                                .and_then(|v| v["payload"].as_str().map(str::to_owned));
                            if let Some(payload) = payload {
                                return Some((r.wamid.clone(), payload));
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

struct Made {
    visit_external: String,
    document: String,
    appointment: String,
    /// The lab report's outbox message.
    lab_message: String,
}

async fn give_history(app: &TestApp, i: usize, p: &str) -> Made {
    let (s, v) = app
        .call(
            Method::PUT,
            &format!("/v1/patients/P-{i}"),
            KEY_A,
            Some(json!({"phone": p, "name": format!("Patient {i}")})),
        )
        .await;
    assert!(s == 201 || s == 200, "{v}");
    let visit_external = format!("ENC-{i}");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_A,
            Some(
                json!({"external_id": visit_external, "patient": {"phone": p, "name": "X"},
                "visit_type": "Consult", "completed_at": at(-2 * 60_000)}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let pdf = clinic_gateway::pdf::sample("CBC", 5_000);
    let (s, d) = app
        .call(
            Method::POST,
            "/v1/lab-reports",
            KEY_A,
            Some(json!({"external_id": format!("LAB-{i}"), "patient": {"phone": p, "name": "X"},
                "title": "CBC", "pdf_base64": base64::engine::general_purpose::STANDARD.encode(&pdf)})),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    let (s, a) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"patient": {"phone": p, "name": "X"}, "start": at(3 * 86_400_000)})),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    // Feedback: the request goes out (delay 1 minute, the visit ended 2 minutes ago); a tap.
    let (wamid, payload) = rating_tap(app, p)
        .await
        .unwrap_or_else(|| panic!("no feedback request to {p}"));
    app.sim
        .inject_button_tap(NUMBER_A, digits(p), &wamid, "5", &payload);
    // The next text is the rating's comment; the one after it goes to the inbox.
    assert!(
        wait_for(|| async { feedback_of(app, p).await == 1 }).await,
        "rating of {p}"
    );
    app.sim
        .inject_inbound_text(NUMBER_A, digits(p), "kind staff");
    assert!(
        wait_for(|| async {
            let (_, list) = app.call(Method::GET, "/v1/feedback", KEY_A, None).await;
            list["feedback"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|f| f["patient"] == p && f["comment"] == "kind staff")
            })
        })
        .await,
        "comment of {p}"
    );
    app.sim
        .inject_inbound_text(NUMBER_A, digits(p), &format!("question from {i}"));
    assert!(
        wait_for(|| async { inbox_of(app, p).await == 1 }).await,
        "inbox of {p}"
    );
    Made {
        visit_external,
        document: d["id"].as_str().unwrap_or_default().to_owned(),
        appointment: a["id"].as_str().unwrap_or_default().to_owned(),
        lab_message: d["message"].as_str().unwrap_or_default().to_owned(),
    }
}

async fn wait_for<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn feedback_of(app: &TestApp, p: &str) -> usize {
    let (_, list) = app.call(Method::GET, "/v1/feedback", KEY_A, None).await;
    list["feedback"]
        .as_array()
        .map(|v| v.iter().filter(|f| f["patient"] == p).count())
        .unwrap_or(0)
}

async fn inbox_of(app: &TestApp, p: &str) -> usize {
    let (_, list) = app.call(Method::GET, "/v1/inbox", KEY_A, None).await;
    list["messages"]
        .as_array()
        .map(|v| v.iter().filter(|m| m["from"] == p).count())
        .unwrap_or(0)
}

#[actix_rt::test]
async fn erasing_a_patient_removes_their_clinical_data_and_no_one_elses() {
    let app = spawn_app(
        "erasure",
        Options {
            full_library: true,
            ..Options::default()
        },
    )
    .await;
    app.patch_clinic("clinic_a", json!({"feedback_delay_minutes": 1}))
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (gone, kept) = (patient(71), patient(72));
    let g = give_history(&app, 71, &gone).await;
    let k = give_history(&app, 72, &kept).await;
    // Erasure takes the outbox records of messages Meta has delivered.
    for m in [&g.lab_message, &k.lab_message] {
        app.wait_for(m, &["delivered", "read"], Duration::from_secs(10))
            .await;
    }
    app.sim.inject_inbound_text(NUMBER_A, digits(&gone), "STOP");
    assert!(
        wait_for(|| async {
            let (_, v) = app
                .call(Method::GET, "/v1/patients/P-71", KEY_A, None)
                .await;
            // STOP withdrew the patient's consent to care messages (promotional consent may
            // have been false from the start, so only this one tells the STOP was handled).
            v["consent"]["care"]["granted"] == false
        })
        .await,
        "STOP recorded"
    );
    let (s, report) = app
        .call(Method::DELETE, "/v1/patients/P-71", KEY_A, None)
        .await;
    assert_eq!(s, 200, "{report}");
    let erased = &report["erased"];
    for (field, n) in [
        ("inbox_messages", 1),
        ("feedback", 1),
        ("visits", 1),
        ("documents", 1),
        ("appointments", 1),
    ] {
        assert_eq!(erased[field].as_u64(), Some(n), "{field}: {report}");
    }
    assert!(
        erased["messages"].as_u64().is_some_and(|n| n >= 1),
        "{report}"
    );
    assert_eq!(erased["opt_out_kept"], true, "{report}");
    assert_eq!(report["kept"]["opt_out"], true);
    assert_eq!(erased["complete"], true);

    // Gone for the erased patient …
    assert_eq!(feedback_of(&app, &gone).await, 0);
    assert_eq!(inbox_of(&app, &gone).await, 0);
    let get = |path: String| {
        let app = &app;
        async move { app.call(Method::GET, &path, KEY_A, None).await.0 }
    };
    assert_eq!(get(format!("/v1/documents/{}", g.document)).await, 404);
    assert_eq!(
        get(format!("/v1/appointments/{}", g.appointment)).await,
        404
    );
    assert_eq!(get("/v1/patients/P-71".into()).await, 404);
    assert_eq!(get(format!("/v1/messages/{}", g.lab_message)).await, 404);
    // … still there for the other one.
    assert_eq!(get(format!("/v1/messages/{}", k.lab_message)).await, 200);
    assert_eq!(feedback_of(&app, &kept).await, 1);
    assert_eq!(inbox_of(&app, &kept).await, 1);
    assert_eq!(get(format!("/v1/documents/{}", k.document)).await, 200);
    assert_eq!(
        get(format!("/v1/appointments/{}", k.appointment)).await,
        200
    );
    assert_eq!(get("/v1/patients/P-72".into()).await, 200);
    // The EMR reporting the erased visit again makes a new one; the kept one is found.
    let visit_again = |p: &str, ext: &str| json!({"external_id": ext, "patient": {"phone": p}, "visit_type": "Consult"});
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_A,
            Some(visit_again(&gone, &g.visit_external)),
        )
        .await;
    assert_eq!(s, 201, "the erased visit is not found by its EMR id");
    let (s, _): (u16, Value) = app
        .call(
            Method::POST,
            "/v1/visits",
            KEY_A,
            Some(visit_again(&kept, &k.visit_external)),
        )
        .await;
    assert_eq!(s, 200, "the other patient's visit is");
    // Erasing again: no such patient.
    let (s, _) = app
        .call(Method::DELETE, "/v1/patients/P-71", KEY_A, None)
        .await;
    assert_eq!(s, 404);
}

#[actix_rt::test]
async fn retention_days_is_validated() {
    let app = spawn_app("erasure_retention", Options::default()).await;
    for (days, status) in [(0, 422), (3_651, 422), (30, 200)] {
        let (s, v) = app
            .call(
                Method::PATCH,
                "/admin/v1/clinics/clinic_a",
                ADMIN_KEY,
                Some(json!({"retention_days": days})),
            )
            .await;
        assert_eq!(s, status, "{days}: {v}");
    }
    let (s, v) = app
        .call(Method::GET, "/admin/v1/clinics/clinic_a", ADMIN_KEY, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["retention_days"], 30, "{v}");
}

/// Records older than the clinic's retention go at the next sweep (run here on demand through the
/// admin API; the scheduler runs it hourly); newer ones stay.
#[actix_rt::test]
async fn retention_removes_what_is_older_than_the_window() {
    let app = spawn_app("retention_sweep", Options::default()).await;
    let old_visit = json!({"external_id": "ENC-OLD", "patient": {"phone": patient(71)}, "visit_type": "consultation",
        "completed_at": (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339()});
    let new_visit = json!({"external_id": "ENC-NEW", "patient": {"phone": patient(72)}, "visit_type": "consultation",
        "completed_at": (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339()});
    for v in [&old_visit, &new_visit] {
        let (s, body) = app
            .call(Method::POST, "/v1/visits", KEY_A, Some(v.clone()))
            .await;
        assert_eq!(s, 201, "{body}");
    }
    // A patient last touched 40 days ago (written as the store holds it), and one today.
    let mut stale = clinic_gateway::patients::PatientRecord::new(
        "P-STALE",
        clinic_gateway::domain::E164::parse(&patient(73)).unwrap_or_else(|e| panic!("{e}")),
    );
    stale.updated_ms = (chrono::Utc::now() - chrono::Duration::days(40)).timestamp_millis();
    let json = serde_json::to_string(&stale).unwrap_or_else(|e| panic!("{e}"));
    let index = clinic_gateway::patients::index::entry_of(&stale);
    let tenant =
        clinic_gateway::domain::TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    let written = app
        .store
        .put_patients(
            &tenant,
            &[clinic_gateway::store::patients::PatientWrite {
                external_id: "P-STALE",
                phone: stale.phone.digits(),
                json: &json,
                index: &index,
                expect: clinic_gateway::store::patients::Expect::Any,
            }],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.len(), 1);
    let (s, v) = app
        .call(
            Method::PUT,
            "/v1/patients/P-FRESH",
            KEY_A,
            Some(json!({"phone": patient(74), "name": "Fresh"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        app.call(Method::GET, "/v1/patients/P-STALE", KEY_A, None)
            .await
            .0,
        200
    );
    // Keeping everything (the default): a sweep removes nothing.
    let (s, swept) = app
        .call(
            Method::POST,
            "/admin/v1/clinics/clinic_a/retention/sweep",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!((s, swept["deleted"].as_u64()), (200, Some(0)), "{swept}");
    app.patch_clinic("clinic_a", json!({"retention_days": 30}))
        .await;
    let (s, swept) = app
        .call(
            Method::POST,
            "/admin/v1/clinics/clinic_a/retention/sweep",
            ADMIN_KEY,
            None,
        )
        .await;
    // The old visit and the stale patient.
    assert_eq!((s, swept["deleted"].as_u64()), (200, Some(2)), "{swept}");
    for (id, status) in [("P-STALE", 404), ("P-FRESH", 200)] {
        let (s, _) = app
            .call(Method::GET, &format!("/v1/patients/{id}"), KEY_A, None)
            .await;
        assert_eq!(s, status, "{id}");
    }
    // The old visit is gone (its EMR id books a new one), the recent one is still known.
    let (s, again) = app
        .call(Method::POST, "/v1/visits", KEY_A, Some(old_visit))
        .await;
    assert_eq!(s, 201, "the 40-day-old visit was kept: {again}");
    let (s, again) = app
        .call(Method::POST, "/v1/visits", KEY_A, Some(new_visit))
        .await;
    assert_eq!(s, 200, "the 2-day-old visit was removed: {again}");
    // Clinic keys cannot sweep.
    let (s, _) = app
        .call(
            Method::POST,
            "/admin/v1/clinics/clinic_a/retention/sweep",
            KEY_A,
            None,
        )
        .await;
    assert_eq!(s, 401);
}

/// Seconds until an outbox record expires in Redis (`-1`: never).
async fn record_ttl(app: &TestApp, id: &str) -> i64 {
    let mut c = clinic_gateway::store::raw_connection(&clinic_gateway::testing::shared_redis().url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    redis::cmd("TTL")
        .arg(format!("{}{{n:{NUMBER_A}}}:m:{id}", app.prefix))
        .query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Ended messages' records (recipient, parameters, text) live as long as the clinic's retention
/// says; without one, the store's 30 days. A delivered message that is never read expires too.
#[actix_rt::test]
async fn message_records_expire_on_the_clinics_retention() {
    let app = spawn_app(
        "retention_messages",
        Options {
            read_receipts: false,
            ..Options::default()
        },
    )
    .await;
    let default_kept = app.send(&template(&patient(81))).await;
    app.wait_for(&default_kept, &["delivered"], Duration::from_secs(10))
        .await;
    app.patch_clinic("clinic_a", json!({"retention_days": 2}))
        .await;
    let short = app.send(&template(&patient(82))).await;
    app.wait_for(&short, &["delivered"], Duration::from_secs(10))
        .await;
    let day = 86_400;
    let ttl = record_ttl(&app, &default_kept).await;
    assert!(29 * day < ttl && ttl <= 30 * day, "default: {ttl}");
    let ttl = record_ttl(&app, &short).await;
    assert!(day < ttl && ttl <= 2 * day, "retention 2 days: {ttl}");
}
