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

    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.account_sid
        );
        let callback = self.cfg.status_callback_url.as_ref().map(|base| {
            // The provider signs the full callback URL, query included, so
            // these ids come back unforgeable.
            format!(
                "{base}?tenant={tenant}&notification={}&attempt={}",
                msg.notification_id, msg.attempt_id
            )
        });
        let mut form = vec![
            ("To", msg.to.as_str()),
            ("From", self.cfg.from.as_str()),
            ("Body", msg.body.as_str()),
        ];
        if let Some(cb) = &callback {
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
            .map_err(|e| {
                SendError::retryable(format!(
                    "twilio: {}",
                    crate::ssrf::excerpt(&e.to_string(), crate::webhook::ANSWER_EXCERPT_BYTES)
                ))
            })?;
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
        // The provider's words reach tenant-readable history: bounded.
        let text = format!(
            "twilio answered {status}: {} (code {})",
            crate::ssrf::excerpt(&err.message, crate::webhook::ANSWER_EXCERPT_BYTES),
            err.code
        );
        if status.is_server_error() || status.as_u16() == 429 {
            Err(SendError::retryable(text))
        } else {
            Err(SendError::terminal(text))
        }
    }
}

/// Twilio's request signature: Base64(HMAC-SHA1(auth token, URL + each POST
/// parameter's name and value, sorted by name)), sent as `X-Twilio-Signature`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Constant-time check of an `X-Twilio-Signature`.
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    given: &str,
) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
        return false;
    };
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_twilio_documented_example() {
        // The example of Twilio's "Validating requests" documentation.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let sig = signature("12345", url, &params);
        assert_eq!(sig, "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(verify_signature("12345", url, &params, &sig));
        assert!(!verify_signature(
            "12345",
            "https://mycompany.com/other",
            &params,
            &sig
        ));
        assert!(!verify_signature("wrong", url, &params, &sig));
    }
}
