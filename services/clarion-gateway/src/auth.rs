//! API-key, subscriber-token and admin-token authentication.
//!
//! Every way a tenant key can fail (an unknown tenant, an unknown, revoked
//! or expired key) gets the one answer [`INVALID_KEY`] through the same code
//! path, so a caller cannot tell whether a tenant exists; subscriber tokens
//! likewise get one answer ([`crate::subscriber_token::INVALID_TOKEN`]).
//!
//! A subscriber token authenticates a [`Caller`] with `subscriber` set and
//! no scope at all. Two gates keep it to its routes, both failing closed:
//! the access layer lets it through only to the methods and routes listed
//! in `access::SUBSCRIBER_GRPC` / `access::SUBSCRIBER_REST`, and handlers
//! get their caller from [`tenant`], which refuses it; only the preference
//! handlers use [`tenant_or_subscriber`].

use clarion_domain::tenant::{sha256_hex, KeyGrant, PresentedKey, Scope};
use clarion_domain::{Actor, Event, Payload, TenantId};
use clarion_store::{RowKey, Table};
use tonic::metadata::MetadataMap;

use crate::error::ApiError;
use crate::state::GatewayState;
use crate::subscriber_token;

/// The answer to every key that does not authenticate.
pub const INVALID_KEY: &str =
    "invalid API key: the tenant is unknown, or the key is unknown, revoked or expired";

/// An authenticated tenant caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: TenantId,
    pub actor: Actor,
    /// What the key may do (nothing, for a subscriber token).
    pub grant: KeyGrant,
    /// Set for a subscriber token: the one subscriber it reaches.
    pub subscriber: Option<String>,
}

/// The credential in `authorization: Bearer <x>` or `x-api-key: <x>`.
fn credential(md: &MetadataMap) -> Option<String> {
    pick(
        md.get("authorization").and_then(|v| v.to_str().ok()),
        md.get("x-api-key").and_then(|v| v.to_str().ok()),
    )
}

/// [`credential`] from HTTP headers (the access layer sees those).
pub(crate) fn credential_in(h: &http::HeaderMap) -> Option<String> {
    pick(
        h.get("authorization").and_then(|v| v.to_str().ok()),
        h.get("x-api-key").and_then(|v| v.to_str().ok()),
    )
}

fn pick(authorization: Option<&str>, x_api_key: Option<&str>) -> Option<String> {
    if let Some(v) = authorization {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
    }
    x_api_key.map(|v| v.trim().to_string())
}

/// Authenticates a tenant API key (any scope; the method table in
/// [`crate::access`] checks the scope of each call before its handler runs).
/// A subscriber token is refused: it reaches only the preference handlers.
pub async fn tenant(state: &GatewayState, md: &MetadataMap) -> Result<Caller, ApiError> {
    let caller = by_credential(state, credential(md)).await?;
    if caller.subscriber.is_some() {
        return Err(ApiError::PermissionDenied(SUBSCRIBER_REFUSED.into()));
    }
    Ok(caller)
}

/// The answer to a subscriber token on a route it does not reach.
pub const SUBSCRIBER_REFUSED: &str =
    "a subscriber token reaches only its subscriber's preferences: this call needs an API key";

/// Authenticates a tenant API key or a subscriber token (the preference
/// routes, where [`crate::preferences::Who`] keeps a token to its subscriber).
pub async fn tenant_or_subscriber(
    state: &GatewayState,
    md: &MetadataMap,
) -> Result<Caller, ApiError> {
    by_credential(state, credential(md)).await
}

/// Authenticates the credential a request carried.
pub async fn by_credential(state: &GatewayState, raw: Option<String>) -> Result<Caller, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::Unauthenticated(
            "missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`".into(),
        )
    })?;
    if !raw.starts_with(clarion_domain::tenant::API_KEY_PREFIX)
        && subscriber_token::looks_like_token(&raw)
    {
        return by_token(state, &raw).await;
    }
    let key = PresentedKey::parse(&raw).ok_or_else(|| {
        ApiError::Unauthenticated(
            "malformed API key: expected ck_<tenant>_<secret> (or a subscriber token)".into(),
        )
    })?;
    let now = state.clock.now_ms();
    let grant = match grant_of(state, &key, now).await? {
        Some(g) if !g.expired_at(now) => g,
        _ => return Err(ApiError::Unauthenticated(INVALID_KEY.into())),
    };
    state
        .security
        .key_usage
        .touch(key.tenant.as_str(), &grant.key_id, now);
    Ok(Caller {
        actor: Actor::ApiKey(grant.key_id.clone()),
        tenant: key.tenant,
        grant,
        subscriber: None,
    })
}

