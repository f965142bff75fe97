//! Graph client ↔ simulator round trips over real HTTP: every message type, media, templates,
//! number info, and every error class the simulator produces.
#![cfg(feature = "sandbox")]

mod common;

use std::time::{Duration, Instant};

use common::{client, client_with_timeout};
use whatsapp_cloud::sandbox::{Faults, Sandbox, SandboxConfig, SandboxHandle};
use whatsapp_cloud::wire::*;
use whatsapp_cloud::{classify, ClientError, ErrorClass};

const TOKEN: &str = "test-token";
const PN: &str = "106540352242922";
const WABA: &str = "102290129340398";
const PATIENT: &str = "+919876543210";

fn sandbox() -> SandboxHandle {
    let sb = Sandbox::spawn(SandboxConfig::default()).expect("sandbox starts");
    let st = sb.state();
    st.register_number(PN, WABA, "918045551234", 80);
    st.add_template(
        WABA,
        "appointment_reminder",
        "en",
        TemplateCategory::Utility,
        "Hi {{1}}, your visit is at {{2}}.",
        TemplateStatus::Approved,
    );
    sb
}

fn text(to: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage::new(
        to,
        Content::Text {
            text: Text {
                body: body.into(),
                preview_url: false,
            },
        },
    )
}

fn body_params(values: &[&str]) -> Component {
    Component::Body {
        parameters: values
            .iter()
            .map(|v| Parameter::Text {
                text: (*v).into(),
                parameter_name: None,
            })
            .collect(),
    }
}

fn template(to: &str, name: &str, components: Vec<Component>) -> OutgoingMessage {
    OutgoingMessage::new(
        to,
        Content::Template {
            template: Template {
                name: name.into(),
                language: Language {
                    code: "en".into(),
                    policy: None,
                },
                components,
            },
        },
    )
}

fn reminder(to: &str) -> OutgoingMessage {
    template(
        to,
        "appointment_reminder",
        vec![body_params(&["Asha", "10:30"])],
    )
}

