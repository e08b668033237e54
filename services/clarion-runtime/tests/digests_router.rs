//! Digests in the router, over the real embedded parts (log and store in
//! one SQLite file), runners stepped by hand on a manual clock: runs lead
//! and join digests, the digest closes on its window, at `max_items` or by
//! a flush, once, with every item; cold routers (a restart) go on where the
//! store says. Two tenants, `acme` and `globex`, with a subscriber of the
//! same id: one tenant's digest never holds the other's events.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use clarion_domain::flow::Flow;
use clarion_domain::ids::recipient_key;
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::Topic;
use clarion_store::{Scan, Table};
use support::{config_event, Env, PARTITIONS, T0};

const SUB: &str = "sub-1";
const H: Duration = Duration::from_secs(3600);

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

const DIGEST_1H: &str = r#"
id: updates
trigger: { event: project.updated }
steps:
  - id: collect
    type: digest
    key: payload.project
    window: 1h
    if: payload.priority != "high"
  - { id: email, type: send, channel: email, template: email-tpl }
"#;

const CANCELLABLE: &str = r#"
id: cancellable
trigger: { event: ticket.updated }
cancel_key: ticket
steps:
  - { id: collect, type: digest, key: payload.project, window: 1h }
  - { id: email, type: send, channel: email, template: email-tpl }
"#;

const DIGEST_MAX_3: &str = r#"
id: batched
trigger: { event: project.updated }
steps:
  - { id: collect, type: digest, key: payload.project, window: 1h, max_items: 3 }
  - { id: sms, type: send, channel: sms, template: sms-tpl }
"#;

impl Env {
    async fn settle(&mut self) {
        for _ in 0..20 {
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
            let mut fired = 0;
            for r in &self.routers {
                fired += r.fire_timers().await.expect("fires timers");
            }
            if answered == 0 && fired == 0 {
                return;
            }
        }
        panic!("the pipeline did not settle");
    }

    /// The sink's `Sent` for every dispatch not answered yet.
    async fn answer_dispatches(&self) -> usize {
        let answered: HashSet<String> = self
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
            out.push(e.caused(
                0,
                T0,
                Actor::System("dispatcher".into()),
                Payload::Sent(pb::NotificationSent {
                    notification_id: d.notification_id.clone(),
                    attempt_id: d.attempt_id.clone(),
                    provider: "sink".into(),
                    provider_message_id: d.attempt_id.clone(),
                    context: None,
                }),
            ));
        }
        if !out.is_empty() {
            self.append(Topic::Deliveries, &out).await;
        }
        out.len()
    }

    fn next(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn trigger(&mut self, t: &TenantId, workflow: &str, payload: &str, critical: bool) -> Event {
        let n = self.next();
        let cmd = TriggerCommand {
            workflow_id: workflow.into(),
            recipients: vec![Recipient {
                subscriber_id: SUB.into(),
                contact: None,
            }],
            payload_json: payload.into(),
            idempotency_key: format!("key-{n}"),
            critical,
            ..Default::default()
        };
        let now = clarion_runtime::Clock::now_ms(&self.clock);
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        cmd.accept(t, 1, bytes, now, &Actor::ApiKey("k1".into()))
            .remove(0)
    }

    fn flush(&mut self, t: &TenantId, workflow: &str, key: &str) -> Event {
        let n = self.next();
        Event {
            id: Id::derive(&[b"flush", &n.to_le_bytes()]),
            tenant: t.clone(),
            partition_key: recipient_key(t, SUB),
            occurred_at_ms: clarion_runtime::Clock::now_ms(&self.clock),
            causation_id: None,
            correlation_id: None,
            actor: Actor::ApiKey("k1".into()),
            payload: Payload::DigestFlushRequested(pb::DigestFlushRequested {
                subscriber_id: SUB.into(),
                workflow_id: workflow.into(),
                digest_key: key.into(),
                origin: None,
            }),
        }
    }

    async fn run(&mut self, events: Vec<Event>) {
        self.append(Topic::Triggers, &events).await;
        self.settle().await;
    }

    /// Dispatches of a tenant, as (notification, body).
    async fn dispatched(&self, t: &str) -> Vec<(String, String)> {
        self.events(Topic::Dispatch)
            .await
            .into_iter()
            .filter(|e| e.tenant.as_str() == t)
            .filter_map(|e| match e.payload {
                Payload::DispatchRequested(d) => Some((d.notification_id, d.body)),
                _ => None,
            })
            .collect()
    }

    /// How each notification's run ended (outcome, reason), by id.
    async fn ended(&self, nid: &str) -> Option<(String, String)> {
        self.events(Topic::Notifications)
            .await
            .into_iter()
            .find_map(|e| match e.payload {
                Payload::Ended(r) if r.notification_id == nid => Some((r.outcome, r.reason)),
                _ => None,
            })
    }

    async fn digest_rows(&self, t: &str) -> usize {
        self.store
            .scan(&Scan::partition(Table::Digests, t, SUB, 100_000))
            .await
            .unwrap()
            .len()
    }
}

