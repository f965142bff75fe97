//! Simulator rules seen from a webhook receiver: signatures, pricing, duplicates, retries,
//! inbound injection, template and quality events, and the `/_sim` control API.
#![cfg(feature = "sandbox")]

mod common;

use std::time::Duration;

use common::{client, receiver, Receiver, SECRET};
use whatsapp_cloud::sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use whatsapp_cloud::signature;
use whatsapp_cloud::wire::*;

const TOKEN: &str = "t";
const PN: &str = "106540352242922";
const WABA: &str = "102290129340398";
const WAIT: Duration = Duration::from_secs(10);

async fn setup(
    fail_first: usize,
    tweak: impl FnOnce(&mut SandboxConfig),
) -> (SandboxHandle, Receiver) {
    let rx = receiver(fail_first).await;
    let mut config = SandboxConfig {
        webhook_url: Some(rx.url.clone()),
        app_secret: SECRET.into(),
        status_latency: Duration::from_millis(20),
        webhook_retry_interval: Duration::from_millis(100),
        ..SandboxConfig::default()
    };
    tweak(&mut config);
    let sb = Sandbox::spawn(config).expect("sandbox");
    let st = sb.state();
    st.register_number(PN, WABA, "918045551234", 80);
    st.add_template(
        WABA,
        "appointment_reminder",
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}",
        TemplateStatus::Approved,
    );
    st.add_template(
        WABA,
        "health_camp",
        "en",
        TemplateCategory::Marketing,
        "Camp on {{1}}",
        TemplateStatus::Approved,
    );
    (sb, rx)
}

fn text(to: &str) -> OutgoingMessage {
    OutgoingMessage::new(
        to,
        Content::Text {
            text: Text {
                body: "Your report is ready".into(),
                preview_url: false,
            },
        },
    )
}

fn tpl(to: &str, name: &str, callback: &str) -> OutgoingMessage {
    let mut m = OutgoingMessage::new(
        to,
        Content::Template {
            template: Template {
                name: name.into(),
                language: Language {
                    code: "en".into(),
                    policy: None,
                },
                components: vec![Component::Body {
                    parameters: vec![Parameter::Text {
                        text: "x".into(),
                        parameter_name: None,
                    }],
                }],
            },
        },
    );
    m.biz_opaque_callback_data = Some(callback.into());
    m
}

fn of<'a>(all: &'a [Status], wamid: &str, kind: StatusKind) -> Vec<&'a Status> {
    all.iter()
        .filter(|s| s.id == wamid && s.status == kind)
        .collect()
}

