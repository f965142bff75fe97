//! FHIR R4 end to end on real Redis, the Meta sandbox and a test FHIR server on a random port:
//! the official examples are accepted or refused with a reason; resources, transaction/batch
//! and ABDM document Bundles and subscription notifications (rest-hook, R4 backport, R4B, R5)
//! reach patients once; a patient's "Cancel" is written back with JSON Patch (`test` +
//! `If-Match`), or GET-modify-PUT when the server answers PATCH with 405.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clinic_gateway::domain::TenantId;
use clinic_gateway::emr::fhir::notify::{subscription_slot, MARKER_OWNER};
use clinic_gateway::emr::fhir::writeback::apply_patch;
use common::*;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::SentRecord;
use whatsapp_cloud::wire::{Component, Content, Parameter};

const EMR_TOKEN: &str = "emr-token";
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/fhir-official"
);

// ------------------------------------------------------------------ a test FHIR server

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    if_match: Option<String>,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// A small FHIR server: resources with versions and ETags, JSON Patch (or 405), PUT with
/// If-Match, POST, searches (every resource of the type), raw PDFs at `Binary/<id>`.
#[derive(Default)]
struct Emr {
    base: String,
    resources: Mutex<HashMap<String, (Value, u32)>>,
    binaries: Mutex<HashMap<String, Vec<u8>>>,
    requests: Mutex<Vec<Recorded>>,
    patch_unsupported: AtomicBool,
    /// PATCHes answered 412 after a concurrent edit (the version moves on) before one succeeds.
    conflicts: AtomicU32,
}

impl Emr {
    fn put(&self, resource: Value) {
        let key = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        self.resources.lock().insert(key, (resource, 1));
    }

    fn get(&self, key: &str) -> Option<(Value, u32)> {
        self.resources.lock().get(key).cloned()
    }

    fn requests(&self, method: &str, path_contains: &str) -> Vec<Recorded> {
        self.requests
            .lock()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .cloned()
            .collect()
    }
}

fn outcome(status: u16, code: &str, text: &str) -> actix_web::HttpResponse {
    actix_web::HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or_else(|e| panic!("{e}")),
    )
    .content_type("application/fhir+json")
    .body(
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]})
            .to_string(),
    )
}

fn versioned(mut v: Value, version: u32, status: u16) -> actix_web::HttpResponse {
    v["meta"]["versionId"] = json!(version.to_string());
    actix_web::HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or_else(|e| panic!("{e}")),
    )
    .content_type("application/fhir+json")
    .insert_header(("ETag", format!("W/\"{version}\"")))
    .body(v.to_string())
}

async fn emr_handler(
    req: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    emr: actix_web::web::Data<Arc<Emr>>,
) -> actix_web::HttpResponse {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let method = req.method().to_string();
    emr.requests.lock().push(Recorded {
        method: method.clone(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        if_match: header("if-match"),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: body.to_vec(),
    });
    let path = req.path().trim_start_matches("/fhir/").to_owned();
    let segs: Vec<&str> = path.split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["Binary", id]) if emr.binaries.lock().contains_key(*id) => {
            let bytes = emr.binaries.lock().get(*id).cloned().unwrap_or_default();
            actix_web::HttpResponse::Ok()
                .content_type("application/pdf")
                .body(bytes)
        }
        ("GET", [t, id]) => match emr.get(&format!("{t}/{id}")) {
            Some((v, version)) => versioned(v, version, 200),
            None => outcome(404, "not-found", &format!("{t}/{id} is not known")),
        },
        ("GET", [t]) => {
            let entries: Vec<Value> = emr
                .resources
                .lock()
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{t}/")))
                .map(|(k, (v, _))| json!({"fullUrl": format!("{}/{k}", emr.base), "resource": v, "search": {"mode": "match"}}))
                .collect();
            actix_web::HttpResponse::Ok()
                .content_type("application/fhir+json")
                .body(json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries}).to_string())
        }
        ("PATCH", [t, id]) => {
            if emr.patch_unsupported.load(Ordering::SeqCst) {
                return outcome(405, "not-supported", "PATCH is not supported");
            }
            let key = format!("{t}/{id}");
            let Some((mut v, version)) = emr.get(&key) else {
                return outcome(404, "not-found", "unknown");
            };
            if header("if-match").as_deref() != Some(&format!("W/\"{version}\"")) {
                return outcome(412, "conflict", "version mismatch");
            }
            if emr
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                // Someone at the front desk saved the appointment a moment earlier.
                emr.resources.lock().insert(key, (v, version + 1));
                return outcome(412, "conflict", "the appointment changed since you read it");
            }
            let Ok(patch) = serde_json::from_slice(&body) else {
                return outcome(400, "invalid", "not a JSON Patch");
            };
            if let Err(e) = apply_patch(&mut v, &patch) {
                return outcome(409, "conflict", &e);
            }
            emr.resources.lock().insert(key, (v.clone(), version + 1));
            versioned(v, version + 1, 200)
        }
        ("PUT", [t, id]) => {
            let key = format!("{t}/{id}");
            let version = emr.get(&key).map_or(0, |(_, v)| v);
            if header("if-match").is_some_and(|m| m != format!("W/\"{version}\"")) {
                return outcome(412, "conflict", "version mismatch");
            }
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return outcome(400, "invalid", "not JSON");
            };
            emr.resources.lock().insert(key, (v.clone(), version + 1));
            versioned(v, version + 1, 200)
        }
        ("POST", [t]) => {
            let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
                return outcome(400, "invalid", "not JSON");
            };
            let id = format!("{}", emr.resources.lock().len() + 1000);
            v["id"] = json!(id);
            emr.resources
                .lock()
                .insert(format!("{t}/{id}"), (v.clone(), 1));
            versioned(v, 1, 201)
        }
        _ => outcome(404, "not-found", "no such endpoint"),
    }
}

fn start_emr() -> Arc<Emr> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let emr = Arc::new(Emr {
        base: format!("http://127.0.0.1:{port}/fhir"),
        ..Emr::default()
    });
    let data = actix_web::web::Data::new(emr.clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .app_data(actix_web::web::PayloadConfig::new(8 << 20))
            .default_service(actix_web::web::to(emr_handler))
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    actix_rt::spawn(server);
    emr
}

// ------------------------------------------------------------------ helpers

/// Links clinic A to the test FHIR server (admin API).
async fn link(app: &TestApp, emr: &Emr, write_back: bool) {
    let (s, v) = app
        .http
        .patch(format!("{}/admin/v1/clinics/clinic_a", app.base))
        .bearer_auth(ADMIN_KEY)
        .json(
            &json!({"emr": {"fhir": {"base_url": emr.base, "auth_token": EMR_TOKEN,
            "write_back": write_back, "record_communications": write_back}}}),
        )
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s, 200, "{:?}", v.text().await);
}

