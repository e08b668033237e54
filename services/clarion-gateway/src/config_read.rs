//! Reads of tenant configuration from the projection.

use clarion_domain::flow::{Flow, TenantLimits};
use clarion_domain::template::Template;
use clarion_domain::{Event, Payload, TenantId};
use clarion_store::{Scan, Store, Table};

use crate::config_cache::WorkflowHead;
use crate::error::ApiError;

async fn latest(
    store: &dyn Store,
    table: Table,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<Event>, ApiError> {
    let row = store
        .scan(&Scan::partition(table, tenant.as_str(), id, 1).reversed())
        .await?
        .into_iter()
        .next();
    match row {
        Some((_, v)) => Event::decode(&v)
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("stored {table} row: {e}"))),
        None => Ok(None),
    }
}

pub async fn latest_workflow(
    store: &dyn Store,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<Flow>, ApiError> {
    Ok(match latest(store, Table::Workflows, tenant, id).await? {
        Some(Event {
            payload: Payload::WorkflowPublished(p),
            ..
        }) => clarion_domain::workflow::from_published(&p).ok(),
        _ => None,
    })
}

/// [`latest_workflow_version`] through the gateway's short-lived cache (the
/// Trigger hot path; see `config_cache`).
pub async fn cached_workflow_version(
    state: &crate::GatewayState,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<WorkflowHead>, ApiError> {
    let now = state.clock.now_ms();
    if let Some(hit) = state
        .config_cache
        .workflow_version(tenant.as_str(), id, now)
    {
        return Ok(Some(hit));
    }
    let seen = state.config_cache.generation();
    let found = latest_workflow_version(&*state.store, tenant, id).await?;
    if let Some(head) = &found {
        state
            .config_cache
            .remember_workflow_version(seen, tenant.as_str(), id, head, now);
    }
    Ok(found)
}

/// The latest version of a workflow and its trigger event, without
/// rebuilding the definition (the Trigger hot path needs no more).
pub async fn latest_workflow_version(
    store: &dyn Store,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<WorkflowHead>, ApiError> {
    Ok(match latest(store, Table::Workflows, tenant, id).await? {
        Some(Event {
            payload: Payload::WorkflowPublished(p),
            ..
        }) => Some(WorkflowHead {
            version: p.version,
            trigger_event: p.trigger_event,
            personal: p.personal,
        }),
        _ => None,
    })
}

pub async fn latest_template(
    store: &dyn Store,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<Template>, ApiError> {
    Ok(match latest(store, Table::Templates, tenant, id).await? {
        Some(Event {
            payload: Payload::TemplatePublished(p),
            ..
        }) => Template::from_event(&p).ok(),
        _ => None,
    })
}

/// The tenant's current limits; `None` when it never set any.
pub async fn latest_limits(
    store: &dyn Store,
    tenant: &TenantId,
) -> Result<Option<TenantLimits>, ApiError> {
    let row = store
        .scan(
            &Scan::partition(
                Table::Tenants,
                tenant.as_str(),
                clarion_runtime::projector::TENANT_LIMITS_PK,
                1,
            )
            .reversed(),
        )
        .await?
        .into_iter()
        .next();
    Ok(match row.map(|(_, v)| Event::decode(&v)) {
        Some(Ok(Event {
            payload: Payload::TenantLimitsSet(p),
            ..
        })) => clarion_domain::flow::throttle::from_event(&p).ok(),
        Some(Err(e)) => return Err(ApiError::Internal(format!("stored limits row: {e}"))),
        _ => None,
    })
}
