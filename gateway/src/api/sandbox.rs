//! `/v1/sandbox`: for clinics in `sandbox` mode, play the patient and see what "Meta" received.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::clinic_of;
use super::problem::Problem;
use super::AppState;
use crate::domain::E164;
use crate::meta::SandboxNode;
use crate::tenants::ClinicSettings;

fn sandbox_of<'a>(
    state: &'a AppState,
    clinic: &ClinicSettings,
) -> Result<&'a SandboxNode, Problem> {
    match &state.meta.sandbox {
        Some(s) if state.meta.is_sandbox(clinic) => Ok(s),
        _ => Err(Problem::new(
            StatusCode::CONFLICT,
            "not-a-sandbox-clinic",
            "This clinic is live",
            "only clinics in sandbox mode (and a node with [sandbox] enabled) can use /v1/sandbox",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub struct InboundInput {
    from: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    button: Option<ButtonInput>,
    #[serde(default)]
    context_wamid: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ButtonInput {
    text: String,
    payload: String,
}

/// A patient of this clinic writes (or taps a button), as if on WhatsApp.
pub async fn inbound(
    req: HttpRequest,
    input: web::Json<InboundInput>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let sandbox = sandbox_of(&state, &clinic)?;
    let from = E164::parse_with_default(&input.from, Some(&clinic.default_country_code))
        .map_err(|e| Problem::invalid_field("from", e.to_string()))?;
    let Some(number) = clinic.numbers.first() else {
        return Err(Problem::invalid_field(
            "numbers",
            "the clinic has no business number",
        ));
    };
    let wamid = match (&input.text, &input.button) {
        (Some(text), None) => {
            sandbox
                .state
                .inject_inbound_text(number.phone_number_id.as_str(), from.digits(), text)
        }
        (None, Some(b)) => sandbox.state.inject_button_tap(
            number.phone_number_id.as_str(),
            from.digits(),
            input.context_wamid.as_deref().unwrap_or_default(),
            &b.text,
            &b.payload,
        ),
        _ => return Err(Problem::invalid_field("text", "give either text or button")),
    };
    Ok(HttpResponse::Accepted().json(json!({"wamid": wamid})))
}

/// What the sandbox received from this clinic's numbers.
pub async fn sent(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let clinic = clinic_of(&req, &state.directory)?;
    let sandbox = sandbox_of(&state, &clinic)?;
    let mut out = Vec::new();
    for n in &clinic.numbers {
        for r in sandbox.state.sent_to(n.phone_number_id.as_str()) {
            out.push(json!({"wamid": r.wamid, "to": r.to, "from": n.phone_number_id, "message": r.message}));
        }
    }
    Ok(HttpResponse::Ok().json(json!({"sent": out})))
}
