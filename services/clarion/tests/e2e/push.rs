//! Push end to end, on the embedded backend and on Kafka (tansu): a tenant's
//! app, an iOS and two Android devices registered over gRPC, a workflow that
//! pushes with a deep link → the local APNs server (HTTP/2 over TLS, the
//! provider JWT checked with Apple's public key) and the local FCM server
//! (bearer token it issued itself) receive the localized, deep-linked
//! message; a 410 `Unregistered` and an FCM `UNREGISTERED` revoke their
//! devices and the next push skips them; a rotated token receives the next
//! push; neither the SQLite files nor the Kafka topics hold a token in
//! clear. A second tenant with the same app id and subscriber id is never
//! reached by the first tenant's pushes.

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clarion_proto::api;
use serde_json::Value;
use support::push::PushServers;
use support::*;
use tonic::transport::Channel;

type Devices = api::device_service_client::DeviceServiceClient<Channel>;

const IOS: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const ANDROID: &str = "fcm-ANDROID-first:APA91bHunQz9x-example-registration-token";
const ANDROID_DEAD: &str = "fcm-ANDROID-dead:APA91bHunQz9x-example-registration-token";
const ANDROID_ROTATED: &str = "fcm-ANDROID-rotated:APA91bHunQz9x-example-registration-token";
/// The other tenant's iOS device (same app id, same subscriber id).
const OTHER_IOS: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
/// initech's device, whose subscriber is erased.
const ERASED_IOS: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const WORKFLOW: &str = r#"
id: job-assigned
name: Job assigned
steps:
  - id: push
    type: send
    channel: push
    template: job-push
    app: fieldapp
    link: { type: job_card, id: payload.job_id }
    push:
      priority: high
      collapse_key: job
      ttl: 1h
"#;

async fn setup_tenant(ch: &Channel, tenant: &str, bundle: &str) -> String {
    let key = create_tenant(ch, tenant).await;
    Devices::new(ch.clone())
        .configure_app(authed(
            &key,
            api::App {
                app_id: "fieldapp".into(),
                name: "Field app".into(),
                platforms: vec!["ios".into(), "android".into()],
                ios_bundle_id: bundle.into(),
                apns_environment: "sandbox".into(),
                deep_links: [("job_card".to_string(), "fieldapp://jobs/{id}".to_string())].into(),
                version: 0,
            },
        ))
        .await
        .expect("configure app");
    let v = |locale: &str, subject: &str, body: &str| api::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    Tenants::new(ch.clone())
        .put_template(authed(
            &key,
            api::Template {
                template_id: "job-push".into(),
                channel: "push".into(),
                variants: vec![
                    v(
                        "default",
                        "Job {{ payload.job_id }}",
                        "New job at {{ payload.site }}",
                    ),
                    v(
                        "fr",
                        "Intervention {{ payload.job_id }}",
                        "Nouvelle intervention à {{ payload.site }}",
                    ),
                ],
            },
        ))
        .await
        .expect("put template");
    apply_workflows(ch, &key, &[WORKFLOW]).await;
    Subscribers::new(ch.clone())
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: "tech-1".into(),
                locale: "fr".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("upsert subscriber");
    key
}

