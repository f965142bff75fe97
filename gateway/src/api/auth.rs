//! `Authorization: Bearer <api key>` → the calling clinic. The tenant never comes from the path or body.

use std::sync::Arc;

use actix_web::HttpRequest;

use super::problem::Problem;
use crate::tenants::{ClinicSettings, Directory};

pub fn clinic_of(req: &HttpRequest, directory: &Directory) -> Result<Arc<ClinicSettings>, Problem> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <api key>"))?;
    let key = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Problem::unauthorized("the Authorization header must be Bearer <api key>")
        })?;
    directory.by_api_key(key).ok_or_else(|| {
        Problem::unauthorized("the API key is not valid (or its clinic is suspended)")
    })
}
