//! OpenTelemetry traces end to end (issue #30): a real `clarion serve`
//! with `telemetry.otlp-endpoint` set exports spans over OTLP/gRPC to a
//! collector stand-in (a local tonic server implementing the OTLP trace
//! service). Each notification is one trace, keyed by its id, whose spans
//! cover the gateway (the API call), the router and the dispatcher (the
//! provider's answer, and the SMTP call as a `tracing` span), joined
//! parent to child. Two tenants: each trace holds its own tenant only.

#[path = "e2e/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use support::*;

/// What the stand-in received: every span, with its service name.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn string(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
}

async fn start_collector() -> (SocketAddr, Collector) {
    let collector = Collector::default();
    // Bound here, on a port the kernel picks: a port found free and bound
    // later may be taken in between (a straggler of an earlier test binary).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let incoming =
        tonic::transport::server::TcpIncoming::from_listener(listener, true, None).unwrap();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the collector did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, collector)
}

/// The spans of one notification's trace.
fn trace_of(c: &Collector, notification_id: &str) -> Vec<Span> {
    let want = hex::decode(notification_id).unwrap();
    c.spans
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.trace_id == want)
        .map(|(_, s)| s.clone())
        .collect()
}

/// Waits until the trace has spans of the gateway, the router and the
/// dispatcher's provider answer.
async fn wait_trace(c: &Collector, id: &str) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = trace_of(c, id);
        let components: HashSet<String> = spans
            .iter()
            .filter_map(|s| attr(s, "clarion.component"))
            .collect();
        let sent = spans
            .iter()
            .any(|s| s.name == "dispatcher notification.sent");
        let call = spans.iter().any(|s| s.name == "provider.send");
        // A parent span ends, and is exported, after its children: the
        // trace is whole once every parent named is in it. One that never
        // comes (a parent outside the trace) fails at the deadline.
        let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
        let orphans: Vec<&str> = spans
            .iter()
            .filter(|s| !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_slice()))
            .map(|s| s.name.as_str())
            .collect();
        if ["gateway", "router", "dispatcher"]
            .iter()
            .all(|c| components.contains(*c))
            && sent
            && call
            && orphans.is_empty()
        {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {id} incomplete: {:?}; spans whose parent is not in it: {orphans:?}; every span: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
            c.spans
                .lock()
                .unwrap()
                .iter()
                .map(|(_, s)| (s.name.clone(), hex::encode(&s.trace_id)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_notification_spans_gateway_router_and_dispatcher() {
    let (collector_addr, collector) = start_collector().await;
    // Email goes to a real SMTP server: a provider call to trace (the sink
    // records its sends in the dispatcher's commit, without a call).
    let smtp = SmtpServer::start();
    let config = format!(
        "[telemetry]\notlp-endpoint = \"http://{collector_addr}\"\nservice-name = \"clarion-e2e\"\nexport-interval-ms = 100\n\
         [providers.defaults]\nemail = \"smtp\"\n\
         [providers.smtp]\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"clarion@example.test\"\n",
        smtp.port
    );
    let node = ServeProcess::start_with_config(&config).await;
    let ch = channel(node.grpc).await;
    let acme = node.demo_key.clone();
    let globex = create_tenant_with(&ch, &node.admin_token, "globex").await;
    for key in [&acme, &globex] {
        put_default_template(
            &ch,
            key,
            "trace-mail",
            "email",
            "Hi",
            "Hello {{ payload.name }}",
        )
        .await;
        apply_workflows(
            &ch,
            key,
            &["id: traced\nsteps:\n  - { id: mail, type: send, channel: email, template: trace-mail }\n"],
        )
        .await;
    }
    let payload = r#"{"name":"Ana"}"#;
    let a = trigger_one(&ch, &acme, "traced", "ana", "ana@example.test", payload).await;
    let b = trigger_one(&ch, &globex, "traced", "ana", "ana@example.test", payload).await;

    for (id, tenant) in [(&a, "demo"), (&b, "globex")] {
        let spans = wait_trace(&collector, id).await;
        // One root: the API call that accepted the notification.
        let roots: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .collect();
        assert_eq!(
            roots.len(),
            1,
            "{:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        assert_eq!(roots[0].name, "gateway notification.triggered");
        // Every other span hangs under a span of the same trace: `wait_trace`
        // returns only then.
        // The router's decision hangs under the API call, the provider's
        // answer under the router's dispatch request.
        let by_name = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no span {name}"))
        };
        let dispatch = by_name("router notification.dispatch_requested");
        assert_eq!(dispatch.parent_span_id, roots[0].span_id);
        let sent = by_name("dispatcher notification.sent");
        assert_eq!(sent.parent_span_id, dispatch.span_id);
        let call = by_name("provider.send");
        assert_eq!(call.parent_span_id, dispatch.span_id);
        assert_eq!(attr(call, "provider").as_deref(), Some("smtp"));
        // Each span is its own tenant's.
        for s in spans.iter().filter(|s| s.name != "provider.send") {
            assert_eq!(
                attr(s, "clarion.tenant").as_deref(),
                Some(tenant),
                "{}",
                s.name
            );
            assert_eq!(
                attr(s, "clarion.notification_id").as_deref(),
                Some(id.as_str())
            );
        }
    }
    let services: HashSet<String> = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(svc, _)| svc.clone())
        .collect();
    assert_eq!(services, HashSet::from(["clarion-e2e".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_endpoint_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clarion.toml");
    std::fs::write(&config, "[telemetry]\notlp-endpoint = \"localhost:4317\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .current_dir(dir.path())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("telemetry.otlp-endpoint"), "{err}");
}
