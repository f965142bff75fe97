//! Reading request bodies with a hard size bound, so oversized input is a problem+json 413.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use bytes::BytesMut;
use futures::StreamExt;

use super::problem::Problem;

/// How long a body of up to `limit` bytes may take to arrive: 10 s, plus a second per 256 KiB
/// the limit allows (a large PDF on a slow link still makes it; a dripping body does not).
fn body_timeout(limit: usize) -> std::time::Duration {
    std::time::Duration::from_secs(10 + (limit / (256 * 1024)) as u64)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Request body too large",
        format!("the body exceeds {limit} bytes"),
    )
}

pub async fn read_bounded(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, Problem> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    let allowed = body_timeout(limit);
    let deadline = tokio::time::Instant::now() + allowed;
    loop {
        // A body trickled in byte by byte (slow loris) is cut off.
        let Ok(next) = tokio::time::timeout_at(deadline, payload.next()).await else {
            return Err(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body too slow",
                format!("the body did not arrive within {} s", allowed.as_secs()),
            ));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-body",
                "Could not read the body",
                e.to_string(),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A deserialisation error as a problem naming the field: the JSON path of the value at fault,
/// or the name of a missing field.
pub fn field_problem<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> Problem {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let field = inner
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
        .map(str::to_owned)
        .unwrap_or(path);
    Problem::invalid_field(&field, inner)
}

/// Parses a JSON body into `T`, naming the field at fault.
pub fn parse_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
        .map_err(field_problem)
}
