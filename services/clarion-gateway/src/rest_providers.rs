//! REST door to a tenant's own providers (issue #31, docs/providers.md):
//! credentials `PUT/GET/DELETE /v1/providers/{provider}/credentials`
//! (write-only: answers name the fields set, never values), their list
//! `GET /v1/providers`, and routes `PUT/GET/DELETE
//! /v1/provider-routes/{channel}`. Bad input names the field
//! (`credentials.api_key`, `providers[1]`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::auth::{self, Caller};
use crate::extract::{JsonBody, PathParams};
use crate::problem::Problem;
use crate::providers as ops;
use crate::state::GatewayState;

/// Body of `PUT /v1/providers/{provider}/credentials`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    /// sendgrid: `api_key` (required), `from_email`, `from_name`; vonage:
    /// `api_key`, `api_secret` (required), `from`; twilio: `account_sid`,
    /// `auth_token` (required), `from`. No URL: the base URL is the
    /// operator's.
    pub credentials: BTreeMap<String, String>,
}

/// What is set for a provider: field names, never values.
#[derive(Serialize, ToSchema)]
pub struct CredentialsView {
    pub provider: String,
    pub fields_set: Vec<String>,
    pub version: u32,
    /// The master key that sealed them.
    pub master_key_id: String,
}

/// The tenant's credentials and routes.
#[derive(Serialize, ToSchema)]
pub struct ProvidersView {
    pub credentials: Vec<CredentialsView>,
}

/// Body of `PUT /v1/provider-routes/{channel}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteBody {
    /// In priority order: email `sendgrid`, `smtp`; sms `vonage`, `twilio`.
    pub providers: Vec<String>,
}

/// A tenant route.
#[derive(Serialize, ToSchema)]
pub struct RouteView {
    pub channel: String,
    pub providers: Vec<String>,
    /// Providers a breached SLA moved to the end of the route.
    pub demoted: Vec<String>,
}

fn creds_view(c: api::ProviderCredentials) -> CredentialsView {
    CredentialsView {
        provider: c.provider,
        fields_set: c.fields_set,
        version: c.version,
        master_key_id: c.master_key_id,
    }
}

fn route_view(r: api::ProviderRoute) -> RouteView {
    RouteView {
        channel: r.channel,
        providers: r.providers,
        demoted: r.demoted,
    }
}

async fn caller(s: &GatewayState, headers: HeaderMap) -> Result<Caller, Problem> {
    Ok(auth::tenant(s, &MetadataMap::from_headers(headers)).await?)
}

/// Set the tenant's credentials for a provider (replacing any).
#[utoipa::path(put, path = "/v1/providers/{provider}/credentials", tag = "providers",
    operation_id = "setProviderCredentials", request_body = CredentialsBody,
    params(("provider" = String, Path, description = "sendgrid, vonage or twilio")),
    responses(
        (status = 200, description = "The fields set", body = CredentialsView),
        (status = 400, description = "A bad field, named", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_credentials(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(provider): PathParams<String>,
    JsonBody(b): JsonBody<CredentialsBody>,
) -> Result<Json<CredentialsView>, Problem> {
    let c = caller(&s, headers).await?;
    let out = ops::set_credentials(&s, &c.tenant, &c.actor, &provider, b.credentials).await?;
    Ok(Json(creds_view(out)))
}

/// Which credential fields are set for a provider (never their values).
#[utoipa::path(get, path = "/v1/providers/{provider}/credentials", tag = "providers",
    operation_id = "getProviderCredentials",
    params(("provider" = String, Path, description = "sendgrid, vonage or twilio")),
    responses(
        (status = 200, description = "The fields set", body = CredentialsView),
        (status = 404, description = "None set", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_credentials(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(provider): PathParams<String>,
) -> Result<Json<CredentialsView>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(creds_view(
        ops::credentials(&s, &c.tenant, &provider).await?,
    )))
}

/// Remove the tenant's credentials for a provider: the operator's applies.
#[utoipa::path(delete, path = "/v1/providers/{provider}/credentials", tag = "providers",
    operation_id = "deleteProviderCredentials",
    params(("provider" = String, Path, description = "sendgrid, vonage or twilio")),
    responses(
        (status = 200, description = "Removed", body = CredentialsView),
        (status = 404, description = "None set", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_credentials(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(provider): PathParams<String>,
) -> Result<Json<CredentialsView>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(creds_view(
        ops::delete_credentials(&s, &c.tenant, &c.actor, &provider).await?,
    )))
}

/// The providers the tenant brought credentials for.
#[utoipa::path(get, path = "/v1/providers", tag = "providers",
    operation_id = "listProviderCredentials",
    responses((status = 200, description = "Field names per provider", body = ProvidersView)))]
