//! `clinic-gateway demo`: the whole path on one machine. A memory store, the Meta sandbox
//! in-process (seeded with the whole template library, approved), one seeded clinic; plays a
//! clinic day through the REST API and prints it as a timeline of what the clinic did and what
//! reached the patients' WhatsApp.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde_json::{json, Value};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle, SandboxState, SentRecord};
use whatsapp_cloud::wire::{
    ButtonParameter, Component, Content, InteractiveKind, Parameter, TemplateStatus,
};

use crate::app::{AppError, Application};
use crate::config::{ClinicConfig, NumberConfig, Settings, StoreKind};
use crate::domain::{PhoneNumberId, TenantId};
use crate::store::MemoryStore;
use crate::template_library::TemplateLibrary;
use crate::tenants::hash_api_key;
use crate::workflows::render::date_time;

pub const DEMO_API_KEY: &str = "demo-api-key-not-for-production";
pub const DEMO_ADMIN_KEY: &str = "demo-admin-key-not-for-production";
pub const DEMO_NUMBER: &str = "106540352242922";
pub const DEMO_WABA: &str = "102290129340398";
pub const DEMO_CLINIC: &str = "clinic_demo";
/// Asha, the first patient of the day (the "Try next" hints write to her).
pub const DEMO_PATIENT: &str = "+919876543210";
const DEMO_APP_SECRET: &str = "demo-app-secret";
const TIME_ZONE: &str = "Asia/Kolkata";

/// The day's patients: (name, phone).
const ASHA: (&str, &str) = ("Asha", DEMO_PATIENT);
const RAVI: (&str, &str) = ("Ravi", "+919812345670");
const MEENA: (&str, &str) = ("Meena", "+919845012345");
const DOCTOR: &str = "Dr. Rao";

/// How long to wait for one thing to reach the sandbox (the slowest is a reminder, due 4 s
/// after its booking).
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error("demo request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway answered a request of the story with an unexpected status.
    #[error("{request}: HTTP {status}: {body}")]
    Api {
        request: String,
        status: u16,
        body: String,
    },
    /// Something the story waits for did not happen in time.
    #[error("the demo waited {waited:?} for {what}, which did not happen")]
    Timeout { what: String, waited: Duration },
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
        id: id(DEMO_CLINIC)?,
        name: "Sunrise Family Clinic".into(),
        api_key_sha256: hash_api_key(DEMO_API_KEY),
        default_country_code: "91".into(),
        waba_id: DEMO_WABA.into(),
        app_secret: DEMO_APP_SECRET.into(),
        access_token: "demo-access-token".into(),
        portfolio_id: String::new(),
        time_zone: TIME_ZONE.into(),
        // 500.00 of wallet credit, so the demo clinic can pay for its templates.
        wallet_credit: 500_000_000,
        messaging_limit: Some(250),
        emr: Default::default(),
        numbers: vec![NumberConfig {
            phone_number_id: number,
            display: "+91 80 4555 1234".into(),
            tier_mps: 80,
        }],
    }];
    s.validate().map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(s)
}

/// A running demo: the gateway (memory store) and the sandbox it talks to.
pub struct Demo {
    /// The gateway's base URL.
    pub base: String,
    pub sim: SandboxState,
    sandbox: SandboxHandle,
    server: tokio::task::JoinHandle<Result<(), AppError>>,
}

impl Demo {
    pub fn sandbox_url(&self) -> String {
        self.sandbox.base_url()
    }

    /// Serves until the gateway stops (Ctrl-C), then stops the sandbox.
    pub async fn serve(self) -> Result<(), DemoError> {
        let result = self.server.await;
        self.sandbox.stop();
        match result {
            Ok(r) => Ok(r?),
            Err(e) => Err(DemoError::Setup(format!("server task: {e}"))),
        }
    }
}

/// Starts the sandbox (every library template approved on the demo WABA) and the gateway on
/// `port` (any free port when taken, or 0).
pub async fn start(port: u16) -> Result<Demo, DemoError> {
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

    let settings = demo_settings(&sandbox.base_url(), &listener)?;
    // The clinic's WABA knows the whole library (every touchpoint, every language), as if
    // `clinic-gateway templates submit` had run and Meta had approved it all.
    let library = TemplateLibrary::load(&settings.templates.resolved_dir())
        .map_err(|e| DemoError::Setup(format!("template library: {e}")))?;
    for def in library.templates() {
        sim.add_template_def(DEMO_WABA, def, TemplateStatus::Approved);
    }

    let app = Application::build_with(settings, listener, Arc::new(MemoryStore::new())).await?;
    let server = actix::spawn(app.run_until_stopped());
    Ok(Demo {
        base,
        sim,
        sandbox,
        server,
    })
}

