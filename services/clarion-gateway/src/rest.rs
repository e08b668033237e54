//! REST endpoints (JSON over HTTP) for operators' tooling: the dead-letter
//! queue. Same auth (API key in `authorization: Bearer` or `x-api-key`), same
//! code paths as gRPC; errors are RFC 9457 `application/problem+json`. Each
//! route's scope is in `access::REST_ROUTES`; a tenant over its request rate
//! gets 429 with `Retry-After`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_proto::api;
use serde::Deserialize;
use serde_json::{json, Value};
use tonic::metadata::MetadataMap;

use crate::error::ApiError;
use crate::state::GatewayState;
use crate::{auth, dead_letter};

pub(crate) fn problem(e: ApiError) -> Response {
    let (status, errors) = match &e {
        ApiError::Invalid(v) => (
            StatusCode::BAD_REQUEST,
            v.0.iter()
                .map(|f| json!({"field": f.field, "detail": f.description}))
                .collect::<Vec<_>>(),
        ),
        ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, vec![]),
        ApiError::PermissionDenied(_) => (StatusCode::FORBIDDEN, vec![]),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, vec![]),
        ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, vec![]),
        ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, vec![]),
        ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, vec![]),
    };
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": e.to_string(),
    });
    if !errors.is_empty() {
        body["errors"] = Value::Array(errors);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn dead_letter_json(d: &api::DeadLetter) -> Value {
    json!({
        "notification_id": d.notification_id,
        "workflow_id": d.workflow_id,
        "workflow_version": d.workflow_version,
        "subscriber_id": d.subscriber_id,
        "step": d.step,
        "reason": d.reason,
        "dead_lettered_at_ms": d.dead_lettered_at_ms,
        "attempts": d.attempts.iter().map(|a| json!({
            "attempt_id": a.attempt_id, "step": a.step, "channel": a.channel,
            "provider": a.provider, "at_ms": a.at_ms, "error": a.error, "retryable": a.retryable,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    older_than_ms: i64,
    #[serde(default)]
    limit: u32,
}

#[derive(Deserialize, Default)]
struct ActionBody {
    #[serde(default)]
    note: String,
}

async fn list(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let run = async {
        let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
        let f = api::ListDeadLettersRequest {
            workflow_id: q.workflow_id,
            channel: q.channel,
            reason_contains: q.reason,
            older_than_ms: q.older_than_ms,
            limit: q.limit,
        };
        dead_letter::list(&s, &caller.tenant, &f).await
    };
    match run.await {
        Ok(items) => Json(json!({
            "dead_letters": items.iter().map(dead_letter_json).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => problem(e),
    }
}

async fn show(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
        dead_letter::show(&s, &caller.tenant, &id).await
    };
    match run.await {
        Ok(d) => Json(dead_letter_json(&d)).into_response(),
        Err(e) => problem(e),
    }
}

async fn act(
    s: GatewayState,
    headers: HeaderMap,
    id: String,
    body: Option<Json<ActionBody>>,
    retry: bool,
) -> Response {
    let run = async {
        let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
        let action = api::DeadLetterAction {
            notification_id: id,
            note: body.map(|b| b.0.note).unwrap_or_default(),
        };
        dead_letter::act(&s, &caller.tenant, caller.actor, &action, retry).await
    };
    match run.await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => problem(e),
    }
}

async fn retry(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<ActionBody>>,
) -> Response {
    act(s, headers, id, body, true).await
}

async fn discard(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<ActionBody>>,
) -> Response {
    act(s, headers, id, body, false).await
}

#[derive(Deserialize)]
struct AckBody {
    kind: String,
    #[serde(default)]
    attempt_id: String,
}

/// `POST /v1/notifications/{id}/engagement` `{"kind": "acknowledged"}`: what
/// an app reports (acknowledged, read, opened, clicked).
async fn engagement(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<AckBody>>,
) -> Response {
    let run = async {
        let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
        let Some(Json(b)) = body else {
            return Err(ApiError::Invalid(clarion_domain::Violations::single(
                "kind",
                "is required (JSON body {\"kind\": \"acknowledged\"})",
            )));
        };
        let kind = match clarion_domain::flow::Engagement::parse(&b.kind) {
            Some(k) if k != clarion_domain::flow::Engagement::Delivered => k,
            _ => {
                return Err(ApiError::Invalid(clarion_domain::Violations::single(
                    "kind",
                    "must be one of acknowledged, read, opened, clicked",
                )))
            }
        };
        crate::notification::record_engagement(
            &s,
            &caller.tenant,
            &id,
            &b.attempt_id,
            kind.as_str(),
            "app",
            caller.actor,
        )
        .await
    };
    match run.await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => problem(e),
    }
}

pub fn routes(state: GatewayState) -> Router {
    Router::new()
        .route(
            "/v1/notifications",
            post(crate::rest_notifications::trigger),
        )
        .route("/v1/notifications/:id", get(crate::rest_notifications::get))
        .route("/v1/notifications/:id/engagement", post(engagement))
        .route("/v1/dead-letters", get(list))
        .route("/v1/dead-letters/:id", get(show))
        .route("/v1/dead-letters/:id/retry", post(retry))
        .route("/v1/dead-letters/:id/discard", post(discard))
        .merge(crate::rest_preferences::routes())
        // Scope and rate limit of every route (crate::access::REST_ROUTES).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::rest_guard,
        ))
        .with_state(state)
}
