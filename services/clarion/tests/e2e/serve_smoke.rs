//! The README's first command, checked: `clarion serve` on a fresh directory
//! starts every role on the embedded backends, prints a working demo API key,
//! answers health and metrics over HTTP, and delivers the demo `welcome`
//! workflow to the sink with the subscriber's locale.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clarion_proto::api;
use support::*;

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out)
}

/// One HTTP/1.1 request with the API key; returns the status and the body.
fn http_call(port: u16, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         authorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Small answers come in one chunk: `<hex length>\r\n<json>\r\n0`.
    let body = match body.split_once("\r\n") {
        Some((len, rest)) if usize::from_str_radix(len, 16).is_ok() => {
            rest.rsplit_once("\r\n0").map(|(b, _)| b).unwrap_or(rest)
        }
        _ => body,
    };
    (status, body.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_a_demo_tenant_health_and_metrics() {
    let help = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--data-dir",
        "--log-url",
        "--store-url",
        "--grpc-listen",
        "--http-listen",
        "--config",
    ] {
        assert!(help.contains(flag), "serve --help documents {flag}: {help}");
    }

    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .current_dir(dir.path())
        .args([
            "serve",
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .env("CLARION_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed on drop, so a failed assertion leaves no server behind.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let out = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        if let Some(k) = lines.lock().unwrap().iter().find_map(|l| {
            l.trim()
                .strip_prefix("demo API key:")
                .map(|k| k.trim().to_string())
        }) {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "no demo key printed: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("Clarion is running"))
    {
        assert!(Instant::now() < deadline, "never reported running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The embedded log and store share one file.
    assert!(dir.path().join("data/clarion.db").exists());
    assert!(!dir.path().join("data/log.db").exists() && !dir.path().join("data/store.db").exists());
    // The warehouse exporter is one of the roles, writing under the data dir.
    assert!(dir.path().join("data/warehouse").is_dir());

    assert_eq!(http_get(http, "/healthz").0, 200);
    assert_eq!(http_get(http, "/readyz").0, 200);

    let ch = channel(format!("127.0.0.1:{grpc}").parse().unwrap()).await;
    let ids = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: "welcome".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "ana".into(),
                    email: "ana@example.test".into(),
                    locale: "fr-CA".into(),
                    ..Default::default()
                }],
                payload_json: r#"{"name":"Ana"}"#.into(),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids;
    let n = wait_status(&ch, &key, &ids[0], "delivered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "delivered", "{n:?}");
    let dispatch: serde_json::Value = serde_json::from_str(&n.events[2].detail_json).unwrap();
    assert_eq!(dispatch["body"], "Allô Ana, bienvenue à bord!");
    assert_eq!(dispatch["provider"], "sink");

    // The README's first example: the same workflow over REST with curl's request.
    let (status, body) = http_call(
        http,
        "POST",
        "/v1/notifications",
        &key,
        r#"{"workflow_id":"welcome","recipients":[{"subscriber_id":"ana","email":"ana@example.test","locale":"fr-CA"}],"payload":{"name":"Ana"}}"#,
    );
    assert_eq!(status, 202, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rest_id = answer["notifications"][0]["notification_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let (status, body) = http_call(
            http,
            "GET",
            &format!("/v1/notifications/{rest_id}"),
            &key,
            "",
        );
        assert_eq!(status, 200, "{body}");
        let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
        if shown["status"] == "delivered" {
            break shown;
        }
        assert!(Instant::now() < deadline, "never delivered: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dispatched = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["event_type"]
                .as_str()
                .is_some_and(|t| t.contains("dispatch_requested"))
        })
        .unwrap_or_else(|| panic!("no dispatch in {shown}"));
    assert_eq!(dispatched["detail"]["body"], "Allô Ana, bienvenue à bord!");
    // Bad input over REST: problem+json naming the field; another tenant's
    // key (or none) reads nothing.
    let (status, body) = http_call(
        http,
        "POST",
        "/v1/notifications",
        &key,
        r#"{"workflow_id":"welcome","recipients":[{"email":"x@example.test"}]}"#,
    );
    assert_eq!(status, 400, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        problem["errors"][0]["field"], "recipients[0].subscriber_id",
        "{body}"
    );
    let (status, _) = http_call(
        http,
        "GET",
        &format!("/v1/notifications/{rest_id}"),
        "ck_other_nope",
        "",
    );
    assert_eq!(status, 401);
    // The same notification through GraphQL (docs/graphql.md's first example).
    let (status, body) = http_call(
        http,
        "POST",
        "/graphql",
        &key,
        &serde_json::json!({"query": format!("{{ notification(id: \"{rest_id}\") {{ status workflowId }} }}")})
            .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["data"]["notification"],
        serde_json::json!({"status": "delivered", "workflowId": "welcome"}),
        "{body}"
    );

    let (status, metrics) = http_get(http, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("clarion_triggers_accepted_total 2"),
        "{metrics}"
    );
    // The analytics role runs in `serve`: the deliveries are counted in
    // the projection and on /metrics, with bounded labels (tenant hidden)
    // and the latency as a bucketed histogram.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (status, body) = http_call(http, "GET", "/v1/analytics/report", &key, "");
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        if report["groups"][0]["totals"]["delivered"] == 2 {
            break report;
        }
        assert!(Instant::now() < deadline, "never counted: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["groups"][0]["totals"]["delivery_rate"], 1.0);
    let (_, metrics) = http_get(http, "/metrics");
    let delivered = metrics
        .lines()
        .find(|l| {
            l.starts_with("clarion_analytics_outcomes_total{")
                && l.contains("outcome=\"delivered\"")
        })
        .unwrap_or_else(|| panic!("no delivered outcome in {metrics}"));
    assert!(delivered.contains("tenant=\"_\""), "{delivered}");
    assert!(delivered.ends_with(" 2"), "{delivered}");
    assert!(
        metrics.contains("clarion_analytics_latency_seconds_bucket{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clarion_processor_events_total{processor=\"dispatcher\"}"),
        "{metrics}"
    );

    drop(child);

    // A second start on the same directory keeps the tenant and prints no new secrets.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .current_dir(dir.path())
        .args([
            "serve",
            "--grpc-listen",
            &format!("127.0.0.1:{busy_port}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
        ])
        .env("CLARION_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // The gRPC port is taken: the process must fail loudly and exit non-zero
    // rather than run half-started.
    assert!(
        !out.status.success(),
        "bad listen address must fail the process"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("demo API key"),
        "secrets are printed only on first start"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gRPC server on"),
        "the error names what failed"
    );
    drop(busy);
}
