//! A tenant's own providers (issue #31, docs/providers.md): credentials
//! (write-only) and routes, shared by REST (`rest_providers`) and gRPC
//! ([`ProviderApi`]).
//!
//! Credentials are checked against the provider's fields
//! ([`clarion_dispatch::tenant_providers::SPECS`]), sealed with the master
//! keyring into a `ProviderCredentialsSet` config event, and never come
//! back: reads name the fields set. A write returns once the projector
//! applied it; the dispatcher picks it up within its cache's lifetime.

use std::collections::BTreeMap;

use clarion_dispatch::tenant_providers::{self as tp};
use clarion_domain::{Actor, Payload, TenantId, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::provider_rows;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

fn view(c: &pb::ProviderCredentialsSet) -> api::ProviderCredentials {
    api::ProviderCredentials {
        provider: c.provider.clone(),
        fields_set: c.fields.clone(),
        version: c.version,
        master_key_id: c.master_key_id.clone(),
    }
}

fn known_provider(provider: &str) -> Result<(), ApiError> {
    tp::check_credentials(provider, &BTreeMap::new())
        .map(|_| ())
        .or_else(|v| match v.0.first() {
            Some(f) if f.field == "provider" => Err(ApiError::Invalid(v)),
            _ => Ok(()),
        })
}

fn not_set(provider: &str) -> ApiError {
    ApiError::NotFound(format!("no credentials of yours for provider {provider:?}"))
}

/// Sets the tenant's credentials for a provider (replacing any).
pub async fn set_credentials(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    provider: &str,
    fields: BTreeMap<String, String>,
) -> Result<api::ProviderCredentials, ApiError> {
    tp::check_credentials(provider, &fields)?;
    let _one = s.config_lock.lock().await;
    let prev = provider_rows::credential(&*s.store, tenant.as_str(), provider).await?;
    let version = prev.map_or(0, |p| p.version) + 1;
    let ev = tp::sealed(&s.keyring, tenant.as_str(), provider, &fields, version);
    publish_credentials(s, tenant, actor, ev).await
}

/// Appends a credentials event; answers with what it sets (never values).
async fn publish_credentials(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    ev: pb::ProviderCredentialsSet,
) -> Result<api::ProviderCredentials, ApiError> {
    let out = view(&ev);
    let event = config_event(s, tenant, actor, Payload::ProviderCredentialsSet(ev));
    publish(s, &[event]).await?;
    Ok(out)
}

/// Which fields of a provider's credentials are set.
pub async fn credentials(
    s: &GatewayState,
    tenant: &TenantId,
    provider: &str,
) -> Result<api::ProviderCredentials, ApiError> {
    known_provider(provider)?;
    provider_rows::credential(&*s.store, tenant.as_str(), provider)
        .await?
        .map(|c| view(&c))
        .ok_or_else(|| not_set(provider))
}

pub async fn list_credentials(
    s: &GatewayState,
    tenant: &TenantId,
) -> Result<Vec<api::ProviderCredentials>, ApiError> {
    Ok(provider_rows::credentials(&*s.store, tenant.as_str())
        .await?
        .iter()
        .map(view)
        .collect())
}

/// Removes the tenant's credentials: the operator's provider applies again.
pub async fn delete_credentials(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    provider: &str,
) -> Result<api::ProviderCredentials, ApiError> {
    known_provider(provider)?;
    let _one = s.config_lock.lock().await;
    let prev = provider_rows::credential(&*s.store, tenant.as_str(), provider)
        .await?
        .ok_or_else(|| not_set(provider))?;
    let ev = pb::ProviderCredentialsSet {
        provider: provider.to_string(),
        removed: true,
        version: prev.version + 1,
        ..Default::default()
    };
    publish_credentials(s, tenant, actor, ev).await
}

async fn demoted(
    s: &GatewayState,
    tenant: &TenantId,
    channel: &str,
) -> Result<Vec<String>, ApiError> {
    Ok(provider_rows::demotions(&*s.store, tenant.as_str())
        .await?
        .into_iter()
        .filter(|b| b.channel == channel && !b.demoted_provider.is_empty())
        .map(|b| b.demoted_provider)
        .collect())
}

/// Sets the tenant's route of a channel.
pub async fn set_route(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    r: api::ProviderRoute,
) -> Result<api::ProviderRoute, ApiError> {
    tp::check_route(&r.channel, &r.providers)?;
    let ev = pb::ProviderRouteSet {
        channel: r.channel.clone(),
        providers: r.providers.clone(),
    };
    publish_route(s, tenant, actor, ev).await?;
    Ok(api::ProviderRoute {
        demoted: demoted(s, tenant, &r.channel).await?,
        ..r
    })
}

pub async fn route(
    s: &GatewayState,
    tenant: &TenantId,
    channel: &str,
) -> Result<api::ProviderRoute, ApiError> {
    let r = provider_rows::routes(&*s.store, tenant.as_str())
        .await?
        .into_iter()
        .find(|r| r.channel == channel)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no route of yours for channel {channel:?}: the operator's applies"
            ))
        })?;
    Ok(api::ProviderRoute {
        demoted: demoted(s, tenant, channel).await?,
        channel: r.channel,
        providers: r.providers,
    })
}