fn nid(e: &Event) -> String {
    match &e.payload {
        Payload::Triggered(t) => t.notification_id.clone(),
        _ => panic!("not a trigger"),
    }
}

async fn given(env: &mut Env) {
    let channel_of = |tpl: &str| tpl.strip_suffix("-tpl").and_then(|c| c.parse().ok());
    let mut events = Vec::new();
    for t in [tenant("acme"), tenant("globex")] {
        for ch in ["email", "sms"] {
            let body = format!(
                "{t}: {{% if digest %}}{{{{ digest.count }}}} on {{{{ digest.key }}}}:{{% for i in digest.items %}} {{{{ i.n }}}}{{% endfor %}} ({{{{ digest.first_at }}}}..{{{{ digest.last_at }}}}){{% else %}}single {{{{ payload.n }}}}{{% endif %}}",
                t = t.as_str()
            );
            let variant = pb::TemplateVariant {
                locale: "default".into(),
                subject: "Digest".into(),
                body,
            };
            let tpl = Template::new(&format!("{ch}-tpl"), 1, ch, &[variant]).expect("template");
            events.push(config_event(
                &t,
                ch,
                Payload::TemplatePublished(tpl.to_event()),
            ));
        }
        for yaml in [DIGEST_1H, DIGEST_MAX_3, CANCELLABLE] {
            let flow = Flow::parse(yaml, 1, channel_of).expect("workflow");
            let published = clarion_domain::workflow::published(&flow);
            events.push(config_event(
                &t,
                &flow.def.id,
                Payload::WorkflowPublished(published),
            ));
        }
    }
    env.configure(events).await;
    let mut subs = Vec::new();
    for t in [tenant("acme"), tenant("globex")] {
        let s = Subscriber {
            subscriber_id: SUB.into(),
            email: format!("{SUB}@{}.test", t.as_str()),
            phone: "+15550000001".into(),
            ..Default::default()
        };
        let n = env.next();
        subs.push(Event {
            id: Id::derive(&[b"sub", &n.to_le_bytes()]),
            tenant: t.clone(),
            partition_key: recipient_key(&t, SUB),
            occurred_at_ms: T0,
            causation_id: None,
            correlation_id: None,
            actor: Actor::ApiKey("k1".into()),
            payload: Payload::SubscriberUpserted(s.to_event()),
        });
    }
    env.run(subs).await;
}

fn update(project: &str, n: u32) -> String {
    format!(r#"{{"project":"{project}","n":{n},"priority":"low"}}"#)
}

#[tokio::test]
async fn a_window_digest_sends_once_with_every_item_per_tenant_and_key() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut triggers = Vec::new();
    for n in 0..5 {
        let t = env.trigger(&acme, "updates", &update("p1", n), false);
        env.run(vec![t.clone()]).await;
        triggers.push(t);
        env.clock.advance(Duration::from_secs(60));
    }
    let others = vec![
        env.trigger(&acme, "updates", &update("p2", 100), false),
        env.trigger(&globex, "updates", &update("p1", 7), false),
    ];
    env.run(others).await;
    assert!(env.dispatched("acme").await.is_empty(), "collecting");
    let leader = nid(&triggers[0]);
    for t in &triggers[1..5] {
        assert_eq!(
            env.ended(&nid(t)).await,
            Some(("completed".into(), format!("digested into {leader}")))
        );
    }
    // A repeated trigger (the same notification) is not a second item.
    env.run(vec![triggers[2].clone()]).await;
    // When the window ends, each digest sends once.
    env.clock.advance(H);
    env.settle().await;
    let acme_sent = env.dispatched("acme").await;
    assert_eq!(acme_sent.len(), 2, "{acme_sent:?}");
    let (_, body) = acme_sent.iter().find(|(n, _)| *n == leader).unwrap();
    assert!(
        body.starts_with(
            "acme: 5 on p1: 0 1 2 3 4 (2023-11-14T22:13:20.000Z..2023-11-14T22:17:20.000Z)"
        ),
        "{body}"
    );
    assert!(acme_sent
        .iter()
        .any(|(_, b)| b.starts_with("acme: 1 on p2: 100")));
    let globex_sent = env.dispatched("globex").await;
    assert_eq!(globex_sent.len(), 1);
    assert!(
        globex_sent[0].1.starts_with("globex: 1 on p1: 7"),
        "{globex_sent:?}"
    );
    assert_eq!(
        env.digest_rows("acme").await,
        0,
        "closed digests leave no rows"
    );
    // Later timers and a flush find nothing more to send.
    env.clock.advance(H);
    let flush = env.flush(&acme, "updates", "");
    env.run(vec![flush]).await;
    assert_eq!(env.dispatched("acme").await.len(), 2);
}