/// A subscriber token's caller: no scope, one subscriber.
async fn by_token(state: &GatewayState, raw: &str) -> Result<Caller, ApiError> {
    let t = subscriber_token::verify(state, raw).await?;
    Ok(Caller {
        actor: Actor::System(format!("subscriber:{}", t.subscriber).into()),
        tenant: t.tenant,
        grant: KeyGrant {
            key_id: format!("subscriber-token:{}", t.kid),
            scopes: Default::default(),
            expires_at_ms: Some(t.expires_at_ms),
        },
        subscriber: Some(t.subscriber),
    })
}

/// [`tenant`], then refuses a key without `scope`.
pub async fn tenant_with(
    state: &GatewayState,
    md: &MetadataMap,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let caller = tenant(state, md).await?;
    require(&caller, scope)?;
    Ok(caller)
}

/// Refuses a caller whose key lacks `scope`.
pub fn require(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.grant.scopes.contains(scope) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "this API key does not have the {:?} scope this call requires",
            scope.as_str()
        )))
    }
}

/// What the presented key grants: from the cache, else its stored row.
async fn grant_of(
    state: &GatewayState,
    key: &PresentedKey,
    now: i64,
) -> Result<Option<KeyGrant>, ApiError> {
    grant_by_hash_at(state, key.tenant.as_str(), &key.secret_sha256, now).await
}

/// What the tenant's key with this secret hash grants now (`None`: unknown
/// or revoked; the caller checks expiry). The console's sessions keep the
/// hash and ask again on every request, so a revoked key ends them.
pub async fn grant_by_hash(
    state: &GatewayState,
    tenant: &str,
    secret_sha256: &str,
) -> Result<Option<KeyGrant>, ApiError> {
    grant_by_hash_at(state, tenant, secret_sha256, state.clock.now_ms()).await
}

async fn grant_by_hash_at(
    state: &GatewayState,
    t: &str,
    secret_sha256: &str,
    now: i64,
) -> Result<Option<KeyGrant>, ApiError> {
    if let Some(g) = state.config_cache.api_key(t, secret_sha256, now) {
        return Ok(Some(g));
    }
    let seen = state.config_cache.generation();
    let row = RowKey::new(Table::ApiKeys, t, secret_sha256, Vec::new());
    let Some(bytes) = state.store.get(&row).await? else {
        return Ok(None);
    };
    let grant = match Event::decode(&bytes) {
        Ok(Event {
            payload: Payload::ApiKeyCreated(k),
            ..
        }) => KeyGrant::from_event(&k),
        Ok(_) => {
            return Err(ApiError::Internal(
                "stored API key row holds another event".into(),
            ))
        }
        Err(e) => return Err(ApiError::Internal(format!("stored API key row: {e}"))),
    };
    state
        .config_cache
        .remember_api_key(seen, t, secret_sha256, grant.clone(), now);
    Ok(Some(grant))
}

/// Authenticates the operator admin token.
pub fn admin(state: &GatewayState, md: &MetadataMap) -> Result<Actor, ApiError> {
    admin_by_credential(state, credential(md))
}

/// [`admin`] for the credential a request carried.
pub fn admin_by_credential(state: &GatewayState, raw: Option<String>) -> Result<Actor, ApiError> {
    let Some(expected) = &state.admin_token_sha256 else {
        return Err(ApiError::PermissionDenied(
            "no admin token is configured on this gateway".into(),
        ));
    };
    let raw = raw.ok_or_else(|| {
        ApiError::Unauthenticated(
            "missing admin token: send `authorization: Bearer <token>`".into(),
        )
    })?;
    // Comparing hashes: equal-length, and the secret itself is never compared.
    if sha256_hex(raw.as_bytes()) != *expected {
        return Err(ApiError::PermissionDenied(
            "admin token is not valid".into(),
        ));
    }
    Ok(Actor::Operator("admin".into()))
}
