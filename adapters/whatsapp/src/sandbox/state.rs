//! The simulator's shared state and the in-process control API that tests and demos drive.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::config::{Faults, SandboxConfig};
use super::ids::IdGen;
use super::rules::{PairGcra, ThroughputLog};
use super::webhooks::{DeliveryConfig, GroupKey, Item, WebhookQueue};
use crate::wire::{
    ButtonSubType, Change, Component, CreateTemplateRequest, InboundButton, InboundContact,
    InboundContext, InboundKind, InboundMessage, InboundText, OutgoingMessage, Parameter,
    PhoneNumberQualityUpdate, Pricing, Profile, Template, TemplateCategory, TemplateCategoryUpdate,
    TemplateComponentDef, TemplateInfo, TemplateStatus, TemplateStatusUpdate,
};

/// Pair-rate entries kept per number before idle ones are swept.
const PAIR_SWEEP_AT: usize = 10_000;
/// Uploaded media kept in memory before the oldest uploads are forgotten.
const MEDIA_BYTES_CAP: usize = 512 * 1024 * 1024;

/// One message the simulator accepted.
#[derive(Debug, Clone)]
pub struct SentRecord {
    pub phone_number_id: String,
    pub wamid: String,
    /// Digits only, no `+`.
    pub to: String,
    pub at: SystemTime,
    pub message: OutgoingMessage,
    /// The template's category at send time; `None` for non-template messages.
    pub category: Option<TemplateCategory>,
    /// What the status webhooks report (or would, when no webhook URL is set).
    pub pricing: Pricing,
}

/// One request answered with a Meta error (code 0: a bare HTTP error without an envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    pub phone_number_id: String,
    pub to: Option<String>,
    pub code: i64,
    pub at: SystemTime,
}

/// A business phone number as the simulator knows it.
#[derive(Debug)]
pub(crate) struct Number {
    pub phone_number_id: String,
    pub waba_id: String,
    pub display_phone_number: String,
    pub tier_mps: AtomicU32,
    pub messaging_limit_tier: Mutex<String>,
    pub limits: Mutex<Limits>,
}

#[derive(Debug, Default)]
pub(crate) struct Limits {
    pub throughput: ThroughputLog,
    pub pairs: HashMap<String, PairGcra>,
    /// Pair-map size at which idle entries are swept next.
    pair_sweep_at: usize,
    /// Recipient digits → time of the patient's latest message.
    pub windows: HashMap<String, SystemTime>,
}

impl Limits {
    /// Forgets recovered pairs. The next sweep waits until the map has doubled, so a map full of
    /// still-busy pairs is not rescanned on every send.
    pub fn sweep_pairs(&mut self, now: Instant) {
        if self.pairs.len() >= self.pair_sweep_at.max(PAIR_SWEEP_AT) {
            self.pairs.retain(|_, g| !g.is_idle(now));
            self.pair_sweep_at = self.pairs.len() * 2;
        }
    }
}

