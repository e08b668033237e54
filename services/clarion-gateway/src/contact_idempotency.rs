//! `Idempotency-Key` on a contact change: the change sends a code to the
//! new contact, so a client retrying after a lost answer must not send a
//! second one. The first request claims the key (insert-if-absent, kept
//! like trigger keys); a repeat with the same parameters gets the first
//! answer, one with other parameters a field error, one while the first is
//! still running a conflict.

use axum::http::StatusCode;
use clarion_domain::tenant::sha256_hex;
use clarion_domain::Violations;
use clarion_store::{RowKey, Table, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::preferences::{self as ops, Who};
use crate::state::GatewayState;

#[derive(Serialize, Deserialize)]
struct Claim {
    /// What was asked: subscriber, channel and value.
    request: String,
    /// The answer, once there is one.
    expires_at_ms: Option<i64>,
}

/// The key's row: its own namespace of the tenant's idempotency keys.
fn row(who: &Who, key: &str) -> RowKey {
    let pk = format!("contact-change/{}", sha256_hex(key.as_bytes()));
    RowKey::new(Table::Idempotency, who.tenant.as_str(), &pk, Vec::new())
}

/// Changes the contact once per key; returns the status to answer (202 the
/// first time, 200 for a repeat) and when the code expires.
pub async fn change_once(
    s: &GatewayState,
    who: &Who,
    id: &str,
    channel: &str,
    value: &str,
    key: &str,
) -> Result<(StatusCode, i64), ApiError> {
    if key.len() > clarion_domain::limits::MAX_KEY_BYTES {
        return Err(Violations::single("Idempotency-Key", "is too long").into());
    }
    let request = sha256_hex(
        format!("{}\u{0}{id}\u{0}{channel}\u{0}{value}", who.tenant.as_str()).as_bytes(),
    );
    let pending = Claim {
        request: request.clone(),
        expires_at_ms: None,
    };
    let at = row(who, key);
    let ttl = s.idempotency_ttl;
    let json = |c: &Claim| serde_json::to_vec(c).expect("a claim is JSON");
    if let Some(existing) = s
        .store
        .insert_if_absent(&at, json(&pending).into(), Some(ttl))
        .await?
    {
        let first: Claim = serde_json::from_slice(&existing)
            .map_err(|e| ApiError::Internal(format!("stored idempotency claim: {e}")))?;
        if first.request != request {
            return Err(Violations::single(
                "Idempotency-Key",
                "was already used with different parameters",
            )
            .into());
        }
        return match first.expires_at_ms {
            Some(at) => Ok((StatusCode::OK, at)),
            None => Err(ApiError::AlreadyExists(
                "a request with this Idempotency-Key is still in progress; retry later".into(),
            )),
        };
    }
    let outcome = ops::change_contact(s, who, id, channel, value).await;
    let mut batch = WriteBatch::new();
    match &outcome {
        Ok(expires) => {
            let done = Claim {
                request,
                expires_at_ms: Some(*expires),
            };
            batch.put_ttl(at, json(&done), ttl);
        }
        // A refused request leaves the key free for a corrected one.
        Err(_) => {
            batch.delete(at);
        }
    }
    s.store.write(batch).await?;
    outcome.map(|expires| (StatusCode::ACCEPTED, expires))
}
