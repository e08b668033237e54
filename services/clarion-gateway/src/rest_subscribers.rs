//! REST door to subscribers: upsert and read one (the same code as
//! `SubscriberService`), and list a subscriber's notifications, newest
//! first, from the router's index (`clarion_runtime::subscriber_index`).

use std::ops::Bound;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clarion_domain::{Id, Violations};
use clarion_proto::api;
use clarion_runtime::projector::{history, status_of};
use clarion_runtime::subscriber_index::{self, Entry};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::pagination::{List, PageParams};
use crate::preferences::{Interface, Who};
use crate::problem::Problem;
use crate::rest_notifications::request;
use crate::state::GatewayState;
use crate::subscriber::SubscriberApi;

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(upsert_subscriber, get_subscriber, list_notifications))]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route(
            "/v1/subscribers/:id",
            get(get_subscriber)
                .put(upsert_subscriber)
                // GDPR erasure (issue #32): `rest_compliance`.
                .delete(crate::rest_compliance::erase_subscriber),
        )
        .route("/v1/subscribers/:id/notifications", get(list_notifications))
}

/// A subscriber: who notifications go to, and how to reach them.
#[derive(Serialize, ToSchema)]
pub struct Subscriber {
    pub subscriber_id: String,
    pub email: String,
    /// E.164, e.g. `+15145550123`.
    pub phone: String,
    /// BCP 47, e.g. `fr-CA`.
    pub locale: String,
    /// IANA name, e.g. `America/Toronto`.
    pub timezone: String,
    /// Custom attributes, seen by templates and trigger conditions.
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub webhook_url: String,
    /// ISO 3166-1 alpha-2, e.g. `FR` (retention is per country).
    pub country: String,
}

/// Body of `PUT /v1/subscribers/{id}`: the whole record (fields left out
/// are cleared).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberBody {
    /// May be given (e.g. a record read back); must then equal the path's id
    /// (empty: not given).
    #[serde(default)]
    pub subscriber_id: Option<String>,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub locale: String,
    #[serde(default)]
    pub timezone: String,
    /// A JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    #[serde(default)]
    pub webhook_url: String,
    /// ISO 3166-1 alpha-2, e.g. `FR`.
    #[serde(default)]
    pub country: String,
}

/// One notification of a subscriber.
#[derive(Serialize, ToSchema)]
pub struct SubscriberNotification {
    pub notification_id: String,
    pub workflow_id: String,
    /// When it was triggered (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// As in `GET /v1/notifications/{id}`.
    pub status: String,
}

