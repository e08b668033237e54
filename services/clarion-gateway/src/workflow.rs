//! `WorkflowService`: apply (validate + publish a new version), get, list.

use std::collections::HashMap;

use clarion_domain::flow::Flow;
use clarion_domain::{Event, Payload};
use clarion_proto::api;
use clarion_store::{Scan, Table};
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::config_read::{latest_template, latest_workflow};
use crate::error::ApiError;
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

pub struct WorkflowApi(pub GatewayState);

fn view(flow: &Flow) -> api::WorkflowDefinition {
    api::WorkflowDefinition {
        workflow_id: flow.def.id.clone(),
        version: flow.version,
        name: flow.def.name.clone(),
        trigger_event: flow.def.trigger.event.clone(),
        definition_json: flow.to_json(),
    }
}

/// Every template a definition names (sends and fallback chains).
fn templates_of(text: &str) -> Vec<String> {
    let Ok(def) = serde_norway::from_str::<clarion_domain::flow::FlowDef>(text) else {
        return Vec::new();
    };
    def.steps
        .iter()
        .flat_map(|s| match &s.kind {
            clarion_domain::flow::StepKind::Send { send, .. } => vec![send.template.clone()],
            clarion_domain::flow::StepKind::Fallback { chain, .. } => {
                chain.iter().map(|c| c.template.clone()).collect()
            }
            _ => vec![],
        })
        .collect()
}

/// A tenant's workflow, latest version (`version` 0) or the given one;
/// `None` when there is no such workflow or version.
pub async fn get(
    s: &GatewayState,
    caller: &Caller,
    workflow_id: &str,
    version: u32,
) -> Result<Option<Flow>, ApiError> {
    if version == 0 {
        return latest_workflow(&*s.store, &caller.tenant, workflow_id).await;
    }
    let row = s
        .store
        .get(&clarion_store::RowKey::new(
            Table::Workflows,
            caller.tenant.as_str(),
            workflow_id,
            version.to_be_bytes().to_vec(),
        ))
        .await?;
    Ok(row
        .and_then(|b| Event::decode(&b).ok())
        .and_then(|e| match e.payload {
            Payload::WorkflowPublished(p) => clarion_domain::workflow::from_published(&p).ok(),
            _ => None,
        }))
}

/// Every workflow of the caller's tenant, at its latest version.
pub async fn list(s: &GatewayState, caller: &Caller) -> Result<Vec<Flow>, ApiError> {
    let rows = s
        .store
        .scan(&Scan::partition(
            Table::WorkflowIndex,
            caller.tenant.as_str(),
            "all",
            10_000,
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, b)| Event::decode(&b).ok())
        .filter_map(|e| match e.payload {
            Payload::WorkflowPublished(p) => clarion_domain::workflow::from_published(&p).ok(),
            _ => None,
        })
        .collect())
}

/// Validates the definition in `text` (YAML or JSON) and publishes it as the
/// workflow's next version, with the caller as the event's actor: what
/// `WorkflowService.Apply` and the console's apply page both do.
pub async fn apply(
    s: &GatewayState,
    caller: &Caller,
    text: &str,
) -> Result<api::ApplyWorkflowResponse, ApiError> {
    let mut v = clarion_domain::Violations::default();
    let max = clarion_domain::limits::MAX_DEFINITION_BYTES;
    if !clarion_domain::limits::check_len(&mut v, "definition", text, max) {
        return Err(v.into());
    }
    let _guard = s.config_lock.lock().await;
    let mut channels = HashMap::new();
    for t in templates_of(text) {
        if let Some(tpl) = latest_template(&*s.store, &caller.tenant, &t).await? {
            channels.insert(t, tpl.channel);
        }
    }
    // Parse once for the id (to number the version), then validate fully.
    let probe = Flow::parse(text, 0, |t| channels.get(t).copied())?;
    let version = latest_workflow(&*s.store, &caller.tenant, &probe.def.id)
        .await?
        .map(|w| w.version + 1)
        .unwrap_or(1);
    let flow = Flow::new(probe.def, version, |t| channels.get(t).copied())?;
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
    Ok(api::ApplyWorkflowResponse {
        workflow_id: flow.def.id.clone(),
        version,
    })
}

impl WorkflowApi {
    async fn apply(
        &self,
        req: Request<api::ApplyWorkflowRequest>,
    ) -> Result<api::ApplyWorkflowResponse, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        apply(&self.0, &caller, &req.into_inner().definition).await
    }

    async fn get(
        &self,
        req: Request<api::GetWorkflowRequest>,
    ) -> Result<api::WorkflowDefinition, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        let r = req.into_inner();
        let flow = get(&self.0, &caller, &r.workflow_id, r.version).await?;
        flow.map(|f| view(&f)).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no workflow {:?} version {} for tenant {:?}",
                r.workflow_id,
                if r.version == 0 {
                    "latest".to_string()
                } else {
                    r.version.to_string()
                },
                caller.tenant.as_str()
            ))
        })
    }

    async fn list(
        &self,
        req: Request<api::ListWorkflowsRequest>,
    ) -> Result<api::ListWorkflowsResponse, ApiError> {
        let caller = auth::tenant(&self.0, req.metadata()).await?;
        let workflows = list(&self.0, &caller).await?.iter().map(view).collect();
        Ok(api::ListWorkflowsResponse { workflows })
    }
}

#[tonic::async_trait]
impl api::workflow_service_server::WorkflowService for WorkflowApi {
    async fn apply(
        &self,
        request: Request<api::ApplyWorkflowRequest>,
    ) -> Result<Response<api::ApplyWorkflowResponse>, Status> {
        Ok(Response::new(WorkflowApi::apply(self, request).await?))
    }

    async fn get(
        &self,
        request: Request<api::GetWorkflowRequest>,
    ) -> Result<Response<api::WorkflowDefinition>, Status> {
        Ok(Response::new(WorkflowApi::get(self, request).await?))
    }

    async fn list(
        &self,
        request: Request<api::ListWorkflowsRequest>,
    ) -> Result<Response<api::ListWorkflowsResponse>, Status> {
        Ok(Response::new(WorkflowApi::list(self, request).await?))
    }
}
