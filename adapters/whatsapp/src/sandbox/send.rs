//! The send path: admission in Meta's order (validation, pair rate, throughput, template,
//! window), then the record and the scheduled statuses.

use std::time::{Instant, SystemTime};

use super::pricing;
use super::rules::{self, PairGcra};
use super::state::{unix_secs, SandboxState, SentRecord};
use super::webhooks::Item;
use crate::errors;
use crate::validate;
use crate::wire::{
    Content, Media, OutgoingMessage, Parameter, Pricing, SendContact, SendResponse, SentMessage,
    Status, StatusKind, TemplateCategory, WebhookError, WebhookErrorData,
};

/// A refused send: Meta's code and the details naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("({code}) {details}")]
pub struct Rejection {
    pub code: i64,
    pub details: String,
}

impl Rejection {
    pub fn new(code: i64, details: impl Into<String>) -> Self {
        Self {
            code,
            details: details.into(),
        }
    }
}

/// Checks and, if admitted, records `msg` and schedules its statuses.
pub fn admit(
    state: &SandboxState,
    phone_number_id: &str,
    msg: OutgoingMessage,
) -> Result<SendResponse, Rejection> {
    let number = state.number(phone_number_id).ok_or_else(|| {
        Rejection::new(
            100,
            format!("Object with ID '{phone_number_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"),
        )
    })?;
    validate::validate(&msg)
        .map_err(|v| Rejection::new(v.code, format!("{}: {}", v.field, v.details)))?;
    let to_digits = validate::recipient_digits(&msg.to)
        .map(str::to_owned)
        .ok_or_else(|| Rejection::new(100, "to: not a phone number"))?;
    check_media(state, &msg.content)?;

    // Template facts are read before the number's lock so the two locks are never nested.
    let template: Result<Option<TemplateCategory>, Rejection> = match &msg.content {
        Content::Template { template } => {
            match state.template_facts(&number.waba_id, &template.name, &template.language.code) {
                None => Err(Rejection::new(
                    132001,
                    format!(
                        "template name ({}) does not exist in {}",
                        template.name, template.language.code
                    ),
                )),
                Some(facts) => {
                    let expected = facts.body_parameters;
                    if let Some((code, why)) = rules::template_status_error(facts.status) {
                        Err(Rejection::new(
                            code,
                            format!("template.name ({}): {why}", template.name),
                        ))
                    } else {
                        let given = rules::body_parameters_sent(&msg.content);
                        if given != expected {
                            Err(Rejection::new(
                                132000,
                                format!("template.components body: expected {expected} parameters, got {given}"),
                            ))
                        } else if let Some((code, why)) = facts.shape_error(template) {
                            Err(Rejection::new(code, why))
                        } else {
                            Ok(Some(facts.category))
                        }
                    }
                }
            }
        }
        _ => Ok(None),
    };

    let unlimited = state.config().unlimited;
    let (window_open, now, wall) = {
        let mut limits = number.limits.lock();
        // Read the clocks under the lock so acceptance times are in commit order: tests measure
        // "at most tier in any second" over the recorded times.
        let now = Instant::now();
        let wall = SystemTime::now();
        if !unlimited {
            let pair_ok = limits
                .pairs
                .get(&to_digits)
                .is_none_or(|g| g.would_admit(now));
            if !pair_ok {
                return Err(Rejection::new(
                    131056,
                    "pair rate limit: too many messages to this recipient",
                ));
            }
            let tier = number.tier_mps.load(std::sync::atomic::Ordering::Relaxed);
            if !limits.throughput.would_admit(now, tier) {
                return Err(Rejection::new(
                    130429,
                    format!("throughput of {tier} messages per second exceeded"),
                ));
            }
        }
        let category = template.clone()?;
        let open = rules::window_open(limits.windows.get(&to_digits).copied(), wall);
        if category.is_none() && !open {
            return Err(Rejection::new(
                131047,
                "more than 24 hours have passed since the recipient last replied",
            ));
        }
        if !unlimited {
            limits.throughput.commit(now);
            limits.sweep_pairs(now);
            limits
                .pairs
                .entry(to_digits.clone())
                .or_insert_with(|| PairGcra::new(now))
                .commit(now);
        }
        (open, now, wall)
    };
    let category = template.unwrap_or(None);

    let wamid = state.inner.ids.wamid();
    let price = pricing::price(category, window_open);
    let response = SendResponse {
        messaging_product: "whatsapp".into(),
        contacts: vec![SendContact {
            input: msg.to.clone(),
            wa_id: to_digits.clone(),
        }],
        messages: vec![SentMessage {
            id: wamid.clone(),
            message_status: category.map(|_| "accepted".to_owned()),
        }],
    };
    if state.inner.webhooks.enabled() {
        schedule_statuses(state, &number, &wamid, &to_digits, &msg, &price, now, wall);
    }
    state.record_sent(SentRecord {
        phone_number_id: number.phone_number_id.clone(),
        wamid,
        to: to_digits,
        at: wall,
        message: msg,
        category,
        pricing: price,
    });
    Ok(response)
}

