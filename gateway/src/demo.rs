//! `clinic-gateway demo`: the whole path on one machine. A memory store, the Meta sandbox
//! in-process, one seeded clinic; sends a template and a document and shows their timelines.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig};
use whatsapp_cloud::wire::{TemplateCategory, TemplateStatus};

use crate::app::{AppError, Application};
use crate::config::{ClinicConfig, NumberConfig, Settings, StoreKind};
use crate::domain::{PhoneNumberId, TenantId};
use crate::store::MemoryStore;
use crate::tenants::hash_api_key;

pub const DEMO_API_KEY: &str = "demo-api-key-not-for-production";
pub const DEMO_ADMIN_KEY: &str = "demo-admin-key-not-for-production";
pub const DEMO_NUMBER: &str = "106540352242922";
pub const DEMO_WABA: &str = "102290129340398";
pub const DEMO_PATIENT: &str = "+919876543210";
const DEMO_APP_SECRET: &str = "demo-app-secret";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error("demo request failed: {0}")]
    Http(#[from] reqwest::Error),
}

fn bind(port: u16) -> Result<TcpListener, DemoError> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .or_else(|_| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .map_err(|e| DemoError::Setup(format!("no port to listen on: {e}")))
}

fn demo_settings(sandbox_url: &str, listener: &TcpListener) -> Result<Settings, DemoError> {
    let mut s = Settings::defaults().map_err(|e| DemoError::Setup(e.to_string()))?;
    s.store.kind = StoreKind::Memory;
    s.meta.base_url = sandbox_url.to_owned();
    s.meta.webhook_verify_token = "demo-verify-token".into();
    s.server.bind = listener
        .local_addr()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    s.server.workers = 2;
    s.admin.api_key_sha256 = vec![hash_api_key(DEMO_ADMIN_KEY)];
    let id = |s: &str| TenantId::parse(s).map_err(|e| DemoError::Setup(e.to_string()));
    let number = PhoneNumberId::parse(DEMO_NUMBER).map_err(|e| DemoError::Setup(e.to_string()))?;
    s.clinics = vec![ClinicConfig {
        id: id("clinic_demo")?,
        name: "Sunrise Family Clinic".into(),
        api_key_sha256: hash_api_key(DEMO_API_KEY),
        default_country_code: "91".into(),
        waba_id: DEMO_WABA.into(),
        app_secret: DEMO_APP_SECRET.into(),
        access_token: "demo-access-token".into(),
        portfolio_id: String::new(),
        time_zone: "Asia/Kolkata".into(),
        // 500.00 of wallet credit, so the demo clinic can pay for its templates.
        wallet_credit: 500_000_000,
        messaging_limit: Some(250),
        emr: Default::default(),
        numbers: vec![NumberConfig {
            phone_number_id: number,
            display: "+91 80 4555 1234".into(),
            tier_mps: 80,
        }],
    }];
    s.validate().map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(s)
}

