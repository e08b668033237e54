//! `Idempotency-Key` on every REST `POST`: a request repeated with the same
//! key (same tenant) gets the first one's answer again instead of acting
//! twice, for as long as trigger keys are kept (`idempotency_ttl`).
//!
//! `POST /v1/notifications` keeps its own mechanism (the key fixes the
//! notification ids, and gRPC shares it); every other POST goes through
//! [`run`], from the access guard, so a new POST route honours the key
//! without doing anything. A key is claimed before the handler runs (a
//! concurrent repeat gets 409), kept with the answer on success, and
//! released on an error so the request can be retried with it. The same
//! key with a different request (method, path, query or body) is 422.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use clarion_store::{RowKey, Table, WriteBatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::extract::MAX_BODY_BYTES;
use crate::problem::Problem;
use crate::state::GatewayState;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer given again for a repeated key.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");
/// Longest key (as for trigger keys).
pub const MAX_KEY_BYTES: usize = clarion_domain::limits::MAX_KEY_BYTES;

/// What a key may be: visible ASCII, no spaces.
pub const KEY_PATTERN: &str = "^[!-~]+$";

/// Routes whose handlers honour the key themselves.
pub const OWN_MECHANISM: &[(&str, &str)] = &[("POST", "/v1/notifications")];

/// How long a claim holds before its answer is stored: a gateway that
/// died mid-request frees the key after this.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// Largest answer kept for replay (these answers are small JSON).
const MAX_STORED_BODY: usize = 256 * 1024;

/// Clustering key of REST rows in the idempotency table (trigger rows have
/// an empty one), so a REST key never meets a trigger key.
const REST_CK: &[u8] = b"rest";

#[derive(Serialize, Deserialize)]
struct Stored {
    /// The request's fingerprint.
    hash: String,
    /// The answer, once there is one.
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    body: String,
}

/// Whether a request to `route` goes through [`run`].
pub fn applies(method: &str, route: &str) -> bool {
    method == "POST" && !OWN_MECHANISM.contains(&(method, route))
}

/// The request's key, if it sent one (an invalid one is a 400).
pub fn key_of(req: &Request) -> Result<Option<String>, Problem> {
    let Some(v) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let bad = |why: &str| Problem::field(StatusCode::BAD_REQUEST, "Idempotency-Key", why);
    let k = v.to_str().map_err(|_| bad("must be visible ASCII"))?.trim();
    if k.is_empty() || k.len() > MAX_KEY_BYTES {
        return Err(bad(&format!("must be 1 to {MAX_KEY_BYTES} characters")));
    }
    Ok(Some(k.to_string()))
}

fn fingerprint(method: &str, uri: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), uri.as_bytes(), body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// Runs `req` once per key: the first time through `next`, afterwards the
/// stored answer.
pub async fn run(
    state: &GatewayState,
    tenant: &str,
    key: &str,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
            )
            .into_response()
        }
    };
    let hash = fingerprint(parts.method.as_str(), &parts.uri.to_string(), &bytes);
    let row = RowKey::new(Table::Idempotency, tenant, key, REST_CK.to_vec());
    let claim = Stored {
        hash: hash.clone(),
        status: None,
        content_type: String::new(),
        body: String::new(),
    };
    let claim = serde_json::to_vec(&claim).expect("serializable");
    match state
        .store
        .insert_if_absent(&row, claim.into(), Some(CLAIM_TTL))
        .await
    {
        Ok(None) => {}
        Ok(Some(existing)) => return answer_again(&existing, &hash),
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    keep(state, row, hash, resp).await
}

/// The answer to a repeat: the stored one, or why there is none.
fn answer_again(existing: &[u8], hash: &str) -> Response {
    let Ok(stored) = serde_json::from_slice::<Stored>(existing) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored idempotency record",
        )
        .into_response();
    };
    if stored.hash != hash {
        return Problem::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key",
            "was already used with a different request (method, path or body)",
        )
        .into_response();
    }
    let Some(status) = stored.status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return Problem::new(
            StatusCode::CONFLICT,
            "a request with this Idempotency-Key is still in progress: retry later",
        )
        .into_response();
    };
    let mut resp = (status, stored.body).into_response();
    if let Ok(ct) = HeaderValue::from_str(&stored.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    } else {
        resp.headers_mut().remove(header::CONTENT_TYPE);
    }
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

/// Stores a successful answer under the key, or releases the key.
async fn keep(state: &GatewayState, row: RowKey, hash: String, resp: Response) -> Response {
    let mut w = WriteBatch::new();
    if !resp.status().is_success() {
        w.delete(row);
        if let Err(e) = state.store.write(w).await {
            tracing::warn!(error = %e, "releasing an idempotency key");
        }
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_STORED_BODY).await else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer too large to keep",
        )
        .into_response();
    };
    let stored = Stored {
        hash,
        status: Some(parts.status.as_u16()),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    let value = Bytes::from(serde_json::to_vec(&stored).expect("serializable"));
    w.put_ttl(row, value, state.idempotency_ttl);
    if let Err(e) = state.store.write(w).await {
        // The action happened: answer it; a repeat within the claim's
        // minute gets 409, later it would run again.
        tracing::warn!(error = %e, "keeping an idempotent answer");
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let a = fingerprint("POST", "/v1/dead-letters/a/retry", b"{}");
        assert_eq!(a, fingerprint("POST", "/v1/dead-letters/a/retry", b"{}"));
        assert_ne!(a, fingerprint("POST", "/v1/dead-letters/b/retry", b"{}"));
        assert_ne!(a, fingerprint("POST", "/v1/dead-letters/a/retry", b""));
        // Lengths are framed: moving a byte across parts changes it.
        assert_ne!(
            fingerprint("POST", "/x", b"y"),
            fingerprint("POST", "/xy", b"")
        );
        assert!(applies("POST", "/v1/dead-letters/:id/retry"));
        assert!(!applies("POST", "/v1/notifications"));
        assert!(!applies("PUT", "/v1/subscribers/:id"));
    }
}
