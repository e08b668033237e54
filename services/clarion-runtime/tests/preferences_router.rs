//! Preferences in the router and topics in the projector, over the real
//! embedded parts: the log and the store in one SQLite file (the default),
//! projector and router runners stepped by hand on a manual clock. The
//! sink's outcomes (`Sent`, `Delivered`) are appended to `deliveries` as the
//! dispatcher's sink appends them (the dispatcher crate sits above this one).
//!
//! Every scenario has two tenants, `acme` and `globex`, each with a
//! subscriber of the same id: what one tenant's subscriber chose never
//! touches the other's.

mod support;

use clarion_domain::flow::Flow;
use clarion_domain::ids::recipient_key;
use clarion_domain::preferences::topic::{ChannelName, Topic as PrefTopic};
use clarion_domain::preferences::verification::CODE_TTL_MS;
use clarion_domain::preferences::Preferences;
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Channel, Event, Id, Payload, TenantId};

use clarion_proto::events as pb;
use clarion_runtime::projector::topic_key;
use clarion_runtime::router::{preferences_key, VERIFY_STEP};
use clarion_runtime::Topic;
use clarion_store::{RowKey, Scan, Table};
use prost::Message;
use support::{config_event, Env, PARTITIONS, T0};

const SUB: &str = "sub-1";
const EMAIL: &str = "sub1@example.test";
const PHONE: &str = "+15550000001";

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

impl Env {
    /// Appends events to the subscribers' streams, then runs the routers and
    /// the sink's outcomes until nothing more happens.
    async fn on_streams(&mut self, events: Vec<Event>) {
        self.append(Topic::Triggers, &events).await;
        self.settle().await;
    }

