//! Settings: defaults embedded from `config/default.toml`, then `--config FILE`, then
//! `CLINIC_GATEWAY__SECTION__KEY` environment variables. Validated once at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::{PhoneNumberId, TenantId};
use crate::pricing::RateCard;

pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub redis: RedisSettings,
    pub meta: MetaSettings,
    pub dispatch: DispatchSettings,
    pub idempotency: IdempotencySettings,
    pub admin: AdminSettings,
    pub api: ApiSettings,
    pub actors: ActorsSettings,
    pub sandbox: SandboxSettings,
    pub wallet: WalletSettings,
    pub pricing: RateCard,
    #[serde(default)]
    pub templates: TemplatesSettings,
    #[serde(default)]
    pub documents: DocumentSettings,
    /// HL7 v2 over MLLP: the EMR listener (off unless enabled).
    #[serde(default)]
    pub mllp: MllpSettings,
    /// Several nodes on one Redis (off: this node dispatches every number).
    #[serde(default)]
    pub cluster: ClusterSettings,
    #[serde(default)]
    pub clinics: Vec<ClinicConfig>,
}

/// Running several gateway nodes against one Redis (or Redis Cluster).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterSettings {
    /// Nodes share the numbers through leases: each number is dispatched by its owner only.
    pub enabled: bool,
    /// How long a number's lease lasts without renewal: a dead node's numbers move to the
    /// others after about this long (plus one renewal tick, a fifth of it).
    pub lease_ms: u64,
    /// This node's id (letters, digits, `-`, `_`, `.`); empty: `node-<ULID>`, new per start.
    pub node_id: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_ms: 5_000,
            node_id: String::new(),
        }
    }
}

impl ClusterSettings {
    /// The configured node id, or a fresh one.
    pub fn node_id(&self) -> String {
        if self.node_id.is_empty() {
            format!("node-{}", ulid::Ulid::new())
        } else {
            self.node_id.clone()
        }
    }
}

/// Prescriptions, lab reports and other PDFs sent to patients.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DocumentSettings {
    /// Largest PDF accepted (Meta's own limit for documents is 100 MB; phones on mobile data
    /// struggle long before that).
    pub max_pdf_bytes: usize,
}

impl Default for DocumentSettings {
    fn default() -> Self {
        Self {
            max_pdf_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The MLLP listener EMRs send HL7 v2 to (its own TCP port, optionally TLS).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct MllpSettings {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Connections open at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// A connection with no frame in progress is closed after this long.
    pub idle_timeout_secs: u64,
    /// A frame must arrive whole within this long of its first byte (slow-loris guard); also
    /// bounds writing the ACK.
    pub read_timeout_secs: u64,
    /// Largest MLLP frame (PDF-bearing ORUs reach several MB).
    pub frame_limit_bytes: usize,
    /// PEM certificate chain and key: both set = TLS on the MLLP port.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long (sender, MSH-10) pairs are remembered to acknowledge re-sent messages without
    /// acting twice.
    pub dedupe_ttl_secs: u64,
    /// Threads serving MLLP connections (0 = one per core).
    pub workers: usize,
}

impl Default for MllpSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 2575)),
            max_connections: 256,
            idle_timeout_secs: 600,
            read_timeout_secs: 60,
            frame_limit_bytes: 16 * 1024 * 1024,
            tls_cert: None,
            tls_key: None,
            dedupe_ttl_secs: 7 * 86_400,
            workers: 0,
        }
    }
}

/// Where the template library (`<dir>/<language>/<name>.json`) lives. It seeds sandbox clinics'
/// WABAs and is what `clinic-gateway templates submit` sends to Meta.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TemplatesSettings {
    /// Relative paths are taken from the current directory, then from the source tree.
    pub dir: PathBuf,
}

impl Default for TemplatesSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("config/templates"),
        }
    }
}

