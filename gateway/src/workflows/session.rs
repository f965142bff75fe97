//! A template touchpoint as a free session message: inside the patient's 24 h window Meta
//! charges nothing for free-form messages, so the same words (the template library's text in the
//! patient's language, with the same parameters and payloads) go out that way.

use whatsapp_cloud::wire::{
    ButtonAction, ButtonParameter, Component, Content, CreateTemplateRequest, Interactive,
    InteractiveKind, ListAction, ListRow, ListSection, Media, Parameter, ReplyButton, Template,
    Text, TextObject,
};

use super::SessionForm;

/// The body with `{{1}}`… replaced by the send's text parameters.
fn body_text(t: &Template, def: &CreateTemplateRequest) -> Option<String> {
    let mut text = def
        .components
        .iter()
        .find(|c| c.kind.eq_ignore_ascii_case("BODY"))?
        .text
        .clone()?;
    let params = t.components.iter().find_map(|c| match c {
        Component::Body { parameters } => Some(parameters),
        _ => None,
    });
    for (i, p) in params.into_iter().flatten().enumerate() {
        if let Parameter::Text { text: value, .. } = p {
            text = text.replace(&format!("{{{{{}}}}}", i + 1), value);
        }
    }
    // A placeholder left unfilled would show as {{n}}: better the template then.
    (!text.contains("{{")).then_some(text)
}

