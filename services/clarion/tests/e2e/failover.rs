//! Provider failover end to end (issue #31): every role in-process on the
//! manual clock, over real sockets. Channel sms routes to Vonage first,
//! Twilio second (`providers.routes.sms`), both local servers speaking the
//! real wire formats. Vonage is scripted to fail every send (status "5",
//! Vonage's internal error). Two tenants trigger 500 notifications each:
//! every one is delivered through Twilio exactly once, under the attempt id
//! the router gave it; Vonage's breaker opens after `min-requests` failures
//! in the window, so Vonage sees a handful of requests, not a thousand; the
//! run records Twilio as the winner. Once Vonage recovers and the open time
//! has passed on the clock, the half-open probes go to Vonage, succeed, and
//! close the breaker: later sends go to Vonage again.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_dispatch::breaker::BreakerConfig;
use clarion_dispatch::vonage::VonageConfig;
use clarion_domain::{Event, Payload};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_push_servers::vonage::{self, VonageServer};
use clarion_runtime::{ManualClock, Topic};
use support::*;
use tokio::sync::watch;
use tokio::task::JoinSet;

const T0: i64 = 1_700_000_000_000;
const PER_TENANT: usize = 500;
const MIN_REQUESTS: u32 = 20;
const PATIENCE: Duration = Duration::from_secs(120);

struct Fixture {
    node: Node,
    clock: ManualClock,
    cfg: Config,
    _shutdown: watch::Sender<bool>,
    _tasks: JoinSet<anyhow::Result<()>>,
}

