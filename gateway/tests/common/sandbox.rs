//! What reached Meta: the sandbox's records of sent messages, found by patient and template,
//! and the parts tests read from them (body texts, reply payloads, the document header).

use std::time::Duration;

use clinic_gateway::config::TemplatesSettings;
use clinic_gateway::template_library::TemplateLibrary;
use reqwest::Method;
use whatsapp_cloud::sandbox::SentRecord;
use whatsapp_cloud::wire::{
    ButtonParameter, Component, Content, InteractiveKind, Parameter, TemplateStatus,
};

use super::{digits, poll, TestApp, KEY_A, WABA_A};

pub fn template_name(r: &SentRecord) -> Option<&str> {
    match &r.message.content {
        Content::Template { template } => Some(template.name.as_str()),
        _ => None,
    }
}

/// Every template `name` sent to `to` so far.
pub fn templates_to(app: &TestApp, to: &str, name: &str) -> Vec<SentRecord> {
    app.sim
        .sent()
        .into_iter()
        .filter(|r| r.to == digits(to) && template_name(r) == Some(name))
        .collect()
}

/// Waits for a message to `to` that `pred` accepts.
pub async fn sent_where(
    app: &TestApp,
    to: &str,
    timeout: Duration,
    pred: impl Fn(&SentRecord) -> bool,
) -> Option<SentRecord> {
    poll(timeout, || {
        app.sim
            .sent()
            .into_iter()
            .find(|r| r.to == digits(to) && pred(r))
    })
    .await
}

/// Waits for template `name` to reach `to`.
pub async fn sent_template(
    app: &TestApp,
    to: &str,
    name: &str,
    timeout: Duration,
) -> Option<SentRecord> {
    sent_where(app, to, timeout, |r| template_name(r) == Some(name)).await
}

/// The texts of a template's body parameters, in order.
pub fn body_texts(r: &SentRecord) -> Vec<String> {
    match &r.message.content {
        Content::Template { template } => template
            .components
            .iter()
            .filter_map(|c| match c {
                Component::Body { parameters } => Some(parameters.iter().filter_map(|p| match p {
                    Parameter::Text { text, .. } => Some(text.clone()),
                    _ => None,
                })),
                _ => None,
            })
            .flatten()
            .collect(),
        _ => vec![],
    }
}

/// What a tap sends back: a template's quick-reply payloads, or an interactive message's
/// button and list-row ids.
pub fn payloads(r: &SentRecord) -> Vec<String> {
    match &r.message.content {
        Content::Template { template } => template
            .components
            .iter()
            .filter_map(|c| match c {
                Component::Button { parameters, .. } => parameters.iter().find_map(|p| match p {
                    ButtonParameter::Payload { payload } => Some(payload.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect(),
        Content::Interactive { interactive } => match &interactive.kind {
            InteractiveKind::Button { action } => {
                action.buttons.iter().map(|b| b.reply.id.clone()).collect()
            }
            InteractiveKind::List { action } => action
                .sections
                .iter()
                .flat_map(|s| s.rows.iter().map(|r| r.id.clone()))
                .collect(),
        },
        _ => vec![],
    }
}

/// The media id of a template's document header.
pub fn header_document(r: &SentRecord) -> Option<String> {
    let Content::Template { template } = &r.message.content else {
        return None;
    };
    template.components.iter().find_map(|c| match c {
        Component::Header { parameters } => parameters.iter().find_map(|p| match p {
            Parameter::Document { document } => document.id.clone(),
            _ => None,
        }),
        _ => None,
    })
}

/// Approves library templates beyond the ones the harness seeds in clinic A's WABA and has the
/// gateway read its catalog again.
pub async fn seed_templates(app: &TestApp, names: &[&str]) {
    let library = TemplateLibrary::load(&TemplatesSettings::default().resolved_dir())
        .unwrap_or_else(|e| panic!("{e}"));
    for def in library
        .templates()
        .iter()
        .filter(|t| names.contains(&t.name.as_str()))
    {
        app.sim
            .add_template_def(WABA_A, def, TemplateStatus::Approved);
    }
    let (s, v) = app
        .call(Method::POST, "/v1/templates/sync", KEY_A, None)
        .await;
    assert_eq!(s, 200, "{v}");
}
