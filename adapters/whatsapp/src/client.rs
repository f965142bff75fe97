//! Graph API client. One pooled `reqwest::Client` serves every clinic: the bearer token is a
//! per-call argument, never client state.

use std::time::Duration;

use reqwest::{multipart, Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{
    CreateTemplateRequest, CreateTemplateResponse, ErrorEnvelope, GraphError, MarkRead,
    MediaUploadResponse, OutgoingMessage, PhoneNumberInfo, SendResponse, SuccessResponse,
    TemplateInfo, TemplateList,
};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://graph.facebook.com`, or a simulator's address.
    pub base_url: String,
    /// `v25.0` …
    pub api_version: String,
    pub connect_timeout: Duration,
    /// Whole-request timeout for sends and reads.
    pub request_timeout: Duration,
    /// Uploads of large documents get longer.
    pub upload_timeout: Duration,
    pub max_idle_per_host: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: "https://graph.facebook.com".into(),
            api_version: "v25.0".into(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            upload_timeout: Duration::from_secs(60),
            max_idle_per_host: 256,
        }
    }
}

/// Why a call did not succeed. `Api` means Meta answered and said no; `Timeout` and `Transport`
/// mean we do not know whether Meta acted on the request (a timed-out send may have gone out),
/// except `Connect`, where nothing reached Meta.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Meta rejected the request (HTTP {status}): {}", .error.message)]
    Api { status: u16, error: GraphError },
    #[error("no answer from Meta within the timeout; the request may have been acted on")]
    Timeout,
    #[error("could not connect to Meta: {0}")]
    Connect(String),
    #[error("transport error after the request was sent: {0}")]
    Transport(String),
    #[error("unexpected HTTP {status} from Meta without an error envelope")]
    Http { status: u16, body: String },
    #[error("could not decode Meta's answer: {0}")]
    Decode(String),
    #[error("invalid request: {0}")]
    Request(String),
}

impl ClientError {
    /// True when Meta may have acted on the request even though we got no clean answer.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ClientError::Timeout | ClientError::Transport(_))
    }

    /// Meta's error code, when Meta answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ClientError::Timeout
        } else if e.is_connect() {
            ClientError::Connect(e.to_string())
        } else if e.is_builder() {
            ClientError::Request(e.to_string())
        } else if e.is_decode() {
            ClientError::Decode(e.to_string())
        } else {
            ClientError::Transport(e.to_string())
        }
    }
}

#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl GraphClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.config.base_url.trim_end_matches('/'),
            self.config.api_version,
            path.trim_start_matches('/')
        )
    }

    fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// `POST /{phone-number-id}/messages`.
    pub async fn send_message(
        &self,
        token: &str,
        phone_number_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SendResponse, ClientError> {
        self.post_json(token, &format!("{phone_number_id}/messages"), message)
            .await
    }

    /// Marks an inbound message as read (blue ticks).
    pub async fn mark_read(
        &self,
        token: &str,
        phone_number_id: &str,
        wamid: &str,
    ) -> Result<SuccessResponse, ClientError> {
        self.post_json(
            token,
            &format!("{phone_number_id}/messages"),
            &MarkRead::new(wamid),
        )
        .await
    }

    /// `POST /{phone-number-id}/media` (multipart): returns the media id to send by.
    pub async fn upload_media(
        &self,
        token: &str,
        phone_number_id: &str,
        bytes: Vec<u8>,
        mime_type: &str,
        filename: &str,
    ) -> Result<MediaUploadResponse, ClientError> {
        let part = multipart::Part::bytes(bytes)
            .file_name(filename.to_owned())
            .mime_str(mime_type)
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let form = multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime_type.to_owned())
            .part("file", part);
        let req = self
            .request(Method::POST, &format!("{phone_number_id}/media"), token)
            .timeout(self.config.upload_timeout)
            .multipart(form);
        execute(req).await
    }

    /// `POST /{waba-id}/message_templates`.
    pub async fn create_template(
        &self,
        token: &str,
        waba_id: &str,
        template: &CreateTemplateRequest,
    ) -> Result<CreateTemplateResponse, ClientError> {
        self.post_json(token, &format!("{waba_id}/message_templates"), template)
            .await
    }

    /// Every template of a WABA, following Meta's cursor paging.
    pub async fn list_templates(
        &self,
        token: &str,
        waba_id: &str,
    ) -> Result<Vec<TemplateInfo>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        // Bounded: 250 templates (6,000 verified) at 100 a page never needs more than 60 pages.
        for _ in 0..100 {
            let mut req = self
                .request(Method::GET, &format!("{waba_id}/message_templates"), token)
                .query(&[
                    (
                        "fields",
                        "id,name,status,category,language,components,parameter_format",
                    ),
                    ("limit", "100"),
                ]);
            if let Some(a) = &after {
                req = req.query(&[("after", a.as_str())]);
            }
            let page: TemplateList = execute(req).await?;
            out.extend(page.data);
            after = page
                .paging
                .as_ref()
                .filter(|p| p.get("next").is_some())
                .and_then(|p| p.pointer("/cursors/after"))
                .and_then(|a| a.as_str())
                .map(str::to_owned);
            if after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Reads a number's throughput level, quality and messaging-limit tier.
    pub async fn phone_number_info(
        &self,
        token: &str,
        phone_number_id: &str,
    ) -> Result<PhoneNumberInfo, ClientError> {
        let req = self.request(Method::GET, phone_number_id, token).query(&[(
            "fields",
            "id,display_phone_number,quality_rating,throughput,messaging_limit_tier",
        )]);
        execute(req).await
    }

    async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        execute(self.request(Method::POST, path, token).json(body)).await
    }
}

async fn execute<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, ClientError> {
    let resp = req.send().await.map_err(ClientError::from_reqwest)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(ClientError::from_reqwest)?;
    if status == StatusCode::OK || status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()));
    }
    match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(env) => Err(ClientError::Api {
            status: status.as_u16(),
            error: env.error,
        }),
        Err(_) => Err(ClientError::Http {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(512).collect(),
        }),
    }
}