#[tokio::test]
async fn statuses_carry_pricing_by_the_rules() {
    let (sb, mut rx) = setup(0, |_| {}).await;
    let st = sb.state();
    let c = client(&sb.base_url());
    let in_window = "+919876543210";
    let outside = "+919812345678";
    st.inject_inbound_text(PN, in_window, "hello");
    assert!(st.window_open(PN, in_window));

    let mut service = text(in_window);
    service.biz_opaque_callback_data = Some("msg_service".into());
    let w_service = c
        .send_message(TOKEN, PN, &service)
        .await
        .expect("service")
        .wamid()
        .map(str::to_owned)
        .unwrap_or_default();
    let w_utility_out = c
        .send_message(
            TOKEN,
            PN,
            &tpl(outside, "appointment_reminder", "msg_u_out"),
        )
        .await
        .expect("utility")
        .messages[0]
        .id
        .clone();
    let w_utility_in = c
        .send_message(
            TOKEN,
            PN,
            &tpl(in_window, "appointment_reminder", "msg_u_in"),
        )
        .await
        .expect("utility in")
        .messages[0]
        .id
        .clone();
    let w_marketing = c
        .send_message(TOKEN, PN, &tpl(in_window, "health_camp", "msg_m"))
        .await
        .expect("marketing")
        .messages[0]
        .id
        .clone();

    let all = rx
        .statuses_until(WAIT, |s| {
            s.iter().filter(|x| x.status == StatusKind::Read).count() >= 4
        })
        .await;
    let expect = |wamid: &str,
                  kind: PricingType,
                  cat: PricingCategory,
                  billable: bool,
                  callback: &str,
                  recipient: &str| {
        for step in [StatusKind::Sent, StatusKind::Delivered] {
            let s = of(&all, wamid, step);
            assert_eq!(s.len(), 1, "{wamid} {step:?} in {all:#?}");
            let p = s[0]
                .pricing
                .as_ref()
                .expect("pricing on sent and delivered");
            assert_eq!(
                (p.kind, p.category, p.billable, p.pricing_model.as_deref()),
                (Some(kind), Some(cat), Some(billable), Some("PMP"))
            );
            assert!(s[0].conversation.is_some());
            assert_eq!(s[0].biz_opaque_callback_data.as_deref(), Some(callback));
            assert_eq!(s[0].recipient_id, recipient);
            assert!(s[0].unix_seconds().is_some());
        }
        let read = of(&all, wamid, StatusKind::Read);
        assert_eq!(read.len(), 1);
        assert!(read[0].pricing.is_none());
    };
    expect(
        &w_service,
        PricingType::FreeCustomerService,
        PricingCategory::Service,
        false,
        "msg_service",
        "919876543210",
    );
    expect(
        &w_utility_out,
        PricingType::Regular,
        PricingCategory::Utility,
        true,
        "msg_u_out",
        "919812345678",
    );
    expect(
        &w_utility_in,
        PricingType::FreeCustomerService,
        PricingCategory::Utility,
        false,
        "msg_u_in",
        "919876543210",
    );
    expect(
        &w_marketing,
        PricingType::Regular,
        PricingCategory::Marketing,
        true,
        "msg_m",
        "919876543210",
    );
    let sent = st.sent();
    assert_eq!(sent[1].pricing.kind, Some(PricingType::Regular));
}

#[tokio::test]
async fn inbound_injection_sends_the_webhook_and_opens_the_window() {
    let (sb, mut rx) = setup(0, |_| {}).await;
    let st = sb.state();
    let c = client(&sb.base_url());
    let patient = "+919876543210";
    let before = c.send_message(TOKEN, PN, &text(patient)).await;
    assert_eq!(before.err().and_then(|e| e.code()), Some(131047));

    let wamid = st.inject_inbound_text(PN, patient, "मुझे रद्द करना है @ 10:30");
    let d = rx.next_ok(WAIT).await.expect("inbound webhook");
    signature::verify(SECRET.as_bytes(), &d.body, d.signature.as_deref()).expect("signed");
    let env = d.envelope();
    assert_eq!(env.object, "whatsapp_business_account");
    assert_eq!(env.entry[0].id, WABA);
    let Some(Change::Messages(v)) = env.changes().next() else {
        panic!("messages change")
    };
    assert_eq!(v.metadata.phone_number_id, PN);
    assert_eq!(v.metadata.display_phone_number, "918045551234");
    assert_eq!(v.contacts[0].wa_id, "919876543210");
    assert!(v.contacts[0]
        .profile
        .as_ref()
        .is_some_and(|p| !p.name.is_empty()));
    let m = &v.messages[0];
    assert_eq!(
        (m.id.as_str(), m.kind, m.from.as_str()),
        (wamid.as_str(), InboundKind::Text, "919876543210")
    );
    assert_eq!(
        m.text.as_ref().map(|t| t.body.as_str()),
        Some("मुझे रद्द करना है @ 10:30")
    );

    c.send_message(TOKEN, PN, &text(patient))
        .await
        .expect("window open now");

    let tap = st.inject_button_tap(PN, patient, "wamid.TEMPLATE", "Cancel", "CANCEL:apt_1");
    let d = loop {
        let d = rx.next_ok(WAIT).await.expect("button webhook");
        if d.statuses().is_empty() {
            break d;
        }
    };
    let Some(Change::Messages(v)) = d.envelope().changes().next().cloned() else {
        panic!("messages")
    };
    let m = &v.messages[0];
    assert_eq!((m.id.as_str(), m.kind), (tap.as_str(), InboundKind::Button));
    assert_eq!(
        m.context.as_ref().and_then(|c| c.id.as_deref()),
        Some("wamid.TEMPLATE")
    );
    assert_eq!(
        m.button
            .as_ref()
            .map(|b| (b.text.as_str(), b.payload.as_str())),
        Some(("Cancel", "CANCEL:apt_1"))
    );
}

