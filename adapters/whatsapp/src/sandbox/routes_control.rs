//! `/_sim/…`: JSON control API for tests and demos driven with curl.

use std::time::UNIX_EPOCH;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::config::Faults;
use super::state::{RejectedRecord, SandboxState, SentRecord};
use crate::wire::{OutgoingMessage, Pricing, TemplateCategory, TemplateStatus};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_sim")
            .app_data(web::JsonConfig::default().error_handler(|err, _| {
                let body = serde_json::json!({ "error": err.to_string() });
                actix_web::error::InternalError::from_response(
                    err,
                    HttpResponse::BadRequest().json(body),
                )
                .into()
            }))
            .route("/numbers", web::post().to(register_number))
            .route("/templates", web::post().to(add_template))
            .route("/templates/status", web::post().to(template_status))
            .route("/templates/category", web::post().to(template_category))
            .route("/inbound", web::post().to(inbound))
            .route("/not-on-whatsapp", web::post().to(not_on_whatsapp))
            .route("/faults", web::put().to(put_faults))
            .route("/faults", web::get().to(get_faults))
            .route("/sent", web::get().to(sent))
            .route("/rejected", web::get().to(rejected))
            .route("/reset", web::post().to(reset))
            .route("/quality", web::post().to(quality)),
    );
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ok": true }))
}

fn not_found(what: &str) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": format!("{what} not found") }))
}

#[derive(Debug, Deserialize)]
struct NumberReq {
    phone_number_id: String,
    waba_id: String,
    #[serde(default)]
    display_phone_number: Option<String>,
    #[serde(default)]
    tier_mps: Option<u32>,
}

async fn register_number(
    state: web::Data<SandboxState>,
    req: web::Json<NumberReq>,
) -> HttpResponse {
    let display = req
        .display_phone_number
        .clone()
        .unwrap_or_else(|| req.phone_number_id.clone());
    let tier = req.tier_mps.unwrap_or(state.config().default_tier_mps);
    state.register_number(&req.phone_number_id, &req.waba_id, &display, tier);
    ok()
}

#[derive(Debug, Deserialize)]
struct TemplateReq {
    waba_id: String,
    name: String,
    language: String,
    category: TemplateCategory,
    #[serde(default)]
    body_text: String,
    #[serde(default = "approved")]
    status: TemplateStatus,
}

fn approved() -> TemplateStatus {
    TemplateStatus::Approved
}

async fn add_template(state: web::Data<SandboxState>, req: web::Json<TemplateReq>) -> HttpResponse {
    state.add_template(
        &req.waba_id,
        &req.name,
        &req.language,
        req.category,
        &req.body_text,
        req.status,
    );
    ok()
}

#[derive(Debug, Deserialize)]
struct TemplateStatusReq {
    waba_id: String,
    name: String,
    language: String,
    status: TemplateStatus,
}

async fn template_status(
    state: web::Data<SandboxState>,
    req: web::Json<TemplateStatusReq>,
) -> HttpResponse {
    if state.set_template_status(&req.waba_id, &req.name, &req.language, req.status) {
        ok()
    } else {
        not_found("template")
    }
}

#[derive(Debug, Deserialize)]
struct TemplateCategoryReq {
    waba_id: String,
    name: String,
    language: String,
    new_category: TemplateCategory,
}

async fn template_category(
    state: web::Data<SandboxState>,
    req: web::Json<TemplateCategoryReq>,
) -> HttpResponse {
    if state.set_template_category(&req.waba_id, &req.name, &req.language, req.new_category) {
        ok()
    } else {
        not_found("template")
    }
}

#[derive(Debug, Deserialize)]
struct ButtonReq {
    text: String,
    payload: String,
}

#[derive(Debug, Deserialize)]
struct InboundReq {
    phone_number_id: String,
    from: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    button: Option<ButtonReq>,
    #[serde(default)]
    context_wamid: Option<String>,
}

