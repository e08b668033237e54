//! REST door to `NotificationService`: trigger a workflow, read a
//! notification and report an app's engagement with nothing but curl. The
//! handlers build the gRPC request and call the same code as the gRPC
//! service, so validation, idempotency and errors cannot differ between
//! the two doors.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_domain::flow::Engagement;
use clarion_domain::Violations;
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::metadata::MetadataMap;
use tonic::Request;
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::notification::NotificationApi;
use crate::notification_search;
use crate::problem::Problem;
use crate::state::GatewayState;

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(trigger, search, get_notification, engagement))]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/notifications", post(trigger).get(search))
        .route("/v1/notifications/:id", get(get_notification))
        .route("/v1/notifications/:id/engagement", post(engagement))
}

/// Body of `POST /v1/notifications`: a workflow (or a business event whose
/// workflows all start) for each recipient.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "workflow_id": "welcome",
    "recipients": [{"subscriber_id": "ana", "email": "ana@example.com", "locale": "fr-CA"}],
    "payload": {"name": "Ana"}
}))]
pub struct TriggerBody {
    /// The workflow to start (or set `event`).
    #[serde(default)]
    pub workflow_id: String,
    /// A business event name instead of a workflow id: every workflow
    /// triggered by it starts.
    #[serde(default)]
    pub event: String,
    /// At least one (a request starts a notification per recipient and workflow).
    #[serde(default)]
    #[schema(required = true, min_items = 1)]
    pub recipients: Vec<RecipientBody>,
    /// Any JSON object; templates see it as `payload`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Also accepted as the `Idempotency-Key` header (which wins).
    #[serde(default)]
    pub idempotency_key: String,
    /// Send no earlier than this (RFC 3339, at most 366 days ahead; a past
    /// time sends at once). Not with `delay`.
    #[serde(default)]
    #[schema(example = "2026-03-09T09:00:00-04:00")]
    pub send_at: String,
    /// Send this long after the request is accepted (`90m`, `2h`, `1d`; at
    /// most 366 days). Not with `send_at`.
    #[serde(default)]
    #[schema(example = "2h")]
    pub delay: String,
    /// Bypasses quiet hours (and digests); the history notes it.
    #[serde(default)]
    pub critical: bool,
}

/// One recipient: a subscriber id, and contact details that override the
/// stored subscriber's for this notification.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    #[schema(min_length = 1)]
    pub subscriber_id: String,
    #[serde(default)]
    pub email: String,
    /// E.164, e.g. `+15145550123`.
    #[serde(default)]
    pub phone: String,
    /// BCP 47, e.g. `fr-CA`.
    #[serde(default)]
    pub locale: String,
    /// IANA name, e.g. `America/Toronto`.
    #[serde(default)]
    pub timezone: String,
    #[serde(default)]
    pub webhook_url: String,
}

/// What a trigger started.
#[derive(Serialize, ToSchema)]
pub struct Triggered {
    /// One notification per recipient and workflow.
    pub notifications: Vec<TriggeredNotification>,
    /// True when this answers a repeat of an idempotency key.
    pub replay: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TriggeredNotification {
    pub notification_id: String,
    pub workflow_id: String,
    pub subscriber_id: String,
}

/// A notification: its status and every event of its history.
#[derive(Serialize, ToSchema)]
pub struct Notification {
    pub notification_id: String,
    pub workflow_id: String,
    pub subscriber_id: String,
    /// `triggered`, `routed`, `dispatching`, `sent`, `delivered`, `failed`,
    /// `retrying`, `dead_lettered`, `cancelled` or `suppressed`.
    pub status: String,
    pub events: Vec<NotificationEvent>,
}

/// One event of a notification's history.
#[derive(Serialize, ToSchema)]
pub struct NotificationEvent {
    pub event_id: String,
    /// E.g. `clarion.notification.sent.v1`.
    pub event_type: String,
    pub occurred_at_ms: i64,
    /// The event's payload as JSON.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// What an app reports about a notification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EngagementBody {
    pub kind: EngagementKind,
    /// The delivery attempt it is about, when known.
    #[serde(default)]
    pub attempt_id: String,
}

#[derive(Debug, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum EngagementKind {
    Acknowledged,
    Read,
    Opened,
    Clicked,
}

