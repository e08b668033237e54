//! SMS through Vonage's (Nexmo's) SMS API: `POST {base}/sms/json`, a JSON
//! body with `api_key`, `api_secret`, `from`, `to` (digits, no `+`),
//! `text` and `client-ref` (our attempt id, echoed in delivery receipts).
//! Vonage answers HTTP 200 whatever happened: the outcome is each
//! `messages[].status`, `"0"` for success, anything else with an
//! `error-text`. The base URL is configuration, so tests point it at a
//! local server speaking the same wire format (`clarion-push-servers`'
//! `vonage`).

use std::time::Duration;

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;
use serde::Deserialize;
use serde_json::json;

use crate::provider::{Provider, SendError, SendOutcome};

/// The provider's name (`providers.routes`, `providers.defaults`).
pub const VONAGE: &str = "vonage";

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct VonageConfig {
    #[serde(default = "default_base")]
    pub base_url: String,
    pub api_key: String,
    /// Best given as `api-secret-file`.
    pub api_secret: String,
    /// Sender: a number (digits) or an alphanumeric sender id.
    pub from: String,
    /// Where Vonage posts delivery receipts, if anywhere.
    #[serde(default)]
    pub status_callback_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://rest.nexmo.com".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    messages: Vec<MessageStatus>,
}

#[derive(Deserialize)]
struct MessageStatus {
    status: String,
    #[serde(rename = "message-id", default)]
    message_id: String,
    #[serde(rename = "error-text", default)]
    error_text: String,
}

/// Statuses worth trying again (Vonage's "SMS API error codes"): 1
/// throttled, 5 internal error, 10 too many existing binds.
fn retryable_status(status: &str) -> bool {
    matches!(status, "1" | "5" | "10")
}

pub struct VonageProvider {
    client: reqwest::Client,
    cfg: VonageConfig,
}

impl VonageProvider {
    pub fn new(cfg: &VonageConfig) -> Result<VonageProvider, String> {
        if cfg.api_key.is_empty() || cfg.api_secret.is_empty() {
            return Err("providers.vonage: api-key and api-secret are required".into());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("providers.vonage client: {e}"))?;
        Ok(VonageProvider {
            client,
            cfg: cfg.clone(),
        })
    }
}

#[async_trait]
impl Provider for VonageProvider {
    fn name(&self) -> &'static str {
        VONAGE
    }

    async fn send(&self, _tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        // Vonage takes international numbers without the `+`.
        let to = msg.to.trim_start_matches('+');
        if to.is_empty() {
            return Err(SendError::terminal("vonage: the recipient has no phone"));
        }
        let mut body = json!({
            "api_key": self.cfg.api_key,
            "api_secret": self.cfg.api_secret,
            "from": self.cfg.from,
            "to": to,
            "text": msg.body,
            "client-ref": msg.attempt_id,
        });
        if !msg.body.is_ascii() {
            body["type"] = json!("unicode");
        }
        if let Some(cb) = &self.cfg.status_callback_url {
            body["callback"] = json!(cb);
        }
        let url = format!("{}/sms/json", self.cfg.base_url.trim_end_matches('/'));
        let resp = self
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                SendError::retryable(format!(
                    "vonage: {}",
                    crate::ssrf::excerpt(&e.to_string(), crate::webhook::ANSWER_EXCERPT_BYTES)
                ))
            })?;
        let http = resp.status();
        if !http.is_success() {
            let text = format!("vonage answered {http}");
            return if http.is_server_error() || http.as_u16() == 429 {
                Err(SendError::retryable(text))
            } else {
                Err(SendError::terminal(text))
            };
        }
        let answer: Answer = resp
            .json()
            .await
            .map_err(|e| SendError::retryable(format!("vonage: unreadable response: {e}")))?;
        // A long text is split into parts, one entry each: the send is good
        // only if every part is; the first part's id names it.
        let Some(first) = answer.messages.first() else {
            return Err(SendError::retryable("vonage: an answer without messages"));
        };
        if let Some(bad) = answer.messages.iter().find(|m| m.status != "0") {
            // The provider's words reach tenant-readable history: bounded.
            let text = format!(
                "vonage status {}: {}",
                bad.status,
                crate::ssrf::excerpt(&bad.error_text, crate::webhook::ANSWER_EXCERPT_BYTES)
            );
            return if retryable_status(&bad.status) {
                Err(SendError::retryable(text))
            } else {
                Err(SendError::terminal(text))
            };
        }
        Ok(SendOutcome {
            provider_message_id: first.message_id.clone(),
            delivered: false,
        })
    }
}
