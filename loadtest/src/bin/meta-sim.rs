//! `meta-sim`: the WhatsApp Cloud API sandbox as a standalone server, for demos, manual testing
//! and load tests. Runs in the foreground until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use whatsapp_cloud::sandbox::{
    Sandbox, SandboxConfig, SandboxState, TemplateCategory, TemplateStatus,
};

/// The same allocator as the gateway, so the harness takes as little of the shared cores as it can.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulates Meta's WhatsApp Cloud API (Graph routes under /{version}/…, signed webhooks, and a
/// /_sim/… control API) for many business numbers at once.
#[derive(Debug, Parser)]
#[command(name = "meta-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    bind: SocketAddr,
    /// Where signed webhooks (statuses, inbound messages, template and quality events) are
    /// POSTed; without it no statuses are scheduled at all.
    #[arg(long)]
    webhook_url: Option<String>,
    /// App secret that signs X-Hub-Signature-256 of every webhook.
    #[arg(
        long,
        env = "META_SIM_APP_SECRET",
        default_value = "sandbox-app-secret",
        hide_env_values = true
    )]
    app_secret: String,
    /// Throughput (messages per second) of numbers not registered with an explicit tier.
    #[arg(long = "tier", default_value_t = 80)]
    tier: u32,
    /// No throughput or pair-rate enforcement (raw-throughput benchmarks).
    #[arg(long)]
    unlimited: bool,
    /// Delay before `sent`; `delivered` and `read` follow after further equal delays.
    #[arg(long, default_value_t = 200)]
    status_latency_ms: u64,
    /// Do not send `read` statuses after `delivered`.
    #[arg(long)]
    no_read_receipts: bool,
    /// Probability (0..1) that a status webhook item is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    /// Shuffle the items of each webhook batch (out-of-order delivery).
    #[arg(long)]
    reorder: bool,
    /// Status items per webhook POST.
    #[arg(long, default_value_t = 50)]
    webhook_batch_max: usize,
    /// First retry delay for a webhook POST that did not get a 200 (then doubling, capped at
    /// 30 s, given up after 1 h).
    #[arg(long, default_value_t = 1000)]
    webhook_retry_ms: u64,
    /// Sent and rejected messages kept for read-back through GET /_sim/sent (oldest dropped).
    #[arg(long, default_value_t = 100_000)]
    record_limit: usize,
    /// Refuse phone-number ids that were not registered (by default they are registered on
    /// first use with the default tier and WABA id waba_<pnid>).
    #[arg(long)]
    no_auto_register: bool,
    /// actix worker threads (1 = one core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Register a business number: PNID:WABA:DISPLAY:TIER (repeatable), e.g.
    /// 106540352242922:102290129340398:918045551234:80.
    #[arg(long = "number", value_name = "PNID:WABA:DISPLAY:TIER")]
    numbers: Vec<String>,
    /// Seed a template: WABA:NAME:LANG:CATEGORY:STATUS:BODY (repeatable; BODY may contain ':'
    /// and {{1}} placeholders), e.g. 102290129340398:appointment_reminder:en:UTILITY:APPROVED:Hi {{1}}, see you at {{2}}.
    #[arg(long = "template", value_name = "WABA:NAME:LANG:CATEGORY:STATUS:BODY")]
    templates: Vec<String>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
        .with_context(|| format!("{what} {s:?} is not recognised"))
}

fn seed(state: &SandboxState, args: &Args) -> Result<()> {
    for n in &args.numbers {
        let parts: Vec<&str> = n.splitn(4, ':').collect();
        let [pnid, waba, display, tier] = parts.as_slice() else {
            bail!("--number {n:?}: expected PNID:WABA:DISPLAY:TIER");
        };
        let tier: u32 = tier
            .parse()
            .with_context(|| format!("--number {n:?}: TIER must be a number"))?;
        state.register_number(pnid, waba, display, tier);
    }
    for t in &args.templates {
        let parts: Vec<&str> = t.splitn(6, ':').collect();
        let [waba, name, lang, category, status, body] = parts.as_slice() else {
            bail!("--template {t:?}: expected WABA:NAME:LANG:CATEGORY:STATUS:BODY");
        };
        // The wire enums map unknown names to `Other` (tolerant parsing of Meta's webhooks);
        // a seed on the command line is a typo instead.
        let category: TemplateCategory = parse_enum(category, "category")?;
        if category == TemplateCategory::Other {
            bail!("--template {t:?}: CATEGORY must be MARKETING, UTILITY or AUTHENTICATION");
        }
        let status: TemplateStatus = parse_enum(status, "status")?;
        if status == TemplateStatus::Other {
            bail!("--template {t:?}: STATUS must be APPROVED, PENDING, PAUSED, DISABLED, …");
        }
        state.add_template(waba, name, lang, category, body, status);
    }
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.duplicate_rate) {
        bail!("--duplicate-rate must be between 0 and 1");
    }
    let config = SandboxConfig {
        bind: args.bind,
        webhook_url: args.webhook_url.clone(),
        app_secret: args.app_secret.clone(),
        default_tier_mps: args.tier,
        unlimited: args.unlimited,
        status_latency: Duration::from_millis(args.status_latency_ms),
        read_receipts: !args.no_read_receipts,
        duplicate_rate: args.duplicate_rate,
        reorder: args.reorder,
        webhook_batch_max: args.webhook_batch_max.max(1),
        webhook_retry_interval: Duration::from_millis(args.webhook_retry_ms.max(1)),
        record_limit: args.record_limit,
        auto_register_numbers: !args.no_auto_register,
    };
    let state = SandboxState::new(config);
    seed(&state, &args)?;
    Sandbox::serve(state, args.workers).context("meta-sim server failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["meta-sim"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn seeds_numbers_and_templates() {
        let a = args(&[
            "--number",
            "pn1:waba1:918045551234:20",
            "--template",
            "waba1:appointment_reminder:en:utility:APPROVED:Hi {{1}}, at {{2}}: see you",
        ]);
        let state = SandboxState::new(SandboxConfig::default());
        assert!(seed(&state, &a).is_ok());
        let t = state.template("waba1", "appointment_reminder", "en");
        let t = t
            .as_ref()
            .map(|t| (t.category, t.status, t.body_parameter_count()));
        assert_eq!(
            t,
            Some((TemplateCategory::Utility, TemplateStatus::Approved, 2))
        );
        assert!(!state.window_open("pn1", "+919876543210"));
    }

    #[test]
    fn malformed_seeds_are_refused() {
        let state = SandboxState::new(SandboxConfig::default());
        assert!(seed(&state, &args(&["--number", "pn1:waba1"])).is_err());
        assert!(seed(&state, &args(&["--number", "pn1:w:d:fast"])).is_err());
        assert!(seed(&state, &args(&["--template", "w:n:en:UTILITY:APPROVED"])).is_err());
        assert!(seed(&state, &args(&["--template", "w:n:en:NOPE:APPROVED:b"])).is_err());
    }

    #[test]
    fn defaults() {
        let a = args(&[]);
        assert_eq!((a.workers, a.tier, a.unlimited), (1, 80, false));
    }
}
