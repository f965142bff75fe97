//! HL7 v2 over MLLP end to end, over real sockets, on real Redis and the Meta sandbox: an EMR
//! books, reschedules and cancels appointments and sends lab reports; patients' decisions go
//! back to the EMR's own MLLP receiver; malformed, unknown and re-sent messages are answered
//! as HL7 says.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clinic_gateway::config::Settings;
use clinic_gateway::domain::TenantId;
use clinic_gateway::emr::hl7::{Hl7Link, Hl7Outbound};
use common::*;
use parking_lot::Mutex;
use reqwest::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use whatsapp_cloud::wire::{ButtonParameter, Component, Content};

/// How clinic A's EMR signs its messages (MSH-3 and MSH-4).
const SUNRISE: &str = "EMR|SUNRISE";

/// Clinic A linked as EMR/SUNRISE; the MLLP listener on a free port.
fn options(
    outbound: Option<u16>,
    tweak: impl Fn(&mut Settings) + Send + Sync + 'static,
) -> Options {
    Options {
        configure: Some(Arc::new(move |s: &mut Settings| {
            enable_mllp(s);
            s.clinics[0].emr.hl7 = Some(Hl7Link {
                outbound: outbound.map(|port| Hl7Outbound {
                    host: "127.0.0.1".into(),
                    port,
                    ack_timeout_secs: 2,
                    sending_application: "CLINIC_GATEWAY".into(),
                    sending_facility: None,
                    receiving_application: None,
                    receiving_facility: None,
                }),
                ..emr_link("SUNRISE")
            });
            tweak(s);
        })),
        ..Options::default()
    }
}

fn oru(control: &str, order: &str, status: &str, phone: &str, pdf: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(pdf);
    let mut obr = vec![String::new(); 25];
    obr[0] = "1".into();
    obr[2] = order.into();
    obr[3] = "CBC^Complete blood count^L".into();
    obr[24] = status.into();
    [
        msh(SUNRISE, "ORU^R01^ORU_R01", control),
        pid(phone),
        format!("OBR|{}", obr.join("|")),
        format!("OBX|1|ED|PDF^Report^L||^AP^PDF^Base64^{b64}||||||{status}"),
    ]
    .iter()
    .map(|s| format!("{s}\r"))
    .collect()
}

fn tenant() -> TenantId {
    TenantId::parse("clinic_a").unwrap_or_else(|e| panic!("{e}"))
}

async fn appointment_id(app: &TestApp, external: &str) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(id)) = app.store.appointment_by_external(&tenant(), external).await {
            return id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no appointment {external}");
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_rt::test]
async fn siu_s12_is_acknowledged_after_booking_and_the_patient_is_confirmed() {
    let app = spawn_app("hl7_s12", options(None, |_| {})).await;
    let p = patient(501);
    let mut emr = Mllp::connect(&app).await;
    let ack = emr
        .call(&siu(
            SUNRISE,
            "SIU^S12^SIU_S12",
            "C-1",
            "APT-1",
            &p,
            3 * DAY_MS,
        ))
        .await;
    assert_eq!(ack.code(), "AA", "{ack:?}");
    assert_eq!(ack.get("MSA-2"), "C-1");
    // Sender and receiver swapped, the trigger echoed.
    assert_eq!(
        (ack.get("MSH-3"), ack.get("MSH-5"), ack.get("MSH-6")),
        ("CLINIC_GW".into(), "EMR".into(), "SUNRISE".into())
    );
    assert_eq!(ack.get("MSH-9.2"), "S12");
    // AA means stored: the appointment is there the moment the ACK is.
    let id = app
        .store
        .appointment_by_external(&tenant(), "APT-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("AA before the appointment was stored"));
    let a = app.appointment(id.as_str()).await;
    assert_eq!(
        (a["status"].as_str(), a["doctor"].as_str()),
        (Some("booked"), Some("Dr Meera Rao")),
        "{a}"
    );
    let confirmation = sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|| panic!("no confirmation reached Meta"));
    let Content::Template { template } = &confirmation.message.content else {
        panic!("not a template");
    };
    assert_eq!(template.language.code, "en");
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            "clinic_gateway_hl7_messages_total",
            &[("type", "SIU^S12"), ("code", "AA")]
        ),
        1.0,
        "{metrics}"
    );
}

