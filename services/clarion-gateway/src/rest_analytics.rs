//! REST door to `AnalyticsService`: `GET /v1/analytics/report` and
//! `GET /v1/analytics/providers` (scope `read`). The handlers build the
//! gRPC request and call the same code ([`crate::analytics`]); errors are
//! problem+json naming the query parameter (`dimension`, `granularity`,
//! `from`, `to`, `value`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::analytics;
use crate::extract::QueryParams;
use crate::problem::Problem;
use crate::state::GatewayState;

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(report, providers),
    tags((name = "analytics", description = "Delivery counts, rates, latencies and provider health"))
)]
pub struct Paths;

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/analytics/report", get(report))
        .route("/v1/analytics/providers", get(providers))
}

/// The report's parameters. Every value is text; an empty one is its default.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct ReportParams {
    /// `all` (default), `channel`, `provider`, `workflow` or `template`.
    #[param(example = "channel")]
    pub dimension: Option<String>,
    /// Only this value of the dimension (default: every value, at most 50).
    pub value: Option<String>,
    /// Buckets from this instant (RFC 3339; default: 24 hours before `to`).
    #[param(example = "2026-03-01T00:00:00Z")]
    pub from: Option<String>,
    /// Buckets before this instant (RFC 3339; default: now).
    #[param(example = "2026-03-01T06:00:00Z")]
    pub to: Option<String>,
    /// `minute` (at most 24 hours) or `hour` (at most 92 days); default:
    /// minutes for ranges up to 6 hours, else hours.
    pub granularity: Option<String>,
}

/// The health report's range.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct RangeParams {
    /// RFC 3339; default: 24 hours before `to`.
    #[param(example = "2026-03-01T00:00:00Z")]
    pub from: Option<String>,
    /// RFC 3339; default: now.
    #[param(example = "2026-03-02T00:00:00Z")]
    pub to: Option<String>,
}

/// One bucket of a latency histogram.
#[derive(Serialize, ToSchema)]
pub struct AnalyticsLatencyBucket {
    /// Upper bound (ms, inclusive); null for the last bucket (slower than every bound).
    pub le_ms: Option<i64>,
    pub count: u64,
}

/// One latency: `trigger_to_sent`, `dispatch_to_sent`, `sent_to_delivered` or `sent_to_opened`.
#[derive(Serialize, ToSchema)]
pub struct AnalyticsLatency {
    pub stage: String,
    pub count: u64,
    /// Quantiles as their histogram bucket's upper bound (ms); null without samples.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub mean_ms: Option<f64>,
    /// The histogram (in totals only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<AnalyticsLatencyBucket>,
}

