//! Integration-test harness: a real Redis (unique key prefix per test), the Meta sandbox on port 0
//! sending signed webhooks to the gateway, and the gateway itself on port 0.
#![allow(dead_code)]

pub mod faults;
mod http;
mod mllp;
mod sandbox;
mod values;
mod wait;

// Re-exported so `use common::*` brings every helper; a test binary that needs none of a
// module's helpers would otherwise warn about the import.
#[allow(unused_imports)]
pub use {http::*, mllp::*, sandbox::*, values::*, wait::*};

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clinic_gateway::app::Application;
use clinic_gateway::config::{ClinicConfig, NumberConfig, Settings, StoreKind, TemplatesSettings};
use clinic_gateway::domain::TenantId as Tenant;
use clinic_gateway::domain::{PhoneNumberId, TenantId};
use clinic_gateway::store::{Backend, RedisStore};
use clinic_gateway::template_library::TemplateLibrary;
use clinic_gateway::tenants::hash_api_key;
use clinic_gateway::testing::{shared_redis, unique_prefix};
use reqwest::Method;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxState, SentRecord};
use whatsapp_cloud::wire::{TemplateCategory, TemplateStatus};

pub const KEY_A: &str = "test-key-clinic-a";
pub const KEY_B: &str = "test-key-clinic-b";
pub const NUMBER_A: &str = "100000000000001";
pub const NUMBER_B: &str = "200000000000002";
pub const WABA_A: &str = "300000000000003";
pub const WABA_B: &str = "400000000000004";
pub const APP_SECRET: &str = "test-app-secret";
pub const PATIENT: &str = "+919876543210";
pub const ADMIN_KEY: &str = "test-admin-key";

/// A change to the settings, applied last.
pub type Configure = Arc<dyn Fn(&mut Settings) + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    pub tier_mps: u32,
    pub status_latency: Duration,
    pub request_timeout_ms: u64,
    pub status_grace_ms: u64,
    pub reclaim_idle_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_attempts: u32,
    pub duplicate_rate: f64,
    pub reorder: bool,
    pub redis_url: Option<String>,
    pub max_message_bytes: usize,
    pub read_receipts: bool,
    pub wallet_credit: i64,
    /// Both clinics share this portfolio and messaging limit when set.
    pub shared_portfolio_limit: Option<u32>,
    pub api_rate_per_second: u32,
    pub passivate_after_ms: u64,
    pub actor_idle_secs: u64,
    /// Last changes to the settings before the app starts (e.g. enable MLLP, link a clinic's EMR).
    pub configure: Option<Configure>,
    /// Seed every library template (documents, follow-up, feedback too), not just the
    /// appointment ones.
    pub full_library: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tier_mps: 80,
            status_latency: Duration::from_millis(30),
            request_timeout_ms: 2_000,
            status_grace_ms: 2_000,
            reclaim_idle_ms: 3_000,
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            max_attempts: 8,
            duplicate_rate: 0.0,
            reorder: false,
            redis_url: None,
            max_message_bytes: 65_536,
            read_receipts: true,
            wallet_credit: 1_000_000_000,
            shared_portfolio_limit: None,
            api_rate_per_second: 1_000,
            passivate_after_ms: 60_000,
            actor_idle_secs: 300,
            configure: None,
            full_library: false,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub sandbox: SandboxHandle,
    pub sim: SandboxState,
    pub store: Arc<dyn Backend>,
    pub prefix: String,
    pub server: actix_web::dev::ServerHandle,
    /// The MLLP listener's port, when the settings enable it.
    pub mllp_port: Option<u16>,
}

pub fn clinic(id: &str, key: &str, number: &str, waba: &str, tier_mps: u32) -> ClinicConfig {
    ClinicConfig {
        id: TenantId::parse(id).unwrap_or_else(|e| panic!("{e}")),
        name: id.into(),
        api_key_sha256: hash_api_key(key),
        default_country_code: "91".into(),
        waba_id: waba.into(),
        app_secret: APP_SECRET.into(),
        access_token: format!("token-{id}"),
        portfolio_id: String::new(),
        time_zone: "Asia/Kolkata".into(),
        // 1,000.00 of credit: plenty for the tests that are not about money.
        wallet_credit: 1_000_000_000,
        messaging_limit: None,
        emr: Default::default(),
        numbers: vec![NumberConfig {
            phone_number_id: PhoneNumberId::parse(number).unwrap_or_else(|e| panic!("{e}")),
            display: number.into(),
            tier_mps,
        }],
    }
}

