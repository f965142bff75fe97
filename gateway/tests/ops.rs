//! Operations (issue 8): after an end-to-end run (API sends, a 130429 from Meta, a refusal, a
//! forged and a re-delivered webhook, bookings over REST and HL7/MLLP with replies and an EMR
//! write-back, a lab report, a template paused by Meta) every metric of METRICS.md is exposed and
//! the ones the run exercises moved; the per-clinic stats endpoint adds up; dashboards and alerts
//! only use catalogued metrics; the deployment files agree with the gateway's defaults.
//!
//! Leaves `target/metrics-scrape.txt` (for `promtool check metrics`) and
//! `target/dashboard-exprs.rules.yml` (every dashboard query as a recording rule, for
//! `promtool check rules`): `.ci/run` checks both.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use clinic_gateway::config::Settings;
use clinic_gateway::emr::hl7::{Hl7Link, Hl7Outbound};
use common::*;
use hl7_v2::mllp::MllpCodec;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder};
use whatsapp_cloud::sandbox::{Faults, SentRecord};
use whatsapp_cloud::wire::{ButtonParameter, Component, Content, TemplateStatus};

const DAY_MS: i64 = 24 * 3_600_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ------------------------------------------------------------------------------------------
// The catalog and the exposition format

#[derive(Debug, Clone)]
struct Row {
    name: String,
    kind: String,
}

/// The rows of METRICS.md's table: `| \`name\` | type | labels | meaning |`.
fn catalog() -> Vec<Row> {
    let rows: Vec<Row> = read("METRICS.md")
        .lines()
        .filter(|l| l.starts_with("| `clinic_gateway_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Row {
                name: cells[1].trim_matches('`').to_owned(),
                kind: cells[2].to_owned(),
            }
        })
        .collect();
    assert!(rows.len() > 30, "METRICS.md's table not found");
    for r in &rows {
        assert!(
            ["counter", "gauge", "histogram"].contains(&r.kind.as_str()),
            "{r:?}: type must be counter, gauge or histogram"
        );
        assert_eq!(
            r.kind == "counter",
            r.name.ends_with("_total"),
            "{}: counters and only counters end in _total",
            r.name
        );
    }
    rows
}

/// A scrape: each family's type and its samples (series name with labels → value).
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(n), Some(t)) = (it.next(), it.next()) {
                    types.insert(n.to_owned(), t.to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let v = value.parse::<f64>().unwrap_or(f64::NAN);
            samples.push((name.to_owned(), labels.to_owned(), v));
        }
        Self { types, samples }
    }

    /// Sum of the samples named `name` whose labels include every `k="v"` of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn max(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Whether the family moved: a counter or histogram counted something, a gauge is non-zero.
    fn moved(&self, row: &Row) -> bool {
        match row.kind.as_str() {
            "histogram" => self.sum(&format!("{}_count", row.name), &[]) > 0.0,
            "counter" => self.sum(&row.name, &[]) > 0.0,
            _ => self
                .samples
                .iter()
                .any(|(n, _, v)| n == &row.name && *v != 0.0),
        }
    }
}

/// Catalogued metrics a healthy run is not expected to move (they still must be exposed).
const QUIET_WHEN_HEALTHY: &[(&str, &str)] = &[
    (
        "clinic_gateway_store_errors_total",
        "counts Redis failures; Redis stays up",
    ),
    (
        "clinic_gateway_scheduler_lag_seconds",
        "0 unless jobs run late",
    ),
    (
        "clinic_gateway_queue_oldest_age_seconds",
        "0 once the queues drained",
    ),
    ("clinic_gateway_queue_depth", "0 once the queues drained"),
    (
        "clinic_gateway_scheduled_jobs",
        "jobs may all have run by the scrape",
    ),
];

/// Catalogued metrics that appear only once their feature runs (covered by that feature's tests).
/// (None today: the run below uses every feature that has metrics.)
const ONLY_WHEN_USED: &[(&str, &str)] = &[];

// ------------------------------------------------------------------------------------------
// HL7 v2 over MLLP: just enough of an EMR to book and to receive the write-back

async fn mllp_call(io: &mut TcpStream, codec: &mut MllpCodec, message: &str) -> String {
    let mut out = BytesMut::new();
    codec
        .encode(message.as_bytes(), &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    io.write_all(&out).await.unwrap_or_else(|e| panic!("{e}"));
    read_frame(io, codec, &mut BytesMut::new())
        .await
        .unwrap_or_else(|| panic!("no ACK"))
}

async fn read_frame(
    io: &mut TcpStream,
    codec: &mut MllpCodec,
    buf: &mut BytesMut,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(f) = codec.decode(buf).unwrap_or_else(|e| panic!("{e}")) {
            return Some(String::from_utf8_lossy(&f).into_owned());
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, io.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(_)) => {}
        }
    }
}

