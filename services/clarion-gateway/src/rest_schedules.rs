//! REST door to recurring reminders (docs/scheduling.md): create and list
//! (`/v1/schedules`), read and delete one, pause and resume. The operations
//! are [`crate::schedules`], which `ScheduleService` calls too; bad input
//! names the field (`rrule`, `cron`, `timezone`, `workflow_id`, `end_at`,
//! `subscriber_ids[2]`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_domain::{schedule, Violations};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::pagination::PageParams;
use crate::preference_input::who;
use crate::preferences::{Interface, Who};
use crate::problem::Problem;
use crate::schedules as ops;
use crate::state::GatewayState;

/// `POST /v1/schedules`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Optional (generated when absent); the same id again replaces the schedule.
    #[serde(default)]
    pub schedule_id: String,
    pub workflow_id: String,
    /// 1 to 1000 subscribers.
    pub subscriber_ids: Vec<String>,
    /// RFC 5545 RRULE, e.g. `FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0` (or `cron`).
    #[serde(default)]
    pub rrule: String,
    /// Cron, 5 fields (or 6, seconds first), e.g. `0 9 * * MON` (or `rrule`).
    #[serde(default)]
    pub cron: String,
    /// IANA zone; absent: the subscriber's, else the tenant's default, else UTC.
    #[serde(default)]
    pub timezone: String,
    /// RFC 3339; absent: now.
    #[serde(default)]
    pub start_at: String,
    /// RFC 3339; absent: no end besides the rule's COUNT/UNTIL.
    #[serde(default)]
    pub end_at: String,
    /// Any JSON object; the workflow's templates see it as `payload`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// `latest_once` (default) or `skip`: occurrences missed while down.
    #[serde(default)]
    pub catch_up: String,
}

