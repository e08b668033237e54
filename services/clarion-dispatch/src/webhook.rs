//! Webhooks: an HTTP POST of JSON, signed so the receiver can trust it.
//!
//! Signature scheme (same shape as Stripe's): header
//! `Clarion-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! The timestamp is inside the MAC, so a captured request cannot be replayed
//! outside the receiver's tolerance window; `Clarion-Idempotency-Key` lets the
//! receiver drop a redelivery inside it. While a tenant's rotated secret
//! overlaps the new one, the header carries one `v1=` per secret (new first);
//! a receiver accepts the request if any of them verifies with its secret.
//!
//! Each tenant signs with its own secret ([`crate::tenant_secrets`]);
//! operator alerts (the dead-letter alert) with the operator's
//! `signing-secret`. Tenant URLs pass the SSRF guard ([`crate::ssrf`]), no
//! redirect is followed, every request has a connect and a total timeout,
//! and sends per destination and per tenant are bounded: a destination that
//! already has its share in flight fails the next send at once, retryably
//! ("destination busy"), rather than queueing it behind the slow ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;
use clarion_runtime::{Clock, SystemClock};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::provider::{Provider, SendError, SendOutcome};
use crate::ssrf::{excerpt, refused_in, Guard, GuardedResolver, OutboundConfig};
use crate::tenant_secrets::TenantSecrets;