async fn inbound(state: web::Data<SandboxState>, req: web::Json<InboundReq>) -> HttpResponse {
    let wamid = match (&req.text, &req.button) {
        (Some(text), None) => state.inject_inbound_text(&req.phone_number_id, &req.from, text),
        (None, Some(b)) => state.inject_button_tap(
            &req.phone_number_id,
            &req.from,
            req.context_wamid.as_deref().unwrap_or_default(),
            &b.text,
            &b.payload,
        ),
        _ => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({ "error": "give exactly one of text or button" }))
        }
    };
    HttpResponse::Ok().json(serde_json::json!({ "wamid": wamid }))
}

#[derive(Debug, Deserialize)]
struct NotOnWhatsappReq {
    number: String,
}

async fn not_on_whatsapp(
    state: web::Data<SandboxState>,
    req: web::Json<NotOnWhatsappReq>,
) -> HttpResponse {
    state.mark_not_on_whatsapp(&req.number);
    ok()
}

async fn put_faults(state: web::Data<SandboxState>, req: web::Json<Faults>) -> HttpResponse {
    state.set_faults(req.into_inner());
    HttpResponse::Ok().json(state.faults())
}

async fn get_faults(state: web::Data<SandboxState>) -> HttpResponse {
    HttpResponse::Ok().json(state.faults())
}

#[derive(Debug, Deserialize)]
struct SentQuery {
    phone_number_id: Option<String>,
    to: Option<String>,
}

/// A sent record as the control API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SentView {
    pub wamid: String,
    pub to: String,
    pub phone_number_id: String,
    pub at_ms: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub category: Option<TemplateCategory>,
    pub pricing: Pricing,
    pub message: OutgoingMessage,
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl From<SentRecord> for SentView {
    fn from(r: SentRecord) -> Self {
        Self {
            kind: r.message.content.kind().to_owned(),
            wamid: r.wamid,
            to: r.to,
            phone_number_id: r.phone_number_id,
            at_ms: millis(r.at),
            category: r.category,
            pricing: r.pricing,
            message: r.message,
        }
    }
}

async fn sent(state: web::Data<SandboxState>, q: web::Query<SentQuery>) -> HttpResponse {
    let to = q.to.as_deref().map(|t| t.trim_start_matches('+'));
    let list: Vec<SentView> = state
        .sent()
        .into_iter()
        .filter(|r| {
            q.phone_number_id
                .as_deref()
                .is_none_or(|p| r.phone_number_id == p)
        })
        .filter(|r| to.is_none_or(|t| r.to == t))
        .map(SentView::from)
        .collect();
    HttpResponse::Ok().json(list)
}

#[derive(Debug, Serialize)]
struct RejectedView {
    phone_number_id: String,
    to: Option<String>,
    code: i64,
    at_ms: u64,
}

async fn rejected(state: web::Data<SandboxState>) -> HttpResponse {
    let list: Vec<RejectedView> = state
        .rejected()
        .into_iter()
        .map(|r: RejectedRecord| RejectedView {
            phone_number_id: r.phone_number_id,
            to: r.to,
            code: r.code,
            at_ms: millis(r.at),
        })
        .collect();
    HttpResponse::Ok().json(list)
}

async fn reset(state: web::Data<SandboxState>) -> HttpResponse {
    state.reset();
    ok()
}

#[derive(Debug, Deserialize)]
struct QualityReq {
    phone_number_id: String,
    event: String,
    #[serde(default)]
    tier_mps: Option<u32>,
    #[serde(default)]
    max_daily_conversations_per_business: Option<String>,
}

async fn quality(state: web::Data<SandboxState>, req: web::Json<QualityReq>) -> HttpResponse {
    state.quality_update(
        &req.phone_number_id,
        &req.event,
        req.tier_mps,
        req.max_daily_conversations_per_business.as_deref(),
    );
    ok()
}
