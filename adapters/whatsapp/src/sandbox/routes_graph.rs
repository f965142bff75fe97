//! The Graph API routes, under any `/{version}/` prefix, answering like Meta.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::multipart;
use super::rules;
use super::send::{self, Rejection};
use super::state::SandboxState;
use crate::errors;
use crate::wire::{
    CreateTemplateRequest, CreateTemplateResponse, ErrorEnvelope, GraphError, MarkRead,
    MediaUploadResponse, OutgoingMessage, PhoneNumberInfo, SuccessResponse, TemplateInfo,
    TemplateList, TemplateStatus, Throughput,
};

const MAX_DOCUMENT: usize = 100 * 1024 * 1024;
const MAX_IMAGE: usize = 5 * 1024 * 1024;
const MAX_AUDIO_VIDEO: usize = 16 * 1024 * 1024;
/// The upload route buffers the whole body; a little over the largest file plus form overhead.
const MAX_UPLOAD_BODY: usize = MAX_DOCUMENT + 1024 * 1024;
const DEFAULT_PAGE: usize = 25;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/{version}/{id}/messages", web::post().to(messages))
        .service(
            web::resource("/{version}/{id}/media")
                .app_data(web::PayloadConfig::new(MAX_UPLOAD_BODY))
                .route(web::post().to(upload_media)),
        )
        .service(
            web::resource("/{version}/{id}/message_templates")
                .route(web::post().to(create_template))
                .route(web::get().to(list_templates)),
        )
        .route("/{version}/{id}", web::get().to(phone_number_info));
}

/// Meta's error envelope with the HTTP status third parties report for the code.
pub fn graph_error(code: i64, details: &str) -> HttpResponse {
    let status =
        StatusCode::from_u16(rules::http_status_for(code)).unwrap_or(StatusCode::BAD_REQUEST);
    let mut error = GraphError::new(code, errors::title(code), details);
    error.fbtrace_id = Some("SandboxTrace".into());
    HttpResponse::build(status).json(ErrorEnvelope { error })
}

fn authorized(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty())
}

fn id(req: &HttpRequest) -> &str {
    req.match_info().get("id").unwrap_or_default()
}

fn unauthorized(state: &SandboxState, id: &str) -> HttpResponse {
    state.record_rejected(id, None, 190);
    graph_error(190, "Authorization: Bearer <access token> is required")
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

async fn messages(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let pnid = id(&req);
    if !authorized(&req) {
        return unauthorized(&state, pnid);
    }
    let faults = state.active_faults();
    let mut hold_after_send = None;
    if let Some(f) = &faults {
        if roll(f.http_5xx_rate) {
            state.record_rejected(pnid, None, 0);
            return HttpResponse::ServiceUnavailable()
                .content_type("text/html")
                .body("<html><body>503 Service Unavailable</body></html>");
        }
        if roll(f.error_rate) {
            state.record_rejected(pnid, None, f.error_code);
            return graph_error(f.error_code, "injected fault");
        }
        if roll(f.timeout_rate) {
            if f.timeout_sends {
                hold_after_send = Some(f.hold());
            } else {
                actix_web::rt::time::sleep(f.hold()).await;
                state.record_rejected(pnid, None, 0);
                return HttpResponse::GatewayTimeout().body("timeout");
            }
        } else if f.response_delay_ms > 0 {
            hold_after_send = Some(Duration::from_millis(f.response_delay_ms));
        }
    }
    let msg: OutgoingMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => return not_a_send(&state, pnid, &body, &e),
    };
    let to = msg.to.clone();
    match send::admit(&state, pnid, msg) {
        Ok(resp) => {
            if let Some(hold) = hold_after_send {
                actix_web::rt::time::sleep(hold).await;
            }
            HttpResponse::Ok().json(resp)
        }
        Err(Rejection { code, details }) => {
            let digits = crate::validate::recipient_digits(&to).map(str::to_owned);
            state.record_rejected(pnid, digits, code);
            graph_error(code, &details)
        }
    }
}

/// A body that is not a send may still be a mark-as-read; anything else is error 100.
fn not_a_send(
    state: &SandboxState,
    pnid: &str,
    body: &[u8],
    e: &serde_json::Error,
) -> HttpResponse {
    if let Ok(read) = serde_json::from_slice::<MarkRead>(body) {
        if read.status == "read" && !read.message_id.is_empty() {
            return HttpResponse::Ok().json(SuccessResponse { success: true });
        }
        state.record_rejected(pnid, None, 100);
        return graph_error(100, "status: only \"read\" is supported");
    }
    state.record_rejected(pnid, None, 100);
    graph_error(100, &format!("request body: {e}"))
}

