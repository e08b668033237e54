//! REST door to `NotificationService`: trigger a workflow and read a
//! notification with nothing but curl. The handlers build the gRPC request
//! and call the same code as the gRPC service, so validation, idempotency and
//! errors cannot differ between the two doors.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use clarion_domain::Violations;
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tonic::metadata::MetadataMap;
use tonic::Request;

use crate::error::ApiError;
use crate::notification::NotificationApi;
use crate::rest::problem;
use crate::state::GatewayState;

/// Body of `POST /v1/notifications`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    workflow_id: String,
    /// A business event name instead of a workflow id.
    #[serde(default)]
    event: String,
    #[serde(default)]
    recipients: Vec<RecipientBody>,
    /// Any JSON object; templates see it as `payload`.
    #[serde(default)]
    payload: Option<Value>,
    /// Also accepted as the `Idempotency-Key` header (which wins).
    #[serde(default)]
    idempotency_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientBody {
    subscriber_id: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    locale: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    webhook_url: String,
}

#[derive(Serialize)]
struct Triggered<'a> {
    notification_id: &'a str,
    workflow_id: &'a str,
    subscriber_id: &'a str,
}

/// A request with the HTTP headers as gRPC metadata (the API key travels
/// in `authorization` or `x-api-key` either way).
fn request<T>(headers: HeaderMap, message: T) -> Request<T> {
    Request::from_parts(
        MetadataMap::from_headers(headers),
        Default::default(),
        message,
    )
}

/// Parses a JSON body, naming the offending field in the error.
fn parse_body(body: &Bytes) -> Result<TriggerBody, ApiError> {
    if body.is_empty() {
        return Err(Violations::single("body", "a JSON object is required").into());
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde names unknown and missing fields in its message.
        let field = e
            .to_string()
            .split('`')
            .nth(1)
            .filter(|_| e.is_data())
            .map(str::to_string)
            .unwrap_or_else(|| "body".into());
        Violations::single(field, format!("{e}")).into()
    })
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
    })
}

/// `POST /v1/notifications`: 202 with the notifications it started, or 200
/// with the original answer for a repeat of an idempotency key.
pub async fn trigger(State(s): State<GatewayState>, headers: HeaderMap, body: Bytes) -> Response {
    let idempotency = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let run = async {
        let req = to_api(parse_body(&body)?, idempotency)?;
        NotificationApi(s).trigger(request(headers, req)).await
    };
    match run.await {
        Ok(r) => {
            let status = if r.replay {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let notifications: Vec<_> = r
                .notifications
                .iter()
                .map(|n| Triggered {
                    notification_id: &n.notification_id,
                    workflow_id: &n.workflow_id,
                    subscriber_id: &n.subscriber_id,
                })
                .collect();
            (
                status,
                Json(json!({"notifications": notifications, "replay": r.replay})),
            )
                .into_response()
        }
        Err(e) => problem(e),
    }
}

/// `GET /v1/notifications/{id}`: status and the event history.
pub async fn get(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let req = request(
        headers,
        api::GetNotificationRequest {
            notification_id: id,
        },
    );
    match NotificationApi(s).get(req).await {
        Ok(n) => Json(json!({
            "notification_id": n.notification_id,
            "workflow_id": n.workflow_id,
            "subscriber_id": n.subscriber_id,
            "status": n.status,
            "events": n.events.iter().map(|e| json!({
                "event_id": e.event_id,
                "event_type": e.event_type,
                "occurred_at_ms": e.occurred_at_ms,
                "detail": serde_json::from_str::<Value>(&e.detail_json).unwrap_or(Value::Null),
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => problem(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_map_to_the_grpc_request_and_bad_ones_name_the_field() {
        let b = parse_body(&Bytes::from_static(
            br#"{"workflow_id":"welcome","recipients":[{"subscriber_id":"ana","locale":"fr-CA"}],"payload":{"name":"Ana"}}"#,
        ))
        .unwrap();
        let r = to_api(b, Some("k1".into())).unwrap();
        assert_eq!(r.workflow_id, "welcome");
        assert_eq!(r.recipients[0].locale, "fr-CA");
        assert_eq!(r.payload_json, r#"{"name":"Ana"}"#);
        assert_eq!(r.idempotency_key, "k1");

        let field = |body: &'static [u8]| match parse_body(&Bytes::from_static(body))
            .and_then(|b| to_api(b, None))
        {
            Err(ApiError::Invalid(v)) => v.0[0].field.clone(),
            other => panic!(
                "expected a violation, got {:?}",
                other.map(|r| r.workflow_id)
            ),
        };
        assert_eq!(field(br#"{"workflow":"x"}"#), "workflow");
        assert_eq!(
            field(br#"{"recipients":[{"email":"a@b.c"}]}"#),
            "subscriber_id"
        );
        assert_eq!(field(br#"{"workflow_id":"w","payload":[1]}"#), "payload");
        assert_eq!(field(b"{not json"), "body");
        assert_eq!(field(b""), "body");
    }
}