/// Removes the tenant's route: the operator's applies again.
pub async fn delete_route(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    channel: &str,
) -> Result<api::ProviderRoute, ApiError> {
    let prev = route(s, tenant, channel).await?;
    let ev = pb::ProviderRouteSet {
        channel: channel.to_string(),
        providers: Vec::new(),
    };
    publish_route(s, tenant, actor, ev).await?;
    Ok(prev)
}

/// Appends a route event under the tenant's config lock.
async fn publish_route(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    ev: pb::ProviderRouteSet,
) -> Result<(), ApiError> {
    let _one = s.config_lock.lock().await;
    let event = config_event(s, tenant, actor, Payload::ProviderRouteSet(ev));
    publish(s, &[event]).await
}

fn field_required(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(Violations::single(field, "is required").into());
    }
    Ok(())
}

pub struct ProviderApi(pub GatewayState);

#[tonic::async_trait]
impl api::provider_service_server::ProviderService for ProviderApi {
    async fn set_credentials(
        &self,
        req: Request<api::SetProviderCredentialsRequest>,
    ) -> Result<Response<api::ProviderCredentials>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        field_required("provider", &r.provider)?;
        let fields = r.credentials.into_iter().collect();
        let out = set_credentials(&self.0, &c.tenant, &c.actor, &r.provider, fields).await?;
        Ok(Response::new(out))
    }

    async fn get_credentials(
        &self,
        req: Request<api::GetProviderCredentialsRequest>,
    ) -> Result<Response<api::ProviderCredentials>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        field_required("provider", &r.provider)?;
        Ok(Response::new(
            credentials(&self.0, &c.tenant, &r.provider).await?,
        ))
    }

    async fn list_credentials(
        &self,
        req: Request<api::ListProviderCredentialsRequest>,
    ) -> Result<Response<api::ListProviderCredentialsResponse>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let providers = list_credentials(&self.0, &c.tenant).await?;
        Ok(Response::new(api::ListProviderCredentialsResponse {
            providers,
        }))
    }

    async fn delete_credentials(
        &self,
        req: Request<api::DeleteProviderCredentialsRequest>,
    ) -> Result<Response<api::ProviderCredentials>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        field_required("provider", &r.provider)?;
        let out = delete_credentials(&self.0, &c.tenant, &c.actor, &r.provider).await?;
        Ok(Response::new(out))
    }

    async fn set_route(
        &self,
        req: Request<api::ProviderRoute>,
    ) -> Result<Response<api::ProviderRoute>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let out = set_route(&self.0, &c.tenant, &c.actor, req.into_inner()).await?;
        Ok(Response::new(out))
    }

    async fn get_route(
        &self,
        req: Request<api::GetProviderRouteRequest>,
    ) -> Result<Response<api::ProviderRoute>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        field_required("channel", &r.channel)?;
        Ok(Response::new(route(&self.0, &c.tenant, &r.channel).await?))
    }

    async fn delete_route(
        &self,
        req: Request<api::DeleteProviderRouteRequest>,
    ) -> Result<Response<api::ProviderRoute>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        field_required("channel", &r.channel)?;
        let out = delete_route(&self.0, &c.tenant, &c.actor, &r.channel).await?;
        Ok(Response::new(out))
    }
}
