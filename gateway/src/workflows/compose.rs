//! Building blocks of the touchpoints' template messages, shared by every workflow.

use whatsapp_cloud::wire::{
    ButtonParameter, ButtonSubType, Component, Content, Language, Media, Parameter, Template,
};

use super::{Command, SessionForm, Touchpoint};
use crate::domain::appointment::Patient;
use crate::domain::Lane;
use crate::tenants::ClinicSettings;

/// The patient's language, else the clinic's default (the template library has both).
pub fn language(patient: &Patient, clinic: &ClinicSettings) -> String {
    patient
        .language
        .clone()
        .unwrap_or_else(|| clinic.default_language.clone())
}

pub fn text_param(s: &str) -> Parameter {
    // Meta refuses empty parameters; a dash reads better than an error.
    let text = if s.trim().is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    };
    Parameter::Text {
        text,
        parameter_name: None,
    }
}

pub fn body(values: &[&str]) -> Component {
    Component::Body {
        parameters: values.iter().map(|v| text_param(v)).collect(),
    }
}

/// A DOCUMENT header: the uploaded PDF by media id.
pub fn document_header(media_id: &str, filename: &str) -> Component {
    Component::Header {
        parameters: vec![Parameter::Document {
            document: Media {
                id: Some(media_id.to_owned()),
                filename: Some(filename.to_owned()),
                ..Media::default()
            },
        }],
    }
}

/// Quick-reply buttons `0..` carrying `payloads`.
pub fn quick_replies(payloads: Vec<String>) -> impl Iterator<Item = Component> {
    payloads
        .into_iter()
        .enumerate()
        .map(|(index, payload)| Component::Button {
            sub_type: ButtonSubType::QuickReply,
            index: index.to_string(),
            parameters: vec![ButtonParameter::Payload { payload }],
        })
}

pub fn template(
    name: &str,
    patient: &Patient,
    clinic: &ClinicSettings,
    components: Vec<Component>,
) -> Content {
    Content::Template {
        template: Template {
            name: name.to_owned(),
            language: Language {
                code: language(patient, clinic),
                policy: None,
            },
            components,
        },
    }
}

/// A send to the patient.
pub fn send(
    touchpoint: Touchpoint,
    patient: &Patient,
    content: Content,
    lane: Lane,
    deadline_ms: i64,
    session: Option<SessionForm>,
) -> Command {
    Command::Send {
        touchpoint,
        to: patient.phone.clone(),
        content,
        lane,
        deadline_ms,
        session,
    }
}