/// A page of a subscriber's notifications, newest first.
#[derive(Serialize, ToSchema)]
pub struct SubscriberNotificationPage {
    pub notifications: Vec<SubscriberNotification>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The gRPC code names the id and the attributes as its message does; here
/// they are the path's `id` and the body's `attributes`.
fn rest_fields(e: ApiError) -> ApiError {
    match e {
        ApiError::Invalid(mut v) => {
            for f in &mut v.0 {
                if f.field == "subscriber_id" {
                    f.field = "id".into();
                } else if f.field == "attributes_json" {
                    f.field = "attributes".into();
                }
            }
            ApiError::Invalid(v)
        }
        other => other,
    }
}

fn to_rest(s: api::Subscriber) -> Subscriber {
    Subscriber {
        attributes: serde_json::from_str(&s.attributes_json)
            .unwrap_or_else(|_| Value::Object(Map::new())),
        subscriber_id: s.subscriber_id,
        email: s.email,
        phone: s.phone,
        locale: s.locale,
        timezone: s.timezone,
        webhook_url: s.webhook_url,
        country: s.country,
    }
}

/// Create or replace a subscriber.
#[utoipa::path(
    put,
    path = "/v1/subscribers/{id}",
    tag = "subscribers",
    operation_id = "upsertSubscriber",
    params(("id" = String, Path, description = "Subscriber id (at most 128 bytes; no `/`, spaces or control characters)", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body = SubscriberBody,
    responses((status = 200, description = "The stored subscriber", body = Subscriber))
)]
async fn upsert_subscriber(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<SubscriberBody>,
) -> Result<Json<Subscriber>, Problem> {
    if b.subscriber_id
        .as_ref()
        .is_some_and(|given| !given.is_empty() && *given != id)
    {
        return Err(Violations::single("subscriber_id", "must equal the id in the path").into());
    }
    let attributes_json = b
        .attributes
        .map(|a| Value::Object(a).to_string())
        .unwrap_or_default();
    let sub = api::Subscriber {
        subscriber_id: id,
        email: b.email,
        phone: b.phone,
        locale: b.locale,
        timezone: b.timezone,
        attributes_json,
        webhook_url: b.webhook_url,
        country: b.country,
    };
    let stored = SubscriberApi(s)
        .upsert(request(headers, sub))
        .await
        .map_err(rest_fields)?;
    Ok(Json(to_rest(stored)))
}

/// Read a subscriber.
#[utoipa::path(
    get,
    path = "/v1/subscribers/{id}",
    tag = "subscribers",
    operation_id = "getSubscriber",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    responses(
        (status = 200, description = "The subscriber", body = Subscriber),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_subscriber(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<Subscriber>, Problem> {
    let req = request(headers, api::GetSubscriberRequest { subscriber_id: id });
    let sub = SubscriberApi(s).get(req).await.map_err(rest_fields)?;
    Ok(Json(to_rest(sub)))
}

/// A subscriber's notifications, newest first, with their status. A
/// subscriber with none (or unknown) has an empty list.
#[utoipa::path(
    get,
    path = "/v1/subscribers/{id}/notifications",
    tag = "subscribers",
    operation_id = "listSubscriberNotifications",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"), PageParams),
    responses((status = 200, description = "A page of notifications, newest first", body = SubscriberNotificationPage))
)]
async fn list_notifications(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(paging): QueryParams<PageParams>,
) -> Result<Json<SubscriberNotificationPage>, Problem> {
    // A subscriber token may read its own subscriber's list.
    let md = MetadataMap::from_headers(headers);
    let who = crate::preference_input::who(&s, &md, Interface::Rest).await?;
    Ok(Json(notifications_of(&s, &who, "id", &id, &paging).await?))
}

/// A page of subscriber `id`'s notifications, newest first, for `who` (a
/// subscriber token reaches only its own; `field` names the id in errors).
/// REST and GraphQL both read it.
pub async fn notifications_of(
    s: &GatewayState,
    who: &Who,
    field: &str,
    id: &str,
    paging: &PageParams,
) -> Result<SubscriberNotificationPage, ApiError> {
    who.reach(field, id)?;
    let tenant = who.tenant.as_str();
    let name = format!("subscriber-notifications/{id}");
    let list = List {
        tenant,
        name: &name,
    };
    let page = list.page(paging)?;
    let upper = page.after.clone().map_or(Bound::Unbounded, Bound::Excluded);
    let mut rows = s
        .store
        .scan(
            &subscriber_index::newest_first(tenant, id, page.limit + 1)
                .range(Bound::Unbounded, upper),
        )
        .await?;
    let more = rows.len() > page.limit;
    rows.truncate(page.limit);
    let next_cursor = more
        .then(|| rows.last().map(|(ck, _)| list.cursor(ck)))
        .flatten();
    // The status of each from its history, a few at a time.
    let notifications = futures::stream::iter(rows)
        .map(|(ck, value)| item(s, tenant, ck, value))
        .buffered(8)
        .try_collect()
        .await?;
    Ok(SubscriberNotificationPage {
        notifications,
        next_cursor,
    })
}

async fn item(
    s: &GatewayState,
    tenant: &str,
    ck: Vec<u8>,
    value: bytes::Bytes,
) -> Result<SubscriberNotification, ApiError> {
    let notification_id = String::from_utf8_lossy(&ck).into_owned();
    let mut events = history(&*s.store, &*s.log, &s.topics, tenant, &notification_id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("notification history: {e}")))?;
    s.open_events(&mut events).await?;
    Ok(SubscriberNotification {
        workflow_id: Entry::decode(&value)
            .map(|e| e.workflow_id)
            .unwrap_or_default(),
        created_at_ms: Id::parse_hex(&notification_id).map_or(0, |i| i.time_ms()),
        status: status_of(&events).to_string(),
        notification_id,
    })
}