#[actix_rt::test]
async fn duplicates_are_acknowledged_without_a_second_message() {
    let app = spawn_app("hl7_dupes", options(None, |_| {})).await;
    let p = patient(502);
    let msg = siu(SUNRISE, "SIU^S12", "C-7", "APT-7", &p, 3 * DAY_MS);
    let mut emr = Mllp::connect(&app).await;
    assert_eq!(emr.call(&msg).await.code(), "AA");
    // The same MSH-10 again, on the same connection and on another one (the EMR timed out).
    let again = emr.call(&msg).await;
    assert_eq!(
        (again.code(), again.get("MSA-2")),
        ("AA".into(), "C-7".into())
    );
    let mut second = Mllp::connect(&app).await;
    assert_eq!(second.call(&msg).await.code(), "AA");
    // A new control id for the same appointment is the same booking too.
    assert_eq!(
        second
            .call(&siu(SUNRISE, "SIU^S12", "C-8", "APT-7", &p, 3 * DAY_MS))
            .await
            .code(),
        "AA"
    );
    assert!(sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(10)
    )
    .await
    .is_some());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        templates_to(&app, &p, "appointment_confirmation").len(),
        1,
        "sent twice"
    );
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            "clinic_gateway_hl7_messages_total",
            &[("type", "SIU^S12"), ("code", "AA-duplicate")]
        ),
        2.0,
        "{metrics}"
    );
}

