//! Dashboards: the tenant's delivery analytics ([`clarion_analytics`],
//! read through the gateway's [`analytics`] like `GET /v1/analytics/...`)
//! as charts and tables — sends, deliveries and failures over time,
//! opens and clicks, the trigger → sent latency histogram, a breakdown by
//! channel, provider, workflow or template, and provider health.
//!
//! `GET /dashboards` with a GET form (range, granularity, breakdown); the
//! charts are inline SVG drawn here ([`crate::chart`]), each with the
//! same figures in a table.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clarion_analytics::{Dimension, Granularity};
use clarion_domain::tenant::Scope;
use clarion_gateway::analytics;
use clarion_gateway::error::ApiError;
use clarion_proto::api;
use minijinja::{context, Value};
use serde::Serialize;

use crate::chart::{self, Line};
use crate::page::{self, PageError};
use crate::session::Session;
use crate::Console;

pub const TEMPLATES: &[(&str, &str)] = &[(
    "dashboards/page.html",
    include_str!("../templates/dashboards/page.html"),
)];

pub fn routes() -> Router<Console> {
    Router::new().route("/dashboards", get(page))
}

/// The form's values as given (empty: the default).
#[derive(Debug, Default, Serialize)]
struct Form {
    dimension: String,
    from: String,
    to: String,
    granularity: String,
}

#[derive(Debug, Serialize)]
struct FieldError {
    field: String,
    message: String,
}

fn parse_form(raw: &str) -> Result<Form, FieldError> {
    let mut f = Form::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "dimension" => f.dimension = v,
            "from" => f.from = v,
            "to" => f.to = v,
            "granularity" => f.granularity = v,
            other => {
                return Err(FieldError {
                    field: other.chars().take(64).collect(),
                    message: "is not a setting of this page".into(),
                })
            }
        }
    }
    Ok(f)
}

/// A ratio as a percentage, `—` without a denominator.
fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{:.1} %", r * 100.0))
}

fn ms(v: Option<i64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 60_000 => format!("≤ {} min", v / 60_000),
        Some(v) if v >= 1_000 => format!("≤ {} s", v / 1_000),
        Some(v) => format!("≤ {v} ms"),
    }
}

/// A row of the tables: counts and rates of one value.
#[derive(Serialize)]
struct Row {
    value: String,
    attempted: u64,
    sent: u64,
    delivered: u64,
    failed: u64,
    bounced: u64,
    opened: u64,
    clicked: u64,
    delivery_rate: String,
    failure_rate: String,
    open_rate: String,
    click_rate: String,
    p95_trigger_to_sent: String,
}

fn latency<'a>(c: &'a api::AnalyticsCounts, stage: &str) -> Option<&'a api::LatencySummary> {
    c.latencies.iter().find(|l| l.stage == stage)
}

fn row(value: &str, c: &api::AnalyticsCounts) -> Row {
    Row {
        value: value.to_string(),
        attempted: c.attempted,
        sent: c.sent,
        delivered: c.delivered,
        failed: c.failed,
        bounced: c.bounced,
        opened: c.opened,
        clicked: c.clicked,
        delivery_rate: pct(c.delivery_rate),
        failure_rate: pct(c.failure_rate),
        open_rate: pct(c.open_rate),
        click_rate: pct(c.click_rate),
        p95_trigger_to_sent: ms(latency(c, "trigger_to_sent").and_then(|l| l.p95_ms)),
    }
}

/// The report's buckets from `from` to `to`, every one (zeros where
/// nothing was counted), with their labels.
fn dense(r: &api::AnalyticsReport) -> (Vec<String>, Vec<api::AnalyticsCounts>) {
    let g = Granularity::parse(&r.granularity).unwrap_or(Granularity::Hour);
    let series = r.groups.first().map(|g| &g.series[..]).unwrap_or_default();
    let (mut labels, mut points) = (Vec::new(), Vec::new());
    let mut at = g.start(r.from_ms);
    let mut next = series.iter().peekable();
    while at < r.to_ms {
        let text = clarion_domain::time::format_instant(at);
        labels.push(match g {
            Granularity::Minute => text[11..16].to_string(),
            Granularity::Hour => format!("{} {}h", &text[5..10], &text[11..13]),
        });
        let here = next.next_if(|p| p.start_ms == at);
        points.push(here.and_then(|p| p.counts.clone()).unwrap_or_default());
        at += g.ms();
    }
    (labels, points)
}

