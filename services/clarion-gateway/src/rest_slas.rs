//! REST door to a tenant's SLAs (issue #31, docs/slas.md):
//! `PUT/GET/DELETE /v1/slas/{id}`, `GET /v1/slas`, and the compliance now
//! `GET /v1/slas/{id}/status`. Bad input names the field.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{OpenApi, ToSchema};

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams};
use crate::problem::Problem;
use crate::slas as ops;
use crate::state::GatewayState;

/// An SLA: "`target_ratio` of the `channel`'s sends reach `milestone`
/// within `threshold_ms`, over the trailing `window_ms`".
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlaBody {
    /// Set from the path.
    #[serde(default)]
    pub sla_id: String,
    #[serde(default)]
    pub name: String,
    /// email, sms, push, in_app or webhook.
    pub channel: String,
    /// Filter: only this workflow's sends (empty: any).
    #[serde(default)]
    pub workflow_id: String,
    /// Filter: only this topic's sends (empty: any).
    #[serde(default)]
    pub topic: String,
    /// 0.99 for 99 %.
    pub target_ratio: f64,
    pub threshold_ms: u64,
    /// 60000 (a minute) to 604800000 (7 days).
    pub window_ms: u64,
    /// `delivered` (default) or `sent`.
    #[serde(default)]
    pub milestone: String,
    /// Sends the window needs before it is judged (default 1).
    #[serde(default)]
    pub min_samples: u32,
}

/// The tenant's SLAs.
#[derive(Serialize, ToSchema)]
pub struct SlaList {
    pub slas: Vec<SlaBody>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderMissesView {
    pub provider: String,
    pub missed: u64,
}

/// An SLA's compliance over its trailing window now.
#[derive(Serialize, ToSchema)]
pub struct SlaStatusView {
    pub sla: SlaBody,
    /// met / (met + missed + overdue); 1 when nothing was judged.
    pub compliance: f64,
    pub met: u64,
    pub missed: u64,
    /// In flight and already past the threshold.
    pub overdue: u64,
    /// In flight within the threshold.
    pub pending: u64,
    pub breached: bool,
    /// Breached only because sends in flight are late already.
    pub predicted: bool,
    pub window_start_ms: i64,
    /// The provider a breach in force moved past (empty: none).
    pub demoted_provider: String,
    pub runbook: String,
    pub missed_by_provider: Vec<ProviderMissesView>,
}

fn body(s: api::Sla) -> SlaBody {
    SlaBody {
        sla_id: s.sla_id,
        name: s.name,
        channel: s.channel,
        workflow_id: s.workflow_id,
        topic: s.topic,
        target_ratio: s.target_ratio,
        threshold_ms: s.threshold_ms,
        window_ms: s.window_ms,
        milestone: s.milestone,
        min_samples: s.min_samples,
    }
}

async fn caller(s: &GatewayState, headers: HeaderMap) -> Result<Caller, Problem> {
    Ok(auth::tenant(s, &MetadataMap::from_headers(headers)).await?)
}

/// Create or replace an SLA.
#[utoipa::path(put, path = "/v1/slas/{id}", tag = "slas", operation_id = "setSla",
    request_body = SlaBody, params(("id" = String, Path, description = "SLA id")),
    responses(
        (status = 200, description = "The SLA as stored", body = SlaBody),
        (status = 400, description = "A bad field, named", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_sla(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<SlaBody>,
) -> Result<Json<SlaBody>, Problem> {
    let c = caller(&s, headers).await?;
    if !b.sla_id.is_empty() && b.sla_id != id {
        return Err(ApiError::Invalid(clarion_domain::Violations::single(
            "sla_id",
            "differs from the path's id",
        ))
        .into());
    }
    let input = api::Sla {
        sla_id: id,
        name: b.name,
        channel: b.channel,
        workflow_id: b.workflow_id,
        topic: b.topic,
        target_ratio: b.target_ratio,
        threshold_ms: b.threshold_ms,
        window_ms: b.window_ms,
        milestone: b.milestone,
        min_samples: b.min_samples,
    };
    Ok(Json(body(ops::set(&s, &c.tenant, &c.actor, input).await?)))
}

/// An SLA.
#[utoipa::path(get, path = "/v1/slas/{id}", tag = "slas", operation_id = "getSla",
    params(("id" = String, Path, description = "SLA id")),
    responses(
        (status = 200, description = "The SLA", body = SlaBody),
        (status = 404, description = "No such SLA", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_sla(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<SlaBody>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(body(ops::to_api(
        &ops::get(&s, &c.tenant, &id).await?,
    ))))
}

/// Delete an SLA (a demotion it put in force ends).
#[utoipa::path(delete, path = "/v1/slas/{id}", tag = "slas", operation_id = "deleteSla",
    params(("id" = String, Path, description = "SLA id")),
    responses(
        (status = 200, description = "The deleted SLA", body = SlaBody),
        (status = 404, description = "No such SLA", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_sla(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<SlaBody>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(body(ops::delete(&s, &c.tenant, &c.actor, &id).await?)))
}

/// The tenant's SLAs.
#[utoipa::path(get, path = "/v1/slas", tag = "slas", operation_id = "listSlas",
    responses((status = 200, description = "The SLAs", body = SlaList)))]
pub async fn list_slas(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<SlaList>, Problem> {
    let c = caller(&s, headers).await?;
    let all = ops::list(&s, &c.tenant).await?;
    Ok(Json(SlaList {
        slas: all.into_iter().map(body).collect(),
    }))
}

/// An SLA's compliance now: its window's counts, whether it is breached,
/// and the provider a breach moved past.
#[utoipa::path(get, path = "/v1/slas/{id}/status", tag = "slas", operation_id = "getSlaStatus",
    params(("id" = String, Path, description = "SLA id")),
    responses(
        (status = 200, description = "The compliance", body = SlaStatusView),
        (status = 404, description = "No such SLA", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sla_status(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<SlaStatusView>, Problem> {
    let c = caller(&s, headers).await?;
    let st = ops::status(&s, &c.tenant, &id).await?;
    Ok(Json(SlaStatusView {
        sla: body(st.sla.unwrap_or_default()),
        compliance: st.compliance,
        met: st.met,
        missed: st.missed,
        overdue: st.overdue,
        pending: st.pending,
        breached: st.breached,
        predicted: st.predicted,
        window_start_ms: st.window_start_ms,
        demoted_provider: st.demoted_provider,
        runbook: st.runbook,
        missed_by_provider: st
            .missed_by_provider
            .into_iter()
            .map(|m| ProviderMissesView {
                provider: m.provider,
                missed: m.missed,
            })
            .collect(),
    }))
}

#[derive(OpenApi)]
#[openapi(
    paths(put_sla, get_sla, delete_sla, list_slas, sla_status),
    components(schemas(SlaBody, SlaList, ProviderMissesView, SlaStatusView))
)]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/slas", get(list_slas))
        .route("/v1/slas/:id", get(get_sla).put(put_sla).delete(delete_sla))
        .route("/v1/slas/:id/status", get(sla_status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    #[test]
    fn bad_bodies_name_the_field() {
        match parse_json::<SlaBody>(
            br#"{"channel":"sms","target_ratio":"high","threshold_ms":1,"window_ms":60000}"#,
        ) {
            Err(p) => assert_eq!(p.errors[0].field, "target_ratio"),
            Ok(_) => panic!("accepted"),
        }
    }
}
