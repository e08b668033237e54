//! The push provider through the dispatcher's effects, against a local APNs
//! (HTTP/2 over TLS, checking the ES256 provider token) and a local FCM
//! (checking the access token it issued): one push fans out to an iOS and
//! an Android device; each device's answer becomes an event; dead tokens go
//! to the subscriber's stream for the router; credentials and payload bugs
//! are told apart from dead tokens. Two tenants: credentials and sealed
//! tokens are per tenant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clarion_dispatch::apns::{apns_id_for_attempt, Environment};
use clarion_dispatch::push::{
    ApnsAppConfig, FcmAppConfig, PushAppConfig, PushConfig, PushProvider,
};
use clarion_dispatch::secrets::Keyring;
use clarion_dispatch::{device_token, DispatchEffects};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_push_servers::apns::{ApnsServer, ProviderKey, KEY_ID, TEAM_ID};
use clarion_push_servers::fcm::{self as google, FcmServer};
use clarion_runtime::personal::Personal;
use clarion_runtime::{Clock, Effects, Emit, ManualClock, SystemClock, Topic};
use clarion_store::embedded::SqliteStore;
use serde_json::json;

const IOS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const ANDROID_TOKEN: &str = "fcm-registration-token:APA91bHunL0ng";
const ATTEMPT: &str = "00112233445566778899aabbccddeeff";

struct Fixture {
    apns: ApnsServer,
    fcm: FcmServer,
    keyring: Arc<Keyring>,
    effects: DispatchEffects,
    clock: ManualClock,
}

fn apns_config(key: &ProviderKey, server: &ApnsServer) -> ApnsAppConfig {
    ApnsAppConfig {
        team_id: TEAM_ID.into(),
        key_id: KEY_ID.into(),
        key_pem: key.pem.clone(),
        topic: "com.acme.default".into(),
        environment: Environment::Sandbox,
        base_url: Some(server.base_url.clone()),
        ca_pem: Some(server.ca_pem.clone()),
        timeout_ms: 5_000,
    }
}

fn fcm_config(server: &FcmServer) -> FcmAppConfig {
    FcmAppConfig {
        service_account_json: server.service_account_json(),
        project_id: None,
        base_url: Some(server.base_url.clone()),
        token_url: None,
        timeout_ms: 5_000,
    }
}

/// acme's app has both credentials; globex's app of the same name only FCM.
async fn fixture() -> Fixture {
    fixture_with(None).await
}

/// [`fixture`] whose dispatcher opens personal data (issue #32).
async fn fixture_with(personal: Option<Arc<Personal>>) -> Fixture {
    let key = ProviderKey::generate();
    let apns = ApnsServer::start(key.public.clone()).await;
    let fcm = FcmServer::start(3600).await;
    let cfg = PushConfig {
        apps: vec![
            PushAppConfig {
                tenant: "acme".into(),
                app: "fieldapp".into(),
                apns: Some(apns_config(&key, &apns)),
                fcm: Some(fcm_config(&fcm)),
            },
            PushAppConfig {
                tenant: "globex".into(),
                app: "fieldapp".into(),
                apns: None,
                fcm: Some(fcm_config(&fcm)),
            },
        ],
    };
    let keyring = Arc::new(Keyring::new("k1", &[("k1", [7; 32])]).unwrap());
    // The FCM server checks assertion expiry on the real clock.
    let clock = ManualClock::new(SystemClock.now_ms());
    let provider = PushProvider::new(&cfg, keyring.clone(), Arc::new(clock.clone())).unwrap();
    Fixture {
        apns,
        fcm,
        keyring,
        effects: match personal {
            Some(p) => DispatchEffects::new(vec![Arc::new(provider)]).with_personal(p),
            None => DispatchEffects::new(vec![Arc::new(provider)]),
        },
        clock,
    }
}

impl Fixture {
    fn target(&self, tenant: &str, device: &str, platform: &str, token: &str) -> pb::PushTarget {
        pb::PushTarget {
            device_id: device.into(),
            platform: platform.into(),
            provider: String::new(),
            token: Some(device_token::seal(&self.keyring, tenant, token)),
            token_registered_at_ms: 1_000,
        }
    }

