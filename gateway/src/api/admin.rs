//! `/admin/v1`: the aggregator provisions clinics, their API keys and wallet credits.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::read_bounded;
use super::problem::Problem;
use super::AppState;
use crate::clock::now_ms;
use crate::domain::{Money, TenantId};
use crate::store::tenancy::ApiKeyRecord;
use crate::store::StoreError;
use crate::tenants::model::ClinicSettings;
use crate::tenants::{generate_api_key, hash_api_key};

pub(super) fn admin(req: &HttpRequest, state: &AppState) -> Result<(), Problem> {
    let key = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <admin key>"))?;
    let hash = hash_api_key(key);
    if state
        .settings
        .admin
        .api_key_sha256
        .iter()
        .any(|k| k.eq_ignore_ascii_case(&hash))
    {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Not an admin key",
            "the admin key is not valid",
        ))
    }
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The body is not valid JSON",
            e.to_string(),
        )
    })
}

/// The stored clinic a path names, or 404.
async fn existing_clinic(state: &AppState, raw: &str) -> Result<ClinicSettings, Problem> {
    let id = tenant_id(raw)?;
    state
        .store
        .clinic(&id)
        .await?
        .ok_or_else(|| Problem::not_found("no such clinic"))
}

fn tenant_id(raw: &str) -> Result<TenantId, Problem> {
    TenantId::parse(raw).map_err(|_| Problem::not_found("no such clinic"))
}

/// The clinic as the API shows it: secrets are write-only, reported only as set or not.
pub fn clinic_view(c: &ClinicSettings) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("app_secret");
        o.remove("access_token");
        o.insert("app_secret_set".into(), json!(!c.app_secret.is_empty()));
        o.insert("access_token_set".into(), json!(!c.access_token.is_empty()));
        if let Some(cb) = o.get_mut("callback").and_then(Value::as_object_mut) {
            cb.remove("secret");
            cb.insert("secret_set".into(), json!(true));
        }
        // The EMR link's credentials are write-only too.
        if let Some(fhir) = o
            .get_mut("emr")
            .and_then(|e| e.get_mut("fhir"))
            .and_then(Value::as_object_mut)
        {
            let set = fhir
                .remove("auth_token")
                .is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty()));
            fhir.insert("auth_token_set".into(), json!(set));
        }
    }
    v
}

/// RFC 7396 JSON merge patch.
pub(super) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub(super) fn settings_from(value: Value) -> Result<ClinicSettings, Problem> {
    let clinic: ClinicSettings =
        serde_path_to_error::deserialize(&value).map_err(super::body::field_problem)?;
    clinic
        .validate()
        .map_err(|e| Problem::invalid_field(&e.field, e.detail))?;
    Ok(clinic)
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
        other => Problem::from(other),
    }
}

/// Makes this node's change visible at once, without reloading every clinic (other nodes pick
/// it up from the directory version within a second).
async fn publish(
    state: &AppState,
    clinic: Option<&ClinicSettings>,
    key: Option<&ApiKeyRecord>,
) -> Result<(), Problem> {
    let version = state.store.directory_version().await?;
    if let Some(c) = clinic {
        state.directory.upsert_clinic(c.clone());
        state.meta.register_clinic(c);
        state.dispatchers.sync_clinic(c);
    }
    if let Some(k) = key {
        state.directory.apply_key(k);
    }
    state.directory.seen_own_change(version);
    Ok(())
}

pub async fn create_clinic(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let body = read_bounded(&req, payload, state.settings.server.max_message_bytes).await?;
    let mut v = parse_json(&body)?;
    let Some(o) = v.as_object_mut() else {
        return Err(Problem::invalid_field("body", "expected a JSON object"));
    };
    let now = now_ms();
    let defaults: Map<String, Value> = serde_json::from_value(json!({
        "id": format!("cl_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
        "time_zone": "Asia/Kolkata",
        "default_country_code": "91",
        "default_language": "en",
        "low_balance_threshold": state.settings.wallet.default_low_balance_threshold,
        "app_secret": "",
        "access_token": "",
    }))
    .unwrap_or_default();
    for (k, d) in defaults {
        o.entry(k).or_insert(d);
    }
    if !o.contains_key("portfolio_id") {
        let waba = o.get("waba_id").cloned().unwrap_or(Value::Null);
        o.insert("portfolio_id".into(), waba);
    }
    o.insert("created_ms".into(), json!(now));
    o.insert("updated_ms".into(), json!(now));
    let clinic = settings_from(v)?;
    if state.store.clinic(&clinic.id).await?.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "clinic-exists",
            "Clinic exists",
            format!("clinic {} already exists", clinic.id),
        )
        .field("id"));
    }
    state
        .store
        .put_clinic(&clinic)
        .await
        .map_err(store_problem)?;
    publish(&state, Some(&clinic), None).await?;
    if let Err(e) = crate::catalog::sync(&*state.store, &state.meta, &clinic).await {
        tracing::warn!(tenant = %clinic.id, error = %e, "template sync of the new clinic failed; retry with POST /v1/templates/sync");
    }
    tracing::info!(tenant = %clinic.id, "clinic created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/admin/v1/clinics/{}", clinic.id)))
        .json(clinic_view(&clinic)))
}

