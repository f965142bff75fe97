//! Crash safety with the real binary: a gateway SIGKILLed mid-flight and restarted delivers every
//! accepted message exactly once. The sandbox's record of what reached Meta is the judge.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clinic_gateway::testing::{shared_redis, unique_prefix};
use common::faults::free_port;
use common::*;
use serde_json::Value;
use whatsapp_cloud::sandbox::{Faults, SandboxHandle};

struct Node {
    port: u16,
    prefix: String,
    sandbox_url: String,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    child: Option<Child>,
}

fn clinic_toml(tier: u32) -> String {
    let c = clinic("clinic_a", KEY_A, NUMBER_A, WABA_A, tier);
    format!(
        "[[clinics]]\nid = \"{}\"\nwallet_credit = 1000000000\napi_key_sha256 = \"{}\"\nwaba_id = \"{}\"\napp_secret = \"{}\"\naccess_token = \"{}\"\n\
         [[clinics.numbers]]\nphone_number_id = \"{}\"\ntier_mps = {}\n",
        c.id, c.api_key_sha256, c.waba_id, c.app_secret, c.access_token, NUMBER_A, tier
    )
}

impl Node {
    fn new(name: &str, sandbox: &SandboxHandle, port: u16, tier: u32) -> Self {
        let dir = std::env::temp_dir().join(unique_prefix(name).replace(':', "_"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let config = dir.join("gateway.toml");
        std::fs::write(&config, clinic_toml(tier)).unwrap_or_else(|e| panic!("{e}"));
        Self {
            port,
            prefix: unique_prefix(name),
            sandbox_url: sandbox.base_url(),
            config,
            log: dir.join("gateway.log"),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_clinic-gateway"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env(
                "CLINIC_GATEWAY__SERVER__BIND",
                format!("127.0.0.1:{}", self.port),
            )
            .env("CLINIC_GATEWAY__SERVER__WORKERS", "1")
            .env("CLINIC_GATEWAY__REDIS__URL", &shared_redis().url)
            .env("CLINIC_GATEWAY__REDIS__KEY_PREFIX", &self.prefix)
            .env("CLINIC_GATEWAY__META__BASE_URL", &self.sandbox_url)
            .env("CLINIC_GATEWAY__META__REQUEST_TIMEOUT_MS", "8000")
            .env("CLINIC_GATEWAY__DISPATCH__ARBITERS", "1")
            .env("CLINIC_GATEWAY__DISPATCH__RECLAIM_IDLE_MS", "9000")
            .env("CLINIC_GATEWAY__DISPATCH__STATUS_GRACE_MS", "6000")
            .env("CLINIC_GATEWAY__DISPATCH__IDLE_POLL_MS", "50")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("starting the gateway binary: {e}"));
        self.child = Some(child);
    }

    async fn wait_healthy(&self, http: &reqwest::Client) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(r) = http.get(format!("{}/readyz", self.base())).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "gateway did not become ready; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL: no drain, no acks, nothing flushed.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept(http: &reqwest::Client, node: &Node, i: usize) -> String {
    let resp = http
        .post(format!("{}/v1/messages", node.base()))
        .bearer_auth(KEY_A)
        .json(&template(&patient(i)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 202);
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    v["id"].as_str().unwrap_or_default().to_owned()
}

async fn wait_all_final(http: &reqwest::Client, node: &Node, ids: &[String], timeout: Duration) {
    let start = Instant::now();
    for id in ids {
        loop {
            let v: Value = http
                .get(format!("{}/v1/messages/{id}", node.base()))
                .bearer_auth(KEY_A)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or(Value::Null);
            if matches!(v["status"].as_str(), Some("delivered" | "read")) {
                break;
            }
            assert!(
                start.elapsed() < timeout,
                "{id} not delivered: {v}\nlog:\n{}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sends_per_message(sandbox: &SandboxHandle, ids: &[String]) -> Vec<usize> {
    let sent = sandbox.state().sent();
    ids.iter()
        .map(|id| {
            sent.iter()
                .filter(|r| r.message.biz_opaque_callback_data.as_deref() == Some(id))
                .count()
        })
        .collect()
}

#[actix_rt::test]
async fn killed_before_send_delivers_everything_once_after_restart() {
    let port = free_port();
    let opts = Options {
        tier_mps: 5,
        ..Options::default()
    };
    let sandbox = start_sandbox(format!("http://127.0.0.1:{port}/webhooks/whatsapp"), &opts);
    let mut node = Node::new("crash_before_send", &sandbox, port, 5);
    let http = reqwest::Client::new();
    node.start();
    node.wait_healthy(&http).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(accept(&http, &node, i).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    node.kill();
    let before = sandbox.state().sent().len();
    assert!(
        before < ids.len(),
        "the kill happened with work still queued ({before} sent)"
    );
    node.start();
    node.wait_healthy(&http).await;
    wait_all_final(&http, &node, &ids, Duration::from_secs(40)).await;
    assert_eq!(
        sends_per_message(&sandbox, &ids),
        vec![1; ids.len()],
        "each accepted message reached Meta exactly once"
    );
    assert_wallet_settled(&http, &node, ids.len()).await;
}

#[actix_rt::test]
async fn killed_after_meta_accepted_before_ack_is_not_sent_again() {
    let port = free_port();
    // Statuses leave the sandbox only after the kill, so they reach the restarted gateway
    // through the sandbox's webhook retries, as Meta's would.
    let opts = Options {
        status_latency: Duration::from_millis(1_500),
        ..Options::default()
    };
    let sandbox = start_sandbox(format!("http://127.0.0.1:{port}/webhooks/whatsapp"), &opts);
    let sim = sandbox.state();
    let mut node = Node::new("crash_after_accept", &sandbox, port, 80);
    let http = reqwest::Client::new();
    node.start();
    node.wait_healthy(&http).await;
    // Meta records the send at once but its HTTP answer is slow: the gateway dies waiting for it.
    sim.set_faults(Faults {
        response_delay_ms: 5_000,
        ..Faults::default()
    });
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(accept(&http, &node, i).await);
    }
    let start = Instant::now();
    while sim.sent().len() < ids.len() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sandbox never received the sends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill();
    sim.set_faults(Faults::default());
    node.start();
    node.wait_healthy(&http).await;
    wait_all_final(&http, &node, &ids, Duration::from_secs(40)).await;
    assert_eq!(
        sends_per_message(&sandbox, &ids),
        vec![1; ids.len()],
        "no message was sent twice"
    );
    assert_wallet_settled(&http, &node, ids.len()).await;
}

/// After a crash and restart, the wallet still balances to the micro-unit: every delivered
/// utility template settled once, nothing left reserved, and the ledger replays to the balance.
async fn assert_wallet_settled(http: &reqwest::Client, node: &Node, delivered: usize) {
    const UTILITY: i64 = 115_000;
    const CREDIT: i64 = 1_000_000_000;
    let start = Instant::now();
    let mut w = Value::Null;
    while start.elapsed() < Duration::from_secs(20) {
        w = http
            .get(format!("{}/v1/wallet", node.base()))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        if w["reserved"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(w["reserved"], 0, "{w}");
    assert_eq!(
        w["settled"].as_i64(),
        Some(delivered as i64 * UTILITY),
        "{w}"
    );
    assert_eq!(
        w["available"].as_i64(),
        Some(CREDIT - delivered as i64 * UTILITY),
        "{w}"
    );
    let ledger: Value = http
        .get(format!("{}/v1/wallet/ledger?limit=1000", node.base()))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or(Value::Null);
    let entries = ledger["entries"].as_array().cloned().unwrap_or_default();
    let replayed = replay_ledger(&entries);
    assert_eq!(
        Some(replayed),
        w["available"].as_i64(),
        "the ledger replays to the balance: {ledger}"
    );
}

#[actix_rt::test]
async fn a_scheduled_reminder_survives_a_restart_and_is_sent_once() {
    let port = free_port();
    let opts = Options::default();
    let sandbox = start_sandbox(format!("http://127.0.0.1:{port}/webhooks/whatsapp"), &opts);
    let mut node = Node::new("crash_scheduler", &sandbox, port, 80);
    let http = reqwest::Client::new();
    node.start();
    node.wait_healthy(&http).await;
    // The 24 h reminder falls due six seconds from now, while the gateway is down and after.
    let start = chrono::Utc::now() + chrono::Duration::hours(24) + chrono::Duration::seconds(6);
    let resp = http
        .post(format!("{}/v1/appointments", node.base()))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({"patient": {"phone": PATIENT, "name": "Asha"}, "doctor": "Dr. Rao", "start": start.to_rfc3339()}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 201);
    node.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.start();
    node.wait_healthy(&http).await;
    let is_reminder = |r: &whatsapp_cloud::sandbox::SentRecord| matches!(&r.message.content, whatsapp_cloud::wire::Content::Template { template } if template.name == "visit_reminder");
    let began = Instant::now();
    while !sandbox.state().sent().iter().any(is_reminder) {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the reminder never came; log:\n{}",
            std::fs::read_to_string(&node.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sandbox
            .state()
            .sent()
            .iter()
            .filter(|r| is_reminder(r))
            .count(),
        1,
        "sent once"
    );
}