/// The EMR's MLLP receiver: records each message and acknowledges it with AA.
async fn emr_receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    actix_rt::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            let sink = sink.clone();
            actix_rt::spawn(async move {
                let (mut codec, mut buf) = (MllpCodec::new(1 << 20), BytesMut::new());
                while let Some(frame) = read_frame(&mut io, &mut codec, &mut buf).await {
                    let msg = hl7_v2::parse(frame.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                    sink.lock().push(frame);
                    let ack = hl7_v2::ack::ack(
                        &msg,
                        hl7_v2::ack::AckCode::Accept,
                        "EMR-ACK",
                        chrono::Utc::now(),
                    );
                    let mut out = BytesMut::new();
                    if codec.encode(&ack.to_bytes()[..], &mut out).is_ok() {
                        let _ = io.write_all(&out).await;
                    }
                }
            });
        }
    });
    (port, got)
}

fn local(ms_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms_from_now))
        .with_timezone(&chrono_tz::Asia::Kolkata)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

fn siu_s12(control: &str, appointment: &str, phone: &str, start_in_ms: i64) -> String {
    [
        format!(
            "MSH|^~\\&|EMR|SUNRISE|CLINIC_GW|GW|{}||SIU^S12|{control}|P|2.5.1",
            local(0)
        ),
        format!(
            "SCH||{appointment}|||||^Checkup|FOLLOWUP|30|MIN|^^30^{}||||||||||||||Booked",
            local(start_in_ms)
        ),
        format!("PID|1||MRN-9^^^SUNRISE^MR||Rao^Anil||19800101|M|||||^PRN^CP^^^^^^^^^{phone}||en"),
        "RGS|1".to_owned(),
        "AIP|1||D7^Rao^Meera^^^Dr".to_owned(),
    ]
    .iter()
    .map(|s| format!("{s}\r"))
    .collect()
}

// ------------------------------------------------------------------------------------------
// Helpers of the run

fn at(ms_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms_from_now)).to_rfc3339()
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn sent_template(app: &TestApp, to: &str, name: &str) -> SentRecord {
    let start = Instant::now();
    loop {
        let found = app.sim.sent().into_iter().find(|r| {
            r.to == to.trim_start_matches('+')
                && matches!(&r.message.content, Content::Template { template } if template.name == name)
        });
        if let Some(r) = found {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {name} reached Meta for {to}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The quick-reply payload of a template's button that starts with `prefix`.
fn payload(r: &SentRecord, prefix: &str) -> String {
    let Content::Template { template } = &r.message.content else {
        panic!("not a template")
    };
    template
        .components
        .iter()
        .find_map(|c| match c {
            Component::Button { parameters, .. } => parameters.iter().find_map(|b| match b {
                ButtonParameter::Payload { payload } if payload.starts_with(prefix) => {
                    Some(payload.clone())
                }
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {prefix} button in {template:?}"))
}

async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn appointment_field(app: &TestApp, id: &str, field: &str) -> Value {
    app.call(Method::GET, &format!("/v1/appointments/{id}"), KEY_A, None)
        .await
        .1[field]
        .clone()
}

/// A status webhook for `wamid`, signed with the clinic's app secret as Meta does.
fn status_webhook(wamid: &str, to: &str, status: &str) -> (Vec<u8>, String) {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_A, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "918045550001", "phone_number_id": NUMBER_A},
            "statuses": [{"id": wamid, "status": status,
                          "timestamp": chrono::Utc::now().timestamp().to_string(),
                          "recipient_id": to.trim_start_matches('+')}]
        }}]}]
    })
    .to_string()
    .into_bytes();
    let signature = whatsapp_cloud::signature::sign(APP_SECRET.as_bytes(), &body);
    (body, signature)
}

