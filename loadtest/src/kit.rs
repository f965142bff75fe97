//! Shared pieces of the issue #9 load scenarios ([`crate::raw`], [`crate::aggregator`],
//! [`crate::spike`], [`crate::webhook_storm`], [`crate::residency`]): where and when a run
//! happened, report files (JSON + Markdown), the gateway's `/metrics`, Redis command statistics,
//! the gateway child with a chosen configuration, and small fixtures (a real PDF, base64).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use whatsapp_cloud::wire::CreateTemplateRequest;

use crate::e2e::Gateway;

/// Where and when a run happened, for the BENCHMARKS tables.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub date_utc: String,
    pub cores: usize,
    pub cpu_model: String,
    /// `/proc/loadavg` (1, 5, 15 min) when the scenario started and when it ended; it includes
    /// the run itself.
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
    /// The command line that produced the report.
    pub command: String,
}

impl RunInfo {
    pub fn start() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            date_utc: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cores,
            cpu_model,
            loadavg_start: loadavg(),
            loadavg_end: None,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    pub fn finish(&mut self) {
        self.loadavg_end = loadavg();
    }

    /// The Markdown lines every summary starts with.
    pub fn markdown(&self) -> String {
        let la = |l: Option<[f64; 3]>| {
            l.map_or("n/a".to_owned(), |[a, b, c]| {
                format!("{a:.2} {b:.2} {c:.2}")
            })
        };
        format!(
            "- date: {} (UTC)\n- machine: {} cores ({})\n- load average (1/5/15 min) at start: {}; at end: {}\n- command: `{}`\n",
            self.date_utc,
            self.cores,
            self.cpu_model,
            la(self.loadavg_start),
            la(self.loadavg_end),
            self.command
        )
    }
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Writes `<dir>/<name>.json` (the report) and `<dir>/<name>.md` (the summary), and says where.
pub fn save(dir: &Path, name: &str, report: &impl Serialize, markdown: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(format!("{name}.json"));
    let md = dir.join(format!("{name}.md"));
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("loadgen: wrote {} and {}", json.display(), md.display());
    Ok(())
}

/// One line of a target-vs-measured table.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// `Some(true)`: met; `Some(false)`: not met; `None`: informational.
    pub met: Option<bool>,
}

impl Check {
    pub fn new(
        what: impl Into<String>,
        target: impl Into<String>,
        measured: impl Into<String>,
        met: Option<bool>,
    ) -> Self {
        Self {
            what: what.into(),
            target: target.into(),
            measured: measured.into(),
            met,
        }
    }
}

/// A Markdown table of checks.
pub fn checks_table(checks: &[Check]) -> String {
    let mut s = String::from("| | target | measured | |\n|---|---|---|---|\n");
    for c in checks {
        let verdict = match c.met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {verdict} |",
            c.what, c.target, c.measured
        );
    }
    s
}

/// A plain-text rendering of the same checks (stdout).
pub fn checks_text(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let verdict = match c.met {
            Some(true) => " [met]",
            Some(false) => " [NOT MET]",
            None => "",
        };
        let _ = writeln!(
            s,
            "  {}: {} (target {}){verdict}",
            c.what, c.measured, c.target
        );
    }
    s
}

/// One scrape of the gateway's `/metrics`: series (`name{labels}`) → value.
#[derive(Debug, Clone, Default)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut m = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((series, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    m.insert(series.trim().to_owned(), v);
                }
            }
        }
        Self(m)
    }

    /// Sum of every series of `name` that carries all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (n, rest) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest),
                    None => (series.as_str(), ""),
                };
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// Sums of the series of `name` by the value of `label` (series without it are left out).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let needle = format!("{label}=\"");
        for (series, v) in &self.0 {
            let Some((n, rest)) = series.split_once('{') else {
                continue;
            };
            if n != name {
                continue;
            }
            let Some(value) = rest
                .split(needle.as_str())
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            *out.entry(value.to_owned()).or_insert(0.0) += v;
        }
        out
    }

    /// `after − before` of [`Scrape::by_label`], without the zeros.
    pub fn delta_by_label(
        before: &Scrape,
        after: &Scrape,
        name: &str,
        label: &str,
    ) -> BTreeMap<String, f64> {
        let b = before.by_label(name, label);
        after
            .by_label(name, label)
            .into_iter()
            .map(|(k, v)| {
                let d = v - b.get(&k).copied().unwrap_or(0.0);
                (k, d)
            })
            .filter(|(_, d)| *d != 0.0)
            .collect()
    }

    /// Quantile `q` of a histogram between two scrapes, from its cumulative buckets: the upper
    /// bound of the first bucket holding the quantile (Prometheus buckets are coarse, so this is
    /// an upper bound, in the histogram's unit).
    pub fn histogram_quantile(
        before: &Scrape,
        after: &Scrape,
        name: &str,
        labels: &[(&str, &str)],
        q: f64,
    ) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut les: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for series in after.0.keys() {
            let Some(rest) = series
                .strip_prefix(bucket.as_str())
                .and_then(|r| r.strip_prefix('{'))
            else {
                continue;
            };
            if !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                continue;
            }
            let Some(le) = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            };
            let a = after.0.get(series).copied().unwrap_or(0.0);
            let b = before.0.get(series).copied().unwrap_or(0.0);
            let e = les.entry(bound.to_bits()).or_insert((bound, 0.0));
            e.1 += a - b;
        }
        let mut v: Vec<(f64, f64)> = les.into_values().collect();
        v.sort_by(|x, y| x.0.total_cmp(&y.0));
        let total = v.last()?.1;
        if total <= 0.0 {
            return None;
        }
        v.into_iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(bound, _)| bound)
    }
}