async fn upload_media(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let pnid = id(&req);
    if !authorized(&req) {
        return unauthorized(&state, pnid);
    }
    if state.number(pnid).is_none() {
        state.record_rejected(pnid, None, 100);
        return graph_error(100, &format!("Object with ID '{pnid}' does not exist"));
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parts = match multipart::boundary(ct).and_then(|b| multipart::parse(&b, &body)) {
        Ok(p) => p,
        Err(e) => {
            state.record_rejected(pnid, None, 100);
            return graph_error(100, &e.to_string());
        }
    };
    let field = |name: &str| parts.iter().find(|p| p.name == name);
    if field("messaging_product").map(|p| p.data) != Some(b"whatsapp".as_slice()) {
        state.record_rejected(pnid, None, 100);
        return graph_error(100, "messaging_product: must be \"whatsapp\"");
    }
    let Some(file) = field("file") else {
        state.record_rejected(pnid, None, 100);
        return graph_error(100, "file: is required");
    };
    let mime = field("type")
        .map(|p| String::from_utf8_lossy(p.data).trim().to_owned())
        .or_else(|| file.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    let limit = if mime.starts_with("image/") {
        MAX_IMAGE
    } else if mime.starts_with("audio/") || mime.starts_with("video/") {
        MAX_AUDIO_VIDEO
    } else {
        MAX_DOCUMENT
    };
    if file.data.is_empty() || file.data.len() > limit {
        state.record_rejected(pnid, None, 131053);
        return graph_error(
            131053,
            &format!(
                "file: {} bytes; {mime} must be 1 to {limit} bytes",
                file.data.len()
            ),
        );
    }
    let bytes = body.slice_ref(file.data);
    let media_id = state.store_media(mime, bytes);
    HttpResponse::Ok().json(MediaUploadResponse { id: media_id })
}

fn valid_template_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

async fn create_template(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let waba = id(&req);
    if !authorized(&req) {
        return unauthorized(&state, waba);
    }
    let create: CreateTemplateRequest = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            state.record_rejected(waba, None, 100);
            return graph_error(100, &format!("request body: {e}"));
        }
    };
    if !valid_template_name(&create.name) {
        state.record_rejected(waba, None, 100);
        return graph_error(100, "name: lowercase letters, digits and _ only");
    }
    if create.language.is_empty() {
        state.record_rejected(waba, None, 100);
        return graph_error(100, "language: is required");
    }
    let category = create.category;
    let info = TemplateInfo {
        id: None,
        name: create.name,
        status: TemplateStatus::Pending,
        category,
        language: create.language,
        parameter_format: create.parameter_format,
        components: create.components,
    };
    let (name, language) = (info.name.clone(), info.language.clone());
    match state.create_template(waba, info) {
        Some(id) => HttpResponse::Ok().json(CreateTemplateResponse {
            id,
            status: TemplateStatus::Pending,
            category,
        }),
        None => {
            state.record_rejected(waba, None, 100);
            graph_error(
                100,
                &format!("name: a template named {name} already exists in language {language}"),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after: Option<String>,
}

async fn list_templates(
    state: web::Data<SandboxState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let waba = id(&req);
    if !authorized(&req) {
        return unauthorized(&state, waba);
    }
    let all = state.templates(waba);
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 1000);
    let start = query
        .after
        .as_deref()
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(0)
        .min(all.len());
    let end = (start + limit).min(all.len());
    let data: Vec<TemplateInfo> = all[start..end].to_vec();
    let mut paging = serde_json::json!({
        "cursors": { "before": start.to_string(), "after": end.to_string() }
    });
    if end < all.len() {
        paging["next"] =
            serde_json::Value::String(format!("{}?limit={limit}&after={end}", req.path()));
    }
    HttpResponse::Ok().json(TemplateList {
        data,
        paging: Some(paging),
    })
}

async fn phone_number_info(state: web::Data<SandboxState>, req: HttpRequest) -> HttpResponse {
    let pnid = id(&req);
    if !authorized(&req) {
        return unauthorized(&state, pnid);
    }
    let Some(number) = state.number(pnid) else {
        state.record_rejected(pnid, None, 100);
        return graph_error(100, &format!("Object with ID '{pnid}' does not exist"));
    };
    let tier = number.tier_mps.load(std::sync::atomic::Ordering::Relaxed);
    let level = match tier {
        t if t >= 1000 => "HIGH",
        t if t <= 20 => "NOT_APPLICABLE",
        _ => "STANDARD",
    };
    let limit_tier = number.messaging_limit_tier.lock().clone();
    HttpResponse::Ok().json(PhoneNumberInfo {
        id: number.phone_number_id.clone(),
        display_phone_number: Some(number.display_phone_number.clone()),
        quality_rating: Some("GREEN".into()),
        throughput: Some(Throughput {
            level: level.into(),
        }),
        messaging_limit_tier: Some(limit_tier),
    })
}