async fn post_webhook(app: &TestApp, body: Vec<u8>, signature: &str) -> u16 {
    app.http
        .post(format!("{}/webhooks/whatsapp", app.base))
        .header("Content-Type", "application/json")
        .header(whatsapp_cloud::signature::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

/// The clinic's callback endpoint: answers 200 to every event; returns its URL.
fn callback_receiver() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}/events",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().route(
            "/events",
            actix_web::web::post().to(|| async { actix_web::HttpResponse::Ok().finish() }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    actix_rt::spawn(server);
    url
}

fn options(emr_port: u16) -> Options {
    Options {
        full_library: true,
        configure: Some(Arc::new(move |s: &mut Settings| {
            s.mllp.enabled = true;
            s.mllp.bind = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
            s.mllp.workers = 1;
            s.clinics[0].emr.hl7 = Some(Hl7Link {
                sending_application: "EMR".into(),
                sending_facility: "SUNRISE".into(),
                outbound: Some(Hl7Outbound {
                    host: "127.0.0.1".into(),
                    port: emr_port,
                    ack_timeout_secs: 2,
                    sending_application: "CLINIC_GATEWAY".into(),
                    sending_facility: None,
                    receiving_application: None,
                    receiving_facility: None,
                }),
                ..Hl7Link::default()
            });
            // Clinic A crosses its low-balance threshold with its first paid message; clinic B
            // has nothing, so its sends are refused.
            s.wallet.default_low_balance_threshold = s.clinics[0].wallet_credit - 1;
            s.clinics[1].wallet_credit = 0;
        })),
        ..Options::default()
    }
}

// ------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn an_end_to_end_run_exposes_every_catalog_metric_and_moves_the_ones_it_exercises() {
    let (emr_port, written_back) = emr_receiver().await;
    let app = spawn_app("ops_e2e", options(emr_port)).await;
    // Clinic A's callbacks (events to the clinic) go to a receiver that accepts them.
    app.patch_clinic(
        "clinic_a",
        json!({"callback": {"url": callback_receiver(), "secret": "callback-secret-0123456789"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // API sends: a template that goes all the way to read.
    let p1 = patient(801);
    let first = app.send(&template(&p1)).await;
    let v = app
        .wait_for(&first, &["read"], Duration::from_secs(15))
        .await;
    assert_eq!(v["status"], "read", "{v}");

    // Meta answers 130429 (throughput) once: retried, then sent.
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error_code: 130429,
        ..Faults::default()
    });
    let p2 = patient(802);
    let throttled = app.send(&template(&p2)).await;
    eventually(
        "a 130429 from the sandbox",
        Duration::from_secs(10),
        async || app.sim.rejected().iter().any(|r| r.code == 130429),
    )
    .await;
    app.sim.set_faults(Faults::default());
    let v = app
        .wait_for(&throttled, &["delivered", "read"], Duration::from_secs(15))
        .await;
    assert!(v["status"] == "delivered" || v["status"] == "read", "{v}");

    // A small broadcast: copies go through the bulk lane.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/broadcasts",
            KEY_A,
            Some(json!({"name": "Ops drive",
                        "template": {"name": "appointment_reminder", "language": "en"},
                        "parameters": [{"value": "Asha"}, {"value": "10:30"}],
                        "recipients": [{"phone": patient(810)}, {"phone": patient(811)}]})),
        )
        .await;
    assert_eq!(s, 202, "{v}");

    // Clinic B has no money: refused at the edge.
    let (s, v) = app.post(KEY_B, &template(&patient(803))).await;
    assert_eq!(
        v["type"]
            .as_str()
            .map(|t| t.ends_with("insufficient-balance")),
        Some(true),
        "{s} {v}"
    );

    // A forged webhook, and Meta re-delivering a status already applied.
    let (body, _) = status_webhook("wamid.forged", &p1, "delivered");
    assert_eq!(post_webhook(&app, body, "sha256=00").await, 401);
    let wamid = app.sent_for(&first)[0].wamid.clone();
    let (body, signature) = status_webhook(&wamid, &p1, "delivered");
    assert_eq!(post_webhook(&app, body, &signature).await, 200);

    // A booking over the API: the patient confirms the reminder, then attends.
    let p3 = patient(804);
    let (s, booked) = app
        .call(
            Method::POST,
            "/v1/appointments",
            KEY_A,
            Some(json!({"patient": {"phone": p3, "name": "Asha"}, "start": at(DAY_MS + 1_500)})),
        )
        .await;
    assert_eq!(s, 201, "{booked}");
    let api_booking = booked["id"].as_str().unwrap_or_default().to_owned();
    let reminder = sent_template(&app, &p3, "visit_reminder").await;
    app.sim.inject_button_tap(
        NUMBER_A,
        p3.trim_start_matches('+'),
        &reminder.wamid,
        "Confirm",
        &payload(&reminder, "CONFIRM"),
    );
    eventually("the confirmation", Duration::from_secs(10), async || {
        appointment_field(&app, &api_booking, "response").await == "confirmed"
    })
    .await;
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/v1/appointments/{api_booking}"),
            KEY_A,
            Some(json!({"status": "attended"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // A booking from the EMR over MLLP: the patient cancels; the EMR hears of it (SIU^S15).
    let p4 = patient(805);
    let port = app
        .mllp_port
        .unwrap_or_else(|| panic!("MLLP is not enabled"));
    let mut emr = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut codec = MllpCodec::new(1 << 20);
    let ack = mllp_call(
        &mut emr,
        &mut codec,
        &siu_s12("OPS-1", "APT-OPS", &p4, DAY_MS + 3_000),
    )
    .await;
    assert!(ack.contains("MSA|AA"), "{ack}");
    let reminder = sent_template(&app, &p4, "visit_reminder").await;
    app.sim.inject_button_tap(
        NUMBER_A,
        p4.trim_start_matches('+'),
        &reminder.wamid,
        "Cancel",
        &payload(&reminder, "CANCEL"),
    );
    eventually(
        "the write-back to the EMR",
        Duration::from_secs(15),
        async || !written_back.lock().is_empty(),
    )
    .await;

    // A lab report.
    let p5 = patient(806);
    let pdf = clinic_gateway::pdf::sample("CBC: Hb 13.2 g/dL", 20_000);
    let (s, doc) = app
        .call(
            Method::POST,
            "/v1/lab-reports",
            KEY_A,
            Some(
                json!({"external_id": "LAB-OPS", "patient": {"phone": p5, "name": "Meena"},
                        "title": "Complete blood count",
                        "pdf_base64": base64::engine::general_purpose::STANDARD.encode(&pdf)}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{doc}");
    sent_template(&app, &p5, "lab_report_ready").await;

    // Meta pauses a template.
    assert!(app.sim.set_template_status(
        WABA_A,
        "appointment_reminder",
        "en",
        TemplateStatus::Paused
    ));

    // Let statuses, write-back acknowledgments and the template webhook land, then scrape.
    let mut text = String::new();
    eventually("the run's metrics", Duration::from_secs(15), async || {
        text = app.metrics_text().await;
        let s = Scrape::parse(&text);
        s.sum("clinic_gateway_template_status_updates_total", &[]) >= 1.0
            && s.sum("clinic_gateway_emr_writebacks_total", &[("result", "ok")]) >= 1.0
            && s.sum("clinic_gateway_message_states_total", &[("state", "read")]) >= 2.0
            && s.sum(
                "clinic_gateway_event_to_send_seconds_count",
                &[("lane", "care")],
            ) >= 1.0
            && s.sum(
                "clinic_gateway_event_to_send_seconds_count",
                &[("touchpoint", "lab_report")],
            ) >= 1.0
            && s.sum(
                "clinic_gateway_message_states_total",
                &[("touchpoint", "lab_report"), ("state", "delivered")],
            ) >= 1.0
    })
    .await;
    let target = repo().join("target");
    let _ = std::fs::create_dir_all(&target);
    std::fs::write(target.join("metrics-scrape.txt"), &text).unwrap_or_else(|e| panic!("{e}"));

    let scrape = Scrape::parse(&text);
    let rows = catalog();
    let quiet: BTreeSet<&str> = QUIET_WHEN_HEALTHY.iter().map(|(n, _)| *n).collect();
    let optional: BTreeSet<&str> = ONLY_WHEN_USED.iter().map(|(n, _)| *n).collect();
    let mut missing = Vec::new();
    let mut still = Vec::new();
    for row in &rows {
        let Some(kind) = scrape.types.get(&row.name) else {
            if !optional.contains(row.name.as_str()) {
                missing.push(row.name.clone());
            }
            continue;
        };
        assert_eq!(
            kind, &row.kind,
            "{}: METRICS.md says {}",
            row.name, row.kind
        );
        if !quiet.contains(row.name.as_str()) && !scrape.moved(row) {
            still.push(row.name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "catalogued but not exposed: {missing:?}"
    );
    assert!(
        still.is_empty(),
        "catalogued, exercised by the run, but did not move: {still:?}"
    );
    // The other way: anything exposed and not catalogued is reported (not failed: others add
    // metrics too, and METRICS.md catches up).
    let catalogued: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for name in scrape.types.keys() {
        if name.starts_with("clinic_gateway_") && !catalogued.contains(name.as_str()) {
            eprintln!("warning: {name} is exposed but not in METRICS.md");
        }
    }

    // What the run did, metric by metric.
    let sum = |n: &str, l: &[(&str, &str)]| scrape.sum(n, l);
    assert!(
        sum(
            "clinic_gateway_meta_errors_total",
            &[
                ("code", "130429"),
                ("class", "throttle_number"),
                ("source", "send")
            ]
        ) >= 1.0
    );
    assert!(sum("clinic_gateway_sends_total", &[("outcome", "retried")]) >= 1.0);
    assert_eq!(
        sum("clinic_gateway_meta_errors_total", &[("code", "131056")]),
        0.0,
        "the 131056 series exists at 0"
    );
    assert!(
        sum(
            "clinic_gateway_webhook_requests_total",
            &[("result", "bad-signature")]
        ) >= 1.0
    );
    assert!(
        sum(
            "clinic_gateway_webhook_duration_seconds_count",
            &[("result", "bad-signature")]
        ) >= 1.0
    );
    assert!(sum("clinic_gateway_webhook_duplicate_deliveries_total", &[]) >= 1.0);
    assert!(
        sum(
            "clinic_gateway_refusals_total",
            &[("reason", "insufficient-balance")]
        ) >= 1.0
    );
    assert!(sum("clinic_gateway_low_balance_crossings_total", &[]) >= 1.0);
    assert!(
        scrape.max("clinic_gateway_low_balance_clinics") >= 2.0,
        "A under its threshold, B empty"
    );
    assert_eq!(
        sum(
            "clinic_gateway_appointment_attendance_total",
            &[
                ("reminder_outcome", "confirmed"),
                ("attendance", "attended")
            ]
        ),
        1.0
    );
    assert!(
        sum(
            "clinic_gateway_event_to_send_seconds_count",
            &[("lane", "reminders")]
        ) >= 2.0
    );
    // Messages by touchpoint: accepted into the outbox, then moved by Meta's statuses.
    for touchpoint in ["lab_report", "confirmation", "broadcast", "api"] {
        assert!(
            sum(
                "clinic_gateway_messages_accepted_total",
                &[("touchpoint", touchpoint)]
            ) >= 1.0,
            "accepted {touchpoint}"
        );
    }
    assert!(
        sum(
            "clinic_gateway_message_states_total",
            &[("touchpoint", "lab_report"), ("class", "none")]
        ) >= 2.0
    );
    assert!(sum("clinic_gateway_pacing_sends_total", &[("tier", "80")]) >= 5.0);
    assert!(
        sum(
            "clinic_gateway_pacing_capacity_messages_per_second",
            &[("tier", "80")]
        ) >= 72.0
    );
    assert!(
        sum(
            "clinic_gateway_template_status_updates_total",
            &[("status", "PAUSED")]
        ) >= 1.0
    );
    assert!(
        sum(
            "clinic_gateway_hl7_messages_total",
            &[("type", "SIU^S12"), ("code", "AA")]
        ) >= 1.0
    );
    assert_eq!(sum("clinic_gateway_store_up", &[]), 1.0);
    assert_eq!(
        sum(
            "clinic_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(
        sum(
            "clinic_gateway_wallet_movements_total",
            &[("kind", "reserved")]
        ) >= 5.0
    );
    assert!(
        sum(
            "clinic_gateway_wallet_movements_total",
            &[("kind", "settled")]
        ) >= 1.0
    );

    clinic_stats_add_up(&app).await;
}

/// `GET /admin/v1/clinics/{id}/stats` after the run: admin only, and its numbers add up.
async fn clinic_stats_add_up(app: &TestApp) {
    let range = format!(
        "from={}&to={}",
        urlencode(&at(-DAY_MS)),
        urlencode(&at(2 * DAY_MS))
    );
    let path = format!("/admin/v1/clinics/clinic_a/stats?{range}");
    let (s, _) = app.call(Method::GET, &path, KEY_A, None).await;
    assert_eq!(s, 401, "a clinic key is not an admin key");
    let (s, _) = app
        .call(
            Method::GET,
            &format!("/admin/v1/clinics/clinic_zz/stats?{range}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(s, 404);
    let backwards = format!(
        "/admin/v1/clinics/clinic_a/stats?from={}&to={}",
        urlencode(&at(0)),
        urlencode(&at(-DAY_MS))
    );
    let (s, v) = app.call(Method::GET, &backwards, ADMIN_KEY, None).await;
    assert_eq!((s, v["field"].as_str()), (422, Some("to")), "{v}");

    let (s, st) = app.call(Method::GET, &path, ADMIN_KEY, None).await;
    assert_eq!(s, 200, "{st}");
    let accepted = st["messages"]["accepted"].as_u64().unwrap_or(0);
    assert!(accepted >= 6, "{st}");
    let by_state: u64 = st["messages"]["by_state"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    assert_eq!(by_state, accepted, "{st}");
    let seen = ["delivered", "read"]
        .iter()
        .filter_map(|k| st["messages"]["by_state"][k].as_u64())
        .sum::<u64>();
    assert!(seen >= 2, "{st}");
    let spend = &st["spend"];
    assert_eq!(
        (spend["currency"].as_str(), spend["unit"].as_str()),
        (Some("INR"), Some("micro"))
    );
    assert!(spend["charged"].as_i64().unwrap_or(0) > 0, "{st}");
    assert!(spend["settlements"].as_u64().unwrap_or(0) >= 1, "{st}");
    assert_eq!(
        (spend["credited"].as_i64(), spend["credits"].as_u64()),
        (Some(1_000_000_000), Some(1)),
        "{st}"
    );
    assert_eq!(st["touchpoints"]["documents"]["lab_report"], 1, "{st}");
    assert_eq!(st["touchpoints"]["appointments"], 2, "{st}");
    assert_eq!(st["lab_reports"]["sent"], 1, "{st}");
    assert!(
        st["lab_reports"]["dispatch_seconds"]["p50"].is_number(),
        "{st}"
    );
    let appointments = &st["appointments"];
    assert_eq!(
        (
            appointments["appointments"].as_u64(),
            appointments["reminded"].as_u64()
        ),
        (Some(2), Some(2)),
        "{st}"
    );
    assert_eq!(appointments["confirmation_rate"], 0.5, "{st}");
    assert_eq!(
        appointments["by_reminder_outcome"]["confirmed"]["attended"], 1,
        "{st}"
    );

    // Clinic B spent nothing and sent nothing.
    let (s, b) = app
        .call(
            Method::GET,
            &format!("/admin/v1/clinics/clinic_b/stats?{range}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["messages"]["accepted"].as_u64(),
            b["spend"]["charged"].as_i64()
        ),
        (Some(0), Some(0)),
        "{b}"
    );
}

// ------------------------------------------------------------------------------------------
// Dashboards and alerts

/// Every `clinic_gateway_*` name in a PromQL text, histogram series folded to their family.
fn metric_refs(expr: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("clinic_gateway_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| histograms.contains(*b)))
            .unwrap_or(name);
        out.insert(family.to_owned());
        i = end;
    }
    out
}

#[test]
fn dashboards_and_alerts_use_only_catalogued_metrics() {
    let rows = catalog();
    let names: BTreeSet<String> = rows.iter().map(|r| r.name.clone()).collect();
    let histograms: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.kind == "histogram")
        .map(|r| r.name.clone())
        .collect();

    let datasources = read("grafana/provisioning/datasources/prometheus.yml");
    assert!(datasources.contains("uid: prometheus"), "{datasources}");
    let mut rules = Vec::new();
    let mut uids = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("grafana/dashboards"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        5,
        "fleet, Meta, outcomes, wallets, EMR: {files:?}"
    );
    for file in &files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no uid", file.display()));
        assert!(uids.insert(uid.to_owned()), "duplicate uid {uid}");
        assert!(d["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Clinic Gateway / ")));
        let panels = d["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("no panels"));
        let mut ids = BTreeSet::new();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64()),
                "{uid}: duplicate panel id {}",
                p["id"]
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24),
                "{uid}: {p}"
            );
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(t["datasource"]["uid"], "prometheus", "{uid}: {t}");
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{uid}: {t}"));
                let refs = metric_refs(expr, &histograms);
                assert!(
                    !refs.is_empty() || expr.contains("up{"),
                    "{uid} / {}: no metric in {expr}",
                    p["title"]
                );
                for r in refs {
                    assert!(
                        names.contains(&r),
                        "{uid} / {}: {r} is not in METRICS.md",
                        p["title"]
                    );
                }
                // Grafana's macros replaced by values, for promtool.
                let concrete = expr
                    .replace("$__rate_interval", "5m")
                    .replace("$__range", "1h")
                    .replace("$instance", ".*");
                rules.push(
                    json!({"record": format!("dashboard:expr_{}", rules.len()), "expr": concrete}),
                );
            }
        }
    }
    let alerts = read("grafana/alerts.yml");
    let refs = metric_refs(&alerts, &histograms);
    let needed = [
        "clinic_gateway_queue_oldest_age_seconds",
        "clinic_gateway_sends_total",
        "clinic_gateway_webhook_requests_total",
        "clinic_gateway_low_balance_clinics",
        "clinic_gateway_store_up",
        "clinic_gateway_scheduler_lag_seconds",
        "clinic_gateway_event_to_send_seconds",
    ];
    for n in needed {
        assert!(refs.contains(n), "alerts.yml does not use {n}");
    }
    for r in &refs {
        assert!(names.contains(r), "alerts.yml: {r} is not in METRICS.md");
    }
    let count = alerts.matches("- alert: ").count();
    assert_eq!(
        count,
        alerts.matches("severity: ").count(),
        "every alert has a severity"
    );
    assert_eq!(
        count,
        alerts.matches("summary: ").count(),
        "every alert has a summary"
    );
    // JSON is YAML: promtool reads this as a rule file.
    let out = repo().join("target");
    let _ = std::fs::create_dir_all(&out);
    let file = json!({"groups": [{"name": "dashboard-exprs", "rules": rules}]});
    std::fs::write(out.join("dashboard-exprs.rules.yml"), file.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
}

// ------------------------------------------------------------------------------------------
// Deployment files

/// A YAML subset, enough for the compose and provisioning files: block maps, block lists (of
/// scalars or maps), flow lists of JSON strings, quoted and plain scalars, comments.
mod yaml {
    use serde_json::{Map, Value};

    struct Line {
        indent: usize,
        text: String,
    }

    fn strip_comment(s: &str) -> &str {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (i, c) in s.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '#') if prev == ' ' => return &s[..i],
                _ => {}
            }
            prev = c;
        }
        s
    }

    pub fn parse(text: &str) -> Value {
        let lines: Vec<Line> = text
            .lines()
            .map(|l| {
                let body = strip_comment(l).trim_end();
                Line {
                    indent: body.len() - body.trim_start().len(),
                    text: body.trim_start().to_owned(),
                }
            })
            .filter(|l| !l.text.is_empty())
            .collect();
        let mut i = 0;
        block(&lines, &mut i, 0)
    }

    fn scalar(s: &str) -> Value {
        let s = s.trim();
        if s.starts_with('[') || s.starts_with('"') {
            if let Ok(v) = serde_json::from_str(s) {
                return v;
            }
        }
        if let Some(inner) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Value::String(inner.to_owned());
        }
        Value::String(s.to_owned())
    }

    fn block(lines: &[Line], i: &mut usize, indent: usize) -> Value {
        if *i < lines.len() && lines[*i].text.starts_with("- ") {
            let mut items = Vec::new();
            while *i < lines.len() && lines[*i].indent == indent && lines[*i].text.starts_with("- ")
            {
                let rest = lines[*i].text[2..].to_owned();
                if key_value(&rest).is_some() {
                    // A map inside a list: its first entry is on the dash's line.
                    let inner = indent + 2;
                    let mut sub = vec![Line {
                        indent: inner,
                        text: rest,
                    }];
                    *i += 1;
                    while *i < lines.len() && lines[*i].indent >= inner {
                        sub.push(Line {
                            indent: lines[*i].indent,
                            text: lines[*i].text.clone(),
                        });
                        *i += 1;
                    }
                    let mut j = 0;
                    items.push(block(&sub, &mut j, inner));
                } else {
                    items.push(scalar(&rest));
                    *i += 1;
                }
            }
            return Value::Array(items);
        }
        let mut map = Map::new();
        while *i < lines.len() && lines[*i].indent == indent {
            let Some((k, v)) = key_value(&lines[*i].text) else {
                panic!("not a key: {:?}", lines[*i].text);
            };
            *i += 1;
            let value = if v.is_empty() {
                match lines.get(*i) {
                    Some(next) if next.indent > indent => block(lines, i, next.indent),
                    // A list may sit at its key's indentation.
                    Some(next) if next.indent == indent && next.text.starts_with("- ") => {
                        block(lines, i, indent)
                    }
                    _ => Value::Null,
                }
            } else {
                scalar(&v)
            };
            map.insert(k, value);
        }
        Value::Object(map)
    }

    fn key_value(s: &str) -> Option<(String, String)> {
        if s.starts_with('"') || s.starts_with('[') {
            return None;
        }
        let (k, v) = s.split_once(':')?;
        if k.contains(' ') || !(v.is_empty() || v.starts_with(' ')) {
            return None;
        }
        Some((k.to_owned(), v.trim().to_owned()))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn the_mini_yaml_reads_what_the_deployment_files_use() {
    let v = yaml::parse(
        "a:\n  b: \"x # y\"  # c\n  l:\n    - \"1\"\n    - two\n  f: [\"p\", \"q\"]\nm:\n- k: v\n  j: w\n",
    );
    assert_eq!(
        v,
        json!({"a": {"b": "x # y", "l": ["1", "two"], "f": ["p", "q"]}, "m": [{"k": "v", "j": "w"}]})
    );
}

#[test]
fn deployment_files_agree_with_the_gateway_defaults() {
    let defaults = Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
    let http_port = defaults.server.bind.port();
    let redis_port = port_of(&defaults.redis.url);
    let compose = yaml::parse(&read("docker-compose.yml"));
    let services = &compose["services"];
    for s in ["gateway", "redis", "prometheus", "grafana"] {
        assert!(
            services[s].is_object(),
            "docker-compose.yml has no {s} service"
        );
    }

    // Gateway: listens where the config says, published as such, ready on /readyz.
    let gw = &services["gateway"];
    let env = &gw["environment"];
    let bind = env["CLINIC_GATEWAY__SERVER__BIND"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        port_of(bind),
        http_port,
        "the gateway listens on the default port"
    );
    assert!(
        bind.starts_with("0.0.0.0:"),
        "inside a container: every interface"
    );
    assert!(
        strings(&gw["ports"]).contains(&format!("{http_port}:{http_port}")),
        "{gw}"
    );
    let health = strings(&gw["healthcheck"]["test"]).join(" ");
    assert!(
        health.contains(&format!("127.0.0.1:{http_port}/readyz")),
        "{health}"
    );
    assert_eq!(gw["depends_on"]["redis"]["condition"], "service_healthy");
    let redis_url = env["CLINIC_GATEWAY__REDIS__URL"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(redis_url, format!("redis://redis:{redis_port}"));
    assert_eq!(
        strings(&gw["command"]),
        ["serve", "--config", "/etc/clinic-gateway/gateway.toml"]
    );
    let config_mount = strings(&gw["volumes"])
        .into_iter()
        .find(|v| v.contains(":/etc/clinic-gateway/gateway.toml"))
        .unwrap_or_else(|| panic!("no config mounted: {gw}"));
    assert!(
        config_mount.contains("./config/production.example.toml"),
        "{config_mount}"
    );
    assert_eq!(gw["build"]["dockerfile"], "Dockerfile");

    // Redis: AOF on, its data on a volume, healthy by redis-cli.
    let redis = &services["redis"];
    let cmd = strings(&redis["command"]).join(" ");
    assert!(cmd.contains("--appendonly yes"), "{cmd}");
    assert!(strings(&redis["volumes"]).contains(&"redis-data:/data".to_owned()));
    assert!(strings(&redis["healthcheck"]["test"])
        .join(" ")
        .contains("redis-cli ping"));

    // Prometheus: our scrape config and rules, scraping the gateway service on its port.
    let prom = &services["prometheus"];
    let mounts = strings(&prom["volumes"]);
    for m in [
        "./grafana/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "./grafana/alerts.yml:/etc/prometheus/alerts.yml:ro",
    ] {
        assert!(mounts.contains(&m.to_owned()), "{mounts:?}");
    }
    assert!(strings(&prom["command"])
        .contains(&"--config.file=/etc/prometheus/prometheus.yml".to_owned()));
    let scrape = yaml::parse(&read("grafana/prometheus.yml"));
    assert_eq!(strings(&scrape["rule_files"]), ["alerts.yml"]);
    let job = scrape["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["job_name"] == "clinic-gateway")
        .unwrap_or_else(|| panic!("no clinic-gateway job: {scrape}"));
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(
        strings(&job["static_configs"][0]["targets"]),
        [format!("gateway:{http_port}")]
    );
    assert!(strings(&prom["ports"]).contains(&"9090:9090".to_owned()));

    // Grafana: provisioning and dashboards where the provider looks for them, datasource at the
    // Prometheus service.
    let grafana = &services["grafana"];
    let mounts = strings(&grafana["volumes"]);
    assert!(mounts.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro".to_owned()));
    let provider = yaml::parse(&read("grafana/provisioning/dashboards/clinic-gateway.yml"));
    let dash_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{provider}"));
    assert!(
        mounts.contains(&format!("./grafana/dashboards:{dash_path}:ro")),
        "{mounts:?} vs {dash_path}"
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap_or_default();
    let home_file = home
        .strip_prefix(&format!("{dash_path}/"))
        .unwrap_or_else(|| panic!("home dashboard {home} is not under {dash_path}"));
    assert!(repo().join("grafana/dashboards").join(home_file).is_file());
    let ds = yaml::parse(&read("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");

    // Every bind mount exists in the repository; every named volume is declared.
    let declared: BTreeSet<String> = compose["volumes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for (name, svc) in services.as_object().into_iter().flatten() {
        for v in strings(&svc["volumes"]) {
            // `${VAR:-default}:/target`: the default is what the repository provides.
            let source = match v.strip_prefix("${") {
                Some(rest) => rest
                    .split_once('}')
                    .and_then(|(inner, _)| inner.split_once(":-"))
                    .map_or("", |(_, default)| default),
                None => v.split(':').next().unwrap_or_default(),
            };
            if let Some(rel) = source.strip_prefix("./") {
                assert!(repo().join(rel).exists(), "{name}: {rel} does not exist");
            } else {
                assert!(
                    declared.contains(source),
                    "{name}: volume {source} not declared"
                );
            }
        }
    }

    // The image: the README's build command, non-root, liveness on /healthz.
    let dockerfile = read("Dockerfile");
    let build = "cargo build --release -p clinic-gateway";
    assert!(
        dockerfile.contains(build),
        "the Dockerfile builds as the README says"
    );
    assert!(
        read("README.md").contains(build),
        "the README shows the build command"
    );
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap_or_else(|| panic!("the runtime image sets no USER"));
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    assert!(dockerfile.contains(&format!("http://127.0.0.1:{http_port}/healthz")));
    assert!(dockerfile.contains(&format!("EXPOSE {http_port}")));
    assert!(dockerfile.contains(&format!("CLINIC_GATEWAY__SERVER__BIND=0.0.0.0:{http_port}")));
    assert!(
        dockerfile.contains(&format!("{}", defaults.mllp.bind.port())),
        "MLLP port exposed"
    );
    assert!(
        dockerfile.contains("COPY config/templates"),
        "the template library ships"
    );

    // systemd: the same command line, a service user, a stop timeout above the drain grace.
    let unit = read("deploy/clinic-gateway.service");
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/clinic-gateway serve --config /etc/clinic-gateway/gateway.toml"
    ));
    assert!(unit.contains("User=clinic-gateway"));
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no TimeoutStopSec"));
    assert!(
        stop > defaults.server.shutdown_grace_secs,
        "systemd must let the drain finish"
    );

    // The example production config loads and validates as the gateway does at start-up.
    let example = repo().join("config/production.example.toml");
    let s = Settings::load(Some(example.as_path())).unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.sandbox.enabled, "production talks to Meta only");
    assert_eq!(s.server.bind.port(), http_port);
    let compose_stop = gw["stop_grace_period"].as_str().unwrap_or_default();
    let compose_stop: u64 = compose_stop.trim_end_matches('s').parse().unwrap_or(0);
    assert!(
        compose_stop > s.server.shutdown_grace_secs,
        "compose must let the drain finish"
    );
}

#[test]
fn the_scrape_helpers_read_the_exposition_format() {
    let s = Scrape::parse(
        "# HELP x_total X\n# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"2\"} 4\n# TYPE h histogram\nh_count{l=\"c\"} 2\n",
    );
    assert_eq!(s.sum("x_total", &[("a", "1")]), 3.0);
    assert_eq!(s.sum("x_total", &[]), 7.0);
    assert!(s.moved(&Row {
        name: "h".into(),
        kind: "histogram".into()
    }));
    let hist: BTreeSet<String> = ["clinic_gateway_h_seconds".to_owned()].into();
    assert_eq!(
        metric_refs(
            "rate(clinic_gateway_h_seconds_bucket[5m]) / clinic_gateway_x_count",
            &hist
        ),
        [
            "clinic_gateway_h_seconds".to_owned(),
            "clinic_gateway_x_count".to_owned()
        ]
        .into()
    );
}

#[actix_rt::test]
async fn queue_age_and_the_oldest_due_job_are_read_from_redis() {
    // One send at a time, each answered after 1.5 s: the rest of the care lane waits.
    let app = spawn_app(
        "ops_queue_age",
        Options {
            configure: Some(Arc::new(|s: &mut Settings| s.dispatch.max_in_flight = 1)),
            ..Options::default()
        },
    )
    .await;
    app.sim.set_faults(Faults {
        response_delay_ms: 1_500,
        ..Faults::default()
    });
    for i in 0..4 {
        app.send(&template(&patient(820 + i))).await;
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let s = Scrape::parse(&app.metrics_text().await);
    let age = s.sum(
        "clinic_gateway_queue_oldest_age_seconds",
        &[("lane", "care")],
    );
    assert!(
        (1.0..30.0).contains(&age),
        "oldest waiting care entry: {age} s"
    );
    assert_eq!(
        s.sum(
            "clinic_gateway_queue_oldest_age_seconds",
            &[("lane", "bulk")]
        ),
        0.0
    );
    app.sim.set_faults(Faults::default());

    // The scheduler's oldest due time is the earliest job's.
    let tenant =
        clinic_gateway::domain::TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"));
    let now = chrono::Utc::now().timestamp_millis();
    let job = |visit: &str| clinic_gateway::workflows::Job::FollowUp {
        visit: visit.to_owned(),
    };
    let before = app
        .store
        .oldest_due()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.store
        .schedule(&tenant, &job("vis_ops_2"), now + 7_200_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    app.store
        .schedule(&tenant, &job("vis_ops_1"), now + 3_600_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let due = app
        .store
        .oldest_due()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let expected = before.map_or(now + 3_600_000, |b| b.min(now + 3_600_000));
    assert_eq!(due, Some(expected));
    app.store
        .unschedule(&tenant, &[job("vis_ops_1"), job("vis_ops_2")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Scrape::parse(&app.metrics_text().await);
    assert_eq!(
        s.sum("clinic_gateway_scheduler_lag_seconds", &[]),
        0.0,
        "nothing is overdue"
    );
}