/// Counts, rates (0 to 1; null when the denominator is 0) and latencies.
#[derive(Serialize, ToSchema)]
pub struct AnalyticsCounts {
    /// Sends with an outcome (sent or failed), each once.
    pub attempted: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Of failed, refused for good (not retryable).
    pub bounced: u64,
    /// Once per send; a click counts as an open.
    pub opened: u64,
    pub clicked: u64,
    /// delivered / attempted
    pub delivery_rate: Option<f64>,
    /// failed / attempted
    pub failure_rate: Option<f64>,
    /// opened / delivered
    pub open_rate: Option<f64>,
    /// clicked / delivered
    pub click_rate: Option<f64>,
    pub latencies: Vec<AnalyticsLatency>,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsPoint {
    pub start_ms: i64,
    pub counts: AnalyticsCounts,
}

/// One value of the dimension.
#[derive(Serialize, ToSchema)]
pub struct AnalyticsGroup {
    pub value: String,
    pub totals: AnalyticsCounts,
    /// Buckets that counted anything, oldest first.
    pub series: Vec<AnalyticsPoint>,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsReport {
    pub dimension: String,
    pub granularity: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Most attempts first.
    pub groups: Vec<AnalyticsGroup>,
    /// Values were left out (over 50).
    pub truncated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderHealth {
    pub provider: String,
    pub attempted: u64,
    pub sent: u64,
    pub failed: u64,
    /// failed / attempted over the range.
    pub error_rate: Option<f64>,
    /// dispatch → sent, bucket upper bound (ms).
    pub p95_latency_ms: Option<i64>,
    /// All time (ms since the epoch; 0: never).
    pub last_success_ms: i64,
    pub last_failure_ms: i64,
    pub last_error: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderHealthReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub providers: Vec<ProviderHealth>,
}

fn counts(c: api::AnalyticsCounts) -> AnalyticsCounts {
    AnalyticsCounts {
        attempted: c.attempted,
        sent: c.sent,
        delivered: c.delivered,
        failed: c.failed,
        bounced: c.bounced,
        opened: c.opened,
        clicked: c.clicked,
        delivery_rate: c.delivery_rate,
        failure_rate: c.failure_rate,
        open_rate: c.open_rate,
        click_rate: c.click_rate,
        latencies: c
            .latencies
            .into_iter()
            .map(|l| AnalyticsLatency {
                stage: l.stage,
                count: l.count,
                p50_ms: l.p50_ms,
                p95_ms: l.p95_ms,
                mean_ms: l.mean_ms,
                buckets: l
                    .buckets
                    .into_iter()
                    .map(|b| AnalyticsLatencyBucket {
                        le_ms: (b.le_ms > 0).then_some(b.le_ms),
                        count: b.count,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The report as JSON.
pub fn report_body(r: api::AnalyticsReport) -> AnalyticsReport {
    AnalyticsReport {
        dimension: r.dimension,
        granularity: r.granularity,
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        truncated: r.truncated,
        groups: r
            .groups
            .into_iter()
            .map(|g| AnalyticsGroup {
                value: g.value,
                totals: counts(g.totals.unwrap_or_default()),
                series: g
                    .series
                    .into_iter()
                    .map(|p| AnalyticsPoint {
                        start_ms: p.start_ms,
                        counts: counts(p.counts.unwrap_or_default()),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The tenant's sends per value of a dimension over a time range: counts,
/// rates and latency histograms in total and per minute or hour bucket.
#[utoipa::path(
    get,
    path = "/v1/analytics/report",
    tag = "analytics",
    operation_id = "getAnalyticsReport",
    params(ReportParams),
    responses(
        (status = 200, description = "The report", body = AnalyticsReport),
        (status = 400, description = "A parameter is malformed: `errors[].field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn report(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<ReportParams>,
) -> Result<Json<AnalyticsReport>, Problem> {
    let caller = crate::auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let req = api::AnalyticsReportRequest {
        dimension: p.dimension.unwrap_or_default(),
        value: p.value.unwrap_or_default(),
        from: p.from.unwrap_or_default(),
        to: p.to.unwrap_or_default(),
        granularity: p.granularity.unwrap_or_default(),
    };
    let r = analytics::report(&s, caller.tenant.as_str(), &req).await?;
    Ok(Json(report_body(r)))
}

/// Each provider the tenant sent through: error rate and p95 latency over
/// the range, last success and last failure.
#[utoipa::path(
    get,
    path = "/v1/analytics/providers",
    tag = "analytics",
    operation_id = "getProviderHealth",
    params(RangeParams),
    responses(
        (status = 200, description = "The providers' health", body = ProviderHealthReport),
        (status = 400, description = "A parameter is malformed: `errors[].field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn providers(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<RangeParams>,
) -> Result<Json<ProviderHealthReport>, Problem> {
    let caller = crate::auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let req = api::ProviderHealthRequest {
        from: p.from.unwrap_or_default(),
        to: p.to.unwrap_or_default(),
    };
    let r = analytics::provider_health(&s, caller.tenant.as_str(), &req).await?;
    Ok(Json(ProviderHealthReport {
        from_ms: r.from_ms,
        to_ms: r.to_ms,
        providers: r
            .providers
            .into_iter()
            .map(|p| ProviderHealth {
                provider: p.provider,
                attempted: p.attempted,
                sent: p.sent,
                failed: p.failed,
                error_rate: p.error_rate,
                p95_latency_ms: p.p95_latency_ms,
                last_success_ms: p.last_success_ms,
                last_failure_ms: p.last_failure_ms,
                last_error: p.last_error,
            })
            .collect(),
    }))
}