#[tokio::test]
async fn duplicates_are_delivered_when_configured() {
    let (sb, mut rx) = setup(0, |c| {
        c.duplicate_rate = 1.0;
        c.read_receipts = false;
    })
    .await;
    let c = client(&sb.base_url());
    let w = c
        .send_message(
            TOKEN,
            PN,
            &tpl("+919800000001", "appointment_reminder", "m1"),
        )
        .await
        .expect("send")
        .messages[0]
        .id
        .clone();
    let all = rx.statuses_until(WAIT, |s| s.len() >= 4).await;
    assert_eq!(of(&all, &w, StatusKind::Sent).len(), 2);
    assert_eq!(of(&all, &w, StatusKind::Delivered).len(), 2);
}

#[tokio::test]
async fn failed_posts_are_retried_until_the_receiver_answers_200() {
    let (sb, mut rx) = setup(2, |c| c.read_receipts = false).await;
    let c = client(&sb.base_url());
    let w = c
        .send_message(
            TOKEN,
            PN,
            &tpl("+919800000002", "appointment_reminder", "m2"),
        )
        .await
        .expect("send")
        .messages[0]
        .id
        .clone();
    let all = rx.statuses_until(WAIT, |s| s.len() >= 2).await;
    assert_eq!(of(&all, &w, StatusKind::Sent).len(), 1);
    assert_eq!(of(&all, &w, StatusKind::Delivered).len(), 1);
    assert!(
        rx.posts.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "two refused POSTs were retried"
    );
    // The sandbox counts a POST once its answer is read, a moment after the receiver saw it.
    let mut counts = sb.state().webhook_post_counts();
    for _ in 0..100 {
        if counts.0 >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        counts = sb.state().webhook_post_counts();
    }
    let (ok, failed) = counts;
    assert!(ok >= 2 && failed == 2, "{ok} {failed}");
}

#[tokio::test]
async fn batches_respect_the_maximum_and_reorder_keeps_every_item() {
    let (sb, mut rx) = setup(0, |c| {
        c.webhook_batch_max = 3;
        c.reorder = true;
        c.read_receipts = false;
        c.status_latency = Duration::from_millis(200);
    })
    .await;
    let st = sb.state();
    st.register_number("pn_big", WABA, "918000000009", 1000);
    let c = client(&sb.base_url());
    for i in 0..10 {
        c.send_message(
            TOKEN,
            "pn_big",
            &tpl(&format!("+91980000{i:04}"), "appointment_reminder", "m"),
        )
        .await
        .expect("send");
    }
    let mut total = 0;
    while total < 20 {
        let d = rx.next_ok(WAIT).await.expect("delivery");
        let n = d.statuses().len();
        assert!(n <= 3, "batch of {n}");
        total += n;
    }
    assert_eq!(total, 20);
}

#[tokio::test]
async fn not_on_whatsapp_gets_a_failed_status_131026() {
    let (sb, mut rx) = setup(0, |_| {}).await;
    let st = sb.state();
    st.mark_not_on_whatsapp("+919000000000");
    let c = client(&sb.base_url());
    let w = c
        .send_message(
            TOKEN,
            PN,
            &tpl("+919000000000", "appointment_reminder", "msg_dead"),
        )
        .await
        .expect("accepted first")
        .messages[0]
        .id
        .clone();
    let all = rx.statuses_until(WAIT, |s| !s.is_empty()).await;
    let failed = of(&all, &w, StatusKind::Failed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].errors[0].code, 131026);
    assert_eq!(
        failed[0].errors[0].title,
        whatsapp_cloud::errors::title(131026)
    );
    assert!(!failed[0].errors[0].text().is_empty());
    assert_eq!(
        failed[0].biz_opaque_callback_data.as_deref(),
        Some("msg_dead")
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.rx.try_recv().is_err(), "no sent/delivered after failed");
}

