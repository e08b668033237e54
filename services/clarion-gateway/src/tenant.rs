//! `TenantService`: tenants, API keys, templates, workflows and limits.
//!
//! Each write is an event on the tenant's partition of the config topic; the
//! call returns after the projector applied it. Versions are numbered by the
//! gateway under `config_lock` (one gateway per deployment writes config in
//! this version; see docs/architecture.md).

use bytes::Bytes;
use clarion_domain::flow::{throttle, TenantLimits};
use clarion_domain::ids::tenant_key;
use clarion_domain::template::Template;
use clarion_domain::tenant::issue_api_key;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::projector::PROJECTOR;
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table, SYSTEM_TENANT};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::config_read::{latest_limits, latest_template, latest_workflow};
use crate::error::ApiError;
use crate::state::GatewayState;

pub struct TenantApi(pub GatewayState);

pub(crate) fn config_event(
    state: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    payload: Payload,
) -> Event {
    Event {
        id: Id(rand::random()),
        tenant: tenant.clone(),
        partition_key: tenant_key(tenant),
        occurred_at_ms: state.clock.now_ms(),
        causation_id: None,
        correlation_id: None,
        actor: actor.clone(),
        payload,
    }
}

/// Appends config events and waits until the projector applied them.
pub(crate) async fn publish(state: &GatewayState, events: &[Event]) -> Result<(), ApiError> {
    let at = state.append(Topic::Config, events).await?;
    if let Some(last) = at.last() {
        state.wait_applied(PROJECTOR, Topic::Config, *last).await;
    }
    // After the projection has it: the next read sees the new configuration.
    state.config_cache.invalidate();
    Ok(())
}

/// Creates a tenant and its first API key; returns the key's plaintext.
/// Refuses an existing tenant id (claimed atomically, so two concurrent
/// creations cannot both succeed).
pub async fn create_tenant(
    state: &GatewayState,
    tenant_id: &str,
    name: &str,
    actor: &Actor,
) -> Result<String, ApiError> {
    let tenant = TenantId::parse_field(tenant_id, "tenant_id")?;
    let claim = RowKey::new(
        Table::Settings,
        SYSTEM_TENANT,
        "tenant-claim",
        tenant_id.as_bytes().to_vec(),
    );
    if state
        .store
        .insert_if_absent(&claim, Bytes::from_static(b"1"), None)
        .await?
        .is_some()
    {
        return Err(ApiError::AlreadyExists(format!(
            "tenant {tenant_id:?} already exists"
        )));
    }
    let key = issue_api_key(&tenant, rand::random());
    let events = [
        config_event(
            state,
            &tenant,
            actor,
            Payload::TenantCreated(pb::TenantCreated {
                tenant_id: tenant_id.to_string(),
                name: name.to_string(),
            }),
        ),
        config_event(
            state,
            &tenant,
            actor,
            Payload::ApiKeyCreated(pb::ApiKeyCreated {
                key_id: key.key_id.clone(),
                secret_sha256: key.secret_sha256.clone(),
                name: "initial".into(),
                scopes: clarion_domain::tenant::Scopes::ALL.names(),
                expires_at_ms: 0,
            }),
        ),
    ];
    publish(state, &events).await?;
    Ok(key.plaintext)
}