#[derive(Serialize, ToSchema)]
pub struct OccurrenceView {
    pub at_ms: i64,
    /// RFC 3339 with the zone's offset.
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriberScheduleView {
    pub subscriber_id: String,
    /// `active`, `paused`, `done` or `pending`.
    pub state: String,
    /// The zone the recurrence is read in.
    pub timezone: String,
    pub next_at_ms: i64,
    pub next_at: String,
    pub last_occurrence_at_ms: i64,
    pub last_notification_id: String,
    pub fired: u64,
    pub upcoming: Vec<OccurrenceView>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleView {
    pub schedule_id: String,
    pub workflow_id: String,
    pub rrule: String,
    pub cron: String,
    pub timezone: String,
    pub start_at: String,
    pub end_at: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub catch_up: String,
    pub subscribers: Vec<SubscriberScheduleView>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/schedules/{id}` options.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Next occurrences shown per subscriber (default 5, at most 100).
    pub upcoming: Option<u32>,
}

fn view(s: api::Schedule) -> ScheduleView {
    ScheduleView {
        schedule_id: s.schedule_id,
        workflow_id: s.workflow_id,
        rrule: s.rrule,
        cron: s.cron,
        timezone: s.timezone,
        start_at: s.start_at,
        end_at: s.end_at,
        payload: serde_json::from_str(&s.payload_json).unwrap_or(Value::Null),
        catch_up: s.catch_up,
        subscribers: s
            .subscribers
            .into_iter()
            .map(|x| SubscriberScheduleView {
                subscriber_id: x.subscriber_id,
                state: x.state,
                timezone: x.timezone,
                next_at_ms: x.next_at_ms,
                next_at: x.next_at,
                last_occurrence_at_ms: x.last_occurrence_at_ms,
                last_notification_id: x.last_notification_id,
                fired: x.fired,
                upcoming: x
                    .upcoming
                    .into_iter()
                    .map(|o| OccurrenceView {
                        at_ms: o.at_ms,
                        at: o.at,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn to_api(b: CreateBody) -> Result<api::CreateScheduleRequest, ApiError> {
    let payload_json = match b.payload {
        None | Some(Value::Null) => String::new(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return Err(Violations::single("payload", "must be a JSON object").into()),
    };
    Ok(api::CreateScheduleRequest {
        schedule_id: b.schedule_id,
        workflow_id: b.workflow_id,
        subscriber_ids: b.subscriber_ids,
        rrule: b.rrule,
        cron: b.cron,
        timezone: b.timezone,
        start_at: b.start_at,
        end_at: b.end_at,
        payload_json,
        catch_up: b.catch_up,
    })
}

async fn rest_who(s: &GatewayState, headers: HeaderMap) -> Result<Who, ApiError> {
    who(s, &MetadataMap::from_headers(headers), Interface::Rest).await
}

/// Creates (or replaces) a schedule: one per subscriber, each read in its
/// zone. Answers with each subscriber's next occurrences.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    operation_id = "createSchedule",
    request_body = CreateBody,
    responses((status = 201, description = "The schedule as the router has it", body = ScheduleView)))]
pub async fn create(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<ScheduleView>), Problem> {
    let who = rest_who(&s, headers).await?;
    let created = ops::create(&s, &who, to_api(b)?).await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// The tenant's schedules, by id.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    operation_id = "listSchedules",
    params(PageParams),
    responses((status = 200, description = "A page of schedules", body = ScheduleList)))]
pub async fn list(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<PageParams>,
) -> Result<Json<ScheduleList>, Problem> {
    let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let (schedules, next_cursor) = ops::list(&s, &caller.tenant, &q).await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// One schedule: each subscriber's state and next occurrences.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules",
    operation_id = "getSchedule",
    params(("id" = String, Path, description = "Schedule id"), GetParams),
    responses((status = 200, description = "The schedule", body = ScheduleView)))]
pub async fn get_one(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<GetParams>,
) -> Result<Json<ScheduleView>, Problem> {
    let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let n = q.upcoming.unwrap_or(ops::DEFAULT_UPCOMING);
    Ok(Json(view(ops::get(&s, &caller.tenant, &id, n).await?)))
}

/// Deletes a schedule (for all its subscribers): nothing fires any more.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules",
    operation_id = "deleteSchedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_one(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, Problem> {
    let who = rest_who(&s, headers).await?;
    ops::change_state(&s, &who, &id, schedule::DELETED).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule: no occurrence fires until it is resumed.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules",
    operation_id = "pauseSchedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses((status = 200, description = "The paused schedule", body = ScheduleView)))]
pub async fn pause(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<ScheduleView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let v = ops::change_state(&s, &who, &id, schedule::PAUSED).await?;
    Ok(Json(view(v.unwrap_or_default())))
}

/// Resumes a schedule from its next occurrence after now (the paused time
/// is not caught up).
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules",
    operation_id = "resumeSchedule",
    params(("id" = String, Path, description = "Schedule id")),
    responses((status = 200, description = "The resumed schedule", body = ScheduleView)))]
pub async fn resume(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<ScheduleView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let v = ops::change_state(&s, &who, &id, schedule::ACTIVE).await?;
    Ok(Json(view(v.unwrap_or_default())))
}

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(create, list, get_one, delete_one, pause, resume),
    components(schemas(
        CreateBody,
        ScheduleView,
        SubscriberScheduleView,
        OccurrenceView,
        ScheduleList
    ))
)]
pub struct Paths;

/// The routes (merged into `rest::routes`, behind its access guard).
pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/schedules", get(list).post(create))
        .route("/v1/schedules/:id", get(get_one).delete(delete_one))
        .route("/v1/schedules/:id/pause", post(pause))
        .route("/v1/schedules/:id/resume", post(resume))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    #[test]
    fn bad_bodies_name_the_field() {
        for (body, field) in [
            (&br#"{"subscriber_ids":["a"]}"#[..], "workflow_id"),
            (br#"{"workflow_id":"w"}"#, "subscriber_ids"),
            (
                br#"{"workflow_id":"w","subscriber_ids":"a"}"#,
                "subscriber_ids",
            ),
            (
                br#"{"workflow_id":"w","subscriber_ids":["a"],"every":"day"}"#,
                "every",
            ),
        ] {
            match parse_json::<CreateBody>(body) {
                Err(p) => assert_eq!(p.errors[0].field, field),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
            }
        }
        let b: CreateBody =
            parse_json(br#"{"workflow_id":"w","subscriber_ids":["a"],"payload":[1]}"#).unwrap();
        match to_api(b) {
            Err(ApiError::Invalid(v)) => assert_eq!(v.0[0].field, "payload"),
            _ => panic!("accepted a payload that is not an object"),
        }
    }
}
