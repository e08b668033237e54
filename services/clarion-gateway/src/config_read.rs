//! Reads of tenant configuration from the projection.

use clarion_domain::flow::Flow;
use clarion_domain::template::Template;
use clarion_domain::{Event, Payload, TenantId};
use clarion_store::{Scan, Store, Table};

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