pub async fn run(port: u16) -> Result<(), DemoError> {
    let demo = start(port).await?;
    let base = demo.base.clone();
    let sandbox_url = demo.sandbox_url();
    println!("\nClinic Gateway demo");
    println!("  gateway  {base}");
    println!("  sandbox  {sandbox_url}  (Meta's Cloud API, simulated)");
    println!("  clinic   {DEMO_CLINIC}, API key {DEMO_API_KEY}");
    println!("  admin    key {DEMO_ADMIN_KEY}\n");
    println!(
        "A clinic day, compressed: what the clinic does through the REST API, and what reaches"
    );
    println!("the patients' WhatsApp (the sandbox's record of each send: template, parameters, buttons).\n");

    clinic_day(&demo, true).await?;

    println!("\nSandbox received {} message(s).", demo.sim.sent().len());
    println!("\nTry next (Ctrl-C to stop):");
    println!(
        "  curl -s -X POST {base}/v1/messages -H 'Authorization: Bearer {DEMO_API_KEY}' -H 'Content-Type: application/json' \\\n    -d '{{\"to\":\"{DEMO_PATIENT}\",\"type\":\"text\",\"text\":{{\"body\":\"Your report is ready\"}}}}'"
    );
    println!("  curl -s {base}/v1/messages/<id> -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  curl -s '{base}/v1/appointments?outcome=cancelled' -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  curl -s {base}/v1/wallet -H 'Authorization: Bearer {DEMO_API_KEY}'");
    println!("  curl -s {base}/admin/v1/clinics -H 'Authorization: Bearer {DEMO_ADMIN_KEY}'");
    println!("  curl -s {sandbox_url}/_sim/sent");
    println!("  curl -s {base}/metrics | grep clinic_gateway_sends_total");

    demo.serve().await
}

/// The story as printed: one line per step, each with the time since the story began.
#[derive(Debug, Clone)]
pub struct Timeline {
    start: SystemTime,
    echo: bool,
    lines: Vec<String>,
}

impl Timeline {
    fn new(echo: bool) -> Self {
        Self {
            start: SystemTime::now(),
            echo,
            lines: Vec::new(),
        }
    }

    /// Every line, in the order printed (`+04.1s  WhatsApp → Asha: visit_reminder …`).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    fn at(&mut self, at: SystemTime, what: impl AsRef<str>) {
        let secs = at
            .duration_since(self.start)
            .unwrap_or_default()
            .as_secs_f64();
        let line = format!("+{secs:04.1}s  {}", what.as_ref());
        if self.echo {
            println!("{line}");
        }
        self.lines.push(line);
    }

    fn now(&mut self, what: impl AsRef<str>) {
        self.at(SystemTime::now(), what);
    }
}

/// Plays the clinic day against a started demo and returns its timeline (printed as it goes
/// when `echo`):
/// 1. Asha books; her confirmation; her 24 h reminder (due 4 s later); she taps Cancel; the
///    cancellation is confirmed and the slot freed.
/// 2. Ravi books; confirmation; reminder; he taps Confirm.
/// 3. Meena's lab report (a PDF) reaches her as a document.
/// 4. Meena's visit is recorded: the feedback request comes at once, the follow-up 3 s later;
///    she rates the visit 5.
/// 5. The clinic reads the appointment stats and the feedback.
pub async fn clinic_day(demo: &Demo, echo: bool) -> Result<Timeline, DemoError> {
    let mut day = Day {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: demo.base.clone(),
        sim: demo.sim.clone(),
        t: Timeline::new(echo),
        shown: 0,
        used: HashSet::new(),
        names: [ASHA, RAVI, MEENA]
            .iter()
            .map(|(name, phone)| (digits(phone).to_owned(), (*name).to_owned()))
            .collect(),
    };
    day.configure().await?;
    day.cancelled_booking().await?;
    day.confirmed_booking().await?;
    day.lab_report().await?;
    day.visit().await?;
    day.reports().await?;
    // Whatever else arrived (a late status-driven message) is shown too.
    day.show_new();
    Ok(day.t)
}

fn digits(phone: &str) -> &str {
    phone.trim_start_matches('+')
}

