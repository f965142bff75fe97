//! Fault-test support: the real `clinic-gateway` binary as a child process (SIGKILL, SIGTERM,
//! restart), a Redis of the test's own with AOF that can be killed and restarted on the same
//! port, HTTP calls that are always bounded in time, and the checks every fault test ends with
//! (each accepted message reached Meta exactly once; the wallet ledger balances exactly).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clinic_gateway::testing::unique_prefix;
use serde_json::Value;
use whatsapp_cloud::sandbox::{SandboxHandle, SentRecord};

use super::{clinic, replay_ledger, KEY_A, NUMBER_A, WABA_A};

/// The price of one delivered utility template to an Indian number (the default rate card).
pub const UTILITY: i64 = 115_000;

/// Whether the long variants run (`FAULTS_LONG=1`).
pub fn long() -> bool {
    std::env::var("FAULTS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_prefix(name).replace(':', "_"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

// ------------------------------------------------------------------ the gateway binary

/// One `clinic-gateway serve` child serving clinic A, against a sandbox and a Redis.
pub struct Node {
    pub port: u16,
    pub prefix: String,
    pub redis_url: String,
    sandbox_url: String,
    config: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    /// `credit`: clinic A's wallet credit in micro-units; `env`: extra
    /// `CLINIC_GATEWAY__…` settings.
    pub fn new(
        name: &str,
        sandbox: &SandboxHandle,
        redis_url: &str,
        port: u16,
        tier: u32,
        credit: i64,
        env: &[(&str, &str)],
    ) -> Self {
        let c = clinic("clinic_a", KEY_A, NUMBER_A, WABA_A, tier);
        let toml = format!(
            "[[clinics]]\nid = \"{}\"\nwallet_credit = {credit}\napi_key_sha256 = \"{}\"\nwaba_id = \"{}\"\napp_secret = \"{}\"\naccess_token = \"{}\"\n\
             [[clinics.numbers]]\nphone_number_id = \"{}\"\ntier_mps = {tier}\n",
            c.id, c.api_key_sha256, c.waba_id, c.app_secret, c.access_token, NUMBER_A
        );
        Self::with_config(
            name,
            sandbox,
            redis_url,
            port,
            &toml,
            &unique_prefix(name),
            env,
        )
    }

    /// A node with its own configuration file text and key prefix (the nodes of one
    /// deployment share the prefix and the Redis).
    pub fn with_config(
        name: &str,
        sandbox: &SandboxHandle,
        redis_url: &str,
        port: u16,
        toml: &str,
        prefix: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = temp_dir(name);
        let config = dir.join("gateway.toml");
        std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
        Self {
            port,
            prefix: prefix.to_owned(),
            redis_url: redis_url.to_owned(),
            sandbox_url: sandbox.base_url(),
            config,
            log: dir.join("gateway.log"),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clinic-gateway"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env(
                "CLINIC_GATEWAY__SERVER__BIND",
                format!("127.0.0.1:{}", self.port),
            )
            .env("CLINIC_GATEWAY__SERVER__WORKERS", "2")
            .env("CLINIC_GATEWAY__REDIS__URL", &self.redis_url)
            .env("CLINIC_GATEWAY__REDIS__KEY_PREFIX", &self.prefix)
            .env("CLINIC_GATEWAY__META__BASE_URL", &self.sandbox_url)
            .env("CLINIC_GATEWAY__META__REQUEST_TIMEOUT_MS", "2000")
            .env("CLINIC_GATEWAY__DISPATCH__ARBITERS", "1")
            .env("CLINIC_GATEWAY__DISPATCH__RECLAIM_IDLE_MS", "4000")
            .env("CLINIC_GATEWAY__DISPATCH__STATUS_GRACE_MS", "3000")
            .env("CLINIC_GATEWAY__DISPATCH__RETRY_BASE_MS", "200")
            .env("CLINIC_GATEWAY__DISPATCH__RETRY_MAX_MS", "2000")
            .env("CLINIC_GATEWAY__DISPATCH__MAX_ATTEMPTS", "30")
            .env("CLINIC_GATEWAY__DISPATCH__IDLE_POLL_MS", "50")
            .env("CLINIC_GATEWAY__API__RATE_PER_SECOND", "5000")
            .env("CLINIC_GATEWAY__API__BURST", "5000")
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("starting the gateway binary: {e}"));
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub async fn wait_healthy(&self, http: &reqwest::Client) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = http
                .get(format!("{}/readyz", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway did not become ready; log:\n{}", self.log_tail());
    }

    /// SIGKILL: no drain, no acks, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to this node's process (by its pid), then waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let child = self.child.as_mut()?;
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "could not SIGTERM the gateway");
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------ a Redis of our own

/// `redis-server` with AOF (`appendfsync always`) on a fixed port and directory, so it can be
/// killed and started again with the same data.
pub struct AofRedis {
    pub port: u16,
    pub url: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl AofRedis {
    pub fn start(name: &str) -> Self {
        let port = free_port();
        let mut r = Self {
            port,
            url: format!("redis://127.0.0.1:{port}/"),
            dir: temp_dir(name),
            child: None,
        };
        r.restart();
        r
    }

    /// Starts the server (again) on the same port and data directory; returns once it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server (needed on PATH): {e}"));
        self.child = Some(child);
        let start = Instant::now();
        // Loading the AOF back can take a moment; PING answers LOADING until it is done.
        while !self.pong() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server on {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the server: whatever it acknowledged is in the AOF (fsync always).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for AofRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------ bounded HTTP

/// What one bounded request ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Status {
        status: u16,
        retry_after: Option<String>,
        content_type: String,
        body: Value,
    },
    /// No answer within the client timeout: a hang.
    TimedOut,
    /// Connection refused or reset (the process is down).
    Down(String),
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub async fn bounded(req: reqwest::RequestBuilder, timeout: Duration) -> Answer {
    match req.timeout(timeout).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let retry_after = header("retry-after");
            let content_type = header("content-type").unwrap_or_default();
            let body = resp.json().await.unwrap_or(Value::Null);
            Answer::Status {
                status,
                retry_after,
                content_type,
                body,
            }
        }
        Err(e) if e.is_timeout() => Answer::TimedOut,
        Err(e) => Answer::Down(e.to_string()),
    }
}

/// Submits until the gateway answers 202 (same `Idempotency-Key` every time, so a request that
/// was stored but whose answer was lost is never a second message). Panics after `give_up`.
pub async fn submit_until_accepted(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    key: &str,
    give_up: Duration,
) -> String {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < give_up {
        let req = http
            .post(format!("{base}/v1/messages"))
            .bearer_auth(KEY_A)
            .header("Idempotency-Key", key)
            .json(body);
        match bounded(req, Duration::from_secs(5)).await {
            Answer::Status {
                status: 202 | 200,
                body,
                ..
            } => {
                if let Some(id) = body["id"].as_str() {
                    return id.to_owned();
                }
                last = Some(format!("202 without an id: {body}"));
            }
            Answer::Status {
                status: 500..,
                body,
                ..
            } if body["status"] != 503 => panic!("a 5xx other than 503: {body}"),
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key} never accepted; last answer: {last:?}");
}

// ------------------------------------------------------------------ the final checks

/// Sends per message id, judged by the id the gateway put in `biz_opaque_callback_data`.
pub fn sends_by_id(sent: &[SentRecord]) -> HashMap<String, usize> {
    let mut by: HashMap<String, usize> = HashMap::new();
    for r in sent {
        if let Some(id) = &r.message.biz_opaque_callback_data {
            *by.entry(id.clone()).or_default() += 1;
        }
    }
    by
}

/// Every id exactly once at the sandbox, and nothing the gateway did not accept. Returns a
/// description of what is wrong, if anything.
pub fn exactly_once(sent: &[SentRecord], ids: &[String]) -> Result<(), String> {
    let by = sends_by_id(sent);
    let lost: Vec<&String> = ids.iter().filter(|id| !by.contains_key(*id)).collect();
    let twice: Vec<(&String, usize)> = ids
        .iter()
        .filter_map(|id| by.get(id).filter(|n| **n > 1).map(|n| (id, *n)))
        .collect();
    let known: std::collections::HashSet<&String> = ids.iter().collect();
    let phantom: Vec<&String> = by.keys().filter(|id| !known.contains(id)).collect();
    if lost.is_empty() && twice.is_empty() && phantom.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} lost {:?}, {} sent more than once {:?}, {} never accepted {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>(),
            twice.len(),
            twice.iter().take(5).collect::<Vec<_>>(),
            phantom.len(),
            phantom.iter().take(5).collect::<Vec<_>>()
        ))
    }
}

/// Waits until every id has reached the sandbox (or `timeout`).
pub async fn wait_all_sent(sandbox: &SandboxHandle, ids: &[String], timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        let by = sends_by_id(&sandbox.state().sent());
        if ids.iter().all(|id| by.contains_key(id)) {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GET /v1/messages/{id}` of every id (a few at a time) until each is in one of `states`.
/// Returns the ids that never got there, with their last view.
pub async fn wait_states(
    http: &reqwest::Client,
    base: &str,
    ids: &[String],
    states: &[&str],
    timeout: Duration,
) -> Vec<(String, Value)> {
    let start = Instant::now();
    let mut pending: Vec<String> = ids.to_vec();
    let mut last: HashMap<String, Value> = HashMap::new();
    while !pending.is_empty() && start.elapsed() < timeout {
        let mut still = Vec::new();
        for chunk in pending.chunks(32) {
            let views = futures::future::join_all(chunk.iter().map(|id| {
                let req = http
                    .get(format!("{base}/v1/messages/{id}"))
                    .bearer_auth(KEY_A);
                async move { (id.clone(), bounded(req, Duration::from_secs(5)).await) }
            }))
            .await;
            for (id, answer) in views {
                let view = match answer {
                    Answer::Status { body, .. } => body,
                    other => Value::String(format!("{other:?}")),
                };
                if !states.contains(&view["status"].as_str().unwrap_or_default()) {
                    still.push(id.clone());
                }
                last.insert(id, view);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    pending
        .into_iter()
        .map(|id| {
            let v = last.get(&id).cloned().unwrap_or(Value::Null);
            (id, v)
        })
        .collect()
}

/// The whole ledger of clinic A, page by page.
pub async fn ledger(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/wallet/ledger?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = match bounded(http.get(url).bearer_auth(KEY_A), Duration::from_secs(10)).await {
            Answer::Status {
                status: 200, body, ..
            } => body,
            other => panic!("ledger: {other:?}"),
        };
        out.extend(page["entries"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return out,
        }
    }
}

/// The wallet after the run: nothing left reserved, `delivered` utility templates settled once
/// each, and the ledger replays to the balance. Returns a description of what is wrong.
pub async fn wallet_balances(
    http: &reqwest::Client,
    base: &str,
    credit: i64,
    delivered: usize,
) -> Result<(), String> {
    let start = Instant::now();
    let mut w = Value::Null;
    while start.elapsed() < Duration::from_secs(30) {
        if let Answer::Status {
            status: 200, body, ..
        } = bounded(
            http.get(format!("{base}/v1/wallet")).bearer_auth(KEY_A),
            Duration::from_secs(5),
        )
        .await
        {
            w = body;
            if w["reserved"] == 0 && w["settled"].as_i64() == Some(delivered as i64 * UTILITY) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected_settled = delivered as i64 * UTILITY;
    if w["reserved"] != 0
        || w["settled"].as_i64() != Some(expected_settled)
        || w["available"].as_i64() != Some(credit - expected_settled)
    {
        return Err(format!(
            "wallet {w}; expected settled {expected_settled}, available {}",
            credit - expected_settled
        ));
    }
    let entries = ledger(http, base).await;
    let replayed = replay_ledger(&entries);
    if Some(replayed) != w["available"].as_i64() {
        return Err(format!(
            "the ledger ({} entries) replays to {replayed}, the wallet says {w}",
            entries.len()
        ));
    }
    Ok(())
}
