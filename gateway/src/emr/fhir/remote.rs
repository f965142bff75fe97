//! The clinic's FHIR server, as the gateway reads and writes it: referenced Patients (through
//! the fhir-r4 client), focus resources and searches after a subscription ping, attachments by
//! URL, and the write-back. Every request is bounded (timeouts, response size), follows no
//! redirects, and only goes to URLs under the clinic's `base_url` or its attachment allow-list;
//! the bearer token is sent only to the clinic's own server.
//!
//! Focus resources, searches and the write-back's GET are read as raw JSON here rather than
//! through the typed client: the typed models drop elements the gateway does not use
//! (`contained`, extensions, narrative), and a GET-modify-PUT must send back everything it read.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fhir_r4::{ClientConfig, FhirClient};
use parking_lot::Mutex;
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG};
use serde_json::Value;
use url::Url;

use super::outcome::Failure;
use super::FhirLink;
use crate::tenants::ClinicSettings;

/// Longest JSON answer read from the clinic's server (searches, resources).
const MAX_JSON_BYTES: usize = 32 * 1024 * 1024;
/// Pages of a search followed after a subscription ping.
pub const MAX_SEARCH_PAGES: usize = 10;
/// Resources per search page.
pub const SEARCH_PAGE_SIZE: usize = 50;

const TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to the clinic's server did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("{method} {url}: HTTP {status}{detail}")]
    Status {
        method: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{method} {url}: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },
    #[error("{url}: {message}")]
    Invalid { url: String, message: String },
}

