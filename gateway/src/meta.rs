//! Which Meta a clinic talks to: the real Cloud API for `live` clinics, or this node's in-process
//! sandbox for `sandbox` clinics (so an integrator can build against the gateway before Meta
//! approves anything). Sandbox sends cost nothing and their webhooks come back to this node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxState};
use whatsapp_cloud::wire::TemplateStatus;
use whatsapp_cloud::GraphClient;

use crate::config::TemplatesSettings;
use crate::template_library::TemplateLibrary;
use crate::tenants::model::Mode;
use crate::tenants::{ClinicSettings, Directory};

pub struct SandboxNode {
    pub client: GraphClient,
    pub state: SandboxState,
    /// Signs the sandbox's webhooks; sandbox clinics' webhooks are verified with it.
    pub secret: String,
    /// Every sandbox clinic's WABA starts with this library, APPROVED.
    pub library: Arc<TemplateLibrary>,
    /// WABAs already seeded (registration repeats on every directory refresh).
    seeded: Mutex<HashSet<String>>,
    _handle: SandboxHandle,
}

pub struct Meta {
    pub live: GraphClient,
    pub sandbox: Option<SandboxNode>,
}

impl Meta {
    /// Starts the in-process sandbox, sending its webhooks to `webhook_url` (this node), with the
    /// template library at its default place (`config/templates`).
    pub fn with_sandbox(live: GraphClient, webhook_url: String) -> std::io::Result<Self> {
        Self::with_sandbox_templates(live, webhook_url, &TemplatesSettings::default())
    }

    /// Starts the in-process sandbox with the configured template library. A library that does
    /// not load is an error naming the file and the problem.
    pub fn with_sandbox_templates(
        live: GraphClient,
        webhook_url: String,
        templates: &TemplatesSettings,
    ) -> std::io::Result<Self> {
        let library = TemplateLibrary::load(&templates.resolved_dir())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let secret = format!("sandbox-{}", hex::encode(rand::random::<[u8; 16]>()));
        let handle = Sandbox::spawn(SandboxConfig {
            webhook_url: Some(webhook_url),
            app_secret: secret.clone(),
            status_latency: Duration::from_millis(200),
            auto_register_numbers: false,
            ..SandboxConfig::default()
        })?;
        let config = whatsapp_cloud::ClientConfig {
            base_url: handle.base_url(),
            ..live.config().clone()
        };
        let client = GraphClient::new(config).map_err(std::io::Error::other)?;
        Ok(Self {
            live,
            sandbox: Some(SandboxNode {
                client,
                state: handle.state(),
                secret,
                library: Arc::new(library),
                seeded: Mutex::new(HashSet::new()),
                _handle: handle,
            }),
        })
    }

    pub fn live_only(live: GraphClient) -> Self {
        Self {
            live,
            sandbox: None,
        }
    }

    pub fn is_sandbox(&self, clinic: &ClinicSettings) -> bool {
        clinic.mode == Mode::Sandbox && self.sandbox.is_some()
    }

    /// The Graph client for this clinic's sends, uploads and template calls.
    pub fn client(&self, clinic: &ClinicSettings) -> &GraphClient {
        match (&self.sandbox, clinic.mode) {
            (Some(s), Mode::Sandbox) => &s.client,
            _ => &self.live,
        }
    }

