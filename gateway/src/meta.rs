//! Which Meta a clinic talks to: the real Cloud API for `live` clinics, or this node's in-process
//! sandbox for `sandbox` clinics (so an integrator can build against the gateway before Meta
//! approves anything). Sandbox sends cost nothing and their webhooks come back to this node.

use std::sync::Arc;
use std::time::Duration;

use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxState};
use whatsapp_cloud::wire::TemplateStatus;
use whatsapp_cloud::GraphClient;

use crate::tenants::model::Mode;
use crate::tenants::{ClinicSettings, Directory};

pub struct SandboxNode {
    pub client: GraphClient,
    pub state: SandboxState,
    /// Signs the sandbox's webhooks; sandbox clinics' webhooks are verified with it.
    pub secret: String,
    _handle: SandboxHandle,
}

pub struct Meta {
    pub live: GraphClient,
    pub sandbox: Option<SandboxNode>,
}

impl Meta {
    /// Starts the in-process sandbox, sending its webhooks to `webhook_url` (this node).
    pub fn with_sandbox(live: GraphClient, webhook_url: String) -> std::io::Result<Self> {
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

    /// Registers one sandbox clinic's numbers (live clinics are ignored).
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