fn api_code(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, i64, String) {
    match r {
        Err(ClientError::Api { status, error }) => (status, error.code, error.text().to_owned()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_message_type_round_trips() {
    let sb = sandbox();
    let st = sb.state();
    let c = client(&sb.base_url());
    st.add_template(
        WABA,
        "lab_report_ready",
        "en",
        TemplateCategory::Utility,
        "Report for {{1}} is ready",
        TemplateStatus::Approved,
    );
    st.add_template(
        WABA,
        "named_greeting",
        "en",
        TemplateCategory::Marketing,
        "Hello {{patient_name}} from {{clinic}}",
        TemplateStatus::Approved,
    );
    st.add_template(
        WABA,
        "clinic_location",
        "en",
        TemplateCategory::Utility,
        "We are here",
        TemplateStatus::Approved,
    );

    // Upload first: documents are sent by id.
    let pdf = b"%PDF-1.4 lab report".to_vec();
    let up = c
        .upload_media(TOKEN, PN, pdf.clone(), "application/pdf", "report.pdf")
        .await
        .expect("upload");
    assert!(!up.id.is_empty());
    assert_eq!(
        st.media(&up.id).map(|(m, b)| (m, b.to_vec())),
        Some(("application/pdf".to_owned(), pdf))
    );
    let img = c
        .upload_media(
            TOKEN,
            PN,
            vec![0x89, b'P', b'N', b'G'],
            "image/png",
            "x.png",
        )
        .await
        .expect("image upload");

    // Template: document header by id, positional body, quick-reply and URL buttons.
    let mut t = template(
        PATIENT,
        "lab_report_ready",
        vec![
            Component::Header {
                parameters: vec![Parameter::Document {
                    document: Media {
                        id: Some(up.id.clone()),
                        filename: Some("report.pdf".into()),
                        ..Media::default()
                    },
                }],
            },
            body_params(&["Asha"]),
            Component::Button {
                sub_type: ButtonSubType::QuickReply,
                index: "0".into(),
                parameters: vec![ButtonParameter::Payload {
                    payload: "ACK:msg_1".into(),
                }],
            },
            Component::Button {
                sub_type: ButtonSubType::Url,
                index: "1".into(),
                parameters: vec![ButtonParameter::Text {
                    text: "r/abc".into(),
                }],
            },
        ],
    );
    t.biz_opaque_callback_data = Some("msg_01TEMPLATE".into());
    let r = c.send_message(TOKEN, PN, &t).await.expect("template send");
    assert_eq!(r.contacts[0].input, PATIENT);
    assert_eq!(r.contacts[0].wa_id, "919876543210");
    assert!(r.wamid().is_some_and(|w| w.starts_with("wamid.")));
    assert_eq!(r.messages[0].message_status.as_deref(), Some("accepted"));

    // Image header and named body parameters.
    let named = template(
        PATIENT,
        "named_greeting",
        vec![
            Component::Header {
                parameters: vec![Parameter::Image {
                    image: Media {
                        link: Some("https://example.org/logo.png".into()),
                        ..Media::default()
                    },
                }],
            },
            Component::Body {
                parameters: vec![
                    Parameter::Text {
                        text: "Asha".into(),
                        parameter_name: Some("patient_name".into()),
                    },
                    Parameter::Text {
                        text: "City Clinic".into(),
                        parameter_name: Some("clinic".into()),
                    },
                ],
            },
        ],
    );
    c.send_message(TOKEN, PN, &named)
        .await
        .expect("named template");

    // Location header.
    let loc = template(
        PATIENT,
        "clinic_location",
        vec![Component::Header {
            parameters: vec![Parameter::Location {
                location: Location {
                    latitude: 12.97,
                    longitude: 77.59,
                    name: Some("City Clinic".into()),
                    address: Some("MG Road".into()),
                },
            }],
        }],
    );
    c.send_message(TOKEN, PN, &loc)
        .await
        .expect("location header template");

    // Free-form messages need the window: the patient writes first.
    let inbound = st.inject_inbound_text(PN, PATIENT, "hello");
    c.mark_read(TOKEN, PN, &inbound)
        .await
        .expect("mark read")
        .success
        .then_some(())
        .expect("success true");

    c.send_message(TOKEN, PN, &text(PATIENT, "नमस्ते @ clinic"))
        .await
        .expect("text");
    let doc_link = OutgoingMessage::new(
        PATIENT,
        Content::Document {
            document: Media {
                link: Some("https://example.org/r.pdf".into()),
                filename: Some("r.pdf".into()),
                caption: Some("Your report".into()),
                ..Media::default()
            },
        },
    );
    c.send_message(TOKEN, PN, &doc_link)
        .await
        .expect("document by link");
    let doc_id = OutgoingMessage::new(
        PATIENT,
        Content::Document {
            document: Media {
                id: Some(up.id.clone()),
                filename: Some("r.pdf".into()),
                ..Media::default()
            },
        },
    );
    c.send_message(TOKEN, PN, &doc_id)
        .await
        .expect("document by id");
    let image = OutgoingMessage::new(
        PATIENT,
        Content::Image {
            image: Media {
                id: Some(img.id.clone()),
                ..Media::default()
            },
        },
    );
    c.send_message(TOKEN, PN, &image).await.expect("image");
    let location = OutgoingMessage::new(
        PATIENT,
        Content::Location {
            location: Location {
                latitude: 28.6,
                longitude: 77.2,
                name: None,
                address: None,
            },
        },
    );
    c.send_message(TOKEN, PN, &location)
        .await
        .expect("location");
    let buttons = OutgoingMessage::new(
        PATIENT,
        Content::Interactive {
            interactive: Interactive {
                kind: InteractiveKind::Button {
                    action: ButtonAction {
                        buttons: vec![
                            ReplyButton::new("yes", "Confirm"),
                            ReplyButton::new("no", "Cancel"),
                        ],
                    },
                },
                header: None,
                body: TextObject {
                    text: "Confirm your visit?".into(),
                },
                footer: None,
            },
        },
    );
    c.send_message(TOKEN, PN, &buttons)
        .await
        .expect("interactive buttons");
    let list = OutgoingMessage::new(
        PATIENT,
        Content::Interactive {
            interactive: Interactive {
                kind: InteractiveKind::List {
                    action: ListAction {
                        button: "Slots".into(),
                        sections: vec![ListSection {
                            title: Some("Monday".into()),
                            rows: vec![
                                ListRow {
                                    id: "s1".into(),
                                    title: "10:00".into(),
                                    description: None,
                                },
                                ListRow {
                                    id: "s2".into(),
                                    title: "11:00".into(),
                                    description: Some("Dr Rao".into()),
                                },
                            ],
                        }],
                    },
                },
                header: None,
                body: TextObject {
                    text: "Pick a slot".into(),
                },
                footer: None,
            },
        },
    );
    c.send_message(TOKEN, PN, &list)
        .await
        .expect("interactive list");

    let sent = st.sent_to(PN);
    let kinds: Vec<&str> = sent.iter().map(|r| r.message.content.kind()).collect();
    assert_eq!(
        kinds,
        [
            "template",
            "template",
            "template",
            "text",
            "document",
            "document",
            "image",
            "location",
            "interactive",
            "interactive"
        ]
    );
    assert_eq!(sent[0].message, t, "the record keeps the request as sent");
    assert_eq!(sent[0].category, Some(TemplateCategory::Utility));
    assert!(sent.iter().all(|r| r.to == "919876543210"));
    assert!(st.rejected().is_empty(), "{:?}", st.rejected());
}

#[tokio::test]
async fn templates_create_list_and_number_info() {
    let sb = sandbox();
    let st = sb.state();
    let c = client(&sb.base_url());
    for i in 0..130 {
        let req = CreateTemplateRequest {
            name: format!("tpl_{i:03}"),
            category: TemplateCategory::Utility,
            language: "hi".into(),
            parameter_format: ParameterFormat::Positional,
            components: vec![TemplateComponentDef {
                kind: "BODY".into(),
                format: None,
                text: Some("नमस्ते {{1}}".into()),
                buttons: None,
                example: None,
            }],
        };
        let r = c.create_template(TOKEN, WABA, &req).await.expect("create");
        assert_eq!(r.status, TemplateStatus::Pending);
        assert_eq!(r.category, TemplateCategory::Utility);
    }
    let dup = CreateTemplateRequest {
        name: "tpl_000".into(),
        category: TemplateCategory::Utility,
        language: "hi".into(),
        parameter_format: ParameterFormat::Positional,
        components: vec![],
    };
    let (status, code, text) = api_code(c.create_template(TOKEN, WABA, &dup).await);
    assert_eq!((status, code), (400, 100));
    assert!(text.contains("already exists"), "{text}");

    // 130 created + the seeded reminder, across two pages of 100.
    let all = c.list_templates(TOKEN, WABA).await.expect("list");
    assert_eq!(all.len(), 131);
    let t = all.iter().find(|t| t.name == "tpl_007").expect("listed");
    assert_eq!(
        (t.status, t.body_parameter_count()),
        (TemplateStatus::Pending, 1)
    );

    // A created template is sendable once approved.
    let (_, code, _) = api_code(
        c.send_message(TOKEN, PN, &template(PATIENT, "tpl_007", vec![]))
            .await,
    );
    assert_eq!(code, 132001);

    st.register_number("pn_high", "w2", "919000000001", 1000);
    st.register_number("pn_shared", "w2", "919000000002", 20);
    for (pn, level) in [
        (PN, "STANDARD"),
        ("pn_high", "HIGH"),
        ("pn_shared", "NOT_APPLICABLE"),
    ] {
        let info = c.phone_number_info(TOKEN, pn).await.expect("info");
        assert_eq!(
            info.throughput.map(|t| t.level).as_deref(),
            Some(level),
            "{pn}"
        );
        assert_eq!(info.messaging_limit_tier.as_deref(), Some("TIER_1K"));
        assert_eq!(info.id, pn);
    }
}

#[tokio::test]
async fn validation_errors_are_code_100_naming_the_field() {
    let sb = sandbox();
    let c = client(&sb.base_url());
    let (status, code, text) = api_code(c.send_message(TOKEN, PN, &text("12ab", "hi")).await);
    assert_eq!((status, code), (400, 100));
    assert!(text.starts_with("to"), "{text}");
    assert_eq!(classify(code), ErrorClass::Permanent);

    let buttons = OutgoingMessage::new(
        PATIENT,
        Content::Interactive {
            interactive: Interactive {
                kind: InteractiveKind::Button {
                    action: ButtonAction {
                        buttons: vec![ReplyButton::new("a", "A title far too long for Meta")],
                    },
                },
                header: None,
                body: TextObject { text: "x".into() },
                footer: None,
            },
        },
    );
    let (_, code, text) = api_code(c.send_message(TOKEN, PN, &buttons).await);
    assert_eq!(code, 131009);
    assert!(
        text.contains("interactive.action.buttons[0].reply.title"),
        "{text}"
    );

    // Unknown type and malformed JSON, sent raw.
    let http = reqwest::Client::new();
    let url = format!("{}/v25.0/{PN}/messages", sb.base_url());
    for body in [
        r#"{"messaging_product":"whatsapp","to":"919876543210","type":"sticker","sticker":{}}"#,
        "{not json",
    ] {
        let resp = http
            .post(&url)
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 400);
        let env: ErrorEnvelope = resp.json().await.expect("envelope");
        assert_eq!(env.error.code, 100);
        assert!(env.error.message.starts_with("(#100)"));
    }
    let resp = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body(r#"{"messaging_product":"whatsapp","to":"919876543210","type":"sticker"}"#)
        .send()
        .await
        .expect("post");
    let env: ErrorEnvelope = resp.json().await.expect("envelope");
    assert!(env.error.text().contains("sticker"), "{}", env.error.text());

    // No bearer token: 190 with HTTP 401.
    let resp = http.post(&url).body("{}").send().await.expect("post");
    assert_eq!(resp.status().as_u16(), 401);
    let env: ErrorEnvelope = resp.json().await.expect("envelope");
    assert_eq!(env.error.code, 190);
    assert_eq!(classify(190), ErrorClass::AuthExpired);
    let rejected: Vec<i64> = sb.state().rejected().iter().map(|r| r.code).collect();
    assert_eq!(rejected, [100, 131009, 100, 100, 100, 190]);
}

#[tokio::test]
async fn window_and_template_errors() {
    let sb = sandbox();
    let st = sb.state();
    let c = client(&sb.base_url());
    let (_, code, _) = api_code(c.send_message(TOKEN, PN, &text(PATIENT, "hi")).await);
    assert_eq!(code, 131047);
    assert_eq!(classify(code), ErrorClass::ResendAsTemplate);

    let (_, code, _) = api_code(
        c.send_message(TOKEN, PN, &template(PATIENT, "no_such_template", vec![]))
            .await,
    );
    assert_eq!(code, 132001);
    let mut wrong_lang = reminder(PATIENT);
    if let Content::Template { template } = &mut wrong_lang.content {
        template.language.code = "hi".into();
    }
    let (_, code, _) = api_code(c.send_message(TOKEN, PN, &wrong_lang).await);
    assert_eq!(code, 132001);
    let (_, code, text) = api_code(
        c.send_message(
            TOKEN,
            PN,
            &template(
                PATIENT,
                "appointment_reminder",
                vec![body_params(&["only one"])],
            ),
        )
        .await,
    );
    assert_eq!(code, 132000);
    assert!(text.contains("expected 2"), "{text}");
    assert!(st.set_template_status(WABA, "appointment_reminder", "en", TemplateStatus::Paused));
    let (_, code, _) = api_code(c.send_message(TOKEN, PN, &reminder(PATIENT)).await);
    assert_eq!(code, 132015);
    st.set_template_status(WABA, "appointment_reminder", "en", TemplateStatus::Disabled);
    let (_, code, _) = api_code(c.send_message(TOKEN, PN, &reminder(PATIENT)).await);
    assert_eq!(code, 132016);
    st.set_template_status(WABA, "appointment_reminder", "en", TemplateStatus::Pending);
    let (_, code, _) = api_code(c.send_message(TOKEN, PN, &reminder(PATIENT)).await);
    assert_eq!(code, 132001);
    for code in [132000, 132001, 132015, 132016] {
        assert_eq!(classify(code), ErrorClass::TemplateProblem);
    }
    st.set_template_status(WABA, "appointment_reminder", "en", TemplateStatus::Approved);
    c.send_message(TOKEN, PN, &reminder(PATIENT))
        .await
        .expect("approved again");

    // Media by an id that was never uploaded; an oversized image upload.
    st.inject_inbound_text(PN, PATIENT, "hi");
    let doc = OutgoingMessage::new(
        PATIENT,
        Content::Document {
            document: Media {
                id: Some("404".into()),
                ..Media::default()
            },
        },
    );
    let (_, code, text) = api_code(c.send_message(TOKEN, PN, &doc).await);
    assert_eq!(code, 131053);
    assert!(text.contains("document.id"), "{text}");
    let (_, code, _) = api_code(
        c.upload_media(
            TOKEN,
            PN,
            vec![0u8; 6 * 1024 * 1024],
            "image/jpeg",
            "big.jpg",
        )
        .await,
    );
    assert_eq!(code, 131053);
    assert_eq!(st.sent().len(), 1);
}

#[tokio::test]
async fn throughput_tier_is_enforced_per_rolling_second() {
    let sb = sandbox();
    let st = sb.state();
    st.register_number("pn_small", WABA, "918000000000", 10);
    let c = client(&sb.base_url());
    let start = Instant::now();
    let sends = (0..25).map(|i| {
        let c = c.clone();
        async move {
            c.send_message(TOKEN, "pn_small", &reminder(&format!("+9198000{i:05}")))
                .await
        }
    });
    let results = futures_join(sends).await;
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "burst must fit in one second to be meaningful"
    );
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 10, "exactly the tier succeeds within one second");
    for r in results.into_iter().filter(|r| r.is_err()) {
        let (status, code, _) = api_code(r);
        assert_eq!((status, code), (429, 130429));
        assert!(matches!(classify(code), ErrorClass::ThrottleNumber { .. }));
    }
    // Rejections do not count: after the window slides, the tier is available again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..10 {
        c.send_message(TOKEN, "pn_small", &reminder(&format!("+9197000{i:05}")))
            .await
            .expect("next second");
    }
    assert_eq!(st.sent_to("pn_small").len(), 20);
}

