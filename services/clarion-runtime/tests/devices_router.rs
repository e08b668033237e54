//! Devices in the router, over the real embedded parts: the log and the
//! store in one SQLite file, projector and router runners stepped by hand
//! on a manual clock. Device events go on the subscribers' streams as the
//! gateway (registrations) and the dispatcher (rejections) append them;
//! every dispatch is answered as the sink answers it (`Sent`, `Delivered`).
//! Apps are written as the projector writes them (`Table::Apps`).
//!
//! Every scenario has two tenants, `acme` and `globex`, each with a
//! subscriber of the same id and an app of the same id: one tenant's
//! devices never receive the other's pushes.

mod support;

use std::time::Duration;

use bytes::Bytes;
use clarion_domain::flow::Flow;
use clarion_domain::ids::recipient_key;
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};

use clarion_proto::events as pb;
use clarion_runtime::router::{device_key, device_token_key};
use clarion_runtime::Topic;
use clarion_store::{RowKey, Scan, Table, WriteBatch};
use prost::Message;
use support::{config_event, Env, PARTITIONS, T0};

const DAY: Duration = Duration::from_secs(86_400);
const SUB: &str = "sub-1";
const PHONE: &str = "+15550000001";

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

impl Env {
    /// An app's row, as the projector writes it from `AppConfigured`.
    async fn app(&self, t: &TenantId, app_id: &str) {
        let app = pb::AppConfigured {
            app_id: app_id.into(),
            name: app_id.into(),
            platforms: vec!["ios".into(), "android".into()],
            ios_bundle_id: format!("com.{t}.{app_id}"),
            apns_environment: "sandbox".into(),
            deep_links: [("job_card".to_string(), format!("{app_id}://jobs/{{id}}"))].into(),
            version: 1,
            origin: None,
        };
        let mut w = WriteBatch::new();
        w.put(
            RowKey::new(Table::Apps, t.as_str(), "apps", app_id.as_bytes().to_vec()),
            Bytes::from(app.encode_to_vec()),
        );
        self.store.write(w).await.expect("app row");
    }

    /// Appends events to the subscribers' streams, then runs the routers and
    /// the sink's outcomes until nothing more happens.
    async fn on_streams(&mut self, events: Vec<Event>) {
        self.append(Topic::Triggers, &events).await;
        for _ in 0..10 {
            for p in 0..PARTITIONS {
                let recs = self.records(Topic::Triggers, p).await;
                self.routers[p as usize].step(recs).await.expect("routes");
            }
            let answered = self.answer_dispatches().await;
            for p in 0..PARTITIONS {
                let recs = self.records(Topic::Deliveries, p).await;
                self.routers[p as usize]
                    .step_topic(Topic::Deliveries, recs)
                    .await
                    .expect("applies outcomes");
            }
            if answered == 0 {
                return;
            }
        }
        panic!("the pipeline did not settle");
    }

    /// The sink's `Sent` and `Delivered` for every dispatch not answered yet.
    async fn answer_dispatches(&self) -> usize {
        let answered: std::collections::HashSet<String> = self
            .events(Topic::Deliveries)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Payload::Sent(s) => Some(s.attempt_id),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for e in self.events(Topic::Dispatch).await {
            let Payload::DispatchRequested(d) = &e.payload else {
                continue;
            };
            if answered.contains(&d.attempt_id) {
                continue;
            }
            let actor = Actor::System("dispatcher".into());
            let (nid, aid) = (d.notification_id.clone(), d.attempt_id.clone());
            out.push(e.caused(
                0,
                T0,
                actor.clone(),
                Payload::Sent(pb::NotificationSent {
                    notification_id: nid.clone(),
                    attempt_id: aid.clone(),
                    provider: d.provider.clone(),
                    provider_message_id: aid.clone(),
                    context: None,
                }),
            ));
            out.push(e.caused(
                1,
                T0,
                actor,
                Payload::Delivered(pb::NotificationDelivered {
                    notification_id: nid,
                    attempt_id: aid,
                    provider: d.provider.clone(),
                    context: None,
                }),
            ));
        }
        let n = out.len() / 2;
        if !out.is_empty() {
            self.append(Topic::Deliveries, &out).await;
        }
        n
    }

