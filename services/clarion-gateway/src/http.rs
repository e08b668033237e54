//! HTTP side endpoints: liveness, readiness, Prometheus metrics, and (from
//! the gateway) engagement tracking.
//!
//! With an internal listener configured (`http.internal-listen`),
//! `/metrics` is served only there, so the public port exposes no operator
//! surface; health endpoints are on both (load balancers probe the public one).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    ready: watch::Receiver<bool>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` turns true.
/// `ready` turns true once every role of this process has started.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: watch::Receiver<bool>,
    extra: Option<Router>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_split(addr, None, metrics, ready, extra, Router::new(), shutdown).await
}

/// [`serve`], with `/metrics` and the `operator` routes (e.g.
/// [`partition_routes`]) moved to `internal` when given.
pub async fn serve_split(
    addr: SocketAddr,
    internal: Option<SocketAddr>,
    metrics: PrometheusHandle,
    ready: watch::Receiver<bool>,
    extra: Option<Router>,
    operator: Router,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = HttpState { metrics, ready };
    let Some(internal) = internal else {
        let app = health()
            .merge(metrics_route())
            .with_state(state)
            .merge(operator);
        return listen(addr, app, extra, "/healthz, /readyz, /metrics", shutdown).await;
    };
    let public = health().with_state(state.clone());
    let inside = health()
        .merge(metrics_route())
        .with_state(state)
        .merge(operator);
    // The first to fail (e.g. a port in use) ends both.
    tokio::try_join!(
        listen(addr, public, extra, "/healthz, /readyz", shutdown.clone()),
        listen(
            internal,
            inside,
            None,
            "internal: /healthz, /readyz, /metrics",
            shutdown
        ),
    )
    .map(|_| ())
}

fn metrics_route() -> Router<HttpState> {
    Router::new().route(
        "/metrics",
        get(|State(s): State<HttpState>| async move { s.metrics.render() }),
    )
}

fn health() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                if *s.ready.borrow() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
}

async fn listen(
    addr: SocketAddr,
    app: Router,
    extra: Option<Router>,
    what: &str,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = match extra {
        Some(more) => app.merge(more),
        None => app,
    };
    // Unknown routes and methods answer problem+json too (after the merge:
    // the 405 fallback applies to the routes registered so far).
    let app = crate::problem::with_fallbacks(app);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP listening ({what})");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// `GET /v1/admin/partitions`: the processor partitions of this process that
/// are stopped at a record (until an operator parks it) or paused (storage
/// full), as JSON: `{"partitions": [{processor, topic, partition, state,
/// offset, reason, since_ms}]}`. Empty when everything runs. `/readyz` is
/// not affected: the rest of the process serves on.
pub fn partition_routes(report: clarion_runtime::quarantine::PartitionReport) -> Router {
    Router::new().route(
        "/v1/admin/partitions",
        get(move || {
            let report = report.clone();
            async move { axum::Json(serde_json::json!({ "partitions": report.snapshot() })) }
        }),
    )
}