impl Number {
    pub fn group_key(&self) -> GroupKey {
        GroupKey {
            waba_id: self.waba_id.clone(),
            phone_number_id: self.phone_number_id.clone(),
            display_phone_number: self.display_phone_number.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct MediaStore {
    items: HashMap<String, (String, Bytes)>,
    order: VecDeque<String>,
    bytes: usize,
}

pub(crate) struct Inner {
    pub config: SandboxConfig,
    numbers: RwLock<HashMap<String, Arc<Number>>>,
    /// Key: `waba \0 name \0 language`.
    templates: RwLock<HashMap<String, TemplateInfo>>,
    not_on_whatsapp: RwLock<HashSet<String>>,
    faults: RwLock<Faults>,
    faults_active: AtomicBool,
    records: Mutex<VecDeque<SentRecord>>,
    rejected: Mutex<VecDeque<RejectedRecord>>,
    media: Mutex<MediaStore>,
    pub webhooks: Arc<WebhookQueue>,
    pub ids: IdGen,
}

/// Cheap handle (an `Arc`) on one simulator's state.
#[derive(Clone)]
pub struct SandboxState {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("bind", &self.inner.config.bind)
            .finish_non_exhaustive()
    }
}

pub(crate) fn template_key(waba_id: &str, name: &str, language: &str) -> String {
    let mut k = String::with_capacity(waba_id.len() + name.len() + language.len() + 2);
    k.push_str(waba_id);
    k.push('\0');
    k.push_str(name);
    k.push('\0');
    k.push_str(language);
    k
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A template's header as a send must fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderShape {
    /// `{{n}}` text placeholders (0 for a fixed text header).
    Text(usize),
    Image,
    Video,
    Document,
    Location,
}

impl HeaderShape {
    fn name(self) -> &'static str {
        match self {
            HeaderShape::Text(_) => "TEXT",
            HeaderShape::Image => "IMAGE",
            HeaderShape::Video => "VIDEO",
            HeaderShape::Document => "DOCUMENT",
            HeaderShape::Location => "LOCATION",
        }
    }
}

/// The facts about a template that a send is admitted against. Header and button checks apply
/// only to what the template defines: templates added with [`SandboxState::add_template`] carry
/// just a body and accept any header and buttons, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TemplateFacts {
    pub category: TemplateCategory,
    pub status: TemplateStatus,
    pub body_parameters: usize,
    pub header: Option<HeaderShape>,
    /// Buttons the template defines (`None`: no BUTTONS component).
    pub buttons: Option<ButtonShape>,
}

/// Button positions as bit masks (Meta allows at most 10 buttons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ButtonShape {
    pub count: usize,
    quick_reply: u32,
    url: u32,
}

impl TemplateFacts {
    fn of(t: &TemplateInfo) -> Self {
        let header = t
            .components
            .iter()
            .find(|c| c.kind.eq_ignore_ascii_case("HEADER"))
            .map(
                |h| match h.format.as_deref().map(str::to_ascii_uppercase).as_deref() {
                    Some("IMAGE") => HeaderShape::Image,
                    Some("VIDEO") => HeaderShape::Video,
                    Some("DOCUMENT") => HeaderShape::Document,
                    Some("LOCATION") => HeaderShape::Location,
                    _ => HeaderShape::Text(
                        h.text
                            .as_deref()
                            .map(crate::wire::management::count_placeholders)
                            .unwrap_or(0),
                    ),
                },
            );
        let buttons = t
            .components
            .iter()
            .find(|c| c.kind.eq_ignore_ascii_case("BUTTONS"))
            .map(|c| {
                let defs = c.buttons.as_deref().unwrap_or(&[]);
                let mut shape = ButtonShape {
                    count: defs.len(),
                    quick_reply: 0,
                    url: 0,
                };
                for (i, b) in defs.iter().enumerate().take(32) {
                    if b.kind.eq_ignore_ascii_case("QUICK_REPLY") {
                        shape.quick_reply |= 1 << i;
                    } else if b.kind.eq_ignore_ascii_case("URL") {
                        shape.url |= 1 << i;
                    }
                }
                shape
            });
        Self {
            category: t.category,
            status: t.status,
            body_parameters: t.body_parameter_count(),
            header,
            buttons,
        }
    }

