//! API-key and admin-token authentication.

use clarion_domain::tenant::{sha256_hex, PresentedKey};
use clarion_domain::{Actor, TenantId};
use clarion_store::{RowKey, Table};
use tonic::metadata::MetadataMap;

use crate::error::ApiError;
use crate::state::GatewayState;

/// An authenticated tenant caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: TenantId,
    pub actor: Actor,
}

/// The credential in `authorization: Bearer <x>` or `x-api-key: <x>`.
fn credential(md: &MetadataMap) -> Option<String> {
    if let Some(v) = md.get("authorization").and_then(|v| v.to_str().ok()) {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
    }
    md.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// Authenticates a tenant API key.
pub async fn tenant(state: &GatewayState, md: &MetadataMap) -> Result<Caller, ApiError> {
    let raw = credential(md).ok_or_else(|| {
        ApiError::Unauthenticated(
            "missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`".into(),
        )
    })?;
    let key = PresentedKey::parse(&raw).ok_or_else(|| {
        ApiError::Unauthenticated("malformed API key: expected ck_<tenant>_<secret>".into())
    })?;
    let t = key.tenant.as_str();
    let now = state.clock.now_ms();
    if state.config_cache.api_key_valid(t, &key.secret_sha256, now) {
        return Ok(Caller {
            actor: Actor::ApiKey(key.key_id()),
            tenant: key.tenant,
        });
    }
    let seen = state.config_cache.generation();
    let found = state
        .store
        .get(&RowKey::new(
            Table::ApiKeys,
            t,
            &key.secret_sha256,
            Vec::new(),
        ))
        .await?;
    if found.is_some() {
        state
            .config_cache
            .remember_api_key(seen, t, &key.secret_sha256, now);
    } else {
        let tenant_exists = state
            .store
            .get(&RowKey::new(Table::Tenants, t, t, Vec::new()))
            .await?
            .is_some();
        return Err(ApiError::Unauthenticated(if tenant_exists {
            format!("API key is not valid for tenant {t:?}")
        } else {
            format!("unknown tenant {t:?}")
        }));
    }
    Ok(Caller {
        actor: Actor::ApiKey(key.key_id()),
        tenant: key.tenant,
    })
}

/// Authenticates the operator admin token.
pub fn admin(state: &GatewayState, md: &MetadataMap) -> Result<Actor, ApiError> {
    let Some(expected) = &state.admin_token_sha256 else {
        return Err(ApiError::PermissionDenied(
            "no admin token is configured on this gateway".into(),
        ));
    };
    let raw = credential(md).ok_or_else(|| {
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
