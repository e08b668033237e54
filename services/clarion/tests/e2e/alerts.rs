//! Anomaly alerts end to end (issue #30): every role in-process on the
//! manual clock, over real sockets. Two tenants send through the webhook
//! provider to a real HTTP receiver: `busy` 12 notifications a minute,
//! `quiet` 2. After 5 healthy minutes (the baseline's warm-up) the receiver
//! starts refusing (410, a terminal failure) for 2 minutes. The alerts
//! role, judging each minute once it closed, raises exactly one alert:
//! for `busy`'s webhook provider, at the signed webhook sink (its
//! signature verified), as one Slack-shaped message and one mail (a real
//! SMTP server, aiosmtpd); the second failing
//! minute is inside the cool-down; `quiet`, under the minimum volume,
//! raises none. Each detection is an `AnomalyDetected` on the
//! notifications topic.

use crate::support;
use crate::webhook_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clarion::{Node, Role};
use clarion_dispatch::webhook::{verify, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use clarion_domain::{Event, Payload};
use clarion_runtime::alerts::{counts_pk, decode_counts, MINUTE_MS};
use clarion_runtime::{Clock, ManualClock, Topic};
use clarion_store::{Scan, Table};
use support::*;
use tokio::sync::watch;
use tokio::task::JoinSet;
use webhook_support::{rotate_secret, trigger_hook, webhook_config, webhook_workflow};

/// A whole minute (2023-11-14T22:14:00Z); the clock starts 5 s into it.
const MINUTE0: i64 = 1_700_000_040_000;
const ALERT_SECRET: &str = "alerts-secret-0123456789";
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// One real HTTP server: `/t` is the tenants' webhook endpoint (answering
/// `status`), `/alert` and `/slack` the alert sinks. Records every request.
#[derive(Clone)]
struct Server {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Server {
    async fn start() -> Server {
        let status = Arc::new(AtomicU16::new(200));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let route = |path: &'static str| {
            let (status, hits) = (status.clone(), hits.clone());
            post(move |headers: HeaderMap, body: Bytes| async move {
                hits.lock().unwrap().push(Hit {
                    path: path.into(),
                    headers,
                    body,
                });
                match path {
                    "/t" => StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap(),
                    _ => StatusCode::OK,
                }
            })
        };
        let app = axum::Router::new()
            .route("/t", route("/t"))
            .route("/alert", route("/alert"))
            .route("/slack", route("/slack"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { addr, status, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn at(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }
}

fn smtp_config(smtp: &SmtpServer) -> clarion_dispatch::smtp::SmtpConfig {
    clarion_dispatch::smtp::SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port,
        from: "Clarion <alerts@clarion.test>".into(),
        message_id_domain: "clarion.test".into(),
        starttls: false,
        pool_size: 1,
    }
}

/// `tenant`'s provider outcomes counted in `minute` (all partitions).
async fn counted(node: &Node, tenant: &str, minute: i64) -> u64 {
    let rows = node
        .store
        .scan(&Scan::partition(
            Table::Alerts,
            tenant,
            &counts_pk(minute),
            1000,
        ))
        .await
        .unwrap();
    rows.iter()
        .filter(|(ck, _)| ck.starts_with(b"tenant\0"))
        .filter_map(|(_, v)| decode_counts(v))
        .map(|c| c.attempts)
        .sum()
}

async fn wait_counted(node: &Node, tenant: &str, minute: i64, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = counted(node, tenant, minute).await;
        if got == n {
            return;
        }
        assert!(
            got < n && Instant::now() < deadline,
            "{tenant}: {got} of {n} counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The evaluator's next minute to judge.
async fn cursor(node: &Node) -> i64 {
    let key = clarion_store::RowKey::new(
        Table::Alerts,
        clarion_store::SYSTEM_TENANT,
        "evaluator",
        b"cursor".to_vec(),
    );
    node.store
        .get(&key)
        .await
        .unwrap()
        .map_or(0, |b| i64::from_be_bytes(b[..].try_into().unwrap()))
}

/// Whether the evaluator's outbox is empty (every detection appended,
/// every sink told).
async fn outbox_empty(node: &Node) -> bool {
    node.store
        .scan(&Scan::partition(
            Table::Alerts,
            clarion_store::SYSTEM_TENANT,
            "outbox",
            10,
        ))
        .await
        .unwrap()
        .is_empty()
}

/// Every `AnomalyDetected` in the log, with its tenant.
async fn anomalies(node: &Node) -> Vec<(String, clarion_proto::events::AnomalyDetected)> {
    let name = node.topics.name(Topic::Notifications);
    let mut out = Vec::new();
    for p in 0..node.topics.partitions_of(Topic::Notifications) {
        for r in node.log.read(&name, p, 0, 100_000).await.unwrap() {
            let e = Event::decode(&r.value).unwrap();
            if let Payload::AnomalyDetected(a) = e.payload {
                out.push((e.tenant.to_string(), a));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_drop_raises_exactly_one_signed_alert_and_a_quiet_tenant_none() {
    let server = Server::start().await;
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    webhook_config(&mut cfg, true);
    cfg.providers.smtp = Some(smtp_config(&smtp));
    cfg.alerts.email_to = vec!["oncall@ops.test".into()];
    cfg.alerts.webhook_url = server.url("/alert");
    cfg.alerts.slack_webhook_url = server.url("/slack");
    cfg.alerts.signing_secret = ALERT_SECRET.into();
    cfg.alerts.warmup_minutes = 5;
    cfg.alerts.min_volume = 10;
    cfg.alerts.grace_ms = 5_000;
    cfg.alerts.tick_ms = 20;
    cfg.alerts.runbook_base_url = "https://runbooks.test/".into();

    let clock = ManualClock::new(MINUTE0 + 5_000);
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
        Role::Alerts,
    ] {
        node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
    }
    let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
    node.spawn_role(Role::Gateway, &mut tasks, admin, &rx)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(cfg.grpc.listen).is_err() {
        assert!(Instant::now() < deadline, "gRPC did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ch = channel(cfg.grpc.listen).await;
    let mut keys = Vec::new();
    for (tenant, per_minute) in [("busy", 12u64), ("quiet", 2)] {
        let key = create_tenant(&ch, tenant).await;
        rotate_secret(&ch, &key, None).await;
        webhook_workflow(&ch, &key).await;
        keys.push((tenant, key, per_minute));
    }

    // 5 healthy minutes, then 2 refused. Each minute is counted in full
    // before the clock leaves it.
    let hook = server.url("/t");
    for m in 0..7 {
        if m == 5 {
            server.status.store(410, Ordering::SeqCst);
        }
        let minute = MINUTE0 + m * MINUTE_MS;
        for (tenant, key, per_minute) in &keys {
            for i in 0..*per_minute {
                trigger_hook(&ch, key, &format!("s{i}"), &hook, &format!("{m}-{i}")).await;
            }
            wait_counted(&node, tenant, minute, *per_minute).await;
        }
        clock.set(minute + MINUTE_MS + 5_000);
    }

    // The evaluator judges up to the last minute and empties its outbox.
    let deadline = Instant::now() + PATIENCE;
    while cursor(&node).await < MINUTE0 + 7 * MINUTE_MS || !outbox_empty(&node).await {
        assert!(Instant::now() < deadline, "minutes not judged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let alerts = server.at("/alert");
    assert_eq!(alerts.len(), 1, "exactly one alert: {alerts:#?}");
    let hit = &alerts[0];
    let header = |n: &str| hit.headers.get(n).unwrap().to_str().unwrap().to_string();
    let now_s = clock.now_ms() / 1000;
    verify(
        ALERT_SECRET.as_bytes(),
        &header(SIGNATURE_HEADER),
        &hit.body,
        now_s,
        Duration::from_secs(300),
    )
    .expect("the alert's signature verifies with alerts.signing-secret");
    assert!(verify(
        b"some-other-secret-0123",
        &header(SIGNATURE_HEADER),
        &hit.body,
        now_s,
        Duration::from_secs(300)
    )
    .is_err());
    let body: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(body["tenant"], "busy");
    assert_eq!(body["provider"], "webhook");
    assert_eq!(body["signal"], "delivery_rate");
    assert_eq!(body["minute_start_ms"], MINUTE0 + 5 * MINUTE_MS);
    assert_eq!(body["observed"], 0.0);
    assert_eq!(body["attempts"], 12);
    assert_eq!(
        body["runbook_url"],
        "https://runbooks.test/delivery-rate-drop.md"
    );
    assert_eq!(
        header(IDEMPOTENCY_HEADER),
        body["alert_id"].as_str().unwrap()
    );

    let slack = server.at("/slack");
    assert_eq!(slack.len(), 1, "{slack:#?}");
    let msg: serde_json::Value = serde_json::from_slice(&slack[0].body).unwrap();
    let text = msg["text"].as_str().unwrap();
    assert!(
        text.contains("tenant busy: delivery rate dropped (provider webhook)"),
        "{text}"
    );
    assert_eq!(msg["blocks"][0]["type"], "section");

    let mails = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(mails[0].to, "oncall@ops.test");
    assert_eq!(
        mails[0].subject,
        "[Clarion alert] tenant busy: delivery rate dropped (provider webhook)"
    );
    assert!(
        mails[0]
            .body
            .contains("Runbook: https://runbooks.test/delivery-rate-drop.md"),
        "{}",
        mails[0].body
    );

    // In the log: the alert's lead, the detections grouped with it, the
    // cooled-down minute; nothing of the quiet tenant.
    let logged = anomalies(&node).await;
    assert!(!logged.is_empty());
    assert!(logged.iter().all(|(t, _)| t == "busy"), "{logged:#?}");
    assert_eq!(logged.iter().filter(|(_, a)| a.alerted).count(), 1);
    assert!(logged
        .iter()
        .any(|(_, a)| a.minute_start_ms == MINUTE0 + 6 * MINUTE_MS && !a.alerted));

    let _ = shutdown.send(true);
    while let Some(r) = tasks.join_next().await {
        r.expect("role task panicked").expect("role failed");
    }
}
