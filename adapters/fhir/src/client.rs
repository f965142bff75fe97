//! A small FHIR REST client: read, create, update (PUT) and JSON Patch with `If-Match`.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use reqwest::{Method, StatusCode};
use thiserror::Error;
use url::Url;

use crate::error::FhirError;
use crate::outcome::OperationOutcome;
use crate::patch::{JsonPatch, JSON_PATCH_CONTENT_TYPE};
use crate::resource::{parse_resource, FhirResource, Resource};

/// FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Service base URL (e.g. `https://emr.example/fhir/`); a trailing slash is added if missing.
    pub base_url: Url,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Bearer token (SMART backend services or a static key).
    pub bearer_token: Option<String>,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// User-Agent.
    pub user_agent: String,
}

impl ClientConfig {
    /// Defaults: 15 s timeout, 5 s connect, 32 MiB responses.
    pub fn new(base_url: Url) -> Self {
        ClientConfig {
            base_url,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            bearer_token: None,
            max_response_bytes: 32 * 1024 * 1024,
            user_agent: concat!("fhir-r4/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// Client errors.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Could not build the HTTP client.
    #[error("cannot build HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// Resource type or id cannot form a URL.
    #[error("invalid request URL for {resource_type}/{id}: {message}")]
    InvalidUrl {
        /// Resource type.
        resource_type: String,
        /// Id.
        id: String,
        /// Why.
        message: String,
    },
    /// The resource to update has no id.
    #[error("{0} has no id; update needs one")]
    MissingId(String),
    /// Network failure or timeout.
    #[error("{method} {url}: {source}")]
    Transport {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// `If-Match` failed (412) or a version conflict (409).
    #[error("{method} {url}: version conflict (HTTP {status}){}", outcome_suffix(.outcome))]
    VersionConflict {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Server's OperationOutcome.
        outcome: Option<OperationOutcome>,
    },
    /// Any other non-2xx answer.
    #[error("{method} {url}: HTTP {status}{}", outcome_suffix(.outcome))]
    Status {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Server's OperationOutcome when the body was one.
        outcome: Option<OperationOutcome>,
    },
    /// The response body exceeded the limit.
    #[error("{method} {url}: response larger than {limit} bytes")]
    TooLarge {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Limit.
        limit: usize,
    },
    /// A 2xx answer without a resource body.
    #[error("{method} {url}: HTTP {status} without a resource body")]
    EmptyBody {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The body is not a valid resource, or not the expected type.
    #[error("{method} {url}: {source}")]
    Parse {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: FhirError,
    },
}

fn outcome_suffix(o: &Option<OperationOutcome>) -> String {
    o.as_ref()
        .map(|o| format!(": {}", o.summary()))
        .unwrap_or_default()
}

/// A resource with its version information.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The resource returned by the server.
    pub resource: T,
    /// `ETag` header (e.g. `W/"3"`).
    pub etag: Option<String>,
    /// Version: from the ETag, else `meta.versionId`.
    pub version_id: Option<String>,
    /// `Location` / `Content-Location` header.
    pub location: Option<String>,
    /// HTTP status.
    pub status: u16,
}

/// The version inside a weak or strong ETag: `W/"3"` → `3`.
pub fn version_from_etag(etag: &str) -> Option<&str> {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    let v = e.trim_matches('"');
    (!v.is_empty()).then_some(v)
}

/// The weak ETag for a version, as FHIR servers expect in `If-Match`: `3` → `W/"3"`.
pub fn weak_etag(version_id: &str) -> String {
    format!("W/\"{version_id}\"")
}

/// FHIR REST client.
#[derive(Debug, Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    base: Url,
    bearer: Option<String>,
    max_response_bytes: usize,
}

fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

impl FhirClient {
    /// Build from settings.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let mut base = config.base_url;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent)
            .build()
            .map_err(ClientError::Build)?;
        Ok(FhirClient {
            http,
            base,
            bearer: config.bearer_token,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// The base URL (with trailing slash).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, resource_type: &str, id: Option<&str>) -> Result<Url, ClientError> {
        let bad = |m: &str| ClientError::InvalidUrl {
            resource_type: resource_type.into(),
            id: id.unwrap_or("").into(),
            message: m.into(),
        };
        let type_ok = resource_type
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            && resource_type.chars().all(|c| c.is_ascii_alphanumeric());
        if !type_ok {
            return Err(bad("resource type must be [A-Z][A-Za-z0-9]*"));
        }
        let rel = match id {
            Some(id) if is_segment(id) => format!("{resource_type}/{id}"),
            Some(_) => return Err(bad("id must be 1-64 of [A-Za-z0-9-.]")),
            None => resource_type.to_owned(),
        };
        self.base.join(&rel).map_err(|e| bad(&e.to_string()))
    }

    /// `GET [base]/Type/id`.
    pub async fn read(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Versioned<Resource>, ClientError> {
        let url = self.url(resource_type, Some(id))?;
        self.send(Method::GET, url, None, None).await
    }

    /// `GET [base]/Type/id` into a typed model.
    pub async fn read_as<T: FhirResource>(&self, id: &str) -> Result<Versioned<T>, ClientError> {
        let url = self.url(T::TYPE, Some(id))?;
        let v = self.read(T::TYPE, id).await?;
        typed(v, url)
    }

    /// `POST [base]/Type`.
    pub async fn create(&self, resource: &Resource) -> Result<Versioned<Resource>, ClientError> {
        let url = self.url(resource.resource_type(), None)?;
        let body = self.body(resource, &url, "POST")?;
        self.send(Method::POST, url, Some((FHIR_JSON, body)), None)
            .await
    }

    /// `PUT [base]/Type/id` with `If-Match` when given (pass an ETag such as `W/"3"`; see
    /// [`weak_etag`]).
    pub async fn update(
        &self,
        resource: &Resource,
        if_match: Option<&str>,
    ) -> Result<Versioned<Resource>, ClientError> {
        let id = resource
            .id()
            .ok_or_else(|| ClientError::MissingId(resource.resource_type().into()))?;
        let url = self.url(resource.resource_type(), Some(id))?;
        let body = self.body(resource, &url, "PUT")?;
        self.send(Method::PUT, url, Some((FHIR_JSON, body)), if_match)
            .await
    }

    /// `PATCH [base]/Type/id` with a JSON Patch body and `If-Match` when given.
    pub async fn patch(
        &self,
        resource_type: &str,
        id: &str,
        patch: &JsonPatch,
        if_match: Option<&str>,
    ) -> Result<Versioned<Resource>, ClientError> {
        let url = self.url(resource_type, Some(id))?;
        self.send(
            Method::PATCH,
            url,
            Some((JSON_PATCH_CONTENT_TYPE, patch.to_json())),
            if_match,
        )
        .await
    }

    /// `GET [base]/metadata`.
    pub async fn capabilities(&self) -> Result<Versioned<Resource>, ClientError> {
        let url = self
            .base
            .join("metadata")
            .map_err(|e| ClientError::InvalidUrl {
                resource_type: "CapabilityStatement".into(),
                id: "metadata".into(),
                message: e.to_string(),
            })?;
        self.send(Method::GET, url, None, None).await
    }

    fn body(&self, resource: &Resource, url: &Url, method: &str) -> Result<Vec<u8>, ClientError> {
        resource.to_json().map_err(|source| ClientError::Parse {
            method: method.into(),
            url: url.to_string(),
            source,
        })
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<(&str, Vec<u8>)>,
        if_match: Option<&str>,
    ) -> Result<Versioned<Resource>, ClientError> {
        let m = method.to_string();
        let u = url.to_string();
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, FHIR_JSON)
            .header("Prefer", "return=representation");
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(etag) = if_match {
            req = req.header(IF_MATCH, etag);
        }
        if let Some((ct, bytes)) = body {
            req = req.header(CONTENT_TYPE, ct).body(bytes);
        }
        let transport = |source| ClientError::Transport {
            method: m.clone(),
            url: u.clone(),
            source,
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let header = |h: &HeaderMap, n| {
            h.get(n)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(resp.headers(), ETAG);
        let location = header(resp.headers(), LOCATION)
            .or_else(|| header(resp.headers(), reqwest::header::CONTENT_LOCATION));
        if resp
            .content_length()
            .is_some_and(|l| l > self.max_response_bytes as u64)
        {
            return Err(ClientError::TooLarge {
                method: m,
                url: u,
                limit: self.max_response_bytes,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(ClientError::TooLarge {
                    method: m,
                    url: u,
                    limit: self.max_response_bytes,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let outcome = parse_resource(&bytes)
                .ok()
                .and_then(|r| r.into_type::<OperationOutcome>().ok());
            let s = status.as_u16();
            return Err(
                if status == StatusCode::PRECONDITION_FAILED || status == StatusCode::CONFLICT {
                    ClientError::VersionConflict {
                        method: m,
                        url: u,
                        status: s,
                        outcome,
                    }
                } else {
                    ClientError::Status {
                        method: m,
                        url: u,
                        status: s,
                        outcome,
                    }
                },
            );
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ClientError::EmptyBody {
                method: m,
                url: u,
                status: status.as_u16(),
            });
        }
        let resource = parse_resource(&bytes).map_err(|source| ClientError::Parse {
            method: m.clone(),
            url: u.clone(),
            source,
        })?;
        let version_id = etag
            .as_deref()
            .and_then(version_from_etag)
            .map(str::to_owned)
            .or_else(|| resource.version_id().map(str::to_owned));
        Ok(Versioned {
            resource,
            etag,
            version_id,
            location,
            status: status.as_u16(),
        })
    }
}

fn typed<T: FhirResource>(v: Versioned<Resource>, url: Url) -> Result<Versioned<T>, ClientError> {
    let resource = v
        .resource
        .into_type::<T>()
        .map_err(|source| ClientError::Parse {
            method: "GET".into(),
            url: url.to_string(),
            source,
        })?;
    Ok(Versioned {
        resource,
        etag: v.etag,
        version_id: v.version_id,
        location: v.location,
        status: v.status,
    })
}
