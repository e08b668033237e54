//! REST door to quiet-hour and calendar settings (docs/scheduling.md):
//! the tenant's default quiet hours (`/v1/quiet-hours`), a subscriber's
//! (`/v1/subscribers/{id}/quiet-hours`), and the tenant's calendar
//! (`/v1/calendar`). The operations are [`crate::settings`]; bad input
//! names the field (`rules[0].start`, `timezone`, `holidays[2]`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams};
use crate::preference_input::who;
use crate::preferences::{Interface, Who};
use crate::problem::Problem;
use crate::settings as ops;
use crate::state::GatewayState;

/// One quiet period.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// Channels it applies to (`email`, `sms`, `push`, ...); empty: all.
    #[serde(default)]
    pub channels: Vec<String>,
    /// `mon` ... `sun`, the days the period starts on; empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Local `HH:MM`; an end at or before the start runs over midnight.
    pub start: String,
    pub end: String,
    /// `hold` (send when the period ends) or `drop`.
    pub policy: String,
}

/// `PUT` body and answer of quiet hours.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursBody {
    /// `false`: no quiet hours (a subscriber's `false` overrides the tenant's).
    pub enabled: bool,
    /// IANA zone; absent: the recipient's.
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub rules: Vec<RuleBody>,
    /// Set by the server (1, 2, ...; 0: never set).
    #[serde(default)]
    pub version: u32,
}

/// `PUT` body and answer of the calendar.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarBody {
    /// IANA zone of recipients without one (absent: UTC).
    #[serde(default)]
    pub default_timezone: String,
    /// `YYYY-MM-DD` dates on which send windows stay closed.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Set by the server.
    #[serde(default)]
    pub version: u32,
}

fn quiet_api(b: QuietHoursBody, subscriber: &str) -> api::QuietHoursSettings {
    api::QuietHoursSettings {
        subscriber_id: subscriber.to_string(),
        enabled: b.enabled,
        timezone: b.timezone,
        rules: b
            .rules
            .into_iter()
            .map(|r| api::QuietHoursRule {
                channels: r.channels,
                days: r.days,
                start: r.start,
                end: r.end,
                policy: r.policy,
            })
            .collect(),
        version: 0,
    }
}

fn quiet_view(q: api::QuietHoursSettings) -> QuietHoursBody {
    QuietHoursBody {
        enabled: q.enabled,
        timezone: q.timezone,
        rules: q
            .rules
            .into_iter()
            .map(|r| RuleBody {
                channels: r.channels,
                days: r.days,
                start: r.start,
                end: r.end,
                policy: r.policy,
            })
            .collect(),
        version: q.version,
    }
}

fn calendar_view(c: api::TenantCalendar) -> CalendarBody {
    CalendarBody {
        default_timezone: c.default_timezone,
        holidays: c.holidays,
        version: c.version,
    }
}

async fn rest_who(s: &GatewayState, headers: HeaderMap) -> Result<Who, ApiError> {
    who(s, &MetadataMap::from_headers(headers), Interface::Rest).await
}

/// The tenant's default quiet hours.
#[utoipa::path(get, path = "/v1/quiet-hours", tag = "settings",
    operation_id = "getTenantQuietHours",
    responses((status = 200, description = "The setting (version 0: never set)", body = QuietHoursBody)))]
pub async fn get_tenant(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<QuietHoursBody>, Problem> {
    let who = rest_who(&s, headers).await?;
    Ok(Json(quiet_view(ops::tenant_quiet_hours(&s, &who).await?)))
}

/// Replaces the tenant's default quiet hours.
#[utoipa::path(put, path = "/v1/quiet-hours", tag = "settings",
    operation_id = "setTenantQuietHours",
    request_body = QuietHoursBody,
    responses((status = 200, description = "The setting as stored, with its version", body = QuietHoursBody)))]
