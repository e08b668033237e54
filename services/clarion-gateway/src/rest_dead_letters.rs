//! REST door to the dead-letter queue: list (cursor-paginated), show,
//! retry, discard. The same functions as `DeadLetterService` behind them.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_domain::Violations;
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::ApiError;
use crate::extract::{OptionalJsonBody, PathParams, QueryParams};
use crate::pagination::{List, PageParams};
use crate::problem::Problem;
use crate::state::GatewayState;
use crate::{auth, dead_letter};

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(list, show, retry, discard))]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/dead-letters", get(list))
        .route("/v1/dead-letters/:id", get(show))
        .route("/v1/dead-letters/:id/retry", post(retry))
        .route("/v1/dead-letters/:id/discard", post(discard))
}

/// A notification whose run stopped for good, with every attempt made.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    pub notification_id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    pub subscriber_id: String,
    /// The step the run stopped at (where a retry re-enters).
    pub step: String,
    pub reason: String,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub dead_lettered_at_ms: i64,
    pub attempts: Vec<DeadLetterAttempt>,
}

/// One delivery attempt of a dead letter.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterAttempt {
    pub attempt_id: String,
    pub step: String,
    pub channel: String,
    pub provider: String,
    pub at_ms: i64,
    pub error: String,
    pub retryable: bool,
}

/// A page of dead letters, in the order their notifications were created.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl From<api::DeadLetter> for DeadLetter {
    fn from(d: api::DeadLetter) -> Self {
        DeadLetter {
            notification_id: d.notification_id,
            workflow_id: d.workflow_id,
            workflow_version: d.workflow_version,
            subscriber_id: d.subscriber_id,
            step: d.step,
            reason: d.reason,
            dead_lettered_at_ms: d.dead_lettered_at_ms,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| DeadLetterAttempt {
                    attempt_id: a.attempt_id,
                    step: a.step,
                    channel: a.channel,
                    provider: a.provider,
                    at_ms: a.at_ms,
                    error: a.error,
                    retryable: a.retryable,
                })
                .collect(),
        }
    }
}

/// Filters of the dead-letter list.
#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct Filters {
    /// Only this workflow's.
    workflow_id: Option<String>,
    /// Only those with an attempt on this channel (`email`, `sms`, ...).
    channel: Option<String>,
    /// Only those whose reason contains this text.
    reason: Option<String>,
    /// Only those dead-lettered at least this many milliseconds ago.
    #[param(minimum = 0)]
    older_than_ms: Option<i64>,
}

/// Body of retry and discard (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why, for the notification's history.
    #[serde(default)]
    pub note: String,
}

async fn caller(s: &GatewayState, headers: HeaderMap) -> Result<auth::Caller, ApiError> {
    auth::tenant(s, &MetadataMap::from_headers(headers)).await
}

/// List the tenant's dead letters.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead-letters",
    operation_id = "listDeadLetters",
    params(Filters, PageParams),
    responses(
        (status = 200, description = "A page of dead letters, oldest notifications first", body = DeadLetterPage),
    )
)]
async fn list(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    QueryParams(filters): QueryParams<Filters>,
    QueryParams(paging): QueryParams<PageParams>,
) -> Result<Json<DeadLetterPage>, Problem> {
    let caller = caller(&s, headers).await?;
    if filters.older_than_ms.is_some_and(|ms| ms < 0) {
        return Err(Violations::single("older_than_ms", "must be 0 or more").into());
    }
    let list = List {
        tenant: caller.tenant.as_str(),
        name: "dead-letters",
    };
    let page = list.page(&paging)?;
    let f = api::ListDeadLettersRequest {
        workflow_id: filters.workflow_id.unwrap_or_default(),
        channel: filters.channel.unwrap_or_default(),
        reason_contains: filters.reason.unwrap_or_default(),
        older_than_ms: filters.older_than_ms.unwrap_or_default(),
        limit: 0,
    };
    let (items, next) = dead_letter::page(&s, &caller.tenant, &f, &page).await?;
    Ok(Json(DeadLetterPage {
        dead_letters: items.into_iter().map(DeadLetter::from).collect(),
        next_cursor: next.map(|p| list.cursor(&p)),
    }))
}

/// Show one dead letter.
#[utoipa::path(
    get,
    path = "/v1/dead-letters/{id}",
    tag = "dead-letters",
    operation_id = "getDeadLetter",
    params(("id" = String, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 404, description = "Not in this tenant's dead-letter queue", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<DeadLetter>, Problem> {
    let caller = caller(&s, headers).await?;
    let d = dead_letter::show(&s, &caller.tenant, &id).await?;
    Ok(Json(d.into()))
}

async fn act(
    s: GatewayState,
    headers: HeaderMap,
    id: String,
    body: Option<ActionBody>,
    retry: bool,
) -> Response {
    let run = async {
        let caller = caller(&s, headers).await?;
        let action = api::DeadLetterAction {
            notification_id: id,
            note: body.unwrap_or_default().note,
        };
        dead_letter::act(&s, &caller.tenant, caller.actor, &action, retry).await
    };
    match run.await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// Retry a dead letter from the step it stopped at.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/retry",
    tag = "dead-letters",
    operation_id = "retryDeadLetter",
    params(("id" = String, Path, description = "Notification id")),
    request_body(content = Option<ActionBody>, description = "An optional note"),
    responses(
        (status = 202, description = "The retry is recorded; the run resumes"),
        (status = 404, description = "Not in this tenant's dead-letter queue", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retry(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    OptionalJsonBody(body): OptionalJsonBody<ActionBody>,
) -> Response {
    act(s, headers, id, body, true).await
}

/// Discard a dead letter (it leaves the queue, recorded in its history).
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/discard",
    tag = "dead-letters",
    operation_id = "discardDeadLetter",
    params(("id" = String, Path, description = "Notification id")),
    request_body(content = Option<ActionBody>, description = "An optional note"),
    responses(
        (status = 202, description = "The discard is recorded"),
        (status = 404, description = "Not in this tenant's dead-letter queue", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn discard(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    OptionalJsonBody(body): OptionalJsonBody<ActionBody>,
) -> Response {
    act(s, headers, id, body, false).await
}
