//! REST door to the in-app inbox: a subscriber's feed, its counts, marks,
//! and a live stream as Server-Sent Events. Handlers call the operations of
//! [`crate::inbox`] that gRPC calls too; errors are RFC 9457 problems
//! naming the field (`status`, `mark`, `item_ids[2]`, `cursor`,
//! `Last-Event-ID`).
//!
//! The routes are in `access::REST_ROUTES` and, all four, in
//! `access::SUBSCRIBER_REST`: an end user's app reaches its own feed with a
//! subscriber token. A browser's `EventSource` cannot send headers, so the
//! stream route also takes the token as `?token=` (a subscriber token only,
//! never an API key: URLs end up in logs, and a subscriber token is
//! short-lived and reaches one feed).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_domain::Violations;
use clarion_proto::events as pb;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::inbox::{self as ops, ListRequest, MarkRequest, Update, REST_FIELDS};
use crate::pagination::PageParams;
use crate::preference_input::who;
use crate::preferences::{Interface, Who};
use crate::problem::Problem;
use crate::state::GatewayState;

/// The route whose subscriber token may come as `?token=`.
pub const STREAM_ROUTE: &str = "/v1/subscribers/:id/inbox/stream";

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(list_items, get_counts, mark_items, stream),
    components(schemas(InboxItemView, InboxCountsView, InboxPage, MarkBody))
)]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/subscribers/:id/inbox", get(list_items))
        .route("/v1/subscribers/:id/inbox/counts", get(get_counts))
        .route("/v1/subscribers/:id/inbox/mark", post(mark_items))
        .route(STREAM_ROUTE, get(stream))
}

/// One item of a feed.
#[derive(Serialize, ToSchema)]
pub struct InboxItemView {
    pub item_id: String,
    pub notification_id: String,
    pub title: String,
    pub body: String,
    /// The deep link the app opens (may be empty).
    pub link: String,
    pub category: String,
    pub workflow_id: String,
    pub locale: String,
    /// Extra data for the client (a JSON object; `{}` when none).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub created_at_ms: i64,
    pub seen: bool,
    pub read: bool,
    pub archived: bool,
    /// When it was seen, read, archived (ms since the epoch; 0: not).
    pub seen_at_ms: i64,
    pub read_at_ms: i64,
    pub archived_at_ms: i64,
}

/// A feed's counts (archived items left out) and its version, which only
/// grows: a client keeps the greatest it saw.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct InboxCountsView {
    pub unread: u64,
    pub unseen: u64,
    pub total: u64,
    pub version: u64,
}

/// A page of a feed, newest first, with the feed's counts.
#[derive(Serialize, ToSchema)]
pub struct InboxPage {
    pub items: Vec<InboxItemView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub counts: InboxCountsView,
}

/// `POST /v1/subscribers/{id}/inbox/mark`: `item_ids`, or `all` (with an
/// optional `category`), and the mark.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkBody {
    #[serde(default)]
    pub item_ids: Vec<String>,
    #[serde(default)]
    pub all: bool,
    /// With `all`: only the items of this category.
    #[serde(default)]
    pub category: String,
    /// `seen`, `read`, `unread`, `archived`, `unarchived` or `acknowledged`.
    pub mark: String,
}

/// `?status=&archived=&category=&limit=&cursor=` of the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `all` (default), `unread` or `read`.
    #[serde(default)]
    pub status: Option<String>,
    /// `true`: the archive (archived items only); default: the feed,
    /// archived items left out.
    #[serde(default)]
    pub archived: Option<bool>,
    /// Only the items of this category.
    #[serde(default)]
    pub category: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// `?after_version=&token=` of the stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The counts version the client has: the stream starts with what
    /// changed since. The `Last-Event-ID` header, which a reconnecting
    /// `EventSource` sends, wins over it.
    pub after_version: Option<u64>,
    /// A subscriber token, for clients that cannot send the
    /// `authorization` header (a browser's `EventSource`).
    pub token: Option<String>,
}

