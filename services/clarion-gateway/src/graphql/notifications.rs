//! Notifications in GraphQL: one by id (the gateway's notification read,
//! status and events), and a subscriber's, newest first.
//!
//! CONNECTION POINT (integrator): a subscriber's notifications come from
//! the per-subscriber index (`Table::SubscriberNotifications`, keyed by
//! tenant and subscriber, clustered by notification id) that the REST
//! route `GET /v1/subscribers/{id}/notifications` reads. Until that index
//! is in this build, [`list_for_subscriber`] answers `UNAVAILABLE`; to
//! connect it, replace its body with the index scan (the REST handler's,
//! moved into a function both call), keeping the signature.

use async_graphql::SimpleObject;
use clarion_proto::api;
use tonic::metadata::MetadataMap;

use crate::error::ApiError;
use crate::notification::NotificationApi;
use crate::preferences::Who;
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
    _s: &GatewayState,
    _who: &Who,
    _subscriber_id: &str,
    _limit: usize,
    _cursor: Option<&str>,
) -> Result<SubscriberNotificationPage, ApiError> {
    Err(ApiError::Unavailable(
        "a subscriber's notifications are not available in this build yet: \
         read one with notification(id)"
            .into(),
    ))
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
