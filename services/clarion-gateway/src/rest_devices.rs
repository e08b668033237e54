//! REST door to the device registry (docs/push.md): a subscriber's devices,
//! registered, listed, rotated and revoked through the operations of
//! [`crate::devices`] that `DeviceService` calls too. A subscriber token
//! (`access::SUBSCRIBER_REST`) reaches its own subscriber's devices only.
//! No answer carries a token: a device shows its `token_fingerprint`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::devices;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::preference_input::who;
use crate::preferences::{Interface, Who};
use crate::problem::Problem;
use crate::state::GatewayState;

/// `POST /v1/subscribers/{id}/devices`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// A configured app of the tenant.
    pub app_id: String,
    /// `ios`, `android` or `web` (one of the app's platforms).
    pub platform: String,
    /// The APNs device token (hexadecimal) or FCM registration token, at
    /// most 4096 bytes. Never shown again.
    pub token: String,
    /// `apns` or `fcm`; default: `apns` on ios, `fcm` otherwise.
    #[serde(default)]
    pub provider: String,
    /// BCP 47, e.g. `fr-CA`.
    #[serde(default)]
    pub locale: String,
    /// IANA name, e.g. `America/Toronto`.
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub app_version: String,
}

/// `POST /v1/subscribers/{id}/devices/{device_id}/rotate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// The token the app got in place of the old one.
    pub new_token: String,
}

/// A registered device (never its token).
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    pub subscriber_id: String,
    pub app_id: String,
    pub platform: String,
    pub provider: String,
    pub locale: String,
    pub timezone: String,
    pub app_version: String,
    pub registered_at_ms: i64,
    pub last_seen_at_ms: i64,
    /// `active`, `revoked` or `expired` (not seen for 270 days).
    pub status: String,
    /// `user`, `operator`, `moved`, `unregistered`, `bad_token`, `expired`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revoked_reason: String,
    /// The provider's answer, or who revoked it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revoked_detail: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub revoked_at_ms: i64,
    /// The last 6 hex digits of the token's keyed hash.
    pub token_fingerprint: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// `GET /v1/subscribers/{id}/devices` options.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Also revoked and expired devices.
    pub include_inactive: Option<bool>,
}

fn view(d: api::Device) -> DeviceView {
    DeviceView {
        device_id: d.device_id,
        subscriber_id: d.subscriber_id,
        app_id: d.app_id,
        platform: d.platform,
        provider: d.provider,
        locale: d.locale,
        timezone: d.timezone,
        app_version: d.app_version,
        registered_at_ms: d.registered_at_ms,
        last_seen_at_ms: d.last_seen_at_ms,
        status: d.status,
        revoked_reason: d.revoked_reason,
        revoked_detail: d.revoked_detail,
        revoked_at_ms: d.revoked_at_ms,
        token_fingerprint: d.token_fingerprint,
    }
}

async fn rest_who(s: &GatewayState, headers: HeaderMap) -> Result<Who, ApiError> {
    who(s, &MetadataMap::from_headers(headers), Interface::Rest).await
}

/// Registers a device of the subscriber (the same token again is the same
/// device, refreshed; a token registered to another subscriber moves, and
/// that device is revoked). Bad input names the field: `platform`, `token`
/// (empty, over 4096 bytes), `app_id` (unknown app).
#[utoipa::path(post, path = "/v1/subscribers/{id}/devices", tag = "devices",
    operation_id = "registerDevice",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body = RegisterBody,
    responses((status = 201, description = "The device as registered", body = DeviceView)))]
pub async fn register(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<RegisterBody>,
) -> Result<(StatusCode, Json<DeviceView>), Problem> {
    let who = rest_who(&s, headers).await?;
    let r = api::RegisterDeviceRequest {
        subscriber_id: id,
        app_id: b.app_id,
        platform: b.platform,
        token: b.token,
        provider: b.provider,
        locale: b.locale,
        timezone: b.timezone,
        app_version: b.app_version,
    };
    let d = devices::register(&s, &who, &r).await?;
    Ok((StatusCode::CREATED, Json(view(d))))
}

/// The subscriber's active devices (`include_inactive=true`: revoked and
/// expired ones too).
#[utoipa::path(get, path = "/v1/subscribers/{id}/devices", tag = "devices",
    operation_id = "listDevices",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"), ListParams),
    responses((status = 200, description = "The devices, oldest registration first", body = DeviceList)))]
pub async fn list(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<ListParams>,
) -> Result<Json<DeviceList>, Problem> {
    let who = rest_who(&s, headers).await?;
    let devices = devices::list(&s, &who, &id, q.include_inactive.unwrap_or(false)).await?;
    Ok(Json(DeviceList {
        devices: devices.into_iter().map(view).collect(),
    }))
}

/// Replaces a device's token; the device keeps its id.
#[utoipa::path(post, path = "/v1/subscribers/{id}/devices/{device_id}/rotate", tag = "devices",
    operation_id = "rotateDevice",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"),
        ("device_id" = String, Path, description = "Device id")),
    request_body = RotateBody,
    responses((status = 200, description = "The device with its new token", body = DeviceView)))]
pub async fn rotate(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams((id, device_id)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<RotateBody>,
) -> Result<Json<DeviceView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let d = devices::rotate(&s, &who, &id, &device_id, &b.new_token).await?;
    Ok(Json(view(d)))
}

/// Revokes a device: reason `user` with a subscriber token, `operator`
/// with an API key. Revoking a revoked device changes nothing.
#[utoipa::path(delete, path = "/v1/subscribers/{id}/devices/{device_id}", tag = "devices",
    operation_id = "revokeDevice",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"),
        ("device_id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The revoked device", body = DeviceView)))]
pub async fn revoke(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams((id, device_id)): PathParams<(String, String)>,
) -> Result<Json<DeviceView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let d = devices::revoke(&s, &who, &id, &device_id).await?;
    Ok(Json(view(d)))
}

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(register, list, rotate, revoke),
    components(schemas(RegisterBody, RotateBody, DeviceView, DeviceList))
)]
pub struct Paths;

/// The routes (merged into `rest::routes`, behind its access guard).
pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/subscribers/:id/devices", get(list).post(register))
        .route(
            "/v1/subscribers/:id/devices/:device_id/rotate",
            post(rotate),
        )
        .route("/v1/subscribers/:id/devices/:device_id", delete(revoke))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{parse_json, parse_query};

    #[test]
    fn bad_bodies_and_queries_name_the_field() {
        for (body, field) in [
            (&br#"{"platform":"ios","token":"ab"}"#[..], "app_id"),
            (br#"{"app_id":"a","platform":"ios","token":7}"#, "token"),
            (
                br#"{"app_id":"a","platform":"ios","token":"ab","colour":1}"#,
                "colour",
            ),
        ] {
            match parse_json::<RegisterBody>(body) {
                Err(p) => assert_eq!(p.errors[0].field, field),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
            }
        }
        match parse_json::<RotateBody>(br#"{"token":"ab"}"#) {
            Err(p) => assert_eq!(p.errors[0].field, "token"),
            Ok(_) => panic!("accepted"),
        }
        match parse_query::<ListParams>("include_inactive=maybe") {
            Err(p) => assert_eq!(p.errors[0].field, "include_inactive"),
            Ok(_) => panic!("accepted"),
        }
        let q: ListParams = parse_query("include_inactive=true").unwrap();
        assert_eq!(q.include_inactive, Some(true));
    }
}