pub async fn put_tenant(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<QuietHoursBody>,
) -> Result<Json<QuietHoursBody>, Problem> {
    let who = rest_who(&s, headers).await?;
    let q = ops::set_tenant_quiet_hours(&s, &who, quiet_api(b, "")).await?;
    Ok(Json(quiet_view(q)))
}

/// A subscriber's own quiet hours (version 0: none; the tenant's apply).
#[utoipa::path(get, path = "/v1/subscribers/{id}/quiet-hours", tag = "settings",
    operation_id = "getSubscriberQuietHours",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    responses((status = 200, description = "The setting", body = QuietHoursBody)))]
pub async fn get_subscriber(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<QuietHoursBody>, Problem> {
    let who = rest_who(&s, headers).await?;
    Ok(Json(quiet_view(
        ops::subscriber_quiet_hours(&s, &who, &id).await?,
    )))
}

/// Replaces a subscriber's quiet hours (they override the tenant's whole).
#[utoipa::path(put, path = "/v1/subscribers/{id}/quiet-hours", tag = "settings",
    operation_id = "setSubscriberQuietHours",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body = QuietHoursBody,
    responses((status = 200, description = "The setting as stored", body = QuietHoursBody)))]
pub async fn put_subscriber(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<QuietHoursBody>,
) -> Result<Json<QuietHoursBody>, Problem> {
    let who = rest_who(&s, headers).await?;
    let q = ops::set_subscriber_quiet_hours(&s, &who, &id, quiet_api(b, &id)).await?;
    Ok(Json(quiet_view(q)))
}

/// The tenant's calendar.
#[utoipa::path(get, path = "/v1/calendar", tag = "settings",
    operation_id = "getCalendar",
    responses((status = 200, description = "The calendar (version 0: never set)", body = CalendarBody)))]
pub async fn get_calendar(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<CalendarBody>, Problem> {
    let who = rest_who(&s, headers).await?;
    Ok(Json(calendar_view(ops::calendar(&s, &who).await?)))
}

/// Replaces the tenant's calendar.
#[utoipa::path(put, path = "/v1/calendar", tag = "settings",
    operation_id = "setCalendar",
    request_body = CalendarBody,
    responses((status = 200, description = "The calendar as stored", body = CalendarBody)))]
pub async fn put_calendar(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<CalendarBody>,
) -> Result<Json<CalendarBody>, Problem> {
    let who = rest_who(&s, headers).await?;
    let input = api::TenantCalendar {
        default_timezone: b.default_timezone,
        holidays: b.holidays,
        version: 0,
    };
    Ok(Json(calendar_view(
        ops::set_calendar(&s, &who, input).await?,
    )))
}

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        get_tenant,
        put_tenant,
        get_subscriber,
        put_subscriber,
        get_calendar,
        put_calendar
    ),
    components(schemas(RuleBody, QuietHoursBody, CalendarBody))
)]
pub struct Paths;

/// The routes (merged into `rest::routes`, behind its access guard).
pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/quiet-hours", get(get_tenant).put(put_tenant))
        .route(
            "/v1/subscribers/:id/quiet-hours",
            get(get_subscriber).put(put_subscriber),
        )
        .route("/v1/calendar", get(get_calendar).put(put_calendar))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    #[test]
    fn bad_bodies_name_the_field() {
        for (body, field) in [
            (&br#"{"rules":[]}"#[..], "enabled"),
            (
                br#"{"enabled":true,"rules":[{"start":"22:00","end":"07:00"}]}"#,
                "rules[0].policy",
            ),
            (br#"{"enabled":true,"quiet":1}"#, "quiet"),
        ] {
            match parse_json::<QuietHoursBody>(body) {
                Err(p) => assert_eq!(p.errors[0].field, field),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
            }
        }
        match parse_json::<CalendarBody>(br#"{"holidays":"2026-12-25"}"#) {
            Err(p) => assert_eq!(p.errors[0].field, "holidays"),
            Ok(_) => panic!("accepted"),
        }
    }
}