impl RemoteError {
    /// Worth trying again later: no answer, a 5xx, or throttling.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Transport { .. } => true,
            RemoteError::Status { status, .. } => *status >= 500 || *status == 429,
            RemoteError::Invalid { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A JSON resource (or Bundle) as read, with its version tag.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub value: Value,
    pub etag: Option<String>,
}

/// One clinic's FHIR server.
#[derive(Debug)]
pub struct Remote {
    link: FhirLink,
    base: Url,
    allow: Vec<Url>,
    client: FhirClient,
    http: reqwest::Client,
}

static REMOTES: LazyLock<Mutex<HashMap<String, Arc<Remote>>>> = LazyLock::new(Default::default);

/// `url` with a path ending in `/`, so prefixes match whole segments.
fn as_prefix(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn parse_http_url(text: &str, what: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{what} `{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{what} `{text}` must be an http(s) URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} must not carry credentials in the URL"));
    }
    Ok(url)
}

/// True when `url` is `prefix` or below it (same scheme, host and port; whole path segments).
pub fn is_under(url: &Url, prefix: &Url) -> bool {
    url.scheme() == prefix.scheme()
        && url.host_str().map(str::to_ascii_lowercase)
            == prefix.host_str().map(str::to_ascii_lowercase)
        && url.port_or_known_default() == prefix.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && (url.path().starts_with(prefix.path()) || format!("{}/", url.path()) == prefix.path())
}

impl Remote {
    /// The clinic's server, when it has a FHIR link with a base URL (built once per link
    /// version and shared).
    pub fn for_clinic(clinic: &ClinicSettings) -> Result<Option<Arc<Remote>>, String> {
        let Some(link) = clinic
            .emr
            .fhir
            .as_ref()
            .filter(|l| !l.base_url.trim().is_empty())
        else {
            return Ok(None);
        };
        let key = clinic.id.to_string();
        if let Some(r) = REMOTES.lock().get(&key).filter(|r| r.link == *link) {
            return Ok(Some(r.clone()));
        }
        let remote = Arc::new(Remote::new(link)?);
        let mut cache = REMOTES.lock();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, remote.clone());
        Ok(Some(remote))
    }

    pub fn new(link: &FhirLink) -> Result<Self, String> {
        let base = as_prefix(parse_http_url(&link.base_url, "emr.fhir.base_url")?);
        let allow = link
            .attachment_allow_list
            .iter()
            .map(|a| parse_http_url(a, "emr.fhir.attachment_allow_list entry").map(as_prefix))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = ClientConfig::new(base.clone());
        config.timeout = TIMEOUT;
        config.connect_timeout = CONNECT_TIMEOUT;
        config.bearer_token =
            (!link.auth_token.is_empty()).then(|| link.auth_token.expose().to_owned());
        config.max_response_bytes = MAX_JSON_BYTES;
        config.user_agent = concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")).into();
        let client = FhirClient::new(config).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            link: link.clone(),
            base,
            allow,
            client,
            http,
        })
    }

    pub fn link(&self) -> &FhirLink {
        &self.link
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The typed fhir-r4 client (Patient reads, PATCH, PUT, POST).
    pub fn client(&self) -> &FhirClient {
        &self.client
    }

    /// A reference or attachment URL as an absolute URL (relative ones are under the base).
    pub fn url_for(&self, text: &str) -> Result<Url, String> {
        let t = text.trim();
        if t.contains("://") {
            parse_http_url(t, "URL")
        } else {
            self.base
                .join(t.trim_start_matches('/'))
                .map_err(|e| format!("`{t}` is not a URL relative to the FHIR base: {e}"))
        }
    }

    /// On the clinic's own FHIR server.
    pub fn on_server(&self, url: &Url) -> bool {
        is_under(url, &self.base)
    }

    /// On the server or the attachment allow-list.
    pub fn allowed(&self, url: &Url) -> bool {
        self.on_server(url) || self.allow.iter().any(|a| is_under(url, a))
    }

    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, url.clone());
        if self.on_server(url) && !self.link.auth_token.is_empty() {
            req = req.bearer_auth(self.link.auth_token.expose());
        }
        req
    }

    /// Reads a body of at most `limit` bytes.
    async fn body(
        resp: reqwest::Response,
        limit: usize,
        method: &str,
        url: &Url,
    ) -> Result<Vec<u8>, RemoteError> {
        if resp.content_length().is_some_and(|l| l > limit as u64) {
            return Err(RemoteError::Invalid {
                url: url.to_string(),
                message: format!("the answer is larger than {limit} bytes"),
            });
        }
        let mut resp = resp;
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| RemoteError::Transport {
            method: method.to_owned(),
            url: url.to_string(),
            message: e.to_string(),
        })? {
            if out.len() + chunk.len() > limit {
                return Err(RemoteError::Invalid {
                    url: url.to_string(),
                    message: format!("the answer is larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// `GET` of FHIR JSON on the clinic's server.
    pub async fn get_json(&self, url: &Url) -> Result<Fetched, RemoteError> {
        if !self.on_server(url) {
            return Err(RemoteError::Invalid {
                url: url.to_string(),
                message: format!("not on the clinic's FHIR server {}", self.base),
            });
        }
        let resp = self
            .request(reqwest::Method::GET, url)
            .header(ACCEPT, super::outcome::FHIR_JSON)
            .send()
            .await
            .map_err(|e| RemoteError::Transport {
                method: "GET".into(),
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Self::body(resp, MAX_JSON_BYTES, "GET", url).await?;
        if !status.is_success() {
            return Err(RemoteError::Status {
                method: "GET".into(),
                url: url.to_string(),
                status: status.as_u16(),
                detail: outcome_detail(&bytes),
            });
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| RemoteError::Invalid {
            url: url.to_string(),
            message: format!("not JSON: {e}"),
        })?;
        Ok(Fetched { value, etag })
    }

    /// `GET [base]/Type/id` as raw JSON.
    pub async fn read_raw(&self, resource_type: &str, id: &str) -> Result<Fetched, RemoteError> {
        let url = self
            .base
            .join(&format!("{resource_type}/{id}"))
            .map_err(|e| RemoteError::Invalid {
                url: format!("{}{resource_type}/{id}", self.base),
                message: e.to_string(),
            })?;
        self.get_json(&url).await
    }

    /// `GET [base]/Type?_lastUpdated=gt<since>` and its next pages: the searchset Bundles.
    pub async fn search_since(
        &self,
        resource_type: &str,
        since: &str,
    ) -> Result<Vec<Value>, RemoteError> {
        let mut url = self
            .base
            .join(resource_type)
            .map_err(|e| RemoteError::Invalid {
                url: format!("{}{resource_type}", self.base),
                message: e.to_string(),
            })?;
        url.query_pairs_mut()
            .append_pair("_lastUpdated", &format!("gt{since}"))
            .append_pair("_count", &SEARCH_PAGE_SIZE.to_string());
        let mut pages = Vec::new();
        let mut next = Some(url);
        while let Some(u) = next.take() {
            if pages.len() >= MAX_SEARCH_PAGES {
                tracing::warn!(
                    resource_type,
                    "FHIR search after a ping has more pages than the gateway follows"
                );
                break;
            }
            let page = self.get_json(&u).await?.value;
            next = page
                .get("link")
                .and_then(Value::as_array)
                .and_then(|links| {
                    links
                        .iter()
                        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
                })
                .and_then(|l| l.get("url").and_then(Value::as_str))
                .and_then(|n| self.url_for(n).ok())
                .filter(|n| self.on_server(n) && *n != u);
            pages.push(page);
        }
        Ok(pages)
    }

    /// An attachment's bytes from `text` (absolute, or relative to the base such as
    /// `Binary/7`): a raw PDF, or a Binary resource whose data is decoded. At most `limit` bytes
    /// of document. `expression` names the attachment in errors.
    pub async fn attachment(
        &self,
        text: &str,
        limit: usize,
        expression: &str,
    ) -> Result<Vec<u8>, Failure> {
        let url_expr = format!("{expression}.url");
        let url = self
            .url_for(text)
            .map_err(|m| Failure::invalid(format!("{url_expr}: {m}"), url_expr.clone()))?;
        if !self.allowed(&url) {
            return Err(Failure::invalid(
                format!(
                    "{url_expr}: {url} is neither under the clinic's FHIR base URL nor on its attachment allow-list (emr.fhir.attachment_allow_list)"
                ),
                url_expr,
            ));
        }
        let resp = self
            .request(reqwest::Method::GET, &url)
            .header(
                ACCEPT,
                "application/pdf, application/fhir+json;q=0.9, application/json;q=0.8",
            )
            .send()
            .await
            .map_err(|e| Failure::upstream(format!("{url_expr}: fetching {url} failed: {e}")))?;
        let status = resp.status();
        let json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        // Base64 in a Binary is 4/3 of the document, plus the JSON around it.
        let cap = if json {
            limit / 3 * 4 + 64 * 1024
        } else {
            limit
        };
        let bytes = Self::body(resp, cap, "GET", &url)
            .await
            .map_err(|e| match e {
                RemoteError::Invalid { message, .. } => Failure::invalid(
                    format!("{url_expr}: {url}: {message} (the document limit is {limit} bytes)"),
                    url_expr.clone(),
                ),
                other => Failure::upstream(format!("{url_expr}: {other}")),
            })?;
        if !status.is_success() {
            let e = format!(
                "{url_expr}: GET {url} answered HTTP {}{}",
                status.as_u16(),
                outcome_detail(&bytes)
            );
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                Failure::upstream(e)
            } else {
                Failure::invalid(e, url_expr)
            });
        }
        if !json {
            return Ok(bytes);
        }
        let binary: fhir_r4::Binary = fhir_r4::parse_as(&bytes).map_err(|e| {
            Failure::invalid(
                format!("{url_expr}: {url} is JSON but not a Binary resource: {e}"),
                url_expr.clone(),
            )
        })?;
        match binary.pdf() {
            Ok(Some(fhir_r4::Pdf {
                source: fhir_r4::PdfSource::Inline(b),
                ..
            })) => Ok(b),
            Ok(_) => Err(Failure::invalid(
                format!(
                    "{url_expr}: the Binary at {url} is {}, not application/pdf",
                    binary.content_type
                ),
                url_expr,
            )),
            Err(e) => Err(super::outcome::from_fhir_error(&e).at(&url_expr)),
        }
    }
}

/// `: <diagnostics>` of an OperationOutcome body, else nothing.
fn outcome_detail(bytes: &[u8]) -> String {
    fhir_r4::parse_as::<fhir_r4::OperationOutcome>(bytes)
        .map(|o| format!(": {}", o.summary()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::model::Secret;

    fn remote(base: &str, allow: &[&str]) -> Remote {
        Remote::new(&FhirLink {
            base_url: base.into(),
            auth_token: Secret::new("t"),
            attachment_allow_list: allow.iter().map(|s| (*s).to_owned()).collect(),
            ..FhirLink::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn urls_must_be_under_the_base_or_the_allow_list() {
        let r = remote("https://emr.example/fhir", &["https://files.example/docs"]);
        let ok = |s: &str| r.allowed(&r.url_for(s).unwrap_or_else(|e| panic!("{e}")));
        assert!(ok("Binary/7"));
        assert!(ok("https://emr.example/fhir/Binary/7"));
        assert!(ok("https://EMR.example:443/fhir/Binary/7"));
        assert!(ok("https://files.example/docs/a.pdf"));
        assert!(!ok("https://files.example/docs-evil/a.pdf"));
        assert!(!ok("https://emr.example/fhirx/Binary/7"));
        assert!(!ok("http://emr.example/fhir/Binary/7"));
        assert!(!ok("https://emr.example:8443/fhir/Binary/7"));
        assert!(!ok("https://evil.example/fhir/Binary/7"));
        assert!(!ok("https://emr.example/fhir/../admin"));
        assert!(r.url_for("https://u:p@emr.example/fhir/Binary/7").is_err());
        assert!(!r.on_server(
            &r.url_for("https://files.example/docs/a.pdf")
                .unwrap_or_else(|e| panic!("{e}"))
        ));
    }

    #[test]
    fn bad_links_are_refused() {
        for base in [
            "ftp://emr.example/fhir",
            "not a url",
            "https://u:p@emr.example/",
        ] {
            assert!(Remote::new(&FhirLink {
                base_url: base.into(),
                ..FhirLink::default()
            })
            .is_err());
        }
    }
}