/// `(payload, label)` of each quick reply: payloads from the send, labels from the library.
fn replies(t: &Template, def: &CreateTemplateRequest) -> Option<Vec<(String, String)>> {
    let labels: Vec<String> = def
        .components
        .iter()
        .filter_map(|c| c.buttons.as_ref())
        .flatten()
        .filter(|b| b.kind.eq_ignore_ascii_case("QUICK_REPLY"))
        .map(|b| b.text.clone())
        .collect();
    let payloads: Vec<String> = t
        .components
        .iter()
        .filter_map(|c| match c {
            Component::Button { parameters, .. } => parameters.iter().find_map(|p| match p {
                ButtonParameter::Payload { payload } => Some(payload.clone()),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    (!payloads.is_empty() && payloads.len() == labels.len())
        .then(|| payloads.into_iter().zip(labels).collect())
}

/// Interactive titles: buttons ≤ 20 characters, list rows ≤ 24.
fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The session form of a template send, or `None` when it cannot be rendered faithfully (the
/// template is then sent as it is).
pub fn session_content(
    content: &Content,
    def: &CreateTemplateRequest,
    form: SessionForm,
) -> Option<Content> {
    let Content::Template { template: t } = content else {
        return None;
    };
    let body = body_text(t, def)?;
    match form {
        SessionForm::Text => Some(Content::Text {
            text: Text {
                body,
                preview_url: false,
            },
        }),
        SessionForm::Buttons => {
            let replies = replies(t, def)?;
            (replies.len() <= 3).then(|| Content::Interactive {
                interactive: Interactive {
                    kind: InteractiveKind::Button {
                        action: ButtonAction {
                            buttons: replies
                                .into_iter()
                                .map(|(id, label)| ReplyButton::new(id, clip(&label, 20)))
                                .collect(),
                        },
                    },
                    header: None,
                    body: TextObject { text: body },
                    footer: None,
                },
            })
        }
        SessionForm::List => {
            let replies = replies(t, def)?;
            (replies.len() <= 10).then(|| Content::Interactive {
                interactive: Interactive {
                    kind: InteractiveKind::List {
                        action: ListAction {
                            // Digits and a star read the same in every language.
                            button: "⭐ 1-5".to_owned(),
                            sections: vec![ListSection {
                                title: None,
                                rows: replies
                                    .into_iter()
                                    .map(|(id, label)| ListRow {
                                        id,
                                        title: clip(&label, 24),
                                        description: None,
                                    })
                                    .collect(),
                            }],
                        },
                    },
                    header: None,
                    body: TextObject { text: body },
                    footer: None,
                },
            })
        }
        SessionForm::Document => {
            let document = t.components.iter().find_map(|c| match c {
                Component::Header { parameters } => parameters.iter().find_map(|p| match p {
                    Parameter::Document { document } => Some(document.clone()),
                    _ => None,
                }),
                _ => None,
            })?;
            Some(Content::Document {
                document: Media {
                    caption: Some(body),
                    ..document
                },
            })
        }
    }
}

/// Where the session forms' words come from: the template library.
pub trait TemplateTexts: Send + Sync + 'static {
    fn definition(&self, name: &str, language: &str) -> Option<CreateTemplateRequest>;
}

/// No library: touchpoints always go as templates.
pub struct NoTexts;

impl TemplateTexts for NoTexts {
    fn definition(&self, _: &str, _: &str) -> Option<CreateTemplateRequest> {
        None
    }
}

impl TemplateTexts for crate::template_library::TemplateLibrary {
    fn definition(&self, name: &str, language: &str) -> Option<CreateTemplateRequest> {
        self.get(name, language).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template_library::TemplateLibrary;
    use whatsapp_cloud::wire::{ButtonSubType, Language};

    fn library() -> TemplateLibrary {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/templates");
        TemplateLibrary::load(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn template(name: &str, lang: &str, params: &[&str], payloads: &[&str], doc: bool) -> Content {
        let mut components = Vec::new();
        if doc {
            components.push(Component::Header {
                parameters: vec![Parameter::Document {
                    document: Media {
                        id: Some("77".into()),
                        filename: Some("cbc.pdf".into()),
                        ..Media::default()
                    },
                }],
            });
        }
        components.push(Component::Body {
            parameters: params
                .iter()
                .map(|p| Parameter::Text {
                    text: (*p).into(),
                    parameter_name: None,
                })
                .collect(),
        });
        for (i, p) in payloads.iter().enumerate() {
            components.push(Component::Button {
                sub_type: ButtonSubType::QuickReply,
                index: i.to_string(),
                parameters: vec![ButtonParameter::Payload {
                    payload: (*p).into(),
                }],
            });
        }
        Content::Template {
            template: Template {
                name: name.into(),
                language: Language {
                    code: lang.into(),
                    policy: None,
                },
                components,
            },
        }
    }

    #[test]
    fn a_reminder_becomes_buttons_in_the_patients_language() {
        let lib = library();
        let c = template(
            "visit_reminder",
            "hi",
            &["Asha", "Wed, 25 Nov", "10:30 AM", "Dr. Rao"],
            &["CONFIRM:a:1", "CANCEL:a:1", "RESCHEDULE:a:1"],
            false,
        );
        let def = lib
            .definition("visit_reminder", "hi")
            .unwrap_or_else(|| panic!("hi reminder"));
        let Some(Content::Interactive { interactive }) =
            session_content(&c, &def, SessionForm::Buttons)
        else {
            panic!("buttons")
        };
        assert!(
            interactive.body.text.contains("Asha") && interactive.body.text.contains("Dr. Rao")
        );
        assert!(!interactive.body.text.contains("{{"));
        let InteractiveKind::Button { action } = interactive.kind else {
            panic!("button kind")
        };
        assert_eq!(action.buttons.len(), 3);
        assert_eq!(action.buttons[1].reply.id, "CANCEL:a:1");
        assert!(action
            .buttons
            .iter()
            .all(|b| b.reply.title.chars().count() <= 20));
    }

    #[test]
    fn feedback_becomes_a_list_and_documents_keep_their_media() {
        let lib = library();
        let payloads = ["RATE:v:5", "RATE:v:4", "RATE:v:3", "RATE:v:2", "RATE:v:1"];
        let c = template(
            "feedback_request",
            "ta",
            &["Asha", "Sunrise"],
            &payloads,
            false,
        );
        let def = lib
            .definition("feedback_request", "ta")
            .unwrap_or_else(|| panic!("ta"));
        assert!(
            session_content(&c, &def, SessionForm::Buttons).is_none(),
            "5 > 3 buttons"
        );
        let Some(Content::Interactive { interactive }) =
            session_content(&c, &def, SessionForm::List)
        else {
            panic!("list")
        };
        let InteractiveKind::List { action } = interactive.kind else {
            panic!("list kind")
        };
        assert_eq!(action.sections[0].rows.len(), 5);
        let c = template(
            "lab_report_ready",
            "en",
            &["Asha", "CBC", "Sunrise"],
            &[],
            true,
        );
        let def = lib
            .definition("lab_report_ready", "en")
            .unwrap_or_else(|| panic!("en"));
        let Some(Content::Document { document }) = session_content(&c, &def, SessionForm::Document)
        else {
            panic!("document")
        };
        assert_eq!(document.id.as_deref(), Some("77"));
        assert!(document.caption.is_some_and(|t| t.contains("CBC")));
        // A send missing a parameter is not rendered with a hole in it.
        let short = template("lab_report_ready", "en", &["Asha"], &[], true);
        assert!(session_content(&short, &def, SessionForm::Text).is_none());
    }
}