    /// An event on the subscriber's stream, at the clock's time.
    fn stream_event(&mut self, t: &TenantId, payload: Payload) -> Event {
        self.seq += 1;
        Event {
            id: Id::derive(&[b"stream", t.as_str().as_bytes(), &self.seq.to_le_bytes()]),
            tenant: t.clone(),
            partition_key: recipient_key(t, SUB),
            occurred_at_ms: clarion_runtime::Clock::now_ms(&self.clock),
            causation_id: None,
            correlation_id: None,
            actor: Actor::ApiKey("k1".into()),
            payload,
        }
    }

    fn register(
        &mut self,
        t: &TenantId,
        device: &str,
        app: &str,
        platform: &str,
        tok: u8,
    ) -> Event {
        let p = pb::DeviceRegistered {
            subscriber_id: SUB.into(),
            device_id: device.into(),
            platform: platform.into(),
            app_id: app.into(),
            token: Some(sealed(tok)),
            locale: "fr-CA".into(),
            ..Default::default()
        };
        self.stream_event(t, Payload::DeviceRegistered(p))
    }

    fn seen(&mut self, t: &TenantId, device: &str) -> Event {
        let p = pb::DeviceSeen {
            subscriber_id: SUB.into(),
            device_id: device.into(),
            ..Default::default()
        };
        self.stream_event(t, Payload::DeviceSeen(p))
    }

    fn rotate(&mut self, t: &TenantId, device: &str, tok: u8) -> Event {
        let p = pb::DeviceTokenRotated {
            subscriber_id: SUB.into(),
            device_id: device.into(),
            token: Some(sealed(tok)),
            origin: None,
        };
        self.stream_event(t, Payload::DeviceTokenRotated(p))
    }

    fn revoke(&mut self, t: &TenantId, device: &str) -> Event {
        let p = pb::DeviceRevoked {
            subscriber_id: SUB.into(),
            device_id: device.into(),
            reason: "user".into(),
            origin: Some(pb::Origin {
                interface: "rest".into(),
                actor: format!("subscriber:{SUB}"),
            }),
        };
        self.stream_event(t, Payload::DeviceRevoked(p))
    }

    /// The dispatcher's rejection of a device's token.
    fn rejected(&mut self, t: &TenantId, device: &str, tok: u8, reason: &str, at: i64) -> Event {
        let p = pb::PushRejected {
            subscriber_id: SUB.into(),
            device_id: device.into(),
            token_hash: sealed(tok).hash,
            provider: "apns".into(),
            reason: reason.into(),
            detail: "410 from APNs".into(),
            unregistered_at_ms: at,
            notification_id: "n-earlier".into(),
            attempt_id: "a-earlier".into(),
        };
        let mut e = self.stream_event(t, Payload::PushRejected(p));
        e.actor = Actor::System("dispatcher".into());
        e
    }

    fn trigger(&mut self, t: &TenantId, workflow: &str) -> Event {
        self.seq += 1;
        let n = self.seq;
        let cmd = TriggerCommand {
            workflow_id: workflow.into(),
            recipients: vec![Recipient {
                subscriber_id: SUB.into(),
                contact: None,
            }],
            payload_json: r#"{"job_id":"J-42","extra":{"job":"J-42","kind":"repair"}}"#.into(),
            idempotency_key: format!("key-{n}"),
            ..Default::default()
        };
        let now = clarion_runtime::Clock::now_ms(&self.clock);
        let mut events = cmd.accept(t, 1, [n as u8; 16], now, &Actor::ApiKey("k1".into()));
        events.remove(0)
    }

    fn upsert(&mut self, t: &TenantId) -> Event {
        let s = Subscriber {
            subscriber_id: SUB.into(),
            phone: PHONE.into(),
            locale: "fr-CA".into(),
            ..Default::default()
        };
        self.stream_event(t, Payload::SubscriberUpserted(s.to_event()))
    }

