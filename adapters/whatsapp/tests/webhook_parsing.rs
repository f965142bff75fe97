//! Every shared fixture and hand-written payloads parse into the right typed change.

use whatsapp_cloud::wire::*;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/meta/"
);

fn fixture(name: &str) -> WebhookEnvelope {
    let bytes =
        std::fs::read(format!("{FIXTURES}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn only_change(env: &WebhookEnvelope) -> &Change {
    let changes: Vec<&Change> = env.changes().collect();
    assert_eq!(changes.len(), 1);
    changes[0]
}

fn messages(env: &WebhookEnvelope) -> &MessagesValue {
    match only_change(env) {
        Change::Messages(v) => v,
        other => panic!("expected messages, got {other:?}"),
    }
}

fn parse(json: &str) -> WebhookEnvelope {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn wrap(field: &str, value: &str) -> WebhookEnvelope {
    parse(&format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"{field}","value":{value}}}]}}]}}"#
    ))
}

fn inbound(message: &str) -> InboundMessage {
    let v = format!(
        r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"918045551234","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Asha"}},"wa_id":"919876543210"}}],"messages":[{message}]}}"#
    );
    let env = wrap("messages", &v);
    messages(&env).messages[0].clone()
}

#[test]
fn every_fixture_file_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(FIXTURES).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let env: WebhookEnvelope = serde_json::from_slice(&std::fs::read(&path).expect("read"))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(env.object, "whatsapp_business_account");
            assert_eq!(env.entry[0].id, "102290129340398");
            n += 1;
        }
    }
    assert!(n >= 12, "{n} fixtures");
}

#[test]
fn inbound_fixtures() {
    let env = fixture("inbound-text-hindi.json");
    let v = messages(&env);
    assert_eq!(v.metadata.phone_number_id, "106540352242922");
    assert_eq!(v.metadata.display_phone_number, "918045551234");
    assert_eq!(
        v.contacts[0].profile.as_ref().map(|p| p.name.as_str()),
        Some("Asha Verma")
    );
    assert_eq!(v.contacts[0].wa_id, "919876543210");
    let m = &v.messages[0];
    assert_eq!(m.kind, InboundKind::Text);
    assert_eq!(
        m.text.as_ref().map(|t| t.body.as_str()),
        Some("मुझे अपॉइंटमेंट रद्द करना है @ 10:30")
    );
    assert_eq!(m.unix_seconds(), Some(1_764_000_000));

    let env = fixture("inbound-button-tap.json");
    let m = &messages(&env).messages[0];
    assert_eq!(m.kind, InboundKind::Button);
    let b = m.button.as_ref().expect("button");
    assert_eq!(
        (b.text.as_str(), b.payload.as_str()),
        ("Cancel", "CANCEL:apt_01JDEXAMPLE")
    );
    assert_eq!(
        m.context.as_ref().and_then(|c| c.id.as_deref()),
        Some("wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQUJDREVGMDEyMzQ1Njc4OQA=")
    );

    let env = fixture("inbound-interactive-reply.json");
    let m = &messages(&env).messages[0];
    assert_eq!(m.kind, InboundKind::Interactive);
    let i = m.interactive.as_ref().expect("interactive");
    assert_eq!(i.kind, "button_reply");
    assert_eq!(
        i.reply().map(|r| (r.id.as_str(), r.title.as_str())),
        Some(("rating:5", "Excellent"))
    );
}

