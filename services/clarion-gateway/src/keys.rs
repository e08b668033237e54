//! `ApiKeyService`: list and revoke a tenant's API keys, and their
//! last-used times.
//!
//! Last use is a gateway observation, not a business fact: each call notes
//! it in memory ([`KeyUsage::touch`], no IO on the hot path) and a
//! background task writes the notes every [`KeyUsage`] period in one batch,
//! so a key costs at most one row write per period and gateway however
//! busy it is. The rows live beside the key index (not derived from events,
//! like idempotency rows); several gateways each write their latest view.

use std::collections::HashMap;
use std::sync::Mutex;

use clarion_domain::{Event, Payload};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::projector::{
    api_key_index, API_KEY_INDEX_PK, API_KEY_LAST_USED_PK, API_KEY_REVOKED_PK,
};
use clarion_store::{Scan, Store, Table, WriteBatch};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

/// Most keys one tenant can list (a bound, far above real use).
const MAX_KEYS: usize = 10_000;

/// Last uses noted since the previous flush: tenant → key id → time.
#[derive(Default)]
pub struct KeyUsage {
    pending: Mutex<HashMap<String, HashMap<String, i64>>>,
}

impl KeyUsage {
    /// Notes a use (memory only; no allocation for a key seen this period).
    pub fn touch(&self, tenant: &str, key_id: &str, now_ms: i64) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = p.get_mut(tenant).and_then(|keys| keys.get_mut(key_id)) {
            *at = (*at).max(now_ms);
            return;
        }
        p.entry(tenant.to_string())
            .or_default()
            .insert(key_id.to_string(), now_ms);
    }

    /// Writes the noted uses in one batch; returns how many.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, ApiError> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if taken.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        for (tenant, keys) in &taken {
            for (key_id, at) in keys {
                batch.put(
                    api_key_index(tenant, API_KEY_LAST_USED_PK, key_id),
                    at.to_be_bytes().to_vec(),
                );
            }
        }
        let n = batch.len();
        store.write(batch).await?;
        Ok(n)
    }
}

fn decode(bytes: &[u8]) -> Result<Event, ApiError> {
    Event::decode(bytes).map_err(|e| ApiError::Internal(format!("stored API key row: {e}")))
}

async fn partition(
    store: &dyn Store,
    tenant: &str,
    pk: &str,
) -> Result<Vec<(Vec<u8>, bytes::Bytes)>, ApiError> {
    Ok(store
        .scan(&Scan::partition(Table::ApiKeys, tenant, pk, MAX_KEYS))
        .await?)
}

/// The tenant's keys, oldest first; never a secret or its hash.
pub async fn list(state: &GatewayState, tenant: &str) -> Result<Vec<api::ApiKey>, ApiError> {
    let store = &*state.store;
    let mut revoked = HashMap::new();
    for (ck, v) in partition(store, tenant, API_KEY_REVOKED_PK).await? {
        revoked.insert(ck, decode(&v)?.occurred_at_ms);
    }
    let mut used = HashMap::new();
    for (ck, v) in partition(store, tenant, API_KEY_LAST_USED_PK).await? {
        let at = <[u8; 8]>::try_from(&v[..])
            .map(i64::from_be_bytes)
            .unwrap_or(0);
        used.insert(ck, at);
    }
    let mut keys = Vec::new();
    for (ck, v) in partition(store, tenant, API_KEY_INDEX_PK).await? {
        let e = decode(&v)?;
        let Payload::ApiKeyCreated(k) = &e.payload else {
            continue;
        };
        let grant = clarion_domain::tenant::KeyGrant::from_event(k);
        keys.push(api::ApiKey {
            key_id: k.key_id.clone(),
            name: k.name.clone(),
            scopes: grant.scopes.names(),
            created_at_ms: e.occurred_at_ms,
            expires_at_ms: k.expires_at_ms,
            last_used_at_ms: used.get(&ck).copied().unwrap_or(0),
            revoked_at_ms: revoked.get(&ck).copied().unwrap_or(0),
        });
    }
    keys.sort_by(|a, b| (a.created_at_ms, &a.key_id).cmp(&(b.created_at_ms, &b.key_id)));
    Ok(keys)
}

/// Revokes one of the caller's tenant's keys (an event). Revoking a revoked
/// key changes nothing; a key id of another tenant is not found.
pub async fn revoke(
    state: &GatewayState,
    caller: &auth::Caller,
    key_id: &str,
) -> Result<(), ApiError> {
    if key_id.is_empty() || key_id.len() > 64 {
        return Err(clarion_domain::Violations::single("key_id", "must be 1-64 bytes").into());
    }
    let tenant = caller.tenant.as_str();
    let store = &*state.store;
    let _guard = state.config_lock.lock().await;
    let index = api_key_index(tenant, API_KEY_INDEX_PK, key_id);
    let Some(bytes) = store.get(&index).await? else {
        return Err(ApiError::NotFound(format!("no API key {key_id:?}")));
    };
    let Payload::ApiKeyCreated(k) = decode(&bytes)?.payload else {
        return Err(ApiError::Internal(
            "API key index holds another event".into(),
        ));
    };
    if store
        .get(&api_key_index(tenant, API_KEY_REVOKED_PK, key_id))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let event = config_event(
        state,
        &caller.tenant,
        &caller.actor,
        Payload::ApiKeyRevoked(pb::ApiKeyRevoked {
            key_id: k.key_id,
            secret_sha256: k.secret_sha256,
        }),
    );
    // `publish` clears this gateway's key cache once the projector applied it.
    publish(state, &[event]).await
}

pub struct ApiKeyApi(pub GatewayState);

#[tonic::async_trait]
impl api::api_key_service_server::ApiKeyService for ApiKeyApi {
    async fn list(
        &self,
        request: Request<api::ListApiKeysRequest>,
    ) -> Result<Response<api::ListApiKeysResponse>, Status> {
        let caller = auth::tenant(&self.0, request.metadata()).await?;
        let keys = list(&self.0, caller.tenant.as_str()).await?;
        Ok(Response::new(api::ListApiKeysResponse { keys }))
    }

    async fn revoke(
        &self,
        request: Request<api::RevokeApiKeyRequest>,
    ) -> Result<Response<api::RevokeApiKeyResponse>, Status> {
        let caller = auth::tenant(&self.0, request.metadata()).await?;
        revoke(&self.0, &caller, &request.get_ref().key_id).await?;
        Ok(Response::new(api::RevokeApiKeyResponse {}))
    }
}
