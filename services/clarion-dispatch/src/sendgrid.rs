//! Email through SendGrid's v3 Web API: `POST {base}/v3/mail/send` with a
//! bearer API key and a JSON body (`personalizations`, `from`, `subject`,
//! `content`). SendGrid answers `202 Accepted` with an empty body and the
//! message's id in the `X-Message-Id` header; errors are
//! `{"errors": [{"message", "field", "help"}]}`. The base URL is
//! configuration, so tests point it at a local server speaking the same
//! wire format (`clarion-push-servers`' `sendgrid`).

use std::time::Duration;

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;
use serde::Deserialize;
use serde_json::json;

use crate::provider::{Provider, SendError, SendOutcome};

/// The provider's name (`providers.routes`, `providers.defaults`).
pub const SENDGRID: &str = "sendgrid";

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SendgridConfig {
    #[serde(default = "default_base")]
    pub base_url: String,
    /// The API key (`SG....`); best given as `api-key-file`.
    pub api_key: String,
    /// Sender address.
    pub from_email: String,
    /// Sender display name.
    #[serde(default)]
    pub from_name: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://api.sendgrid.com".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Deserialize, Default)]
struct Errors {
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    field: Option<String>,
}

pub struct SendgridProvider {
    client: reqwest::Client,
    cfg: SendgridConfig,
}

impl SendgridProvider {
    pub fn new(cfg: &SendgridConfig) -> Result<SendgridProvider, String> {
        if cfg.api_key.is_empty() {
            return Err("providers.sendgrid.api-key is required".into());
        }
        if !cfg.from_email.contains('@') {
            return Err(format!(
                "providers.sendgrid.from-email: {:?} is not an email address",
                cfg.from_email
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("providers.sendgrid client: {e}"))?;
        Ok(SendgridProvider {
            client,
            cfg: cfg.clone(),
        })
    }

    /// The `mail/send` body of one message. `custom_args` come back in
    /// SendGrid's event webhook, so its reports name our ids.
    fn body(&self, tenant: &str, msg: &DispatchRequested) -> serde_json::Value {
        let mut from = json!({ "email": self.cfg.from_email });
        if !self.cfg.from_name.is_empty() {
            from["name"] = json!(self.cfg.from_name);
        }
        json!({
            "personalizations": [{ "to": [{ "email": msg.to }] }],
            "from": from,
            "subject": msg.subject,
            "content": [{ "type": "text/plain", "value": msg.body }],
            "custom_args": {
                "tenant": tenant,
                "notification_id": msg.notification_id,
                "attempt_id": msg.attempt_id,
            },
        })
    }
}

#[async_trait]
impl Provider for SendgridProvider {
    fn name(&self) -> &'static str {
        SENDGRID
    }

    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        if msg.to.is_empty() {
            return Err(SendError::terminal("sendgrid: the recipient has no email"));
        }
        let url = format!("{}/v3/mail/send", self.cfg.base_url.trim_end_matches('/'));
        let resp = self
            .client
            .post(&url)
            .bearer_auth(&self.cfg.api_key)
            // Not part of SendGrid's API; lets a proxy or test double drop repeats.
            .header("Idempotency-Key", &msg.attempt_id)
            .json(&self.body(tenant, msg))
            .send()
            .await
            .map_err(|e| {
                SendError::retryable(format!(
                    "sendgrid: {}",
                    crate::ssrf::excerpt(&e.to_string(), crate::webhook::ANSWER_EXCERPT_BYTES)
                ))
            })?;
        let status = resp.status();
        if status.is_success() {
            // 202 with no body: the id is in the header (absent on some
            // sandbox answers: the attempt id then stands in).
            let id = resp
                .headers()
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map_or_else(|| msg.attempt_id.clone(), str::to_string);
            return Ok(SendOutcome {
                provider_message_id: id,
                delivered: false,
            });
        }
        let errs: Errors = resp.json().await.unwrap_or_default();
        let detail = errs
            .errors
            .iter()
            .map(|e| match &e.field {
                Some(f) => format!("{} ({f})", e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        // The provider's words reach tenant-readable history: bounded.
        let text = format!(
            "sendgrid answered {status}: {}",
            crate::ssrf::excerpt(&detail, crate::webhook::ANSWER_EXCERPT_BYTES)
        );
        if status.is_server_error() || status.as_u16() == 429 {
            Err(SendError::retryable(text))
        } else {
            Err(SendError::terminal(text))
        }
    }
}
