//! The OAuth2 access token for FCM: a service account signs an RS256 JWT
//! assertion (`iss` = client email, `scope` = firebase.messaging, `aud` =
//! token URI, one-hour `exp`) and exchanges it at the token URI
//! (RFC 7523 `jwt-bearer` grant). The access token is cached until
//! [`REFRESH_MARGIN`] before it expires: one exchange per token lifetime,
//! not per send. The cache sits behind an async mutex held across the
//! exchange, so senders arriving during a refresh wait for it instead of
//! each exchanging their own assertion.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clarion_runtime::Clock;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// The only scope FCM HTTP v1 needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long before its expiry a token is replaced: a send must not leave
/// with a token that dies in flight.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
const ASSERTION_LIFETIME_S: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("service-account-json: not a service account key file: {0}")]
    Json(String),
    #[error("service-account-json: {0}: required")]
    Missing(&'static str),
    #[error("service-account-json: private_key: not a PKCS#8 PEM RSA key: {0}")]
    Key(String),
    #[error("token exchange at {url} refused (HTTP {status}): {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    /// No answer or a 5xx/429: the credentials may be fine.
    #[error("token exchange at {url} failed: {reason}")]
    Unavailable { url: String, reason: String },
}

impl AuthError {
    /// Whether trying again later can help (otherwise an operator must act).
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Unavailable { .. })
    }
}

/// The fields of a Google service-account key file that FCM needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    #[serde(default)]
    pub client_email: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub token_uri: String,
    #[serde(default)]
    pub project_id: String,
}

impl std::fmt::Debug for ServiceAccount {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub fn from_json(json: &str) -> Result<ServiceAccount, AuthError> {
        serde_json::from_str(json).map_err(|e| AuthError::Json(e.to_string()))
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

struct Cached {
    token: Arc<str>,
    refresh_at_ms: i64,
}

pub struct TokenSource {
    key: RsaKeyPair,
    client_email: String,
    token_url: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    current: Mutex<Option<Cached>>,
    exchanges: std::sync::atomic::AtomicU64,
}

impl TokenSource {
    /// Parses the key (a bad key fails here, at configuration time); the
    /// first exchange happens at the first send.
    pub fn new(
        account: &ServiceAccount,
        token_url: &str,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<TokenSource, AuthError> {
        if account.client_email.is_empty() {
            return Err(AuthError::Missing("client_email"));
        }
        if token_url.is_empty() {
            return Err(AuthError::Missing("token_uri"));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(account.private_key.as_bytes())
            .map_err(|e| AuthError::Key(e.to_string()))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(TokenSource {
            key,
            client_email: account.client_email.clone(),
            token_url: token_url.to_string(),
            http,
            clock,
            current: Mutex::new(None),
            exchanges: Default::default(),
        })
    }

    /// The access token to send with now.
    pub async fn access_token(&self) -> Result<Arc<str>, AuthError> {
        let mut cur = self.current.lock().await;
        let now = self.clock.now_ms();
        if let Some(c) = cur.as_ref().filter(|c| now < c.refresh_at_ms) {
            return Ok(c.token.clone());
        }
        let fresh = self.exchange(now).await?;
        let token = fresh.token.clone();
        *cur = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token (FCM refused it): the next send exchanges
    /// a new assertion.
    pub async fn invalidate(&self) {
        *self.current.lock().await = None;
    }

    /// How many assertions were exchanged so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn exchange(&self, now_ms: i64) -> Result<Cached, AuthError> {
        self.exchanges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let assertion = self.assertion(now_ms.div_euclid(1000))?;
        let unavailable = |reason: String| AuthError::Unavailable {
            url: self.token_url.clone(),
            reason: crate::ssrf::excerpt(&reason, 200),
        };
        let resp = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
        if status == 429 || status >= 500 {
            return Err(unavailable(format!("HTTP {status}")));
        }
        if status != 200 {
            return Err(AuthError::Refused {
                url: self.token_url.clone(),
                status,
                reason: crate::ssrf::excerpt(&String::from_utf8_lossy(&body), 200),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("unreadable answer: {e}")))?;
        let lifetime_ms = answer.expires_in.unwrap_or(ASSERTION_LIFETIME_S) * 1000;
        // A lifetime shorter than the margin is used once rather than never.
        let refresh_at_ms =
            now_ms + (lifetime_ms - REFRESH_MARGIN.as_millis() as i64).max(lifetime_ms / 2);
        Ok(Cached {
            token: Arc::from(answer.access_token),
            refresh_at_ms,
        })
    }

    fn assertion(&self, iat: i64) -> Result<String, AuthError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_url,
            iat,
            exp: iat + ASSERTION_LIFETIME_S,
        };
        let claims = serde_json::to_vec(&claims).map_err(|e| AuthError::Key(e.to_string()))?;
        let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}
