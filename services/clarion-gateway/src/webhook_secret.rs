//! `TenantService.RotateWebhookSecret`: a tenant's webhook signing secret.
//!
//! The secret is generated here, sealed with the master keyring into a
//! `WebhookSecretRotated` config event, and returned in clear only in this
//! call's answer (docs/webhooks.md). The replaced secret keeps signing for
//! the overlap the caller asks for.

use std::time::Duration;

use clarion_dispatch::tenant_secrets;
use clarion_domain::{Payload, Violations};
use clarion_proto::api;
use tonic::Request;

use crate::auth;
use crate::error::ApiError;
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

/// Rotates the calling tenant's webhook signing secret; returns the new one.
pub async fn rotate(
    s: &GatewayState,
    req: Request<api::RotateWebhookSecretRequest>,
) -> Result<api::RotateWebhookSecretResponse, ApiError> {
    // Any key of the tenant may rotate while keys have no scopes; with
    // scopes (another change), only `admin` keys should.
    let caller = auth::tenant(s, req.metadata()).await?;
    let overlap = match req.into_inner().overlap_seconds {
        None => tenant_secrets::DEFAULT_OVERLAP,
        Some(secs) => {
            let d = Duration::from_secs(secs.into());
            if d > tenant_secrets::MAX_OVERLAP {
                return Err(Violations::single(
                    "overlap_seconds",
                    format!(
                        "must be at most {} (30 days)",
                        tenant_secrets::MAX_OVERLAP.as_secs()
                    ),
                )
                .into());
            }
            d
        }
    };
    let tenant = caller.tenant.as_str();
    // One rotation at a time per gateway: two concurrent ones would both
    // keep the same previous secret and one new secret would be lost.
    let _one = s.config_lock.lock().await;
    let current = tenant_secrets::latest(&*s.store, tenant).await?;
    let secret = tenant_secrets::generate();
    let now = s.clock.now_ms();
    let ev = tenant_secrets::rotation(&s.keyring, tenant, &secret, current.as_ref(), now, overlap)
        .map_err(|e| {
            tracing::error!(tenant, error = %e, "cannot open the current webhook secret");
            ApiError::Internal("the current webhook secret cannot be opened".into())
        })?;
    let until = ev.previous_valid_until_ms;
    publish(
        s,
        &[config_event(
            s,
            &caller.tenant,
            &caller.actor,
            Payload::WebhookSecretRotated(ev),
        )],
    )
    .await?;
    Ok(api::RotateWebhookSecretResponse {
        secret,
        previous_valid_until_ms: until,
    })
}