#[tokio::test]
async fn template_and_quality_events_are_emitted() {
    let (sb, mut rx) = setup(0, |_| {}).await;
    let st = sb.state();
    assert!(st.set_template_status(WABA, "appointment_reminder", "en", TemplateStatus::Paused));
    let env = rx.next_ok(WAIT).await.expect("status update").envelope();
    assert_eq!(env.entry[0].id, WABA);
    let Some(Change::MessageTemplateStatusUpdate(u)) = env.changes().next() else {
        panic!("{env:?}")
    };
    assert_eq!(
        (
            u.event,
            u.message_template_name.as_str(),
            u.message_template_language.as_str()
        ),
        (TemplateStatus::Paused, "appointment_reminder", "en")
    );
    assert_eq!(u.message_template_category, Some(TemplateCategory::Utility));

    assert!(st.set_template_category(
        WABA,
        "appointment_reminder",
        "en",
        TemplateCategory::Marketing
    ));
    let env = rx.next_ok(WAIT).await.expect("category update").envelope();
    let Some(Change::TemplateCategoryUpdate(u)) = env.changes().next() else {
        panic!("{env:?}")
    };
    assert_eq!(
        (u.previous_category, u.new_category),
        (
            Some(TemplateCategory::Utility),
            Some(TemplateCategory::Marketing)
        )
    );
    assert!(!u.is_impending());
    assert!(!st.set_template_status(WABA, "nope", "en", TemplateStatus::Approved));

    st.quality_update(PN, "THROUGHPUT_UPGRADE", Some(1000), Some("TIER_10K"));
    let env = rx.next_ok(WAIT).await.expect("quality").envelope();
    let Some(Change::PhoneNumberQualityUpdate(q)) = env.changes().next() else {
        panic!("{env:?}")
    };
    assert_eq!(
        (
            q.event.as_str(),
            q.max_daily_conversations_per_business.as_deref()
        ),
        ("THROUGHPUT_UPGRADE", Some("TIER_10K"))
    );
    let info = client(&sb.base_url())
        .phone_number_info(TOKEN, PN)
        .await
        .expect("info");
    assert_eq!(info.throughput.map(|t| t.level).as_deref(), Some("HIGH"));
}