    /// The bearer token for this clinic's Graph calls (the sandbox takes any non-empty one).
    pub fn token<'a>(&self, clinic: &'a ClinicSettings) -> &'a str {
        match clinic.access_token.expose() {
            "" if self.is_sandbox(clinic) => "sandbox-token",
            t => t,
        }
    }

    /// The secret Meta (or the sandbox) signs this clinic's webhooks with.
    pub fn webhook_secret<'a>(&'a self, clinic: &'a ClinicSettings) -> &'a str {
        match (&self.sandbox, clinic.mode) {
            (Some(s), Mode::Sandbox) => &s.secret,
            _ => clinic.app_secret.expose(),
        }
    }

    /// Registers sandbox clinics' numbers with the sandbox (idempotent).
    pub fn register(&self, directory: &Directory) {
        for c in directory.all() {
            self.register_clinic(&c);
        }
    }

    /// Registers one sandbox clinic's numbers and seeds its WABA with every library template as
    /// APPROVED, once per WABA (live clinics are ignored). Templates the WABA already has are left
    /// as they are.
    pub fn register_clinic(&self, c: &ClinicSettings) {
        let Some(s) = &self.sandbox else { return };
        if c.mode != Mode::Sandbox {
            return;
        }
        for n in &c.numbers {
            let display: String = n.display.chars().filter(char::is_ascii_digit).collect();
            let tier = if n.tier_mps == 0 {
                1_000_000
            } else {
                n.tier_mps
            };
            s.state
                .register_number(n.phone_number_id.as_str(), &c.waba_id, &display, tier);
        }
        if s.seeded.lock().insert(c.waba_id.clone()) {
            for def in s.library.templates() {
                if s.state
                    .template(&c.waba_id, &def.name, &def.language)
                    .is_none()
                {
                    s.state
                        .add_template_def(&c.waba_id, def, TemplateStatus::Approved);
                }
            }
        }
    }

    /// The sandbox plays Meta's review: a submitted template is approved shortly after.
    pub fn approve_later(&self, clinic: &ClinicSettings, name: &str, language: &str) {
        let Some(s) = &self.sandbox else { return };
        if clinic.mode != Mode::Sandbox {
            return;
        }
        let state = s.state.clone();
        let (waba, name, language) = (clinic.waba_id.clone(), name.to_owned(), language.to_owned());
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            state.set_template_status(&waba, &name, &language, TemplateStatus::Approved);
        });
    }
}

pub type SharedMeta = Arc<Meta>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClinicConfig, Settings};
    use crate::template_library::{LIBRARY_LANGUAGES, TOUCHPOINT_TEMPLATES};

    fn sandbox_clinic(settings: &Settings) -> ClinicSettings {
        // From JSON, as a config file would give it, so fields added later take their defaults.
        let config: ClinicConfig = serde_json::from_value(serde_json::json!({
            "id": "clinic_try",
            "name": "Trial Clinic",
            "api_key_sha256": "",
            "waba_id": "700000000000007",
            "app_secret": "",
            "access_token": "",
            "numbers": [{"phone_number_id": "700000000000008", "display": "+91 80 4555 0008", "tier_mps": 80}],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut c = crate::tenants::bootstrap::clinic_from_config(&config, settings);
        c.mode = Mode::Sandbox;
        c
    }

    #[test]
    fn a_sandbox_clinic_starts_with_the_whole_library_approved() {
        let settings = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        let live = GraphClient::new(whatsapp_cloud::ClientConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let meta = Meta::with_sandbox_templates(
            live,
            "http://127.0.0.1:9/webhooks/whatsapp".into(),
            &settings.templates,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let clinic = sandbox_clinic(&settings);
        let sim = meta
            .sandbox
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_else(|| panic!("sandbox"));
        meta.register_clinic(&clinic);
        let listed = sim.templates(&clinic.waba_id);
        assert_eq!(
            listed.len(),
            TOUCHPOINT_TEMPLATES.len() * LIBRARY_LANGUAGES.len()
        );
        assert!(listed.iter().all(|t| t.status == TemplateStatus::Approved));

        // Registration repeats on every directory refresh: Meta's later decisions stay.
        sim.set_template_status(
            &clinic.waba_id,
            "visit_reminder",
            "ta",
            TemplateStatus::Paused,
        );
        meta.register_clinic(&clinic);
        assert_eq!(
            sim.template(&clinic.waba_id, "visit_reminder", "ta")
                .map(|t| t.status),
            Some(TemplateStatus::Paused)
        );
    }

    #[test]
    fn a_broken_library_is_a_startup_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("en")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("en/visit_reminder.json"), "{}")
            .unwrap_or_else(|e| panic!("{e}"));
        let live = GraphClient::new(whatsapp_cloud::ClientConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Meta::with_sandbox_templates(
            live,
            "http://127.0.0.1:9/webhooks/whatsapp".into(),
            &TemplatesSettings {
                dir: dir.path().to_path_buf(),
            },
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains("en/visit_reminder.json"), "{err}");
    }
}
