//! `POST /{version}/{phone-number-id}/messages`: request and response bodies.

use serde::{Deserialize, Serialize};

/// Always `"whatsapp"` on the wire.
pub const MESSAGING_PRODUCT: &str = "whatsapp";

fn whatsapp() -> String {
    MESSAGING_PRODUCT.to_owned()
}
fn individual() -> String {
    "individual".to_owned()
}

/// A complete send request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    #[serde(default = "whatsapp")]
    pub messaging_product: String,
    #[serde(default = "individual")]
    pub recipient_type: String,
    /// Recipient in international format (`+919876543210` or `919876543210`).
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ReplyContext>,
    /// Echoed back on every status webhook of this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
    #[serde(flatten)]
    pub content: Content,
}

impl OutgoingMessage {
    pub fn new(to: impl Into<String>, content: Content) -> Self {
        Self {
            messaging_product: whatsapp(),
            recipient_type: individual(),
            to: to.into(),
            context: None,
            biz_opaque_callback_data: None,
            content,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyContext {
    pub message_id: String,
}

/// What is sent: the `type` field plus the object named after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Content {
    Template { template: Template },
    Text { text: Text },
    Document { document: Media },
    Image { image: Media },
    Location { location: Location },
    Interactive { interactive: Interactive },
}

impl Content {
    /// The wire name of the type (`"template"`, `"text"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Template { .. } => "template",
            Content::Text { .. } => "text",
            Content::Document { .. } => "document",
            Content::Image { .. } => "image",
            Content::Location { .. } => "location",
            Content::Interactive { .. } => "interactive",
        }
    }

    pub fn is_template(&self) -> bool {
        matches!(self, Content::Template { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview_url: bool,
}

/// A media object, by uploaded `id` or by `link`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub language: Language,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Language {
    /// `en`, `hi`, `en_US` … (underscore, not hyphen).
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Component {
    Header {
        #[serde(default)]
        parameters: Vec<Parameter>,
    },
    Body {
        #[serde(default)]
        parameters: Vec<Parameter>,
    },
    Button {
        sub_type: ButtonSubType,
        /// Zero-based position of the button in the template, as a string.
        index: String,
        #[serde(default)]
        parameters: Vec<ButtonParameter>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonSubType {
    QuickReply,
    Url,
    #[serde(other)]
    Other,
}

/// A header or body parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Parameter {
    Text {
        text: String,
        /// Set for templates with `parameter_format: named`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameter_name: Option<String>,
    },
    Image {
        image: Media,
    },
    Document {
        document: Media,
    },
    Video {
        video: Media,
    },
    Location {
        location: Location,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ButtonParameter {
    Payload { payload: String },
    Text { text: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interactive {
    #[serde(flatten)]
    pub kind: InteractiveKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<InteractiveHeader>,
    pub body: TextObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<TextObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InteractiveKind {
    Button { action: ButtonAction },
    List { action: ListAction },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractiveHeader {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextObject {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ButtonAction {
    pub buttons: Vec<ReplyButton>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyButton {
    /// Always `"reply"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reply: ReplyButtonBody,
}

impl ReplyButton {
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            kind: "reply".into(),
            reply: ReplyButtonBody {
                id: id.into(),
                title: title.into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyButtonBody {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListAction {
    pub button: String,
    pub sections: Vec<ListSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub rows: Vec<ListRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListRow {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `{messaging_product, status: "read", message_id}`: marks an inbound message as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkRead {
    #[serde(default = "whatsapp")]
    pub messaging_product: String,
    pub status: String,
    pub message_id: String,
}

impl MarkRead {
    pub fn new(message_id: impl Into<String>) -> Self {
        Self {
            messaging_product: whatsapp(),
            status: "read".into(),
            message_id: message_id.into(),
        }
    }
}

/// HTTP 200 answer to a send: accepted, not delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResponse {
    #[serde(default = "whatsapp")]
    pub messaging_product: String,
    #[serde(default)]
    pub contacts: Vec<SendContact>,
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

impl SendResponse {
    /// The wamid Meta assigned, if the response carries one.
    pub fn wamid(&self) -> Option<&str> {
        self.messages.first().map(|m| m.id.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendContact {
    pub input: String,
    pub wa_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
}

/// `{"success": true}` answer to mark-as-read and similar calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessResponse {
    pub success: bool,
}

/// Meta's error envelope: decide by `error.code`, never by HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: GraphError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<ErrorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    pub fn new(code: i64, title: &str, details: impl Into<String>) -> Self {
        Self {
            message: format!("(#{code}) {title}"),
            kind: "OAuthException".into(),
            code,
            error_subcode: None,
            error_data: Some(ErrorData {
                messaging_product: Some(whatsapp()),
                details: Some(details.into()),
            }),
            fbtrace_id: None,
        }
    }

    /// `details` when present, else the message: the most specific text Meta gave.
    pub fn text(&self) -> &str {
        self.error_data
            .as_ref()
            .and_then(|d| d.details.as_deref())
            .unwrap_or(&self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}