    fn both(&self) -> Vec<pb::PushTarget> {
        vec![
            self.target("acme", "dev-ios", "ios", IOS_TOKEN),
            self.target("acme", "dev-android", "android", ANDROID_TOKEN),
        ]
    }

    async fn push(
        &self,
        tenant: &str,
        targets: Vec<pb::PushTarget>,
        o: pb::PushOptions,
    ) -> Vec<Emit> {
        let e = request(tenant, targets, o);
        self.effects.run(&e.encode(), self.clock.now_ms()).await
    }
}

fn options() -> pb::PushOptions {
    pb::PushOptions {
        app_id: "fieldapp".into(),
        apns_topic: "com.acme.field".into(),
        apns_environment: "sandbox".into(),
        push_type: "alert".into(),
        priority: "high".into(),
        ttl_seconds: 3600,
        collapse_key: "job-J-7".into(),
        sound: "default".into(),
        badge: Some(2),
        android_channel_id: "jobs".into(),
        ..Default::default()
    }
}

fn request(tenant: &str, targets: Vec<pb::PushTarget>, o: pb::PushOptions) -> Event {
    let tenant = TenantId::parse(tenant).unwrap();
    Event {
        id: Id::derive(&[b"dispatch", tenant.as_str().as_bytes()]),
        partition_key: clarion_domain::ids::recipient_key(&tenant, "sub-1"),
        tenant,
        occurred_at_ms: 1,
        causation_id: None,
        correlation_id: Some(Id::derive(&[b"n1"])),
        actor: Actor::System("router".into()),
        payload: Payload::DispatchRequested(pb::DispatchRequested {
            notification_id: "n1".into(),
            attempt_id: ATTEMPT.into(),
            channel: "push".into(),
            provider: "push".into(),
            subject: "Tâche assignée".into(),
            body: "Réparation de chaudière à 10 h".into(),
            locale: "fr-CA".into(),
            subscriber_id: "sub-1".into(),
            step: "push".into(),
            push_targets: targets,
            push: Some(Box::new(o)),
            link: "fieldapp://jobs/J-7".into(),
            data_json: r#"{"job":"J-7","visits":2}"#.into(),
            ..Default::default()
        }),
    }
}

fn of_type<'a>(emits: &'a [Emit], ty: &str) -> Vec<&'a Emit> {
    emits
        .iter()
        .filter(|e| e.event.event_type() == ty)
        .collect()
}

fn device_outcomes(emits: &[Emit]) -> HashMap<String, pb::PushDeviceOutcome> {
    emits
        .iter()
        .filter_map(|e| match &e.event.payload {
            Payload::PushDeviceOutcome(o) => {
                assert_eq!(e.topic, Topic::Deliveries);
                Some((o.device_id.clone(), o.clone()))
            }
            _ => None,
        })
        .collect()
}

fn rejections(emits: &[Emit]) -> Vec<(Emit, pb::PushRejected)> {
    emits
        .iter()
        .filter_map(|e| match &e.event.payload {
            Payload::PushRejected(r) => Some((e.clone(), r.clone())),
            _ => None,
        })
        .collect()
}