pub async fn scrape(http: &reqwest::Client, base: &str) -> Option<Scrape> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(Scrape::parse(&text))
}

/// `INFO commandstats`: command → calls.
pub async fn commandstats(con: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = match redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
    {
        Ok(s) => s,
        Err(_) => return BTreeMap::new(),
    };
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((cmd, fields)) = rest.split_once(':') else {
            continue;
        };
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|c| c.parse().ok());
        if let Some(c) = calls {
            out.insert(cmd.to_owned(), c);
        }
    }
    out
}

/// Redis commands per unit of work between two [`commandstats`] readings (server-wide).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandsPer {
    pub units: u64,
    pub total: f64,
    /// The busiest commands, most calls first.
    pub top: Vec<(String, f64)>,
}

impl CommandsPer {
    pub fn between(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        units: u64,
    ) -> Self {
        if units == 0 || after.is_empty() {
            return Self::default();
        }
        let mut top: Vec<(String, f64)> = after
            .iter()
            .map(|(k, a)| {
                let b = before.get(k).copied().unwrap_or(0);
                (k.clone(), a.saturating_sub(b) as f64 / units as f64)
            })
            .filter(|(k, v)| *v > 0.0 && k != "info")
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total = top.iter().map(|(_, v)| v).sum();
        top.truncate(12);
        Self { units, total, top }
    }

    pub fn text(&self) -> String {
        if self.units == 0 {
            return "n/a".into();
        }
        let top: Vec<String> = self
            .top
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        format!("{:.1} ({})", self.total, top.join(", "))
    }
}

/// How the gateway child is started.
pub(crate) struct GatewaySpec<'a> {
    pub bin: &'a Path,
    pub toml: String,
    pub port: u16,
    pub redis_url: &'a str,
    pub prefix: &'a str,
    pub sandbox_url: &'a str,
    /// `CLINIC_GATEWAY__TEMPLATES__DIR` (the template library), when set.
    pub templates_dir: Option<&'a Path>,
    pub log_level: &'a str,
    pub env: &'a [(String, String)],
}

pub(crate) fn spawn_gateway(spec: &GatewaySpec<'_>, dir: &Path) -> Result<Gateway> {
    let config = dir.join("gateway.toml");
    std::fs::write(&config, &spec.toml).with_context(|| format!("writing {}", config.display()))?;
    let log = dir.join("gateway.log");
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(spec.bin);
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env(
            "CLINIC_GATEWAY__SERVER__BIND",
            format!("127.0.0.1:{}", spec.port),
        )
        .env("CLINIC_GATEWAY__REDIS__URL", spec.redis_url)
        .env("CLINIC_GATEWAY__REDIS__KEY_PREFIX", spec.prefix)
        .env("CLINIC_GATEWAY__META__BASE_URL", spec.sandbox_url)
        .env("RUST_LOG", spec.log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    if let Some(t) = spec.templates_dir {
        let t = std::fs::canonicalize(t).unwrap_or_else(|_| t.to_path_buf());
        cmd.env("CLINIC_GATEWAY__TEMPLATES__DIR", t);
    }
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (build it with `cargo build --release -p clinic-gateway`)",
            spec.bin.display()
        )
    })?;
    Ok(Gateway {
        child: Some(child),
        log,
    })
}

/// Waits for `/readyz` (a gateway with thousands of clinics syncs their templates first).
pub(crate) async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    gw: &mut Gateway,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = gw.exited() {
            bail!(
                "the gateway exited ({status}) before it was ready; log {}:\n{}",
                gw.log.display(),
                gw.log_tail(30)
            );
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the gateway was not ready within {} s; log {}:\n{}",
        timeout.as_secs(),
        gw.log.display(),
        gw.log_tail(30)
    )
}