pub fn item_view(r: pb::InboxItemRecord) -> InboxItemView {
    let data = serde_json::from_str(&r.data_json)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    InboxItemView {
        seen: r.seen_at_ms != 0,
        read: r.read_at_ms != 0,
        archived: r.archived_at_ms != 0,
        item_id: r.item_id,
        notification_id: r.notification_id,
        title: r.title,
        body: r.body,
        link: r.link,
        category: r.category,
        workflow_id: r.workflow_id,
        locale: r.locale,
        data,
        created_at_ms: r.created_at_ms,
        seen_at_ms: r.seen_at_ms,
        read_at_ms: r.read_at_ms,
        archived_at_ms: r.archived_at_ms,
    }
}

pub fn counts_view(c: &pb::InboxCountsRecord) -> InboxCountsView {
    InboxCountsView {
        unread: c.unread,
        unseen: c.unseen,
        total: c.total,
        version: c.version,
    }
}

async fn rest_who(s: &GatewayState, headers: HeaderMap) -> Result<Who, ApiError> {
    who(s, &MetadataMap::from_headers(headers), Interface::Rest).await
}

/// A subscriber's feed, newest first, and its counts.
#[utoipa::path(get, path = "/v1/subscribers/{id}/inbox", tag = "inbox",
    operation_id = "listInboxItems",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"), ListQuery),
    responses((status = 200, description = "A page of the feed, newest first", body = InboxPage)))]
pub async fn list_items(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<InboxPage>, Problem> {
    let who = rest_who(&s, headers).await?;
    let req = ListRequest {
        status: q.status.unwrap_or_default(),
        archived: q.archived.unwrap_or(false),
        category: q.category.unwrap_or_default(),
        paging: PageParams {
            limit: q.limit,
            cursor: q.cursor,
        },
    };
    let page = ops::list(&s, &who, REST_FIELDS, &id, &req).await?;
    Ok(Json(InboxPage {
        items: page.items.into_iter().map(item_view).collect(),
        next_cursor: page.next_cursor,
        counts: counts_view(&page.counts),
    }))
}

/// A subscriber's unread, unseen and total counts, and their version.
#[utoipa::path(get, path = "/v1/subscribers/{id}/inbox/counts", tag = "inbox",
    operation_id = "getInboxCounts",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    responses((status = 200, description = "The feed's counts", body = InboxCountsView)))]
pub async fn get_counts(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<InboxCountsView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let c = ops::counts(&s, &who, REST_FIELDS.subscriber, &id).await?;
    Ok(Json(counts_view(&c)))
}

/// Marks items (or all of them, optionally of one category) seen, read,
/// unread, archived, unarchived or acknowledged; answers the counts once
/// the change is applied. A read or an acknowledgement reaches the
/// workflow run that sent the item (as engagement).
#[utoipa::path(post, path = "/v1/subscribers/{id}/inbox/mark", tag = "inbox",
    operation_id = "markInboxItems",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body = MarkBody,
    responses((status = 200, description = "The counts after the change", body = InboxCountsView)))]
pub async fn mark_items(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<MarkBody>,
) -> Result<Json<InboxCountsView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let req = MarkRequest {
        item_ids: b.item_ids,
        all: b.all,
        category: b.category,
        mark: b.mark,
    };
    let c = ops::mark(&s, &who, REST_FIELDS.subscriber, &id, &req).await?;
    Ok(Json(counts_view(&c)))
}

/// The credential of a stream request: the `authorization` (or
/// `x-api-key`) header, else a subscriber token in `?token=`.
pub fn with_query_token(mut headers: HeaderMap, uri: &Uri) -> HeaderMap {
    if crate::auth::credential_in(&headers).is_none() {
        if let Some(t) = query_token(uri) {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
    }
    headers
}

/// A subscriber token given as `?token=` (an API key there is ignored).
pub fn query_token(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .filter(|t| {
            !t.starts_with(clarion_domain::tenant::API_KEY_PREFIX)
                && crate::subscriber_token::looks_like_token(t)
        })
}

/// The version a stream resumes from: `Last-Event-ID`, else `after_version`.
fn resume_from(headers: &HeaderMap, q: &StreamQuery) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            text.parse::<u64>().map(Some).map_err(|_| {
                Violations::single(
                    "Last-Event-ID",
                    "must be a counts version this stream sent (a whole number)",
                )
                .into()
            })
        }
        None => Ok(q.after_version),
    }
}

