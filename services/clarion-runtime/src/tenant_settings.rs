//! Tenant-wide scheduling settings in the projection (docs/scheduling.md):
//! the tenant's default quiet hours and its calendar (default time zone,
//! holidays), each kept in `Table::Tenants` by version like tenant limits
//! (pk [`QUIET_HOURS_PK`] / [`CALENDAR_PK`], ck the big-endian version,
//! value the event envelope as logged). Readers take the latest version.

use bytes::Bytes;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, StoreError, Table};

use crate::processor::Batch;
use crate::projector::version_ck;

/// Partition (in the tenants table) of the tenant's quiet-hour settings.
pub const QUIET_HOURS_PK: &str = "quiet_hours/";
/// Partition (in the tenants table) of the tenant's calendar.
pub const CALENDAR_PK: &str = "calendar/";

/// The projector's arm: records a tenant's calendar or default quiet hours
/// (a subscriber's quiet hours are the router's, on the triggers topic).
pub fn project(batch: &mut Batch, e: &Event, raw: &Bytes) {
    let tenant = e.tenant.as_str();
    let (pk, version) = match &e.payload {
        Payload::TenantCalendarSet(c) => (CALENDAR_PK, c.version),
        Payload::QuietHoursSet(q) if q.subscriber_id.is_empty() => (QUIET_HOURS_PK, q.version),
        _ => return,
    };
    batch.writes.put(
        RowKey::new(Table::Tenants, tenant, pk, version_ck(version)),
        raw.clone(),
    );
}

/// The latest event of a settings partition.
async fn latest(store: &dyn Store, tenant: &str, pk: &str) -> Result<Option<Event>, StoreError> {
    Ok(store
        .scan(&Scan::partition(Table::Tenants, tenant, pk, 1).reversed())
        .await?
        .into_iter()
        .next()
        .and_then(|(_, b)| Event::decode(&b).ok()))
}

/// The tenant's calendar as last set, if ever.
pub async fn calendar(
    store: &dyn Store,
    tenant: &str,
) -> Result<Option<pb::TenantCalendarSet>, StoreError> {
    Ok(match latest(store, tenant, CALENDAR_PK).await? {
        Some(Event {
            payload: Payload::TenantCalendarSet(c),
            ..
        }) => Some(c),
        _ => None,
    })
}

/// The tenant's default quiet hours as last set, if ever.
pub async fn tenant_quiet_hours(
    store: &dyn Store,
    tenant: &str,
) -> Result<Option<pb::QuietHoursSet>, StoreError> {
    Ok(match latest(store, tenant, QUIET_HOURS_PK).await? {
        Some(Event {
            payload: Payload::QuietHoursSet(q),
            ..
        }) => Some(q),
        _ => None,
    })
}

/// A subscriber's own quiet hours as last applied by the router
/// (`Table::QuietHours`, the event envelope), if any.
pub async fn subscriber_quiet_hours(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
) -> Result<Option<pb::QuietHoursSet>, StoreError> {
    let key = crate::router::quiet_hours_key(tenant, subscriber);
    Ok(
        match store.get(&key).await?.and_then(|b| Event::decode(&b).ok()) {
            Some(Event {
                payload: Payload::QuietHoursSet(q),
                ..
            }) => Some(q),
            _ => None,
        },
    )
}
