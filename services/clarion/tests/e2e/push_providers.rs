//! The push provider wired into the dispatcher role: a `DispatchRequested`
//! of channel push in the real log (as the router writes it) reaches the
//! local APNs (HTTP/2 over TLS) and FCM servers through the credentials of
//! `providers.push`, and the outcomes come back as events: delivered and a
//! device outcome on the deliveries topic, a dead token on the subscriber's
//! stream. Two tenants with apps of the same name, each sent with its own
//! configuration. Then `clarion serve` with the same settings as TOML and
//! key files, and with a broken key, refused naming it.

use crate::support;

use std::time::{Duration, Instant};

use clarion_dispatch::device_token;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::Record;
use clarion_proto::events as pb;
use clarion_runtime::Topic;
use support::push::PushServers;
use support::*;

const IOS_TOKEN: &str = "0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de";

fn dispatch(tenant: &str, n: &str, targets: Vec<pb::PushTarget>) -> Event {
    let t = TenantId::parse(tenant).unwrap();
    Event {
        id: Id::derive(&[tenant.as_bytes(), n.as_bytes()]),
        partition_key: clarion_domain::ids::recipient_key(&t, "sub-1"),
        tenant: t,
        occurred_at_ms: 1,
        causation_id: None,
        correlation_id: Some(Id::derive(&[n.as_bytes()])),
        actor: Actor::System("router".into()),
        payload: Payload::DispatchRequested(pb::DispatchRequested {
            notification_id: n.into(),
            attempt_id: format!("{:0>32}", n),
            channel: "push".into(),
            provider: "push".into(),
            subject: format!("Hello from {tenant}"),
            body: "A job was assigned".into(),
            subscriber_id: "sub-1".into(),
            push_targets: targets,
            push: Some(Box::new(pb::PushOptions {
                app_id: "fieldapp".into(),
                apns_topic: format!("com.{tenant}.field"),
                ..Default::default()
            })),
            link: "fieldapp://jobs/J-1".into(),
            ..Default::default()
        }),
    }
}

/// Every event of `topic` so far.
async fn events(node: &RunningNode, topic: Topic) -> Vec<Event> {
    let n = &node.nodes[0];
    let name = n.topics.name(topic);
    let mut out = Vec::new();
    for p in 0..n.topics.partitions_of(topic) {
        for r in n.log.read(&name, p, 0, 10_000).await.unwrap() {
            out.push(Event::decode(&r.value).unwrap());
        }
    }
    out
}

async fn wait_events(
    node: &RunningNode,
    topic: Topic,
    want: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = events(node, topic).await;
        if want(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{topic:?}: {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_role_pushes_through_each_tenants_credentials() {
    let servers = PushServers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    servers.configure(&mut cfg, &[("acme", "fieldapp"), ("globex", "fieldapp")]);
    let node = start(cfg, false).await;
    let keyring = node.nodes[0].keyring.clone();
    let target = |tenant: &str, device: &str, platform: &str, token: &str| pb::PushTarget {
        device_id: device.into(),
        platform: platform.into(),
        provider: String::new(),
        token: Some(device_token::seal(&keyring, tenant, token)),
        token_registered_at_ms: 1,
    };
    servers.apns.answer(
        IOS_TOKEN,
        410,
        r#"{"reason":"Unregistered","timestamp":1700000000000}"#,
    );
    let acme = dispatch(
        "acme",
        "n-acme",
        vec![
            target("acme", "ios-1", "ios", IOS_TOKEN),
            target("acme", "android-1", "android", "acme-android-token"),
        ],
    );
    let globex = dispatch(
        "globex",
        "n-globex",
        vec![target(
            "globex",
            "android-2",
            "android",
            "globex-android-token",
        )],
    );
    let n = &node.nodes[0];
    let records = [acme, globex]
        .iter()
        .map(|e| Record::new(e.partition_key.clone(), e.encode()))
        .collect();
    n.log
        .append(&n.topics.name(Topic::Dispatch), records)
        .await
        .unwrap();

    let (apns, fcm) = servers.wait_for(1, 2, Duration::from_secs(20)).await;
    assert_eq!(apns[0].header("apns-topic"), "com.acme.field");
    assert_eq!(apns[0].body["aps"]["alert"]["title"], "Hello from acme");
    let mut tokens: Vec<_> = fcm
        .iter()
        .map(|m| {
            (
                m.token().to_string(),
                m.message()["notification"]["title"].clone(),
            )
        })
        .collect();
    tokens.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        tokens,
        vec![
            ("acme-android-token".to_string(), "Hello from acme".into()),
            (
                "globex-android-token".to_string(),
                "Hello from globex".into()
            ),
        ]
    );

    // Both delivered (acme by its Android device alone), with an outcome
    // per device; acme's dead iOS token goes to acme's subscriber stream.
    let deliveries = wait_events(&node, Topic::Deliveries, |es| {
        es.iter()
            .filter(|e| matches!(e.payload, Payload::Delivered(_)))
            .count()
            == 2
            && es
                .iter()
                .filter(|e| matches!(e.payload, Payload::PushDeviceOutcome(_)))
                .count()
                == 3
    })
    .await;
    let outcome = |device: &str| {
        deliveries.iter().find_map(|e| match &e.payload {
            Payload::PushDeviceOutcome(o) if o.device_id == device => {
                Some((e.tenant.to_string(), o.outcome.clone()))
            }
            _ => None,
        })
    };
    assert_eq!(
        outcome("ios-1"),
        Some(("acme".into(), "rejected_token".into()))
    );
    assert_eq!(
        outcome("android-1"),
        Some(("acme".into(), "accepted".into()))
    );
    assert_eq!(
        outcome("android-2"),
        Some(("globex".into(), "accepted".into()))
    );
    let triggers = wait_events(&node, Topic::Triggers, |es| {
        es.iter()
            .any(|e| matches!(e.payload, Payload::PushRejected(_)))
    })
    .await;
    let rejected: Vec<_> = triggers
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::PushRejected(r) => {
                Some((e.tenant.to_string(), e.partition_key.clone(), r.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 1);
    let (tenant, key, r) = &rejected[0];
    assert_eq!((tenant.as_str(), key.as_str()), ("acme", "acme/sub-1"));
    assert_eq!(
        (r.device_id.as_str(), r.unregistered_at_ms),
        ("ios-1", 1_700_000_000_000)
    );
    node.stop().await;
}

#[tokio::test]
async fn clarion_serve_takes_push_apps_with_key_files_and_names_a_broken_key() {
    let servers = PushServers::start().await;
    let keys = tempfile::tempdir().unwrap();
    let toml = servers.toml(keys.path(), &[("acme", "fieldapp")]);
    let serve = ServeProcess::start_with_config(&toml).await;
    drop(serve);

    std::fs::write(keys.path().join("apns-key.p8"), "not a key").unwrap();
    let file = keys.path().join("clarion.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .current_dir(keys.path())
        .args([
            "serve",
            "--grpc-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers.push.apps[0].apns.key-pem"), "{err}");
}
