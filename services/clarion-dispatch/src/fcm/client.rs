//! The HTTP client: one per project; each send is one `messages:send`.

use std::sync::Arc;
use std::time::Duration;

use clarion_runtime::Clock;

use super::auth::{ServiceAccount, TokenSource};
use super::message::FcmMessage;
use super::outcome::{classify_error, parse_retry_after, Outcome};
use super::FcmConfig;

pub struct FcmClient {
    http: reqwest::Client,
    send_url: String,
    tokens: TokenSource,
}

impl FcmClient {
    pub fn new(cfg: &FcmConfig, clock: Arc<dyn Clock>) -> Result<FcmClient, String> {
        let account = ServiceAccount::from_json(&cfg.service_account_json)
            .map_err(|e| format!("providers.fcm.{e}"))?;
        let project = cfg
            .project_id
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&account.project_id);
        if project.is_empty() {
            return Err("providers.fcm.project-id: required (not in the key file either)".into());
        }
        // The project id becomes a path segment.
        if !project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':')
        {
            return Err("providers.fcm.project-id: not a Google Cloud project id".into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("providers.fcm client: {e}"))?;
        let token_url = cfg
            .token_url
            .as_deref()
            .unwrap_or(&account.token_uri)
            .to_string();
        let tokens = TokenSource::new(&account, &token_url, http.clone(), clock)
            .map_err(|e| format!("providers.fcm.{e}"))?;
        Ok(FcmClient {
            http,
            send_url: format!("{}/v1/projects/{project}/messages:send", cfg.base_url()),
            tokens,
        })
    }

    /// Sends one message.
    pub async fn send(&self, msg: &FcmMessage) -> Outcome {
        if msg.token.is_empty() {
            return Outcome::DeadToken {
                reason: "empty registration token".into(),
            };
        }
        let access = match self.tokens.access_token().await {
            Ok(t) => t,
            Err(e) if e.is_transient() => {
                return Outcome::Retryable {
                    status: None,
                    reason: e.to_string(),
                    retry_after: None,
                }
            }
            Err(e) => {
                return Outcome::CredentialRejected {
                    reason: e.to_string(),
                }
            }
        };
        let resp = match self
            .http
            .post(&self.send_url)
            .bearer_auth(&*access)
            .json(&msg.body())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retryable {
                    status: None,
                    reason: crate::ssrf::excerpt(&format!("fcm: {e}"), 200),
                    retry_after: None,
                }
            }
        };
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp.bytes().await.unwrap_or_default();
        if status == 200 {
            #[derive(serde::Deserialize, Default)]
            struct Sent {
                #[serde(default)]
                name: String,
            }
            let sent: Sent = serde_json::from_slice(&body).unwrap_or_default();
            return Outcome::Accepted { name: sent.name };
        }
        if status == 401 {
            // Revoked or rotated under us: the next send exchanges anew
            // (this one is still reported, once, to the operator).
            self.tokens.invalidate().await;
        }
        classify_error(status, retry_after, &body)
    }

    /// How many token exchanges happened (one per token lifetime).
    pub fn token_exchanges(&self) -> u64 {
        self.tokens.exchanges()
    }
}