pub async fn update_clinic(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let id = tenant_id(&path)?;
    let body = read_bounded(&req, payload, state.settings.server.max_message_bytes).await?;
    let patch = parse_json(&body)?;
    if patch
        .get("id")
        .is_some_and(|v| v.as_str() != Some(id.as_str()))
    {
        return Err(Problem::invalid_field("id", "a clinic's id cannot change"));
    }
    let existing = existing_clinic(&state, &path).await?;
    let mut v = serde_json::to_value(&existing).map_err(|e| Problem::unavailable(e.to_string()))?;
    merge(&mut v, &patch);
    if let Some(o) = v.as_object_mut() {
        o.insert("updated_ms".into(), json!(now_ms()));
        o.insert("created_ms".into(), json!(existing.created_ms));
    }
    let clinic = settings_from(v)?;
    state
        .store
        .put_clinic(&clinic)
        .await
        .map_err(store_problem)?;
    publish(&state, Some(&clinic), None).await?;
    tracing::info!(tenant = %clinic.id, "clinic updated");
    Ok(HttpResponse::Ok().json(clinic_view(&clinic)))
}

pub async fn get_clinic(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let clinic = existing_clinic(&state, &path).await?;
    Ok(HttpResponse::Ok().json(clinic_view(&clinic)))
}

pub async fn list_clinics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let mut clinics = state.store.clinics().await?;
    clinics.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(HttpResponse::Ok()
        .json(json!({"clinics": clinics.iter().map(clinic_view).collect::<Vec<_>>()})))
}

async fn set_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    status: &str,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let mut clinic = existing_clinic(&state, &path).await?;
    clinic.status =
        serde_json::from_value(json!(status)).map_err(|e| Problem::unavailable(e.to_string()))?;
    clinic.updated_ms = now_ms();
    state
        .store
        .put_clinic(&clinic)
        .await
        .map_err(store_problem)?;
    publish(&state, Some(&clinic), None).await?;
    Ok(HttpResponse::Ok().json(clinic_view(&clinic)))
}

pub async fn suspend(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    set_status(req, path, state, "suspended").await
}

pub async fn resume(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    set_status(req, path, state, "active").await
}

#[derive(Debug, Default, Deserialize)]
struct NewKey {
    #[serde(default)]
    label: String,
}

fn key_view(k: &ApiKeyRecord) -> Value {
    json!({"id": k.id, "label": k.label, "created_ms": k.created_ms, "revoked_ms": k.revoked_ms})
}

pub async fn create_key(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let id = existing_clinic(&state, &path).await?.id;
    let input: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Problem::invalid_field("label", e.to_string()))?
    };
    let key = generate_api_key();
    let record = ApiKeyRecord {
        id: format!("key_{}", ulid::Ulid::new()),
        tenant: id,
        hash: hash_api_key(&key),
        label: input.label.chars().take(100).collect(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    state.store.put_api_key(&record).await?;
    publish(&state, None, Some(&record)).await?;
    let mut v = key_view(&record);
    // Shown once: only its hash is kept.
    v["key"] = json!(key);
    Ok(HttpResponse::Created().json(v))
}

pub async fn list_keys(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let id = existing_clinic(&state, &path).await?.id;
    let keys = state.store.api_keys(&id).await?;
    Ok(HttpResponse::Ok().json(json!({"keys": keys.iter().map(key_view).collect::<Vec<_>>()})))
}

pub async fn revoke_key(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let (tenant, key_id) = path.into_inner();
    let id = tenant_id(&tenant)?;
    if !state.store.revoke_api_key(&id, &key_id, now_ms()).await? {
        return Err(Problem::not_found("no such key for this clinic"));
    }
    let revoked = state
        .store
        .api_keys(&id)
        .await?
        .into_iter()
        .find(|k| k.id == key_id);
    publish(&state, None, revoked.as_ref()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
struct Credit {
    /// Micro-units of the wallet currency.
    amount: i64,
}

pub async fn credit(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    admin(&req, &state)?;
    let body =
        super::body::read_bounded(&req, payload, state.settings.server.max_body_bytes).await?;
    let id = existing_clinic(&state, &path).await?.id;
    let key = req
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            Problem::invalid_field(
                "Idempotency-Key",
                "is required for credits (1 to 255 characters)",
            )
        })?
        .to_owned();
    let input: Credit = serde_json::from_slice(&body)
        .map_err(|e| Problem::invalid_field("amount", e.to_string()))?;
    if input.amount <= 0 {
        return Err(Problem::invalid_field(
            "amount",
            "must be a positive number of micro-units",
        ));
    }
    let (applied, wallet) = state
        .store
        .credit(&id, Money(input.amount), &key, now_ms())
        .await?;
    let status = if applied {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(super::wallet::wallet_view(&state, &wallet, applied)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clinic_view_hides_every_secret() {
        let config: crate::config::ClinicConfig = serde_json::from_value(json!({
            "id": "c", "name": "C", "api_key_sha256": "0".repeat(64), "app_secret": "app-secret-xyz", "access_token": "EAAG-token-xyz",
            "numbers": [{"phone_number_id": "1", "tier_mps": 80}],
            "emr": {"fhir": {"base_url": "https://emr.example/fhir", "auth_token": "fhir-token-xyz"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = crate::config::Settings::defaults().unwrap_or_else(|e| panic!("{e}"));
        let mut c = crate::tenants::bootstrap::clinic_from_config(&config, &settings);
        c.callback = Some(crate::tenants::model::Callback {
            url: "https://clinic.example/cb".into(),
            secret: crate::tenants::model::Secret::new("callback-secret-xyz"),
        });
        let shown = clinic_view(&c).to_string();
        for secret in [
            "app-secret-xyz",
            "EAAG-token-xyz",
            "fhir-token-xyz",
            "callback-secret-xyz",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("\"auth_token_set\":true"), "{shown}");
    }
}