/// One template of the library (`<dir>/<language>/<name>.json`, Meta's create format).
pub fn library_template(dir: &Path, language: &str, name: &str) -> Result<CreateTemplateRequest> {
    let path = dir.join(language).join(format!("{name}.json"));
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (run from the workspace root or pass --templates-dir)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Seconds from `a` to `b` (negative when `b` is earlier).
pub fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// RFC 3339 (UTC, milliseconds) of `now + ahead`.
pub fn rfc3339_in(ahead: Duration) -> String {
    let at = chrono::Utc::now() + chrono::Duration::from_std(ahead).unwrap_or_default();
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A small, valid one-page PDF of about `size` bytes: the sandbox's sample document (the same
/// bytes the gateway's tests and demo upload).
pub use whatsapp_cloud::sandbox::sample_pdf;

/// The line every scenario prints once its gateway, sandbox, Redis prefix and files are chosen.
pub fn announce(base: &str, sandbox: &str, prefix: &str, dir: &std::path::Path) {
    eprintln!(
        "loadgen: gateway on {base}, sandbox on {sandbox}, redis prefix {prefix}, files in {}",
        dir.display()
    );
}

/// Standard base64 with padding (the documents' `pdf_base64`).
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `KEY=VALUE` (extra environment for the gateway child).
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A cheap deterministic mix (splitmix64) for picking work without a random-number crate.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `12,345` for tables.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_sums_series_by_label() {
        let s = Scrape::parse(
            "# HELP x\nclinic_gateway_wallet_movements_total{kind=\"settled\"} 7\n\
             clinic_gateway_wallet_movements_total{kind=\"reserved\"} 9\n\
             clinic_gateway_sends_total{outcome=\"accepted\"} 3\nplain 2.5\n",
        );
        assert_eq!(
            s.sum(
                "clinic_gateway_wallet_movements_total",
                &[("kind", "settled")]
            ),
            7.0
        );
        assert_eq!(s.sum("clinic_gateway_wallet_movements_total", &[]), 16.0);
        assert_eq!(s.sum("plain", &[]), 2.5);
        assert_eq!(s.sum("missing", &[]), 0.0);
        let by = s.by_label("clinic_gateway_wallet_movements_total", "kind");
        assert_eq!(by.get("reserved"), Some(&9.0));
        let before = Scrape::parse("clinic_gateway_wallet_movements_total{kind=\"settled\"} 2\n");
        let d =
            Scrape::delta_by_label(&before, &s, "clinic_gateway_wallet_movements_total", "kind");
        assert_eq!(d.get("settled"), Some(&5.0));
    }

    #[test]
    fn histogram_quantile_from_bucket_deltas() {
        let before = Scrape::parse(
            "h_bucket{result=\"ok\",le=\"0.001\"} 10\nh_bucket{result=\"ok\",le=\"0.01\"} 10\nh_bucket{result=\"ok\",le=\"+Inf\"} 10\n",
        );
        let after = Scrape::parse(
            "h_bucket{result=\"ok\",le=\"0.001\"} 60\nh_bucket{result=\"ok\",le=\"0.01\"} 109\nh_bucket{result=\"ok\",le=\"+Inf\"} 110\n",
        );
        // 100 new observations: 50 ≤ 1 ms, 99 ≤ 10 ms, 1 above.
        let q = |q| Scrape::histogram_quantile(&before, &after, "h", &[("result", "ok")], q);
        assert_eq!(q(0.5), Some(0.001));
        assert_eq!(q(0.99), Some(0.01));
        assert_eq!(q(1.0), Some(f64::INFINITY));
    }

    #[test]
    fn commands_per_unit() {
        let a = BTreeMap::from([("hset".to_owned(), 10), ("get".to_owned(), 5)]);
        let b = BTreeMap::from([
            ("hset".to_owned(), 30),
            ("get".to_owned(), 15),
            ("xadd".to_owned(), 10),
        ]);
        let c = CommandsPer::between(&a, &b, 10);
        assert_eq!(c.total, 4.0);
        assert_eq!(c.top[0], ("hset".to_owned(), 2.0));
    }

    #[test]
    fn pdf_and_base64() {
        let pdf = sample_pdf("Hb 13.2", 0);
        assert!(pdf.starts_with(b"%PDF-1.4"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        assert!(sample_pdf("x", 5_000).len() >= 5_000);
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn sample_pdfs_look_like_pdfs() {
        let pdf = sample_pdf("CBC", 50_000);
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        assert!(pdf.len() >= 50_000 && pdf.len() < 50_200, "{}", pdf.len());
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("startxref"));
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert_ne!(mix64(1), mix64(2));
        assert!(loadavg().is_some_and(|l| l[0] >= 0.0));
    }
}
