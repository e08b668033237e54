//! The provider authentication token: an ES256 JWT (`alg`, `kid` = key id;
//! claims `iss` = team id, `iat`). Apple refuses a token older than an hour
//! (`ExpiredProviderToken`) and refuses new tokens issued more often than
//! every 20 minutes (`TooManyProviderTokenUpdates`). So one token is cached
//! and replaced only when the clock says it is [`REFRESH_AFTER`] old: no code
//! path can sign twice within [`MIN_REUSE`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clarion_runtime::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::Serialize;

/// Apple's lower bound between two token updates.
pub const MIN_REUSE: Duration = Duration::from_secs(20 * 60);
/// When the cached token is replaced: well inside Apple's one-hour validity,
/// well past the 20-minute floor.
pub const REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("key-pem: not a PKCS#8 PEM private key (the .p8 file from Apple): {0}")]
    Pem(String),
    #[error("key-pem: not a usable P-256 key: {0}")]
    Key(String),
    #[error("{0}: required")]
    Missing(&'static str),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

struct Issued {
    jwt: Arc<str>,
    at_ms: i64,
}

pub struct TokenSigner {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    clock: Arc<dyn Clock>,
    // A std mutex held while signing (tens of microseconds): concurrent
    // senders at the refresh instant must not each issue a token.
    current: Mutex<Issued>,
}

impl TokenSigner {
    /// Parses the key and signs the first token (so a bad key fails here,
    /// at configuration time, not at the first push).
    pub fn new(
        team_id: &str,
        key_id: &str,
        key_pem: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<TokenSigner, SignerError> {
        if team_id.is_empty() {
            return Err(SignerError::Missing("team-id"));
        }
        if key_id.is_empty() {
            return Err(SignerError::Missing("key-id"));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| SignerError::Pem(e.to_string()))?;
        let key = EncodingKey::from_ec_der(der.secret_pkcs8_der());
        let at_ms = clock.now_ms();
        let jwt = sign(&key, key_id, team_id, at_ms)?;
        Ok(TokenSigner {
            key,
            key_id: key_id.to_string(),
            team_id: team_id.to_string(),
            clock,
            current: Mutex::new(Issued { jwt, at_ms }),
        })
    }

    /// The token to send now: the cached one unless it is
    /// [`REFRESH_AFTER`] old. A clock that went backwards keeps the cached
    /// token (its age is unknown, but a new one might come too soon).
    pub fn token(&self) -> Result<Arc<str>, SignerError> {
        let now = self.clock.now_ms();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let age_ms = now - cur.at_ms;
        if age_ms >= REFRESH_AFTER.as_millis() as i64 {
            debug_assert!(age_ms >= MIN_REUSE.as_millis() as i64);
            cur.jwt = sign(&self.key, &self.key_id, &self.team_id, now)?;
            cur.at_ms = now;
        }
        Ok(cur.jwt.clone())
    }

    /// When the current token was issued (ms since the epoch).
    pub fn issued_at_ms(&self) -> i64 {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).at_ms
    }
}

fn sign(
    key: &EncodingKey,
    key_id: &str,
    team_id: &str,
    at_ms: i64,
) -> Result<Arc<str>, SignerError> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key_id.to_string());
    // Apple's documented header is exactly {alg, kid}.
    header.typ = None;
    let claims = Claims {
        iss: team_id,
        iat: at_ms.div_euclid(1000),
    };
    jsonwebtoken::encode(&header, &claims, key)
        .map(Arc::from)
        .map_err(|e| SignerError::Key(e.to_string()))
}
