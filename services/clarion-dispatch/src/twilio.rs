//! SMS through a Twilio-style REST API: `POST
//! {base}/2010-04-01/Accounts/{sid}/Messages.json`, form-encoded `To`, `From`,
//! `Body` (and `StatusCallback`), HTTP basic auth with the account SID and
//! auth token. The base URL is configuration, so tests point it at a local
//! server speaking the same wire format.

use std::time::Duration;

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;
use serde::Deserialize;

use crate::provider::{Provider, SendError, SendOutcome};

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TwilioConfig {
    #[serde(default = "default_base")]
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Sender number (E.164) or messaging service.
    pub from: String,
    /// Where the provider posts delivery status updates (our inbound webhook).
    #[serde(default)]
    pub status_callback_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base() -> String {
    "https://api.twilio.com".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

pub struct TwilioProvider {
    client: reqwest::Client,
    cfg: TwilioConfig,
}

impl TwilioProvider {
    pub fn new(cfg: &TwilioConfig) -> Result<TwilioProvider, String> {
        if cfg.account_sid.is_empty() || cfg.auth_token.is_empty() {
            return Err("providers.twilio: account-sid and auth-token are required".into());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("providers.twilio client: {e}"))?;
        Ok(TwilioProvider {
            client,
            cfg: cfg.clone(),
        })
    }
}

#[async_trait]
impl Provider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn send(&self, _tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.account_sid
        );
        let mut form = vec![
            ("To", msg.to.as_str()),
            ("From", self.cfg.from.as_str()),
            ("Body", msg.body.as_str()),
        ];
        if let Some(cb) = &self.cfg.status_callback_url {
            form.push(("StatusCallback", cb.as_str()));
        }
        let resp = self
            .client
            .post(&url)
            .basic_auth(&self.cfg.account_sid, Some(&self.cfg.auth_token))
            // Not part of Twilio's API; lets a proxy or test double drop repeats.
            .header("Idempotency-Key", &msg.attempt_id)
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("twilio: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            let created: Created = resp
                .json()
                .await
                .map_err(|e| SendError::retryable(format!("twilio: unreadable response: {e}")))?;
            return Ok(SendOutcome {
                provider_message_id: created.sid,
                delivered: false,
            });
        }
        let err: ApiError = resp.json().await.unwrap_or_default();
        let text = format!(
            "twilio answered {status}: {} (code {})",
            err.message, err.code
        );
        if status.is_server_error() || status.as_u16() == 429 {
            Err(SendError::retryable(text))
        } else {
            Err(SendError::terminal(text))
        }
    }
}