    async fn settle(&mut self) {
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

    /// The sink's `Sent` and `Delivered` for every dispatch not answered
    /// yet; returns how many it answered.
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
            out.push(e.caused(
                0,
                T0,
                actor.clone(),
                Payload::Sent(pb::NotificationSent {
                    notification_id: d.notification_id.clone(),
                    attempt_id: d.attempt_id.clone(),
                    provider: "sink".into(),
                    provider_message_id: d.attempt_id.clone(),
                    context: None,
                }),
            ));
            out.push(e.caused(
                1,
                T0,
                actor,
                Payload::Delivered(pb::NotificationDelivered {
                    notification_id: d.notification_id.clone(),
                    attempt_id: d.attempt_id.clone(),
                    provider: "sink".into(),
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

    fn next(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// An event on a subscriber's stream, at the clock's time.
    fn stream_event(&mut self, t: &TenantId, subscriber: &str, payload: Payload) -> Event {
        let n = self.next();
        Event {
            id: Id::derive(&[b"stream", t.as_str().as_bytes(), &n.to_le_bytes()]),
            tenant: t.clone(),
            partition_key: recipient_key(t, subscriber),
            occurred_at_ms: clarion_runtime::Clock::now_ms(&self.clock),
            causation_id: None,
            correlation_id: None,
            actor: Actor::ApiKey("k1".into()),
            payload,
        }
    }

    fn trigger(&mut self, t: &TenantId, workflow: &str) -> Event {
        let n = self.next();
        let cmd = TriggerCommand {
            workflow_id: workflow.into(),
            recipients: vec![Recipient {
                subscriber_id: SUB.into(),
                contact: None,
            }],
            payload_json: r#"{"what":"news"}"#.into(),
            idempotency_key: format!("key-{n}"),
            ..Default::default()
        };
        let now = clarion_runtime::Clock::now_ms(&self.clock);
        let mut events = cmd.accept(t, 1, [n as u8; 16], now, &Actor::ApiKey("k1".into()));
        events.remove(0)
    }

    fn upsert(&mut self, t: &TenantId, email: &str, phone: &str) -> Event {
        let s = Subscriber {
            subscriber_id: SUB.into(),
            email: email.into(),
            phone: phone.into(),
            ..Default::default()
        };
        self.stream_event(t, SUB, Payload::SubscriberUpserted(s.to_event()))
    }

    fn change(&mut self, t: &TenantId, settings: &[(&str, pb::Setting)]) -> Event {
        let changes = settings
            .iter()
            .map(|(path, new)| pb::PreferenceChange {
                path: path.to_string(),
                old: pb::Setting::Inherit as i32,
                new: *new as i32,
            })
            .collect();
        self.stream_event(
            t,
            SUB,
            Payload::PreferencesChanged(pb::PreferencesChanged {
                subscriber_id: SUB.into(),
                changes,
                origin: None,
            }),
        )
    }

    /// The outcome and reason of the run of each trigger, in order.
    async fn ends(&self, triggers: &[&Event]) -> Vec<(String, String)> {
        let events = self.events(Topic::Notifications).await;
        triggers
            .iter()
            .map(|t| {
                let Payload::Triggered(tr) = &t.payload else {
                    panic!("not a trigger")
                };
                events
                    .iter()
                    .find_map(|e| match &e.payload {
                        Payload::Ended(r) if r.notification_id == tr.notification_id => {
                            Some((r.outcome.clone(), r.reason.clone()))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("no end for {}: {events:?}", tr.notification_id))
            })
            .collect()
    }

    /// The dispatches of a trigger's notification, as (channel, to).
    async fn sends(&self, trigger: &Event) -> Vec<(String, String)> {
        let Payload::Triggered(tr) = &trigger.payload else {
            panic!("not a trigger")
        };
        self.events(Topic::Dispatch)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Payload::DispatchRequested(d) if d.notification_id == tr.notification_id => {
                    Some((d.channel, d.to))
                }
                _ => None,
            })
            .collect()
    }

    async fn notes(&self, trigger: &Event) -> Vec<String> {
        let Payload::Triggered(tr) = &trigger.payload else {
            panic!("not a trigger")
        };
        self.events(Topic::Notifications)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Payload::Noted(n) if n.notification_id == tr.notification_id => Some(n.message),
                _ => None,
            })
            .collect()
    }

    async fn preferences(&self, t: &str) -> Option<Preferences> {
        self.store
            .get(&preferences_key(t, SUB))
            .await
            .unwrap()
            .map(|b| Preferences::decode(&b).expect("preferences decode"))
    }

    async fn history(&self, t: &str) -> Vec<(Vec<u8>, Event)> {
        self.store
            .scan(&Scan::partition(Table::PreferenceHistory, t, SUB, 1_000))
            .await
            .unwrap()
            .into_iter()
            .map(|(ck, v)| (ck, Event::decode(&v).expect("history holds envelopes")))
            .collect()
    }
}

fn template(t: &TenantId, id: &str, channel: &str) -> Event {
    let tpl = Template::new(
        id,
        1,
        channel,
        &[pb::TemplateVariant {
            locale: "default".into(),
            subject: "News".into(),
            body: "About {{ payload.what }}".into(),
        }],
    )
    .expect("valid template");
    config_event(t, id, Payload::TemplatePublished(tpl.to_event()))
}

/// A workflow from YAML (templates `<channel>-tpl` send on their channel).
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

fn topic(t: &TenantId, id: &str, version: u32, shape: impl FnOnce(&mut PrefTopic)) -> Event {
    let mut topic = PrefTopic {
        id: id.into(),
        name: id.into(),
        default_opt_in: true,
        version,
        ..PrefTopic::default()
    };
    shape(&mut topic);
    let tag = format!("topic {id} v{version}");
    config_event(
        t,
        &tag,
        Payload::TopicRegistered(topic.to_event(None, pb::Origin::default())),
    )
}

/// Both tenants: the templates, the topics and workflows given, and the
/// subscriber with an email and a phone.
/// A topic to register: its id and how it differs from a plain one.
type TopicSpec<'a> = (&'a str, fn(&mut PrefTopic));

async fn given(env: &mut Env, topics: &[TopicSpec<'_>], workflows: &[&str]) {
    let mut config = Vec::new();
    for t in [tenant("acme"), tenant("globex")] {
        for ch in ["email", "sms"] {
            config.push(template(&t, &format!("{ch}-tpl"), ch));
        }
        for (id, shape) in topics {
            config.push(topic(&t, id, 1, shape));
        }
        for w in workflows {
            config.push(workflow(&t, w));
        }
    }
    env.configure(config).await;
    let upserts = vec![
        env.upsert(&tenant("acme"), EMAIL, PHONE),
        env.upsert(&tenant("globex"), EMAIL, PHONE),
    ];
    env.on_streams(upserts).await;
}

const NEWS: &str = r#"
id: news
topic: news
steps:
  - { id: email, type: send, channel: email, template: email-tpl }
  - { id: sms, type: send, channel: sms, template: sms-tpl }
"#;

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_topics_and_channels_suppress_sends_and_email_still_goes_when_only_sms_is_off() {
    let mut env = Env::new().await;
    given(&mut env, &[("news", |_| {})], &[NEWS]).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));

    // Given acme's subscriber turned SMS off (globex's, of the same id, did not).
    let sms_off = env.change(&acme, &[("channels.sms", pb::Setting::Off)]);
    env.on_streams(vec![sms_off.clone()]).await;
    // When both are sent the news.
    let (a1, g1) = (env.trigger(&acme, "news"), env.trigger(&globex, "news"));
    env.on_streams(vec![a1.clone(), g1.clone()]).await;
    // Then acme's gets the email only, and the run says why the SMS did not go.
    assert_eq!(env.sends(&a1).await, [pair("email", EMAIL)]);
    let reason = "preferences (global_channel): subscriber turned sms off (setting channels.sms)";
    assert_eq!(
        env.notes(&a1).await,
        [format!("step sms: suppressed: {reason}")]
    );
    assert_eq!(
        env.sends(&g1).await,
        [pair("email", EMAIL), pair("sms", PHONE)]
    );
    assert_eq!(
        env.ends(&[&a1, &g1]).await,
        [
            pair("completed", "all steps done"),
            pair("completed", "all steps done")
        ]
    );

    // When acme's subscriber opts out of the topic, and the routers restart
    // (cold memory: the preferences come from the store).
    env.clock.advance(std::time::Duration::from_secs(1));
    let topic_off = env.change(&acme, &[("topics.news", pb::Setting::Off)]);
    env.on_streams(vec![topic_off.clone()]).await;
    env.restart_routers().await;
    let (a2, g2) = (env.trigger(&acme, "news"), env.trigger(&globex, "news"));
    env.on_streams(vec![a2.clone(), g2.clone()]).await;
    // Then nothing goes to acme's, and the run ends suppressed with the
    // first reason; globex's gets both.
    assert!(env.sends(&a2).await.is_empty());
    assert_eq!(
        env.ends(&[&a2, &g2]).await,
        [
            pair(
                "suppressed",
                "preferences (topic_opt): subscriber opted out of topic news (setting topics.news)"
            ),
            pair("completed", "all steps done")
        ]
    );
    assert_eq!(env.sends(&g2).await.len(), 2);

    // The stored settings and their history, in the order they changed;
    // globex's subscriber has neither.
    let stored = env.preferences("acme").await.expect("acme's row");
    assert_eq!(stored.channels.get("sms"), Some(&false));
    assert_eq!(stored.topics["news"].enabled, Some(false));
    let history = env.history("acme").await;
    let ids: Vec<Id> = history.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids, [sms_off.id, topic_off.id]);
    assert!(history[0].0 < history[1].0, "keys in time order");
    assert_eq!(
        &history[1].0[..8],
        &(topic_off.occurred_at_ms as u64).to_be_bytes()
    );
    assert_eq!(&history[1].0[8..], &topic_off.id.0);
    assert_eq!(history[1].1, topic_off, "the event as logged");
    assert!(env.preferences("globex").await.is_none());
    assert!(env.history("globex").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_workflow_bypasses_a_topic_opt_out_but_never_the_marketing_block() {
    let mut env = Env::new().await;
    let critical = |id: &str, topic: &str| {
        format!(
            "id: {id}\ntopic: {topic}\ncritical: true\nsteps:\n  - {{ id: email, type: send, channel: email, template: email-tpl }}\n"
        )
    };
    let (alerts, promo) = (critical("alerts", "alerts"), critical("promo", "promo"));
    given(
        &mut env,
        &[("alerts", |_| {}), ("promo", |t| t.marketing = true)],
        &[&alerts, &promo, NEWS],
    )
    .await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let change = env.change(
        &acme,
        &[
            ("topics.alerts", pb::Setting::Off),
            ("marketing", pb::Setting::Off),
        ],
    );
    env.on_streams(vec![change]).await;

    let a_alert = env.trigger(&acme, "alerts");
    let a_promo = env.trigger(&acme, "promo");
    let g_promo = env.trigger(&globex, "promo");
    env.on_streams(vec![a_alert.clone(), a_promo.clone(), g_promo.clone()])
        .await;

    assert_eq!(env.sends(&a_alert).await, [pair("email", EMAIL)]);
    assert!(env.sends(&a_promo).await.is_empty());
    assert_eq!(env.sends(&g_promo).await, [pair("email", EMAIL)]);
    let ends = env.ends(&[&a_alert, &a_promo]).await;
    assert_eq!(ends[0].0, "completed");
    assert_eq!(
        ends[1],
        pair(
            "suppressed",
            "preferences (legal_block): subscriber unsubscribed from marketing (setting marketing); topic promo is marketing"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_topic_ignores_opt_outs_but_keeps_its_channel_choices() {
    let mut env = Env::new().await;
    let appt = NEWS
        .replace("id: news", "id: appt")
        .replace("topic: news", "topic: appointments");
    given(
        &mut env,
        &[("appointments", |t| {
            t.required = true;
            t.channels = [ChannelName(Channel::Email), ChannelName(Channel::Sms)].into();
        })],
        &[&appt],
    )
    .await;
    let acme = tenant("acme");
    // An opt-out recorded before the topic became required, a global email
    // switch, and SMS turned off for the topic.
    let change = env.change(
        &acme,
        &[
            ("topics.appointments", pb::Setting::Off),
            ("channels.email", pb::Setting::Off),
            ("topics.appointments.sms", pb::Setting::Off),
        ],
    );
    env.on_streams(vec![change]).await;
    let a = env.trigger(&acme, "appt");
    let g = env.trigger(&tenant("globex"), "appt");
    env.on_streams(vec![a.clone(), g.clone()]).await;

    assert_eq!(env.sends(&a).await, [pair("email", EMAIL)]);
    assert_eq!(
        env.notes(&a).await,
        ["step sms: suppressed: preferences (required_topic): topic appointments is required; subscriber chose sms off for it (setting topics.appointments.sms)"]
    );
    assert_eq!(env.sends(&g).await.len(), 2);
}

const SMS_ONLY: &str = r#"
id: ping
steps:
  - { id: sms, type: send, channel: sms, template: sms-tpl }
"#;

fn contact_changed(new_value: &str, code: &str, expires_at_ms: i64) -> Payload {
    Payload::ContactChanged(pb::ContactChanged {
        subscriber_id: SUB.into(),
        channel: "sms".into(),
        old_value: PHONE.into(),
        new_value: new_value.into(),
        code: code.into(),
        expires_at_ms,
        origin: None,
        locale: "fr-CA".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_contact_gets_its_code_and_nothing_else_until_verified() {
    let mut env = Env::new().await;
    given(&mut env, &[], &[SMS_ONLY]).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    const NEW: &str = "+15550000002";

    // When acme's subscriber changes their phone (the request appended twice).
    let changed = env.stream_event(&acme, SUB, contact_changed(NEW, "042042", T0 + CODE_TTL_MS));
    env.on_streams(vec![changed.clone(), changed.clone()]).await;

    // Then the code goes to the new number, once, past every rule, with no run.
    let verify: Vec<(Event, pb::DispatchRequested)> = env
        .events(Topic::Dispatch)
        .await
        .into_iter()
        .filter_map(|e| match &e.payload {
            Payload::DispatchRequested(d) if d.step == VERIFY_STEP => Some((e.clone(), d.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(verify.len(), 1, "{verify:?}");
    let (ev, d) = &verify[0];
    assert_eq!((d.channel.as_str(), d.to.as_str()), ("sms", NEW));
    assert_eq!(d.provider, "sink");
    assert!(
        d.body.contains("042042") && d.body.starts_with("Votre code"),
        "{d:?}"
    );
    assert_eq!(ev.causation_id, Some(changed.id));
    assert_eq!(ev.partition_key, recipient_key(&acme, SUB));
    // Its outcomes (answered by settle) found no run and changed nothing.
    assert!(env
        .events(Topic::Notifications)
        .await
        .iter()
        .all(|e| e.payload.notification_id() != Some(d.notification_id.as_str())));
    // The profile holds the new number, unverified.
    let profile = env
        .store
        .get(&RowKey::new(Table::Subscribers, "acme", SUB, Vec::new()))
        .await
        .unwrap()
        .and_then(|b| clarion_domain::event::decode_subscriber(&b))
        .expect("profile");
    assert_eq!(profile.phone, NEW);
    let pending = &env.preferences("acme").await.unwrap().contacts["sms"];
    assert!(!pending.verified && pending.value == NEW);

    // When a message is sent to both tenants' subscribers.
    let (a1, g1) = (env.trigger(&acme, "ping"), env.trigger(&globex, "ping"));
    env.on_streams(vec![a1.clone(), g1.clone()]).await;
    // Then the unverified number gets nothing; globex's subscriber is untouched.
    assert!(env.sends(&a1).await.is_empty());
    assert_eq!(
        env.ends(&[&a1]).await[0],
        pair(
            "suppressed",
            &format!("preferences (contact_unverified): sms contact {NEW} is not verified yet")
        )
    );
    assert_eq!(env.sends(&g1).await, [pair("sms", PHONE)]);

    // When a wrong code is given once, then the right one (later: history
    // rows of one millisecond are in event id order).
    env.clock.advance(std::time::Duration::from_secs(1));
    let failed = env.stream_event(
        &acme,
        SUB,
        Payload::ContactVerificationFailed(pb::ContactVerificationFailed {
            subscriber_id: SUB.into(),
            channel: "sms".into(),
            origin: None,
        }),
    );
    env.on_streams(vec![failed.clone()]).await;
    assert_eq!(
        env.preferences("acme").await.unwrap().contacts["sms"].attempts,
        1
    );
    env.clock.advance(std::time::Duration::from_secs(1));
    let verified = env.stream_event(
        &acme,
        SUB,
        Payload::ContactVerified(pb::ContactVerified {
            subscriber_id: SUB.into(),
            channel: "sms".into(),
            value: NEW.into(),
            origin: None,
        }),
    );
    env.on_streams(vec![verified.clone()]).await;
    // Then messages go to the new number.
    let a2 = env.trigger(&acme, "ping");
    env.on_streams(vec![a2.clone()]).await;
    assert_eq!(env.sends(&a2).await, [pair("sms", NEW)]);
    assert!(env.preferences("acme").await.unwrap().contacts["sms"].verified);
    // The history holds each event once, in order.
    let ids: Vec<Id> = env
        .history("acme")
        .await
        .iter()
        .map(|(_, e)| e.id)
        .collect();
    assert_eq!(ids, [changed.id, failed.id, verified.id]);
    assert!(env.history("globex").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_upsert_with_another_number_ends_a_pending_verification() {
    let mut env = Env::new().await;
    given(&mut env, &[], &[SMS_ONLY]).await;
    let acme = tenant("acme");
    let changed = env.stream_event(
        &acme,
        SUB,
        contact_changed("+15550000002", "1", T0 + CODE_TTL_MS),
    );
    // An upsert echoing the pending number keeps it pending...
    let echo = env.upsert(&acme, EMAIL, "+15550000002");
    env.on_streams(vec![changed, echo]).await;
    assert!(!env.preferences("acme").await.unwrap().contacts.is_empty());
    // ...one with another number ends it: the tenant vouches for its contacts.
    const BACK_END: &str = "+15550000009";
    let upsert = env.upsert(&acme, EMAIL, BACK_END);
    let t = env.trigger(&acme, "ping");
    env.on_streams(vec![upsert, t.clone()]).await;
    assert!(env.preferences("acme").await.unwrap().contacts.is_empty());
    assert_eq!(env.sends(&t).await, [pair("sms", BACK_END)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_is_not_sent() {
    let mut env = Env::new().await;
    given(&mut env, &[], &[SMS_ONLY]).await;
    let acme = tenant("acme");
    // The router gets to a change only after its code expired (a lagging
    // partition, or a replay of an old log).
    let changed = env.stream_event(&acme, SUB, contact_changed("+15550000002", "1", T0 + 1_000));
    env.clock.advance(std::time::Duration::from_secs(2));
    env.on_streams(vec![changed]).await;
    assert!(dispatch_steps(&env).await.iter().all(|s| s != VERIFY_STEP));
    // The change itself is applied: the number is pending.
    assert!(!env.preferences("acme").await.unwrap().contacts["sms"].verified);
}

async fn dispatch_steps(env: &Env) -> Vec<String> {
    env.events(Topic::Dispatch)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Payload::DispatchRequested(d) => Some(d.step),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_keeps_each_topic_at_its_latest_version() {
    let mut env = Env::new().await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let stored = |env: &Env, t: &'static str| {
        let store = env.store.clone();
        async move {
            store
                .get(&topic_key(t, "news"))
                .await
                .unwrap()
                .map(|b| pb::TopicRegistered::decode(&b[..]).expect("prost-encoded"))
        }
    };
    // v2 then v1 in one batch (out of order), and globex's own v1.
    env.configure(vec![
        topic(&acme, "news", 2, |t| t.description = "second".into()),
        topic(&acme, "news", 1, |t| t.description = "first".into()),
        topic(&globex, "news", 1, |t| t.marketing = true),
    ])
    .await;
    let a = stored(&env, "acme").await.expect("acme's topic");
    assert_eq!((a.version, a.description.as_str()), (2, "second"));
    let g = stored(&env, "globex").await.expect("globex's topic");
    assert_eq!((g.version, g.marketing), (1, true));
    // v1 again in a later batch (a replay) leaves v2; v3 replaces it.
    env.configure(vec![topic(&acme, "news", 1, |_| {})]).await;
    assert_eq!(stored(&env, "acme").await.unwrap().version, 2);
    env.configure(vec![topic(&acme, "news", 3, |t| {
        t.description = "third".into()
    })])
    .await;
    let a = stored(&env, "acme").await.unwrap();
    assert_eq!((a.version, a.description.as_str()), (3, "third"));
    assert_eq!(stored(&env, "globex").await.unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_registered_later_rules_the_sends_after_it() {
    // Given a workflow naming a topic that is not registered (settings
    // count, default opted in)...
    let mut env = Env::new().await;
    given(&mut env, &[], &[NEWS]).await;
    let acme = tenant("acme");
    let a1 = env.trigger(&acme, "news");
    env.on_streams(vec![a1.clone()]).await;
    assert_eq!(env.sends(&a1).await.len(), 2);
    // ...then registered as opted out by default: once the routers read it
    // (within a second; here after a restart) the subscriber who never
    // chose gets nothing.
    env.configure(vec![topic(&acme, "news", 1, |t| t.default_opt_in = false)])
        .await;
    env.restart_routers().await;
    let a2 = env.trigger(&acme, "news");
    env.on_streams(vec![a2.clone()]).await;
    assert_eq!(
        env.ends(&[&a2]).await[0],
        pair(
            "suppressed",
            "preferences (topic_default): topic news is opted out by default"
        )
    );
}