/// Live updates of a feed as Server-Sent Events: `event: item` with a new
/// item (JSON, as in the list), `event: counts` with the counts, whose
/// `id:` is their version. A client resuming with `Last-Event-ID` (or
/// `?after_version=`) first gets what changed since: the counts if newer,
/// and the items written since (at most 100); a client without gets the
/// current counts first. Comments keep the connection alive.
#[utoipa::path(get, path = "/v1/subscribers/{id}/inbox/stream", tag = "inbox",
    operation_id = "streamInbox",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"),
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last counts version received (sent by a reconnecting EventSource)")),
    responses((status = 200, description = "An endless `text/event-stream`: `event: item` (an item, JSON) and `event: counts` (the counts, JSON; `id:` = their version)",
        content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    uri: Uri,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Response, Problem> {
    let after = resume_from(&headers, &q)?;
    let who = rest_who(&s, with_query_token(headers, &uri)).await?;
    let rx = ops::watch(&s, &who, REST_FIELDS.subscriber, &id, after).await?;
    Ok(Sse::new(events(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn events(
    rx: tokio::sync::mpsc::Receiver<Update>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    ReceiverStream::new(rx).map(|u| {
        Ok(match u {
            Update::Item(i) => SseEvent::default()
                .event("item")
                .json_data(item_view(*i))
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable item")),
            Update::Counts(c) => SseEvent::default()
                .event("counts")
                .id(c.version.to_string())
                .json_data(counts_view(&c))
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable counts")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{parse_json, parse_query};

    #[test]
    fn bad_bodies_and_queries_name_the_field() {
        let p = parse_json::<MarkBody>(br#"{"item_ids":["a"]}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "mark");
        let p = parse_json::<MarkBody>(br#"{"mark":"read","ids":["a"]}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "ids");
        let p = parse_query::<ListQuery>("archived=maybe").unwrap_err();
        assert_eq!(p.errors[0].field, "archived");
        let p = parse_query::<StreamQuery>("after_version=-1").unwrap_err();
        assert_eq!(p.errors[0].field, "after_version");
    }

    #[test]
    fn only_subscriber_tokens_come_in_the_query() {
        let uri: Uri = "/v1/subscribers/a/inbox/stream?token=aaa.bbb.ccc&after_version=3"
            .parse()
            .unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("aaa.bbb.ccc"));
        let uri: Uri = "/x?token=ck_acme_0123456789abcdef".parse().unwrap();
        assert_eq!(query_token(&uri), None);
        let headers = with_query_token(HeaderMap::new(), &"/x?token=a.b.c".parse().unwrap());
        assert_eq!(headers["authorization"], "Bearer a.b.c");
        // A header wins over the query.
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "ck_acme_x".parse().unwrap());
        let headers = with_query_token(h, &"/x?token=a.b.c".parse().unwrap());
        assert!(headers.get("authorization").is_none());
    }

    #[test]
    fn last_event_id_wins_and_must_be_a_number() {
        let q = StreamQuery {
            after_version: Some(2),
            token: None,
        };
        assert_eq!(resume_from(&HeaderMap::new(), &q).unwrap(), Some(2));
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "7".parse().unwrap());
        assert_eq!(resume_from(&h, &q).unwrap(), Some(7));
        h.insert("last-event-id", "seven".parse().unwrap());
        match resume_from(&h, &q) {
            Err(ApiError::Invalid(v)) => assert_eq!(v.0[0].field, "Last-Event-ID"),
            other => panic!("{other:?}"),
        }
    }
}
