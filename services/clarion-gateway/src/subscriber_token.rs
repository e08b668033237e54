//! Subscriber tokens: what an end user's app (the hosted preference page,
//! the inbox widget) presents instead of an API key. A token reaches one
//! subscriber of one tenant, and only the routes of
//! [`crate::access::SUBSCRIBER_GRPC`] / [`crate::access::SUBSCRIBER_REST`].
//!
//! The format is a standard JWT (RFC 7519) signed with HS256: header
//! `{"alg":"HS256","typ":"JWT","kid":<key id>}`, claims `iss` = `clarion`,
//! `sub` = the subscriber, `ten` = the tenant, `iat`, `exp` (seconds) and
//! `scope` = `subscriber`. Each tenant signs with a secret of its own,
//! generated on first use and kept sealed with the gateway's keyring in the
//! Tenants table (partition [`KEY_PK`]); two gateways minting the first
//! token at once agree through insert-if-absent. Rotating the key
//! ([`rotate`]) gives it a new `kid`: every token signed before stops
//! working at once, which is also how tokens are revoked.
//!
//! The key is signing material, not business state: it is not an event,
//! and a store rebuilt from the log has none, which only invalidates the
//! tokens out there (the apps mint new ones), never lets a forged one in.

use std::collections::HashSet;

use base64::Engine;
use bytes::Bytes;
use clarion_dispatch::secrets::Keyring;
use clarion_domain::subscriber::validate_subscriber_id;
use clarion_domain::{TenantId, Violations};
use clarion_store::{RowKey, Table};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::GatewayState;

/// Partition of the Tenants table holding a tenant's token key (tenant ids
/// cannot contain `/`, so it never meets a tenant record).
pub const KEY_PK: &str = "subscriber-token-key/";
/// The `iss` of every token.
pub const ISSUER: &str = "clarion";
/// The `scope` of every token.
pub const SCOPE: &str = "subscriber";
/// Lifetime when the caller gives none.
pub const DEFAULT_TTL_SECS: u32 = 3600;
/// The longest lifetime a token may have.
pub const MAX_TTL_SECS: u32 = 30 * 24 * 3600;
/// Longer credentials are not tokens this gateway minted.
const MAX_TOKEN_BYTES: usize = 2048;

/// The answer to every token that does not verify: like API keys, a caller
/// cannot tell an unknown tenant from a bad signature or an expired token.
pub const INVALID_TOKEN: &str =
    "invalid subscriber token: unknown tenant or key, bad signature, or expired";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    ten: String,
    iat: i64,
    exp: i64,
    scope: String,
}

/// The stored row: the key id and the secret, sealed.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    sealed_secret: String,
    created_at_ms: i64,
}

/// A tenant's signing key, opened.
struct SigningKey {
    kid: String,
    secret: Vec<u8>,
}

fn row(tenant: &str) -> RowKey {
    RowKey::new(Table::Tenants, tenant, KEY_PK, Vec::new())
}

fn purpose(tenant: &str) -> String {
    format!("subscriber-token-key/{tenant}")
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// A fresh key, sealed for the tenant, as the row stores it.
fn fresh(keyring: &Keyring, tenant: &str, now_ms: i64) -> Bytes {
    let secret: [u8; 32] = rand::random();
    let kid: [u8; 8] = rand::random();
    let stored = StoredKey {
        kid: hex::encode(kid),
        sealed_secret: b64().encode(keyring.seal(&purpose(tenant), &secret)),
        created_at_ms: now_ms,
    };
    serde_json::to_vec(&stored).expect("a key is JSON").into()
}

fn open(keyring: &Keyring, tenant: &str, bytes: &[u8]) -> Result<SigningKey, ApiError> {
    let broken = |what: String| {
        tracing::error!(tenant, error = %what, "cannot open the subscriber token key");
        ApiError::Internal("the tenant's subscriber token key cannot be opened".into())
    };
    let stored: StoredKey = serde_json::from_slice(bytes).map_err(|e| broken(e.to_string()))?;
    let sealed = b64()
        .decode(&stored.sealed_secret)
        .map_err(|e| broken(e.to_string()))?;
    let secret = keyring
        .open(&purpose(tenant), &sealed)
        .map_err(|e| broken(e.to_string()))?;
    Ok(SigningKey {
        kid: stored.kid,
        secret,
    })
}

/// The tenant's key, made on first use (insert-if-absent: concurrent
/// gateways keep the same one).
async fn key_for_signing(s: &GatewayState, tenant: &str) -> Result<SigningKey, ApiError> {
    let key = row(tenant);
    if let Some(b) = s.store.get(&key).await? {
        return open(&s.keyring, tenant, &b);
    }
    let made = fresh(&s.keyring, tenant, s.clock.now_ms());
    match s.store.insert_if_absent(&key, made.clone(), None).await? {
        None => open(&s.keyring, tenant, &made),
        Some(theirs) => open(&s.keyring, tenant, &theirs),
    }
}

/// Replaces the tenant's key: every token signed before stops working.
/// Returns the new key id.
pub async fn rotate(s: &GatewayState, tenant: &TenantId) -> Result<String, ApiError> {
    let made = fresh(&s.keyring, tenant.as_str(), s.clock.now_ms());
    let mut batch = clarion_store::WriteBatch::new();
    batch.put(row(tenant.as_str()), made.clone());
    s.store.write(batch).await?;
    Ok(open(&s.keyring, tenant.as_str(), &made)?.kid)
}

/// A minted token and when it stops working (unix ms).
pub struct Minted {
    pub token: String,
    pub expires_at_ms: i64,
}

/// Mints a token for `subscriber` of `tenant` living `ttl_secs` (0: one
/// hour). The subscriber must exist.
pub async fn mint(
    s: &GatewayState,
    tenant: &TenantId,
    subscriber: &str,
    ttl_secs: u32,
) -> Result<Minted, ApiError> {
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, "subscriber_id", subscriber);
    if ttl_secs > MAX_TTL_SECS {
        v.push(
            "ttl_seconds",
            format!("must be at most {MAX_TTL_SECS} (30 days)"),
        );
    }
    v.into_result()?;
    let profile = RowKey::new(Table::Subscribers, tenant.as_str(), subscriber, Vec::new());
    if s.store.get(&profile).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no subscriber {} for tenant {:?}",
            clarion_domain::error::quote(subscriber),
            tenant.as_str()
        )));
    }
    let ttl = if ttl_secs == 0 {
        DEFAULT_TTL_SECS
    } else {
        ttl_secs
    };
    let key = key_for_signing(s, tenant.as_str()).await?;
    let iat = s.clock.now_ms().div_euclid(1000);
    let claims = Claims {
        iss: ISSUER.into(),
        sub: subscriber.into(),
        ten: tenant.as_str().into(),
        iat,
        exp: iat + i64::from(ttl),
        scope: SCOPE.into(),
    };
    let header = Header {
        kid: Some(key.kid.clone()),
        ..Header::new(Algorithm::HS256)
    };
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.secret))
        .map_err(|e| ApiError::Internal(format!("signing a subscriber token: {e}")))?;
    Ok(Minted {
        token,
        expires_at_ms: claims.exp * 1000,
    })
}

