//! `AnalyticsService`: the tenant's delivery figures from the analytics
//! projection ([`clarion_analytics`]). The REST door
//! ([`crate::rest_analytics`]) and the console call the same parsing and
//! conversion, so their checks and answers cannot differ.

use clarion_analytics::counts::Latency;
use clarion_analytics::query::{self, MINUTES_UP_TO_MS};
use clarion_analytics::{Counts, Dimension, Granularity, Report, ReportQuery};
use clarion_domain::error::quote;
use clarion_domain::Violations;
use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::state::GatewayState;

/// The default range: the last day.
pub const DEFAULT_RANGE_MS: i64 = 24 * 3_600_000;

fn text(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// `from` and `to` (RFC 3339, either may be empty), checked, in ms.
pub fn parse_range(from: &str, to: &str, now_ms: i64) -> Result<(i64, i64), Violations> {
    let mut v = Violations::default();
    let mut instant = |field: &str, raw: &str| {
        text(raw).and_then(|raw| {
            clarion_domain::time::parse_instant(raw)
                .map_err(|e| v.push(field, e))
                .ok()
        })
    };
    let to_ms = instant("to", to);
    let from_ms = instant("from", from);
    v.into_result()?;
    let to_ms = to_ms.unwrap_or(now_ms);
    let from_ms = from_ms.unwrap_or(to_ms - DEFAULT_RANGE_MS);
    if from_ms >= to_ms {
        return Err(Violations::single("from", "must be before `to`"));
    }
    Ok((from_ms, to_ms))
}

/// The report a request asks for, checked, naming each field at fault.
pub fn parse_report(
    r: &api::AnalyticsReportRequest,
    now_ms: i64,
) -> Result<ReportQuery, Violations> {
    let mut v = Violations::default();
    // A value at fault is pushed and replaced by a default, never used:
    // the violations are returned first.
    let dimension = text(&r.dimension).map_or(Dimension::All, |d| {
        d.parse::<Dimension>().unwrap_or_else(|()| {
            v.push(
                "dimension",
                format!(
                    "{} is not a dimension: one of {}",
                    quote(d),
                    Dimension::NAMES
                ),
            );
            Dimension::All
        })
    });
    let granularity = text(&r.granularity).map(|g| {
        Granularity::parse(g).unwrap_or_else(|| {
            v.push(
                "granularity",
                format!("{} is not a granularity: minute or hour", quote(g)),
            );
            Granularity::Hour
        })
    });
    let (from_ms, to_ms) = parse_range(&r.from, &r.to, now_ms).unwrap_or_else(|e| {
        v.0.extend(e.0);
        (0, 1)
    });
    v.into_result()?;
    let granularity = match granularity {
        Some(g) => g,
        None if to_ms - from_ms <= MINUTES_UP_TO_MS => Granularity::Minute,
        None => Granularity::Hour,
    };
    let q = ReportQuery {
        dimension,
        value: text(&r.value).map(str::to_string),
        from_ms,
        to_ms,
        granularity,
    };
    q.check()?;
    Ok(q)
}

fn latency_pb(c: &Counts, l: Latency, with_buckets: bool) -> api::LatencySummary {
    let h = c.latency(l);
    api::LatencySummary {
        stage: l.as_str().into(),
        count: h.count(),
        p50_ms: h.quantile_ms(0.5),
        p95_ms: h.quantile_ms(0.95),
        mean_ms: h.mean_ms(),
        buckets: if with_buckets {
            h.buckets()
                .into_iter()
                .map(|(le, count)| api::LatencyBucket {
                    le_ms: le.unwrap_or(0),
                    count,
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

pub fn counts_pb(c: &Counts, with_buckets: bool) -> api::AnalyticsCounts {
    api::AnalyticsCounts {
        attempted: c.attempted,
        sent: c.sent,
        delivered: c.delivered,
        failed: c.failed,
        bounced: c.bounced,
        opened: c.opened,
        clicked: c.clicked,
        delivery_rate: c.delivery_rate(),
        failure_rate: c.failure_rate(),
        open_rate: c.open_rate(),
        click_rate: c.click_rate(),
        latencies: Latency::ALL
            .into_iter()
            .map(|l| latency_pb(c, l, with_buckets))
            .collect(),
    }
}

pub fn report_pb(r: &Report) -> api::AnalyticsReport {
    api::AnalyticsReport {
        dimension: r.query.dimension.as_str().into(),
        granularity: r.query.granularity.as_str().into(),
        from_ms: r.query.from_ms,
        to_ms: r.query.to_ms,
        groups: r
            .groups
            .iter()
            .map(|g| api::AnalyticsGroup {
                value: g.value.clone(),
                totals: Some(counts_pb(&g.totals, true)),
                series: g
                    .series
                    .iter()
                    .map(|p| api::AnalyticsPoint {
                        start_ms: p.start_ms,
                        counts: Some(counts_pb(&p.counts, false)),
                    })
                    .collect(),
            })
            .collect(),
        truncated: r.truncated,
    }
}

fn unavailable(e: query::QueryError) -> ApiError {
    ApiError::Unavailable(format!("analytics: {e}"))
}

/// The report of `tenant` that `r` asks for.
pub async fn report(
    s: &GatewayState,
    tenant: &str,
    r: &api::AnalyticsReportRequest,
) -> Result<api::AnalyticsReport, ApiError> {
    let q = parse_report(r, s.clock.now_ms())?;
    let report = query::report(&*s.store, tenant, &q)
        .await
        .map_err(unavailable)?;
    Ok(report_pb(&report))
}

/// The providers' health of `tenant` over the range `r` names.
pub async fn provider_health(
    s: &GatewayState,
    tenant: &str,
    r: &api::ProviderHealthRequest,
) -> Result<api::ProviderHealthReport, ApiError> {
    let (from_ms, to_ms) = parse_range(&r.from, &r.to, s.clock.now_ms())?;
    let g = if to_ms - from_ms <= MINUTES_UP_TO_MS {
        Granularity::Minute
    } else {
        Granularity::Hour
    };
    ReportQuery {
        dimension: Dimension::Provider,
        value: None,
        from_ms,
        to_ms,
        granularity: g,
    }
    .check()?;
    let rows = query::provider_health(&*s.store, tenant, from_ms, to_ms, g)
        .await
        .map_err(unavailable)?;
    Ok(api::ProviderHealthReport {
        from_ms,
        to_ms,
        providers: rows
            .into_iter()
            .map(|p| api::ProviderHealth {
                provider: p.provider,
                attempted: p.totals.attempted,
                sent: p.totals.sent,
                failed: p.totals.failed,
                error_rate: p.error_rate,
                p95_latency_ms: p.p95_latency_ms,
                last_success_ms: p.last.last_success_ms,
                last_failure_ms: p.last.last_failure_ms,
                last_error: p.last.last_error,
            })
            .collect(),
    })
}

pub struct AnalyticsApi(pub GatewayState);

#[tonic::async_trait]
impl api::analytics_service_server::AnalyticsService for AnalyticsApi {
    async fn get_report(
        &self,
        req: Request<api::AnalyticsReportRequest>,
    ) -> Result<Response<api::AnalyticsReport>, Status> {
        let caller = crate::auth::tenant(&self.0, req.metadata()).await?;
        let r = report(&self.0, caller.tenant.as_str(), req.get_ref()).await?;
        Ok(Response::new(r))
    }

    async fn get_provider_health(
        &self,
        req: Request<api::ProviderHealthRequest>,
    ) -> Result<Response<api::ProviderHealthReport>, Status> {
        let caller = crate::auth::tenant(&self.0, req.metadata()).await?;
        let r = provider_health(&self.0, caller.tenant.as_str(), req.get_ref()).await?;
        Ok(Response::new(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: api::AnalyticsReportRequest) -> String {
        parse_report(&r, 10 * DEFAULT_RANGE_MS).unwrap_err().0[0]
            .field
            .clone()
    }

    #[test]
    fn bad_parameters_name_their_field_and_defaults_fit_the_range() {
        let req = |d: &str, g: &str, from: &str, to: &str| api::AnalyticsReportRequest {
            dimension: d.into(),
            granularity: g.into(),
            from: from.into(),
            to: to.into(),
            value: String::new(),
        };
        assert_eq!(field(req("country", "", "", "")), "dimension");
        assert_eq!(field(req("", "week", "", "")), "granularity");
        assert_eq!(field(req("", "", "yesterday", "")), "from");
        assert_eq!(field(req("", "", "", "2026-13-01")), "to");
        assert_eq!(
            field(req("", "", "2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z")),
            "from"
        );
        // Two days by minute is over the minute limit.
        assert_eq!(
            field(req(
                "",
                "minute",
                "2026-03-01T00:00:00Z",
                "2026-03-03T00:00:00Z"
            )),
            "from"
        );
        let q = parse_report(&req("channel", "", "", ""), 10 * DEFAULT_RANGE_MS).unwrap();
        assert_eq!(q.dimension, Dimension::Channel);
        assert_eq!(q.granularity, Granularity::Hour, "a day defaults to hours");
        assert_eq!(q.to_ms - q.from_ms, DEFAULT_RANGE_MS);
        let q = parse_report(
            &req("", "", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z"),
            0,
        )
        .unwrap();
        assert_eq!(q.granularity, Granularity::Minute);
    }
}
