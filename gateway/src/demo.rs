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
        "appointment_confirmation",
        "en",
        TemplateCategory::Utility,
        "Hello {{1}}, your appointment with {{2}} is confirmed for {{3}}.",
        TemplateStatus::Approved,
    );

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
            "name": "appointment_confirmation",
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