/// Whether a credential has the shape of a token (three base64url parts),
/// as opposed to an API key (`ck_...`).
pub fn looks_like_token(raw: &str) -> bool {
    raw.len() <= MAX_TOKEN_BYTES
        && raw.split('.').count() == 3
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a verified token grants.
#[derive(Clone, Debug)]
pub struct Verified {
    pub tenant: TenantId,
    pub subscriber: String,
    pub kid: String,
    pub expires_at_ms: i64,
}

fn rules(check_signature: bool) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    // Expiry is checked against the gateway's clock (a manual one in tests).
    v.validate_exp = false;
    v.leeway = 0;
    v.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
    v.set_issuer(&[ISSUER]);
    if !check_signature {
        v.insecure_disable_signature_validation();
    }
    v
}

/// Verifies a token: the tenant it names must have the key of its `kid`,
/// the signature must match and the clock must be before `exp`.
pub async fn verify(s: &GatewayState, raw: &str) -> Result<Verified, ApiError> {
    let invalid = || ApiError::Unauthenticated(INVALID_TOKEN.into());
    let header = jsonwebtoken::decode_header(raw).map_err(|_| invalid())?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid());
    }
    // Which tenant's key to check with: read before the signature is
    // checked, trusted only after.
    let unverified =
        jsonwebtoken::decode::<Claims>(raw, &DecodingKey::from_secret(&[]), &rules(false))
            .map_err(|_| invalid())?
            .claims;
    let tenant = TenantId::parse(&unverified.ten).map_err(|_| invalid())?;
    let Some(stored) = s.store.get(&row(tenant.as_str())).await? else {
        return Err(invalid());
    };
    let key = open(&s.keyring, tenant.as_str(), &stored)?;
    if header.kid.as_deref() != Some(key.kid.as_str()) {
        return Err(invalid());
    }
    let claims =
        jsonwebtoken::decode::<Claims>(raw, &DecodingKey::from_secret(&key.secret), &rules(true))
            .map_err(|_| invalid())?
            .claims;
    let expires_at_ms = claims.exp.saturating_mul(1000);
    if claims.scope != SCOPE || claims.ten != tenant.as_str() || s.clock.now_ms() >= expires_at_ms {
        return Err(invalid());
    }
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, "sub", &claims.sub);
    if v.into_result().is_err() {
        return Err(invalid());
    }
    Ok(Verified {
        tenant,
        subscriber: claims.sub,
        kid: key.kid,
        expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_and_tokens_have_different_shapes() {
        assert!(looks_like_token(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
        ));
        assert!(!looks_like_token(
            "ck_acme_0123456789abcdef0123456789abcdef"
        ));
        assert!(!looks_like_token("a.b"));
        assert!(!looks_like_token("a.b.c d"));
        assert!(!looks_like_token(&format!("a.b.{}", "c".repeat(3000))));
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_tenant() {
        let keyring = Keyring::new("k1", &[("k1", [7u8; 32])]).unwrap();
        let made = fresh(&keyring, "acme", 1);
        let key = open(&keyring, "acme", &made).unwrap();
        assert_eq!(key.secret.len(), 32);
        assert_eq!(key.kid.len(), 16);
        assert!(open(&keyring, "globex", &made).is_err());
        let text = String::from_utf8(made.to_vec()).unwrap();
        assert!(
            !text.contains(&b64().encode(&key.secret)),
            "stored in clear"
        );
    }
}