async fn start(cfg: Config) -> Fixture {
    let clock = ManualClock::new(T0);
    let node = Node::open(cfg.clone())
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for role in [Role::Projector, Role::Router, Role::Dispatcher] {
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
    Fixture {
        node,
        clock,
        cfg,
        _shutdown: shutdown,
        _tasks: tasks,
    }
}

fn vonage_config(server: &VonageServer) -> VonageConfig {
    VonageConfig {
        base_url: server.base_url.clone(),
        api_key: vonage::API_KEY.into(),
        api_secret: vonage::API_SECRET.into(),
        from: "Acme".into(),
        status_callback_url: None,
        timeout_ms: 5_000,
    }
}

/// An sms template and a one-step workflow naming no provider: the
/// route's first is the default.
async fn sms_workflow(ch: &tonic::transport::Channel, key: &str) {
    put_default_template(
        ch,
        key,
        "visit-sms",
        "sms",
        "",
        "Visit on {{ payload.day }}",
    )
    .await;
    apply_workflows(
        ch,
        key,
        &["id: visit\ntrigger: { event: visit.booked }\nsteps:\n  - { id: sms, type: send, channel: sms, template: visit-sms }\n"],
    )
    .await;
}

/// Triggers `n` recipients (one notification each) in one request.
async fn trigger(ch: &tonic::transport::Channel, key: &str, prefix: &str, n: usize) {
    let recipients = (0..n)
        .map(|i| api::Recipient {
            subscriber_id: format!("{prefix}-{i}"),
            phone: format!("+1514555{i:04}"),
            ..Default::default()
        })
        .collect();
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "visit".into(),
                recipients,
                payload_json: r#"{"day":"Friday"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger");
}

/// Every event of `topic` in the log, with its tenant.
async fn events(node: &Node, topic: Topic) -> Vec<Event> {
    let name = node.topics.name(topic);
    let mut out = Vec::new();
    for p in 0..node.topics.partitions_of(topic) {
        for r in node.log.read(&name, p, 0, 1_000_000).await.unwrap() {
            out.push(Event::decode(&r.value).unwrap());
        }
    }
    out
}

fn breaker_changes(all: &[Event]) -> Vec<(String, pb::ProviderBreakerChanged)> {
    all.iter()
        .filter_map(|e| match &e.payload {
            Payload::ProviderBreakerChanged(c) => Some((e.tenant.to_string(), c.clone())),
            _ => None,
        })
        .collect()
}

async fn wait_twilio(twilio: &TwilioDouble, n: usize) -> Vec<SmsMessage> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = twilio.sent();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "Twilio got {} of {n} messages",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_primary_fails_over_and_its_breaker_opens_then_closes_after_recovery() {
    let vonage = VonageServer::start().await;
    let twilio = TwilioDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.providers.vonage = Some(vonage_config(&vonage));
    cfg.providers.twilio = Some(twilio.config());
    cfg.providers.routes = HashMap::from([("sms".into(), vec!["vonage".into(), "twilio".into()])]);
    cfg.providers.breaker = BreakerConfig {
        window_ms: 60_000,
        min_requests: MIN_REQUESTS,
        failure_rate: 0.5,
        open_ms: 30_000,
        half_open_probes: 3,
        ..BreakerConfig::default()
    };
    // Few sends in flight: the requests the primary sees past the
    // breaker's opening are bounded by them.
    cfg.runtime.effect_concurrency = 4;
    cfg.validate().unwrap();
    let f = start(cfg).await;
    let ch = channel(f.cfg.grpc.listen).await;

    vonage.fail_with(200);
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let key = create_tenant(&ch, tenant).await;
        sms_workflow(&ch, &key).await;
        keys.push(key);
    }
    for (key, prefix) in keys.iter().zip(["a", "g"]) {
        trigger(&ch, key, prefix, PER_TENANT).await;
    }
    let total = 2 * PER_TENANT;
    let sms = wait_twilio(&twilio, total).await;

    // Every notification once through the secondary, under its attempt id.
    let attempts: HashSet<&str> = sms.iter().map(|m| m.idempotency_key.as_str()).collect();
    assert_eq!(attempts.len(), sms.len(), "no attempt sent twice");
    assert!(
        sms.len() * 1000 >= total * 999,
        "{} of {total} delivered",
        sms.len()
    );
    assert_eq!(sms.len(), total, "none twice, none lost");
    assert!(vonage.accepted().is_empty());
    let in_flight = 2 * 4;
    assert!(
        vonage.requests() <= MIN_REQUESTS as usize + in_flight,
        "the breaker stopped sends to the primary: {} requests",
        vonage.requests()
    );

    // The breaker opened once, on the failure rate of the window.
    let deliveries = events(&f.node, Topic::Deliveries).await;
    let changes = breaker_changes(&deliveries);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let (_, open) = &changes[0];
    assert_eq!(
        (open.provider.as_str(), open.from.as_str(), open.to.as_str()),
        ("vonage", "closed", "open")
    );
    assert!(
        open.reason
            .contains(&format!("of {MIN_REQUESTS} sends failed in 60000 ms")),
        "{}",
        open.reason
    );
    // Each send names the winner; failed-over ones say why.
    let sent: Vec<&pb::NotificationSent> = deliveries
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Sent(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), total);
    assert!(sent.iter().all(|s| s.provider == "twilio"));
    let over: Vec<(&str, &pb::ProviderFailedOver)> = deliveries
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ProviderFailedOver(o) => Some((e.tenant.as_str(), o)),
            _ => None,
        })
        .collect();
    assert_eq!(over.len(), total, "every send failed over");
    let tenants: HashSet<&str> = over.iter().map(|(t, _)| *t).collect();
    assert_eq!(tenants, HashSet::from(["acme", "globex"]));
    let reasons: HashSet<&str> = over
        .iter()
        .map(|(_, o)| o.skipped[0].reason.as_str())
        .collect();
    assert!(reasons.contains("circuit open"), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("Internal Error")),
        "{reasons:?}"
    );
    // Each tenant's events name only its own notifications.
    for e in &deliveries {
        if let Payload::ProviderFailedOver(o) = &e.payload {
            let own = if e.tenant.as_str() == "acme" {
                "acme/a-"
            } else {
                "globex/g-"
            };
            assert!(
                e.partition_key.starts_with(own),
                "{} {o:?}",
                e.partition_key
            );
        }
    }

    // The runs record the winner.
    let deadline = Instant::now() + PATIENCE;
    let ended = loop {
        let ended: Vec<pb::RunEnded> = events(&f.node, Topic::Notifications)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Payload::Ended(r) => Some(r),
                _ => None,
            })
            .collect();
        if ended.len() >= total {
            break ended;
        }
        assert!(Instant::now() < deadline, "{} runs ended", ended.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(ended
        .iter()
        .all(|r| r.outcome == "completed" && r.attempts[0].provider == "twilio"));

    // Recovery: past the open time, probes go to the primary and close it.
    vonage.recover();
    f.clock.advance(Duration::from_millis(30_000));
    for i in 0..3 {
        trigger(&ch, &keys[i % 2], &format!("probe{i}"), 1).await;
        vonage.wait_for(i + 1, PATIENCE).await;
    }
    trigger(&ch, &keys[0], "after", 5).await;
    trigger(&ch, &keys[1], "after", 5).await;
    vonage.wait_for(13, PATIENCE).await;
    assert_eq!(
        twilio.sent().len(),
        total,
        "nothing more through the secondary"
    );
    let changes = breaker_changes(&events(&f.node, Topic::Deliveries).await);
    let path: Vec<(&str, &str)> = changes
        .iter()
        .map(|(_, c)| (c.from.as_str(), c.to.as_str()))
        .collect();
    assert_eq!(
        path,
        [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed")
        ]
    );
    assert!(changes[2].1.reason.contains("3 probes succeeded"));
}