pub const SIGNATURE_HEADER: &str = "Clarion-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Clarion-Idempotency-Key";
/// How much of a destination's answer a tenant-readable reason quotes.
pub const ANSWER_EXCERPT_BYTES: usize = 200;

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WebhookConfig {
    /// The operator's HMAC key: signs operator alerts (the dead-letter
    /// alert). Tenants' webhooks are signed with per-tenant secrets. Empty:
    /// operator alerts cannot be sent.
    #[serde(default)]
    pub signing_secret: String,
    /// Whole request, connect to last byte of the answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Sends in flight to one destination (host and port) per dispatcher
    /// process; past it a send fails at once, retryably.
    #[serde(default = "default_per_host")]
    pub max_in_flight_per_host: usize,
    /// Sends in flight of one tenant per dispatcher process.
    #[serde(default = "default_per_tenant")]
    pub max_in_flight_per_tenant: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            signing_secret: String::new(),
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_in_flight_per_host: default_per_host(),
            max_in_flight_per_tenant: default_per_tenant(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_per_host() -> usize {
    16
}
fn default_per_tenant() -> usize {
    32
}

type HmacSha256 = Hmac<Sha256>;

fn mac_hex(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Clarion-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    sign_all(&[secret], timestamp, body)
}

/// The `Clarion-Signature` value with one `v1=` per secret, in order.
pub fn sign_all(secrets: &[&[u8]], timestamp: i64, body: &[u8]) -> String {
    let mut out = format!("t={timestamp}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&mac_hex(s, timestamp, body));
    }
    out
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
/// timestamp within `tolerance` of `now` (unix seconds). Any one `v1=` that
/// verifies is enough (during a rotation's overlap there are two).
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

/// Counts of sends in flight per key, each bounded.
struct InFlight {
    max: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One send's place in an [`InFlight`] count, given back on drop.
struct Slot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl InFlight {
    fn new(max: usize) -> InFlight {
        InFlight {
            max: max.max(1),
            counts: Arc::default(),
        }
    }

    fn try_enter(&self, key: &str) -> Option<Slot> {
        let mut counts = self.counts.lock().expect("not poisoned");
        let n = counts.entry(key.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("not poisoned");
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                // Keys leave with their last send: the map holds only what
                // is in flight, however many destinations tenants name.
                counts.remove(&self.key);
            }
        }
    }
}

pub struct WebhookProvider {
    /// Tenant destinations: through the SSRF guard, no redirects.
    client: reqwest::Client,
    /// Operator destinations (alerts): the operator chose them; no guard.
    operator_client: reqwest::Client,
    guard: Arc<Guard>,
    secrets: Arc<TenantSecrets>,
    operator_secret: Vec<u8>,
    operator_urls: Vec<String>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    hosts: InFlight,
    tenants: InFlight,
}

fn client(cfg: &WebhookConfig, guard: Option<Arc<Guard>>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        // A redirect could lead a public URL inward; a 3xx fails the send.
        .redirect(reqwest::redirect::Policy::none())
        // A proxy from the environment would resolve names past the guard.
        .no_proxy();
    if let Some(g) = guard {
        b = b.dns_resolver(Arc::new(GuardedResolver::new(g)));
    }
    b.build().map_err(|e| format!("webhook client: {e}"))
}

impl WebhookProvider {
    pub fn new(
        cfg: &WebhookConfig,
        outbound: &OutboundConfig,
        secrets: Arc<TenantSecrets>,
    ) -> Result<WebhookProvider, String> {
        if !cfg.signing_secret.is_empty() && cfg.signing_secret.len() < 16 {
            return Err("providers.webhook.signing-secret must be at least 16 bytes".into());
        }
        let guard = Arc::new(Guard::new(outbound)?);
        Ok(WebhookProvider {
            client: client(cfg, Some(guard.clone()))?,
            operator_client: client(cfg, None)?,
            guard,
            secrets,
            operator_secret: cfg.signing_secret.as_bytes().to_vec(),
            operator_urls: Vec::new(),
            clock: Arc::new(SystemClock),
            timeout: Duration::from_millis(cfg.timeout_ms),
            hosts: InFlight::new(cfg.max_in_flight_per_host),
            tenants: InFlight::new(cfg.max_in_flight_per_tenant),
        })
    }

    /// URLs the operator configured for alerts: signed with the operator's
    /// secret and not subject to the SSRF guard.
    pub fn with_operator_urls(mut self, urls: Vec<String>) -> WebhookProvider {
        self.operator_urls = urls;
        self
    }

    /// The clock that timestamps signatures and ends rotation overlaps.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> WebhookProvider {
        self.clock = clock;
        self
    }

    /// Operator alerts are dispatched by the router under ids no tenant can
    /// choose (`dlq-alert-…`, notification ids are the gateway's), to a URL
    /// of the operator's configuration.
    fn is_operator_alert(&self, msg: &DispatchRequested) -> bool {
        msg.notification_id.starts_with("dlq-alert-") && self.operator_urls.contains(&msg.to)
    }

    /// The secrets `msg` is signed with.
    async fn signing_secrets(
        &self,
        tenant: &str,
        operator: bool,
        now_ms: i64,
    ) -> Result<Vec<Vec<u8>>, SendError> {
        if operator {
            if self.operator_secret.is_empty() {
                return Err(SendError::terminal(
                    "operator alert not sent: providers.webhook.signing-secret is not set",
                ));
            }
            return Ok(vec![self.operator_secret.clone()]);
        }
        match self.secrets.get(tenant).await {
            Ok(Some(keys)) => Ok(keys
                .signing(now_ms)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect()),
            Ok(None) => Err(SendError::terminal(
                "webhook not sent: the tenant has no webhook signing secret yet; create one with \
                 RotateWebhookSecret (`clarion tenant webhook-secret rotate`)",
            )),
            Err(e) => {
                tracing::error!(tenant, error = %e, "webhook signing secret unavailable");
                Err(SendError::retryable("webhook signing secret unavailable"))
            }
        }
    }

    /// A request error as a send failure: the guard's refusal is final, the
    /// rest may clear.
    fn request_failed(&self, e: reqwest::Error) -> SendError {
        if let Some(r) = refused_in(&e) {
            return SendError::terminal(format!("webhook refused: {r}"));
        }
        if e.is_timeout() {
            return SendError::retryable(format!(
                "webhook timed out after {} ms",
                self.timeout.as_millis()
            ));
        }
        let what = if e.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        // The error's own text names the URL and the OS error: bounded.
        let detail = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        SendError::retryable(format!(
            "webhook {what}: {}",
            excerpt(&detail, ANSWER_EXCERPT_BYTES)
        ))
    }
}

/// At most [`ANSWER_EXCERPT_BYTES`] of an answer's body, for the reason.
async fn answer_excerpt(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < ANSWER_EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    excerpt(text.trim(), ANSWER_EXCERPT_BYTES)
}

#[async_trait]
impl Provider for WebhookProvider {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        let operator = self.is_operator_alert(msg);
        let url = if operator {
            reqwest::Url::parse(&msg.to)
                .map_err(|e| SendError::terminal(format!("operator alert URL: {e}")))?
        } else {
            self.guard
                .check_url(&msg.to)
                .map_err(|r| SendError::terminal(format!("webhook refused: {r}")))?
        };
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let _host_slot = self.hosts.try_enter(&host).ok_or_else(|| {
            SendError::retryable(format!(
                "destination busy: {} sends to {} already in flight",
                self.hosts.max,
                excerpt(&host, 100)
            ))
        })?;
        let _tenant_slot = self.tenants.try_enter(tenant).ok_or_else(|| {
            SendError::retryable(format!(
                "destination busy: {} webhook sends of this tenant already in flight",
                self.tenants.max
            ))
        })?;
        let now_ms = self.clock.now_ms();
        let secrets = self.signing_secrets(tenant, operator, now_ms).await?;
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
        let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        let client = if operator {
            &self.operator_client
        } else {
            &self.client
        };
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .header(
                SIGNATURE_HEADER,
                sign_all(&refs, now_ms.div_euclid(1000), &body),
            )
            .header(IDEMPOTENCY_HEADER, &msg.attempt_id)
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_failed(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(SendOutcome {
                provider_message_id: msg.attempt_id.clone(),
                delivered: true,
            });
        }
        if status.is_redirection() {
            return Err(SendError::terminal(format!(
                "webhook answered {status}: redirects are not followed"
            )));
        }
        let retry = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
        let answer = answer_excerpt(resp).await;
        let reason = if answer.is_empty() {
            format!("webhook answered {status}")
        } else {
            format!("webhook answered {status}: {answer}")
        };
        Err(if retry {
            SendError::retryable(reason)
        } else {
            SendError::terminal(reason)
        })
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

    #[test]
    fn a_header_with_two_signatures_verifies_with_either_secret() {
        let tol = Duration::from_secs(300);
        let h = sign_all(&[b"new-secret-0123456", b"old-secret-0123456"], 100, b"x");
        assert_eq!(h.matches("v1=").count(), 2);
        assert_eq!(verify(b"new-secret-0123456", &h, b"x", 100, tol), Ok(()));
        assert_eq!(verify(b"old-secret-0123456", &h, b"x", 100, tol), Ok(()));
        assert_eq!(
            verify(b"third-secret-01234", &h, b"x", 100, tol),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn in_flight_counts_are_bounded_per_key_and_forgotten_when_idle() {
        let f = InFlight::new(2);
        let a = f.try_enter("h:1").unwrap();
        let b = f.try_enter("h:1").unwrap();
        assert!(
            f.try_enter("h:1").is_none(),
            "third send to one host refused"
        );
        assert!(f.try_enter("other:1").is_some(), "other hosts unaffected");
        drop(a);
        let c = f.try_enter("h:1").unwrap();
        drop((b, c));
        assert!(f.counts.lock().unwrap().is_empty());
    }
}
