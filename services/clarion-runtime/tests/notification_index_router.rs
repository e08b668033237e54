//! The console's notification index in the router, over the real embedded
//! parts (the log and the store in one SQLite file, runners stepped by hand
//! on a manual clock): a row per accepted trigger in its tenant's UTC day,
//! whose status follows the run — running, delivered, dead-lettered,
//! retrying, discarded, scheduled, suppressed. The providers' outcomes are
//! appended to `deliveries` by the test, as the dispatcher would.
//!
//! Two tenants, `acme` and `globex`, with subscribers and workflows of the
//! same ids: each tenant's rows are in its own partitions.

mod support;

use clarion_domain::flow::Flow;
use clarion_domain::ids::recipient_key;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::notification_index::{self, day_newest_first, day_of, Entry};
use clarion_runtime::{Clock, Topic};
use support::{config_event, Env, PARTITIONS, T0};

const SUB: &str = "sub-1";

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

/// What the dispatcher answers to a dispatch.
#[derive(Clone, Copy)]
enum Answer {
    Delivered,
    Rejected,
}

impl Env {
    async fn route(&mut self) {
        for p in 0..PARTITIONS {
            let recs = self.records(Topic::Triggers, p).await;
            self.routers[p as usize].step(recs).await.expect("routes");
            let recs = self.records(Topic::Deliveries, p).await;
            self.routers[p as usize]
                .step_topic(Topic::Deliveries, recs)
                .await
                .expect("applies outcomes");
        }
    }

    async fn on_streams(&mut self, events: Vec<Event>) {
        self.append(Topic::Triggers, &events).await;
        self.route().await;
    }

    /// Answers the latest dispatch of `nid`, then routes the outcome.
    async fn answer(&mut self, nid: &str, answer: Answer) {
        let d = self
            .events(Topic::Dispatch)
            .await
            .into_iter()
            .rev()
            .find(
                |e| matches!(&e.payload, Payload::DispatchRequested(d) if d.notification_id == nid),
            )
            .unwrap_or_else(|| panic!("no dispatch of {nid}"));
        let Payload::DispatchRequested(req) = &d.payload else {
            unreachable!()
        };
        let actor = Actor::System("dispatcher".into());
        let (nid, attempt_id) = (req.notification_id.clone(), req.attempt_id.clone());
        let out = match answer {
            Answer::Delivered => vec![
                d.caused(
                    0,
                    T0,
                    actor.clone(),
                    Payload::Sent(pb::NotificationSent {
                        notification_id: nid.clone(),
                        attempt_id: attempt_id.clone(),
                        provider: "sink".into(),
                        provider_message_id: "m-1".into(),
                        context: None,
                    }),
                ),
                d.caused(
                    1,
                    T0,
                    actor,
                    Payload::Delivered(pb::NotificationDelivered {
                        notification_id: nid,
                        attempt_id,
                        provider: "sink".into(),
                        context: None,
                    }),
                ),
            ],
            Answer::Rejected => vec![d.caused(
                0,
                T0,
                actor,
                Payload::Failed(pb::NotificationFailed {
                    notification_id: nid,
                    attempt_id,
                    provider: "sink".into(),
                    reason: "550 no such mailbox".into(),
                    retryable: false,
                    stage: "dispatch".into(),
                    context: None,
                }),
            )],
        };
        self.append(Topic::Deliveries, &out).await;
        self.route().await;
    }

    fn trigger(&mut self, t: &TenantId, version: u32, send_at_ms: i64) -> Event {
        self.seq += 1;
        let n = self.seq;
        let cmd = TriggerCommand {
            workflow_id: "notify".into(),
            recipients: vec![Recipient {
                subscriber_id: SUB.into(),
                contact: Some(pb::RecipientOverride {
                    email: "sub1@example.test".into(),
                    ..Default::default()
                }),
            }],
            payload_json: r#"{"what":"news"}"#.into(),
            idempotency_key: format!("key-{n}"),
            send_at_ms,
            ..Default::default()
        };
        let now = self.clock.now_ms();
        cmd.accept(t, version, [n as u8; 16], now, &Actor::ApiKey("k1".into()))
            .remove(0)
    }

    fn operator(&mut self, t: &TenantId, payload: Payload) -> Event {
        self.seq += 1;
        Event {
            id: Id::derive(&[b"op", &self.seq.to_le_bytes()]),
            tenant: t.clone(),
            partition_key: recipient_key(t, SUB),
            occurred_at_ms: self.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::Operator("admin".into()),
            payload,
        }
    }

    /// The index row of a notification.
    async fn indexed(&self, t: &str, nid: &str) -> Option<Entry> {
        let key = notification_index::row(t, nid).expect("a hex id");
        let value = self.store.get(&key).await.unwrap()?;
        Some(Entry::decode(&value).expect("an entry"))
    }

