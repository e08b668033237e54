//! Tracking endpoints: `GET /t/o/{token}.gif` (open pixel) and
//! `GET /t/c/{token}` (click redirect). Each verified hit becomes an
//! `EngagementRecorded` event on the recipient's stream.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clarion_domain::tracking::TrackingRef;
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

/// The deployment's tracking key: generated once, kept in the store, shared
/// by every gateway and dispatcher.
pub async fn secret(store: &dyn Store) -> Result<Vec<u8>, clarion_store::StoreError> {
    let key = RowKey::new(
        Table::Settings,
        SYSTEM_TENANT,
        "tracking-secret",
        Vec::new(),
    );
    let fresh: [u8; 32] = rand::random();
    Ok(
        match store
            .insert_if_absent(&key, Bytes::copy_from_slice(&fresh), None)
            .await?
        {
            Some(existing) => existing.to_vec(),
            None => fresh.to_vec(),
        },
    )
}

#[derive(Clone)]
struct TrackState {
    gateway: GatewayState,
    secret: std::sync::Arc<Vec<u8>>,
}

async fn hit(
    st: &TrackState,
    token: &str,
    kind: &str,
    source: &str,
) -> Result<TrackingRef, Response> {
    let r =
        TrackingRef::verify(&st.secret, token).map_err(|e| problem(StatusCode::NOT_FOUND, e))?;
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
pub fn routes(gateway: GatewayState, secret: Vec<u8>) -> Router {
    Router::new()
        .route("/t/o/:token", get(open))
        .route("/t/c/:token", get(click))
        .with_state(TrackState {
            gateway,
            secret: std::sync::Arc::new(secret),
        })
}
