//! A tenant's SLAs (issue #31, docs/slas.md), shared by REST (`rest_slas`)
//! and gRPC ([`SlaApi`]): definitions are `SlaSet` config events; the
//! status sums the SLA role's rows at the gateway's clock.

use clarion_domain::sla::{self, MAX_SLAS};
use clarion_domain::{Actor, Payload, TenantId, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::provider_rows;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::error::ApiError;
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

pub fn to_api(s: &pb::SlaSet) -> api::Sla {
    api::Sla {
        sla_id: s.sla_id.clone(),
        name: s.name.clone(),
        channel: s.channel.clone(),
        workflow_id: s.workflow_id.clone(),
        topic: s.topic.clone(),
        target_ratio: s.target_ratio,
        threshold_ms: s.threshold_ms,
        window_ms: s.window_ms,
        milestone: s.milestone.clone(),
        min_samples: s.min_samples,
    }
}

fn from_api(s: api::Sla) -> pb::SlaSet {
    pb::SlaSet {
        sla_id: s.sla_id,
        name: s.name,
        channel: s.channel,
        workflow_id: s.workflow_id,
        topic: s.topic,
        target_ratio: s.target_ratio,
        threshold_ms: s.threshold_ms,
        window_ms: s.window_ms,
        milestone: s.milestone,
        min_samples: s.min_samples,
        removed: false,
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!("no SLA {id:?}"))
}

/// Creates or replaces an SLA.
pub async fn set(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    input: api::Sla,
) -> Result<api::Sla, ApiError> {
    let checked = sla::check(from_api(input))?;
    let _one = s.config_lock.lock().await;
    let all = provider_rows::slas(&*s.store, tenant.as_str()).await?;
    if all.len() >= MAX_SLAS && !all.iter().any(|x| x.sla_id == checked.sla_id) {
        return Err(
            Violations::single("sla_id", format!("a tenant has at most {MAX_SLAS} SLAs")).into(),
        );
    }
    let out = to_api(&checked);
    publish(
        s,
        &[config_event(s, tenant, actor, Payload::SlaSet(checked))],
    )
    .await?;
    Ok(out)
}

pub async fn get(s: &GatewayState, tenant: &TenantId, id: &str) -> Result<pb::SlaSet, ApiError> {
    provider_rows::slas(&*s.store, tenant.as_str())
        .await?
        .into_iter()
        .find(|x| x.sla_id == id)
        .ok_or_else(|| unknown(id))
}

pub async fn list(s: &GatewayState, tenant: &TenantId) -> Result<Vec<api::Sla>, ApiError> {
    Ok(provider_rows::slas(&*s.store, tenant.as_str())
        .await?
        .iter()
        .map(to_api)
        .collect())
}

/// Deletes an SLA (and any demotion it put in force).
pub async fn delete(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    id: &str,
) -> Result<api::Sla, ApiError> {
    let _one = s.config_lock.lock().await;
    let prev = get(s, tenant, id).await?;
    let ev = pb::SlaSet {
        removed: true,
        ..prev.clone()
    };
    publish(s, &[config_event(s, tenant, actor, Payload::SlaSet(ev))]).await?;
    Ok(to_api(&prev))
}

/// The SLA's compliance now.
pub async fn status(
    s: &GatewayState,
    tenant: &TenantId,
    id: &str,
) -> Result<api::SlaStatus, ApiError> {
    let def = get(s, tenant, id).await?;
    let t = tenant.as_str();
    let unavailable = |e: clarion_runtime::ProcessError| ApiError::Unavailable(e.to_string());
    let pending = clarion_runtime::sla::pending(&*s.store, t)
        .await
        .map_err(unavailable)?;
    let breach = provider_rows::demotions(&*s.store, t)
        .await?
        .into_iter()
        .find(|b| b.sla_id == id);
    let st = clarion_runtime::sla::status(&*s.store, t, &def, &pending, breach, s.clock.now_ms())
        .await
        .map_err(unavailable)?;
    Ok(api::SlaStatus {
        sla: Some(to_api(&def)),
        compliance: st.judgement.compliance,
        met: st.window.met,
        missed: st.window.missed,
        overdue: st.window.overdue,
        pending: st.window.pending,
        breached: st.judgement.breached,
        predicted: st.judgement.predicted,
        window_start_ms: st.window_start_ms,
        demoted_provider: st.breach.map(|b| b.demoted_provider).unwrap_or_default(),
        runbook: clarion_runtime::sla::RUNBOOK.into(),
        missed_by_provider: st
            .missed_by_provider
            .into_iter()
            .map(|(provider, missed)| api::ProviderMisses { provider, missed })
            .collect(),
    })
}

fn id_required(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(Violations::single("sla_id", "is required").into());
    }
    Ok(())
}

pub struct SlaApi(pub GatewayState);

#[tonic::async_trait]
impl api::sla_service_server::SlaService for SlaApi {
    async fn set_sla(&self, req: Request<api::Sla>) -> Result<Response<api::Sla>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        Ok(Response::new(
            set(&self.0, &c.tenant, &c.actor, req.into_inner()).await?,
        ))
    }

    async fn get_sla(
        &self,
        req: Request<api::GetSlaRequest>,
    ) -> Result<Response<api::Sla>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let id = req.into_inner().sla_id;
        id_required(&id)?;
        Ok(Response::new(to_api(&get(&self.0, &c.tenant, &id).await?)))
    }

    async fn list_slas(
        &self,
        req: Request<api::ListSlasRequest>,
    ) -> Result<Response<api::ListSlasResponse>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        Ok(Response::new(api::ListSlasResponse {
            slas: list(&self.0, &c.tenant).await?,
        }))
    }

    async fn delete_sla(
        &self,
        req: Request<api::DeleteSlaRequest>,
    ) -> Result<Response<api::Sla>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let id = req.into_inner().sla_id;
        id_required(&id)?;
        Ok(Response::new(
            delete(&self.0, &c.tenant, &c.actor, &id).await?,
        ))
    }

    async fn get_sla_status(
        &self,
        req: Request<api::GetSlaRequest>,
    ) -> Result<Response<api::SlaStatus>, Status> {
        let c = auth::tenant(&self.0, req.metadata()).await?;
        let id = req.into_inner().sla_id;
        id_required(&id)?;
        Ok(Response::new(status(&self.0, &c.tenant, &id).await?))
    }
}
