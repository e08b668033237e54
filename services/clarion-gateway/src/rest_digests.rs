//! REST door to digests: `POST /v1/subscribers/{id}/digests/flush`
//! (`crate::digests`). Errors are problem+json naming the field
//! (`workflow_id`, `digest_key`, `subscriber_id`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::digests::{self, Flush};
use crate::extract::{JsonBody, PathParams};
use crate::preference_input::who;
use crate::preferences::Interface;
use crate::problem::Problem;
use crate::state::GatewayState;

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(flush_digest), components(schemas(FlushBody)))]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new().route("/v1/subscribers/:id/digests/flush", post(flush_digest))
}

/// `POST /v1/subscribers/{id}/digests/flush`: the workflow, and the key
/// (absent or empty: every open digest of the workflow).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlushBody {
    pub workflow_id: String,
    #[serde(default)]
    pub digest_key: String,
}

/// Closes the subscriber's open digest(s) of a workflow now: the run that
/// leads each sends it at once. Answers 204 once the router applied it.
#[utoipa::path(post, path = "/v1/subscribers/{id}/digests/flush", tag = "digests",
    operation_id = "flushDigest",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body = FlushBody,
    responses((status = 204, description = "Flushed (nothing was open: nothing to do)")))]
pub async fn flush_digest(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<FlushBody>,
) -> Result<StatusCode, Problem> {
    let who = who(&s, &MetadataMap::from_headers(headers), Interface::Rest).await?;
    let f = Flush {
        subscriber_id: id,
        workflow_id: b.workflow_id,
        digest_key: b.digest_key,
    };
    digests::flush(&s, &who, f).await?;
    Ok(StatusCode::NO_CONTENT)
}