async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn pair_rate_allows_45_back_to_back_then_131056() {
    let sb = sandbox();
    sb.state()
        .register_number("pn_fast", WABA, "918000000001", 1000);
    let c = client(&sb.base_url());
    for i in 0..45 {
        c.send_message(TOKEN, "pn_fast", &reminder(PATIENT))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    let (status, code, _) = api_code(c.send_message(TOKEN, "pn_fast", &reminder(PATIENT)).await);
    assert_eq!((status, code), (429, 131056));
    assert_eq!(classify(code), ErrorClass::ThrottleRecipient);
    // Other recipients are unaffected.
    c.send_message(TOKEN, "pn_fast", &reminder("+919811111111"))
        .await
        .expect("other recipient");
}

#[tokio::test]
async fn unlimited_mode_skips_rate_limits() {
    let sb = Sandbox::spawn(SandboxConfig {
        unlimited: true,
        default_tier_mps: 1,
        ..SandboxConfig::default()
    })
    .expect("start");
    let st = sb.state();
    st.add_template(
        "waba_pn_auto",
        "appointment_reminder",
        "en",
        TemplateCategory::Utility,
        "Hi {{1}} {{2}}",
        TemplateStatus::Approved,
    );
    let c = client(&sb.base_url());
    for _ in 0..60 {
        c.send_message(TOKEN, "pn_auto", &reminder(PATIENT))
            .await
            .expect("no limits");
    }
    assert_eq!(st.sent_to("pn_auto").len(), 60);
}

#[tokio::test]
async fn unknown_numbers_are_refused_without_auto_registration() {
    let sb = Sandbox::spawn(SandboxConfig {
        auto_register_numbers: false,
        ..SandboxConfig::default()
    })
    .expect("start");
    let c = client(&sb.base_url());
    let (_, code, _) = api_code(c.send_message(TOKEN, "nobody", &reminder(PATIENT)).await);
    assert_eq!(code, 100);
    let (_, code, _) = api_code(c.phone_number_info(TOKEN, "nobody").await);
    assert_eq!(code, 100);
}

#[tokio::test]
async fn injected_error_codes_use_the_right_envelope_and_status() {
    let sb = sandbox();
    let st = sb.state();
    let c = client(&sb.base_url());
    for (code, http) in [
        (131000, 500),
        (130429, 429),
        (190, 401),
        (131049, 400),
        (80007, 429),
        (133004, 500),
    ] {
        st.set_faults(Faults {
            error_rate: 1.0,
            error_code: code,
            ..Faults::default()
        });
        let (status, got, _) = api_code(c.send_message(TOKEN, PN, &reminder(PATIENT)).await);
        assert_eq!((status, got), (http, code));
    }
    st.set_faults(Faults {
        error_rate: 1.0,
        error_code: 131000,
        ..Faults::default()
    });
    assert!(matches!(classify(131000), ErrorClass::Retry { .. }));
    // Faults touch only sends.
    c.phone_number_info(TOKEN, PN)
        .await
        .expect("info unaffected");
    st.set_faults(Faults::default());
    c.send_message(TOKEN, PN, &reminder(PATIENT))
        .await
        .expect("faults cleared");
    assert_eq!(st.sent().len(), 1);
}

#[tokio::test]
async fn bare_5xx_is_an_http_error_and_nothing_is_sent() {
    let sb = sandbox();
    let st = sb.state();
    st.set_faults(Faults {
        http_5xx_rate: 1.0,
        ..Faults::default()
    });
    let r = client(&sb.base_url())
        .send_message(TOKEN, PN, &reminder(PATIENT))
        .await;
    assert!(
        matches!(r, Err(ClientError::Http { status: 503, .. })),
        "{r:?}"
    );
    assert!(st.sent().is_empty());
}

#[tokio::test]
async fn timeouts_with_and_without_meta_acting() {
    let sb = sandbox();
    let st = sb.state();
    let c = client_with_timeout(&sb.base_url(), Duration::from_millis(300));
    st.set_faults(Faults {
        timeout_rate: 1.0,
        timeout_sends: false,
        hold_ms: 1500,
        ..Faults::default()
    });
    let r = c.send_message(TOKEN, PN, &reminder(PATIENT)).await;
    assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
    assert!(r.as_ref().err().is_some_and(ClientError::outcome_unknown));
    assert!(st.sent().is_empty(), "Meta did not act");

    st.set_faults(Faults {
        timeout_rate: 1.0,
        timeout_sends: true,
        hold_ms: 1500,
        ..Faults::default()
    });
    let r = c.send_message(TOKEN, PN, &reminder(PATIENT)).await;
    assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
    assert_eq!(
        st.sent().len(),
        1,
        "Meta acted although the client timed out"
    );

    // A slow answer to an accepted send: recorded before the answer leaves.
    st.set_faults(Faults {
        response_delay_ms: 600,
        ..Faults::default()
    });
    let r = c.send_message(TOKEN, PN, &reminder(PATIENT)).await;
    assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
    assert_eq!(st.sent().len(), 2);
    st.set_faults(Faults::default());
    c.send_message(TOKEN, PN, &reminder(PATIENT))
        .await
        .expect("back to normal");
}