impl TemplatesSettings {
    /// The directory to read, resolved as [`crate::template_library::resolve_dir`] does.
    pub fn resolved_dir(&self) -> PathBuf {
        crate::template_library::resolve_dir(&self.dir)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminSettings {
    /// SHA-256 (hex) of each admin key.
    pub api_key_sha256: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ApiSettings {
    pub rate_per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SandboxSettings {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ActorsSettings {
    pub arbiters: usize,
    pub mailbox: usize,
    pub idle_secs: u64,
    pub conversation_idle_secs: u64,
    pub max_conversations: usize,
    pub catalog_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WalletSettings {
    pub default_low_balance_threshold: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub max_message_bytes: usize,
    pub shutdown_grace_secs: u64,
    /// A client must send its request head within this long (slow-loris protection).
    #[serde(default = "default_client_request_timeout_ms")]
    pub client_request_timeout_ms: u64,
    /// Idle keep-alive connections close after this long.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Concurrent connections per worker; more wait in the accept backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections_per_worker: usize,
}

fn default_client_request_timeout_ms() -> u64 {
    5_000
}

fn default_keep_alive_secs() -> u64 {
    30
}

fn default_max_connections() -> usize {
    10_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Redis,
    Memory,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StoreSettings {
    pub kind: StoreKind,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MetaSettings {
    pub base_url: String,
    pub api_version: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub webhook_verify_token: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DispatchSettings {
    pub arbiters: usize,
    pub max_in_flight: usize,
    pub batch: usize,
    pub tier_headroom: f64,
    pub low_lane_every: u32,
    pub status_grace_ms: u64,
    pub reclaim_idle_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How long the whole number stops after Meta's 130429 (throughput exceeded). Meta refuses
    /// only until the rolling second is back under the tier, and the pacer runs below it, so
    /// a short stop clears it; a long one wastes the tier.
    #[serde(default = "default_throughput_pause_ms")]
    pub throughput_pause_ms: u64,
    pub max_attempts: u32,
    pub pair_period_ms: u64,
    pub pair_burst: u32,
    pub idle_poll_ms: u64,
    pub idle_poll_max_ms: u64,
    pub passivate_after_ms: u64,
    pub max_queue: u64,
    pub default_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IdempotencySettings {
    pub ttl_secs: u64,
}

/// A clinic defined in the config file (static bootstrap for small deployments).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClinicConfig {
    pub id: TenantId,
    #[serde(default)]
    pub name: String,
    /// SHA-256 (hex) of the clinic's API key: the key itself is never stored.
    pub api_key_sha256: String,
    #[serde(default = "default_country_code")]
    pub default_country_code: String,
    #[serde(default)]
    pub waba_id: String,
    /// Business portfolio (defaults to the WABA id): clinics of one portfolio share a messaging limit.
    #[serde(default)]
    pub portfolio_id: String,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Wallet credit (micro-units) applied once when the clinic is first bootstrapped.
    #[serde(default)]
    pub wallet_credit: i64,
    /// Unique patients reached outside their window per moving 24 h; absent = unlimited.
    #[serde(default)]
    pub messaging_limit: Option<u32>,
    /// Meta app secret: verifies this clinic's webhooks. Never logged or returned.
    pub app_secret: String,
    /// Meta access token for this clinic's WABA. Never logged or returned.
    pub access_token: String,
    pub numbers: Vec<NumberConfig>,
    /// HL7 v2 / FHIR links of the clinic's EMR.
    #[serde(default)]
    pub emr: crate::emr::EmrSettings,
}

fn default_country_code() -> String {
    "91".into()
}

fn default_time_zone() -> String {
    "Asia/Kolkata".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NumberConfig {
    pub phone_number_id: PhoneNumberId,
    #[serde(default)]
    pub display: String,
    /// Meta throughput tier in messages/s (20, 80 or 1000); 0 = unlimited (sandbox benchmarks).
    pub tier_mps: u32,
}

impl Settings {
    /// Embedded defaults → optional file → environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(
            Env::prefixed("CLINIC_GATEWAY__")
                .split("__")
                .lowercase(true),
        );
        let settings: Settings = fig.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Defaults only (tests build on this).
    pub fn defaults() -> Result<Self, ConfigError> {
        let settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .map_err(Box::new)?;
        Ok(settings)
    }

    /// Refuses values that cannot work or that would break a promise (duplicates, Meta errors).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let d = &self.dispatch;
        if !(0.1..=1.0).contains(&d.tier_headroom) {
            return bad(format!(
                "dispatch.tier_headroom must be within 0.1..=1.0, got {}",
                d.tier_headroom
            ));
        }
        if d.max_in_flight == 0 || d.batch == 0 {
            return bad("dispatch.max_in_flight and dispatch.batch must be at least 1".into());
        }
        if d.reclaim_idle_ms <= self.meta.request_timeout_ms {
            return bad(format!(
                "dispatch.reclaim_idle_ms ({}) must exceed meta.request_timeout_ms ({}): otherwise a send still in flight is taken over and sent twice",
                d.reclaim_idle_ms, self.meta.request_timeout_ms
            ));
        }
        if d.status_grace_ms < 1_000 {
            return bad("dispatch.status_grace_ms must be at least 1000: Meta's status webhooks need time to arrive".into());
        }
        if d.retry_base_ms == 0 || d.retry_max_ms < d.retry_base_ms {
            return bad("dispatch.retry_base_ms must be > 0 and <= dispatch.retry_max_ms".into());
        }
        if d.max_attempts == 0 {
            return bad("dispatch.max_attempts must be at least 1".into());
        }
        if d.pair_burst == 0 || d.pair_period_ms == 0 {
            return bad("dispatch.pair_burst and dispatch.pair_period_ms must be positive".into());
        }
        if self.server.max_message_bytes > self.server.max_body_bytes {
            return bad("server.max_message_bytes must not exceed server.max_body_bytes".into());
        }
        if url::Url::parse(&self.meta.base_url).is_err() {
            return bad(format!(
                "meta.base_url is not a URL: {}",
                self.meta.base_url
            ));
        }
        if self.store.kind == StoreKind::Redis && !self.redis.url.starts_with("redis") {
            return bad(format!(
                "redis.url must start with redis:// or rediss://, got {}",
                self.redis.url
            ));
        }
        if self.cluster.lease_ms < 500 {
            return bad(format!(
                "cluster.lease_ms must be at least 500, got {}",
                self.cluster.lease_ms
            ));
        }
        if !self
            .cluster
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad(format!(
                "cluster.node_id may hold letters, digits, '-', '_' and '.' only, got {:?}",
                self.cluster.node_id
            ));
        }
        if self.cluster.enabled && self.store.kind != StoreKind::Redis {
            return bad("cluster.enabled needs store.kind = \"redis\"".into());
        }
        if let Err(e) = self.pricing.validate() {
            return bad(format!("pricing: {e}"));
        }
        if self.actors.mailbox == 0 || self.actors.idle_secs == 0 {
            return bad("actors.mailbox and actors.idle_secs must be at least 1".into());
        }
        if self.templates.dir.as_os_str().is_empty() {
            return bad("templates.dir must name the template library directory".into());
        }
        if self.api.rate_per_second == 0 || self.api.burst == 0 {
            return bad("api.rate_per_second and api.burst must be at least 1".into());
        }
        for k in &self.admin.api_key_sha256 {
            if k.len() != 64 || hex::decode(k).is_err() {
                return bad(
                    "admin.api_key_sha256 entries must be 64 hex digits (the SHA-256 of a key)"
                        .into(),
                );
            }
        }
        if let Err(e) = crate::emr::hl7::validate_settings(self) {
            return bad(e);
        }
        let mut seen_numbers = std::collections::HashSet::new();
        let mut seen_ids = std::collections::HashSet::new();
        for c in &self.clinics {
            if !seen_ids.insert(c.id.clone()) {
                return bad(format!("clinic {} is defined twice", c.id));
            }
            if c.api_key_sha256.len() != 64 || hex::decode(&c.api_key_sha256).is_err() {
                return bad(format!(
                    "clinic {}: api_key_sha256 must be 64 hex digits (the SHA-256 of the key)",
                    c.id
                ));
            }
            if c.app_secret.is_empty() || c.access_token.is_empty() {
                return bad(format!(
                    "clinic {}: app_secret and access_token are required",
                    c.id
                ));
            }
            if c.numbers.is_empty() {
                return bad(format!(
                    "clinic {}: at least one business number is required",
                    c.id
                ));
            }
            for n in &c.numbers {
                if !seen_numbers.insert(n.phone_number_id.clone()) {
                    return bad(format!(
                        "phone number {} belongs to more than one clinic",
                        n.phone_number_id
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.meta.request_timeout_ms)
    }
}

fn default_throughput_pause_ms() -> u64 {
    250
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        let s = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        s.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.store.kind, StoreKind::Redis);
    }

    #[test]
    fn dangerous_combinations_are_refused_with_a_reason() {
        let mut s = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        s.dispatch.reclaim_idle_ms = s.meta.request_timeout_ms;
        let err = s.validate().map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("reclaim_idle_ms"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own error type
    fn env_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                "[redis]\nkey_prefix = \"from_file\"\npool_size = 7\n",
            )?;
            jail.set_env("CLINIC_GATEWAY__REDIS__KEY_PREFIX", "from_env");
            let s = Settings::load(Some(Path::new("gw.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.redis.key_prefix, "from_env");
            assert_eq!(s.redis.pool_size, 7);
            Ok(())
        });
    }
}
