//! Webhook deliveries from Meta: `{object, entry: [{id, changes: [{field, value}]}]}`.

use serde::{Deserialize, Deserializer, Serialize};

use super::{id_string, TemplateCategory, TemplateStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

impl WebhookEnvelope {
    /// Every change of every entry, in delivery order.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.entry.iter().flat_map(|e| e.changes.iter())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The WhatsApp Business Account id.
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change, typed by its `field`. Fields the gateway does not know are kept as raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "field", content = "value", rename_all = "snake_case")]
pub enum Change {
    Messages(MessagesValue),
    MessageTemplateStatusUpdate(TemplateStatusUpdate),
    TemplateCategoryUpdate(TemplateCategoryUpdate),
    PhoneNumberQualityUpdate(PhoneNumberQualityUpdate),
    #[serde(untagged)]
    Other {
        field: String,
        value: serde_json::Value,
    },
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            field: String,
            #[serde(default)]
            value: serde_json::Value,
        }
        fn typed<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            v: serde_json::Value,
        ) -> Result<T, E> {
            serde_json::from_value(v).map_err(E::custom)
        }
        let Raw { field, value } = Raw::deserialize(d)?;
        Ok(match field.as_str() {
            "messages" => Change::Messages(typed(value)?),
            "message_template_status_update" => Change::MessageTemplateStatusUpdate(typed(value)?),
            "template_category_update" => Change::TemplateCategoryUpdate(typed(value)?),
            "phone_number_quality_update" => Change::PhoneNumberQualityUpdate(typed(value)?),
            _ => Change::Other { field, value },
        })
    }
}

/// `field = "messages"`: inbound messages, statuses, or errors for one business number.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MessagesValue {
    #[serde(default)]
    pub messaging_product: String,
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<InboundContact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<InboundMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<WebhookError>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub display_phone_number: String,
    #[serde(deserialize_with = "id_string")]
    pub phone_number_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundContact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    pub wa_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundKind {
    Text,
    Button,
    Interactive,
    Document,
    Image,
    Audio,
    Video,
    Sticker,
    Location,
    Contacts,
    Reaction,
    Unsupported,
    #[serde(other)]
    Unknown,
}

/// A patient's message. Exactly one of the kind-named objects is set, matching `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub from: String,
    pub id: String,
    /// Unix seconds, as a string.
    pub timestamp: String,
    #[serde(rename = "type")]
    pub kind: InboundKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<InboundContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<InboundText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<InboundButton>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<InboundInteractive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<InboundMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<InboundMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<InboundMedia>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<WebhookError>,
}

impl InboundMessage {
    /// Unix seconds, if the timestamp is a number.
    pub fn unix_seconds(&self) -> Option<i64> {
        self.timestamp.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The wamid of the message being answered (e.g. the template whose button was tapped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundText {
    pub body: String,
}

/// A tap on a template quick-reply button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundButton {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundInteractive {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button_reply: Option<InteractiveReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_reply: Option<InteractiveReply>,
}

impl InboundInteractive {
    pub fn reply(&self) -> Option<&InteractiveReply> {
        self.button_reply.as_ref().or(self.list_reply.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractiveReply {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMedia {
    pub id: String,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    Sent,
    Delivered,
    Read,
    Failed,
    Played,
    Deleted,
    #[serde(other)]
    Unknown,
}

/// A delivery status of one outbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The wamid.
    pub id: String,
    pub status: StatusKind,
    pub timestamp: String,
    #[serde(default)]
    pub recipient_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<WebhookError>,
}

impl Status {
    pub fn unix_seconds(&self) -> Option<i64> {
        self.timestamp.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// Being deprecated by Meta: decide by `kind` and `category`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_model: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PricingType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<PricingCategory>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingType {
    Regular,
    FreeCustomerService,
    FreeEntryPoint,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingCategory {
    Marketing,
    Utility,
    Authentication,
    #[serde(rename = "authentication-international")]
    AuthenticationInternational,
    Service,
    ReferralConversion,
    MarketingLite,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ConversationOrigin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationOrigin {
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// An error inside a webhook (on a failed status, an unsupported message, or the value itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookError {
    pub code: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<WebhookErrorData>,
}

impl WebhookError {
    /// The most specific text: details, else message, else title.
    pub fn text(&self) -> &str {
        self.error_data
            .as_ref()
            .map(|d| d.details.as_str())
            .filter(|d| !d.is_empty())
            .or(self.message.as_deref())
            .unwrap_or(&self.title)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookErrorData {
    #[serde(default)]
    pub details: String,
}

/// `field = "message_template_status_update"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateStatusUpdate {
    pub event: TemplateStatus,
    #[serde(deserialize_with = "id_string")]
    pub message_template_id: String,
    pub message_template_name: String,
    pub message_template_language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template_category: Option<TemplateCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_info: Option<serde_json::Value>,
}

/// `field = "template_category_update"`: impending (`correct_category`, `category_update_timestamp`)
/// or completed (`previous_category`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateCategoryUpdate {
    #[serde(deserialize_with = "id_string")]
    pub message_template_id: String,
    pub message_template_name: String,
    pub message_template_language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_category: Option<TemplateCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_category: Option<TemplateCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_category: Option<TemplateCategory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_update_timestamp: Option<i64>,
}

impl TemplateCategoryUpdate {
    /// True when Meta announces a change that has not taken effect yet.
    pub fn is_impending(&self) -> bool {
        self.correct_category.is_some() && self.previous_category.is_none()
    }
}

/// `field = "phone_number_quality_update"`: throughput and messaging-limit changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhoneNumberQualityUpdate {
    #[serde(default)]
    pub display_phone_number: String,
    /// e.g. `THROUGHPUT_UPGRADE`, `UPGRADE`, `DOWNGRADE`, `FLAGGED`.
    #[serde(default)]
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_limit: Option<String>,
    /// `TIER_250` … `TIER_UNLIMITED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_daily_conversations_per_business: Option<String>,
}
