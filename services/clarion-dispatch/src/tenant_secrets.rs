//! Per-tenant webhook signing secrets.
//!
//! Each tenant signs its webhooks with a secret of its own, so a receiver
//! that trusts tenant A's signature cannot be fooled by tenant B (with one
//! deployment-wide secret, any tenant could forge any other's webhooks).
//!
//! A secret comes into being at the tenant's first `RotateWebhookSecret`
//! call, which returns it, the only time it is ever readable. Each rotation
//! is a `WebhookSecretRotated` config event holding the new secret sealed
//! with the master keyring ([`crate::secrets`]) and, for an overlap period,
//! the replaced one: until `previous_valid_until_ms` webhooks carry both
//! signatures (`t=..,v1=<new>,v1=<old>`), so receivers can switch at their
//! own pace. A rotation during an overlap drops the oldest secret. The
//! projector keeps the latest event per tenant (Tenants table, partition
//! [`SECRET_PK`]); the dispatcher reads it through a short cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};

use crate::secrets::{Keyring, KeyringError};

/// Partition of the Tenants table holding a tenant's latest rotation
/// (tenant ids cannot contain `/`, so it never meets a tenant record).
pub const SECRET_PK: &str = clarion_runtime::projector::WEBHOOK_SECRET_PK;
/// How long a replaced secret still signs when the caller does not say.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// The longest overlap a rotation may ask for.
pub const MAX_OVERLAP: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the dispatcher trusts what it read (a rotation reaches sends
/// within this after the projector applied it).
const CACHE_TTL: Duration = Duration::from_secs(1);

/// The store row of a tenant's latest rotation.
pub fn row(tenant: &str) -> RowKey {
    RowKey::new(Table::Tenants, tenant, SECRET_PK, Vec::new())
}

/// What a tenant's secret is sealed for: binds the ciphertext to the tenant.
pub fn purpose(tenant: &str) -> String {
    format!("webhook-secret/{tenant}")
}

/// A fresh secret: `whsec_` and 32 random bytes, base64url.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The tenant's latest rotation, as projected.
pub async fn latest(
    store: &dyn Store,
    tenant: &str,
) -> Result<Option<pb::WebhookSecretRotated>, clarion_store::StoreError> {
    Ok(store
        .get(&row(tenant))
        .await?
        .and_then(|b| Event::decode(&b).ok())
        .and_then(|e| match e.payload {
            Payload::WebhookSecretRotated(p) => Some(p),
            _ => None,
        }))
}

/// The event of a rotation to `secret` at `now_ms`: the current secret (if
/// any, re-sealed under the active master key) keeps signing for `overlap`.
pub fn rotation(
    keyring: &Keyring,
    tenant: &str,
    secret: &str,
    current: Option<&pb::WebhookSecretRotated>,
    now_ms: i64,
    overlap: Duration,
) -> Result<pb::WebhookSecretRotated, KeyringError> {
    let purpose = purpose(tenant);
    let previous = match current {
        Some(c) if !overlap.is_zero() => {
            Some(keyring.seal(&purpose, &keyring.open(&purpose, &c.sealed_secret)?))
        }
        _ => None,
    };
    Ok(pb::WebhookSecretRotated {
        sealed_secret: keyring.seal(&purpose, secret.as_bytes()),
        previous_valid_until_ms: if previous.is_some() {
            now_ms.saturating_add(overlap.as_millis() as i64)
        } else {
            0
        },
        sealed_previous: previous.unwrap_or_default(),
        master_key_id: keyring.active_key_id().to_string(),
    })
}

/// A tenant's secrets, opened.
pub struct SigningKeys {
    current: Vec<u8>,
    previous: Option<(Vec<u8>, i64)>,
}

impl SigningKeys {
    pub fn open(
        keyring: &Keyring,
        tenant: &str,
        ev: &pb::WebhookSecretRotated,
    ) -> Result<SigningKeys, KeyringError> {
        let purpose = purpose(tenant);
        let previous = if ev.sealed_previous.is_empty() {
            None
        } else {
            Some((
                keyring.open(&purpose, &ev.sealed_previous)?,
                ev.previous_valid_until_ms,
            ))
        };
        Ok(SigningKeys {
            current: keyring.open(&purpose, &ev.sealed_secret)?,
            previous,
        })
    }

    /// The secrets that sign at `now_ms`: the current one, then the
    /// previous one while its overlap lasts.
    pub fn signing(&self, now_ms: i64) -> Vec<&[u8]> {
        let mut out = vec![self.current.as_slice()];
        if let Some((p, until)) = &self.previous {
            if now_ms < *until {
                out.push(p.as_slice());
            }
        }
        out
    }
}

/// The dispatcher's view of every tenant's secrets: read from the store,
/// opened, and cached for a second.
pub struct TenantSecrets {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    cache: Mutex<HashMap<String, (Instant, Arc<SigningKeys>)>>,
}

impl TenantSecrets {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>) -> TenantSecrets {
        TenantSecrets {
            store,
            keyring,
            cache: Mutex::default(),
        }
    }

    /// The tenant's keys; `None` if it never rotated a secret. The error is
    /// the operator's (store or keyring), not the tenant's.
    pub async fn get(&self, tenant: &str) -> Result<Option<Arc<SigningKeys>>, String> {
        if let Some((at, keys)) = self.cache.lock().expect("not poisoned").get(tenant) {
            if at.elapsed() < CACHE_TTL {
                return Ok(Some(keys.clone()));
            }
        }
        let ev = latest(&*self.store, tenant)
            .await
            .map_err(|e| format!("reading the webhook secret: {e}"))?;
        // "No secret yet" is not cached: the first rotation must take
        // effect at once, and such sends fail anyway.
        let Some(ev) = ev else {
            return Ok(None);
        };
        let keys = Arc::new(
            SigningKeys::open(&self.keyring, tenant, &ev)
                .map_err(|e| format!("opening the webhook secret: {e}"))?,
        );
        self.cache
            .lock()
            .expect("not poisoned")
            .insert(tenant.to_string(), (Instant::now(), keys.clone()));
        Ok(Some(keys))
    }
}
