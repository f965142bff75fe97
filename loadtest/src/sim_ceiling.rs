//! `sim-ceiling`: closed-loop template sends straight at a running `meta-sim`, to measure the
//! simulator's own ceiling (the yardstick for gateway runs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::stats::{Latencies, LatencySummary};

#[derive(Debug, Clone)]
pub struct SimCeilingOptions {
    /// `http://127.0.0.1:8090`
    pub target: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub phone_number_id: String,
    /// WABA of the number; `waba_<pnid>` (the simulator's auto-registration default) when unset.
    pub waba_id: Option<String>,
    pub api_version: String,
    pub token: String,
    /// Register the number and template through `/_sim/…` first.
    pub seed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimCeilingReport {
    pub scenario: &'static str,
    pub target: String,
    pub concurrency: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub ok: u64,
    /// Non-200 answers by `http <status>` (and Graph error code when there is one), and
    /// transport errors.
    pub errors: BTreeMap<String, u64>,
    pub sends_per_sec: f64,
    pub latency: LatencySummary,
}

impl std::fmt::Display for SimCeilingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sim-ceiling against {}", self.target)?;
        writeln!(
            f,
            "  {} connections, {:.1} s: {} requests, {} ok, {} errors",
            self.concurrency,
            self.duration_s,
            self.requests,
            self.ok,
            self.errors.values().sum::<u64>()
        )?;
        for (k, v) in &self.errors {
            writeln!(f, "    {k}: {v}")?;
        }
        writeln!(f, "  throughput: {:.0} sends/s", self.sends_per_sec)?;
        write!(f, "  latency: {}", self.latency)
    }
}

struct WorkerOut {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Latencies,
}

async fn seed(http: &reqwest::Client, o: &SimCeilingOptions, waba: &str) -> Result<()> {
    let base = o.target.trim_end_matches('/');
    let number = json!({
        "phone_number_id": o.phone_number_id,
        "waba_id": waba,
        "display_phone_number": "918045550000",
        "tier_mps": 1_000_000,
    });
    let template = json!({
        "waba_id": waba,
        "name": "appointment_reminder",
        "language": "en",
        "category": "UTILITY",
        "body_text": "Hi {{1}}, your visit is at {{2}}.",
        "status": "APPROVED",
    });
    for (path, body) in [("numbers", number), ("templates", template)] {
        let r = http
            .post(format!("{base}/_sim/{path}"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {base}/_sim/{path}: is meta-sim running?"))?;
        if !r.status().is_success() {
            bail!(
                "POST {base}/_sim/{path} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn error_key(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_i64());
    match code {
        Some(c) => format!("http {status} code {c}"),
        None => format!("http {status}"),
    }
}

pub async fn run(o: SimCeilingOptions) -> Result<SimCeilingReport> {
    if o.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let waba = o
        .waba_id
        .clone()
        .unwrap_or_else(|| format!("waba_{}", o.phone_number_id));
    if o.seed {
        seed(&http, &o, &waba).await?;
    }
    let url = format!(
        "{}/{}/{}/messages",
        o.target.trim_end_matches('/'),
        o.api_version,
        o.phone_number_id
    );
    let auth = format!("Bearer {}", o.token);
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::with_capacity(o.concurrency);
    for slot in 0..o.concurrency {
        // One recipient per connection slot; without `--unlimited` the simulator's pair rate
        // (45 back-to-back, then 1 per 6 s) shows up as 131056 errors.
        let body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": format!("+9198{:08}", slot),
            "type": "template",
            "biz_opaque_callback_data": format!("msg_loadgen_{slot}"),
            "template": {
                "name": "appointment_reminder",
                "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Asha"}, {"type": "text", "text": "10:30"}
                ]}]
            }
        });
        let body = bytes_of(&body)?;
        let (http, url, auth) = (http.clone(), url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut {
                ok: 0,
                errors: BTreeMap::new(),
                latency: Latencies::new(),
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = http
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let b = resp.bytes().await.unwrap_or_default();
                        out.latency.record(t0.elapsed());
                        if status == 200 {
                            out.ok += 1;
                        } else {
                            *out.errors.entry(error_key(status, &b)).or_default() += 1;
                        }
                    }
                    Err(e) => {
                        let kind = if e.is_timeout() {
                            "timeout"
                        } else {
                            "transport"
                        };
                        *out.errors.entry(kind.to_owned()).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        }));
    }
    let mut latency = Latencies::new();
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    for t in tasks {
        let w = t.await.context("a worker panicked")?;
        ok += w.ok;
        latency.merge(&w.latency);
        for (k, v) in w.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let requests = ok + errors.values().sum::<u64>();
    Ok(SimCeilingReport {
        scenario: "sim-ceiling",
        target: o.target,
        concurrency: o.concurrency,
        duration_s: elapsed,
        requests,
        ok,
        errors,
        sends_per_sec: ok as f64 / elapsed.max(1e-9),
        latency: latency.summary(),
    })
}

fn bytes_of(v: &serde_json::Value) -> Result<bytes::Bytes> {
    Ok(bytes::Bytes::from(serde_json::to_vec(v)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_error_codes_are_named() {
        let b = br#"{"error":{"code":130429,"message":"x"}}"#;
        assert_eq!(error_key(400, b), "http 400 code 130429");
        assert_eq!(error_key(502, b"oops"), "http 502");
    }
}