#[tokio::test]
async fn control_api_over_http() {
    let (sb, mut rx) = setup(0, |c| c.read_receipts = false).await;
    let base = sb.base_url();
    let http = reqwest::Client::new();
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).json(&body).send();
    assert!(post("/_sim/numbers", serde_json::json!({"phone_number_id":"pn9","waba_id":"w9","display_phone_number":"918000000099","tier_mps":20})).await.expect("numbers").status().is_success());
    assert!(post("/_sim/templates", serde_json::json!({"waba_id":"w9","name":"reminder","language":"hi","category":"UTILITY","body_text":"नमस्ते {{1}}","status":"APPROVED"})).await.expect("templates").status().is_success());
    let r: serde_json::Value = post(
        "/_sim/inbound",
        serde_json::json!({"phone_number_id":"pn9","from":"+919876500000","text":"hi"}),
    )
    .await
    .expect("inbound")
    .json()
    .await
    .expect("json");
    assert!(r["wamid"].as_str().is_some_and(|w| w.starts_with("wamid.")));
    let r: serde_json::Value = post("/_sim/inbound", serde_json::json!({"phone_number_id":"pn9","from":"+919876500000","button":{"text":"Yes","payload":"OK"},"context_wamid":"wamid.X"})).await.expect("tap").json().await.expect("json");
    assert!(r["wamid"].is_string());
    assert_eq!(
        post(
            "/_sim/templates/status",
            serde_json::json!({"waba_id":"w9","name":"missing","language":"hi","status":"PAUSED"})
        )
        .await
        .expect("status")
        .status()
        .as_u16(),
        404
    );
    assert_eq!(
        post(
            "/_sim/inbound",
            serde_json::json!({"phone_number_id":"pn9"})
        )
        .await
        .expect("bad")
        .status()
        .as_u16(),
        400
    );

    let c = client(&base);
    c.send_message(TOKEN, "pn9", &text("+919876500000"))
        .await
        .expect("window opened over HTTP");
    let r: Vec<serde_json::Value> = http
        .get(format!(
            "{base}/_sim/sent?phone_number_id=pn9&to=%2B919876500000"
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["type"], "text");
    assert_eq!(r[0]["to"], "919876500000");
    assert!(r[0]["at_ms"].as_u64().is_some());
    assert_eq!(r[0]["message"]["text"]["body"], "Your report is ready");

    let faults = serde_json::json!({"error_rate":1.0,"error_code":131000});
    assert!(http
        .put(format!("{base}/_sim/faults"))
        .json(&faults)
        .send()
        .await
        .expect("faults")
        .status()
        .is_success());
    let got: serde_json::Value = http
        .get(format!("{base}/_sim/faults"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["error_code"], 131000);
    assert_eq!(
        c.send_message(TOKEN, "pn9", &text("+919876500000"))
            .await
            .err()
            .and_then(|e| e.code()),
        Some(131000)
    );
    let rej: Vec<serde_json::Value> = http
        .get(format!("{base}/_sim/rejected"))
        .send()
        .await
        .expect("rejected")
        .json()
        .await
        .expect("json");
    assert_eq!(
        rej.last().map(|r| r["code"].clone()),
        Some(serde_json::json!(131000))
    );

    assert!(post(
        "/_sim/not-on-whatsapp",
        serde_json::json!({"number":"+919111111111"})
    )
    .await
    .expect("now")
    .status()
    .is_success());
    assert!(post(
        "/_sim/quality",
        serde_json::json!({"phone_number_id":"pn9","event":"DOWNGRADE","tier_mps":20})
    )
    .await
    .expect("q")
    .status()
    .is_success());
    assert!(post("/_sim/templates/category", serde_json::json!({"waba_id":"w9","name":"reminder","language":"hi","new_category":"MARKETING"})).await.expect("cat").status().is_success());
    assert!(post("/_sim/reset", serde_json::json!({}))
        .await
        .expect("reset")
        .status()
        .is_success());
    assert!(sb.state().sent().is_empty() && sb.state().rejected().is_empty());
    // Inbound, statuses and events were all delivered and signed.
    let mut fields = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), rx.rx.recv()).await {
        signature::verify(SECRET.as_bytes(), &d.body, d.signature.as_deref()).expect("signed");
        fields.extend(d.envelope().changes().map(|c| match c {
            Change::Messages(_) => "messages",
            Change::PhoneNumberQualityUpdate(_) => "quality",
            Change::TemplateCategoryUpdate(_) => "category",
            _ => "other",
        }));
    }
    assert!(
        fields.contains(&"quality") && fields.contains(&"category") && fields.contains(&"messages"),
        "{fields:?}"
    );
}

#[tokio::test]
async fn no_webhook_url_means_no_statuses_scheduled() {
    let sb = Sandbox::spawn(SandboxConfig::default()).expect("start");
    let st = sb.state();
    st.add_template(
        "waba_pnx",
        "appointment_reminder",
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}",
        TemplateStatus::Approved,
    );
    client(&sb.base_url())
        .send_message(
            TOKEN,
            "pnx",
            &tpl("+919800000003", "appointment_reminder", "m"),
        )
        .await
        .expect("send");
    assert_eq!(st.webhook_backlog(), 0);
    sb.stop();
}
