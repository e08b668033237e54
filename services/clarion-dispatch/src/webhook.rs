//! Webhooks: an HTTP POST of JSON, signed so the receiver can trust it.
//!
//! Signature scheme (same shape as Stripe's): header
//! `Clarion-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! The timestamp is inside the MAC, so a captured request cannot be replayed
//! outside the receiver's tolerance window; `Clarion-Idempotency-Key` lets the
//! receiver drop a redelivery inside it.

use std::time::Duration;

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::provider::{Provider, SendError, SendOutcome};

pub const SIGNATURE_HEADER: &str = "Clarion-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Clarion-Idempotency-Key";

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookConfig {
    /// HMAC key shared with receivers.
    pub signing_secret: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

type HmacSha256 = Hmac<Sha256>;

/// The `Clarion-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header is malformed (expected t=<seconds>,v1=<hex>)")]
    Malformed,
    #[error("signature timestamp is outside the tolerance window (possible replay)")]
    Stale,
    #[error("signature does not match the body")]
    Mismatch,
}

/// Verifies a `Clarion-Signature` header: constant-time MAC comparison and a
/// timestamp within `tolerance` of `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let mut ts = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => ts = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| VerifyError::Malformed)?),
            _ => {}
        }
    }
    let ts = ts.ok_or(VerifyError::Malformed)?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if (now - ts).unsigned_abs() > tolerance.as_secs() {
        return Err(VerifyError::Stale);
    }
    for sig in sigs {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(ts.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

pub struct WebhookProvider {
    client: reqwest::Client,
    secret: Vec<u8>,
}

impl WebhookProvider {
    pub fn new(cfg: &WebhookConfig) -> Result<WebhookProvider, String> {
        if cfg.signing_secret.len() < 16 {
            return Err("providers.webhook.signing-secret must be at least 16 bytes".into());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(WebhookProvider {
            client,
            secret: cfg.signing_secret.as_bytes().to_vec(),
        })
    }
}

#[async_trait]
impl Provider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "tenant_id": tenant,
            "notification_id": msg.notification_id,
            "attempt_id": msg.attempt_id,
            "subscriber_id": msg.subscriber_id,
            "channel": msg.channel,
            "locale": msg.locale,
            "subject": msg.subject,
            "body": msg.body,
        }))
        .map_err(|e| SendError::terminal(e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let resp = self
            .client
            .post(&msg.to)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, now, &body))
            .header(IDEMPOTENCY_HEADER, &msg.attempt_id)
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::retryable(format!("webhook {}: {e}", msg.to)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(SendOutcome {
                provider_message_id: msg.attempt_id.clone(),
                delivered: true,
            })
        } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(SendError::retryable(format!(
                "webhook {} answered {status}",
                msg.to
            )))
        } else {
            Err(SendError::terminal(format!(
                "webhook {} answered {status}",
                msg.to
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_replay() {
        let secret = b"0123456789abcdef-secret";
        let h = sign(secret, 1_700_000_000, b"{\"a\":1}");
        let tol = Duration::from_secs(300);
        assert_eq!(verify(secret, &h, b"{\"a\":1}", 1_700_000_100, tol), Ok(()));
        assert_eq!(
            verify(secret, &h, b"{\"a\":2}", 1_700_000_100, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other-secret-000000", &h, b"{\"a\":1}", 1_700_000_100, tol),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, &h, b"{\"a\":1}", 1_700_001_000, tol),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(secret, "v1=abcd", b"", 0, tol),
            Err(VerifyError::Malformed)
        );
    }
}
