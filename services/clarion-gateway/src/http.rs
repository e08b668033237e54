//! HTTP side endpoints: liveness, readiness, Prometheus metrics, and (from
//! the gateway) engagement tracking.

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
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
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
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { s.metrics.render() }),
        )
        .with_state(HttpState { metrics, ready });
    let app = match extra {
        Some(more) => app.merge(more),
        None => app,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "HTTP listening (/healthz, /readyz, /metrics)");
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
