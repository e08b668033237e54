//! Delivery analytics end to end (issue #30): a scripted mix of outcomes
//! on two tenants — delivered sends, failed ones, opens and clicks a
//! minute later — through the real pipeline (gateway, router, dispatcher,
//! analytics processor on the embedded backend), then the REST and gRPC
//! reports answer the expected counts, rates, latency buckets, minute and
//! hour series and provider health, each tenant only its own. Bad
//! parameters get problem+json (REST) or INVALID_ARGUMENT (gRPC) naming
//! the field. Time is the manual clock, so buckets are exact.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_proto::api;
use clarion_runtime::ManualClock;
use serde_json::Value;
use support::*;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_types::StatusExt;

/// 2026-03-02T10:00:00Z: an hour start, so minute and hour buckets are known.
const T0: i64 = 1_772_445_600_000;
/// The payload the appointment template renders (`payload.day`).
const DAY: &str = r#"{"day":"Tuesday"}"#;
const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    clock: ManualClock,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    async fn start(cfg: Config, now: i64) -> Running {
        let clock = ManualClock::new(now);
        let node = Node::open(cfg.clone())
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for role in [
            Role::Projector,
            Role::Router,
            Role::Dispatcher,
            Role::Analytics,
        ] {
            node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
        }
        let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
        node.spawn_role(Role::Gateway, &mut tasks, admin, &rx)
            .await
            .unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let routes = node.tracking_routes().await.unwrap();
        let listener = tokio::net::TcpListener::bind(http).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(cfg.grpc.listen).is_err() {
            assert!(Instant::now() < deadline, "gRPC did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Running {
            grpc: cfg.grpc.listen,
            http,
            clock,
            shutdown,
            tasks,
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("role task panicked").expect("role failed");
        }
    }

    /// `GET path` with `key`: the status and the JSON body.
    async fn get(&self, key: &str, path: &str) -> (u16, String, Value) {
        let (status, head, body) =
            http_call("GET", &format!("http://{}{path}", self.http), key, "").await;
        (status, head, json_of(&body))
    }

    /// Polls the report at `path` until `done` holds; the last report.
    async fn report_until(&self, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, _, body) = self.get(key, path).await;
            assert_eq!(status, 200, "{path}: {body}");
            if done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{path} never got there: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The group of `value` in a report.
fn group<'a>(report: &'a Value, value: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["value"] == value)
        .unwrap_or_else(|| panic!("no group {value:?} in {report}"))
}

fn values(report: &Value) -> Vec<String> {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["value"].as_str().unwrap().to_string())
        .collect()
}

fn counts(c: &Value) -> [u64; 7] {
    [
        "attempted",
        "sent",
        "delivered",
        "failed",
        "bounced",
        "opened",
        "clicked",
    ]
    .map(|k| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}")))
}

fn rate(c: &Value, name: &str) -> f64 {
    c[name].as_f64().unwrap_or_else(|| panic!("{name} in {c}"))
}

fn latency<'a>(c: &'a Value, stage: &str) -> &'a Value {
    c["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} in {c}"))
}