#[tokio::test]
async fn max_items_closes_at_once_and_a_flush_sends_the_rest() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let acme = tenant("acme");
    let triggers: Vec<Event> = (0..7)
        .map(|n| env.trigger(&acme, "batched", &update("p1", n), false))
        .collect();
    env.run(triggers.clone()).await;
    let sent = env.dispatched("acme").await;
    assert_eq!(sent.len(), 2, "two full digests: {sent:?}");
    assert!(sent[0].1.starts_with("acme: 3 on p1: 0 1 2"), "{sent:?}");
    assert!(sent[1].1.starts_with("acme: 3 on p1: 3 4 5"), "{sent:?}");
    assert_eq!(
        env.digest_rows("acme").await,
        2,
        "the 7th: a header and an item"
    );
    // A flush of another key or workflow changes nothing; of this one, sends.
    let other = env.flush(&acme, "batched", "p9");
    env.run(vec![other]).await;
    assert_eq!(env.dispatched("acme").await.len(), 2);
    let flush = env.flush(&acme, "batched", "p1");
    env.run(vec![flush]).await;
    let sent = env.dispatched("acme").await;
    assert_eq!(sent.len(), 3);
    assert!(sent[2].1.starts_with("acme: 1 on p1: 6"), "{sent:?}");
    // The stale timers of all three fire and do nothing.
    env.clock.advance(2 * H);
    env.settle().await;
    assert_eq!(env.dispatched("acme").await.len(), 3);
    assert!(env.dispatched("globex").await.is_empty());
}

#[tokio::test]
async fn cold_routers_go_on_with_the_digest_the_store_holds() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let acme = tenant("acme");
    let first: Vec<Event> = (0..2)
        .map(|n| env.trigger(&acme, "updates", &update("p1", n), false))
        .collect();
    env.run(first).await;
    env.restart_routers().await;
    let more: Vec<Event> = (2..4)
        .map(|n| env.trigger(&acme, "updates", &update("p1", n), false))
        .collect();
    env.run(more).await;
    env.restart_routers().await;
    env.clock.advance(H);
    env.settle().await;
    let sent = env.dispatched("acme").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].1.starts_with("acme: 4 on p1: 0 1 2 3"), "{sent:?}");
}

#[tokio::test]
async fn critical_and_high_priority_events_skip_the_digest() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let acme = tenant("acme");
    let high = r#"{"project":"p1","n":1,"priority":"high"}"#;
    let critical = env.trigger(&acme, "updates", &update("p1", 2), true);
    let urgent = env.trigger(&acme, "updates", high, false);
    let nokey = env.trigger(&acme, "updates", r#"{"n":3,"priority":"low"}"#, false);
    env.run(vec![critical.clone(), urgent.clone(), nokey.clone()])
        .await;
    let sent = env.dispatched("acme").await;
    let expected = [
        (nid(&critical), "acme: single 2"),
        (nid(&urgent), "acme: single 1"),
        (nid(&nokey), "acme: single 3"),
    ];
    assert_eq!(sent.len(), 3, "{sent:?}");
    for ((n, body), (id, text)) in sent.iter().zip(expected) {
        assert_eq!((n.as_str(), body.as_str()), (id.as_str(), text));
    }
    let notes: Vec<String> = env
        .events(Topic::Notifications)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Payload::Noted(n) => Some(n.message),
            _ => None,
        })
        .collect();
    assert!(
        notes.contains(&"step collect: critical: digest bypassed".to_string()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"step collect: no value at payload.project; not digested".to_string()),
        "{notes:?}"
    );
    assert_eq!(env.digest_rows("acme").await, 0);
}

#[tokio::test]
async fn a_run_after_the_leader_was_cancelled_takes_the_digest_over_with_its_items() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let acme = tenant("acme");
    let ticket = |n: u32| format!(r#"{{"project":"p1","n":{n},"ticket":"t{n}"}}"#);
    let first = vec![
        env.trigger(&acme, "cancellable", &ticket(0), false),
        env.trigger(&acme, "cancellable", &ticket(1), false),
    ];
    env.run(first.clone()).await;
    let n = env.next();
    let cancel = Event {
        id: Id::derive(&[b"cancel", &n.to_le_bytes()]),
        tenant: acme.clone(),
        partition_key: recipient_key(&acme, SUB),
        occurred_at_ms: T0,
        causation_id: None,
        correlation_id: None,
        actor: Actor::ApiKey("k1".into()),
        payload: Payload::CancelRequested(pb::CancelRequested {
            cancel_key: "t0".into(),
            reason: String::new(),
        }),
    };
    env.run(vec![cancel]).await;
    assert_eq!(env.ended(&nid(&first[0])).await.unwrap().0, "cancelled");
    // A flush finds no live leader: nothing is sent, nothing is lost.
    let flush = env.flush(&acme, "cancellable", "p1");
    env.run(vec![flush]).await;
    assert!(env.dispatched("acme").await.is_empty());
    assert_eq!(env.digest_rows("acme").await, 3, "a header and two items");
    let taker = env.trigger(&acme, "cancellable", &ticket(2), false);
    env.run(vec![taker.clone()]).await;
    env.clock.advance(H);
    env.settle().await;
    let sent = env.dispatched("acme").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, nid(&taker));
    assert!(sent[0].1.starts_with("acme: 3 on p1: 0 1 2"), "{sent:?}");
}