impl TenantApi {
    async fn put_template(
        &self,
        req: Request<api::Template>,
    ) -> Result<api::PutResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let t = req.into_inner();
        let variants: Vec<pb::TemplateVariant> = t
            .variants
            .into_iter()
            .map(|v| pb::TemplateVariant {
                locale: v.locale,
                subject: v.subject,
                body: v.body,
            })
            .collect();
        let _guard = s.config_lock.lock().await;
        let version = latest_template(&*s.store, &caller.tenant, &t.template_id)
            .await?
            .map(|t| t.version + 1)
            .unwrap_or(1);
        let tpl = Template::new(&t.template_id, version, &t.channel, &variants)?;
        publish(
            s,
            &[config_event(
                s,
                &caller.tenant,
                &caller.actor,
                Payload::TemplatePublished(tpl.to_event()),
            )],
        )
        .await?;
        Ok(api::PutResponse { version })
    }

    async fn put_workflow(
        &self,
        req: Request<api::Workflow>,
    ) -> Result<api::PutResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let w = req.into_inner();
        let steps: Vec<pb::WorkflowStep> = w
            .steps
            .into_iter()
            .map(|st| pb::WorkflowStep {
                channel: st.channel,
                template_id: st.template_id,
                provider: st.provider,
            })
            .collect();
        let _guard = s.config_lock.lock().await;
        let mut channels = std::collections::HashMap::new();
        for st in &steps {
            if let Some(t) = latest_template(&*s.store, &caller.tenant, &st.template_id).await? {
                channels.insert(st.template_id.clone(), t.channel);
            }
        }
        let version = latest_workflow(&*s.store, &caller.tenant, &w.workflow_id)
            .await?
            .map(|w| w.version + 1)
            .unwrap_or(1);
        let flow =
            clarion_domain::workflow::from_steps(&w.workflow_id, &w.name, &steps, version, |id| {
                channels.get(id).copied()
            })?;
        crate::apps::check_workflow(s, &caller.tenant, &flow.def).await?;
        publish(
            s,
            &[config_event(
                s,
                &caller.tenant,
                &caller.actor,
                Payload::WorkflowPublished(clarion_domain::workflow::published(&flow)),
            )],
        )
        .await?;
        Ok(api::PutResponse { version })
    }

    async fn put_limits(
        &self,
        req: Request<api::PutLimitsRequest>,
    ) -> Result<api::PutResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let text = req.into_inner().definition;
        if text.len() > 64 * 1024 {
            return Err(clarion_domain::Violations::single("definition", "is over 64 KiB").into());
        }
        let _guard = s.config_lock.lock().await;
        let version = latest_limits(&*s.store, &caller.tenant)
            .await?
            .map(|l| l.version + 1)
            .unwrap_or(1);
        let limits = TenantLimits::parse(&text, version)?;
        publish(
            s,
            &[config_event(
                s,
                &caller.tenant,
                &caller.actor,
                Payload::TenantLimitsSet(throttle::to_event(&limits)),
            )],
        )
        .await?;
        Ok(api::PutResponse { version })
    }

    async fn get_limits(
        &self,
        req: Request<api::GetLimitsRequest>,
    ) -> Result<api::TenantLimits, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let limits = latest_limits(&*s.store, &caller.tenant)
            .await?
            .unwrap_or_default();
        Ok(api::TenantLimits {
            version: limits.version,
            definition_json: limits.to_json(),
        })
    }

    /// Mints a key with at most the calling key's scopes and lifetime.
    async fn create_api_key(
        &self,
        req: Request<api::CreateApiKeyRequest>,
    ) -> Result<api::CreateApiKeyResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let r = req.into_inner();
        let now = s.clock.now_ms();
        let (scopes, expires) = clarion_domain::tenant::mint_grant(
            &caller.grant,
            &r.name,
            &r.scopes,
            r.expires_at_ms,
            now,
        )?;
        let key = issue_api_key(&caller.tenant, rand::random());
        publish(
            s,
            &[config_event(
                s,
                &caller.tenant,
                &caller.actor,
                Payload::ApiKeyCreated(pb::ApiKeyCreated {
                    key_id: key.key_id.clone(),
                    secret_sha256: key.secret_sha256,
                    name: r.name,
                    scopes: scopes.names(),
                    expires_at_ms: expires.unwrap_or(0),
                }),
            )],
        )
        .await?;
        Ok(api::CreateApiKeyResponse {
            key_id: key.key_id,
            api_key: key.plaintext,
        })
    }
}

#[tonic::async_trait]
impl api::tenant_service_server::TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<api::CreateTenantRequest>,
    ) -> Result<Response<api::CreateTenantResponse>, Status> {
        let actor = auth::admin(&self.0, request.metadata())?;
        let r = request.into_inner();
        let key = create_tenant(&self.0, &r.tenant_id, &r.name, &actor).await?;
        Ok(Response::new(api::CreateTenantResponse {
            tenant_id: r.tenant_id,
            api_key: key,
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<api::CreateApiKeyRequest>,
    ) -> Result<Response<api::CreateApiKeyResponse>, Status> {
        Ok(Response::new(
            TenantApi::create_api_key(self, request).await?,
        ))
    }

    async fn put_template(
        &self,
        request: Request<api::Template>,
    ) -> Result<Response<api::PutResponse>, Status> {
        Ok(Response::new(TenantApi::put_template(self, request).await?))
    }

    async fn put_workflow(
        &self,
        request: Request<api::Workflow>,
    ) -> Result<Response<api::PutResponse>, Status> {
        Ok(Response::new(TenantApi::put_workflow(self, request).await?))
    }

    async fn put_limits(
        &self,
        request: Request<api::PutLimitsRequest>,
    ) -> Result<Response<api::PutResponse>, Status> {
        Ok(Response::new(TenantApi::put_limits(self, request).await?))
    }

    async fn get_limits(
        &self,
        request: Request<api::GetLimitsRequest>,
    ) -> Result<Response<api::TenantLimits>, Status> {
        Ok(Response::new(TenantApi::get_limits(self, request).await?))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<api::RotateWebhookSecretRequest>,
    ) -> Result<Response<api::RotateWebhookSecretResponse>, Status> {
        Ok(Response::new(
            crate::webhook_secret::rotate(&self.0, request).await?,
        ))
    }
}