#[test]
fn status_fixtures() {
    let env = fixture("status-sent-billable-utility.json");
    let s = &messages(&env).statuses[0];
    assert_eq!(s.status, StatusKind::Sent);
    assert_eq!(
        s.biz_opaque_callback_data.as_deref(),
        Some("msg_01JDEXAMPLE")
    );
    let p = s.pricing.as_ref().expect("pricing");
    assert_eq!(
        (p.billable, p.kind, p.category),
        (
            Some(true),
            Some(PricingType::Regular),
            Some(PricingCategory::Utility)
        )
    );

    let env = fixture("status-delivered-free-service.json");
    let s = &messages(&env).statuses[0];
    assert_eq!(s.status, StatusKind::Delivered);
    let p = s.pricing.as_ref().expect("pricing");
    assert_eq!(
        (p.billable, p.kind, p.category),
        (
            Some(false),
            Some(PricingType::FreeCustomerService),
            Some(PricingCategory::Service)
        )
    );

    let env = fixture("status-read-no-pricing.json");
    let s = &messages(&env).statuses[0];
    assert_eq!(
        (s.status, s.pricing.is_none(), s.unix_seconds()),
        (StatusKind::Read, true, Some(1_764_000_060))
    );

    let env = fixture("status-failed-131026.json");
    let s = &messages(&env).statuses[0];
    assert_eq!(s.status, StatusKind::Failed);
    assert_eq!(s.errors[0].code, 131026);
    assert_eq!(s.errors[0].title, "Message undeliverable");
    assert_eq!(s.errors[0].text(), "Message Undeliverable.");
    assert_eq!(s.recipient_id, "919000000000");
}

#[test]
fn mixed_batch_keeps_order_and_ignores_unknown_fields() {
    let env = fixture("status-batch-mixed.json");
    let st = &messages(&env).statuses;
    let seen: Vec<(&str, StatusKind, &str)> = st
        .iter()
        .map(|s| (s.id.as_str(), s.status, s.timestamp.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("wamid.A1", StatusKind::Delivered, "1764000010"),
            ("wamid.A2", StatusKind::Sent, "1764000011"),
            ("wamid.A1", StatusKind::Sent, "1764000009"),
        ],
        "the late `sent` of A1 arrives after its `delivered`"
    );
    assert!(st
        .iter()
        .all(|s| s.pricing.as_ref().and_then(|p| p.category) == Some(PricingCategory::Marketing)));
    assert_eq!(
        st[1].biz_opaque_callback_data.as_deref(),
        Some("msg_A2"),
        "future_field ignored"
    );
}

#[test]
fn template_fixtures() {
    let env = fixture("template-status-approved.json");
    let Change::MessageTemplateStatusUpdate(u) = only_change(&env) else {
        panic!()
    };
    assert_eq!(
        (u.event, u.message_template_id.as_str()),
        (TemplateStatus::Approved, "1689556908129833")
    );
    assert_eq!(
        (
            u.message_template_name.as_str(),
            u.message_template_language.as_str()
        ),
        ("lab_report_ready", "en")
    );
    assert_eq!(u.message_template_category, Some(TemplateCategory::Utility));

    let env = fixture("template-status-paused.json");
    let Change::MessageTemplateStatusUpdate(u) = only_change(&env) else {
        panic!()
    };
    assert_eq!(u.event, TemplateStatus::Paused);
    assert_eq!(
        u.other_info.as_ref().and_then(|o| o["title"].as_str()),
        Some("FIRST_PAUSE")
    );

    let env = fixture("template-category-update.json");
    let Change::TemplateCategoryUpdate(u) = only_change(&env) else {
        panic!()
    };
    assert_eq!(
        (u.previous_category, u.new_category),
        (
            Some(TemplateCategory::Utility),
            Some(TemplateCategory::Marketing)
        )
    );
    assert!(!u.is_impending());

    let env = fixture("template-category-impending.json");
    let Change::TemplateCategoryUpdate(u) = only_change(&env) else {
        panic!()
    };
    assert!(u.is_impending());
    assert_eq!(
        (u.correct_category, u.new_category),
        (
            Some(TemplateCategory::Marketing),
            Some(TemplateCategory::Utility)
        )
    );
    assert_eq!(u.category_update_timestamp, Some(1_764_259_850));
    assert_eq!(u.message_template_id, "1689556908129834");
}