/// The document templates, approved at the sandbox and synced into clinic A's catalog.
async fn document_templates(app: &TestApp) {
    seed_templates(
        app,
        &[
            "prescription_ready",
            "lab_report_ready",
            "lab_report_corrected",
            "health_record_ready",
            "visit_follow_up",
            "feedback_request",
        ],
    )
    .await;
}

/// A FHIR request as clinic A; asserts the answer is FHIR JSON.
async fn fhir(app: &TestApp, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    fhir_raw(
        app,
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
        Some(KEY_A),
        "application/fhir+json",
    )
    .await
}

async fn fhir_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    key: Option<&str>,
    content_type: &str,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}/fhir/r4{path}", app.base))
        .header("Content-Type", content_type);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    let ct = common::content_type(&resp);
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(
        ct.starts_with("application/fhir+json"),
        "answers are FHIR JSON, got {ct}: {v}"
    );
    (status, v)
}

fn diagnostics(v: &Value) -> String {
    v["issue"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .filter_map(|i| i["diagnostics"].as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

fn has_document_header(r: &SentRecord) -> bool {
    match &r.message.content {
        Content::Template { template } => template.components.iter().any(|c| {
            matches!(c, Component::Header { parameters } if parameters.iter().any(|p| matches!(p, Parameter::Document { .. })))
        }),
        _ => false,
    }
}

fn cancel_payload(r: &SentRecord) -> Option<String> {
    payloads(r).into_iter().find(|p| p.starts_with("CANCEL:"))
}

fn pdf(label: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {label}\n1 0 obj<</Type/Catalog>>endobj\nxref\n0 1\ntrailer<</Root 1 0 R>>\nstartxref\n9\n%%EOF\n").into_bytes()
}

/// Base64 wrapped the way senders wrap it (newlines and spaces inside).
fn wrapped_b64(bytes: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(bytes);
    b.as_bytes()
        .chunks(24)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn contained_patient(phone: &str, name: &str) -> Value {
    json!({"resourceType": "Patient", "id": "pat", "name": [{"text": name}],
        "telecom": [{"system": "phone", "value": "020 5555 0000", "use": "work"},
                    {"system": "phone", "value": phone, "use": "mobile"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-IN"}]}, "preferred": true}]})
}

fn appointment(id: &str, phone: &str, start_ms_from_now: i64) -> Value {
    json!({"resourceType": "Appointment", "id": id, "status": "booked",
    "contained": [contained_patient(phone, "Asha Rao")],
    "start": at(start_ms_from_now), "end": at(start_ms_from_now + 900_000),
    "participant": [
        {"actor": {"reference": "#pat"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/d1", "display": "Dr. Rao"}, "status": "accepted"}
    ]})
}

fn diagnostic_report(id: &str, phone: &str, status: &str, bytes: &[u8]) -> Value {
    json!({"resourceType": "DiagnosticReport", "id": id, "status": status,
        "contained": [contained_patient(phone, "Ravi Kumar")],
        "code": {"text": "Lipid panel"}, "subject": {"reference": "#pat"},
        "presentedForm": [{"contentType": "application/pdf", "data": wrapped_b64(bytes), "title": "Lipid panel"}]})
}

async fn forget_subscription(app: &TestApp, subscription: &str) {
    let tenant = TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    let slot = subscription_slot(&fhir_r4::Reference::to(subscription));
    app.store
        .set_marker(&tenant, MARKER_OWNER, &slot, None, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("official FHIR example {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ------------------------------------------------------------------ tests

#[actix_rt::test]
async fn official_examples_are_accepted_or_refused_with_a_reason() {
    let app = spawn_app("fhir_official", Options::default()).await;
    let emr = start_emr();
    emr.put(fixture("patient-example.json"));
    let full = fixture("r5-notification-full-resource.json");
    emr.put(full["entry"][1]["resource"].clone());
    link(&app, &emr, false).await;
    let r5_subscription = "http://example.org/FHIR/R5/Subscription/123";

    // (file, method, path, status, what the diagnostic says, forget the subscription's events first)
    let table: &[(&str, Method, &str, u16, &str, bool)] = &[
        ("appointment-example.json", Method::POST, "/Appointment", 422,
            "Appointment.start: 2013-12-10T09:00:00Z is in the past", false),
        ("appointment-example2doctors.json", Method::PUT, "/Appointment/2docs", 422,
            "Appointment.start: 2013-12-09T09:00:00Z is in the past", false),
        ("bundle-transaction.json", Method::POST, "", 400,
            "Bundle.entry[7]: POST ValueSet/$lookup: operations are not supported", false),
        ("communication-example.json", Method::POST, "/Communication", 400,
            "Communication is not taken here", false),
        ("diagnosticreport-example-gingival-mass.json", Method::POST, "/DiagnosticReport", 422,
            "DiagnosticReport.subject: no Patient with a mobile phone (the reference has only a display `Max Jones`", false),
        ("diagnosticreport-example-pgx.json", Method::PUT, "/DiagnosticReport/example-pgx", 422,
            "attachment at DiagnosticReport.presentedForm[0] is declared application/pdf but does not start with %PDF-", false),
        ("documentreference-example.json", Method::POST, "/DocumentReference", 200,
            "DocumentReference/example has docStatus preliminary", false),
        ("encounter-example.json", Method::POST, "/Encounter", 200,
            "Encounter/example is in-progress", false),
        ("medicationrequest0301.json", Method::POST, "/MedicationRequest", 400,
            "MedicationRequest is not taken here on its own", false),
        ("patient-example.json", Method::PUT, "/Patient/example", 200,
            "Patient/example accepted but not stored in the clinic's patient directory, and nothing is sent for a Patient. Note: Patient: the mobile phone of Patient/example is not a number WhatsApp can reach", false),
        ("r5-notification-handshake.json", Method::POST, "", 200, "handshake acknowledged", false),
        // The empty notification makes the gateway search; the server's in-progress Encounter
        // is found and has nothing to send.
        ("r5-notification-empty.json", Method::POST, "", 200,
            "notification processed: 0 resource(s) acted on, 1 with nothing to send", true),
        ("r5-notification-full-resource.json", Method::POST, "", 200,
            "notification processed: 0 resource(s) acted on, 1 with nothing to send", true),
        ("r5-notification-id-only.json", Method::POST, "", 200,
            "notification processed: 0 resource(s) acted on, 1 with nothing to send", true),
        ("r5-notification-heartbeat.json", Method::POST, "", 200, "heartbeat acknowledged", true),
    ];
    let mut files: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("{FIXTURES}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    for f in &files {
        assert!(table.iter().any(|t| t.0 == f), "{f} is not in the table");
    }
    for (file, method, path, status, says, forget) in table {
        if *forget {
            forget_subscription(&app, r5_subscription).await;
        }
        let body = fixture(file);
        let (s, v) = fhir(&app, method.clone(), path, Some(&body)).await;
        assert_eq!(v["resourceType"], "OperationOutcome", "{file}: {v}");
        assert_eq!(s, *status, "{file}: {v}");
        assert!(
            diagnostics(&v).contains(says),
            "{file}: expected `{says}` in `{}`",
            diagnostics(&v)
        );
        if s >= 400 {
            assert_eq!(v["issue"][0]["severity"], "error", "{file}");
        }
    }
    // Refusals name the element at fault.
    let (_, v) = fhir(
        &app,
        Method::POST,
        "/Appointment",
        Some(&fixture("appointment-example.json")),
    )
    .await;
    assert_eq!(v["issue"][0]["expression"][0], "Appointment.start");
    let (_, v) = fhir(
        &app,
        Method::POST,
        "",
        Some(&fixture("bundle-transaction.json")),
    )
    .await;
    let d = diagnostics(&v);
    assert!(
        d.contains("Bundle.entry[8]: GET Patient?name=peter")
            && d.contains("Bundle.entry[9]: GET Patient/12334"),
        "{d}"
    );
    assert!(d.contains("nothing was acted on"), "{d}");
    // The Patient carries a warning, not an error, and is not in the directory.
    let (_, v) = fhir(
        &app,
        Method::POST,
        "/Patient",
        Some(&fixture("patient-example.json")),
    )
    .await;
    assert_eq!(v["issue"][0]["severity"], "warning");
    let (s, _) = app
        .call(Method::GET, "/v1/patients/Patient%2Fexample", KEY_A, None)
        .await;
    assert_eq!(s, 404);
    // The empty notification made the gateway search the clinic's server for what changed.
    let searches = emr.requests("GET", "/fhir/Appointment");
    assert!(
        searches.iter().any(|r| r.query.contains("_lastUpdated=gt")),
        "{searches:?}"
    );
    assert!(searches
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer emr-token")));
    // The id-only notification read its focus from the clinic's server.
    assert!(!emr.requests("GET", "/fhir/Encounter/2").is_empty());
    // A redelivered event (same subscription, same event number) does nothing.
    forget_subscription(&app, r5_subscription).await;
    let (_, v) = fhir(&app, Method::POST, "", Some(&full)).await;
    assert!(
        diagnostics(&v).contains("0 resource(s) acted on, 1 with nothing to send"),
        "{v}"
    );
    let (s, v) = fhir(&app, Method::POST, "", Some(&full)).await;
    assert_eq!(s, 200);
    assert!(
        diagnostics(&v).contains("0 resource(s) acted on, 0 with nothing to send"),
        "{v}"
    );
    assert!(
        app.sim.sent().is_empty(),
        "nothing in the examples reaches a patient"
    );
}

#[actix_rt::test]
async fn a_booked_appointment_is_confirmed_once_and_its_changes_follow() {
    let app = spawn_app("fhir_appointment", Options::default()).await;
    let p = patient(601);
    let a = appointment("apt-601", &p, 2 * DAY_MS);
    let (s, v) = fhir(&app, Method::POST, "/Appointment", Some(&a)).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        diagnostics(&v).contains("Appointment/apt-601 booked as apt_"),
        "{v}"
    );
    let confirmation = sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(15),
    )
    .await
    .unwrap_or_else(|| panic!("no confirmation reached the sandbox"));
    let params = body_texts(&confirmation);
    assert_eq!(params[0], "Asha Rao");
    assert_eq!(params[3], "Dr. Rao");
    // The same resource again (a retry, or a rest-hook PUT): nothing new.
    let (s, v) = fhir(&app, Method::POST, "/Appointment", Some(&a)).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        diagnostics(&v).contains("nothing changed; nothing sent"),
        "{v}"
    );
    let (s, _) = fhir(&app, Method::PUT, "/Appointment/apt-601", Some(&a)).await;
    assert_eq!(s, 200);
    // Moved by an hour: the patient hears.
    let mut moved = a.clone();
    moved["start"] = json!(at(2 * DAY_MS + 3_600_000));
    moved["end"] = json!(at(2 * DAY_MS + 3_600_000 + 900_000));
    let (s, v) = fhir(&app, Method::PUT, "/Appointment/apt-601", Some(&moved)).await;
    assert_eq!(s, 201, "{v}");
    assert!(diagnostics(&v).contains("moved"), "{v}");
    assert!(
        sent_template(&app, &p, "appointment_rescheduled", Duration::from_secs(15))
            .await
            .is_some()
    );
    // Cancelled in the EMR.
    moved["status"] = json!("cancelled");
    let (s, v) = fhir(&app, Method::PUT, "/Appointment/apt-601", Some(&moved)).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        sent_template(&app, &p, "appointment_cancelled", Duration::from_secs(15))
            .await
            .is_some()
    );
    // Booked again after the cancellation: a conflict, as an OperationOutcome.
    moved["status"] = json!("booked");
    let (s, v) = fhir(&app, Method::PUT, "/Appointment/apt-601", Some(&moved)).await;
    assert_eq!(
        (s, v["issue"][0]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    // A booking without a usable phone is refused and names the participant.
    let mut no_phone = appointment("apt-602", "", 2 * DAY_MS);
    no_phone["contained"][0]["telecom"] = json!([{"system": "email", "value": "a@example.in"}]);
    let (s, v) = fhir(&app, Method::POST, "/Appointment", Some(&no_phone)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        diagnostics(&v).contains("Appointment.participant: no Patient with a mobile phone"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(templates_to(&app, &p, "appointment_confirmation").len(), 1);
}

#[actix_rt::test]
async fn a_final_report_with_an_inline_pdf_reaches_the_patient_once_and_a_correction_again() {
    let app = spawn_app("fhir_report", Options::default()).await;
    document_templates(&app).await;
    let p = patient(602);
    let report = diagnostic_report("lab-1", &p, "final", &pdf("first"));
    let (s, v) = fhir(&app, Method::POST, "/DiagnosticReport", Some(&report)).await;
    assert_eq!(s, 201, "{v}");
    let lab = sent_template(&app, &p, "lab_report_ready", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no lab report reached the sandbox"));
    assert!(has_document_header(&lab), "the PDF rides in the header");
    assert_eq!(body_texts(&lab)[1], "Lipid panel");
    let (s, v) = fhir(&app, Method::PUT, "/DiagnosticReport/lab-1", Some(&report)).await;
    assert_eq!(s, 200, "{v}");
    assert!(diagnostics(&v).contains("already delivered"), "{v}");
    // A preliminary report waits.
    let (s, v) = fhir(
        &app,
        Method::POST,
        "/DiagnosticReport",
        Some(&diagnostic_report(
            "lab-2",
            &p,
            "preliminary",
            &pdf("draft"),
        )),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Corrected with different bytes under the same id: sent again, as corrected.
    let corrected = diagnostic_report("lab-1", &p, "corrected", &pdf("fixed"));
    let (s, v) = fhir(
        &app,
        Method::PUT,
        "/DiagnosticReport/lab-1",
        Some(&corrected),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(diagnostics(&v).contains("sent as corrected"), "{v}");
    assert!(
        sent_template(&app, &p, "lab_report_corrected", Duration::from_secs(15))
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(templates_to(&app, &p, "lab_report_ready").len(), 1);
    assert_eq!(templates_to(&app, &p, "lab_report_corrected").len(), 1);
}

/// Books over FHIR against the test server, taps Cancel on the reminder, and returns the EMR.
async fn cancel_round_trip(
    name: &str,
    patch_unsupported: bool,
    conflicts: u32,
) -> (TestApp, Arc<Emr>) {
    let app = spawn_app(name, Options::default()).await;
    let emr = start_emr();
    emr.patch_unsupported
        .store(patch_unsupported, Ordering::SeqCst);
    emr.conflicts.store(conflicts, Ordering::SeqCst);
    let p = patient(if patch_unsupported { 604 } else { 603 });
    emr.put(json!({"resourceType": "Patient", "id": "p-wb", "name": [{"given": ["Meera"], "family": "Iyer"}],
        "telecom": [{"system": "phone", "value": p, "use": "mobile"}]}));
    // The reminder (24 h before) falls due three seconds from now.
    let stored = json!({"resourceType": "Appointment", "id": "wb-1", "status": "booked",
    "basedOn": [{"reference": "ServiceRequest/sr-1"}],
    "start": at(DAY_MS + 3_000), "end": at(DAY_MS + 903_000),
    "participant": [
        {"actor": {"reference": "Practitioner/d1", "display": "Dr. Iyer"}, "status": "accepted"},
        {"actor": {"reference": "Patient/p-wb", "display": "Meera Iyer"}, "status": "needs-action"}
    ]});
    emr.put(stored.clone());
    link(&app, &emr, true).await;
    let (s, v) = fhir(&app, Method::POST, "/Appointment", Some(&stored)).await;
    assert_eq!(s, 201, "{v}");
    // The Patient was read from the clinic's server, with its token.
    let reads = emr.requests("GET", "/fhir/Patient/p-wb");
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].authorization.as_deref(), Some("Bearer emr-token"));
    let reminder = sent_template(&app, &p, "visit_reminder", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no reminder reached the sandbox"));
    let cancel = cancel_payload(&reminder).unwrap_or_else(|| panic!("no Cancel button"));
    app.sim.inject_button_tap(
        NUMBER_A,
        p.trim_start_matches('+'),
        &reminder.wamid,
        "Cancel",
        &cancel,
    );
    let e = emr.clone();
    assert!(
        eventually(Duration::from_secs(20), move || {
            e.get("Appointment/wb-1")
                .is_some_and(|(v, _)| v["status"] == "cancelled")
        })
        .await,
        "timed out waiting for the EMR's appointment to be cancelled"
    );
    let e = emr.clone();
    assert!(
        eventually(Duration::from_secs(20), move || {
            !e.requests("POST", "/fhir/Communication").is_empty()
        })
        .await,
        "timed out waiting for the Communication record"
    );
    (app, emr)
}

#[actix_rt::test]
async fn a_patient_cancel_is_patched_back_with_test_and_if_match() {
    // The first PATCH meets a concurrent edit (412): the gateway reads again and retries.
    let (_app, emr) = cancel_round_trip("fhir_writeback_patch", false, 1).await;
    let patches = emr.requests("PATCH", "/fhir/Appointment/wb-1");
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[0].if_match.as_deref(), Some("W/\"1\""));
    assert_eq!(emr.requests("GET", "/fhir/Appointment/wb-1").len(), 2);
    let patch = &patches[1];
    assert_eq!(patch.if_match.as_deref(), Some("W/\"2\""));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(patch.authorization.as_deref(), Some("Bearer emr-token"));
    let ops: Value = serde_json::from_slice(&patch.body).unwrap_or_default();
    assert_eq!(
        ops[0],
        json!({"op": "test", "path": "/status", "value": "booked"})
    );
    assert_eq!(
        ops[1],
        json!({"op": "replace", "path": "/status", "value": "cancelled"})
    );
    assert_eq!(ops[2]["path"], "/cancelationReason");
    assert_eq!(ops[2]["value"]["coding"][0]["code"], "pat");
    let (now, version) = emr.get("Appointment/wb-1").unwrap_or_default();
    assert_eq!((now["status"].as_str(), version), (Some("cancelled"), 3));
    assert!(emr.requests("PUT", "/fhir/Appointment").is_empty());
    let comms = emr.requests("POST", "/fhir/Communication");
    let c: Value = serde_json::from_slice(&comms[0].body).unwrap_or_default();
    assert_eq!(c["about"][0]["reference"], "Appointment/wb-1");
    assert_eq!(c["sender"]["reference"], "Patient/p-wb");
    assert_eq!(c["status"], "completed");
}

#[actix_rt::test]
async fn write_back_falls_back_to_get_modify_put_when_patch_is_405() {
    let (_app, emr) = cancel_round_trip("fhir_writeback_put", true, 0).await;
    assert_eq!(emr.requests("PATCH", "/fhir/Appointment/wb-1").len(), 1);
    let puts = emr.requests("PUT", "/fhir/Appointment/wb-1");
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].if_match.as_deref(), Some("W/\"1\""));
    let body: Value = serde_json::from_slice(&puts[0].body).unwrap_or_default();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancelationReason"]["coding"][0]["code"], "pat");
    assert_eq!(
        body["basedOn"][0]["reference"], "ServiceRequest/sr-1",
        "the PUT keeps what the gateway does not model"
    );
}

#[actix_rt::test]
async fn subscription_notifications_in_all_three_styles() {
    let app = spawn_app("fhir_subscriptions", Options::default()).await;
    document_templates(&app).await;
    let emr = start_emr();
    link(&app, &emr, false).await;

    // R4 rest-hook without payload: an empty POST; the gateway searches what changed.
    let p1 = patient(611);
    emr.put(appointment("ping-1", &p1, 2 * DAY_MS));
    let (s, v) = fhir_raw(
        &app,
        Method::POST,
        "",
        Some(Vec::new()),
        Some(KEY_A),
        "application/fhir+json",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        diagnostics(&v).contains("ping processed: 1 resource(s) acted on"),
        "{v}"
    );
    assert!(sent_template(
        &app,
        &p1,
        "appointment_confirmation",
        Duration::from_secs(15)
    )
    .await
    .is_some());
    // R4 rest-hook with payload: PUT and DELETE of the resource.
    let mut cancelled = appointment("ping-1", &p1, 2 * DAY_MS);
    cancelled["status"] = json!("cancelled");
    let (s, v) = fhir(&app, Method::PUT, "/Appointment/ping-1", Some(&cancelled)).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        sent_template(&app, &p1, "appointment_cancelled", Duration::from_secs(15))
            .await
            .is_some()
    );
    let (s, v) = fhir(&app, Method::DELETE, "/Appointment/ping-1", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(diagnostics(&v).contains("already cancelled"), "{v}");

    // R4 backport: a history Bundle with Parameters; id-only, so the focus is read.
    let p2 = patient(612);
    emr.put(json!({"resourceType": "Patient", "id": "p-enc", "telecom": [{"system": "sms", "value": p2}]}));
    emr.put(json!({"resourceType": "Encounter", "id": "enc-1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "type": [{"text": "Consultation"}], "subject": {"reference": "Patient/p-enc"},
        "period": {"start": at(-3_600_000), "end": at(-600_000)}}));
    let backport = json!({"resourceType": "Bundle", "type": "history", "timestamp": at(0), "entry": [
        {"fullUrl": "urn:uuid:8b7d5d42-2f0e-4a2c-9d2a-2a3c6f0a0b01", "resource": {"resourceType": "Parameters", "parameter": [
            {"name": "subscription", "valueReference": {"reference": format!("{}/Subscription/backport", emr.base)}},
            {"name": "topic", "valueCanonical": "http://example.org/topics/encounter-finished"},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "events-since-subscription-start", "valueString": "1"},
            {"name": "notification-event", "part": [
                {"name": "event-number", "valueString": "1"},
                {"name": "timestamp", "valueInstant": at(0)},
                {"name": "focus", "valueReference": {"reference": format!("{}/Encounter/enc-1", emr.base)}}]}]}},
        {"fullUrl": format!("{}/Encounter/enc-1", emr.base), "request": {"method": "PUT", "url": "Encounter/enc-1"}, "response": {"status": "200"}}
    ]});
    let (s, v) = fhir(&app, Method::POST, "", Some(&backport)).await;
    assert_eq!(s, 200, "{v}");
    assert!(diagnostics(&v).contains("1 resource(s) acted on"), "{v}");
    assert!(!emr.requests("GET", "/fhir/Encounter/enc-1").is_empty());
    // Delivered again: the event number was seen.
    let (_, v) = fhir(&app, Method::POST, "", Some(&backport)).await;
    assert!(
        diagnostics(&v).contains("0 resource(s) acted on, 0 with nothing"),
        "{v}"
    );

    // R4B: a history Bundle with SubscriptionStatus; full-resource.
    let p3 = patient(613);
    let r4b = json!({"resourceType": "Bundle", "type": "history", "timestamp": at(0), "entry": [
        {"fullUrl": "urn:uuid:1f5e7d42-2f0e-4a2c-9d2a-2a3c6f0a0b02", "resource": {"resourceType": "SubscriptionStatus",
            "status": "active", "type": "event-notification", "eventsSinceSubscriptionStart": "7",
            "notificationEvent": [{"eventNumber": "7", "focus": {"reference": format!("{}/DiagnosticReport/dr-sub", emr.base)}}],
            "subscription": {"reference": format!("{}/Subscription/r4b", emr.base)},
            "topic": "http://example.org/topics/report-final"}},
        {"fullUrl": format!("{}/DiagnosticReport/dr-sub", emr.base), "resource": diagnostic_report("dr-sub", &p3, "final", &pdf("sub")),
            "request": {"method": "PUT", "url": "DiagnosticReport/dr-sub"}, "response": {"status": "200"}}
    ]});
    let (s, v) = fhir(&app, Method::POST, "", Some(&r4b)).await;
    assert_eq!(s, 200, "{v}");
    assert!(diagnostics(&v).contains("1 resource(s) acted on"), "{v}");
    assert!(
        sent_template(&app, &p3, "lab_report_ready", Duration::from_secs(15))
            .await
            .is_some()
    );

    // R5: subscription-notification, full-resource; then handshake and heartbeat.
    let p4 = patient(614);
    let r5 = json!({"resourceType": "Bundle", "type": "subscription-notification", "timestamp": at(0), "entry": [
        {"fullUrl": "urn:uuid:2a5e7d42-2f0e-4a2c-9d2a-2a3c6f0a0b03", "resource": {"resourceType": "SubscriptionStatus",
            "status": "active", "type": "event-notification", "eventsSinceSubscriptionStart": "3",
            "notificationEvent": [{"eventNumber": "3", "focus": {"reference": format!("{}/Appointment/r5-1", emr.base)}}],
            "subscription": {"reference": format!("{}/Subscription/r5", emr.base)},
            "topic": "http://example.org/topics/appointment-booked"}},
        {"fullUrl": format!("{}/Appointment/r5-1", emr.base), "resource": appointment("r5-1", &p4, 2 * DAY_MS)}
    ]});
    let (s, v) = fhir(&app, Method::POST, "", Some(&r5)).await;
    assert_eq!(s, 200, "{v}");
    assert!(sent_template(
        &app,
        &p4,
        "appointment_confirmation",
        Duration::from_secs(15)
    )
    .await
    .is_some());
    for file in [
        "r5-notification-handshake.json",
        "r5-notification-heartbeat.json",
    ] {
        let (s, v) = fhir(&app, Method::POST, "", Some(&fixture(file))).await;
        assert_eq!(s, 200, "{file}: {v}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(templates_to(&app, &p1, "appointment_confirmation").len(), 1);
    assert_eq!(templates_to(&app, &p4, "appointment_confirmation").len(), 1);
}

fn abdm_bundle(code: &str, display: &str, phone: Option<&str>) -> Value {
    let telecom = match phone {
        Some(p) => json!([{"system": "phone", "value": p, "use": "mobile"}]),
        None => json!([{"system": "email", "value": "ramesh@example.in"}]),
    };
    let sd = "https://nrces.in/ndhm/fhir/r4/StructureDefinition/";
    json!({"resourceType": "Bundle", "id": format!("abdm-{code}"),
    "meta": {"versionId": "1", "lastUpdated": "2024-03-01T10:00:00+05:30", "profile": [format!("{sd}DocumentBundle")]},
    "identifier": {"system": "http://hip.in", "value": format!("305fecc2-4ba2-46cc-9ccd-{code}")},
    "type": "document", "timestamp": "2024-03-01T10:00:00+05:30",
    "entry": [
        {"fullUrl": "urn:uuid:6f8c8a9e-3f1e-4b1e-9a55-3d2c1b0a9f8e", "resource": {"resourceType": "Composition",
            "id": "6f8c8a9e-3f1e-4b1e-9a55-3d2c1b0a9f8e", "status": "final",
            "type": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}], "text": display},
            "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e"},
            "date": "2024-03-01T10:00:00+05:30",
            "author": [{"reference": "urn:uuid:3bc96820-c7c9-4f59-900d-6b0ed1fa558e", "display": "Dr. Ananya Deshmukh"}],
            "title": display,
            "section": [{"title": display, "entry": [{"reference": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000002", "type": "DocumentReference"}]}]}},
        {"fullUrl": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e", "resource": {"resourceType": "Patient",
            "id": "1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e", "name": [{"text": "Ramesh Pawar"}], "telecom": telecom,
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "mr-IN"}]}, "preferred": true}]}},
        {"fullUrl": "urn:uuid:3bc96820-c7c9-4f59-900d-6b0ed1fa558e", "resource": {"resourceType": "Practitioner",
            "id": "3bc96820-c7c9-4f59-900d-6b0ed1fa558e", "name": [{"text": "Dr. Ananya Deshmukh"}]}},
        {"fullUrl": "urn:uuid:a1b2c3d4-0000-4000-8000-000000000002", "resource": {"resourceType": "DocumentReference",
            "id": "a1b2c3d4-0000-4000-8000-000000000002", "status": "current",
            "type": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": "urn:uuid:1b0e7a2c-0f55-4d5c-9c1f-1f2a3b4c5d6e"},
            "content": [{"attachment": {"contentType": "application/pdf", "language": "en-IN",
                "data": wrapped_b64(&pdf(code)), "title": display}}]}}
    ]})
}

#[actix_rt::test]
async fn transaction_batch_and_abdm_document_bundles() {
    let app = spawn_app("fhir_bundles", Options::default()).await;
    document_templates(&app).await;
    let emr = start_emr();
    emr.binaries.lock().insert("rx-1".into(), pdf("rx"));
    link(&app, &emr, false).await;

    // A transaction: Patient and Practitioner by urn:uuid, an Appointment and a prescription
    // whose PDF is fetched from the clinic's server.
    let p = patient(621);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c3a6b4e-1111-4c1e-9a55-000000000001", "resource": {"resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "TX-1"}],
            "name": [{"given": ["Kiran"], "family": "Shah"}], "telecom": [{"system": "phone", "value": p, "use": "mobile"}]},
            "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0c3a6b4e-1111-4c1e-9a55-000000000002", "resource": {"resourceType": "Practitioner",
            "name": [{"prefix": ["Dr."], "given": ["Anil"], "family": "Mehta"}]},
            "request": {"method": "POST", "url": "Practitioner"}},
        {"resource": {"resourceType": "Appointment", "id": "tx-apt", "status": "booked", "start": at(2 * DAY_MS),
            "participant": [{"actor": {"reference": "urn:uuid:0c3a6b4e-1111-4c1e-9a55-000000000001"}, "status": "accepted"},
                            {"actor": {"reference": "urn:uuid:0c3a6b4e-1111-4c1e-9a55-000000000002"}, "status": "accepted"}]},
            "request": {"method": "PUT", "url": "Appointment/tx-apt"}},
        {"resource": {"resourceType": "DocumentReference", "id": "tx-rx", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "57833-6", "display": "Prescription for medication"}]},
            "subject": {"reference": "urn:uuid:0c3a6b4e-1111-4c1e-9a55-000000000001"},
            "author": [{"display": "Dr. Anil Mehta"}],
            "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/rx-1", "title": "Prescription"}}]},
            "request": {"method": "PUT", "url": "DocumentReference/tx-rx"}}
    ]});
    let (s, v) = fhir(&app, Method::POST, "", Some(&tx)).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (200, Some("transaction-response")),
        "{v}"
    );
    let statuses: Vec<&str> = v["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["response"]["status"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        statuses,
        ["201 Created", "200 OK", "201 Created", "201 Created"],
        "{v}"
    );
    // The Patient (without an id: keyed by its first identifier) is in the clinic's directory.
    let (s, stored) = app
        .call(
            Method::GET,
            "/v1/patients/Patient%3Fidentifier%3Durn%3Amrn%7CTX-1",
            KEY_A,
            None,
        )
        .await;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(
        (stored["name"].as_str(), stored["phone"].as_str()),
        (Some("Kiran Shah"), Some(p.as_str())),
        "{stored}"
    );
    let c = sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(15),
    )
    .await
    .unwrap_or_else(|| panic!("no confirmation"));
    assert_eq!(body_texts(&c)[3], "Dr. Anil Mehta");
    let rx = sent_template(&app, &p, "prescription_ready", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no prescription"));
    assert!(has_document_header(&rx));
    assert_eq!(emr.requests("GET", "/fhir/Binary/rx-1").len(), 1);

    // One entry that cannot be acted on: the whole transaction is refused, nothing sent.
    let p2 = patient(622);
    let bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appointment("tx-apt-2", &p2, 2 * DAY_MS), "request": {"method": "PUT", "url": "Appointment/tx-apt-2"}},
        {"resource": {"resourceType": "DiagnosticReport", "id": "tx-dr", "status": "final", "code": {"text": "CBC"},
            "subject": {"display": "Someone"},
            "presentedForm": [{"contentType": "application/pdf", "data": wrapped_b64(&pdf("cbc"))}]},
            "request": {"method": "PUT", "url": "DiagnosticReport/tx-dr"}}
    ]});
    let (s, v) = fhir(&app, Method::POST, "", Some(&bad)).await;
    assert_eq!(s, 422, "{v}");
    let d = diagnostics(&v);
    assert!(
        d.contains("Bundle.entry[1]: DiagnosticReport.subject: no Patient with a mobile phone"),
        "{d}"
    );
    assert!(d.contains("nothing was acted on"), "{d}");
    // An attachment URL off the allow-list is refused.
    let off_list = json!({"resourceType": "DocumentReference", "id": "evil", "status": "current",
        "contained": [contained_patient(&p2, "X")], "subject": {"reference": "#pat"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": "https://evil.example/x.pdf"}}]});
    let (s, v) = fhir(&app, Method::POST, "/DocumentReference", Some(&off_list)).await;
    assert_eq!(s, 422, "{v}");
    assert!(diagnostics(&v).contains("attachment allow-list"), "{v}");

    // A batch: each entry on its own.
    let p3 = patient(623);
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Encounter", "id": "b-enc", "status": "finished", "class": {"code": "AMB"},
            "contained": [contained_patient(&p3, "Lata")], "subject": {"reference": "#pat"},
            "period": {"end": at(-60_000)}},
         "request": {"method": "PUT", "url": "Encounter/b-enc"}},
        {"request": {"method": "GET", "url": "Appointment/tx-apt"}}
    ]});
    let (s, v) = fhir(&app, Method::POST, "", Some(&batch)).await;
    assert_eq!(
        (s, v["type"].as_str()),
        (200, Some("batch-response")),
        "{v}"
    );
    assert_eq!(v["entry"][0]["response"]["status"], "201 Created", "{v}");
    assert_eq!(
        v["entry"][1]["response"]["status"], "400 Bad Request",
        "{v}"
    );
    assert!(
        v["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("not a FHIR data store")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(templates_to(&app, &p2, "appointment_confirmation").is_empty());

    // ABDM document Bundles: the record type picks the touchpoint; the same document twice
    // sends once; a malformed one is refused.
    let p4 = patient(624);
    let prescription = abdm_bundle("440545006", "Prescription record", Some(&p4));
    let (s, v) = fhir(&app, Method::POST, "", Some(&prescription)).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        diagnostics(&v).contains("ABDM Prescription document delivered"),
        "{v}"
    );
    let rx = sent_template(&app, &p4, "prescription_ready", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no ABDM prescription"));
    assert_eq!(body_texts(&rx)[1], "Dr. Ananya Deshmukh");
    let (s, _) = fhir(&app, Method::POST, "", Some(&prescription)).await;
    assert_eq!(s, 200);
    for (code, display, template) in [
        ("721981007", "Diagnostic studies report", "lab_report_ready"),
        ("373942005", "Discharge summary", "health_record_ready"),
    ] {
        let (s, v) = fhir(
            &app,
            Method::POST,
            "",
            Some(&abdm_bundle(code, display, Some(&p4))),
        )
        .await;
        assert_eq!(s, 201, "{code}: {v}");
        assert!(
            sent_template(&app, &p4, template, Duration::from_secs(15))
                .await
                .is_some(),
            "{code}"
        );
    }
    let (s, v) = fhir(
        &app,
        Method::POST,
        "",
        Some(&abdm_bundle("440545006", "Prescription record", None)),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(diagnostics(&v).contains("no patient mobile"), "{v}");
    assert_eq!(v["issue"][0]["expression"][0], "Patient.telecom");
    let mut unknown = abdm_bundle("123456", "Something", Some(&p4));
    unknown["identifier"]["value"] = json!("other");
    let (s, v) = fhir(&app, Method::POST, "", Some(&unknown)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        diagnostics(&v).contains("Composition.type has no ABDM record type code"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(templates_to(&app, &p4, "prescription_ready").len(), 1);
}

#[actix_rt::test]
async fn a_patient_put_is_kept_in_the_clinics_patient_directory() {
    let app = spawn_app("fhir_patient", Options::default()).await;
    let p = patient(630);
    let resource = |given: &str| {
        json!({"resourceType": "Patient", "id": "pat-630",
        "identifier": [{"system": "urn:mrn", "value": "MRN-630"}],
        "name": [{"use": "official", "given": [given], "family": "Nair"}],
        "telecom": [{"system": "phone", "value": "080 4123 4567", "use": "work", "rank": 1},
                    {"system": "phone", "value": p, "use": "mobile", "rank": 2}],
        "gender": "female", "birthDate": "1979-06-02",
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-IN"}]}},
                          {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "ml-IN"}]}, "preferred": true}]})
    };
    let (s, v) = fhir(
        &app,
        Method::PUT,
        "/Patient/pat-630",
        Some(&resource("Anjali")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        diagnostics(&v).contains(
            "Patient/pat-630 added to the clinic's patient directory as `Patient/pat-630`"
        ),
        "{v}"
    );
    let get = |key: &'static str| {
        let app = &app;
        async move {
            app.call(Method::GET, "/v1/patients/Patient%2Fpat-630", key, None)
                .await
        }
    };
    let (s, created) = get(KEY_A).await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(
        (
            created["external_id"].as_str(),
            created["phone"].as_str(),
            created["name"].as_str(),
            created["language"].as_str(),
            created["birth_date"].as_str(),
            created["sex"].as_str(),
            created["consent"]["care"]["source"].as_str(),
        ),
        (
            Some("Patient/pat-630"),
            Some(p.as_str()),
            Some("Anjali Nair"),
            Some("ml"),
            Some("1979-06-02"),
            Some("female"),
            Some("default"),
        ),
        "{created}"
    );

    // A new name: the same record, updated; the same resource again: nothing changes.
    let (s, v) = fhir(
        &app,
        Method::PUT,
        "/Patient/pat-630",
        Some(&resource("Anjali K")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        diagnostics(&v).contains("updated in the clinic's patient directory"),
        "{v}"
    );
    let (_, updated) = get(KEY_A).await;
    assert_eq!(updated["name"], "Anjali K Nair", "{updated}");
    let (s, v) = fhir(
        &app,
        Method::PUT,
        "/Patient/pat-630",
        Some(&resource("Anjali K")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(diagnostics(&v).contains("already up to date"), "{v}");
    let (_, again) = get(KEY_A).await;
    assert_eq!(again, updated, "a re-sent Patient changed the record");
    let (_, listed) = app.call(Method::GET, "/v1/patients", KEY_A, None).await;
    assert_eq!(listed["total"], 1, "one record: {listed}");

    // Another clinic cannot see it.
    let (s, _) = get(KEY_B).await;
    assert_eq!(s, 404);
    let (_, listed) = app.call(Method::GET, "/v1/patients", KEY_B, None).await;
    assert_eq!(listed["total"], 0, "{listed}");

    // Without a usable mobile: accepted with a warning, not stored.
    let mut no_mobile = resource("Ravi");
    no_mobile["id"] = json!("pat-631");
    no_mobile["telecom"] = json!([{"system": "email", "value": "ravi@example.in"}]);
    let (s, v) = fhir(&app, Method::PUT, "/Patient/pat-631", Some(&no_mobile)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["issue"][0]["severity"], "warning", "{v}");
    assert!(
        diagnostics(&v).contains("not stored in the clinic's patient directory"),
        "{v}"
    );
    let (s, _) = app
        .call(Method::GET, "/v1/patients/Patient%2Fpat-631", KEY_A, None)
        .await;
    assert_eq!(s, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.sim
            .sent()
            .iter()
            .all(|r| r.to != p.trim_start_matches('+')),
        "nothing is sent for a Patient"
    );
}

#[actix_rt::test]
async fn endpoint_errors_are_operation_outcomes() {
    let app = spawn_app("fhir_errors", Options::default()).await;
    let resp = app
        .http
        .get(format!("{}/fhir/r4/metadata", app.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let cap: Value = resp.json().await.unwrap_or_default();
    assert_eq!(cap["resourceType"], "CapabilityStatement");
    assert_eq!(cap["fhirVersion"], "4.0.1");
    assert_eq!(cap["rest"][0]["resource"][0]["type"], "Appointment");
    let a = appointment("e-1", &patient(631), 2 * DAY_MS);
    let body = a.to_string().into_bytes();
    let (s, v) = fhir_raw(
        &app,
        Method::POST,
        "/Appointment",
        Some(body.clone()),
        None,
        "application/fhir+json",
    )
    .await;
    assert_eq!(
        (s, v["issue"][0]["code"].as_str()),
        (401, Some("login")),
        "{v}"
    );
    let (s, _) = fhir_raw(
        &app,
        Method::POST,
        "/Appointment",
        Some(body.clone()),
        Some("nope"),
        "application/fhir+json",
    )
    .await;
    assert_eq!(s, 401);
    let (s, v) = fhir_raw(
        &app,
        Method::POST,
        "/Appointment",
        Some(b"<Appointment/>".to_vec()),
        Some(KEY_A),
        "application/fhir+xml",
    )
    .await;
    assert_eq!(s, 415, "{v}");
    let (s, v) = fhir_raw(
        &app,
        Method::POST,
        "/Appointment",
        Some(b"{not json".to_vec()),
        Some(KEY_A),
        "application/fhir+json",
    )
    .await;
    assert_eq!(
        (s, v["issue"][0]["code"].as_str()),
        (400, Some("structure")),
        "{v}"
    );
    let (s, v) = fhir(&app, Method::POST, "/Encounter", Some(&a)).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        diagnostics(&v).contains("the body is a Appointment but the URL says Encounter"),
        "{v}"
    );
    let mut bad_status = a.clone();
    bad_status["status"] = json!("confirmed");
    let (s, v) = fhir(&app, Method::POST, "/Appointment", Some(&bad_status)).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["issue"][0]["expression"][0], "Appointment.status", "{v}");
    let (s, v) = fhir(&app, Method::PUT, "/Appointment/other-id", Some(&a)).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = fhir(&app, Method::GET, "/Appointment/e-1", None).await;
    assert_eq!(s, 405, "{v}");
    // A reference the gateway cannot read: no FHIR server linked.
    let mut remote_patient = a.clone();
    remote_patient
        .as_object_mut()
        .map(|o| o.remove("contained"));
    remote_patient["participant"][0]["actor"]["reference"] = json!("Patient/p9");
    let (s, v) = fhir(&app, Method::POST, "/Appointment", Some(&remote_patient)).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        diagnostics(&v)
            .contains("`Patient/p9` is not in the request, and the clinic has no FHIR server"),
        "{v}"
    );
    // The other clinic's key does not see clinic A's appointments: the same id books anew for B.
    let (s, _) = fhir(&app, Method::POST, "/Appointment", Some(&a)).await;
    assert_eq!(s, 201);
    let (s, v) = fhir_raw(
        &app,
        Method::POST,
        "/Appointment",
        Some(body),
        Some(KEY_B),
        "application/fhir+json",
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

// ------------------------------------------------------------------ mapping fuzz smoke

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn random_value(rng: &mut Rng) -> Value {
    let choices = [
        json!(null),
        json!(0),
        json!(-1),
        json!(""),
        json!([]),
        json!({}),
        json!("booked"),
        json!("final"),
        json!("finished"),
        json!("cancelled"),
        json!("#pat"),
        json!("urn:uuid:x"),
        json!("Patient/"),
        json!("application/pdf"),
        json!("JVBERi0xLjQK"),
        json!("2099-01-01T00:00:00Z"),
        json!("2024-02-30"),
        json!({"reference": "#pat"}),
        json!([{"system": "phone", "value": "+919876543210", "use": "mobile"}]),
        json!("x".repeat(300)),
    ];
    choices[rng.below(choices.len())].clone()
}

fn mutate(rng: &mut Rng, v: &mut Value, depth: usize) {
    let descend = depth < 6 && rng.below(3) != 0;
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.below(keys.len())];
            if k == "resourceType" && rng.below(4) != 0 {
                return;
            }
            match (descend, m.get_mut(k)) {
                (true, Some(child)) => mutate(rng, child, depth + 1),
                _ if rng.below(3) == 0 => {
                    m.remove(k);
                }
                (_, Some(child)) => *child = random_value(rng),
                _ => {}
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            if descend {
                mutate(rng, &mut a[i], depth + 1);
            } else {
                a[i] = random_value(rng);
            }
        }
        _ => *v = random_value(rng),
    }
}

fn exercise(
    r: &fhir_r4::Resource,
    raw: &Value,
    clinic: &clinic_gateway::tenants::ClinicSettings,
    depth: usize,
) {
    use clinic_gateway::emr::fhir::{abdm, ingest};
    use fhir_r4::Resource as R;
    let now = 1_800_000_000_000;
    let local = ingest::Local::new(raw, None).unwrap_or_default();
    match r {
        R::Appointment(a) => {
            let _ = ingest::appointment_action(a, None, clinic, &local, now);
            if let Ok(ingest::PatientRef::Local(p)) =
                ingest::patient_ref(ingest::patient_participant(a, &local), &local, "x")
            {
                let _ = ingest::patient_of(p, "x", clinic, "x");
            }
        }
        R::DiagnosticReport(d) => {
            let _ = ingest::diagnostic_report_action(d, "x");
        }
        R::DocumentReference(d) => {
            let _ = ingest::document_reference_action(d, "x");
        }
        R::Encounter(e) => {
            let _ = ingest::encounter_action(e, raw, "x", clinic, now);
        }
        R::Patient(p) => {
            let _ = ingest::patient_of(p, "x", clinic, "x");
            let _ = ingest::patient_record(p, "x", clinic, now);
        }
        R::Bundle(b) if depth < 2 => {
            if let Ok(doc) = fhir_r4::AbdmDocument::from_bundle(b) {
                let _ = abdm::plans(&doc, b, b"");
            }
            for (i, e) in b.entry.iter().enumerate() {
                if let Some(inner) = &e.resource {
                    let raw_inner = raw
                        .pointer(&format!("/entry/{i}/resource"))
                        .unwrap_or(&Value::Null);
                    exercise(inner, raw_inner, clinic, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Bounded and deterministic: mutated official examples never panic the gateway's mapping.
#[test]
fn mutated_examples_never_panic_the_mapping() {
    let clinic: clinic_gateway::tenants::ClinicSettings = serde_json::from_value(json!({
        "id": "clinic_t", "display_name": "Sunrise", "waba_id": "1", "portfolio_id": "1",
        "app_secret": "s", "access_token": "t", "numbers": [], "time_zone": "Asia/Kolkata",
        "default_country_code": "91", "default_language": "en", "low_balance_threshold": 0,
        "locations": [{"name": "South Wing, second floor", "latitude": 0.0, "longitude": 0.0}]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng(0x5EED_F41E_2026_0006);
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap_or_else(|e| panic!("{FIXTURES}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let mut runs = 0;
    for name in &names {
        let original = fixture(name);
        let big = original.to_string().len() > 100_000;
        for _ in 0..if big { 10 } else { 150 } {
            let mut v = original.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut v, 0);
            }
            if let Ok(r) = fhir_r4::Resource::from_value(v.clone()) {
                exercise(&r, &v, &clinic, 0);
            }
            runs += 1;
        }
    }
    assert!(runs >= 1_500, "{runs} runs");
}