async fn register(ch: &Channel, key: &str, platform: &str, token: &str) -> api::Device {
    Devices::new(ch.clone())
        .register_device(authed(
            key,
            api::RegisterDeviceRequest {
                subscriber_id: "tech-1".into(),
                app_id: "fieldapp".into(),
                platform: platform.into(),
                token: token.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("register device")
        .into_inner()
}

async fn devices(ch: &Channel, key: &str) -> Vec<api::Device> {
    Devices::new(ch.clone())
        .list_devices(authed(
            key,
            api::ListDevicesRequest {
                subscriber_id: "tech-1".into(),
                include_inactive: true,
            },
        ))
        .await
        .expect("list devices")
        .into_inner()
        .devices
}

async fn push_job(ch: &Channel, key: &str, job: &str) -> String {
    let payload = format!(r#"{{"job_id":"{job}","site":"Lyon"}}"#);
    trigger_one(ch, key, "job-assigned", "tech-1", "", &payload).await
}

/// Waits until the device `id` of `key`'s tech-1 has `status`.
async fn wait_device(ch: &Channel, key: &str, id: &str, status: &str) -> api::Device {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = devices(ch, key)
            .await
            .into_iter()
            .find(|d| d.device_id == id);
        match found {
            Some(d) if d.status == status => return d,
            other if std::time::Instant::now() > deadline => {
                panic!("device {id} never became {status}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(30)).await,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Requests received for `token`.
fn apns_for(servers: &PushServers, token: &str) -> Vec<push::apns::Seen> {
    servers
        .apns
        .received()
        .into_iter()
        .filter(|s| s.token == token)
        .collect()
}

fn fcm_for(servers: &PushServers, token: &str) -> Vec<push::fcm::Sent> {
    servers
        .fcm
        .received()
        .into_iter()
        .filter(|s| s.token() == token)
        .collect()
}

async fn wait_count(what: &str, n: usize, count: impl Fn() -> usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} of {n}",
            count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole scenario on a running node; returns the tokens it registered.
async fn push_scenario(node: &RunningNode, servers: &PushServers) -> Vec<&'static str> {
    let ch = channel(node.grpc).await;
    let acme = setup_tenant(&ch, "acme", "com.acme.field").await;
    let globex = setup_tenant(&ch, "globex", "com.globex.field").await;
    let ios = register(&ch, &acme, "ios", IOS).await;
    let android = register(&ch, &acme, "android", ANDROID).await;
    let dead = register(&ch, &acme, "android", ANDROID_DEAD).await;
    let other = register(&ch, &globex, "ios", OTHER_IOS).await;
    for (key, d) in [
        (&acme, &ios),
        (&acme, &android),
        (&acme, &dead),
        (&globex, &other),
    ] {
        wait_device(&ch, key, &d.device_id, "active").await;
    }

    // 1. One push reaches all three devices of acme's app, localized (fr)
    // and deep-linked; globex's device hears nothing.
    let first = push_job(&ch, &acme, "J-42").await;
    wait_count("first push at APNs", 1, || apns_for(servers, IOS).len()).await;
    wait_count("first push at FCM", 2, || {
        fcm_for(servers, ANDROID).len() + fcm_for(servers, ANDROID_DEAD).len()
    })
    .await;
    let seen = &apns_for(servers, IOS)[0];
    assert_eq!(seen.header("apns-topic"), "com.acme.field");
    assert_eq!(seen.header("apns-push-type"), "alert");
    assert_eq!(seen.header("apns-priority"), "10");
    assert_eq!(seen.header("apns-collapse-id"), "job");
    assert!(!seen.header("apns-expiration").is_empty());
    assert!(uuid::Uuid::parse_str(seen.header("apns-id")).is_ok());
    assert_eq!(seen.body["aps"]["alert"]["title"], "Intervention J-42");
    assert_eq!(
        seen.body["aps"]["alert"]["body"],
        "Nouvelle intervention à Lyon"
    );
    assert_eq!(seen.body["link"], "fieldapp://jobs/J-42");
    let sent = &fcm_for(servers, ANDROID)[0];
    assert!(
        servers.fcm.issued().contains(&sent.bearer),
        "FCM got a bearer token it did not issue"
    );
    let m = sent.message();
    assert_eq!(m["notification"]["title"], "Intervention J-42");
    assert_eq!(m["data"]["link"], "fieldapp://jobs/J-42");
    assert_eq!(m["android"]["priority"], "HIGH");
    assert_eq!(m["android"]["collapse_key"], "job");
    let n = wait_status(&ch, &acme, &first, "delivered", Duration::from_secs(15)).await;
    assert_eq!(n.status, "delivered", "{n:?}");
    let outcomes: Vec<Value> = n
        .events
        .iter()
        .filter(|e| e.event_type == "clarion.push.device_outcome.v1")
        .map(|e| serde_json::from_str(&e.detail_json).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "accepted"),
        "{outcomes:?}"
    );
    assert!(apns_for(servers, OTHER_IOS).is_empty());

    // 2. APNs says the iOS token is unregistered (410 with its time), FCM
    // that the second Android token is: both devices are revoked, with the
    // provider's answer.
    let unregistered_at = now_ms();
    servers.apns.answer(
        IOS,
        410,
        &format!(r#"{{"reason":"Unregistered","timestamp":{unregistered_at}}}"#),
    );
    servers
        .fcm
        .answer(ANDROID_DEAD, 404, push::fcm::unregistered());
    let second = push_job(&ch, &acme, "J-43").await;
    let n = wait_status(&ch, &acme, &second, "delivered", Duration::from_secs(15)).await;
    assert_eq!(
        n.status, "delivered",
        "the live Android device accepted it: {n:?}"
    );
    let revoked_ios = wait_device(&ch, &acme, &ios.device_id, "revoked").await;
    assert_eq!(
        revoked_ios.revoked_reason, "unregistered",
        "{revoked_ios:?}"
    );
    assert!(
        revoked_ios.revoked_detail.contains("Unregistered"),
        "{revoked_ios:?}"
    );
    let revoked_dead = wait_device(&ch, &acme, &dead.device_id, "revoked").await;
    assert_eq!(
        revoked_dead.revoked_reason, "unregistered",
        "{revoked_dead:?}"
    );
    assert_eq!(
        wait_device(&ch, &acme, &android.device_id, "active")
            .await
            .status,
        "active"
    );

    // 3. The live Android device rotates its token: the next push goes to
    // the new token only, and skips both revoked devices.
    let rotated = Devices::new(ch.clone())
        .rotate_device(authed(
            &acme,
            api::RotateDeviceRequest {
                subscriber_id: "tech-1".into(),
                device_id: android.device_id.clone(),
                new_token: ANDROID_ROTATED.into(),
            },
        ))
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotated.device_id, android.device_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while devices(&ch, &acme)
        .await
        .iter()
        .find(|d| d.device_id == android.device_id)
        .is_none_or(|d| d.token_fingerprint == android.token_fingerprint)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "rotation never applied"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (ios_before, dead_before, old_before) = (
        apns_for(servers, IOS).len(),
        fcm_for(servers, ANDROID_DEAD).len(),
        fcm_for(servers, ANDROID).len(),
    );
    let third = push_job(&ch, &acme, "J-44").await;
    let n = wait_status(&ch, &acme, &third, "delivered", Duration::from_secs(15)).await;
    assert_eq!(n.status, "delivered", "{n:?}");
    wait_count("push to the rotated token", 1, || {
        fcm_for(servers, ANDROID_ROTATED).len()
    })
    .await;
    assert_eq!(
        fcm_for(servers, ANDROID_ROTATED)[0].message()["notification"]["title"],
        "Intervention J-44"
    );
    assert_eq!(
        apns_for(servers, IOS).len(),
        ios_before,
        "a revoked iOS device got a push"
    );
    assert_eq!(
        fcm_for(servers, ANDROID_DEAD).len(),
        dead_before,
        "a revoked device got a push"
    );
    assert_eq!(
        fcm_for(servers, ANDROID).len(),
        old_before,
        "the old token got a push"
    );
    let targets =
        event_detail(&n, "clarion.notification.dispatch_requested.v1")["push_targets"].clone();
    assert_eq!(targets.as_array().map(Vec::len), Some(1), "{targets}");

    // globex's push reaches globex's device only, with globex's bundle id.
    let g = push_job(&ch, &globex, "G-1").await;
    wait_status(&ch, &globex, &g, "delivered", Duration::from_secs(15)).await;
    let seen = apns_for(servers, OTHER_IOS);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("apns-topic"), "com.globex.field");
    assert_eq!(
        fcm_for(servers, ANDROID_ROTATED).len(),
        1,
        "acme's device got globex's push"
    );

    vec![IOS, ANDROID, ANDROID_DEAD, ANDROID_ROTATED, OTHER_IOS]
}

/// Device tokens are sealed under the subscriber's data key (issue #32):
/// initech's tech-1 gets a push on their device, is erased, and the next
/// push to them fails saying why, with nothing sent to APNs. Returns the
/// token (searched for in the files afterwards).
async fn erased_scenario(node: &RunningNode, servers: &PushServers) -> &'static str {
    let ch = channel(node.grpc).await;
    let key = setup_tenant(&ch, "initech", "com.initech.field").await;
    let d = register(&ch, &key, "ios", ERASED_IOS).await;
    wait_device(&ch, &key, &d.device_id, "active").await;
    let before = push_job(&ch, &key, "I-1").await;
    let n = wait_status(&ch, &key, &before, "delivered", Duration::from_secs(15)).await;
    assert_eq!(n.status, "delivered", "{n:?}");
    assert_eq!(apns_for(servers, ERASED_IOS).len(), 1);
    node.nodes[0]
        .personal
        .erase_subscriber(
            &clarion_domain::TenantId::parse("initech").unwrap(),
            "tech-1",
        )
        .await
        .unwrap();
    let after = push_job(&ch, &key, "I-2").await;
    let n = wait_until(&ch, &key, &after, Duration::from_secs(15), ended).await;
    assert!(ended(&n), "{n:?}");
    assert_ne!(n.status, "delivered", "{n:?}");
    let failed = event_detail(&n, "clarion.notification.failed.v1");
    assert_eq!(
        failed["reason"], "the recipient's data was erased",
        "{failed}"
    );
    assert_eq!(
        apns_for(servers, ERASED_IOS).len(),
        1,
        "nothing more went to APNs"
    );
    ERASED_IOS
}

/// Whether `haystack` holds `needle` anywhere.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_ios_and_android_and_dead_tokens_revoke_on_the_embedded_backend() {
    let servers = PushServers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    servers.configure(
        &mut cfg,
        &[
            ("acme", "fieldapp"),
            ("globex", "fieldapp"),
            ("initech", "fieldapp"),
        ],
    );
    let node = start(cfg, false).await;
    let mut tokens = push_scenario(&node, &servers).await;
    tokens.push(erased_scenario(&node, &servers).await);
    node.stop().await;

    // Every byte Clarion wrote (log, store, WAL): no token in clear.
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            for t in &tokens {
                assert!(!contains(&bytes, t), "{t} in clear in {}", path.display());
            }
        }
    }
    assert!(files > 0, "no data files to search");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_ios_and_android_and_dead_tokens_revoke_over_kafka() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka end-to-end not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let servers = PushServers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let url = crate::support::kafka_url(&brokers);
    cfg.log.url = url.clone();
    let prefix = format!("e2e-push-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.topic_prefix = prefix.clone();
    cfg.log.partitions = 3;
    servers.configure(&mut cfg, &[("acme", "fieldapp"), ("globex", "fieldapp")]);
    let node = start(cfg, true).await;
    let tokens = push_scenario(&node, &servers).await;
    node.stop().await;

    // Every record of every topic: no token in clear.
    let log = clarion_log::open(&url).await.unwrap();
    let mut records = 0;
    for topic in clarion_runtime::Topic::ALL {
        let name = format!("{prefix}{}", topic.base_name());
        for partition in 0..log.partitions(&name).await.unwrap() {
            let end = log.end_offset(&name, partition).await.unwrap();
            let mut from = 0;
            while from < end {
                let batch = log.read(&name, partition, from, 500).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                for r in &batch {
                    records += 1;
                    for t in &tokens {
                        assert!(
                            !contains(&r.value, t),
                            "{t} in clear in {name}/{partition}@{}",
                            r.offset
                        );
                        assert!(!r.key.contains(t));
                    }
                }
                from = batch.last().unwrap().offset + 1;
            }
        }
    }
    assert!(records > 20, "only {records} records read");
}