/// Starts the sandbox with two registered numbers and an approved template.
pub fn start_sandbox(webhook_url: String, opts: &Options) -> SandboxHandle {
    let sandbox = Sandbox::spawn(SandboxConfig {
        webhook_url: Some(webhook_url),
        app_secret: APP_SECRET.into(),
        status_latency: opts.status_latency,
        duplicate_rate: opts.duplicate_rate,
        reorder: opts.reorder,
        read_receipts: opts.read_receipts,
        webhook_retry_interval: Duration::from_millis(300),
        auto_register_numbers: false,
        ..SandboxConfig::default()
    })
    .unwrap_or_else(|e| panic!("sandbox: {e}"));
    let sim = sandbox.state();
    sim.register_number(NUMBER_A, WABA_A, "918045550001", opts.tier_mps.max(1));
    sim.register_number(NUMBER_B, WABA_B, "918045550002", opts.tier_mps.max(1));
    for waba in [WABA_A, WABA_B] {
        approve_templates(&sim, waba, opts.full_library);
    }
    sandbox
}

/// Approves on `waba` the test template `appointment_reminder` and the appointment
/// touchpoints' templates in every language, exactly as the library defines them (header format
/// and buttons included); the whole library with `full_library` (otherwise tests create
/// `lab_report_ready` themselves to watch Meta's review).
pub fn approve_templates(sim: &SandboxState, waba: &str, full_library: bool) {
    let library = TemplateLibrary::load(&TemplatesSettings::default().resolved_dir())
        .unwrap_or_else(|e| panic!("{e}"));
    sim.add_template(
        waba,
        "appointment_reminder",
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}, see you at {{2}}.",
        TemplateStatus::Approved,
    );
    for def in library.templates().iter().filter(|t| {
        full_library
            || [
                "appointment_confirmation",
                "visit_reminder",
                "appointment_rescheduled",
                "appointment_cancelled",
            ]
            .contains(&t.name.as_str())
    }) {
        sim.add_template_def(waba, def, TemplateStatus::Approved);
    }
}

pub fn settings(base_url: &str, prefix: &str, opts: &Options) -> Settings {
    let mut s = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
    s.store.kind = StoreKind::Redis;
    s.redis.url = opts
        .redis_url
        .clone()
        .unwrap_or_else(|| shared_redis().url.clone());
    s.redis.key_prefix = prefix.to_owned();
    s.redis.pool_size = 8;
    s.meta.base_url = base_url.to_owned();
    s.meta.webhook_verify_token = "verify-me".into();
    s.meta.request_timeout_ms = opts.request_timeout_ms;
    s.server.workers = 2;
    s.server.max_message_bytes = opts.max_message_bytes;
    s.server.shutdown_grace_secs = 2;
    s.admin.api_key_sha256 = vec![hash_api_key(ADMIN_KEY)];
    s.actors.idle_secs = opts.actor_idle_secs;
    s.actors.conversation_idle_secs = opts.actor_idle_secs.min(15);
    let d = &mut s.dispatch;
    d.arbiters = 1;
    d.status_grace_ms = opts.status_grace_ms;
    d.reclaim_idle_ms = opts.reclaim_idle_ms;
    d.retry_base_ms = opts.retry_base_ms;
    d.retry_max_ms = opts.retry_max_ms;
    d.max_attempts = opts.max_attempts;
    d.idle_poll_ms = 50;
    d.idle_poll_max_ms = 200;
    d.passivate_after_ms = opts.passivate_after_ms;
    s.api.rate_per_second = opts.api_rate_per_second;
    s.api.burst = opts.api_rate_per_second;
    s.clinics = vec![
        clinic("clinic_a", KEY_A, NUMBER_A, WABA_A, opts.tier_mps),
        clinic("clinic_b", KEY_B, NUMBER_B, WABA_B, opts.tier_mps),
    ];
    for c in &mut s.clinics {
        c.wallet_credit = opts.wallet_credit;
        if let Some(limit) = opts.shared_portfolio_limit {
            c.portfolio_id = "portfolio_shared".into();
            c.messaging_limit = Some(limit);
        }
    }
    if let Some(configure) = &opts.configure {
        configure(&mut s);
    }
    s.validate().unwrap_or_else(|e| panic!("{e}"));
    s
}

/// The app in-process (call from `#[actix_rt::test]`).
pub async fn spawn_app(name: &str, opts: Options) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let sandbox = start_sandbox(format!("{base}/webhooks/whatsapp"), &opts);
    let prefix = unique_prefix(name);
    let settings = settings(&sandbox.base_url(), &prefix, &opts);
    let store: Arc<dyn Backend> = Arc::new(
        RedisStore::connect(&settings.redis.url, &prefix, 8).unwrap_or_else(|e| panic!("{e}")),
    );
    let app = Application::build_with(settings, listener, store.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let server = app.server_handle();
    let mllp_port = app.mllp_addr().map(|a| a.port());
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        base,
        http: reqwest::Client::new(),
        sim: sandbox.state(),
        sandbox,
        store,
        prefix,
        server,
        mllp_port,
    }
}

impl TestApp {
    /// The patient writes to clinic A's number; returns once the gateway has opened the window.
    pub async fn open_window(&self, patient: &str) {
        self.sim
            .inject_inbound_text(NUMBER_A, patient.trim_start_matches('+'), "hello");
        let tenant = Tenant::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self
                .store
                .window_until(&tenant, patient.trim_start_matches('+'))
                .await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the gateway never saw the patient's message");
    }

