//! A tenant's apps (docs/push.md): what `DeviceService.ConfigureApp`,
//! `GetApp`, `ListApps` and their REST routes do, whatever the door.
//!
//! An app is tenant configuration: `AppConfigured` on the tenant's
//! partition of `config`, numbered under the configuration lock like
//! topics, templates and workflows; the projector keeps the latest version
//! in `Table::Apps`, which the reads, device registration and workflow
//! publication consult. A write returns once the projector applied it.

use std::collections::BTreeMap;

use clarion_domain::error::quote;
use clarion_domain::limits::check_len;
use clarion_domain::push::App;
use clarion_domain::workflow::validate_id;
use clarion_domain::{Payload, TenantId, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::projector::{app_key, APPS_PK};
use clarion_store::{Scan, Table};
use prost::Message;

use crate::error::ApiError;
use crate::preferences::Who;
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

/// Most apps a tenant may configure.
pub const MAX_APPS: usize = 100;
const MAX_NAME_BYTES: usize = 200;
const MAX_BUNDLE_ID_BYTES: usize = 255;

/// The API form of an app.
pub fn to_api(a: &App) -> api::App {
    api::App {
        app_id: a.app_id.clone(),
        name: a.name.clone(),
        platforms: a.platforms.iter().map(|p| p.as_str().into()).collect(),
        ios_bundle_id: a.ios_bundle_id.clone(),
        apns_environment: a.apns_environment.clone(),
        deep_links: a
            .deep_links
            .iter()
            .map(|(t, p)| (t.as_str().to_string(), p.clone()))
            .collect(),
        version: a.version,
    }
}

/// The event that configures `a` (its normalized form: what reads show).
fn to_event(a: &App, origin: pb::Origin) -> pb::AppConfigured {
    let api::App {
        app_id,
        name,
        platforms,
        ios_bundle_id,
        apns_environment,
        deep_links,
        version,
    } = to_api(a);
    pb::AppConfigured {
        app_id,
        name,
        platforms,
        ios_bundle_id,
        apns_environment,
        deep_links,
        version,
        origin: Some(origin),
    }
}

fn decode(bytes: &[u8]) -> Result<App, ApiError> {
    let e = pb::AppConfigured::decode(bytes)
        .map_err(|e| ApiError::Internal(format!("stored app: {e}")))?;
    App::from_event(&e).map_err(|v| ApiError::Internal(format!("stored app is invalid: {v}")))
}

/// Every app of the tenant, by id.
pub async fn apps_by_id(
    s: &GatewayState,
    tenant: &TenantId,
) -> Result<BTreeMap<String, App>, ApiError> {
    let scan = Scan::partition(Table::Apps, tenant.as_str(), APPS_PK, MAX_APPS + 1);
    let mut out = BTreeMap::new();
    for (_, v) in s.store.scan(&scan).await? {
        let a = decode(&v)?;
        out.insert(a.app_id.clone(), a);
    }
    Ok(out)
}

/// The tenant's app of that id, if it has one.
pub async fn find(s: &GatewayState, tenant: &TenantId, id: &str) -> Result<Option<App>, ApiError> {
    match s.store.get(&app_key(tenant.as_str(), id)).await? {
        Some(v) => decode(&v).map(Some),
        None => Ok(None),
    }
}

/// One app; not found when the tenant has none of that id.
pub async fn get(s: &GatewayState, tenant: &TenantId, id: &str) -> Result<App, ApiError> {
    let mut v = Violations::default();
    validate_id(&mut v, "app_id", id);
    v.into_result()?;
    find(s, tenant, id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no app {} for tenant {:?}",
            quote(id),
            tenant.as_str()
        ))
    })
}

/// Creates or replaces an app; returns it as configured (with its version).
/// The same definition again is not a new version.
pub async fn configure(s: &GatewayState, who: &Who, input: api::App) -> Result<App, ApiError> {
    if who.subscriber.is_some() {
        return Err(ApiError::PermissionDenied(
            "a subscriber token cannot configure apps".into(),
        ));
    }
    let mut v = Violations::default();
    check_len(&mut v, "name", &input.name, MAX_NAME_BYTES);
    check_len(
        &mut v,
        "ios_bundle_id",
        &input.ios_bundle_id,
        MAX_BUNDLE_ID_BYTES,
    );
    let _guard = s.config_lock.lock().await;
    let known = apps_by_id(s, &who.tenant).await?;
    let previous = known.get(&input.app_id);
    if previous.is_none() && known.len() >= MAX_APPS {
        v.push(
            "app_id",
            format!("the tenant already has {MAX_APPS} apps, the most allowed"),
        );
    }
    let event = pb::AppConfigured {
        app_id: input.app_id,
        name: input.name,
        platforms: input.platforms,
        ios_bundle_id: input.ios_bundle_id,
        apns_environment: input.apns_environment,
        deep_links: input.deep_links,
        version: previous.map_or(1, |p| p.version + 1),
        origin: None,
    };
    let app = match App::from_event(&event) {
        Ok(app) => app,
        Err(more) => {
            v.0.extend(more.0);
            return Err(v.into());
        }
    };
    v.into_result()?;
    if let Some(p) = previous.filter(|p| same_definition(p, &app)) {
        return Ok(p.clone());
    }
    let event = config_event(
        s,
        &who.tenant,
        &who.actor,
        Payload::AppConfigured(to_event(&app, who.origin())),
    );
    publish(s, &[event]).await?;
    Ok(app)
}

/// Whether two versions define the same app (configuring an app again
/// with the same definition, as a deploy script does, is no new version).
fn same_definition(a: &App, b: &App) -> bool {
    App {
        version: 0,
        ..a.clone()
    } == App {
        version: 0,
        ..b.clone()
    }
}

/// Publication's check of a workflow's sends against the tenant's apps:
/// an unknown app, a link type the app has no pattern for, or a link
/// without its id is refused naming the step's field
/// (`steps[0].link.type`).
pub async fn check_workflow(
    s: &GatewayState,
    tenant: &TenantId,
    def: &clarion_domain::flow::FlowDef,
) -> Result<(), ApiError> {
    let sends = def.sends();
    if sends
        .iter()
        .all(|(_, send)| send.app.is_none() && send.link.is_none())
    {
        return Ok(());
    }
    let apps = apps_by_id(s, tenant).await?;
    def.check_apps(&|id| apps.get(id).cloned()).into_result()?;
    Ok(())
}