impl EngagementKind {
    fn domain(self) -> Engagement {
        match self {
            EngagementKind::Acknowledged => Engagement::Acknowledged,
            EngagementKind::Read => Engagement::Read,
            EngagementKind::Opened => Engagement::Opened,
            EngagementKind::Clicked => Engagement::Clicked,
        }
    }
}

/// A request with the HTTP headers as gRPC metadata (the API key travels
/// in `authorization` or `x-api-key` either way).
pub(crate) fn request<T>(headers: HeaderMap, message: T) -> Request<T> {
    Request::from_parts(
        MetadataMap::from_headers(headers),
        Default::default(),
        message,
    )
}

fn to_api(
    b: TriggerBody,
    idempotency_header: Option<String>,
) -> Result<api::TriggerRequest, ApiError> {
    let payload_json = match b.payload {
        None | Some(Value::Null) => String::new(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return Err(Violations::single("payload", "must be a JSON object").into()),
    };
    Ok(api::TriggerRequest {
        workflow_id: b.workflow_id,
        event: b.event,
        recipients: b
            .recipients
            .into_iter()
            .map(|r| api::Recipient {
                subscriber_id: r.subscriber_id,
                email: r.email,
                phone: r.phone,
                locale: r.locale,
                timezone: r.timezone,
                webhook_url: r.webhook_url,
            })
            .collect(),
        payload_json,
        idempotency_key: idempotency_header.unwrap_or(b.idempotency_key),
        send_at: b.send_at,
        delay: b.delay,
        critical: b.critical,
    })
}

/// Trigger a workflow (or an event's workflows) for recipients.
///
/// A repeat with the same idempotency key (the `Idempotency-Key` header
/// or `idempotency_key`) within the key's lifetime answers 200 with the
/// original notifications and `replay: true`, and starts nothing; the same
/// key with other parameters is a 400 naming `idempotency_key`.
#[utoipa::path(
    post,
    path = "/v1/notifications",
    tag = "notifications",
    operation_id = "triggerNotification",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: a repeat within the key's lifetime (24 h by default) answers 200 with the original notifications and starts nothing.")),
    request_body = TriggerBody,
    responses(
        (status = 202, description = "Accepted: the notifications started (durably in the log)", body = Triggered),
        (status = 200, description = "A repeat of an idempotency key: the original answer", body = Triggered),
    )
)]
pub async fn trigger(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<TriggerBody>,
) -> Result<Response, Problem> {
    let idempotency = headers
        .get(crate::idempotency::HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let req = to_api(body, idempotency)?;
    let r = NotificationApi(s).trigger(request(headers, req)).await?;
    let status = if r.replay {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let notifications = r
        .notifications
        .into_iter()
        .map(|n| TriggeredNotification {
            notification_id: n.notification_id,
            workflow_id: n.workflow_id,
            subscriber_id: n.subscriber_id,
        })
        .collect();
    let answer = Triggered {
        notifications,
        replay: r.replay,
    };
    Ok((status, Json(answer)).into_response())
}

/// Search the tenant's notifications, newest first: by id, subscriber,
/// workflow, status and creation time (at most 366 days).
///
/// One request examines at most 20,000 notifications: a rare match over a
/// busy range answers with what it found so far, `scanned`,
/// `searched_back_to_ms` and a `next_cursor` to go on (pass it with the
/// same filters). `exhausted_range` says the whole range was searched.
/// Notifications accepted before the search index existed are found by
/// `id` and `subscriber` only.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "notifications",
    operation_id = "searchNotifications",
    params(notification_search::Query),
    responses(
        (status = 200, description = "A page of notifications, newest first", body = notification_search::Page),
        (status = 400, description = "A filter is malformed: `errors[].field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn search(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<notification_search::Query>,
) -> Result<Json<notification_search::Page>, Problem> {
    let caller = crate::auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let filters =
        notification_search::Filters::parse(&query, s.clock.now_ms()).map_err(ApiError::from)?;
    Ok(Json(
        notification_search::search(&s, &caller, &filters).await?,
    ))
}

/// A notification's status and history.
#[utoipa::path(
    get,
    path = "/v1/notifications/{id}",
    tag = "notifications",
    operation_id = "getNotification",
    params(("id" = String, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The notification", body = Notification),
        (status = 404, description = "No such notification for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_notification(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<Notification>, Problem> {
    let req = request(
        headers,
        api::GetNotificationRequest {
            notification_id: id,
        },
    );
    let n = NotificationApi(s).get(req).await?;
    Ok(Json(Notification {
        notification_id: n.notification_id,
        workflow_id: n.workflow_id,
        subscriber_id: n.subscriber_id,
        status: n.status,
        events: n
            .events
            .into_iter()
            .map(|e| NotificationEvent {
                event_id: e.event_id,
                event_type: e.event_type,
                occurred_at_ms: e.occurred_at_ms,
                detail: serde_json::from_str(&e.detail_json)
                    .unwrap_or_else(|_| Value::Object(Default::default())),
            })
            .collect(),
    }))
}

/// Report an app's engagement with a notification (acknowledged, read,
/// opened, clicked): recorded in its history, where waiting workflow steps
/// see it.
#[utoipa::path(
    post,
    path = "/v1/notifications/{id}/engagement",
    tag = "notifications",
    operation_id = "recordEngagement",
    params(("id" = String, Path, description = "Notification id")),
    request_body = EngagementBody,
    responses(
        (status = 202, description = "Recorded"),
        (status = 404, description = "No such notification for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn engagement(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<EngagementBody>,
) -> Result<StatusCode, Problem> {
    let caller = crate::auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    crate::notification::record_engagement(
        &s,
        &caller.tenant,
        &id,
        &b.attempt_id,
        b.kind.domain().as_str(),
        "app",
        caller.actor,
    )
    .await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    fn field(body: &str) -> String {
        let r = parse_json::<TriggerBody>(body.as_bytes())
            .map_err(|p| p.errors[0].field.clone())
            .and_then(|b| {
                to_api(b, None).map_err(|e| match e {
                    ApiError::Invalid(v) => v.0[0].field.clone(),
                    other => panic!("{other:?}"),
                })
            });
        r.expect_err("a violation")
    }

    #[test]
    fn bodies_map_to_the_grpc_request_and_bad_ones_name_the_field() {
        let b: TriggerBody = parse_json(
            br#"{"workflow_id":"welcome","recipients":[{"subscriber_id":"ana","locale":"fr-CA"}],"payload":{"name":"Ana"}}"#,
        )
        .unwrap();
        let r = to_api(b, Some("k1".into())).unwrap();
        assert_eq!(r.workflow_id, "welcome");
        assert_eq!(r.recipients[0].locale, "fr-CA");
        assert_eq!(r.payload_json, r#"{"name":"Ana"}"#);
        assert_eq!(r.idempotency_key, "k1");

        assert_eq!(field(r#"{"workflow":"x"}"#), "workflow");
        assert_eq!(
            field(r#"{"recipients":[{"email":"a@b.c"}]}"#),
            "recipients[0].subscriber_id"
        );
        assert_eq!(field(r#"{"workflow_id":"w","payload":[1]}"#), "payload");
        assert_eq!(field("{not json"), "body");
        assert_eq!(field(""), "body");
        // An engagement kind outside the list names `kind`.
        let p = parse_json::<EngagementBody>(br#"{"kind":"delivered"}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "kind");
    }
}
