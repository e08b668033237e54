//! Store rows of a tenant's own providers and SLAs (issue #31), written by
//! the projector from config events and read by the gateway (what is set),
//! the dispatcher (which providers a send goes through) and the SLA role.
//!
//! All in `Table::Tenants` under the tenant, in partitions whose names
//! hold a `/` (no tenant record id can): the latest
//! `ProviderCredentialsSet` per provider, `ProviderRouteSet` per channel,
//! `SlaSet` per SLA, and the `SlaBreached` in force per SLA (a demotion).
//! The tenants with SLAs are listed under the system tenant for the SLA
//! evaluator.

use bytes::Bytes;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, StoreError, Table, WriteBatch, SYSTEM_TENANT};

pub const CREDENTIALS_PK: &str = "provider-credentials/";
pub const ROUTES_PK: &str = "provider-routes/";
pub const SLAS_PK: &str = "slas/";
pub const DEMOTIONS_PK: &str = "provider-demotions/";
/// Under the system tenant: one row per tenant that ever set an SLA.
pub const SLA_TENANTS_PK: &str = "sla-tenants/";
/// Rows one tenant may hold per partition (bounded by the API anyway).
const SCAN_LIMIT: usize = 1_000;

fn key(tenant: &str, pk: &str, ck: &str) -> RowKey {
    RowKey::new(Table::Tenants, tenant, pk, ck.as_bytes().to_vec())
}

pub fn credentials_key(tenant: &str, provider: &str) -> RowKey {
    key(tenant, CREDENTIALS_PK, provider)
}

pub fn route_key(tenant: &str, channel: &str) -> RowKey {
    key(tenant, ROUTES_PK, channel)
}

pub fn sla_key(tenant: &str, sla_id: &str) -> RowKey {
    key(tenant, SLAS_PK, sla_id)
}

pub fn demotion_key(tenant: &str, sla_id: &str) -> RowKey {
    key(tenant, DEMOTIONS_PK, sla_id)
}

pub fn sla_tenant_key(tenant: &str) -> RowKey {
    key(SYSTEM_TENANT, SLA_TENANTS_PK, tenant)
}

/// Projects one of the events above (the projector of the config topic,
/// which applies a tenant's config in order: the last write wins).
/// Returns false for any other event.
pub fn project(w: &mut WriteBatch, e: &Event, raw: &Bytes) -> bool {
    let tenant = e.tenant.as_str();
    match &e.payload {
        Payload::ProviderCredentialsSet(p) if p.removed => {
            w.delete(credentials_key(tenant, &p.provider));
        }
        Payload::ProviderCredentialsSet(p) => {
            w.put(credentials_key(tenant, &p.provider), raw.clone());
        }
        Payload::ProviderRouteSet(p) if p.providers.is_empty() => {
            w.delete(route_key(tenant, &p.channel));
        }
        Payload::ProviderRouteSet(p) => {
            w.put(route_key(tenant, &p.channel), raw.clone());
        }
        Payload::SlaSet(p) if p.removed => {
            w.delete(sla_key(tenant, &p.sla_id));
            // A deleted SLA demotes nothing any more.
            w.delete(demotion_key(tenant, &p.sla_id));
        }
        Payload::SlaSet(p) => {
            w.put(sla_key(tenant, &p.sla_id), raw.clone());
            w.put(sla_tenant_key(tenant), Bytes::new());
        }
        Payload::SlaBreached(p) => {
            w.put(demotion_key(tenant, &p.sla_id), raw.clone());
        }
        Payload::SlaRecovered(p) => {
            w.delete(demotion_key(tenant, &p.sla_id));
        }
        _ => return false,
    }
    true
}

/// The payloads of a tenant's partition `pk`, in clustering order.
async fn payloads(store: &dyn Store, tenant: &str, pk: &str) -> Result<Vec<Payload>, StoreError> {
    let rows = store
        .scan(&Scan::partition(Table::Tenants, tenant, pk, SCAN_LIMIT))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| Event::decode(&v).ok())
        .map(|e| e.payload)
        .collect())
}

/// The tenant's credentials in force, by provider.
pub async fn credentials(
    store: &dyn Store,
    tenant: &str,
) -> Result<Vec<pb::ProviderCredentialsSet>, StoreError> {
    Ok(payloads(store, tenant, CREDENTIALS_PK)
        .await?
        .into_iter()
        .filter_map(|p| match p {
            Payload::ProviderCredentialsSet(c) => Some(c),
            _ => None,
        })
        .collect())
}

/// One provider's credentials in force.
pub async fn credential(
    store: &dyn Store,
    tenant: &str,
    provider: &str,
) -> Result<Option<pb::ProviderCredentialsSet>, StoreError> {
    Ok(store
        .get(&credentials_key(tenant, provider))
        .await?
        .and_then(|b| Event::decode(&b).ok())
        .and_then(|e| match e.payload {
            Payload::ProviderCredentialsSet(c) => Some(c),
            _ => None,
        }))
}

/// The tenant's routes, by channel.
pub async fn routes(
    store: &dyn Store,
    tenant: &str,
) -> Result<Vec<pb::ProviderRouteSet>, StoreError> {
    Ok(payloads(store, tenant, ROUTES_PK)
        .await?
        .into_iter()
        .filter_map(|p| match p {
            Payload::ProviderRouteSet(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// The tenant's SLAs, by id.
pub async fn slas(store: &dyn Store, tenant: &str) -> Result<Vec<pb::SlaSet>, StoreError> {
    Ok(payloads(store, tenant, SLAS_PK)
        .await?
        .into_iter()
        .filter_map(|p| match p {
            Payload::SlaSet(s) => Some(s),
            _ => None,
        })
        .collect())
}

/// The breaches in force (each demotes a provider of its channel).
pub async fn demotions(
    store: &dyn Store,
    tenant: &str,
) -> Result<Vec<pb::SlaBreached>, StoreError> {
    Ok(payloads(store, tenant, DEMOTIONS_PK)
        .await?
        .into_iter()
        .filter_map(|p| match p {
            Payload::SlaBreached(b) => Some(b),
            _ => None,
        })
        .collect())
}

/// Tenants that ever set an SLA.
pub async fn sla_tenants(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let rows = store
        .scan(&Scan::partition(
            Table::Tenants,
            SYSTEM_TENANT,
            SLA_TENANTS_PK,
            100_000,
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(ck, _)| String::from_utf8(ck).ok())
        .collect())
}