fn failed(emits: &[Emit]) -> pb::NotificationFailed {
    let f = of_type(emits, "clarion.notification.failed.v1");
    assert_eq!(f.len(), 1, "{emits:#?}");
    match &f[0].event.payload {
        Payload::Failed(f) => f.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn one_push_fans_out_to_an_ios_and_an_android_device() {
    let f = fixture().await;
    let emits = f.push("acme", f.both(), options()).await;

    // APNs: one HTTP/2 request with a valid provider token (the server
    // checked the signature), the headers, and the localized, linked payload.
    let apns = f.apns.received();
    assert_eq!(apns.len(), 1);
    let r = &apns[0];
    assert_eq!(r.token, IOS_TOKEN);
    assert_eq!(r.header("apns-topic"), "com.acme.field");
    assert_eq!(r.header("apns-push-type"), "alert");
    assert_eq!(r.header("apns-priority"), "10");
    assert_eq!(r.header("apns-collapse-id"), "job-J-7");
    let exp = f.clock.now_ms() / 1000 + 3600;
    assert_eq!(r.header("apns-expiration"), exp.to_string());
    let apns_id = apns_id_for_attempt(&format!("{ATTEMPT}/dev-ios"));
    assert_eq!(r.header("apns-id"), apns_id.hyphenated().to_string());
    assert_eq!(
        r.body,
        json!({"aps": {"alert": {"title": "Tâche assignée", "body": "Réparation de chaudière à 10 h"},
                       "sound": "default", "badge": 2},
               "link": "fieldapp://jobs/J-7", "data": {"job": "J-7", "visits": 2}})
    );

    // FCM: the v1 JSON, with the access token the server issued.
    let sent = f.fcm.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bearer, f.fcm.issued()[0]);
    assert_eq!(sent[0].project, google::PROJECT);
    assert_eq!(
        sent[0].body,
        json!({"message": {
            "token": ANDROID_TOKEN,
            "notification": {"title": "Tâche assignée", "body": "Réparation de chaudière à 10 h"},
            "data": {"job": "J-7", "visits": "2", "link": "fieldapp://jobs/J-7"},
            "android": {"priority": "HIGH", "ttl": "3600s", "collapse_key": "job-J-7",
                        "notification": {"channel_id": "jobs", "sound": "default"}}
        }})
    );

    // Sent and delivered (one device sufficed), one outcome per device.
    assert_eq!(of_type(&emits, "clarion.notification.sent.v1").len(), 1);
    assert_eq!(
        of_type(&emits, "clarion.notification.delivered.v1").len(),
        1
    );
    let outcomes = device_outcomes(&emits);
    assert_eq!(outcomes.len(), 2);
    let ios = &outcomes["dev-ios"];
    assert_eq!(
        (ios.outcome.as_str(), ios.provider.as_str()),
        ("accepted", "apns")
    );
    assert_eq!(ios.provider_message_id, apns_id.hyphenated().to_string());
    let android = &outcomes["dev-android"];
    assert_eq!(
        (android.outcome.as_str(), android.platform.as_str()),
        ("accepted", "android")
    );
    assert!(android
        .provider_message_id
        .starts_with("projects/demo-project/messages/"));
    assert!(rejections(&emits).is_empty());

    // No event holds a token in clear.
    for e in &emits {
        let bytes = e.event.encode();
        for t in [IOS_TOKEN, ANDROID_TOKEN] {
            assert!(!bytes.windows(t.len()).any(|w| w == t.as_bytes()), "{e:?}");
        }
    }

    // A repeat of the effect (after a crash) yields the same event ids and
    // the same apns-id, so APNs and the log can tell it is a repeat.
    let again = f.push("acme", f.both(), options()).await;
    let ids = |es: &[Emit]| {
        let mut v: Vec<_> = es.iter().map(|e| e.event.id).collect();
        v.sort_by_key(|i| i.0);
        v
    };
    assert_eq!(ids(&again), ids(&emits));
    let distinct: std::collections::HashSet<_> = emits.iter().map(|e| e.event.id).collect();
    assert_eq!(distinct.len(), emits.len());
    assert_eq!(f.apns.received()[1].header("apns-id"), r.header("apns-id"));
    assert_eq!(f.apns.connections(), 1, "one HTTP/2 connection per app");
}

#[tokio::test]
async fn client_side_localization_keys_reach_both_providers() {
    let f = fixture().await;
    let o = pb::PushOptions {
        title_loc_key: "JOB_ASSIGNED_TITLE".into(),
        title_loc_args: vec!["J-7".into()],
        body_loc_key: "JOB_ASSIGNED_BODY".into(),
        body_loc_args: vec!["10:00".into(), "Boiler".into()],
        ..options()
    };
    let emits = f.push("acme", f.both(), o).await;
    assert_eq!(
        of_type(&emits, "clarion.notification.delivered.v1").len(),
        1
    );
    assert_eq!(
        f.apns.received()[0].body["aps"]["alert"],
        json!({"title-loc-key": "JOB_ASSIGNED_TITLE", "title-loc-args": ["J-7"],
               "loc-key": "JOB_ASSIGNED_BODY", "loc-args": ["10:00", "Boiler"]})
    );
    assert_eq!(
        f.fcm.received()[0].message()["android"]["notification"],
        json!({"channel_id": "jobs", "sound": "default",
               "title_loc_key": "JOB_ASSIGNED_TITLE", "title_loc_args": ["J-7"],
               "body_loc_key": "JOB_ASSIGNED_BODY", "body_loc_args": ["10:00", "Boiler"]})
    );
}

#[tokio::test]
async fn dead_tokens_go_to_the_subscribers_stream_with_the_410_timestamp() {
    let f = fixture().await;
    f.apns.answer(
        IOS_TOKEN,
        410,
        r#"{"reason":"Unregistered","timestamp":1700000000123}"#,
    );
    f.fcm.answer(ANDROID_TOKEN, 404, google::unregistered());
    let targets = f.both();
    let emits = f.push("acme", targets.clone(), options()).await;

    let fail = failed(&emits);
    assert!(!fail.retryable, "{fail:?}");
    assert!(
        fail.reason.contains("dev-ios") && fail.reason.contains("Unregistered"),
        "{}",
        fail.reason
    );
    assert!(of_type(&emits, "clarion.notification.sent.v1").is_empty());
    let outcomes = device_outcomes(&emits);
    assert!(
        outcomes.values().all(|o| o.outcome == "rejected_token"),
        "{outcomes:?}"
    );

    let rejected = rejections(&emits);
    assert_eq!(rejected.len(), 2);
    for (emit, r) in &rejected {
        assert_eq!(emit.topic, Topic::Triggers);
        assert_eq!(emit.event.partition_key, "acme/sub-1");
        assert_eq!(
            (r.subscriber_id.as_str(), r.notification_id.as_str()),
            ("sub-1", "n1")
        );
        assert_eq!(r.attempt_id, ATTEMPT);
    }
    let ios = &rejected
        .iter()
        .find(|(_, r)| r.device_id == "dev-ios")
        .unwrap()
        .1;
    assert_eq!(
        (ios.provider.as_str(), ios.reason.as_str()),
        ("apns", "Unregistered")
    );
    assert_eq!(ios.unregistered_at_ms, 1_700_000_000_123);
    assert_eq!(ios.token_hash, targets[0].token.as_ref().unwrap().hash);
    let android = &rejected
        .iter()
        .find(|(_, r)| r.device_id == "dev-android")
        .unwrap()
        .1;
    assert_eq!(
        (android.provider.as_str(), android.reason.as_str()),
        ("fcm", "UNREGISTERED")
    );
    assert_eq!(android.unregistered_at_ms, 0);
    assert_eq!(android.token_hash, targets[1].token.as_ref().unwrap().hash);
    assert!(!android.detail.contains(ANDROID_TOKEN) && !ios.detail.contains(IOS_TOKEN));
}

#[tokio::test]
async fn one_accepted_device_delivers_the_push_and_the_dead_one_is_reported() {
    let f = fixture().await;
    f.apns
        .answer(IOS_TOKEN, 400, r#"{"reason":"BadDeviceToken"}"#);
    let emits = f.push("acme", f.both(), options()).await;
    assert_eq!(of_type(&emits, "clarion.notification.sent.v1").len(), 1);
    assert_eq!(
        of_type(&emits, "clarion.notification.delivered.v1").len(),
        1
    );
    assert!(of_type(&emits, "clarion.notification.failed.v1").is_empty());
    let rejected = rejections(&emits);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].1.device_id, "dev-ios");
    assert_eq!(rejected[0].1.reason, "BadDeviceToken");
    let outcomes = device_outcomes(&emits);
    assert_eq!(outcomes["dev-ios"].outcome, "rejected_token");
    assert_eq!(outcomes["dev-android"].outcome, "accepted");
}