    async fn status(&self, t: &str, nid: &str) -> String {
        self.indexed(t, nid)
            .await
            .unwrap_or_else(|| panic!("no index row of {nid} in {t}"))
            .status
    }
}

fn nid(e: &Event) -> String {
    match &e.payload {
        Payload::Triggered(t) => t.notification_id.clone(),
        _ => panic!("not a trigger"),
    }
}

async fn given(env: &mut Env) {
    let mut config = Vec::new();
    for t in [tenant("acme"), tenant("globex")] {
        let variant = pb::TemplateVariant {
            locale: "default".into(),
            subject: "News".into(),
            body: "Hello {{ payload.what }}".into(),
        };
        let tpl = Template::new("mail", 1, "email", &[variant]).expect("template");
        config.push(config_event(
            &t,
            "tpl",
            Payload::TemplatePublished(tpl.to_event()),
        ));
        let yaml =
            "id: notify\nsteps:\n  - { id: mail, type: send, channel: email, template: mail }\n";
        let flow = Flow::parse(yaml, 1, |_| Some(clarion_domain::Channel::Email)).expect("flow");
        config.push(config_event(
            &t,
            "wf",
            Payload::WorkflowPublished(clarion_domain::workflow::published(&flow)),
        ));
    }
    env.configure(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_row_of_each_notification_follows_its_run() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));

    let triggers = vec![
        env.trigger(&acme, 1, 0),
        env.trigger(&acme, 1, 0),
        env.trigger(&globex, 1, 0),
        // Waits for its `send_at`; and a version that does not exist.
        env.trigger(&acme, 1, T0 + 3_600_000),
        env.trigger(&acme, 9, 0),
    ];
    let ids: Vec<String> = triggers.iter().map(nid).collect();
    let [ok, dead, theirs, later, unknown] = &ids[..] else {
        unreachable!()
    };
    env.on_streams(triggers).await;

    // Accepted: a row each, in the tenant's UTC day of the id.
    let row = env.indexed("acme", ok).await.expect("a row");
    assert_eq!(
        (row.workflow_id.as_str(), row.subscriber_id.as_str()),
        ("notify", SUB)
    );
    assert_eq!(row.status, "running");
    assert_eq!(row.updated_at_ms, T0);
    assert_eq!(env.status("acme", later).await, "scheduled");
    assert_eq!(env.status("acme", unknown).await, "suppressed");
    assert_eq!(env.status("globex", theirs).await, "running");

    // Sent and delivered; rejected for good (no fallback): dead-lettered.
    env.clock.advance(std::time::Duration::from_secs(5));
    env.answer(ok, Answer::Delivered).await;
    env.answer(dead, Answer::Rejected).await;
    let row = env.indexed("acme", ok).await.unwrap();
    assert_eq!(
        (row.status.as_str(), row.updated_at_ms),
        ("delivered", T0 + 5_000)
    );
    assert_eq!(env.status("acme", dead).await, "dead_lettered");
    assert_eq!(env.status("globex", theirs).await, "running", "not acme's");

    // An operator retries it: retrying; it fails again, and is discarded.
    let retried = env.operator(
        &acme,
        Payload::DlqRetried(pb::DeadLetterRetried {
            notification_id: dead.clone(),
            note: "mailbox fixed".into(),
        }),
    );
    env.on_streams(vec![retried]).await;
    assert_eq!(env.status("acme", dead).await, "retrying");
    env.answer(dead, Answer::Rejected).await;
    assert_eq!(env.status("acme", dead).await, "dead_lettered");
    let discarded = env.operator(
        &acme,
        Payload::DlqDiscarded(pb::DeadLetterDiscarded {
            notification_id: dead.clone(),
            note: String::new(),
        }),
    );
    env.on_streams(vec![discarded]).await;
    assert_eq!(env.status("acme", dead).await, "discarded");

    // Each tenant's day holds its own notifications only, newest first.
    let day = day_of(T0);
    let listed = |rows: Vec<(Vec<u8>, bytes::Bytes)>| -> Vec<String> {
        rows.into_iter()
            .map(|(ck, _)| Id::from_slice(&ck).unwrap().to_hex())
            .collect()
    };
    let acme_rows = env
        .store
        .scan(&day_newest_first("acme", day, 100))
        .await
        .unwrap();
    let mut want: Vec<String> = vec![ok.clone(), dead.clone(), later.clone(), unknown.clone()];
    want.sort();
    want.reverse();
    assert_eq!(listed(acme_rows), want);
    let globex_rows = env
        .store
        .scan(&day_newest_first("globex", day, 100))
        .await
        .unwrap();
    assert_eq!(listed(globex_rows), [theirs.as_str()]);
    assert!(env.indexed("globex", ok).await.is_none());
}
