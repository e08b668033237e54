//! Tracking endpoints: `GET /t/o/{token}.gif` (open pixel) and
//! `GET /t/c/{token}` (click redirect). Each verified hit becomes an
//! `EngagementRecorded` event on the recipient's stream.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clarion_dispatch::secrets::{Keyring, KeyringError};
use clarion_domain::tracking::{TrackingError, TrackingRef};
use clarion_domain::{Actor, TenantId};
use clarion_store::{RowKey, Store, Table, SYSTEM_TENANT};

use crate::error::{problem, ApiError};
use crate::notification::record_engagement;
use crate::state::GatewayState;

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What the tracking key is sealed for.
const TRACKING_KEY_PURPOSE: &str = "tracking-key";

#[derive(Debug, thiserror::Error)]
pub enum TrackingKeyError {
    #[error(transparent)]
    Store(#[from] clarion_store::StoreError),
    #[error("the tracking key in the store: {0}")]
    Keyring(#[from] KeyringError),
}

/// The deployment's tracking key: generated once, kept in the store sealed
/// with the master keyring, shared by every gateway and dispatcher. A key
/// stored in clear by an earlier release, or sealed under a master key
/// that is no longer the active one, is re-sealed under the active key.
pub async fn secret(store: &dyn Store, keyring: &Keyring) -> Result<Vec<u8>, TrackingKeyError> {
    let key = RowKey::new(
        Table::Settings,
        SYSTEM_TENANT,
        "tracking-secret",
        Vec::new(),
    );
    let fresh: [u8; 32] = rand::random();
    let sealed = keyring.seal(TRACKING_KEY_PURPOSE, &fresh);
    let Some(existing) = store
        .insert_if_absent(&key, Bytes::from(sealed), None)
        .await?
    else {
        return Ok(fresh.to_vec());
    };
    let (plain, reseal) = match Keyring::sealed_key_id(&existing) {
        Some(id) => (
            keyring.open(TRACKING_KEY_PURPOSE, &existing)?,
            id != keyring.active_key_id(),
        ),
        // An earlier release stored the 32 bytes themselves.
        None => (existing.to_vec(), true),
    };
    if reseal {
        let mut w = clarion_store::WriteBatch::new();
        w.put(key, Bytes::from(keyring.seal(TRACKING_KEY_PURPOSE, &plain)));
        store.write(w).await?;
        tracing::info!(
            "tracking key re-sealed under master key {}",
            keyring.active_key_id()
        );
    }
    Ok(plain)
}

/// How the tracking endpoints judge tokens.
#[derive(Clone, Copy, Debug)]
pub struct TokenPolicy {
    /// Accept tokens made before tokens carried an expiry.
    pub accept_legacy: bool,
}

#[derive(Clone)]
struct TrackState {
    gateway: GatewayState,
    secret: std::sync::Arc<Vec<u8>>,
    policy: TokenPolicy,
}

async fn hit(
    st: &TrackState,
    token: &str,
    kind: &str,
    source: &str,
) -> Result<TrackingRef, Response> {
    let now_ms = st.gateway.clock.now_ms();
    let r = TrackingRef::verify(&st.secret, token, now_ms, st.policy.accept_legacy).map_err(
        |e| match e {
            TrackingError::Expired => problem(StatusCode::GONE, &e.to_string()),
            _ => problem(StatusCode::NOT_FOUND, &e.to_string()),
        },
    )?;
    let tenant = TenantId::parse(&r.tenant).map_err(|e| problem(StatusCode::NOT_FOUND, &e))?;
    match record_engagement(
        &st.gateway,
        &tenant,
        &r.notification_id,
        &r.attempt_id,
        kind,
        source,
        Actor::System("tracking".into()),
    )
    .await
    {
        Ok(()) => Ok(r),
        Err(ApiError::NotFound(m)) => Err(problem(StatusCode::NOT_FOUND, &m)),
        Err(e) => Err(problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

async fn open(State(st): State<TrackState>, Path(token): Path<String>) -> Response {
    match hit(&st, &token, "opened", "pixel").await {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, "image/gif"),
                (header::CACHE_CONTROL, "no-store, max-age=0"),
            ],
            PIXEL,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn click(State(st): State<TrackState>, Path(token): Path<String>) -> Response {
    match hit(&st, &token, "clicked", "click").await {
        Ok(r) if r.url.starts_with("https://") || r.url.starts_with("http://") => {
            (StatusCode::FOUND, [(header::LOCATION, r.url)]).into_response()
        }
        Ok(_) => problem(StatusCode::NOT_FOUND, "this link has no target"),
        Err(r) => r,
    }
}

/// The tracking routes, to merge into the HTTP server.
pub fn routes(gateway: GatewayState, secret: Vec<u8>, policy: TokenPolicy) -> Router {
    Router::new()
        .route("/t/o/:token", get(open))
        .route("/t/c/:token", get(click))
        .with_state(TrackState {
            gateway,
            secret: std::sync::Arc::new(secret),
            policy,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> RowKey {
        RowKey::new(
            Table::Settings,
            SYSTEM_TENANT,
            "tracking-secret",
            Vec::new(),
        )
    }

    #[tokio::test]
    async fn the_tracking_key_is_sealed_and_a_clear_one_from_before_is_resealed() {
        let dir = tempfile::tempdir().unwrap();
        let store = clarion_store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let k1 = Keyring::new("k1", &[("k1", [1; 32])]).unwrap();
        let made = secret(&*store, &k1).await.unwrap();
        let stored = store.get(&row()).await.unwrap().unwrap();
        assert_eq!(Keyring::sealed_key_id(&stored), Some("k1"));
        assert!(!stored.windows(32).any(|w| w == made.as_slice()));
        assert_eq!(secret(&*store, &k1).await.unwrap(), made, "stable");

        // An earlier release's key, in clear: kept, and sealed from now on.
        let legacy = [7u8; 32];
        let mut w = clarion_store::WriteBatch::new();
        w.put(row(), Bytes::copy_from_slice(&legacy));
        store.write(w).await.unwrap();
        assert_eq!(secret(&*store, &k1).await.unwrap(), legacy);
        let stored = store.get(&row()).await.unwrap().unwrap();
        assert_eq!(k1.open(TRACKING_KEY_PURPOSE, &stored).unwrap(), legacy);

        // A new active master key re-seals it; the old key still opens it.
        let k2 = Keyring::new("k2", &[("k1", [1; 32]), ("k2", [2; 32])]).unwrap();
        assert_eq!(secret(&*store, &k2).await.unwrap(), legacy);
        let stored = store.get(&row()).await.unwrap().unwrap();
        assert_eq!(Keyring::sealed_key_id(&stored), Some("k2"));
    }
}
