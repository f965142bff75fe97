//! `/v1/templates`: the clinic's catalog, submission to Meta, sync, and accepting a new category.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use whatsapp_cloud::wire::{CreateTemplateRequest, TemplateInfo};

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::catalog::{self, CatalogError};
use crate::clock::now_ms;

fn meta_problem(e: whatsapp_cloud::ClientError) -> Problem {
    match e {
        whatsapp_cloud::ClientError::Api { error, .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "meta-rejected",
            "Meta rejected the request",
            format!("({}) {}", error.code, error.text()),
        ),
        other => Problem::new(
            StatusCode::BAD_GATEWAY,
            "meta-unavailable",
            "Meta did not answer",
            other.to_string(),
        )
        .retry_after(5),
    }
}

fn catalog_problem(e: CatalogError) -> Problem {
    match e {
        CatalogError::Store(s) => Problem::from(s),
        CatalogError::Meta(m) => meta_problem(m),
    }
}

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let mut templates = state.store.templates(&clinic.id).await?;
    templates.sort_by(|a, b| (&a.name, &a.language).cmp(&(&b.name, &b.language)));
    Ok(HttpResponse::Ok().json(json!({"templates": templates})))
}

pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let t: CreateTemplateRequest = super::body::parse_json_body(&body)?;
    if t.name.is_empty()
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Problem::invalid_field(
            "name",
            "lowercase letters, digits and _ only",
        ));
    }
    let created = state
        .meta
        .client(&clinic)
        .create_template(state.meta.token(&clinic), &clinic.waba_id, &t)
        .await
        .map_err(meta_problem)?;
    let info = TemplateInfo {
        id: Some(created.id),
        name: t.name,
        status: created.status,
        category: created.category,
        language: t.language,
        parameter_format: t.parameter_format,
        components: t.components,
    };
    let record = catalog::record_from_info(&info, None);
    state.store.put_template(&clinic.id, &record).await?;
    state.actors.templates_changed(&clinic.id);
    state
        .meta
        .approve_later(&clinic, &record.name, &record.language);
    Ok(HttpResponse::Created().json(record))
}

pub async fn sync(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    super::rate_limit(&state, &clinic.id).await?;
    let n = catalog::sync(&*state.store, &state.meta, &clinic)
        .await
        .map_err(catalog_problem)?;
    state.actors.templates_changed(&clinic.id);
    Ok(HttpResponse::Ok().json(json!({"synced": n})))
}

pub async fn accept_category(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let (name, language) = path.into_inner();
    let mut r = state
        .store
        .template(&clinic.id, &name, &language)
        .await?
        .ok_or_else(|| Problem::not_found("no such template"))?;
    let Some(new) = r.pending_category.take() else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "nothing-to-accept",
            "No pending category",
            "Meta has not re-categorised this template",
        ));
    };
    r.category = new;
    r.updated_ms = now_ms();
    state.store.put_template(&clinic.id, &r).await?;
    state.actors.templates_changed(&clinic.id);
    Ok(HttpResponse::Ok().json(r))
}
