//! Notifications in GraphQL: one by id (the gateway's notification read,
//! status and events), and a subscriber's, newest first.
//!
//! A subscriber's list is the router's per-subscriber index, read by
//! `rest_subscribers::notifications_of`, the function behind
//! `GET /v1/subscribers/{id}/notifications` too.

use async_graphql::SimpleObject;
use clarion_proto::api;
use tonic::metadata::MetadataMap;

use crate::error::ApiError;
use crate::notification::NotificationApi;
use crate::pagination::PageParams;
use crate::preferences::Who;
use crate::rest_subscribers::notifications_of;
use crate::state::GatewayState;

/// One notification of a subscriber (what the index row and the
/// notification's history give).
#[derive(SimpleObject, Clone, Debug, PartialEq, Eq)]
pub struct SubscriberNotification {
    pub notification_id: String,
    pub workflow_id: String,
    /// When it was triggered (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// As `Notification.status`.
    pub status: String,
}

/// A page of a subscriber's notifications, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct SubscriberNotificationPage {
    pub notifications: Vec<SubscriberNotification>,
    /// Pass as `after` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A subscriber's notifications, newest first: at most `limit` (1..=50,
/// checked by the caller), after the position `cursor` (a `next_cursor`
/// this function returned; `None`: from the newest). Must answer
/// `NotFound` for a subscriber `who` cannot reach (another tenant's; for
/// a subscriber token, any but its own) and name bad arguments as
/// `subscriber_id` and `cursor`.
pub async fn list_for_subscriber(
    s: &GatewayState,
    who: &Who,
    subscriber_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<SubscriberNotificationPage, ApiError> {
    let paging = PageParams {
        limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
        cursor: cursor.map(str::to_string),
    };
    let page = notifications_of(s, who, "subscriber_id", subscriber_id, &paging).await?;
    Ok(SubscriberNotificationPage {
        notifications: page
            .notifications
            .into_iter()
            .map(|n| SubscriberNotification {
                notification_id: n.notification_id,
                workflow_id: n.workflow_id,
                created_at_ms: n.created_at_ms,
                status: n.status,
            })
            .collect(),
        next_cursor: page.next_cursor,
    })
}

/// One notification of the caller's tenant: status and events. A
/// subscriber token reaches only its own subscriber's.
pub async fn get(
    s: &GatewayState,
    who: &Who,
    headers: &http::HeaderMap,
    id: &str,
) -> Result<api::Notification, ApiError> {
    // The gateway's read, with this request's credential (a cache hit):
    // the same tenant scoping and errors as gRPC and REST.
    let req = tonic::Request::from_parts(
        MetadataMap::from_headers(headers.clone()),
        Default::default(),
        api::GetNotificationRequest {
            notification_id: id.to_string(),
        },
    );
    let n = NotificationApi(s.clone()).get(req).await?;
    match &who.subscriber {
        Some(own) if *own != n.subscriber_id => Err(ApiError::NotFound(format!(
            "no notification {} for tenant {:?}",
            clarion_domain::error::quote(id),
            who.tenant.as_str()
        ))),
        _ => Ok(n),
    }
}
