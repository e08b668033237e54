//! The HTTP/2 client: one connection per app and environment, one stream per
//! push.

use std::sync::Arc;
use std::time::Duration;

use clarion_runtime::Clock;
use uuid::Uuid;

use super::outcome::{classify_error, Outcome};
use super::signer::TokenSigner;
use super::ApnsConfig;

/// `apns-push-type`: Apple requires it and checks it against the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushType {
    Alert,
    Background,
    Voip,
    Location,
    Complication,
    Fileprovider,
    Mdm,
    Liveactivity,
    Pushtotalk,
}

impl PushType {
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Voip => "voip",
            PushType::Location => "location",
            PushType::Complication => "complication",
            PushType::Fileprovider => "fileprovider",
            PushType::Mdm => "mdm",
            PushType::Liveactivity => "liveactivity",
            PushType::Pushtotalk => "pushtotalk",
        }
    }
}

/// `apns-priority`: 10 now, 5 power-considerate, 1 lowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Immediate,
    PowerConsiderate,
    Low,
}

impl Priority {
    fn header(self) -> &'static str {
        match self {
            Priority::Immediate => "10",
            Priority::PowerConsiderate => "5",
            Priority::Low => "1",
        }
    }
}

/// One push. `payload` is the JSON body (`{"aps": {...}, ...}`).
#[derive(Clone, Debug)]
pub struct ApnsRequest {
    pub payload: serde_json::Value,
    pub push_type: PushType,
    pub priority: Option<Priority>,
    /// `apns-expiration`: Unix seconds until which APNs keeps retrying;
    /// 0 = deliver once or drop.
    pub expiration: Option<i64>,
    pub collapse_id: Option<String>,
    /// Overrides the configured topic (e.g. `{bundle}.voip`).
    pub topic: Option<String>,
    /// `apns-id`: from [`apns_id_for_attempt`], so a repeat after a crash
    /// carries the same id.
    pub apns_id: Uuid,
}

impl ApnsRequest {
    pub fn new(payload: serde_json::Value, push_type: PushType, apns_id: Uuid) -> ApnsRequest {
        ApnsRequest {
            payload,
            push_type,
            priority: None,
            expiration: None,
            collapse_id: None,
            topic: None,
            apns_id,
        }
    }
}

/// Our attempt id as a UUID. Attempt ids are 128-bit hex (written as-is);
/// anything else is hashed, so the mapping stays deterministic.
pub fn apns_id_for_attempt(attempt_id: &str) -> Uuid {
    let mut bytes = [0u8; 16];
    if attempt_id.len() == 32 && hex::decode_to_slice(attempt_id, &mut bytes).is_ok() {
        return Uuid::from_bytes(bytes);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(attempt_id.as_bytes());
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

pub struct ApnsClient {
    http: reqwest::Client,
    base_url: String,
    topic: String,
    signer: TokenSigner,
}

impl ApnsClient {
    pub fn new(cfg: &ApnsConfig, clock: Arc<dyn Clock>) -> Result<ApnsClient, String> {
        ApnsClient::build(cfg, clock, None)
    }

    /// Also trusts `ca_pem` (a relay with a private CA, or a test server).
    pub fn with_root_certificate(
        cfg: &ApnsConfig,
        clock: Arc<dyn Clock>,
        ca_pem: &[u8],
    ) -> Result<ApnsClient, String> {
        ApnsClient::build(cfg, clock, Some(ca_pem))
    }

    fn build(
        cfg: &ApnsConfig,
        clock: Arc<dyn Clock>,
        ca_pem: Option<&[u8]>,
    ) -> Result<ApnsClient, String> {
        if cfg.topic.is_empty() {
            return Err("providers.apns.topic: required (the app's bundle id)".into());
        }
        let signer = TokenSigner::new(&cfg.team_id, &cfg.key_id, &cfg.key_pem, clock)
            .map_err(|e| format!("providers.apns.{e}"))?;
        // Prior knowledge: TLS offers only `h2` in ALPN, and the pool knows
        // up front that the connection is shared, so concurrent first sends
        // wait for one connection instead of each opening their own.
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            // Apple: keep the connection, ping it rather than reconnect.
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_while_idle(true);
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| format!("providers.apns root certificate: {e}"))?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .build()
            .map_err(|e| format!("providers.apns client: {e}"))?;
        Ok(ApnsClient {
            http,
            base_url: cfg.base_url().to_string(),
            topic: cfg.topic.clone(),
            signer,
        })
    }

    /// Sends one push to `token` (hex, as the device reported it).
    pub async fn send(&self, token: &str, req: &ApnsRequest) -> Outcome {
        // The token becomes a path segment: hex only.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Outcome::BadDeviceToken;
        }
        let jwt = match self.signer.token() {
            Ok(jwt) => jwt,
            Err(e) => {
                return Outcome::CredentialRejected {
                    reason: e.to_string(),
                }
            }
        };
        let url = format!("{}/3/device/{token}", self.base_url);
        let apns_id = req.apns_id.hyphenated().to_string();
        let mut http = self
            .http
            .post(&url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", req.topic.as_deref().unwrap_or(&self.topic))
            .header("apns-push-type", req.push_type.as_str())
            .header("apns-id", &apns_id)
            .json(&req.payload);
        if let Some(p) = req.priority {
            http = http.header("apns-priority", p.header());
        }
        if let Some(exp) = req.expiration {
            http = http.header("apns-expiration", exp.to_string());
        }
        if let Some(c) = &req.collapse_id {
            http = http.header("apns-collapse-id", c);
        }
        let resp = match http.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retryable {
                    status: None,
                    reason: crate::ssrf::excerpt(&format!("apns: {e}"), 200),
                }
            }
        };
        let status = resp.status().as_u16();
        if status == 200 {
            let echoed = resp
                .headers()
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Outcome::Accepted {
                apns_id: echoed.unwrap_or(apns_id),
            };
        }
        let body = resp.bytes().await.unwrap_or_default();
        classify_error(status, &body)
    }

    /// When the provider token in use was issued (ms since the epoch).
    pub fn token_issued_at_ms(&self) -> i64 {
        self.signer.issued_at_ms()
    }
}
