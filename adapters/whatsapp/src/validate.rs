//! The request rules Meta applies before it accepts a send. The gateway checks them at its API edge
//! (so a bad request is a 4xx now, not a failed message later) and the sandbox answers with the
//! same codes Meta would.

use crate::wire::{Component, Content, InteractiveKind, Media, OutgoingMessage, Parameter};

/// One broken rule: Meta's error code, the JSON path of the field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {details}")]
pub struct Violation {
    pub code: i64,
    pub field: String,
    pub details: String,
}

fn violation(code: i64, field: impl Into<String>, details: impl Into<String>) -> Violation {
    Violation {
        code,
        field: field.into(),
        details: details.into(),
    }
}

pub const MAX_TEXT_BODY: usize = 4096;
pub const MAX_CAPTION: usize = 1024;
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE: usize = 20;
pub const MAX_BUTTON_ID: usize = 256;
pub const MAX_LIST_ROWS: usize = 10;
pub const MAX_LIST_ROW_TITLE: usize = 24;
pub const MAX_INTERACTIVE_BODY: usize = 1024;
pub const MAX_CALLBACK_DATA: usize = 512;

/// Digits of a recipient: optional `+`, then 8 to 15 digits, the first not 0.
pub fn recipient_digits(to: &str) -> Option<&str> {
    let digits = to.strip_prefix('+').unwrap_or(to);
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(digits)
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Checks a whole send request.
pub fn validate(msg: &OutgoingMessage) -> Result<(), Violation> {
    if msg.messaging_product != crate::wire::MESSAGING_PRODUCT {
        return Err(violation(100, "messaging_product", "must be \"whatsapp\""));
    }
    if recipient_digits(&msg.to).is_none() {
        return Err(violation(
            100,
            "to",
            "must be a phone number in international format (+ and 8 to 15 digits)",
        ));
    }
    if let Some(data) = &msg.biz_opaque_callback_data {
        if chars(data) > MAX_CALLBACK_DATA {
            return Err(violation(
                100,
                "biz_opaque_callback_data",
                format!("at most {MAX_CALLBACK_DATA} characters"),
            ));
        }
    }
    validate_content(&msg.content)
}

/// Checks the typed content alone (the gateway's API validates this before it knows the sender).
pub fn validate_content(content: &Content) -> Result<(), Violation> {
    match content {
        Content::Text { text } => {
            if text.body.trim().is_empty() {
                return Err(violation(131008, "text.body", "is required"));
            }
            if chars(&text.body) > MAX_TEXT_BODY {
                return Err(violation(
                    100,
                    "text.body",
                    format!("at most {MAX_TEXT_BODY} characters"),
                ));
            }
        }
        Content::Document { document } => media("document", document)?,
        Content::Image { image } => media("image", image)?,
        Content::Location { location } => {
            if !(-90.0..=90.0).contains(&location.latitude) {
                return Err(violation(100, "location.latitude", "must be -90 to 90"));
            }
            if !(-180.0..=180.0).contains(&location.longitude) {
                return Err(violation(100, "location.longitude", "must be -180 to 180"));
            }
        }
        Content::Interactive { interactive } => {
            let body = &interactive.body.text;
            if body.trim().is_empty() {
                return Err(violation(131008, "interactive.body.text", "is required"));
            }
            if chars(body) > MAX_INTERACTIVE_BODY {
                return Err(violation(
                    100,
                    "interactive.body.text",
                    format!("at most {MAX_INTERACTIVE_BODY} characters"),
                ));
            }
            match &interactive.kind {
                InteractiveKind::Button { action } => {
                    let n = action.buttons.len();
                    if n == 0 || n > MAX_BUTTONS {
                        return Err(violation(
                            131009,
                            "interactive.action.buttons",
                            format!("1 to {MAX_BUTTONS} buttons, got {n}"),
                        ));
                    }
                    for (i, b) in action.buttons.iter().enumerate() {
                        let t = chars(&b.reply.title);
                        if t == 0 || t > MAX_BUTTON_TITLE {
                            return Err(violation(
                                131009,
                                format!("interactive.action.buttons[{i}].reply.title"),
                                format!("1 to {MAX_BUTTON_TITLE} characters"),
                            ));
                        }
                        let id = chars(&b.reply.id);
                        if id == 0 || id > MAX_BUTTON_ID {
                            return Err(violation(
                                131009,
                                format!("interactive.action.buttons[{i}].reply.id"),
                                format!("1 to {MAX_BUTTON_ID} characters"),
                            ));
                        }
                        if action.buttons[..i].iter().any(|o| o.reply.id == b.reply.id) {
                            return Err(violation(
                                131009,
                                format!("interactive.action.buttons[{i}].reply.id"),
                                "button ids must be unique",
                            ));
                        }
                    }
                }
                InteractiveKind::List { action } => {
                    let rows: usize = action.sections.iter().map(|s| s.rows.len()).sum();
                    if rows == 0 || rows > MAX_LIST_ROWS {
                        return Err(violation(
                            131009,
                            "interactive.action.sections",
                            format!("1 to {MAX_LIST_ROWS} rows in all, got {rows}"),
                        ));
                    }
                    for (s, section) in action.sections.iter().enumerate() {
                        for (r, row) in section.rows.iter().enumerate() {
                            let t = chars(&row.title);
                            if t == 0 || t > MAX_LIST_ROW_TITLE {
                                return Err(violation(
                                    131009,
                                    format!("interactive.action.sections[{s}].rows[{r}].title"),
                                    format!("1 to {MAX_LIST_ROW_TITLE} characters"),
                                ));
                            }
                        }
                    }
                }
            }
        }
        Content::Template { template } => {
            if template.name.is_empty()
                || !template
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(violation(
                    100,
                    "template.name",
                    "lowercase letters, digits and _ only",
                ));
            }
            if template.language.code.is_empty() {
                return Err(violation(131008, "template.language.code", "is required"));
            }
            for (i, c) in template.components.iter().enumerate() {
                match c {
                    Component::Button { index, .. } => {
                        if index.parse::<u8>().is_err() {
                            return Err(violation(
                                100,
                                format!("template.components[{i}].index"),
                                "must be a button position such as \"0\"",
                            ));
                        }
                    }
                    Component::Header { parameters } | Component::Body { parameters } => {
                        for (j, p) in parameters.iter().enumerate() {
                            let field = format!("template.components[{i}].parameters[{j}]");
                            match p {
                                Parameter::Text { text, .. } if text.is_empty() => {
                                    return Err(violation(
                                        131008,
                                        format!("{field}.text"),
                                        "is required",
                                    ))
                                }
                                Parameter::Image { image: m }
                                | Parameter::Document { document: m }
                                | Parameter::Video { video: m } => media_ref(&field, m)?,
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn media(field: &str, m: &Media) -> Result<(), Violation> {
    media_ref(field, m)?;
    if let Some(c) = &m.caption {
        if chars(c) > MAX_CAPTION {
            return Err(violation(
                100,
                format!("{field}.caption"),
                format!("at most {MAX_CAPTION} characters"),
            ));
        }
    }
    Ok(())
}

fn media_ref(field: &str, m: &Media) -> Result<(), Violation> {
    match (&m.id, &m.link) {
        (Some(_), Some(_)) => Err(violation(
            100,
            field.to_owned(),
            "give either id or link, not both",
        )),
        (None, None) => Err(violation(
            131008,
            format!("{field}.id"),
            "an uploaded media id or a link is required",
        )),
        (None, Some(link)) if !(link.starts_with("https://") || link.starts_with("http://")) => {
            Err(violation(
                100,
                format!("{field}.link"),
                "must be an http(s) URL",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn msg(content: Content) -> OutgoingMessage {
        OutgoingMessage::new("+919876543210", content)
    }

    #[test]
    fn recipients() {
        assert_eq!(recipient_digits("+919876543210"), Some("919876543210"));
        assert_eq!(recipient_digits("919876543210"), Some("919876543210"));
        assert_eq!(recipient_digits("9876-543210"), None);
        assert_eq!(recipient_digits("+0123456789"), None);
        assert_eq!(recipient_digits("+1234567"), None);
    }

    #[test]
    fn text_rules() {
        let ok = msg(Content::Text {
            text: Text {
                body: "hi".into(),
                preview_url: false,
            },
        });
        assert_eq!(validate(&ok), Ok(()));
        let long = msg(Content::Text {
            text: Text {
                body: "x".repeat(4097),
                preview_url: false,
            },
        });
        assert_eq!(
            validate(&long).map_err(|v| v.field),
            Err("text.body".into())
        );
        let mut bad_to = ok.clone();
        bad_to.to = "12ab".into();
        assert_eq!(
            validate(&bad_to).map_err(|v| (v.code, v.field)),
            Err((100, "to".into()))
        );
    }

    #[test]
    fn interactive_button_rules() {
        let b = |n: usize, title: &str| {
            msg(Content::Interactive {
                interactive: Interactive {
                    kind: InteractiveKind::Button {
                        action: ButtonAction {
                            buttons: (0..n)
                                .map(|i| ReplyButton::new(format!("b{i}"), title))
                                .collect(),
                        },
                    },
                    header: None,
                    body: TextObject {
                        text: "Pick".into(),
                    },
                    footer: None,
                },
            })
        };
        assert_eq!(validate(&b(3, "Confirm")), Ok(()));
        assert_eq!(
            validate(&b(4, "Confirm")).map_err(|v| v.field),
            Err("interactive.action.buttons".into())
        );
        assert_eq!(
            validate(&b(1, "A title that is far too long")).map_err(|v| v.field),
            Err("interactive.action.buttons[0].reply.title".into())
        );
    }

    #[test]
    fn media_needs_exactly_one_reference() {
        let none = msg(Content::Document {
            document: Media::default(),
        });
        assert_eq!(validate(&none).map_err(|v| v.code), Err(131008));
        let both = msg(Content::Document {
            document: Media {
                id: Some("1".into()),
                link: Some("https://x/y.pdf".into()),
                ..Media::default()
            },
        });
        assert_eq!(validate(&both).map_err(|v| v.code), Err(100));
    }

    #[test]
    fn template_names() {
        let t = |name: &str| {
            msg(Content::Template {
                template: Template {
                    name: name.into(),
                    language: Language {
                        code: "en".into(),
                        policy: None,
                    },
                    components: vec![],
                },
            })
        };
        assert_eq!(validate(&t("appointment_reminder")), Ok(()));
        assert_eq!(
            validate(&t("Bad Name")).map_err(|v| v.field),
            Err("template.name".into())
        );
    }
}