#[actix_rt::test]
async fn an_oru_with_a_2_mb_pdf_reaches_the_patient_as_a_lab_report() {
    let app = spawn_app("hl7_oru", options(None, |_| {})).await;
    seed_templates(&app, &["lab_report_ready", "lab_report_corrected"]).await;
    let p = patient(503);
    let pdf =
        clinic_gateway::pdf::sample("Complete blood count: all values in range", 2 * 1024 * 1024);
    assert!(pdf.len() >= 2 * 1024 * 1024);
    let mut emr = Mllp::connect(&app).await;
    let ack = emr.call(&oru("L-1", "LAB-900", "F", &p, &pdf)).await;
    assert_eq!(ack.code(), "AA", "{ack:?}");
    let sent = sent_template(&app, &p, "lab_report_ready", Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no lab report reached Meta"));
    let media = header_document(&sent).unwrap_or_else(|| panic!("no document header"));
    let (mime, bytes) = app
        .sim
        .media(&media)
        .unwrap_or_else(|| panic!("the sandbox does not know media {media}"));
    assert_eq!(mime, "application/pdf");
    assert_eq!(bytes.as_ref(), pdf.as_slice(), "the PDF arrived intact");

    // Re-sent under a new control id: same bytes, nothing sent.
    assert_eq!(
        emr.call(&oru("L-2", "LAB-900", "F", &p, &pdf)).await.code(),
        "AA"
    );
    // Preliminary results: accepted, nothing sent.
    assert_eq!(
        emr.call(&oru("L-3", "LAB-901", "P", &p, &pdf)).await.code(),
        "AA"
    );
    // The lab corrects the report: sent again, as corrected.
    let fixed = clinic_gateway::pdf::sample("Complete blood count (corrected)", 64 * 1024);
    assert_eq!(
        emr.call(&oru("L-4", "LAB-900", "C", &p, &fixed))
            .await
            .code(),
        "AA"
    );
    assert!(
        sent_template(&app, &p, "lab_report_corrected", Duration::from_secs(10))
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(templates_to(&app, &p, "lab_report_ready").len(), 1);
    assert_eq!(templates_to(&app, &p, "lab_report_corrected").len(), 1);
}

#[actix_rt::test]
async fn s13_moves_and_s15_cancels_dropping_the_reminders() {
    let app = spawn_app("hl7_s15", options(None, |_| {})).await;
    let p = patient(504);
    let mut emr = Mllp::connect(&app).await;
    // The 24 h reminder of this appointment would fall due four seconds from now.
    assert_eq!(
        emr.call(&siu(
            SUNRISE,
            "SIU^S12",
            "C-1",
            "APT-15",
            &p,
            DAY_MS + 4_000
        ))
        .await
        .code(),
        "AA"
    );
    let id = appointment_id(&app, "APT-15").await;
    assert!(sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(10)
    )
    .await
    .is_some());
    // Moved by a day: the patient hears of it, the reminder moves with it.
    assert_eq!(
        emr.call(&siu(
            SUNRISE,
            "SIU^S13",
            "C-2",
            "APT-15",
            &p,
            2 * DAY_MS + 4_000
        ))
        .await
        .code(),
        "AA"
    );
    assert!(
        sent_template(&app, &p, "appointment_rescheduled", Duration::from_secs(10))
            .await
            .is_some()
    );
    assert_eq!(app.appointment(&id).await["version"], 2);
    // Cancelled by the clinic.
    let cancel = format!(
        "{}\rSCH||APT-15|||||PATIENT^Clinic cancelled\r",
        msh(SUNRISE, "SIU^S15^SIU_S12", "C-3")
    );
    let ack = emr.call(&cancel).await;
    assert_eq!(ack.code(), "AA", "{ack:?}");
    let a = app.appointment(&id).await;
    assert_eq!(a["status"], "cancelled", "{a}");
    assert!(
        sent_template(&app, &p, "appointment_cancelled", Duration::from_secs(10))
            .await
            .is_some()
    );
    // The old reminder time passes: nothing is sent.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        templates_to(&app, &p, "visit_reminder").is_empty(),
        "a reminder of a cancelled appointment was sent"
    );
    // The EMR cancels again (S15 re-sent with a new id): nothing more.
    let again = format!("{}\rSCH||APT-15\r", msh(SUNRISE, "SIU^S15", "C-4"));
    assert_eq!(emr.call(&again).await.code(), "AA");
    // A cancellation of an appointment the gateway never saw is accepted and ignored.
    let unknown = format!("{}\rSCH||APT-NEVER\r", msh(SUNRISE, "SIU^S15", "C-5"));
    assert_eq!(emr.call(&unknown).await.code(), "AA");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(templates_to(&app, &p, "appointment_cancelled").len(), 1);
}

/// The EMR's MLLP receiver: records each message and answers with the next code of `script`
/// (then AA).
async fn emr_receiver(script: Vec<&'static str>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let script = Arc::new(Mutex::new(script.into_iter()));
    actix_rt::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            let (sink, script) = (sink.clone(), script.clone());
            actix_rt::spawn(async move {
                let mut conn = Mllp::over(io);
                while let Some(frame) = conn.read_frame(Duration::from_secs(30)).await {
                    let text = String::from_utf8_lossy(&frame).into_owned();
                    let msg = hl7_v2::parse(&frame).unwrap_or_else(|e| panic!("{e}"));
                    sink.lock().push(text);
                    let code = script.lock().next().unwrap_or("AA");
                    let ack = match code {
                        "AA" => hl7_v2::ack::ack(
                            &msg,
                            hl7_v2::ack::AckCode::Accept,
                            "EMR-ACK",
                            chrono::Utc::now(),
                        ),
                        _ => hl7_v2::ack::AckBuilder::new(
                            hl7_v2::ack::AckContext::from_message(&msg),
                            hl7_v2::ack::AckCode::Error,
                        )
                        .error(
                            hl7_v2::ack::AckError::new(
                                hl7_v2::ack::ErrorCode::ApplicationRecordLocked,
                            )
                            .message("record locked"),
                        )
                        .build("EMR-ACK", chrono::Utc::now()),
                    };
                    conn.send_raw(&ack.to_bytes()).await;
                }
            });
        }
    });
    (port, got)
}