    /// The dispatches of a trigger's notification.
    async fn dispatches(&self, trigger: &Event) -> Vec<pb::DispatchRequested> {
        let nid = notification(trigger);
        self.events(Topic::Dispatch)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Payload::DispatchRequested(d) if d.notification_id == nid => Some(d),
                _ => None,
            })
            .collect()
    }

    /// The devices a trigger's pushes went to, per push.
    async fn pushed_to(&self, trigger: &Event) -> Vec<Vec<String>> {
        self.dispatches(trigger)
            .await
            .into_iter()
            .filter(|d| d.channel == "push")
            .map(|d| d.push_targets.into_iter().map(|t| t.device_id).collect())
            .collect()
    }

    async fn device(&self, t: &str, id: &str) -> pb::DeviceRecord {
        let b = self
            .store
            .get(&device_key(t, SUB, id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no device {id} of {t}"));
        pb::DeviceRecord::decode(&b[..]).expect("device row decodes")
    }

    async fn token_owner(&self, t: &str, tok: u8) -> Option<pb::DeviceRef> {
        self.store
            .get(&device_token_key(t, &sealed(tok).hash))
            .await
            .unwrap()
            .map(|b| pb::DeviceRef::decode(&b[..]).expect("ref decodes"))
    }

    /// The run's failures and its end.
    async fn failures_and_end(&self, trigger: &Event) -> (Vec<(String, String)>, String) {
        let nid = notification(trigger);
        let mut failures = Vec::new();
        let mut end = String::new();
        for e in self.events(Topic::Notifications).await {
            match e.payload {
                Payload::Failed(f) if f.notification_id == nid => {
                    failures.push((f.stage, f.reason));
                }
                Payload::Ended(r) if r.notification_id == nid => end = r.outcome,
                _ => {}
            }
        }
        (failures, end)
    }
}

fn notification(trigger: &Event) -> String {
    match &trigger.payload {
        Payload::Triggered(t) => t.notification_id.clone(),
        _ => panic!("not a trigger"),
    }
}

/// A token as the gateway seals it (here: made-up bytes; the router never
/// opens it).
fn sealed(tok: u8) -> pb::SealedToken {
    pb::SealedToken {
        sealed: vec![0x5E, tok, tok],
        hash: vec![tok; 32],
        hash_key_id: "k1".into(),
        personal: String::new(),
    }
}

fn template(t: &TenantId, id: &str, channel: &str) -> Event {
    let variant = |locale: &str, subject: &str, body: &str| pb::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    let tpl = Template::new(
        id,
        1,
        channel,
        &[
            variant("default", "New job", "Job {{ payload.job_id }}"),
            variant("fr", "Nouveau travail", "Travail {{ payload.job_id }}"),
        ],
    )
    .expect("valid template");
    config_event(t, id, Payload::TemplatePublished(tpl.to_event()))
}

fn workflow(t: &TenantId, yaml: &str) -> Event {
    let channel_of = |tpl: &str| tpl.strip_suffix("-tpl").and_then(|c| c.parse().ok());
    let flow = Flow::parse(yaml, 1, channel_of).expect("valid workflow");
    let tag = format!("workflow {}", flow.def.id);
    config_event(
        t,
        &tag,
        Payload::WorkflowPublished(clarion_domain::workflow::published(&flow)),
    )
}

/// A push with fallback to SMS.
const JOB: &str = r#"
id: job
steps:
  - id: reach
    type: fallback
    chain:
      - channel: push
        template: push-tpl
        app: field
        link: { type: job_card, id: payload.job_id }
        push: { ttl: 1h, priority: high, body_loc_key: JOB_BODY, body_loc_args: [payload.job_id] }
        data: payload.extra
      - { channel: sms, template: sms-tpl }
"#;

/// An inbox item.
const INBOX: &str = r#"
id: inbox
steps:
  - id: item
    type: send
    channel: in_app
    template: in_app-tpl
    app: field
    link: { type: job_card, id: payload.job_id }
    category: jobs
    data: payload.extra
"#;

/// Both tenants: templates, workflows, the apps `field` and `shop`, and the
/// subscriber.
async fn given(env: &mut Env) {
    let mut config = Vec::new();
    for t in [tenant("acme"), tenant("globex")] {
        for ch in ["push", "sms", "in_app"] {
            config.push(template(&t, &format!("{ch}-tpl"), ch));
        }
        config.push(workflow(&t, JOB));
        config.push(workflow(&t, INBOX));
        env.app(&t, "field").await;
        env.app(&t, "shop").await;
    }
    env.configure(config).await;
    let upserts = vec![env.upsert(&tenant("acme")), env.upsert(&tenant("globex"))];
    env.on_streams(upserts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_fans_out_to_the_apps_active_unexpired_devices_of_its_tenant_only() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    // acme's subscriber: two phones with the field app, the shop app, a
    // revoked phone and one that will go unseen; globex's (same ids): one.
    let events = vec![
        env.register(&acme, "d1", "field", "ios", 1),
        env.register(&acme, "d2", "field", "android", 2),
        env.register(&acme, "d3", "shop", "ios", 3),
        env.register(&acme, "d4", "field", "ios", 4),
        env.register(&acme, "d5", "field", "android", 5),
        env.register(&globex, "g1", "field", "ios", 1),
    ];
    env.on_streams(events).await;
    env.clock.advance(Duration::from_secs(1));
    let revoke = env.revoke(&acme, "d4");
    env.on_streams(vec![revoke]).await;

    let (a1, g1) = (env.trigger(&acme, "job"), env.trigger(&globex, "job"));
    env.on_streams(vec![a1.clone(), g1.clone()]).await;
    assert_eq!(env.pushed_to(&a1).await, [["d1", "d2", "d5"]]);
    assert_eq!(env.pushed_to(&g1).await, [["g1"]]);
    let d = env.dispatches(&a1).await.remove(0);
    assert_eq!((d.provider.as_str(), d.to.as_str()), ("push", SUB));
    assert_eq!(
        (d.subject.as_str(), d.body.as_str()),
        ("Nouveau travail", "Travail J-42")
    );
    assert_eq!(d.link, "field://jobs/J-42");
    assert_eq!(d.data_json, r#"{"job":"J-42","kind":"repair"}"#);
    let p = d.push.clone().expect("push options");
    assert_eq!(
        (p.app_id.as_str(), p.apns_topic.as_str(), p.ttl_seconds),
        ("field", "com.acme.field", 3600)
    );
    assert_eq!(p.body_loc_args, ["J-42"]);
    let t1 = &d.push_targets[0];
    assert_eq!(
        (t1.platform.as_str(), t1.provider.as_str()),
        ("ios", "apns")
    );
    assert_eq!(t1.token, Some(sealed(1)));
    assert_eq!(t1.token_registered_at_ms, T0);
    assert_eq!(d.push_targets[1].provider, "fcm");
    assert_eq!(
        env.failures_and_end(&a1).await,
        (vec![], "completed".into())
    );

    // The registry's rows: per tenant, tokens sealed, the revocation's actor.
    let d4 = env.device("acme", "d4").await;
    assert_eq!(
        (
            d4.status.as_str(),
            d4.revoked_reason.as_str(),
            d4.revoked_detail.as_str()
        ),
        ("revoked", "user", "subscriber:sub-1")
    );
    assert_eq!(
        env.token_owner("acme", 4).await,
        None,
        "a revoked token's lookup goes"
    );
    let owner = env.token_owner("globex", 1).await.expect("globex's token");
    assert_eq!(
        (owner.subscriber_id.as_str(), owner.device_id.as_str()),
        (SUB, "g1")
    );
    assert_eq!(env.token_owner("globex", 2).await, None);

    // 200 days on, every device but d5 reports in; 270 days after its
    // registration d5 still gets pushes, a millisecond later it has expired.
    // The routers restart in between: the devices come from the store.
    env.clock.advance(200 * DAY);
    let seen = vec![
        env.seen(&acme, "d1"),
        env.seen(&acme, "d2"),
        env.seen(&globex, "g1"),
    ];
    env.on_streams(seen).await;
    env.restart_routers().await;
    env.clock.advance(70 * DAY - Duration::from_secs(1));
    let a2 = env.trigger(&acme, "job");
    env.on_streams(vec![a2.clone()]).await;
    assert_eq!(
        env.pushed_to(&a2).await,
        [["d1", "d2", "d5"]],
        "270 days exactly: still in"
    );
    env.clock.advance(Duration::from_millis(1));
    let (a3, g3) = (env.trigger(&acme, "job"), env.trigger(&globex, "job"));
    env.on_streams(vec![a3.clone(), g3.clone()]).await;
    assert_eq!(env.pushed_to(&a3).await, [["d1", "d2"]], "d5 expired");
    assert_eq!(env.pushed_to(&g3).await, [["g1"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_revokes_its_device_and_the_next_push_skips_it_but_not_an_old_tokens_rejection(
) {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let events = vec![
        env.register(&acme, "d1", "field", "ios", 1),
        env.register(&acme, "d2", "field", "android", 2),
        env.register(&globex, "d1", "field", "ios", 1),
    ];
    env.on_streams(events).await;
    env.clock.advance(Duration::from_secs(60));

    // APNs says d1's token was unregistered after its registration; d2 got
    // a new token, and the old one's rejection comes late.
    let rotate = env.rotate(&acme, "d2", 22);
    let reject_d1 = env.rejected(&acme, "d1", 1, "Unregistered", T0 + 1_000);
    let reject_old = env.rejected(&acme, "d2", 2, "BadDeviceToken", 0);
    env.on_streams(vec![rotate, reject_d1.clone(), reject_old])
        .await;
    let d1 = env.device("acme", "d1").await;
    assert_eq!(
        (
            d1.status.as_str(),
            d1.revoked_reason.as_str(),
            d1.revoked_detail.as_str()
        ),
        (
            "revoked",
            "unregistered",
            "apns: Unregistered (410 from APNs)"
        )
    );
    assert_eq!(env.device("acme", "d2").await.status, "active");
    assert_eq!(env.device("globex", "d1").await.status, "active");
    assert_eq!(env.token_owner("acme", 2).await, None, "rotated away");
    assert_eq!(
        env.token_owner("acme", 22).await.map(|r| r.device_id),
        Some("d2".to_string())
    );

    // A 410 whose timestamp precedes the token's registration revokes nothing.
    let early = env.rejected(&globex, "d1", 1, "Unregistered", T0 - 1);
    env.on_streams(vec![early]).await;
    assert_eq!(env.device("globex", "d1").await.status, "active");

    let (a1, g1) = (env.trigger(&acme, "job"), env.trigger(&globex, "job"));
    env.on_streams(vec![a1.clone(), g1.clone()]).await;
    assert_eq!(env.pushed_to(&a1).await, [["d2"]]);
    let d = env.dispatches(&a1).await.remove(0);
    assert_eq!(d.push_targets[0].token, Some(sealed(22)), "the new token");
    assert_eq!(env.pushed_to(&g1).await, [["d1"]]);

    // The same rejection appended again changes nothing.
    let before = env.device("acme", "d1").await;
    env.on_streams(vec![reject_d1]).await;
    assert_eq!(env.device("acme", "d1").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_active_device_of_the_app_the_fallback_sends_the_sms() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    // acme's subscriber has only the shop app; globex's has the field app.
    let events = vec![
        env.register(&acme, "d1", "shop", "ios", 1),
        env.register(&globex, "d1", "field", "ios", 1),
    ];
    env.on_streams(events).await;
    let (a1, g1) = (env.trigger(&acme, "job"), env.trigger(&globex, "job"));
    env.on_streams(vec![a1.clone(), g1.clone()]).await;

    let channels = |ds: Vec<pb::DispatchRequested>| -> Vec<String> {
        ds.into_iter().map(|d| d.channel).collect()
    };
    assert_eq!(channels(env.dispatches(&a1).await), ["sms"]);
    let (failures, end) = env.failures_and_end(&a1).await;
    assert_eq!(
        failures,
        [(
            "route".to_string(),
            "no active push device of app field".to_string()
        )]
    );
    assert_eq!(end, "completed");
    assert_eq!(channels(env.dispatches(&g1).await), ["push"]);

    // Unknown app at send time: the failure names it, and SMS goes.
    env.store
        .write({
            let mut w = WriteBatch::new();
            w.delete(RowKey::new(
                Table::Apps,
                "globex",
                "apps",
                b"field".to_vec(),
            ));
            w
        })
        .await
        .unwrap();
    env.restart_routers().await;
    let g2 = env.trigger(&globex, "job");
    env.on_streams(vec![g2.clone()]).await;
    assert_eq!(channels(env.dispatches(&g2).await), ["sms"]);
    let (failures, _) = env.failures_and_end(&g2).await;
    assert_eq!(failures[0].1, "unknown app \"field\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_app_send_carries_its_link_category_and_data_to_the_inbox() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (a1, g1) = (env.trigger(&acme, "inbox"), env.trigger(&globex, "inbox"));
    env.on_streams(vec![a1.clone(), g1.clone()]).await;
    for (t, trigger) in [("acme", &a1), ("globex", &g1)] {
        let ds = env.dispatches(trigger).await;
        assert_eq!(ds.len(), 1, "{t}");
        let d = &ds[0];
        assert_eq!(
            (d.channel.as_str(), d.provider.as_str(), d.to.as_str()),
            ("in_app", "inbox", SUB)
        );
        assert_eq!(
            (d.link.as_str(), d.category.as_str()),
            ("field://jobs/J-42", "jobs")
        );
        assert_eq!(d.data_json, r#"{"job":"J-42","kind":"repair"}"#);
        assert_eq!(
            (d.workflow_id.as_str(), d.subject.as_str()),
            ("inbox", "Nouveau travail")
        );
        assert!(d.push.is_none() && d.push_targets.is_empty());
    }
    // Without devices anywhere, nothing was written to the registry.
    let rows = env
        .store
        .scan(&Scan::partition(Table::Devices, "acme", SUB, 10))
        .await
        .unwrap();
    assert!(rows.is_empty());
}