    /// Meta's code and details when the send's header or button components do not fit the
    /// template. A media or location header the send leaves out is not refused here (the body
    /// count check and Meta's own review are stricter than the sandbox on that point).
    pub fn shape_error(&self, template: &Template) -> Option<(i64, String)> {
        for c in &template.components {
            match c {
                Component::Header { parameters } => {
                    let Some(shape) = self.header else { continue };
                    if let HeaderShape::Text(expected) = shape {
                        if parameters.len() != expected {
                            return Some((
                                132000,
                                format!(
                                    "template.components header: expected {expected} parameters, got {}",
                                    parameters.len()
                                ),
                            ));
                        }
                        continue;
                    }
                    let [p] = parameters.as_slice() else {
                        return Some((
                            132000,
                            format!(
                                "template.components header: a {} header takes 1 parameter, got {}",
                                shape.name(),
                                parameters.len()
                            ),
                        ));
                    };
                    let given = match p {
                        Parameter::Text { .. } => "text",
                        Parameter::Image { .. } => "image",
                        Parameter::Video { .. } => "video",
                        Parameter::Document { .. } => "document",
                        Parameter::Location { .. } => "location",
                    };
                    let fits = matches!(
                        (shape, p),
                        (HeaderShape::Image, Parameter::Image { .. })
                            | (HeaderShape::Video, Parameter::Video { .. })
                            | (HeaderShape::Document, Parameter::Document { .. })
                            | (HeaderShape::Location, Parameter::Location { .. })
                    );
                    if !fits {
                        return Some((
                            132012,
                            format!(
                                "template.components header: format mismatch, expected {}, received {given}",
                                shape.name()
                            ),
                        ));
                    }
                }
                Component::Button {
                    sub_type, index, ..
                } => {
                    let Some(shape) = self.buttons else { continue };
                    let Some(i) = index.parse::<usize>().ok().filter(|&i| i < shape.count) else {
                        return Some((
                            132000,
                            format!(
                                "template.components button index {index}: the template has {} buttons",
                                shape.count
                            ),
                        ));
                    };
                    let bit = 1u32.checked_shl(i as u32).unwrap_or(0);
                    let fits = match sub_type {
                        ButtonSubType::QuickReply => shape.quick_reply & bit != 0,
                        ButtonSubType::Url => shape.url & bit != 0,
                        ButtonSubType::Other => true,
                    };
                    if !fits {
                        return Some((
                            132012,
                            format!(
                                "template.components button index {index}: sub_type {sub_type:?} does not match the template's button"
                            ),
                        ));
                    }
                }
                Component::Body { .. } => {}
            }
        }
        None
    }
}

fn digits(number: &str) -> String {
    number.trim().trim_start_matches('+').to_owned()
}

impl SandboxState {
    pub fn new(config: SandboxConfig) -> Self {
        let delivery = DeliveryConfig {
            url: config.webhook_url.clone(),
            app_secret: config.app_secret.clone(),
            batch_max: config.webhook_batch_max,
            duplicate_rate: config.duplicate_rate,
            reorder: config.reorder,
            retry_interval: config.webhook_retry_interval,
        };
        Self {
            inner: Arc::new(Inner {
                config,
                numbers: RwLock::new(HashMap::new()),
                templates: RwLock::new(HashMap::new()),
                not_on_whatsapp: RwLock::new(HashSet::new()),
                faults: RwLock::new(Faults::default()),
                faults_active: AtomicBool::new(false),
                records: Mutex::new(VecDeque::new()),
                rejected: Mutex::new(VecDeque::new()),
                media: Mutex::new(MediaStore::default()),
                webhooks: Arc::new(WebhookQueue::new(delivery)),
                ids: IdGen::new(),
            }),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Registers (or re-registers, resetting its limits) a business number.
    pub fn register_number(
        &self,
        phone_number_id: &str,
        waba_id: &str,
        display_phone_number: &str,
        tier_mps: u32,
    ) {
        let number = Arc::new(Number {
            phone_number_id: phone_number_id.to_owned(),
            waba_id: waba_id.to_owned(),
            display_phone_number: display_phone_number.to_owned(),
            tier_mps: AtomicU32::new(tier_mps),
            messaging_limit_tier: Mutex::new("TIER_1K".into()),
            limits: Mutex::new(Limits::default()),
        });
        self.inner
            .numbers
            .write()
            .insert(phone_number_id.to_owned(), number);
    }

    /// The number, registering it on first use when `auto_register_numbers` is set.
    pub(crate) fn number(&self, phone_number_id: &str) -> Option<Arc<Number>> {
        if let Some(n) = self.inner.numbers.read().get(phone_number_id) {
            return Some(n.clone());
        }
        if !self.inner.config.auto_register_numbers {
            return None;
        }
        Some(self.auto_register(phone_number_id))
    }

    /// Control-plane actions name numbers explicitly, so they register unknown ones regardless.
    fn number_for_control(&self, phone_number_id: &str) -> Arc<Number> {
        if let Some(n) = self.inner.numbers.read().get(phone_number_id) {
            return n.clone();
        }
        self.auto_register(phone_number_id)
    }

    fn auto_register(&self, phone_number_id: &str) -> Arc<Number> {
        let mut numbers = self.inner.numbers.write();
        numbers
            .entry(phone_number_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Number {
                    phone_number_id: phone_number_id.to_owned(),
                    waba_id: format!("waba_{phone_number_id}"),
                    display_phone_number: phone_number_id.to_owned(),
                    tier_mps: AtomicU32::new(self.inner.config.default_tier_mps),
                    messaging_limit_tier: Mutex::new("TIER_1K".into()),
                    limits: Mutex::new(Limits::default()),
                })
            })
            .clone()
    }