#[actix_rt::test]
async fn a_patient_cancel_tap_reaches_the_emr_as_siu_s15_retried_until_acknowledged() {
    // The EMR answers the first attempt with AE (record locked), the retry with AA.
    let (emr_port, received) = emr_receiver(vec!["AE"]).await;
    let app = spawn_app("hl7_writeback", options(Some(emr_port), |_| {})).await;
    let p = patient(505);
    let mut emr = Mllp::connect(&app).await;
    assert_eq!(
        emr.call(&siu(
            SUNRISE,
            "SIU^S12",
            "C-1",
            "APT-WB",
            &p,
            DAY_MS + 3_000
        ))
        .await
        .code(),
        "AA"
    );
    let id = appointment_id(&app, "APT-WB").await;
    let reminder = sent_template(&app, &p, "visit_reminder", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no reminder reached Meta"));
    let Content::Template { template } = &reminder.message.content else {
        panic!("not a template");
    };
    let cancel = template
        .components
        .iter()
        .find_map(|c| match c {
            Component::Button { parameters, .. } => parameters.iter().find_map(|b| match b {
                ButtonParameter::Payload { payload } if payload.starts_with("CANCEL:") => {
                    Some(payload.clone())
                }
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Cancel button"));
    app.sim.inject_button_tap(
        NUMBER_A,
        p.trim_start_matches('+'),
        &reminder.wamid,
        "Cancel",
        &cancel,
    );

    // First attempt (AE), then the scheduler's retry 5 s later (AA).
    let start = Instant::now();
    while received.lock().len() < 2 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.lock().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let msg = hl7_v2::parse(got[0].as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let get = |p: &str| msg.get(p).ok().flatten().unwrap_or_default().to_owned();
    assert_eq!((get("MSH-9"), get("MSH-9.2")), ("SIU".into(), "S15".into()));
    assert_eq!(
        (get("MSH-5"), get("MSH-6")),
        ("EMR".into(), "SUNRISE".into())
    );
    assert_eq!(get("SCH-2"), "APT-WB");
    assert_eq!(get("SCH-25"), "Cancelled");
    assert_eq!(get("SCH-6"), "PATCANCEL");
    assert_eq!(get("PID-13"), p);
    assert!(!get("SCH-11.4").is_empty());
    // The retry is the same message (same control id), so the EMR can recognise it.
    let retry = hl7_v2::parse(got[1].as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        retry.get("MSH-10").ok().flatten(),
        msg.get("MSH-10").ok().flatten()
    );
    assert_eq!(app.appointment(&id).await["status"], "cancelled");
    let start = Instant::now();
    let mut ok = 0.0;
    while ok < 1.0 && start.elapsed() < Duration::from_secs(5) {
        let m = app.metrics_text().await;
        ok = metric(
            &m,
            "clinic_gateway_emr_writebacks_total",
            &[("link", "hl7"), ("result", "ok")],
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = app.metrics_text().await;
    assert_eq!(ok, 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "clinic_gateway_emr_writebacks_total",
            &[("link", "hl7"), ("result", "retry")]
        ),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received.lock().len(),
        2,
        "written back more than once after the AA"
    );
}

#[actix_rt::test]
async fn malformed_unsupported_and_unusable_messages_are_answered_with_what_is_wrong() {
    let app = spawn_app("hl7_errors", options(None, |_| {})).await;
    let p = patient(506);
    let mut emr = Mllp::connect(&app).await;

    // Not HL7 at all.
    let ack = emr.call("HELLO WORLD\r").await;
    assert_eq!(ack.code(), "AR", "{ack:?}");
    assert!(ack.get("ERR-8").contains("MSH"), "{ack:?}");

    // A start time that is not a timestamp: rejected, pointing at SCH-11.4.
    let bad_time =
        siu(SUNRISE, "SIU^S12", "E-2", "APT-E2", &p, DAY_MS).replace(&local(DAY_MS), "tomorrow");
    let ack = emr.call(&bad_time).await;
    assert_eq!(
        (ack.code(), ack.get("MSA-2")),
        ("AR".into(), "E-2".into()),
        "{ack:?}"
    );
    assert_eq!(ack.get("ERR-2"), "SCH");
    assert_eq!(
        (ack.get("ERR-2.3"), ack.get("ERR-2.5")),
        ("11".into(), "4".into()),
        "{ack:?}"
    );
    assert_eq!(ack.get("ERR-3"), "102");

    // A message type the gateway does not take.
    let ack = emr
        .call(&format!("{}\rORC|NW|1\r", msh(SUNRISE, "ORM^O01", "E-3")))
        .await;
    assert_eq!(
        (ack.code(), ack.get("ERR-3")),
        ("AR".into(), "200".into()),
        "{ack:?}"
    );
    assert!(ack.get("ERR-8").contains("not supported"), "{ack:?}");

    // A SIU without SCH.
    let ack = emr
        .call(&format!(
            "{}\r{}\r",
            msh(SUNRISE, "SIU^S12", "E-4"),
            pid(&p)
        ))
        .await;
    assert_eq!(
        (ack.code(), ack.get("ERR-3")),
        ("AR".into(), "100".into()),
        "{ack:?}"
    );
    assert!(ack.get("ERR-8").contains("SCH"), "{ack:?}");

    // Valid, but the patient has no phone: AE naming PID-13, nothing sent.
    let no_phone = siu(SUNRISE, "SIU^S12", "E-5", "APT-E5", &p, DAY_MS)
        .replace(&format!("^PRN^CP^^^^^^^^^{p}"), "");
    let ack = emr.call(&no_phone).await;
    assert_eq!(
        (ack.code(), ack.get("ERR-3")),
        ("AE".into(), "101".into()),
        "{ack:?}"
    );
    assert_eq!(
        (ack.get("ERR-2"), ack.get("ERR-2.3")),
        ("PID".into(), "13".into())
    );
    assert!(ack.get("ERR-8").contains("phone"), "{ack:?}");

    // Enhanced mode (MSH-15/16 set): CR instead of AR.
    let enhanced = format!(
        "MSH|^~\\&|EMR|SUNRISE|GW|GW|{}||ZZZ^Z01|E-6|P|2.5.1|||AL|NE\r",
        local(0)
    );
    assert_eq!(emr.call(&enhanced).await.code(), "CR");

    // The connection is still good for a valid message.
    assert_eq!(
        emr.call(&siu(SUNRISE, "SIU^S12", "E-7", "APT-E7", &p, DAY_MS * 2))
            .await
            .code(),
        "AA"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(templates_to(&app, &p, "appointment_confirmation").len(), 1);
    let m = app.metrics_text().await;
    // CR is counted with AR.
    assert_eq!(
        metric(&m, "clinic_gateway_hl7_messages_total", &[("code", "AR")]),
        5.0,
        "{m}"
    );
}

#[actix_rt::test]
async fn an_unknown_sender_gets_ar_and_nothing_is_sent() {
    let app = spawn_app("hl7_unknown", options(None, |_| {})).await;
    let p = patient(507);
    let mut emr = Mllp::connect(&app).await;
    let other = siu(SUNRISE, "SIU^S12", "U-1", "APT-U1", &p, DAY_MS)
        .replace("|EMR|SUNRISE|", "|LIS|ELSEWHERE|");
    let ack = emr.call(&other).await;
    assert_eq!(
        (ack.code(), ack.get("MSA-2"), ack.get("ERR-3")),
        ("AR".into(), "U-1".into(), "103".into()),
        "{ack:?}"
    );
    assert!(
        ack.get("ERR-8").contains("not linked to any clinic"),
        "{ack:?}"
    );
    // The right application from another facility is not clinic A either.
    let wrong_facility = siu(SUNRISE, "SIU^S12", "U-2", "APT-U2", &p, DAY_MS)
        .replace("|EMR|SUNRISE|", "|EMR|ELSEWHERE|");
    assert_eq!(emr.call(&wrong_facility).await.code(), "AR");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app
        .sim
        .sent()
        .iter()
        .all(|r| r.to != p.trim_start_matches('+')));
    assert!(matches!(
        app.store.appointment_by_external(&tenant(), "APT-U1").await,
        Ok(None)
    ));
}

#[actix_rt::test]
async fn connections_are_limited_and_idle_slow_and_oversized_ones_are_handled() {
    let app = spawn_app(
        "hl7_limits",
        options(None, |s| {
            s.mllp.max_connections = 2;
            s.mllp.idle_timeout_secs = 2;
            s.mllp.read_timeout_secs = 1;
            s.mllp.frame_limit_bytes = 4096;
        }),
    )
    .await;
    let p = patient(508);
    let mut a = Mllp::connect(&app).await;
    let mut b = Mllp::connect(&app).await;
    // A third connection is accepted and closed at once.
    let mut c = Mllp::connect(&app).await;
    c.send_raw(siu(SUNRISE, "SIU^S12", "L-0", "APT-L0", &p, DAY_MS).as_bytes())
        .await;
    assert!(
        c.read_frame(Duration::from_secs(2)).await.is_none(),
        "served over the limit"
    );

    // An oversized frame: AR, and the connection carries on.
    let big = format!(
        "{}\rNTE|1||{}\r",
        msh(SUNRISE, "SIU^S12", "L-1"),
        "x".repeat(8192)
    );
    a.send_raw(big.as_bytes()).await;
    let ack = Ack(hl7_v2::parse(
        &a.read_frame(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no AR")),
    )
    .unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(ack.code(), "AR");
    assert!(ack.get("ERR-8").contains("4096"), "{ack:?}");
    assert_eq!(
        a.call(&siu(SUNRISE, "SIU^S12", "L-2", "APT-L2", &p, DAY_MS))
            .await
            .code(),
        "AA"
    );
    let a_last = Instant::now();

    // Slow loris: a frame that never ends is cut off after read_timeout_secs.
    b.io.write_all(b"\x0bMSH|^~\\&|EMR|SUNRISE")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    assert!(b.read_frame(Duration::from_secs(5)).await.is_none());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "slow frame kept open {:?}",
        start.elapsed()
    );

    // Idle: closed after idle_timeout_secs without a frame.
    assert!(a.read_frame(Duration::from_secs(6)).await.is_none());
    let idle = a_last.elapsed();
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(5),
        "{idle:?}"
    );

    // Slots were given back: new connections are served.
    let mut d = Mllp::connect(&app).await;
    assert_eq!(
        d.call(&siu(SUNRISE, "SIU^S12", "L-3", "APT-L3", &p, DAY_MS))
            .await
            .code(),
        "AA"
    );
    let m = app.metrics_text().await;
    for (result, n) in [
        ("refused", 1.0),
        ("read-timeout", 1.0),
        ("idle-timeout", 1.0),
    ] {
        assert_eq!(
            metric(
                &m,
                "clinic_gateway_hl7_connections_total",
                &[("result", result)]
            ),
            n,
            "{result}: {m}"
        );
    }
}

/// A throwaway CA and a leaf certificate for 127.0.0.1, made with the openssl CLI.
fn certificates(dir: &std::path::Path) -> Option<()> {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=test-ca",
            "-days",
            "2",
        ],
    ]
    .concat())?;
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat())?;
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .ok()?;
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ])
}

#[actix_rt::test]
async fn mllp_over_tls() {
    use rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    if certificates(dir.path()).is_none() {
        eprintln!("openssl CLI not available: TLS test skipped");
        return;
    }
    let (cert, key) = (dir.path().join("leaf.crt"), dir.path().join("leaf.key"));
    let app = spawn_app(
        "hl7_tls",
        options(None, move |s| {
            s.mllp.tls_cert = Some(cert.clone());
            s.mllp.tls_key = Some(key.clone());
        }),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(dir.path().join("ca.crt"))
        .unwrap_or_else(|e| panic!("{e}"))
    {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth();
    let port = app.mllp_port.unwrap_or_else(|| panic!("no MLLP"));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name =
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    let mut emr = Mllp::over(tls);
    let p = patient(509);
    assert_eq!(
        emr.call(&siu(SUNRISE, "SIU^S12", "T-1", "APT-T1", &p, DAY_MS * 2))
            .await
            .code(),
        "AA"
    );
    assert!(sent_template(
        &app,
        &p,
        "appointment_confirmation",
        Duration::from_secs(10)
    )
    .await
    .is_some());
    // Plain MLLP on the TLS port gets nothing.
    let mut plain = Mllp::connect(&app).await;
    plain
        .send_raw(siu(SUNRISE, "SIU^S12", "T-2", "APT-T2", &p, DAY_MS * 2).as_bytes())
        .await;
    assert!(plain.read_frame(Duration::from_secs(2)).await.is_none());
}

fn adt(kind: &str, control: &str, pid: &str) -> String {
    [
        msh(SUNRISE, kind, control),
        "EVN|A04".to_owned(),
        pid.to_owned(),
    ]
    .iter()
    .map(|s| format!("{s}\r"))
    .collect()
}

#[actix_rt::test]
async fn adt_a04_then_a08_keep_one_directory_record_per_patient() {
    let app = spawn_app("hl7_adt", options(None, |_| {})).await;
    let p = patient(508);
    let mut emr = Mllp::connect(&app).await;

    // A04: AA means stored, so the record is there the moment the ACK is.
    let ack = emr.call(&adt("ADT^A04^ADT_A01", "R-1", &pid(&p))).await;
    assert_eq!(ack.code(), "AA", "{ack:?}");
    let (s, created) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_A, None)
        .await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(
        (
            created["external_id"].as_str(),
            created["phone"].as_str(),
            created["name"].as_str(),
            created["language"].as_str(),
            created["birth_date"].as_str(),
            created["sex"].as_str(),
        ),
        (
            Some("MRN-77"),
            Some(p.as_str()),
            Some("Priya Sharma"),
            Some("en"),
            Some("1988-04-12"),
            Some("female")
        ),
        "{created}"
    );

    // The clinic tags the patient and records promotional consent through the API; the EMR's
    // update keeps both.
    let mut tagged = created.clone();
    for k in ["updated_ms", "consent", "last_visit_ms"] {
        if let Some(o) = tagged.as_object_mut() {
            o.remove(k);
        }
    }
    tagged["tags"] = serde_json::json!(["diabetic"]);
    tagged["consent"] = serde_json::json!({"promotional": true});
    let (s, v) = app
        .call(Method::PUT, "/v1/patients/MRN-77", KEY_A, Some(tagged))
        .await;
    assert_eq!(s, 200, "{v}");

    // A08 for the same PID-3: the name changes, nothing else the EMR does not speak for.
    let update = pid(&p).replace("Sharma^Priya", "Sharma^Priyanka");
    let ack = emr.call(&adt("ADT^A08^ADT_A01", "R-2", &update)).await;
    assert_eq!(ack.code(), "AA", "{ack:?}");
    let (_, updated) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_A, None)
        .await;
    assert_eq!(updated["name"], "Priyanka Sharma", "{updated}");
    assert_eq!(
        updated["tags"],
        serde_json::json!(["diabetic"]),
        "{updated}"
    );
    assert_eq!(updated["consent"]["promotional"]["granted"], true);
    assert_eq!(updated["consent"]["promotional"]["source"], "api");
    let (_, listed) = app.call(Method::GET, "/v1/patients", KEY_A, None).await;
    assert_eq!(listed["total"], 1, "one record: {listed}");

    // Re-sent (same MSH-10, or a new one with the same content): nothing changes.
    assert_eq!(
        emr.call(&adt("ADT^A08^ADT_A01", "R-2", &update))
            .await
            .code(),
        "AA"
    );
    assert_eq!(
        emr.call(&adt("ADT^A08^ADT_A01", "R-3", &update))
            .await
            .code(),
        "AA"
    );
    let (_, again) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_A, None)
        .await;
    assert_eq!(again, updated, "a re-sent update changed the record");

    // Another clinic cannot see it.
    let (s, v) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_B, None)
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, listed) = app.call(Method::GET, "/v1/patients", KEY_B, None).await;
    assert_eq!(listed["total"], 0, "{listed}");

    // A discharge (A03) moves the known patient's last visit to the visit's end.
    let end = local(-3_600_000);
    let a03: String = [
        msh(SUNRISE, "ADT^A03^ADT_A03", "R-4"),
        "EVN|A03".to_owned(),
        update.clone(),
        {
            // PV1-2 class, PV1-7 doctor, PV1-19 visit number, PV1-45 discharge.
            let mut pv1 = vec![String::new(); 46];
            pv1[0] = "PV1".into();
            pv1[1] = "1".into();
            pv1[2] = "O".into();
            pv1[7] = "D7^Rao^Meera".into();
            pv1[19] = "V-508".into();
            pv1[45] = end.clone();
            pv1.join("|")
        },
    ]
    .iter()
    .map(|s| format!("{s}\r"))
    .collect();
    let ack = emr.call(&a03).await;
    assert_eq!(ack.code(), "AA", "{ack:?}");
    let (_, visited) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_A, None)
        .await;
    let expected = chrono::NaiveDateTime::parse_from_str(&end, "%Y%m%d%H%M%S")
        .ok()
        .and_then(|t| {
            use chrono::TimeZone;
            chrono_tz::Asia::Kolkata.from_local_datetime(&t).single()
        })
        .map(|t| t.timestamp_millis());
    assert_eq!(visited["last_visit_ms"].as_i64(), expected, "{visited}");

    // An A08 without a usable phone: AE at PID-13, the record untouched.
    let no_phone = update.replace(&format!("^PRN^CP^^^^^^^^^{p}"), "^PRN^CP^^^^^^^^^12");
    let ack = emr.call(&adt("ADT^A08", "R-5", &no_phone)).await;
    assert_eq!(
        (ack.code(), ack.get("ERR-2"), ack.get("ERR-2.3")),
        ("AE".into(), "PID".into(), "13".into()),
        "{ack:?}"
    );
    let (_, after) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_A, None)
        .await;
    assert_eq!(after, visited);
    let m = app.metrics_text().await;
    assert_eq!(
        metric(
            &m,
            "clinic_gateway_hl7_messages_total",
            &[("type", "ADT^A08"), ("code", "AA")]
        ),
        2.0,
        "{m}"
    );
}

#[actix_rt::test]
async fn an_adt_without_a_phone_is_accepted_unstored_when_the_clinic_asks_for_aa() {
    let app = spawn_app(
        "hl7_adt_aa",
        options(None, |s| {
            if let Some(l) = s.clinics[0].emr.hl7.as_mut() {
                l.unprocessable_ack = clinic_gateway::emr::hl7::UnprocessableAck::Aa;
            }
        }),
    )
    .await;
    let p = patient(509);
    let mut emr = Mllp::connect(&app).await;
    let no_phone = pid(&p).replace(&format!("^PRN^CP^^^^^^^^^{p}"), "");
    let ack = emr.call(&adt("ADT^A04", "W-1", &no_phone)).await;
    assert_eq!(
        (
            ack.code(),
            ack.get("ERR-2"),
            ack.get("ERR-2.3"),
            ack.get("ERR-4")
        ),
        ("AA".into(), "PID".into(), "13".into(), "W".into()),
        "{ack:?}"
    );
    let (s, _) = app
        .call(Method::GET, "/v1/patients/MRN-77", KEY_A, None)
        .await;
    assert_eq!(s, 404);
}