fn check_media(state: &SandboxState, content: &Content) -> Result<(), Rejection> {
    let check = |field: &str, m: &Media| match &m.id {
        Some(id) if !state.has_media(id) => Err(Rejection::new(
            131053,
            format!("{field}.id: no uploaded media with id {id}"),
        )),
        _ => Ok(()),
    };
    match content {
        Content::Document { document } => check("document", document),
        Content::Image { image } => check("image", image),
        Content::Template { template } => {
            for c in &template.components {
                if let crate::wire::Component::Header { parameters } = c {
                    for p in parameters {
                        match p {
                            Parameter::Document { document } => check("header.document", document)?,
                            Parameter::Image { image } => check("header.image", image)?,
                            Parameter::Video { video } => check("header.video", video)?,
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn schedule_statuses(
    state: &SandboxState,
    number: &super::state::Number,
    wamid: &str,
    to_digits: &str,
    msg: &OutgoingMessage,
    price: &Pricing,
    now: Instant,
    wall: SystemTime,
) {
    let latency = state.status_latency();
    let key = number.group_key();
    let status = |kind: StatusKind, step: u32, with_pricing: bool| {
        let at = wall + latency * step;
        Status {
            id: wamid.to_owned(),
            status: kind,
            timestamp: unix_secs(at).to_string(),
            recipient_id: to_digits.to_owned(),
            biz_opaque_callback_data: msg.biz_opaque_callback_data.clone(),
            pricing: with_pricing.then(|| price.clone()),
            conversation: with_pricing.then(|| {
                pricing::conversation(
                    format!("conv_{}", &wamid[wamid.len().saturating_sub(12)..]),
                    price,
                    unix_secs(wall) + 24 * 3600,
                )
            }),
            errors: Vec::new(),
        }
    };
    let queue = &state.inner.webhooks;
    if state.is_not_on_whatsapp(to_digits) {
        let mut failed = status(StatusKind::Failed, 1, false);
        failed.errors = vec![WebhookError {
            code: 131026,
            title: errors::title(131026).into(),
            message: Some(errors::title(131026).into()),
            error_data: Some(WebhookErrorData {
                details: "Message Undeliverable: the recipient is not a WhatsApp user.".into(),
            }),
        }];
        queue.schedule(now + latency, key, Item::Status(failed));
        return;
    }
    queue.schedule(
        now + latency,
        key.clone(),
        Item::Status(status(StatusKind::Sent, 1, true)),
    );
    queue.schedule(
        now + latency * 2,
        key.clone(),
        Item::Status(status(StatusKind::Delivered, 2, true)),
    );
    if state.config().read_receipts {
        queue.schedule(
            now + latency * 3,
            key,
            Item::Status(status(StatusKind::Read, 3, false)),
        );
    }
}