    pub async fn post(&self, key: &str, body: &Value) -> (u16, Value) {
        self.post_raw(key, body.to_string().into_bytes(), None)
            .await
    }

    pub async fn post_raw(&self, key: &str, body: Vec<u8>, idem: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/messages", self.base))
            .bearer_auth(key)
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        api_answer(req.send().await.unwrap_or_else(|e| panic!("{e}"))).await
    }

    /// The Prometheus exposition of the gateway.
    pub async fn metrics_text(&self) -> String {
        match self.http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("{e}"),
        }
    }

    /// Changes a clinic's settings through the admin API; they must be accepted.
    pub async fn patch_clinic(&self, clinic: &str, body: serde_json::Value) {
        let (s, v) = self
            .call(
                reqwest::Method::PATCH,
                &format!("/admin/v1/clinics/{clinic}"),
                ADMIN_KEY,
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// A JSON request with a bearer key; returns status and body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_message(&self, key: &str, id: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/messages/{id}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The appointment as clinic A's API shows it.
    pub async fn appointment(&self, id: &str) -> Value {
        self.call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
            .await
            .1
    }

    /// Sends and returns the message id (asserting 202).
    pub async fn send(&self, body: &Value) -> String {
        let (status, v) = self.post(KEY_A, body).await;
        assert_eq!(status, 202, "{v}");
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {v}"))
            .to_owned()
    }

    /// Polls until the message reaches one of `states` or the timeout passes; returns the view.
    pub async fn wait_for(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.get_message(KEY_A, id).await;
            let s = v["status"].as_str().unwrap_or("");
            if states.contains(&s) || start.elapsed() > timeout {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the sandbox answer 131026 for `phone` and sends it a template; returns the message
    /// id and its view once it failed (or the timeout passed).
    pub async fn send_to_number_not_on_whatsapp(&self, phone: &str) -> (String, Value) {
        self.sim.mark_not_on_whatsapp(phone.trim_start_matches('+'));
        let id = self.send(&template(phone)).await;
        let v = self
            .wait_for(&id, &["failed"], Duration::from_secs(10))
            .await;
        (id, v)
    }

    /// Sandbox records of one message, judged by the id the gateway put in biz_opaque_callback_data.
    pub fn sent_for(&self, id: &str) -> Vec<SentRecord> {
        self.sim
            .sent()
            .into_iter()
            .filter(|r| r.message.biz_opaque_callback_data.as_deref() == Some(id))
            .collect()
    }
}

pub fn text(to: &str, body: &str) -> Value {
    json!({"to": to, "type": "text", "text": {"body": body}})
}

pub fn template(to: &str) -> Value {
    json!({
        "to": to,
        "type": "template",
        "template": {
            "name": "appointment_reminder",
            "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": "Asha"}, {"type": "text", "text": "10:30"}
            ]}]
        }
    })
}

/// A distinct patient number per index, so pair-rate limits do not interfere.
pub fn patient(i: usize) -> String {
    format!("+9198{:08}", 10_000_000 + i)
}

/// Largest number of sends in any rolling one-second window.
pub fn max_per_second(records: &[SentRecord]) -> usize {
    let times: Vec<_> = records.iter().map(|r| r.at).collect();
    max_per_second_at(&times)
}

/// Largest number of instants in any rolling one-second window.
pub fn max_per_second_at(times: &[std::time::SystemTime]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi]
            .duration_since(times[lo])
            .map(|d| d >= Duration::from_secs(1))
            .unwrap_or(false)
        {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Captured callbacks: (signature header, raw body).
pub type Captured = Arc<parking_lot::Mutex<Vec<(String, Vec<u8>)>>>;

/// A clinic's callback endpoint on port 0 that records what it receives.
pub fn callback_receiver() -> (String, Captured) {
    let captured: Captured = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}/events",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let sink = captured.clone();
    let server = actix_web::HttpServer::new(move || {
        let sink = sink.clone();
        actix_web::App::new().route(
            "/events",
            actix_web::web::post().to(
                move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("X-Clinic-Gateway-Signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        sink.lock().push((sig, body.to_vec()));
                        actix_web::HttpResponse::Ok().finish()
                    }
                },
            ),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    actix_rt::spawn(server);
    (url, captured)
}

/// Replays a wallet ledger: credits − charges − holds not yet settled or released.
pub fn replay_ledger(entries: &[Value]) -> i64 {
    entries.iter().fold(0, |acc, e| {
        let amount = e["amount"].as_i64().unwrap_or(0);
        let reserved = e["reserved"].as_i64().unwrap_or(0);
        match e["kind"].as_str() {
            Some("credit") => acc + amount,
            Some("reserve") => acc - amount,
            Some("release") => acc + amount,
            Some("settle") => acc + reserved - amount,
            _ => acc,
        }
    })
}