#[test]
fn hand_written_inbound_kinds() {
    let m = inbound(
        r#"{"from":"919876543210","id":"wamid.D","timestamp":"1764000000","type":"document","document":{"id":"111","mime_type":"application/pdf","sha256":"abc","filename":"rx.pdf","caption":"prescription"}}"#,
    );
    assert_eq!(m.kind, InboundKind::Document);
    let d = m.document.expect("document");
    assert_eq!(
        (
            d.id.as_str(),
            d.mime_type.as_str(),
            d.filename.as_deref(),
            d.caption.as_deref()
        ),
        (
            "111",
            "application/pdf",
            Some("rx.pdf"),
            Some("prescription")
        )
    );

    let m = inbound(
        r#"{"from":"919876543210","id":"wamid.I","timestamp":"1764000000","type":"image","image":{"id":"222","mime_type":"image/jpeg","sha256":"def"}}"#,
    );
    assert_eq!(
        (m.kind, m.image.map(|i| i.id)),
        (InboundKind::Image, Some("222".into()))
    );

    let m = inbound(
        r#"{"from":"919876543210","id":"wamid.A","timestamp":"1764000000","type":"audio","audio":{"id":"333","mime_type":"audio/ogg; codecs=opus"}}"#,
    );
    assert_eq!(
        (m.kind, m.audio.map(|a| a.mime_type)),
        (InboundKind::Audio, Some("audio/ogg; codecs=opus".into()))
    );

    let m = inbound(
        r#"{"from":"919876543210","id":"wamid.U","timestamp":"1764000000","type":"unsupported","errors":[{"code":131051,"title":"Message type unknown","message":"Message type unknown","error_data":{"details":"Message type is currently not supported."}}]}"#,
    );
    assert_eq!(m.kind, InboundKind::Unsupported);
    assert_eq!(
        (m.errors[0].code, m.errors[0].text()),
        (131051, "Message type is currently not supported.")
    );

    let m = inbound(
        r#"{"from":"919876543210","id":"wamid.L","timestamp":"1764000000","type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"slot:10","title":"10:00","description":"Dr Rao"}}}"#,
    );
    let r = m
        .interactive
        .as_ref()
        .and_then(|i| i.reply())
        .expect("reply");
    assert_eq!(
        (r.id.as_str(), r.description.as_deref()),
        ("slot:10", Some("Dr Rao"))
    );

    let m = inbound(
        r#"{"from":"919876543210","id":"wamid.N","timestamp":"1764000000","type":"hologram","hologram":{"x":1}}"#,
    );
    assert_eq!(m.kind, InboundKind::Unknown);
}

#[test]
fn hand_written_changes() {
    let env = wrap(
        "phone_number_quality_update",
        r#"{"display_phone_number":"918045551234","event":"THROUGHPUT_UPGRADE","current_limit":"TIER_10K","max_daily_conversations_per_business":"TIER_10K"}"#,
    );
    let Change::PhoneNumberQualityUpdate(q) = only_change(&env) else {
        panic!()
    };
    assert_eq!(
        (
            q.event.as_str(),
            q.max_daily_conversations_per_business.as_deref()
        ),
        ("THROUGHPUT_UPGRADE", Some("TIER_10K"))
    );

    let env = wrap(
        "account_alerts",
        r#"{"entity_type":"WABA","alert_info":{"alert_severity":"INFORMATIONAL"}}"#,
    );
    let Change::Other { field, value } = only_change(&env) else {
        panic!()
    };
    assert_eq!(field, "account_alerts");
    assert_eq!(value["entity_type"], "WABA");

    let env = wrap(
        "messages",
        r#"{"messaging_product":"whatsapp","metadata":{"display_phone_number":"918045551234","phone_number_id":106540352242922},"statuses":[{"id":"wamid.Z","status":"warped","timestamp":"1764000000","recipient_id":"919876543210","pricing":{"type":"brand_new","category":"brand_new"}}]}"#,
    );
    let v = messages(&env);
    assert_eq!(
        v.metadata.phone_number_id, "106540352242922",
        "numeric ids become strings"
    );
    let s = &v.statuses[0];
    assert_eq!(s.status, StatusKind::Unknown);
    let p = s.pricing.as_ref().expect("pricing");
    assert_eq!(
        (p.kind, p.category),
        (Some(PricingType::Unknown), Some(PricingCategory::Unknown))
    );

    let env = wrap(
        "messages",
        r#"{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1","phone_number_id":"2"},"errors":[{"code":131000,"title":"Something went wrong"}]}"#,
    );
    assert_eq!(messages(&env).errors[0].code, 131000);
}
