//! Logs and traces of a running node: the `tracing` subscriber on stderr
//! and, when `telemetry.otlp-endpoint` is set, OpenTelemetry traces
//! exported over OTLP/gRPC (issue #30; how spans are made is in
//! `clarion_runtime::telemetry`).

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `telemetry`: OpenTelemetry tracing. Off unless an endpoint is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Setting it
    /// turns tracing on: one trace per notification.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub service_name: String,
    /// How often buffered spans are exported.
    pub export_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "clarion".into(),
            export_interval_ms: 5_000,
        }
    }
}

impl TelemetryConfig {
    /// A wrong endpoint is a configuration error, not a node that
    /// silently traces nothing.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.otlp_endpoint {
            let ok = url.starts_with("http://") || url.starts_with("https://");
            anyhow::ensure!(
                ok && url.len() > "http://".len(),
                "telemetry.otlp-endpoint: {url:?} is not an http:// or https:// URL"
            );
        }
        anyhow::ensure!(
            self.export_interval_ms > 0,
            "telemetry.export-interval-ms: must be positive"
        );
        Ok(())
    }
}

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("CLARION_LOG").unwrap_or_else(|_| "info".into())
}

/// The log on stderr, at the level `CLARION_LOG` sets (default `info`).
fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter())
}

/// Logs to stderr only (the CLI's commands).
pub fn init_logs() {
    tracing_subscriber::registry().with(stderr_layer()).init();
}

/// The log on stderr plus the `tracing` spans as OpenTelemetry spans of
/// `provider` (e.g. a provider call, joined to its notification's trace by
/// `clarion_runtime::telemetry::join`). The spans keep their own level
/// filter: a quiet log (`CLARION_LOG=warn`) must not thin the traces.
fn subscriber(provider: &SdkTracerProvider) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::Layer;
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("clarion"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(stderr_layer())
        .with(spans)
}

/// Keeps the exporter alive; flushes what is buffered when dropped.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Logs to stderr and, if configured, traces over OTLP. Must run inside
/// the tokio runtime (the gRPC exporter needs it).
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<Guard> {
    let Some(endpoint) = &cfg.otlp_endpoint else {
        init_logs();
        return Ok(Guard(None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .context("telemetry: building the OTLP exporter")?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    subscriber(&provider).init();
    clarion_runtime::telemetry::install(opentelemetry::global::tracer("clarion"));
    tracing::info!(%endpoint, "tracing on: spans exported over OTLP");
    Ok(Guard(Some(provider)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    struct Memory(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Memory {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn a_joined_tracing_span_lands_in_the_notifications_trace() {
        let memory = Memory::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(memory.clone())
            .build();
        let trace =
            opentelemetry::trace::TraceId::from_hex("01a24f541af7855d1a7d7b9c04af72d3").unwrap();
        let cause = clarion_domain::Id([7; 16]);
        tracing::subscriber::with_default(subscriber(&provider), || {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let span = tracing::info_span!("provider.send", provider = "sink");
            span.set_parent(clarion_runtime::telemetry::parent_context(trace, &cause));
            span.in_scope(|| tracing::info!("sending"));
        });
        let spans = memory.0.lock().unwrap();
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!(spans[0].name, "provider.send");
        assert_eq!(spans[0].span_context.trace_id(), trace);
        assert_eq!(
            spans[0].parent_span_id,
            clarion_runtime::telemetry::span_id(&cause)
        );
    }

    #[test]
    fn endpoints_must_be_urls() {
        let mut cfg = TelemetryConfig::default();
        assert!(cfg.check().is_ok());
        cfg.otlp_endpoint = Some("localhost:4317".into());
        assert!(cfg
            .check()
            .unwrap_err()
            .to_string()
            .contains("telemetry.otlp-endpoint"));
        cfg.otlp_endpoint = Some("http://127.0.0.1:4317".into());
        assert!(cfg.check().is_ok());
    }
}