#[tokio::test]
async fn an_fcm_payload_violation_is_our_bug_not_a_dead_token() {
    let f = fixture().await;
    f.fcm.answer(
        ANDROID_TOKEN,
        400,
        google::field_violation("message.android.notification.channel_id"),
    );
    let android = vec![f.target("acme", "dev-android", "android", ANDROID_TOKEN)];
    let emits = f.push("acme", android, options()).await;
    let fail = failed(&emits);
    assert!(!fail.retryable);
    assert!(fail.reason.contains("INVALID_ARGUMENT"), "{}", fail.reason);
    assert!(rejections(&emits).is_empty());
    assert_eq!(device_outcomes(&emits)["dev-android"].outcome, "failed");
}

/// Counts counters by name and labels (the test's own recorder).
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Counter::from_arc(self.0.lock().unwrap().entry(name).or_default().clone())
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test]
async fn refused_credentials_alert_the_operator_retry_and_leave_tokens_alone() {
    let counters = Counters::default();
    let _guard = metrics::set_default_local_recorder(&counters);
    let f = fixture().await;
    f.apns
        .answer(IOS_TOKEN, 403, r#"{"reason":"InvalidProviderToken"}"#);
    f.fcm.answer(
        ANDROID_TOKEN,
        401,
        google::error(
            401,
            "UNAUTHENTICATED",
            "APNs auth key rejected",
            json!([google::fcm_detail("THIRD_PARTY_AUTH_ERROR")]),
        ),
    );
    let emits = f.push("acme", f.both(), options()).await;
    let fail = failed(&emits);
    assert!(fail.retryable, "fixed credentials make a retry work");
    assert!(rejections(&emits).is_empty());
    let outcomes = device_outcomes(&emits);
    assert!(
        outcomes.values().all(|o| o.outcome == "credentials"),
        "{outcomes:?}"
    );
    assert_eq!(
        counters.get("clarion_push_credential_errors_total{provider=apns}"),
        1
    );
    assert_eq!(
        counters.get("clarion_push_credential_errors_total{provider=fcm}"),
        1
    );

    // A server error is retryable too, and no credential alert.
    f.apns
        .answer(IOS_TOKEN, 503, r#"{"reason":"ServiceUnavailable"}"#);
    let ios = vec![f.target("acme", "dev-ios", "ios", IOS_TOKEN)];
    let emits = f.push("acme", ios, options()).await;
    assert!(failed(&emits).retryable);
    assert_eq!(device_outcomes(&emits)["dev-ios"].outcome, "retryable");
    assert_eq!(
        counters.get("clarion_push_credential_errors_total{provider=apns}"),
        1
    );
    assert_eq!(
        counters.get("clarion_push_device_outcomes_total{provider=apns,outcome=retryable}"),
        1
    );
}

#[tokio::test]
async fn credentials_and_tokens_belong_to_their_tenant() {
    let f = fixture().await;
    // globex's app has no APNs credentials: its iOS device cannot be reached.
    let ios = vec![f.target("globex", "dev-ios", "ios", IOS_TOKEN)];
    let emits = f.push("globex", ios, options()).await;
    let fail = failed(&emits);
    assert!(!fail.retryable);
    assert!(
        fail.reason.contains("\"fieldapp\"")
            && fail.reason.contains("APNs")
            && fail.reason.contains("ios"),
        "{}",
        fail.reason
    );
    // A token sealed for acme does not open in globex's request.
    let stolen = vec![f.target("acme", "dev-android", "android", ANDROID_TOKEN)];
    let emits = f.push("globex", stolen, options()).await;
    assert!(!failed(&emits).retryable);
    assert_eq!(device_outcomes(&emits)["dev-android"].outcome, "failed");
    // An app no credentials exist for at all, and a push with no device.
    let other = pb::PushOptions {
        app_id: "other-app".into(),
        ..options()
    };
    let emits = f.push("acme", f.both(), other).await;
    assert!(failed(&emits).reason.contains("\"other-app\""));
    let emits = f.push("acme", Vec::new(), options()).await;
    let fail = failed(&emits);
    assert!(
        !fail.retryable && fail.reason.contains("no active device"),
        "{fail:?}"
    );
    assert!(f.apns.received().is_empty() && f.fcm.received().is_empty());
}

/// A target whose token is sealed under `sub-1`'s data key, as the gateway
/// registers it since #32.
async fn personal_target(
    f: &Fixture,
    p: &Personal,
    tenant: &str,
    device: &str,
    platform: &str,
    token: &str,
) -> pb::PushTarget {
    let mut sealed = device_token::hashed(&f.keyring, tenant, token);
    sealed.personal = p
        .seal_value(&TenantId::parse(tenant).unwrap(), "sub-1", token)
        .await
        .unwrap();
    assert!(!sealed.personal.contains(token));
    pb::PushTarget {
        device_id: device.into(),
        platform: platform.into(),
        provider: String::new(),
        token: Some(sealed),
        token_registered_at_ms: 1_000,
    }
}

/// Device tokens under the subscriber's data key (issue #32): the
/// dispatcher opens them for the provider call, a master-sealed token of
/// before still opens (migration on read); once the subscriber is erased
/// a pending push fails with the reason; the other tenant's still goes.
#[tokio::test]
async fn tokens_under_the_subscribers_key_open_for_the_send_until_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("keys.db").to_str().unwrap()).unwrap();
    let ring = Arc::new(Keyring::new("k1", &[("k1", [7; 32])]).unwrap());
    let p = Personal::new(Arc::new(store), ring);
    let f = fixture_with(Some(p.clone())).await;
    let ios = personal_target(&f, &p, "acme", "dev-ios", "ios", IOS_TOKEN).await;
    let legacy = f.target("acme", "dev-android", "android", ANDROID_TOKEN);
    let emits = f
        .push("acme", vec![ios.clone(), legacy.clone()], options())
        .await;
    assert_eq!(f.apns.received()[0].token, IOS_TOKEN);
    assert_eq!(f.fcm.received()[0].body["message"]["token"], ANDROID_TOKEN);
    let outcomes = device_outcomes(&emits);
    assert_eq!(outcomes["dev-ios"].outcome, "accepted");
    assert_eq!(outcomes["dev-android"].outcome, "accepted");
    let globex = personal_target(&f, &p, "globex", "dev-g", "android", "globex-fcm-token").await;

    // acme's sub-1 is erased: a push still pending for them fails, named.
    p.erase_subscriber(&TenantId::parse("acme").unwrap(), "sub-1")
        .await
        .unwrap();
    let emits = f.push("acme", vec![ios.clone()], options()).await;
    let failed = failed(&emits);
    assert_eq!(failed.reason, "the recipient's data was erased");
    assert!(!failed.retryable);
    assert_eq!(f.apns.received().len(), 1, "nothing went to APNs");
    // A device of before the erasure with a master-sealed token is not the
    // data key's: it still opens (re-registration moves it under the key).
    let emits = f.push("acme", vec![ios, legacy], options()).await;
    let outcomes = device_outcomes(&emits);
    assert_eq!(outcomes["dev-android"].outcome, "accepted");
    assert_ne!(outcomes["dev-ios"].outcome, "accepted");
    assert!(
        outcomes["dev-ios"].detail.contains("erased"),
        "{:?}",
        outcomes["dev-ios"]
    );
    assert_eq!(f.apns.received().len(), 1);

    // globex's subscriber of the same id keeps theirs.
    let emits = f.push("globex", vec![globex], options()).await;
    assert_eq!(device_outcomes(&emits)["dev-g"].outcome, "accepted");
    assert_eq!(
        f.fcm.received().last().unwrap().body["message"]["token"],
        "globex-fcm-token"
    );
}