pub async fn list(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<ProvidersView>, Problem> {
    let c = caller(&s, headers).await?;
    let creds = ops::list_credentials(&s, &c.tenant).await?;
    Ok(Json(ProvidersView {
        credentials: creds.into_iter().map(creds_view).collect(),
    }))
}

/// Set the tenant's route of a channel (overrides the operator's).
#[utoipa::path(put, path = "/v1/provider-routes/{channel}", tag = "providers",
    operation_id = "setProviderRoute", request_body = RouteBody,
    params(("channel" = String, Path, description = "email or sms")),
    responses(
        (status = 200, description = "The route", body = RouteView),
        (status = 400, description = "A bad entry, named", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_route(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(channel): PathParams<String>,
    JsonBody(b): JsonBody<RouteBody>,
) -> Result<Json<RouteView>, Problem> {
    let c = caller(&s, headers).await?;
    let r = api::ProviderRoute {
        channel,
        providers: b.providers,
        demoted: Vec::new(),
    };
    Ok(Json(route_view(
        ops::set_route(&s, &c.tenant, &c.actor, r).await?,
    )))
}

/// The tenant's route of a channel.
#[utoipa::path(get, path = "/v1/provider-routes/{channel}", tag = "providers",
    operation_id = "getProviderRoute",
    params(("channel" = String, Path, description = "email or sms")),
    responses(
        (status = 200, description = "The route", body = RouteView),
        (status = 404, description = "None: the operator's applies", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_route(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(channel): PathParams<String>,
) -> Result<Json<RouteView>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(route_view(ops::route(&s, &c.tenant, &channel).await?)))
}

/// Remove the tenant's route of a channel: the operator's applies.
#[utoipa::path(delete, path = "/v1/provider-routes/{channel}", tag = "providers",
    operation_id = "deleteProviderRoute",
    params(("channel" = String, Path, description = "email or sms")),
    responses(
        (status = 200, description = "The removed route", body = RouteView),
        (status = 404, description = "None", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_route(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(channel): PathParams<String>,
) -> Result<Json<RouteView>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(route_view(
        ops::delete_route(&s, &c.tenant, &c.actor, &channel).await?,
    )))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        put_credentials,
        get_credentials,
        delete_credentials,
        list,
        put_route,
        get_route,
        delete_route
    ),
    components(schemas(CredentialsBody, CredentialsView, ProvidersView, RouteBody, RouteView))
)]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/providers", get(list))
        .route(
            "/v1/providers/:provider/credentials",
            get(get_credentials)
                .put(put_credentials)
                .delete(delete_credentials),
        )
        .route(
            "/v1/provider-routes/:channel",
            get(get_route).put(put_route).delete(delete_route),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    #[test]
    fn bad_bodies_name_the_field() {
        match parse_json::<CredentialsBody>(br#"{"credentials":{"api_key":5}}"#) {
            Err(p) => assert_eq!(p.errors[0].field, "credentials.api_key"),
            Ok(_) => panic!("accepted"),
        }
        match parse_json::<RouteBody>(br#"{"providers":["twilio",3]}"#) {
            Err(p) => assert_eq!(p.errors[0].field, "providers[1]"),
            Ok(_) => panic!("accepted"),
        }
    }
}