fn charts(all: &api::AnalyticsReport) -> Value {
    let (labels, points) = dense(all);
    let line = |name, f: fn(&api::AnalyticsCounts) -> u64| Line {
        name,
        values: points.iter().map(|c| f(c) as f64).collect(),
    };
    let volume = chart::lines(
        "chart-volume",
        "Sends per bucket",
        &labels,
        &[
            line("attempted", |c| c.attempted),
            line("delivered", |c| c.delivered),
            line("failed", |c| c.failed),
        ],
    );
    let engagement = chart::lines(
        "chart-engagement",
        "Opens and clicks per bucket",
        &labels,
        &[line("opened", |c| c.opened), line("clicked", |c| c.clicked)],
    );
    let totals = all
        .groups
        .first()
        .and_then(|g| g.totals.clone())
        .unwrap_or_default();
    let histogram: Vec<(String, f64)> = latency(&totals, "trigger_to_sent")
        .map(|l| {
            l.buckets
                .iter()
                .map(|b| match b.le_ms {
                    0 => ("more".to_string(), b.count as f64),
                    le => (ms(Some(le)), b.count as f64),
                })
                .collect()
        })
        .unwrap_or_default();
    let latency_svg = chart::bars(
        "chart-latency",
        "Trigger to sent latency (sends per bucket)",
        &histogram,
    );
    context! {
        volume => Value::from_safe_string(volume),
        engagement => Value::from_safe_string(engagement),
        latency => Value::from_safe_string(latency_svg),
    }
}

#[derive(Serialize)]
struct LatencyRow {
    stage: String,
    count: u64,
    p50: String,
    p95: String,
}

#[derive(Serialize)]
struct ProviderRow {
    provider: String,
    attempted: u64,
    failed: u64,
    error_rate: String,
    p95: String,
    last_success_ms: i64,
    last_failure_ms: i64,
    last_error: String,
}

/// Everything the page shows for a valid form.
async fn figures(console: &Console, tenant: &str, f: &Form) -> Result<Value, ApiError> {
    let gw = &console.gw;
    let req = |dimension: &str| api::AnalyticsReportRequest {
        dimension: dimension.into(),
        value: String::new(),
        from: f.from.clone(),
        to: f.to.clone(),
        granularity: f.granularity.clone(),
    };
    let breakdown = if f.dimension.is_empty() {
        "channel"
    } else {
        f.dimension.as_str()
    };
    let by = analytics::report(gw, tenant, &req(breakdown)).await?;
    let all = analytics::report(gw, tenant, &req("all")).await?;
    let health = analytics::provider_health(
        gw,
        tenant,
        &api::ProviderHealthRequest {
            from: f.from.clone(),
            to: f.to.clone(),
        },
    )
    .await?;
    let totals = all
        .groups
        .first()
        .and_then(|g| g.totals.clone())
        .unwrap_or_default();
    let latencies: Vec<LatencyRow> = totals
        .latencies
        .iter()
        .map(|l| LatencyRow {
            stage: l.stage.replace('_', " "),
            count: l.count,
            p50: ms(l.p50_ms),
            p95: ms(l.p95_ms),
        })
        .collect();
    let rows: Vec<Row> = by
        .groups
        .iter()
        .map(|g| row(&g.value, &g.totals.clone().unwrap_or_default()))
        .collect();
    let providers: Vec<ProviderRow> = health
        .providers
        .into_iter()
        .map(|p| ProviderRow {
            error_rate: pct(p.error_rate),
            p95: ms(p.p95_latency_ms),
            provider: p.provider,
            attempted: p.attempted,
            failed: p.failed,
            last_success_ms: p.last_success_ms,
            last_failure_ms: p.last_failure_ms,
            last_error: p.last_error,
        })
        .collect();
    Ok(context! {
        totals => row("all", &totals),
        charts => charts(&all),
        latencies, rows, providers,
        breakdown,
        truncated => by.truncated,
        granularity => all.granularity,
        from_ms => all.from_ms,
        to_ms => all.to_ms,
    })
}

async fn page(
    State(console): State<Console>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let dimensions: Vec<&str> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
    let (form, errors) = match parse_form(&raw.unwrap_or_default()) {
        Ok(form) => match figures(&console, caller.tenant.as_str(), &form).await {
            Ok(figures) => {
                let ctx = context! { q => form, dimensions, ..figures };
                return page::render(&console, &session, "dashboards/page.html", ctx);
            }
            Err(ApiError::Invalid(v)) => {
                let errors: Vec<FieldError> =
                    v.0.into_iter()
                        .map(|f| FieldError {
                            field: f.field,
                            message: f.description,
                        })
                        .collect();
                (form, errors)
            }
            Err(e) => return Err(e.into()),
        },
        Err(e) => (Form::default(), vec![e]),
    };
    let ctx = context! { q => form, dimensions, errors };
    let page = page::render(&console, &session, "dashboards/page.html", ctx)?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}