    /// Adds (or replaces) a template; `{{n}}` placeholders in `body_text` set the body
    /// parameter count a send must supply.
    pub fn add_template(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
        category: TemplateCategory,
        body_text: &str,
        status: TemplateStatus,
    ) {
        let info = TemplateInfo {
            id: Some(self.inner.ids.numeric()),
            name: name.to_owned(),
            status,
            category,
            language: language.to_owned(),
            parameter_format: Default::default(),
            components: vec![TemplateComponentDef {
                kind: "BODY".into(),
                format: None,
                text: Some(body_text.to_owned()),
                buttons: None,
                example: None,
            }],
        };
        self.insert_template(waba_id, info);
    }

    /// Adds (or replaces) a template from its full definition, as `POST /message_templates`
    /// would create it but with `status` already decided (seeding a library as APPROVED). The
    /// sandbox then knows its header format and buttons as well as its body, and refuses sends
    /// whose header or button parameters do not fit them.
    pub fn add_template_def(
        &self,
        waba_id: &str,
        def: &CreateTemplateRequest,
        status: TemplateStatus,
    ) {
        let info = TemplateInfo {
            id: Some(self.inner.ids.numeric()),
            name: def.name.clone(),
            status,
            category: def.category,
            language: def.language.clone(),
            parameter_format: def.parameter_format,
            components: def.components.clone(),
        };
        self.insert_template(waba_id, info);
    }

    pub(crate) fn insert_template(&self, waba_id: &str, info: TemplateInfo) {
        let key = template_key(waba_id, &info.name, &info.language);
        self.inner.templates.write().insert(key, info);
    }

    /// Inserts only when the name and language are new for the WABA.
    pub(crate) fn create_template(&self, waba_id: &str, mut info: TemplateInfo) -> Option<String> {
        let key = template_key(waba_id, &info.name, &info.language);
        let mut templates = self.inner.templates.write();
        if templates.contains_key(&key) {
            return None;
        }
        let id = self.inner.ids.numeric();
        info.id = Some(id.clone());
        templates.insert(key, info);
        Some(id)
    }

    /// One template as the Graph API would list it.
    pub fn template(&self, waba_id: &str, name: &str, language: &str) -> Option<TemplateInfo> {
        self.inner
            .templates
            .read()
            .get(&template_key(waba_id, name, language))
            .cloned()
    }

    /// What a send of this template is checked against, without cloning the template.
    pub(crate) fn template_facts(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
    ) -> Option<TemplateFacts> {
        self.inner
            .templates
            .read()
            .get(&template_key(waba_id, name, language))
            .map(TemplateFacts::of)
    }

