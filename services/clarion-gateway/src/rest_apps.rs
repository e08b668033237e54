//! REST door to a tenant's apps (docs/push.md): configure one (`PUT`, admin
//! scope), read one or all (`read`). The operations are [`crate::apps`],
//! which `DeviceService` calls too; a refused definition names the field
//! (`platforms[1]`, `ios_bundle_id`, `deep_links.job_card`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::extract::{JsonBody, PathParams};
use crate::preference_input::who;
use crate::preferences::Interface;
use crate::problem::Problem;
use crate::state::GatewayState;
use crate::{apps, auth};

/// `PUT /v1/apps/{id}`: the whole definition (the id is in the path).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    #[serde(default)]
    pub name: String,
    /// `ios`, `android`, `web` (at least one).
    pub platforms: Vec<String>,
    /// The iOS bundle id (the APNs topic); required on ios.
    #[serde(default)]
    pub ios_bundle_id: String,
    /// `sandbox` or `production` (default).
    #[serde(default)]
    pub apns_environment: String,
    /// Deep-link type (`appointment`, `job_card`, `approval`,
    /// `inbox_item`) → pattern with `{id}` once, e.g.
    /// `fieldapp://jobs/{id}`.
    #[serde(default)]
    pub deep_links: BTreeMap<String, String>,
}

/// An app as configured.
#[derive(Serialize, ToSchema)]
pub struct AppView {
    pub app_id: String,
    pub name: String,
    pub platforms: Vec<String>,
    pub ios_bundle_id: String,
    pub apns_environment: String,
    pub deep_links: BTreeMap<String, String>,
    pub version: u32,
}

#[derive(Serialize, ToSchema)]
pub struct AppList {
    pub apps: Vec<AppView>,
}

fn view(a: api::App) -> AppView {
    AppView {
        app_id: a.app_id,
        name: a.name,
        platforms: a.platforms,
        ios_bundle_id: a.ios_bundle_id,
        apns_environment: a.apns_environment,
        deep_links: a.deep_links.into_iter().collect(),
        version: a.version,
    }
}

/// Creates or replaces an app (a changed definition is a new version; the
/// same definition again changes nothing).
#[utoipa::path(put, path = "/v1/apps/{id}", tag = "apps",
    operation_id = "configureApp",
    params(("id" = String, Path, description = "App id (A-Z, a-z, 0-9, `.`, `_`, `-`)")),
    request_body = AppBody,
    responses((status = 200, description = "The app as stored", body = AppView)))]
pub async fn put_app(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<AppBody>,
) -> Result<Json<AppView>, Problem> {
    let who = who(&s, &MetadataMap::from_headers(headers), Interface::Rest).await?;
    let input = api::App {
        app_id: id,
        name: b.name,
        platforms: b.platforms,
        ios_bundle_id: b.ios_bundle_id,
        apns_environment: b.apns_environment,
        deep_links: b.deep_links.into_iter().collect(),
        version: 0,
    };
    let app = apps::configure(&s, &who, input).await?;
    Ok(Json(view(apps::to_api(&app))))
}

/// The tenant's apps.
#[utoipa::path(get, path = "/v1/apps", tag = "apps",
    operation_id = "listApps",
    responses((status = 200, description = "Every app of the tenant", body = AppList)))]
pub async fn list_apps(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<AppList>, Problem> {
    let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let apps = apps::apps_by_id(&s, &caller.tenant).await?;
    Ok(Json(AppList {
        apps: apps.values().map(|a| view(apps::to_api(a))).collect(),
    }))
}

/// One app.
#[utoipa::path(get, path = "/v1/apps/{id}", tag = "apps",
    operation_id = "getApp",
    params(("id" = String, Path, description = "App id")),
    responses((status = 200, description = "The app", body = AppView)))]
pub async fn get_app(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<AppView>, Problem> {
    let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let app = apps::get(&s, &caller.tenant, &id).await?;
    Ok(Json(view(apps::to_api(&app))))
}

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(put_app, list_apps, get_app),
    components(schemas(AppBody, AppView, AppList))
)]
pub struct Paths;

/// The routes (merged into `rest::routes`, behind its access guard).
pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/:id", get(get_app).put(put_app))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    #[test]
    fn bad_bodies_name_the_field() {
        for (body, field) in [
            (&br#"{"name":"x"}"#[..], "platforms"),
            (br#"{"platforms":"ios"}"#, "platforms"),
            (br#"{"platforms":[],"colour":"red"}"#, "colour"),
            (
                br#"{"platforms":[],"deep_links":{"job_card":1}}"#,
                "deep_links.job_card",
            ),
        ] {
            match parse_json::<AppBody>(body) {
                Err(p) => assert_eq!(p.errors[0].field, field),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
            }
        }
    }
}