async fn engage(run: &Running, key: &str, id: &str, kind: &str) {
    let url = format!("http://{}/v1/notifications/{id}/engagement", run.http);
    let (status, _, body) = http_call("POST", &url, key, &format!(r#"{{"kind":"{kind}"}}"#)).await;
    assert_eq!(status, 202, "engagement {kind} on {id}: {body}");
}

const ALL: &str =
    "/v1/analytics/report?dimension=all&from=2026-03-02T10:00:00Z&to=2026-03-02T11:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_mix_on_two_tenants_reports_its_counts_rates_and_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(test_config(dir.path()), T0 + 5_000).await;
    let ch = channel(run.grpc).await;
    let a = create_tenant(&ch, "acme").await;
    let b = create_tenant(&ch, "globex").await;
    // `sink` delivers at once; `smtp` is not configured here, so its
    // sends fail for good (bounces).
    appointment_workflow(&ch, &a, "welcome", "sink").await;
    appointment_workflow(&ch, &a, "alerts", "smtp").await;
    appointment_workflow(&ch, &b, "welcome", "sink").await;

    let mut a_ids = Vec::new();
    for i in 0..6 {
        let sub = format!("a{i}");
        a_ids.push(trigger_one(&ch, &a, "welcome", &sub, "a@example.com", DAY).await);
    }
    for i in 0..2 {
        trigger_one(&ch, &a, "alerts", &format!("x{i}"), "x@example.com", DAY).await;
    }
    let mut b_ids = Vec::new();
    for i in 0..3 {
        let sub = format!("b{i}");
        b_ids.push(trigger_one(&ch, &b, "welcome", &sub, "b@example.com", DAY).await);
    }
    let report = run
        .report_until(&a, ALL, |r| {
            r["groups"][0]["totals"]["attempted"] == 8 && r["groups"][0]["totals"]["sent"] == 6
        })
        .await;
    assert_eq!(
        report["granularity"], "minute",
        "an hour defaults to minutes"
    );
    run.report_until(&b, ALL, |r| r["groups"][0]["totals"]["sent"] == 3)
        .await;

    // A minute later: opens (one twice), clicks (one without an open:
    // a click is an open too), and one open at B.
    run.clock.advance(Duration::from_secs(60));
    for id in &a_ids[..3] {
        engage(&run, &a, id, "opened").await;
    }
    engage(&run, &a, &a_ids[0], "opened").await;
    engage(&run, &a, &a_ids[2], "clicked").await;
    engage(&run, &a, &a_ids[3], "clicked").await;
    engage(&run, &b, &b_ids[0], "opened").await;

    let report = run
        .report_until(&a, ALL, |r| r["groups"][0]["totals"]["clicked"] == 2)
        .await;
    let all = group(&report, "all");
    assert_eq!(counts(&all["totals"]), [8, 6, 6, 2, 2, 4, 2]);
    assert_eq!(rate(&all["totals"], "delivery_rate"), 0.75);
    assert_eq!(rate(&all["totals"], "failure_rate"), 0.25);
    assert_eq!(rate(&all["totals"], "open_rate"), 4.0 / 6.0);
    assert_eq!(rate(&all["totals"], "click_rate"), 2.0 / 6.0);
    // Sent at once after the trigger; opened a minute after the send.
    assert_eq!(latency(&all["totals"], "trigger_to_sent")["p95_ms"], 5);
    let opened = latency(&all["totals"], "sent_to_opened");
    assert_eq!(opened["count"], 4);
    assert_eq!(opened["p50_ms"], 60_000);
    // Two minutes: the sends, then the engagement.
    let series = all["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(series[0]["start_ms"], T0);
    assert_eq!(counts(&series[0]["counts"]), [8, 6, 6, 2, 2, 0, 0]);
    assert_eq!(series[1]["start_ms"], T0 + 60_000);
    assert_eq!(counts(&series[1]["counts"]), [0, 0, 0, 0, 0, 4, 2]);

    // By hour: one bucket with everything.
    let (_, _, hourly) = run.get(&a, &format!("{ALL}&granularity=hour")).await;
    let series = group(&hourly, "all")["series"].as_array().unwrap().clone();
    assert_eq!(series.len(), 1);
    assert_eq!(counts(&series[0]["counts"]), [8, 6, 6, 2, 2, 4, 2]);

    // By workflow and template: the mix splits as triggered.
    let (_, _, by_wf) = run
        .get(&a, "/v1/analytics/report?dimension=workflow&from=2026-03-02T10:00:00Z&to=2026-03-02T11:00:00Z")
        .await;
    assert_eq!(values(&by_wf), ["welcome", "alerts"], "most attempts first");
    assert_eq!(
        counts(&group(&by_wf, "welcome")["totals"]),
        [6, 6, 6, 0, 0, 4, 2]
    );
    let alerts = &group(&by_wf, "alerts")["totals"];
    assert_eq!(counts(alerts), [2, 0, 0, 2, 2, 0, 0]);
    assert_eq!(rate(alerts, "delivery_rate"), 0.0);
    assert!(alerts["open_rate"].is_null(), "no deliveries: no open rate");
    let (_, _, by_tpl) = run
        .get(&a, "/v1/analytics/report?dimension=template&value=welcome-tpl&from=2026-03-02T10:00:00Z&to=2026-03-02T11:00:00Z")
        .await;
    assert_eq!(values(&by_tpl), ["welcome-tpl"]);
    assert_eq!(
        counts(&group(&by_tpl, "welcome-tpl")["totals"]),
        [6, 6, 6, 0, 0, 4, 2]
    );

    // Provider health: the sink never failed, smtp always did.
    let (_, _, health) = run
        .get(
            &a,
            "/v1/analytics/providers?from=2026-03-02T10:00:00Z&to=2026-03-02T11:00:00Z",
        )
        .await;
    let providers = health["providers"].as_array().unwrap();
    let p = |name: &str| providers.iter().find(|p| p["provider"] == name).unwrap();
    assert_eq!(providers.len(), 2, "{health}");
    assert_eq!(p("sink")["error_rate"], 0.0);
    assert_eq!(p("sink")["last_success_ms"], T0 + 5_000);
    assert_eq!(p("sink")["p95_latency_ms"], 5);
    assert_eq!(p("smtp")["error_rate"], 1.0);
    assert_eq!(p("smtp")["last_success_ms"], 0);
    assert!(
        p("smtp")["last_error"]
            .as_str()
            .unwrap()
            .contains("not configured"),
        "{health}"
    );

    // B sees its own figures only: none of A's workflows or providers.
    let report = run
        .report_until(&b, ALL, |r| r["groups"][0]["totals"]["opened"] == 1)
        .await;
    assert_eq!(
        counts(&group(&report, "all")["totals"]),
        [3, 3, 3, 0, 0, 1, 0]
    );
    assert_eq!(
        rate(&group(&report, "all")["totals"], "open_rate"),
        1.0 / 3.0
    );
    let (_, _, b_wf) = run
        .get(&b, "/v1/analytics/report?dimension=workflow&from=2026-03-02T10:00:00Z&to=2026-03-02T11:00:00Z")
        .await;
    assert_eq!(values(&b_wf), ["welcome"]);
    let (_, _, b_health) = run
        .get(
            &b,
            "/v1/analytics/providers?from=2026-03-02T10:00:00Z&to=2026-03-02T11:00:00Z",
        )
        .await;
    assert_eq!(
        b_health["providers"].as_array().unwrap().len(),
        1,
        "{b_health}"
    );

    // gRPC answers the same.
    let mut grpc = api::analytics_service_client::AnalyticsServiceClient::new(ch.clone());
    let r = grpc
        .get_report(authed(
            &a,
            api::AnalyticsReportRequest {
                dimension: "channel".into(),
                from: "2026-03-02T10:00:00Z".into(),
                to: "2026-03-02T11:00:00Z".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].value, "email");
    let t = r.groups[0].totals.clone().unwrap();
    assert_eq!((t.attempted, t.delivered, t.opened), (8, 6, 4));
    assert_eq!(t.delivery_rate, Some(0.75));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_parameters_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(test_config(dir.path()), T0).await;
    let ch = channel(run.grpc).await;
    let a = create_tenant(&ch, "acme").await;
    for (query, field) in [
        ("dimension=country", "dimension"),
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        ("to=2026-03-02T10:00:00Z&from=2026-03-02T11:00:00Z", "from"),
        // Two days by minute is over the day a minute report covers.
        (
            "granularity=minute&from=2026-03-01T00:00:00Z&to=2026-03-03T00:00:00Z",
            "from",
        ),
    ] {
        let (status, head, body) = run.get(&a, &format!("/v1/analytics/report?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(head.contains("application/problem+json"), "{head}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    let (status, _, body) = run.get(&a, "/v1/analytics/providers?from=soon").await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["field"], "from");
    // No traffic: an empty report, not an error; rates are absent.
    let (status, _, body) = run.get(&a, "/v1/analytics/report").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["groups"].as_array().unwrap().len(), 0);
    let (_, _, body) = run
        .get(&a, "/v1/analytics/report?dimension=provider&value=sink")
        .await;
    assert!(group(&body, "sink")["totals"]["delivery_rate"].is_null());

    let err = api::analytics_service_client::AnalyticsServiceClient::new(ch.clone())
        .get_report(authed(
            &a,
            api::AnalyticsReportRequest {
                dimension: "country".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let details = err.get_details_bad_request().expect("BadRequest details");
    assert_eq!(details.field_violations[0].field, "dimension");
    run.stop().await;
}