    /// Every template of a WABA, ordered by name then language.
    pub fn templates(&self, waba_id: &str) -> Vec<TemplateInfo> {
        let prefix = format!("{waba_id}\0");
        let mut list: Vec<TemplateInfo> = self
            .inner
            .templates
            .read()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, t)| t.clone())
            .collect();
        list.sort_by(|a, b| (&a.name, &a.language).cmp(&(&b.name, &b.language)));
        list
    }

    /// Changes a template's status and emits `message_template_status_update`. Returns false
    /// when the template does not exist.
    pub fn set_template_status(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
        status: TemplateStatus,
    ) -> bool {
        let key = template_key(waba_id, name, language);
        let update = {
            let mut templates = self.inner.templates.write();
            let Some(t) = templates.get_mut(&key) else {
                return false;
            };
            t.status = status;
            TemplateStatusUpdate {
                event: status,
                message_template_id: t.id.clone().unwrap_or_default(),
                message_template_name: t.name.clone(),
                message_template_language: t.language.clone(),
                reason: Some("NONE".into()),
                message_template_category: Some(t.category),
                other_info: None,
            }
        };
        self.emit_field(waba_id, Change::MessageTemplateStatusUpdate(update));
        true
    }

    /// Re-categorises a template and emits the completed form of `template_category_update`.
    pub fn set_template_category(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
        new_category: TemplateCategory,
    ) -> bool {
        let key = template_key(waba_id, name, language);
        let update = {
            let mut templates = self.inner.templates.write();
            let Some(t) = templates.get_mut(&key) else {
                return false;
            };
            let previous = t.category;
            t.category = new_category;
            TemplateCategoryUpdate {
                message_template_id: t.id.clone().unwrap_or_default(),
                message_template_name: t.name.clone(),
                message_template_language: t.language.clone(),
                previous_category: Some(previous),
                new_category: Some(new_category),
                correct_category: None,
                category_update_timestamp: None,
            }
        };
        self.emit_field(waba_id, Change::TemplateCategoryUpdate(update));
        true
    }

    /// Changes a number's throughput (and optionally its messaging-limit tier) and emits
    /// `phone_number_quality_update`.
    pub fn quality_update(
        &self,
        phone_number_id: &str,
        event: &str,
        tier_mps: Option<u32>,
        max_daily_conversations_per_business: Option<&str>,
    ) {
        let number = self.number_for_control(phone_number_id);
        if let Some(t) = tier_mps {
            number.tier_mps.store(t, Ordering::Relaxed);
        }
        if let Some(limit) = max_daily_conversations_per_business {
            *number.messaging_limit_tier.lock() = limit.to_owned();
        }
        let limit = number.messaging_limit_tier.lock().clone();
        let update = PhoneNumberQualityUpdate {
            display_phone_number: number.display_phone_number.clone(),
            event: event.to_owned(),
            current_limit: Some(limit.clone()),
            max_daily_conversations_per_business: Some(limit),
        };
        self.emit_field(&number.waba_id, Change::PhoneNumberQualityUpdate(update));
    }

    fn emit_field(&self, waba_id: &str, change: Change) {
        let key = GroupKey {
            waba_id: waba_id.to_owned(),
            phone_number_id: String::new(),
            display_phone_number: String::new(),
        };
        self.inner
            .webhooks
            .schedule(Instant::now(), key, Item::Field(change));
    }

    /// A patient's text message: opens the 24 h window and sends the inbound webhook.
    pub fn inject_inbound_text(&self, phone_number_id: &str, from: &str, body: &str) -> String {
        self.inject(phone_number_id, from, None, |m| {
            m.kind = InboundKind::Text;
            m.text = Some(InboundText {
                body: body.to_owned(),
            });
        })
    }

    /// A tap on a template's quick-reply button (`context_wamid`: the template's wamid).
    pub fn inject_button_tap(
        &self,
        phone_number_id: &str,
        from: &str,
        context_wamid: &str,
        text: &str,
        payload: &str,
    ) -> String {
        self.inject(phone_number_id, from, Some(context_wamid), |m| {
            m.kind = InboundKind::Button;
            m.button = Some(InboundButton {
                text: text.to_owned(),
                payload: payload.to_owned(),
            });
        })
    }

    fn inject(
        &self,
        phone_number_id: &str,
        from: &str,
        context_wamid: Option<&str>,
        fill: impl FnOnce(&mut InboundMessage),
    ) -> String {
        let number = self.number_for_control(phone_number_id);
        let from = digits(from);
        let now = SystemTime::now();
        number.limits.lock().windows.insert(from.clone(), now);
        let wamid = self.inner.ids.wamid();
        let mut message = InboundMessage {
            from: from.clone(),
            id: wamid.clone(),
            timestamp: unix_secs(now).to_string(),
            kind: InboundKind::Unknown,
            context: context_wamid.map(|id| InboundContext {
                from: Some(number.display_phone_number.clone()),
                id: Some(id.to_owned()),
            }),
            text: None,
            button: None,
            interactive: None,
            document: None,
            image: None,
            audio: None,
            errors: Vec::new(),
        };
        fill(&mut message);
        let tail: String = from
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let contact = InboundContact {
            profile: Some(Profile {
                name: format!("Patient {tail}"),
            }),
            wa_id: from,
        };
        self.inner.webhooks.schedule(
            Instant::now(),
            number.group_key(),
            Item::Inbound {
                contact,
                message: Box::new(message),
            },
        );
        wamid
    }

    /// Sends to this number are accepted, then fail with 131026.
    pub fn mark_not_on_whatsapp(&self, number: &str) {
        self.inner.not_on_whatsapp.write().insert(digits(number));
    }

    pub(crate) fn is_not_on_whatsapp(&self, digits: &str) -> bool {
        let set = self.inner.not_on_whatsapp.read();
        !set.is_empty() && set.contains(digits)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner
            .faults_active
            .store(faults.is_active(), Ordering::Relaxed);
        *self.inner.faults.write() = faults;
    }

    pub fn faults(&self) -> Faults {
        self.inner.faults.read().clone()
    }

    /// `None` on the fast path where no fault is configured.
    pub(crate) fn active_faults(&self) -> Option<Faults> {
        if self.inner.faults_active.load(Ordering::Relaxed) {
            Some(self.inner.faults.read().clone())
        } else {
            None
        }
    }

    pub(crate) fn record_sent(&self, record: SentRecord) {
        let limit = self.inner.config.record_limit;
        if limit == 0 {
            return;
        }
        let mut records = self.inner.records.lock();
        if records.len() >= limit {
            records.pop_front();
        }
        records.push_back(record);
    }

    pub(crate) fn record_rejected(&self, phone_number_id: &str, to: Option<String>, code: i64) {
        let limit = self.inner.config.record_limit;
        if limit == 0 {
            return;
        }
        let mut rejected = self.inner.rejected.lock();
        if rejected.len() >= limit {
            rejected.pop_front();
        }
        rejected.push_back(RejectedRecord {
            phone_number_id: phone_number_id.to_owned(),
            to,
            code,
            at: SystemTime::now(),
        });
    }

    /// Everything accepted (within `record_limit`), in acceptance order.
    pub fn sent(&self) -> Vec<SentRecord> {
        self.inner.records.lock().iter().cloned().collect()
    }

    pub fn sent_to(&self, phone_number_id: &str) -> Vec<SentRecord> {
        self.inner
            .records
            .lock()
            .iter()
            .filter(|r| r.phone_number_id == phone_number_id)
            .cloned()
            .collect()
    }

    pub fn rejected(&self) -> Vec<RejectedRecord> {
        self.inner.rejected.lock().iter().cloned().collect()
    }

    /// Webhook items not yet delivered (scheduled or awaiting retry).
    pub fn webhook_backlog(&self) -> usize {
        self.inner.webhooks.backlog()
    }

    /// (webhook POSTs answered 200, POST attempts that failed and were queued for retry).
    pub fn webhook_post_counts(&self) -> (u64, u64) {
        self.inner.webhooks.post_counts()
    }

    /// Forgets numbers, templates, windows, media, records, faults and undelivered webhooks.
    pub fn reset(&self) {
        self.inner.numbers.write().clear();
        self.inner.templates.write().clear();
        self.inner.not_on_whatsapp.write().clear();
        self.set_faults(Faults::default());
        self.inner.records.lock().clear();
        self.inner.rejected.lock().clear();
        *self.inner.media.lock() = MediaStore::default();
        self.inner.webhooks.clear();
    }

    pub(crate) fn store_media(&self, mime_type: String, bytes: Bytes) -> String {
        let id = self.inner.ids.numeric();
        let mut media = self.inner.media.lock();
        media.bytes += bytes.len();
        media.items.insert(id.clone(), (mime_type, bytes));
        media.order.push_back(id.clone());
        while media.bytes > MEDIA_BYTES_CAP {
            let Some(old) = media.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = media.items.remove(&old) {
                media.bytes -= b.len();
            }
        }
        id
    }

    pub(crate) fn has_media(&self, id: &str) -> bool {
        self.inner.media.lock().items.contains_key(id)
    }

    /// An uploaded file's MIME type and bytes.
    pub fn media(&self, id: &str) -> Option<(String, Bytes)> {
        self.inner.media.lock().items.get(id).cloned()
    }

    /// True when the patient's customer-service window with this number is open now.
    pub fn window_open(&self, phone_number_id: &str, to: &str) -> bool {
        let Some(number) = self.inner.numbers.read().get(phone_number_id).cloned() else {
            return false;
        };
        let last = number.limits.lock().windows.get(&digits(to)).copied();
        super::rules::window_open(last, SystemTime::now())
    }

    pub(crate) fn status_latency(&self) -> Duration {
        self.inner.config.status_latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::send::admit;
    use crate::wire::{ButtonParameter, Language, Location, Media};

    const WABA: &str = "waba_1";
    const PN: &str = "pn_1";

    fn def(json: serde_json::Value) -> CreateTemplateRequest {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn state() -> SandboxState {
        let st = SandboxState::new(SandboxConfig {
            unlimited: true,
            ..SandboxConfig::default()
        });
        st.register_number(PN, WABA, "918045550001", 80);
        st.add_template_def(
            WABA,
            &def(serde_json::json!({
                "name": "lab_report_ready", "category": "UTILITY", "language": "hi",
                "components": [
                    {"type": "HEADER", "format": "DOCUMENT", "example": {"header_handle": ["https://example.com/r.pdf"]}},
                    {"type": "BODY", "text": "नमस्ते {{1}}, आपकी रिपोर्ट {{2}} तैयार है ({{3}})।"},
                ]})),
            TemplateStatus::Approved,
        );
        st.add_template_def(
            WABA,
            &def(serde_json::json!({
            "name": "visit_reminder", "category": "UTILITY", "language": "en",
            "components": [
                {"type": "BODY", "text": "Hi {{1}}, see you on {{2}}."},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Confirm"},
                    {"type": "QUICK_REPLY", "text": "Cancel"},
                    {"type": "QUICK_REPLY", "text": "Reschedule"}]},
            ]})),
            TemplateStatus::Approved,
        );
        st
    }

    fn send(name: &str, lang: &str, components: Vec<Component>) -> OutgoingMessage {
        OutgoingMessage {
            messaging_product: "whatsapp".into(),
            recipient_type: "individual".into(),
            to: "+919876543210".into(),
            context: None,
            biz_opaque_callback_data: None,
            content: crate::wire::Content::Template {
                template: Template {
                    name: name.into(),
                    language: Language {
                        code: lang.into(),
                        policy: None,
                    },
                    components,
                },
            },
        }
    }

    fn body(n: usize) -> Component {
        Component::Body {
            parameters: (0..n)
                .map(|i| Parameter::Text {
                    text: format!("v{i}"),
                    parameter_name: None,
                })
                .collect(),
        }
    }

    fn document() -> Component {
        Component::Header {
            parameters: vec![Parameter::Document {
                document: Media {
                    link: Some("https://example.com/r.pdf".into()),
                    filename: Some("r.pdf".into()),
                    ..Media::default()
                },
            }],
        }
    }

    fn quick_reply(index: &str) -> Component {
        Component::Button {
            sub_type: ButtonSubType::QuickReply,
            index: index.into(),
            parameters: vec![ButtonParameter::Payload {
                payload: "P".into(),
            }],
        }
    }

    fn code(r: Result<crate::wire::SendResponse, super::super::send::Rejection>) -> i64 {
        match r {
            Ok(_) => 0,
            Err(e) => e.code,
        }
    }

    #[test]
    fn a_seeded_definition_is_listed_with_its_components() {
        let st = state();
        let t = st
            .template(WABA, "lab_report_ready", "hi")
            .unwrap_or_else(|| panic!("seeded"));
        assert_eq!(t.status, TemplateStatus::Approved);
        assert_eq!(t.components.len(), 2);
        assert_eq!(t.body_parameter_count(), 3);
        assert!(t.id.is_some());
    }

    #[test]
    fn header_parameters_must_match_the_header_format() {
        let st = state();
        let ok = send("lab_report_ready", "hi", vec![document(), body(3)]);
        assert_eq!(code(admit(&st, PN, ok)), 0);
        let location = Component::Header {
            parameters: vec![Parameter::Location {
                location: Location {
                    latitude: 13.0,
                    longitude: 80.2,
                    name: None,
                    address: None,
                },
            }],
        };
        let wrong = send("lab_report_ready", "hi", vec![location, body(3)]);
        let err = admit(&st, PN, wrong).map(|_| ()).unwrap_err();
        assert_eq!(err.code, 132012, "{err}");
        assert!(
            err.details.contains("expected DOCUMENT, received location"),
            "{err}"
        );
        let two = Component::Header {
            parameters: vec![
                Parameter::Text {
                    text: "a".into(),
                    parameter_name: None,
                },
                Parameter::Text {
                    text: "b".into(),
                    parameter_name: None,
                },
            ],
        };
        assert_eq!(
            code(admit(
                &st,
                PN,
                send("lab_report_ready", "hi", vec![two, body(3)])
            )),
            132000
        );
    }

    #[test]
    fn buttons_must_exist_and_be_of_the_template_kind() {
        let st = state();
        let taps = vec![
            body(2),
            quick_reply("0"),
            quick_reply("1"),
            quick_reply("2"),
        ];
        assert_eq!(code(admit(&st, PN, send("visit_reminder", "en", taps))), 0);
        let beyond = vec![body(2), quick_reply("3")];
        assert_eq!(
            code(admit(&st, PN, send("visit_reminder", "en", beyond))),
            132000
        );
        let url = vec![
            body(2),
            Component::Button {
                sub_type: ButtonSubType::Url,
                index: "0".into(),
                parameters: vec![ButtonParameter::Text { text: "x".into() }],
            },
        ];
        assert_eq!(
            code(admit(&st, PN, send("visit_reminder", "en", url))),
            132012
        );
    }

    #[test]
    fn body_only_templates_accept_any_header_and_buttons_as_before() {
        let st = state();
        st.add_template(
            WABA,
            "clinic_location",
            "en",
            TemplateCategory::Utility,
            "We are here {{1}} today",
            TemplateStatus::Approved,
        );
        let m = send(
            "clinic_location",
            "en",
            vec![document(), body(1), quick_reply("7")],
        );
        assert_eq!(code(admit(&st, PN, m)), 0);
    }
}
