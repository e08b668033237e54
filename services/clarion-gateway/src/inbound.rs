//! Inbound provider webhooks. `POST /webhooks/twilio/status`: delivery status
//! callbacks of the Twilio-style SMS provider, accepted only with a valid
//! `X-Twilio-Signature` (HMAC-SHA1 with the account's auth token over the full
//! callback URL and the form parameters). The callback URL carries the tenant,
//! notification and attempt, which the signature therefore also protects.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use clarion_domain::{Actor, Payload, TenantId};
use clarion_proto::events as pb;

use crate::error::{problem, ApiError};
use crate::notification::append_for_notification;
use crate::state::GatewayState;

#[derive(Clone)]
struct TwilioState {
    gateway: GatewayState,
    auth_token: String,
    /// The StatusCallback base URL given to the provider (what it signs).
    callback_url: String,
}

async fn status(
    State(st): State<TwilioState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let query = query.unwrap_or_default();
    let url = format!("{}?{query}", st.callback_url);
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !clarion_dispatch::twilio::verify_signature(&st.auth_token, &url, &form, given) {
        return problem(StatusCode::FORBIDDEN, "X-Twilio-Signature does not match");
    }
    let q: std::collections::HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let field = |m: &[(String, String)], k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (Some(tenant), Some(nid), Some(attempt)) =
        (q.get("tenant"), q.get("notification"), q.get("attempt"))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "callback URL lacks tenant, notification or attempt",
        );
    };
    let Ok(tenant) = TenantId::parse(tenant) else {
        return problem(StatusCode::BAD_REQUEST, "tenant: not a tenant id");
    };
    let message_status = field(&form, "MessageStatus");
    // No `context`: the gateway does not know the request. Analytics counts
    // the report under the send's row, written at the dispatcher's outcome.
    let payload = match message_status.as_str() {
        "delivered" => Payload::Delivered(pb::NotificationDelivered {
            notification_id: nid.clone(),
            attempt_id: attempt.clone(),
            provider: "twilio".into(),
            context: None,
        }),
        "failed" | "undelivered" => Payload::Failed(pb::NotificationFailed {
            notification_id: nid.clone(),
            attempt_id: attempt.clone(),
            provider: "twilio".into(),
            reason: format!(
                "provider reported {message_status} (error code {})",
                field(&form, "ErrorCode")
            ),
            retryable: false,
            stage: "delivery".into(),
            context: None,
        }),
        // queued, sending, sent, ...: nothing new for us.
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    match append_for_notification(
        &st.gateway,
        &tenant,
        nid,
        Actor::System("twilio".into()),
        payload,
    )
    .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(ApiError::NotFound(m)) => problem(StatusCode::NOT_FOUND, &m),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Routes for the Twilio-style status callback at `callback_url`'s path.
pub fn twilio_routes(gateway: GatewayState, auth_token: String, callback_url: String) -> Router {
    Router::new()
        .route("/webhooks/twilio/status", post(status))
        .with_state(TwilioState {
            gateway,
            auth_token,
            callback_url,
        })
}