pub async fn run(port: u16) -> Result<(), DemoError> {
    let listener = bind(port)?;
    let gateway_port = listener
        .local_addr()
        .map_err(|e| DemoError::Setup(e.to_string()))?
        .port();
    let base = format!("http://127.0.0.1:{gateway_port}");

    let sandbox = Sandbox::spawn(SandboxConfig {
        webhook_url: Some(format!("{base}/webhooks/whatsapp")),
        app_secret: DEMO_APP_SECRET.into(),
        status_latency: Duration::from_millis(400),
        auto_register_numbers: false,
        ..SandboxConfig::default()
    })
    .map_err(|e| DemoError::Setup(format!("sandbox: {e}")))?;
    let sim = sandbox.state();
    sim.register_number(DEMO_NUMBER, DEMO_WABA, "918045551234", 80);
    sim.add_template(
        DEMO_WABA,
        "clinic_greeting",
        "en",
        TemplateCategory::Utility,
        "Hello {{1}}, {{2}} will see you at {{3}}.",
        TemplateStatus::Approved,
    );
    // The appointment touchpoints' templates (gateway/src/workflows/appointments.rs).
    for (name, body) in [
        (
            "appointment_confirmation",
            "Hi {{1}}, your appointment on {{2}} at {{3}} with {{4}} at {{5}} is booked.",
        ),
        (
            "visit_reminder",
            "Hi {{1}}, a reminder of your visit on {{2}} at {{3}} with {{4}}.",
        ),
        (
            "appointment_rescheduled",
            "Hi {{1}}, your appointment moved to {{2}} at {{3}} with {{4}}.",
        ),
        (
            "appointment_cancelled",
            "Hi {{1}}, your appointment on {{2}} at {{3}} is cancelled.",
        ),
    ] {
        sim.add_template(
            DEMO_WABA,
            name,
            "en",
            TemplateCategory::Utility,
            body,
            TemplateStatus::Approved,
        );
    }

    let settings = demo_settings(&sandbox.base_url(), &listener)?;
    let app = Application::build_with(settings, listener, Arc::new(MemoryStore::new())).await?;
    let server = actix::spawn(app.run_until_stopped());

    println!("\nClinic Gateway demo");
    println!("  gateway  {base}");
    println!(
        "  sandbox  {}  (Meta's Cloud API, simulated)",
        sandbox.base_url()
    );
    println!("  clinic   clinic_demo, API key {DEMO_API_KEY}");
    println!("  admin    key {DEMO_ADMIN_KEY}\n");

    // The patient writes first, which opens the 24 h window so the document may be sent free-form.
    sim.inject_inbound_text(
        DEMO_NUMBER,
        DEMO_PATIENT.trim_start_matches('+'),
        "Hi, please send my prescription",
    );
    // The patient's message reaches the gateway as a webhook; give it a moment to open the window.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let http = reqwest::Client::new();
    let template = json!({
        "to": DEMO_PATIENT,
        "type": "template",
        "template": {
            "name": "clinic_greeting",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Asha"},
                {"type": "text", "text": "Dr. Rao"},
                {"type": "text", "text": "25 Nov, 10:30"}
            ]}]
        }
    });
    let document = json!({
        "to": DEMO_PATIENT,
        "type": "document",
        "document": {"link": "https://example.org/rx/prescription.pdf", "filename": "prescription.pdf",
                     "caption": "Your prescription from Dr. Rao"}
    });
    let mut ids = Vec::new();
    for (what, body) in [("template", template), ("document", document)] {
        let resp: Value = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(DEMO_API_KEY)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        println!("POST /v1/messages ({what}) -> 202 {resp}");
        if let Some(id) = resp.get("id").and_then(Value::as_str) {
            ids.push(id.to_owned());
        }
    }

    for id in &ids {
        let mut last = Value::Null;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            last = http
                .get(format!("{base}/v1/messages/{id}"))
                .bearer_auth(DEMO_API_KEY)
                .send()
                .await?
                .json()
                .await?;
            if last.get("status").and_then(Value::as_str) == Some("read") {
                break;
            }
        }
        println!(
            "\nGET /v1/messages/{id}: status {}",
            last.get("status").unwrap_or(&Value::Null)
        );
        for ev in last
            .get("timeline")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            println!(
                "  {}  {:<10} {}",
                ev.get("at").and_then(Value::as_str).unwrap_or(""),
                ev.get("event").and_then(Value::as_str).unwrap_or(""),
                ev.get("detail").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
    appointment_story(&http, &base, &sim).await?;
    println!("\nSandbox received {} message(s).", sim.sent().len());
    println!("\nTry next (Ctrl-C to stop):");
    println!(
        "  curl -s -X POST {base}/v1/messages -H 'Authorization: Bearer {DEMO_API_KEY}' -H 'Content-Type: application/json' \\\n    -d '{{\"to\":\"{DEMO_PATIENT}\",\"type\":\"text\",\"text\":{{\"body\":\"Your report is ready\"}}}}'"
    );
    println!("  curl -s {base}/v1/messages/<id> -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  curl -s {base}/v1/wallet -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  curl -s {base}/admin/v1/clinics -H 'Authorization: Bearer {DEMO_ADMIN_KEY}'");
    println!("  curl -s {}/_sim/sent", sandbox.base_url());
    println!("  curl -s {base}/metrics | grep clinic_gateway_sends_total");

    match server.await {
        Ok(result) => result?,
        Err(e) => return Err(DemoError::Setup(format!("server task: {e}"))),
    }
    sandbox.stop();
    Ok(())
}

/// A booking whose 24 h reminder falls due a few seconds from now; the patient taps Cancel.
async fn appointment_story(
    http: &reqwest::Client,
    base: &str,
    sim: &whatsapp_cloud::sandbox::SandboxState,
) -> Result<(), DemoError> {
    use whatsapp_cloud::wire::{ButtonParameter, Component, Content};
    let start = chrono::Utc::now() + chrono::Duration::hours(24) + chrono::Duration::seconds(4);
    let booked: Value = http
        .post(format!("{base}/v1/appointments"))
        .bearer_auth(DEMO_API_KEY)
        .json(
            &json!({"external_id": "EMR-1001", "patient": {"phone": DEMO_PATIENT, "name": "Asha"},
                      "doctor": "Dr. Rao", "start": start.to_rfc3339()}),
        )
        .send()
        .await?
        .json()
        .await?;
    let id = booked
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    println!("\nPOST /v1/appointments -> {id} (confirmation sent; reminder due in 4 s)");
    let reminder = {
        let mut found = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            found = sim.sent().into_iter().find(|r| matches!(&r.message.content, Content::Template { template } if template.name == "visit_reminder"));
            if found.is_some() {
                break;
            }
        }
        found.ok_or_else(|| DemoError::Setup("the reminder did not arrive".into()))?
    };
    let cancel = match &reminder.message.content {
        Content::Template { template } => template.components.iter().find_map(|c| match c {
            Component::Button { parameters, .. } => parameters.iter().find_map(|p| match p {
                ButtonParameter::Payload { payload } if payload.starts_with("CANCEL:") => {
                    Some(payload.clone())
                }
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
    .unwrap_or_default();
    println!("reminder reached the patient with buttons Confirm / Cancel / Reschedule");
    println!("the patient taps Cancel ({cancel})");
    sim.inject_button_tap(
        DEMO_NUMBER,
        DEMO_PATIENT.trim_start_matches('+'),
        &reminder.wamid,
        "Cancel",
        &cancel,
    );
    let mut status = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = http
            .get(format!("{base}/v1/appointments/{id}"))
            .bearer_auth(DEMO_API_KEY)
            .send()
            .await?
            .json()
            .await?;
        if status.get("status").and_then(Value::as_str) == Some("cancelled") {
            break;
        }
    }
    println!(
        "GET /v1/appointments/{id}: status {}, patient response {}",
        status.get("status").unwrap_or(&Value::Null),
        status.get("response").unwrap_or(&Value::Null)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in sim
        .sent()
        .iter()
        .filter(|r| r.to == DEMO_PATIENT.trim_start_matches('+'))
    {
        if let Content::Text { text } = &r.message.content {
            println!("  to the patient: {}", text.body);
        }
    }
    Ok(())
}