struct Day {
    http: reqwest::Client,
    base: String,
    sim: SandboxState,
    t: Timeline,
    /// Sandbox records already shown.
    shown: usize,
    /// Records a step already waited for (by wamid), so the next wait finds a new one.
    used: HashSet<String>,
    /// Patients by phone digits.
    names: HashMap<String, String>,
}

impl Day {
    /// A request to the gateway; anything but 2xx ends the story with the gateway's answer.
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Result<Value, DemoError> {
        let request = format!("{method} {path}");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if !(200..300).contains(&status) {
            return Err(DemoError::Api {
                request,
                status,
                body: text,
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn clinic_call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DemoError> {
        self.call(method, path, DEMO_API_KEY, body).await
    }

    fn name(&self, phone_digits: &str) -> String {
        self.names.get(phone_digits).cloned().unwrap_or_else(|| {
            let tail: String = phone_digits
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("+******{tail}")
        })
    }

    /// Shows every sandbox record not shown yet, at the time the sandbox recorded it.
    fn show_new(&mut self) {
        let records = self.sim.sent();
        for r in records.iter().skip(self.shown) {
            let line = format!("WhatsApp → {}: {}", self.name(&r.to), self.render(r));
            self.t.at(r.at, line);
        }
        self.shown = self.shown.max(records.len());
    }

    /// Waits for a send to `phone` that `pred` accepts (showing everything that arrives
    /// meanwhile) and returns it.
    async fn expect(
        &mut self,
        phone: &str,
        what: &str,
        pred: impl Fn(&SentRecord) -> bool,
    ) -> Result<SentRecord, DemoError> {
        let started = Instant::now();
        loop {
            self.show_new();
            let found = self
                .sim
                .sent()
                .into_iter()
                .find(|r| r.to == digits(phone) && !self.used.contains(&r.wamid) && pred(r));
            if let Some(r) = found {
                // It may have arrived after the `show_new` above: show it before the story
                // goes on, or the next step's line would come first.
                self.show_new();
                self.used.insert(r.wamid.clone());
                return Ok(r);
            }
            if started.elapsed() > WAIT {
                return Err(DemoError::Timeout {
                    what: format!("{what} to {}", self.name(digits(phone))),
                    waited: WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn expect_template(&mut self, phone: &str, name: &str) -> Result<SentRecord, DemoError> {
        self.expect(phone, name, |r| template_name(r) == Some(name))
            .await
    }

    async fn expect_text(&mut self, phone: &str, needle: &str) -> Result<SentRecord, DemoError> {
        self.expect(
            phone,
            &format!("a text with {needle:?}"),
            |r| matches!(&r.message.content, Content::Text { text } if text.body.contains(needle)),
        )
        .await
    }

    /// The patient taps the button whose payload starts with `prefix` on `message`.
    fn tap(
        &mut self,
        patient: (&str, &str),
        message: &SentRecord,
        prefix: &str,
    ) -> Result<(), DemoError> {
        let Some((label, payload)) = buttons(&self.sim, message)
            .into_iter()
            .find(|(_, p)| p.starts_with(prefix))
        else {
            return Err(DemoError::Setup(format!(
                "{} has no {prefix}… button",
                template_name(message).unwrap_or("the message")
            )));
        };
        self.t.now(format!("{} taps {label}", patient.0));
        self.sim.inject_button_tap(
            DEMO_NUMBER,
            digits(patient.1),
            &message.wamid,
            &label,
            &payload,
        );
        Ok(())
    }

    /// Settings for the day (aggregator's admin API): the clinic on the map, feedback requests
    /// right after a visit, the follow-up a day after a consultation.
    async fn configure(&mut self) -> Result<(), DemoError> {
        self.call(
            reqwest::Method::PATCH,
            &format!("/admin/v1/clinics/{DEMO_CLINIC}"),
            DEMO_ADMIN_KEY,
            Some(json!({
                "feedback_delay_minutes": 0,
                "follow_up": {"default_days": 7, "by_visit_type": {"consultation": 1}},
                "locations": [{"name": "Sunrise Family Clinic", "address": "12 MG Road, Bengaluru",
                               "latitude": 12.9756, "longitude": 77.6050}]
            })),
        )
        .await?;
        self.t.now(format!(
            "admin  → PATCH /admin/v1/clinics/{DEMO_CLINIC} (map location; feedback request right after a visit; follow-up 1 day after a consultation)"
        ));
        Ok(())
    }

    /// Books `patient` for tomorrow, 24 h and 4 s from now, so the 24 h reminder falls due in
    /// 4 s; waits for the confirmation and the reminder. Returns the appointment id and the
    /// reminder.
    async fn book(
        &mut self,
        patient: (&str, &str),
        external_id: &str,
    ) -> Result<(String, SentRecord), DemoError> {
        let start = chrono::Utc::now() + chrono::Duration::hours(24) + chrono::Duration::seconds(4);
        let (_, time) = date_time(start.timestamp_millis(), TIME_ZONE);
        let booked = self
            .clinic_call(
                reqwest::Method::POST,
                "/v1/appointments",
                Some(json!({"external_id": external_id,
                            "patient": {"phone": patient.1, "name": patient.0, "language": "en"},
                            "doctor": DOCTOR, "location": 0, "start": start.to_rfc3339()})),
            )
            .await?;
        let id = booked
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.t.now(format!(
            "clinic → POST /v1/appointments ({}, {DOCTOR}, tomorrow {time}) → {id}; its 24 h reminder is due in 4 s",
            patient.0
        ));
        self.expect_template(patient.1, "appointment_confirmation")
            .await?;
        let reminder = self.expect_template(patient.1, "visit_reminder").await?;
        Ok((id, reminder))
    }

    /// Asha books, is reminded, taps Cancel; the slot is freed.
    async fn cancelled_booking(&mut self) -> Result<(), DemoError> {
        let (id, reminder) = self.book(ASHA, "EMR-1001").await?;
        self.tap(ASHA, &reminder, "CANCEL:")?;
        self.expect_text(ASHA.1, "cancelled").await?;
        let path = format!("/v1/appointments/{id}");
        let started = Instant::now();
        let appointment = loop {
            let a = self.clinic_call(reqwest::Method::GET, &path, None).await?;
            if a.get("status").and_then(Value::as_str) == Some("cancelled") {
                break a;
            }
            if started.elapsed() > WAIT {
                return Err(DemoError::Timeout {
                    what: format!("appointment {id} to be cancelled"),
                    waited: WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let by = match appointment.get("response").and_then(Value::as_str) {
            Some("cancelled") => " by the patient",
            _ => "",
        };
        self.t.now(format!(
            "clinic → GET {path} → cancelled{by}; the slot is free, its reminders are gone"
        ));
        Ok(())
    }

    /// Ravi books, is reminded, taps Confirm.
    async fn confirmed_booking(&mut self) -> Result<(), DemoError> {
        let (_, reminder) = self.book(RAVI, "EMR-1002").await?;
        self.tap(RAVI, &reminder, "CONFIRM:")?;
        self.expect_text(RAVI.1, "See you").await?;
        Ok(())
    }

    /// Meena's blood test result is final: the PDF reaches her as a document.
    async fn lab_report(&mut self) -> Result<(), DemoError> {
        let pdf = crate::pdf::sample(
            "Complete blood count: Hb 13.2 g/dL, WBC 6.8 x10^9/L",
            40_000,
        );
        let size_kb = pdf.len() / 1024;
        let doc = self
            .clinic_call(
                reqwest::Method::POST,
                "/v1/lab-reports",
                Some(json!({"external_id": "LAB-2001",
                            "patient": {"phone": MEENA.1, "name": MEENA.0, "language": "en"},
                            "title": "Complete blood count", "doctor": DOCTOR,
                            "filename": "cbc-meena.pdf",
                            "pdf_base64": base64::engine::general_purpose::STANDARD.encode(&pdf)})),
            )
            .await?;
        self.t.now(format!(
            "clinic → POST /v1/lab-reports (Meena, Complete blood count, {size_kb} KiB PDF) → {}, uploaded to Meta as media {}",
            doc.get("id").and_then(Value::as_str).unwrap_or("-"),
            doc.get("media_id").and_then(Value::as_str).unwrap_or("-"),
        ));
        self.expect(MEENA.1, "the lab report", |r| document_of(r).is_some())
            .await?;
        Ok(())
    }

    /// Meena's consultation yesterday is recorded: feedback request now, follow-up in 3 s; she
    /// rates the visit 5.
    async fn visit(&mut self) -> Result<(), DemoError> {
        // Completed a day ago less 3 s: a consultation's follow-up (1 day, set above) falls due
        // in 3 s; the feedback request (0 minutes after the visit) is due at once.
        let completed =
            chrono::Utc::now() - chrono::Duration::days(1) + chrono::Duration::seconds(3);
        let visit = self
            .clinic_call(
                reqwest::Method::POST,
                "/v1/visits",
                Some(json!({"external_id": "ENC-3001",
                            "patient": {"phone": MEENA.1, "name": MEENA.0, "language": "en"},
                            "visit_type": "consultation", "doctor": DOCTOR,
                            "completed_at": completed.to_rfc3339()})),
            )
            .await?;
        self.t.now(format!(
            "clinic → POST /v1/visits (Meena, consultation with {DOCTOR}, completed 24 h ago) → {}; feedback request now, follow-up in 3 s",
            visit.get("id").and_then(Value::as_str).unwrap_or("-")
        ));
        let feedback = self
            .expect(MEENA.1, "the feedback request", |r| {
                buttons_or_rows(r).iter().any(|p| p.starts_with("RATE:"))
            })
            .await?;
        self.expect(MEENA.1, "the follow-up", |r| {
            template_name(r) == Some("visit_follow_up")
                || matches!(&r.message.content, Content::Text { .. })
        })
        .await?;
        self.tap(MEENA, &feedback, "RATE:")?;
        self.expect_text(MEENA.1, "rating").await?;
        Ok(())
    }

    /// The clinic's view of the day: appointment stats and feedback.
    async fn reports(&mut self) -> Result<(), DemoError> {
        let from = chrono::Utc::now() - chrono::Duration::hours(1);
        let to = chrono::Utc::now() + chrono::Duration::days(2);
        let path = format!(
            "/v1/stats/appointments?from={}&to={}",
            urlencode(&from.to_rfc3339()),
            urlencode(&to.to_rfc3339())
        );
        let v = self.clinic_call(reqwest::Method::GET, &path, None).await?;
        let s = v.get("stats").cloned().unwrap_or(Value::Null);
        let pct = |k: &str| {
            s.get(k)
                .and_then(Value::as_f64)
                .map_or("-".to_owned(), |r| format!("{:.0} %", r * 100.0))
        };
        let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.t.now(format!(
            "clinic → GET /v1/stats/appointments (next 2 days) → {} appointments, {} cancelled, reminder coverage {}, confirmation rate {}",
            n("appointments"),
            n("cancelled"),
            pct("reminder_coverage"),
            pct("confirmation_rate"),
        ));
        let v = self
            .clinic_call(reqwest::Method::GET, "/v1/feedback", None)
            .await?;
        let ratings: Vec<String> = v
            .get("feedback")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|f| {
                let who = f
                    .get("patient")
                    .and_then(Value::as_str)
                    .map_or_else(|| "?".to_owned(), |p| self.name(digits(p)));
                format!(
                    "{who} {}/5",
                    f.get("rating").and_then(Value::as_u64).unwrap_or(0)
                )
            })
            .collect();
        let average = v
            .get("average_rating")
            .and_then(Value::as_f64)
            .map_or("-".to_owned(), |a| format!("{a:.1}"));
        self.t.now(format!(
            "clinic → GET /v1/feedback → {} rating(s), average {average} ({})",
            v.get("count").and_then(Value::as_u64).unwrap_or(0),
            ratings.join(", ")
        ));
        Ok(())
    }

    /// What the patient got, in one line: a template's name, parameters, header and buttons;
    /// a text; a document; an interactive message's body and choices.
    fn render(&self, r: &SentRecord) -> String {
        match &r.message.content {
            Content::Template { template } => {
                let mut out = template.name.clone();
                if template.language.code != "en" {
                    out.push_str(&format!(" ({})", template.language.code));
                }
                for c in &template.components {
                    match c {
                        Component::Body { parameters } => {
                            let texts: Vec<&str> = parameters
                                .iter()
                                .filter_map(|p| match p {
                                    Parameter::Text { text, .. } => Some(text.as_str()),
                                    _ => None,
                                })
                                .collect();
                            out.push_str(&format!(" [{}]", texts.join(" · ")));
                        }
                        Component::Header { parameters } => {
                            for p in parameters {
                                match p {
                                    Parameter::Location { location } => out.push_str(&format!(
                                        " + map ({})",
                                        location.name.as_deref().unwrap_or("location")
                                    )),
                                    Parameter::Document { document } => {
                                        out.push_str(&self.describe_media(document))
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Component::Button { .. } => {}
                    }
                }
                let labels: Vec<String> =
                    buttons(&self.sim, r).into_iter().map(|(l, _)| l).collect();
                if !labels.is_empty() {
                    out.push_str(&format!(" ({})", labels.join(" | ")));
                }
                out
            }
            Content::Text { text } => format!("\"{}\"", one_line(&text.body, 110)),
            Content::Document { document } => {
                let caption = document
                    .caption
                    .as_deref()
                    .map(|c| format!(" \"{}\"", one_line(c, 80)))
                    .unwrap_or_default();
                format!(
                    "document{}{caption} (free session message)",
                    self.describe_media(document)
                )
            }
            Content::Interactive { interactive } => {
                let choices: Vec<String> = match &interactive.kind {
                    InteractiveKind::Button { action } => action
                        .buttons
                        .iter()
                        .map(|b| b.reply.title.clone())
                        .collect(),
                    InteractiveKind::List { action } => action
                        .sections
                        .iter()
                        .flat_map(|s| s.rows.iter().map(|row| row.title.clone()))
                        .collect(),
                };
                format!(
                    "\"{}\" ({}) (free session message)",
                    one_line(&interactive.body.text, 80),
                    choices.join(" | ")
                )
            }
            other => other.kind().to_owned(),
        }
    }

    fn describe_media(&self, m: &whatsapp_cloud::wire::Media) -> String {
        let name = m.filename.as_deref().unwrap_or("file");
        match m.id.as_deref().and_then(|id| self.sim.media(id)) {
            Some((mime, bytes)) => format!(" + {name} ({mime}, {} KiB)", bytes.len() / 1024),
            None => format!(" + {name}"),
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

fn template_name(r: &SentRecord) -> Option<&str> {
    match &r.message.content {
        Content::Template { template } => Some(template.name.as_str()),
        _ => None,
    }
}

/// The document a message carries (a template's header or a session document).
fn document_of(r: &SentRecord) -> Option<&whatsapp_cloud::wire::Media> {
    match &r.message.content {
        Content::Document { document } => Some(document),
        Content::Template { template } => template.components.iter().find_map(|c| match c {
            Component::Header { parameters } => parameters.iter().find_map(|p| match p {
                Parameter::Document { document } => Some(document),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

/// The payloads of a template's quick replies, or the ids of an interactive message's choices.
fn buttons_or_rows(r: &SentRecord) -> Vec<String> {
    match &r.message.content {
        Content::Interactive { interactive } => match &interactive.kind {
            InteractiveKind::Button { action } => {
                action.buttons.iter().map(|b| b.reply.id.clone()).collect()
            }
            InteractiveKind::List { action } => action
                .sections
                .iter()
                .flat_map(|s| s.rows.iter().map(|row| row.id.clone()))
                .collect(),
        },
        _ => template_payloads(r).into_iter().map(|(_, p)| p).collect(),
    }
}

/// A template's quick replies as (button index, payload).
fn template_payloads(r: &SentRecord) -> Vec<(usize, String)> {
    let Content::Template { template } = &r.message.content else {
        return Vec::new();
    };
    template
        .components
        .iter()
        .filter_map(|c| match c {
            Component::Button {
                index, parameters, ..
            } => parameters.iter().find_map(|p| match p {
                ButtonParameter::Payload { payload } => {
                    index.parse::<usize>().ok().map(|i| (i, payload.clone()))
                }
                _ => None,
            }),
            _ => None,
        })
        .collect()
}

/// The choices the patient sees, as (label, payload): a template's buttons (labels from the
/// template as Meta holds it) or an interactive message's buttons or list rows.
fn buttons(sim: &SandboxState, r: &SentRecord) -> Vec<(String, String)> {
    match &r.message.content {
        Content::Template { template } => {
            let labels: Vec<String> = sim
                .template(DEMO_WABA, &template.name, &template.language.code)
                .map(|info| {
                    info.components
                        .iter()
                        .filter(|c| c.kind.eq_ignore_ascii_case("BUTTONS"))
                        .flat_map(|c| c.buttons.iter().flatten().map(|b| b.text.clone()))
                        .collect()
                })
                .unwrap_or_default();
            template_payloads(r)
                .into_iter()
                .map(|(i, payload)| {
                    let label = labels.get(i).cloned().unwrap_or_else(|| payload.clone());
                    (label, payload)
                })
                .collect()
        }
        Content::Interactive { interactive } => match &interactive.kind {
            InteractiveKind::Button { action } => action
                .buttons
                .iter()
                .map(|b| (b.reply.title.clone(), b.reply.id.clone()))
                .collect(),
            InteractiveKind::List { action } => action
                .sections
                .iter()
                .flat_map(|s| s.rows.iter().map(|row| (row.title.clone(), row.id.clone())))
                .collect(),
        },
        _ => Vec::new(),
    }
}
