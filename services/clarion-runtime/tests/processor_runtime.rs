//! Integration tests of the partition runtime over the real embedded parts: the
//! SQLite log and the SQLite store on files in a temporary directory, driven by
//! a `ManualClock`. Runners are driven by hand (`start` / `step` /
//! `fire_timers`) except where `run` itself is under test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::ids::{recipient_key, tenant_key};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Channel, Event, Id, Payload, TenantId};
use clarion_log::embedded::SqliteLog;
use clarion_log::{partition_for, EventLog, LogRecord, Record};
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::outbox::OutboxEntry;
use clarion_runtime::processor::NoEffects;
use clarion_runtime::projector::{history, version_ck, HistoryRef, Projector};
use clarion_runtime::router::{Router, ROUTER};
use clarion_runtime::runner::stored_offset;
use clarion_runtime::{
    Batch, Effects, Emit, Input, ManualClock, PartitionRunner, ProcessError, Processor,
    RunnerConfig, Topic, Topics,
};
use clarion_store::embedded::SqliteStore;
use clarion_store::{RowKey, Scan, Store, Table, WriteBatch, SYSTEM_TENANT};
use tempfile::TempDir;
use tokio::sync::watch;

/// 2023-11-14T22:13:20Z: any fixed instant will do.
const T0: i64 = 1_700_000_000_000;
const PARTITIONS: u32 = 4;
const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);

// ---------------------------------------------------------------------------
// Environment: a log and a store on files, reopenable to simulate a restart.
// ---------------------------------------------------------------------------

struct Env {
    dir: TempDir,
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    /// Set when the log and store share one file (the embedded default).
    colocated: Option<Arc<Colocated>>,
    topics: Topics,
    clock: ManualClock,
}

impl Env {
    /// A log and a store in files of their own: emits go through the outbox,
    /// as with Kafka.
    async fn new() -> Env {
        Env::open(false).await
    }

    /// The log and the store in one file: emits commit with the batch.
    async fn colocated() -> Env {
        Env::open(true).await
    }

    async fn open(colocated: bool) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, store, colocated) = open_files(&dir, colocated);
        let mut topics = Topics::new("test.", PARTITIONS);
        topics.ensure(&*log).await.expect("create topics");
        Env {
            dir,
            log,
            store,
            colocated,
            topics,
            clock: ManualClock::new(T0),
        }
    }

    /// Drops this process's handles on the log and store and opens the same
    /// files again, as a restarted process would.
    fn reopen(&mut self) {
        let (log, store, colocated) = open_files(&self.dir, self.colocated.is_some());
        self.log = log;
        self.store = store;
        self.colocated = colocated;
    }

    fn clock_now(&self) -> i64 {
        clarion_runtime::Clock::now_ms(&self.clock)
    }

    fn name(&self, t: Topic) -> String {
        self.topics.name(t)
    }

    fn runner<P: Processor>(
        &self,
        processor: P,
        effects: Arc<dyn Effects>,
        topic: Topic,
        partition: u32,
    ) -> PartitionRunner<P> {
        let runner = PartitionRunner::new(
            processor,
            effects,
            self.log.clone(),
            self.store.clone(),
            self.topics.clone(),
            topic,
            partition,
            Arc::new(self.clock.clone()),
            RunnerConfig::default(),
        );
        match &self.colocated {
            Some(c) => runner.with_colocated(c.clone()),
            None => runner,
        }
    }

    /// Appends events to a topic (each to the partition of its key).
    async fn append(&self, topic: Topic, events: &[Event]) -> Vec<(u32, u64)> {
        let recs = events
            .iter()
            .map(|e| Record {
                key: e.partition_key.clone(),
                value: Bytes::from(e.encode()),
                index: clarion_runtime::projector::event_history_index(e),
            })
            .collect();
        self.log
            .append(&self.name(topic), recs)
            .await
            .expect("append")
            .into_iter()
            .map(|a| (a.partition, a.offset))
            .collect()
    }

    /// Every record of one partition, from `from`.
    async fn records(&self, topic: Topic, partition: u32, from: u64) -> Vec<LogRecord> {
        self.log
            .read(&self.name(topic), partition, from, 100_000)
            .await
            .expect("read")
    }

    /// Every event of a topic, all partitions, decoded.
    async fn events(&self, topic: Topic) -> Vec<Event> {
        let mut out = Vec::new();
        for p in 0..self.topics.partitions_of(topic) {
            for r in self.records(topic, p, 0).await {
                out.push(Event::decode(&r.value).expect("runtime output decodes"));
            }
        }
        out
    }

    async fn offset(&self, processor: &str, topic: Topic, partition: u32) -> u64 {
        stored_offset(&*self.store, processor, &self.name(topic), partition)
            .await
            .expect("stored offset")
    }

    async fn timer_rows(&self, runner_key: &str) -> usize {
        self.store
            .scan(&Scan::partition(
                Table::Timers,
                SYSTEM_TENANT,
                runner_key,
                100,
            ))
            .await
            .expect("scan timers")
            .len()
    }

    async fn outbox_rows(&self, runner_key: &str) -> Vec<(Vec<u8>, Bytes)> {
        self.store
            .scan(&Scan::partition(
                Table::Outbox,
                SYSTEM_TENANT,
                runner_key,
                usize::MAX,
            ))
            .await
            .expect("scan outbox")
    }
}

type Opened = (Arc<dyn EventLog>, Arc<dyn Store>, Option<Arc<Colocated>>);

fn open_files(dir: &TempDir, colocated: bool) -> Opened {
    let path = |f: &str| dir.path().join(f).to_str().expect("utf-8 path").to_string();
    if colocated {
        let c = Arc::new(Colocated::open(&path("clarion.db")).expect("open log and store"));
        return (c.log(), c.store(), Some(c));
    }
    let log = SqliteLog::open(&path("log.db")).expect("open log");
    let store = SqliteStore::open(&path("store.db")).expect("open store");
    (Arc::new(log), Arc::new(store), None)
}

fn acme() -> TenantId {
    TenantId::parse("acme").expect("tenant id")
}

/// Runner key, as the runtime builds it: `{processor}/{topic_name}/{partition}`.
fn runner_key(env: &Env, processor: &str, topic: Topic, partition: u32) -> String {
    format!("{processor}/{}/{partition}", env.name(topic))
}

// ---------------------------------------------------------------------------
// A test processor and effects (the runtime's extension points, not Clarion
// components): they record what the runtime makes them do.
// ---------------------------------------------------------------------------

const RECORDER: &str = "recorder";

#[derive(Clone, Default)]
struct Behaviour {
    dedup: bool,
    /// Emit one `Delivered` event per input to this topic.
    emit_to: Option<Topic>,
    /// Request one effect per input (its bytes: the input's notification id).
    effect: bool,
    /// Schedule one `Delivered` event per input, due `batch.now_ms + delay`.
    timer: Option<(Duration, Topic)>,
    /// Refuse (`ProcessError::Poison`) the input at this offset, every time.
    refuse: Option<u64>,
    /// Fail with a store error (that never clears) at this offset.
    store_error: Option<u64>,
}

/// Records the offset of every input handed to `process`, and commits one
/// state row per input (table `SinkDeliveries`, pk `recorder`, ck offset).
struct Recorder {
    behaviour: Behaviour,
    calls: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn new(behaviour: Behaviour) -> (Recorder, Arc<Mutex<Vec<u64>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (
            Recorder {
                behaviour,
                calls: calls.clone(),
            },
            calls,
        )
    }
}

fn notification_of(e: &Event) -> String {
    e.payload
        .notification_id()
        .expect("test inputs are lifecycle events")
        .to_string()
}

/// The event the recorder emits (or schedules) for an input.
fn delivered_for(input: &Event, now_ms: i64) -> Event {
    input.caused(
        0,
        now_ms,
        Actor::System(RECORDER.into()),
        Payload::Delivered(pb::NotificationDelivered {
            notification_id: notification_of(input),
            attempt_id: "a0".into(),
            provider: "test".into(),
            context: None,
        }),
    )
}

#[async_trait]
impl Processor for Recorder {
    fn name(&self) -> &'static str {
        RECORDER
    }

    fn dedup(&self) -> bool {
        self.behaviour.dedup
    }

    async fn process(
        &mut self,
        _store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        for input in inputs {
            if self.behaviour.store_error == Some(input.offset) {
                return Err(ProcessError::Store(clarion_store::StoreError::Storage(
                    "disk I/O error".into(),
                )));
            }
            if self.behaviour.refuse == Some(input.offset) {
                return Err(ProcessError::Poison {
                    offset: input.offset,
                    reason: "the recorder refuses it".into(),
                });
            }
            self.calls.lock().unwrap().push(input.offset);
            batch.writes.put(
                RowKey::new(
                    Table::SinkDeliveries,
                    input.event.tenant.as_str(),
                    RECORDER,
                    input.offset.to_be_bytes().to_vec(),
                ),
                Bytes::copy_from_slice(&input.event.id.0),
            );
            if let Some(topic) = self.behaviour.emit_to {
                batch.emit(topic, delivered_for(&input.event, batch.now_ms));
            }
            if self.behaviour.effect {
                batch
                    .effects
                    .push(Bytes::from(notification_of(&input.event).into_bytes()));
            }
            if let Some((delay, topic)) = self.behaviour.timer {
                let due = batch.now_ms + delay.as_millis() as i64;
                batch.timers.push((
                    due,
                    Emit {
                        topic,
                        event: delivered_for(&input.event, due),
                    },
                ));
            }
        }
        Ok(())
    }
}

/// Offsets of the recorder's committed state rows.
async fn committed_rows(env: &Env) -> Vec<u64> {
    env.store
        .scan(&Scan::partition(
            Table::SinkDeliveries,
            "acme",
            RECORDER,
            usize::MAX,
        ))
        .await
        .expect("scan state")
        .into_iter()
        .map(|(ck, _)| u64::from_be_bytes(ck.try_into().expect("8-byte ck")))
        .collect()
}

/// The follow-up event an effect reports.
fn effect_result(effect: &[u8], now_ms: i64) -> Event {
    let nid = String::from_utf8(effect.to_vec()).expect("utf-8 effect");
    Event {
        id: Id::derive(&[b"effect-result", effect]),
        tenant: acme(),
        partition_key: recipient_key(&acme(), "u1"),
        occurred_at_ms: now_ms,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("test-effects".into()),
        payload: Payload::Sent(pb::NotificationSent {
            notification_id: nid,
            attempt_id: "a0".into(),
            provider: "test".into(),
            provider_message_id: "pm-1".into(),
            context: None,
        }),
    }
}

/// Records every effect it runs and reports one `Sent` event per effect to
/// the notifications topic. Panics once, on its first run, if `crash_once`.
#[derive(Default)]
struct RecordingEffects {
    ran: Mutex<Vec<(Bytes, i64)>>,
    crash_once: AtomicBool,
}

#[async_trait]
impl Effects for RecordingEffects {
    async fn run(&self, effect: &[u8], now_ms: i64) -> Vec<Emit> {
        if self.crash_once.swap(false, Ordering::SeqCst) {
            panic!("simulated process crash while running an effect");
        }
        self.ran
            .lock()
            .unwrap()
            .push((Bytes::copy_from_slice(effect), now_ms));
        vec![Emit {
            topic: Topic::Notifications,
            event: effect_result(effect, now_ms),
        }]
    }
}

impl RecordingEffects {
    fn ran(&self) -> Vec<(Bytes, i64)> {
        self.ran.lock().unwrap().clone()
    }
}

/// Input number `n`: a lifecycle event of subscriber `u1` of tenant `acme`.
fn fact(n: u32) -> Event {
    Event {
        id: Id::derive(&[b"fact", &n.to_le_bytes()]),
        tenant: acme(),
        partition_key: recipient_key(&acme(), "u1"),
        occurred_at_ms: T0,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("test".into()),
        payload: Payload::Sent(pb::NotificationSent {
            notification_id: format!("n{n}"),
            attempt_id: "a0".into(),
            provider: "test".into(),
            provider_message_id: format!("pm-{n}"),
            context: None,
        }),
    }
}

fn u1_partition() -> u32 {
    partition_for(&recipient_key(&acme(), "u1"), PARTITIONS)
}

// ---------------------------------------------------------------------------
// Router fixtures: a French-capable template, a one-step email workflow, a
// fr-CA subscriber and a trigger for them.
// ---------------------------------------------------------------------------

const SUBSCRIBER: &str = "tech-7";
const EMAIL: &str = "tech7@example.test";

fn config_event(tag: &str, payload: Payload) -> Event {
    Event {
        id: Id::derive(&[b"config", tag.as_bytes()]),
        tenant: acme(),
        partition_key: tenant_key(&acme()),
        occurred_at_ms: T0 - 60_000,
        causation_id: None,
        correlation_id: None,
        actor: Actor::Operator("op-1".into()),
        payload,
    }
}

fn template_published() -> Event {
    let variant = |locale: &str, subject: &str, body: &str| pb::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    let t = Template::new(
        "appt",
        1,
        "email",
        &[
            variant("default", "Visit", "Visit at {{ payload.time }}"),
            variant("fr", "Visite", "Visite à {{ payload.time }}"),
        ],
    )
    .expect("valid template");
    config_event("template appt v1", Payload::TemplatePublished(t.to_event()))
}

fn workflow_published() -> Event {
    let w = clarion_domain::workflow::from_steps(
        "appt",
        "Appointment reminder",
        &[pb::WorkflowStep {
            channel: "email".into(),
            template_id: "appt".into(),
            provider: String::new(),
        }],
        1,
        |_| Some(Channel::Email),
    )
    .expect("valid workflow");
    config_event(
        "workflow appt v1",
        Payload::WorkflowPublished(clarion_domain::workflow::published(&w)),
    )
}

fn subscriber_upserted() -> Event {
    let s = Subscriber {
        subscriber_id: SUBSCRIBER.into(),
        email: EMAIL.into(),
        locale: "fr-CA".into(),
        ..Default::default()
    };
    Event {
        id: Id::derive(&[b"upsert", SUBSCRIBER.as_bytes()]),
        tenant: acme(),
        partition_key: recipient_key(&acme(), SUBSCRIBER),
        occurred_at_ms: T0 - 1_000,
        causation_id: None,
        correlation_id: None,
        actor: Actor::ApiKey("k1".into()),
        payload: Payload::SubscriberUpserted(s.to_event()),
    }
}

fn triggered() -> Event {
    triggered_with_key("order-42")
}

fn triggered_with_key(idempotency_key: &str) -> Event {
    let cmd = TriggerCommand {
        workflow_id: "appt".into(),
        recipients: vec![Recipient {
            subscriber_id: SUBSCRIBER.into(),
            contact: None,
        }],
        payload_json: r#"{"time":"9:30"}"#.into(),
        idempotency_key: idempotency_key.into(),
        ..Default::default()
    };
    let mut events = cmd.accept(&acme(), 1, [7; 16], T0, &Actor::ApiKey("k1".into()));
    assert_eq!(events.len(), 1, "one recipient, one event");
    events.remove(0)
}

/// The run record of a one-step run that ended with its send delivered.
fn assert_completed_delivered(rec: &clarion_runtime::router::RunRecord) {
    assert_eq!(
        rec.run.terminal,
        Some(clarion_domain::flow::Terminal::Completed),
        "{rec:?}"
    );
    assert_eq!(
        rec.run.step_status.values().collect::<Vec<_>>(),
        ["delivered"],
        "{rec:?}"
    );
}

/// What the sink reports for a dispatch: `Sent`, then `Delivered`.
fn sink_outcome(d: &pb::DispatchRequested) -> [Payload; 2] {
    [
        Payload::Sent(pb::NotificationSent {
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
            provider: "sink".into(),
            provider_message_id: d.attempt_id.clone(),
            context: None,
        }),
        Payload::Delivered(pb::NotificationDelivered {
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
            provider: "sink".into(),
            context: None,
        }),
    ]
}

fn recipient_partition() -> u32 {
    partition_for(&recipient_key(&acme(), SUBSCRIBER), PARTITIONS)
}

/// Publishes the template and workflow to the config topic and projects them
/// with a `Projector` runner, as the running system would.
async fn given_published_config(env: &Env) {
    let config_partition = partition_for(&tenant_key(&acme()), env.topics.config_partitions);
    let at = env
        .append(Topic::Config, &[template_published(), workflow_published()])
        .await;
    assert_eq!(at, vec![(config_partition, 0), (config_partition, 1)]);

    let mut projector = env.runner(
        Projector,
        Arc::new(NoEffects),
        Topic::Config,
        config_partition,
    );
    projector.start().await.unwrap();
    let recs = env.records(Topic::Config, config_partition, 0).await;
    assert_eq!(recs.len(), 2);
    projector.step(recs).await.unwrap();
    assert_eq!(
        env.offset("projector", Topic::Config, config_partition)
            .await,
        2
    );
    // The projection the router reads is there.
    let wf = env
        .store
        .get(&RowKey::new(
            Table::Workflows,
            "acme",
            "appt",
            version_ck(1),
        ))
        .await
        .unwrap();
    assert!(wf.is_some(), "workflow appt v1 projected");
}

fn router() -> Router {
    Router::new(HashMap::new())
}

fn dispatches(events: &[Event]) -> Vec<&pb::DispatchRequested> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::DispatchRequested(d) => Some(d),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Router end to end on the log.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_renders_a_french_dispatch_end_to_end_on_the_log() {
    // Given: a published template (default + fr) and email workflow, projected
    // from the config topic, and on the triggers topic a fr-CA subscriber
    // followed by a trigger for them.
    let mut env = Env::new().await;
    given_published_config(&env).await;
    let p = recipient_partition();
    let trigger = triggered();
    let at = env
        .append(Topic::Triggers, &[subscriber_upserted(), trigger.clone()])
        .await;
    assert_eq!(at, vec![(p, 0), (p, 1)]);
    env.clock.set(T0 + 5_000);

    // When: the router runs over that partition.
    let mut runner = env.runner(router(), Arc::new(NoEffects), Topic::Triggers, p);
    runner.start().await.unwrap();
    runner
        .step(env.records(Topic::Triggers, p, 0).await)
        .await
        .unwrap();

    // Then: exactly one DispatchRequested, rendered in French to the
    // subscriber's email, on the recipient's partition of the dispatch topic...
    let Payload::Triggered(t) = &trigger.payload else {
        unreachable!()
    };
    let dispatch = env.events(Topic::Dispatch).await;
    assert_eq!(dispatch.len(), 1, "{dispatch:?}");
    let d = dispatches(&dispatch);
    assert_eq!(d.len(), 1, "{dispatch:?}");
    let d = d[0];
    assert_eq!(d.to, EMAIL);
    assert_eq!(d.body, "Visite à 9:30");
    assert_eq!(d.subject, "Visite");
    assert_eq!(d.locale, "fr");
    assert_eq!(d.channel, "email");
    assert_eq!(d.provider, "sink");
    assert_eq!(d.subscriber_id, SUBSCRIBER);
    assert_eq!(d.notification_id, t.notification_id);
    assert_eq!(
        d.attempt_id,
        clarion_domain::router::attempt_id(&t.notification_id, 0, 0)
    );
    assert_eq!(dispatch[0].causation_id, Some(trigger.id));
    assert_eq!(dispatch[0].correlation_id, trigger.correlation_id);
    assert_eq!(
        dispatch[0].occurred_at_ms,
        T0 + 5_000,
        "the runtime clock's time"
    );
    assert_eq!(env.records(Topic::Dispatch, p, 0).await.len(), 1);

    // ...and exactly one Routed event on the notifications topic.
    let notifications = env.events(Topic::Notifications).await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let Payload::Routed(r) = &notifications[0].payload else {
        panic!("expected Routed, got {notifications:?}")
    };
    assert_eq!(r.notification_id, t.notification_id);
    assert_eq!(
        (r.workflow_id.as_str(), r.workflow_version, r.step),
        ("appt", 1, 0)
    );
    assert_eq!(
        (
            r.template_id.as_str(),
            r.template_version,
            r.locale.as_str()
        ),
        ("appt", 1, "fr")
    );
    assert_eq!((r.channel.as_str(), r.provider.as_str()), ("email", "sink"));

    // The router committed its position and the subscriber it applied.
    assert_eq!(env.offset(ROUTER, Topic::Triggers, p).await, 2);
    let stored = env
        .store
        .get(&RowKey::new(
            Table::Subscribers,
            "acme",
            SUBSCRIBER,
            Vec::new(),
        ))
        .await
        .unwrap()
        .expect("subscriber row");
    let s = clarion_domain::event::decode_subscriber(&stored).expect("decodes");
    assert_eq!((s.email.as_str(), s.locale.as_str()), (EMAIL, "fr-CA"));
    assert!(env
        .outbox_rows(&runner_key(&env, ROUTER, Topic::Triggers, p))
        .await
        .is_empty());

    // When: after a restart (cold caches) another trigger for the same
    // subscriber arrives, with no upsert in its batch.
    drop(runner);
    env.reopen();
    let second = triggered_with_key("order-43");
    assert_ne!(second.id, trigger.id);
    let at = env
        .append(Topic::Triggers, std::slice::from_ref(&second))
        .await;
    assert_eq!(at, vec![(p, 2)]);
    let mut restarted = env.runner(router(), Arc::new(NoEffects), Topic::Triggers, p);
    restarted.start().await.unwrap();
    restarted
        .step(env.records(Topic::Triggers, p, 0).await)
        .await
        .unwrap();

    // Then: it is routed from the stored subscriber and projected config:
    // one more French dispatch to the same address, nothing else re-routed.
    let dispatch = env.events(Topic::Dispatch).await;
    assert_eq!(dispatch.len(), 2, "{dispatch:?}");
    assert_eq!(dispatch[0].causation_id, Some(trigger.id));
    assert_eq!(dispatch[1].causation_id, Some(second.id));
    let Payload::DispatchRequested(d2) = &dispatch[1].payload else {
        panic!("expected DispatchRequested, got {dispatch:?}")
    };
    assert_eq!(
        (d2.to.as_str(), d2.body.as_str(), d2.locale.as_str()),
        (EMAIL, "Visite à 9:30", "fr")
    );
    assert_eq!(env.events(Topic::Notifications).await.len(), 2);
    assert_eq!(env.offset(ROUTER, Topic::Triggers, p).await, 3);
}

// ---------------------------------------------------------------------------
// 2. Dedup.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_appended_twice_is_dispatched_once() {
    // Given: config projected, the subscriber upserted, and the same Triggered
    // event appended twice (a producer retry): two offsets, one event id.
    let env = Env::new().await;
    given_published_config(&env).await;
    let p = recipient_partition();
    let trigger = triggered();
    let at = env
        .append(
            Topic::Triggers,
            &[subscriber_upserted(), trigger.clone(), trigger.clone()],
        )
        .await;
    assert_eq!(at, vec![(p, 0), (p, 1), (p, 2)]);

    // When: the router processes both copies in one batch.
    let mut runner = env.runner(router(), Arc::new(NoEffects), Topic::Triggers, p);
    runner.start().await.unwrap();
    runner
        .step(env.records(Topic::Triggers, p, 0).await)
        .await
        .unwrap();

    // Then: exactly one DispatchRequested and one Routed, and both offsets
    // are consumed.
    let dispatch = env.events(Topic::Dispatch).await;
    assert_eq!(dispatches(&dispatch).len(), 1, "{dispatch:?}");
    assert_eq!(dispatch.len(), 1, "{dispatch:?}");
    assert_eq!(env.events(Topic::Notifications).await.len(), 1);
    assert_eq!(env.offset(ROUTER, Topic::Triggers, p).await, 3);

    // When: a third copy arrives later, in its own batch, and is processed by
    // a restarted router (cold caches, so only the dedup table can catch it).
    drop(runner);
    let at = env
        .append(Topic::Triggers, std::slice::from_ref(&trigger))
        .await;
    assert_eq!(at, vec![(p, 3)]);
    let mut restarted = env.runner(router(), Arc::new(NoEffects), Topic::Triggers, p);
    restarted.start().await.unwrap();
    restarted
        .step(env.records(Topic::Triggers, p, 3).await)
        .await
        .unwrap();

    // Then: still exactly one dispatch and one routing decision.
    let dispatch = env.events(Topic::Dispatch).await;
    assert_eq!(dispatch.len(), 1, "{dispatch:?}");
    let notifications = env.events(Topic::Notifications).await;
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(env.offset(ROUTER, Topic::Triggers, p).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_and_delivered_in_one_batch_end_the_run_once_and_it_stays_ended() {
    // Given: a routed one-step email run, and the sink's outcome for it: Sent
    // and Delivered, appended together as the dispatcher appends them, so the
    // router reads both in one batch.
    let env = Env::new().await;
    given_published_config(&env).await;
    let p = recipient_partition();
    env.append(Topic::Triggers, &[subscriber_upserted(), triggered()])
        .await;
    let mut runner = env
        .runner(router(), Arc::new(NoEffects), Topic::Triggers, p)
        .with_inputs(&[Topic::Deliveries]);
    runner.start().await.unwrap();
    runner
        .step(env.records(Topic::Triggers, p, 0).await)
        .await
        .unwrap();
    let dispatch = env.events(Topic::Dispatch).await;
    let d = dispatches(&dispatch)[0].clone();
    let outcome: Vec<Event> = sink_outcome(&d)
        .into_iter()
        .zip(0..)
        .map(|(payload, i)| dispatch[0].caused(i, T0, Actor::System("dispatcher".into()), payload))
        .collect();
    env.append(Topic::Deliveries, &outcome).await;

    // When: the router applies that batch.
    runner
        .step_topic(
            Topic::Deliveries,
            env.records(Topic::Deliveries, p, 0).await,
        )
        .await
        .unwrap();

    // Then: the run ended once, completed...
    let ended: Vec<_> = env
        .events(Topic::Notifications)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Payload::Ended(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].outcome, "completed");
    // ...and the stored run is the ended one, with the delivery recorded: the
    // Delivered behind the Sent saw the run as the Sent left it, not the
    // record the store held before the batch.
    let stored = env
        .store
        .get(&RowKey::new(
            Table::Runs,
            "acme",
            &d.notification_id,
            Vec::new(),
        ))
        .await
        .unwrap()
        .expect("run record");
    let rec = clarion_runtime::router::decode_run(&stored).expect("run record decodes");
    assert_completed_delivered(&rec);

    // And: once the next batch starts, the ended run no longer takes memory.
    assert_eq!(runner.processor().cached_runs(), 1);
    env.append(Topic::Triggers, &[subscriber_upserted()]).await;
    runner
        .step(env.records(Topic::Triggers, p, 2).await)
        .await
        .unwrap();
    assert_eq!(runner.processor().cached_runs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_changed_by_several_inputs_of_a_batch_is_written_once_as_it_ends() {
    // Given: a router that started a run (its batch decided, not committed:
    // the run is in the router's memory).
    let env = Env::new().await;
    given_published_config(&env).await;
    let input = |offset: u64, event: Event| Input {
        offset,
        raw: event.encode().into(),
        event,
    };
    let mut r = router();
    let mut first = Batch {
        now_ms: T0,
        ..Default::default()
    };
    r.process(
        env.store.as_ref(),
        &mut first,
        &[input(0, subscriber_upserted()), input(1, triggered())],
    )
    .await
    .unwrap();
    let d = first
        .emits
        .iter()
        .find_map(|e| match &e.event.payload {
            Payload::DispatchRequested(d) => Some(d.clone()),
            _ => None,
        })
        .expect("a dispatch");
    let run_writes = |b: &Batch| -> Vec<Bytes> {
        b.writes
            .ops
            .iter()
            .filter_map(|op| match op {
                clarion_store::Op::Put { key, value, .. }
                    if key.table == Table::Runs
                        && key.pk == d.notification_id
                        && key.ck.is_empty() =>
                {
                    Some(value.clone())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(run_writes(&first).len(), 1, "a new run is written");

    // When: its Sent and Delivered come in one batch.
    let cause = first.emits[0].event.clone();
    let outcome = |i: u32, payload: Payload| {
        input(
            u64::from(i),
            cause.caused(i, T0, Actor::System("dispatcher".into()), payload),
        )
    };
    let mut second = Batch {
        now_ms: T0 + 10,
        ..Default::default()
    };
    let inputs: Vec<Input> = sink_outcome(&d)
        .into_iter()
        .zip(0..)
        .map(|(payload, i)| outcome(i, payload))
        .collect();
    r.process(env.store.as_ref(), &mut second, &inputs)
        .await
        .unwrap();

    // Then: the batch writes the run once, as the last input left it.
    let writes = run_writes(&second);
    assert_eq!(writes.len(), 1, "one write for two changes");
    let rec = clarion_runtime::router::decode_run(&writes[0]).expect("run record decodes");
    assert_completed_delivered(&rec);
}

// ---------------------------------------------------------------------------
// 3. Crash between commit and outbox completion.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_completes_a_left_over_outbox_exactly_once_and_never_redoes_completed_ones() {
    // Given: a processor emitting one event and one effect per input, which
    // completed a batch of two inputs normally.
    let mut env = Env::new().await;
    let p = u1_partition();
    let behaviour = Behaviour {
        dedup: true,
        emit_to: Some(Topic::Deliveries),
        effect: true,
        timer: None,
        refuse: None,
        store_error: None,
    };
    env.append(Topic::Triggers, &[fact(0), fact(1)]).await;
    let key = runner_key(&env, RECORDER, Topic::Triggers, p);
    {
        let (proc_a, calls_a) = Recorder::new(behaviour.clone());
        let effects_a = Arc::new(RecordingEffects::default());
        let mut a = env.runner(proc_a, effects_a.clone(), Topic::Triggers, p);
        a.start().await.unwrap();
        a.step(env.records(Topic::Triggers, p, 0).await)
            .await
            .unwrap();
        assert_eq!(*calls_a.lock().unwrap(), vec![0, 1]);
        let ran: Vec<Bytes> = effects_a.ran().into_iter().map(|(b, _)| b).collect();
        assert_eq!(
            sorted(ran),
            vec![Bytes::from_static(b"n0"), Bytes::from_static(b"n1")]
        );
        assert!(
            env.outbox_rows(&key).await.is_empty(),
            "completed outbox is deleted"
        );
    }
    assert_eq!(env.events(Topic::Deliveries).await.len(), 2);
    assert_eq!(env.events(Topic::Notifications).await.len(), 2);

    // When: the process restarts (same files) and a new runner starts.
    env.reopen();
    let (proc_b, calls_b) = Recorder::new(behaviour.clone());
    let effects_b = Arc::new(RecordingEffects::default());
    let mut b = env.runner(proc_b, effects_b.clone(), Topic::Triggers, p);
    b.start().await.unwrap();

    // Then: nothing completed before is redone: no effect, no emit, no input.
    assert!(effects_b.ran().is_empty(), "{:?}", effects_b.ran());
    assert!(calls_b.lock().unwrap().is_empty());
    assert_eq!(env.events(Topic::Deliveries).await.len(), 2);
    assert_eq!(env.events(Topic::Notifications).await.len(), 2);
    assert_eq!(env.offset(RECORDER, Topic::Triggers, p).await, 2);
    drop(b);

    // Given: a crash right after a batch (input offset 2) committed: its
    // outbox row is in the store, its offset advanced, nothing published.
    env.append(Topic::Triggers, &[fact(2)]).await;
    let left_over = delivered_for(&fact(2), T0);
    let entry = OutboxEntry {
        emits: vec![Emit {
            topic: Topic::Deliveries,
            event: left_over.clone(),
        }],
        effects: vec![Bytes::from_static(b"n2")],
    };
    let mut crash = WriteBatch::new();
    crash.put(
        RowKey::new(
            Table::Outbox,
            SYSTEM_TENANT,
            &key,
            2u64.to_be_bytes().to_vec(),
        ),
        entry.encode(),
    );
    crash.put(
        RowKey::new(Table::ProcessorOffsets, SYSTEM_TENANT, &key, Vec::new()),
        Bytes::copy_from_slice(&3u64.to_be_bytes()),
    );
    env.store.write(crash).await.unwrap();
    env.reopen();
    env.clock.set(T0 + 42);

    // When: the restarted runner starts.
    let (proc_c, calls_c) = Recorder::new(behaviour.clone());
    let effects_c = Arc::new(RecordingEffects::default());
    let mut c = env.runner(proc_c, effects_c.clone(), Topic::Triggers, p);
    c.start().await.unwrap();

    // Then: the outbox's effect ran once (at the clock's time), its emit and
    // the effect's report are published, the row is gone, and the input
    // itself is not applied again.
    assert_eq!(effects_c.ran(), vec![(Bytes::from_static(b"n2"), T0 + 42)]);
    let deliveries = env.events(Topic::Deliveries).await;
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert_eq!(
        deliveries.iter().filter(|e| e.id == left_over.id).count(),
        1
    );
    let notifications = env.events(Topic::Notifications).await;
    assert_eq!(notifications.len(), 3, "{notifications:?}");
    let report = effect_result(b"n2", T0 + 42);
    assert_eq!(notifications.iter().filter(|e| **e == report).count(), 1);
    assert!(env.outbox_rows(&key).await.is_empty(), "outbox row deleted");
    assert_eq!(env.offset(RECORDER, Topic::Triggers, p).await, 3);
    c.step(env.records(Topic::Triggers, p, 0).await)
        .await
        .unwrap();
    assert!(
        calls_c.lock().unwrap().is_empty(),
        "offsets 0..3 already applied"
    );
    drop(c);

    // When: it restarts once more.
    env.reopen();
    let (proc_d, _) = Recorder::new(behaviour);
    let effects_d = Arc::new(RecordingEffects::default());
    let mut d = env.runner(proc_d, effects_d.clone(), Topic::Triggers, p);
    d.start().await.unwrap();

    // Then: the completed outbox is not completed again.
    assert!(effects_d.ran().is_empty());
    assert_eq!(env.events(Topic::Deliveries).await.len(), 3);
    assert_eq!(env.events(Topic::Notifications).await.len(), 3);
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The recorder's behaviour in the crash tests: dedup, one emit to
/// `deliveries` and one effect per input.
fn emit_and_effect() -> Behaviour {
    Behaviour {
        dedup: true,
        emit_to: Some(Topic::Deliveries),
        effect: true,
        timer: None,
        refuse: None,
        store_error: None,
    }
}

/// Appends `fact(0)` and steps a runner whose effects crash the task on
/// their first run, after the batch committed. Returns the runner key, the
/// step's outcome, what the processor was handed and the crashing effects.
async fn step_until_the_effect_crashes(
    env: &Env,
) -> (
    String,
    Result<Result<(), ProcessError>, tokio::task::JoinError>,
    Arc<Mutex<Vec<u64>>>,
    Arc<RecordingEffects>,
) {
    let p = u1_partition();
    env.append(Topic::Triggers, &[fact(0)]).await;
    let key = runner_key(env, RECORDER, Topic::Triggers, p);
    let (proc_a, calls_a) = Recorder::new(emit_and_effect());
    let crashing = Arc::new(RecordingEffects {
        crash_once: AtomicBool::new(true),
        ..Default::default()
    });
    let mut a = env.runner(proc_a, crashing.clone(), Topic::Triggers, p);
    a.start().await.unwrap();
    let recs = env.records(Topic::Triggers, p, 0).await;
    let crashed = tokio::spawn(async move { a.step(recs).await }).await;
    (key, crashed, calls_a, crashing)
}

/// Reopens the files as a restarted process would, then starts a runner
/// with working effects and steps the partition from offset 0. Returns what
/// the processor was handed and the effects.
async fn restart_and_step(env: &mut Env) -> (Arc<Mutex<Vec<u64>>>, Arc<RecordingEffects>) {
    env.reopen();
    let p = u1_partition();
    let (proc_b, calls_b) = Recorder::new(emit_and_effect());
    let effects_b = Arc::new(RecordingEffects::default());
    let mut b = env.runner(proc_b, effects_b.clone(), Topic::Triggers, p);
    b.start().await.unwrap();
    b.step(env.records(Topic::Triggers, p, 0).await)
        .await
        .unwrap();
    (calls_b, effects_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_read_from_the_logs_index_with_no_projection() {
    for colocated in [false, true] {
        // Given: a notification's Triggered and Delivered appended as
        // producers append them (with their history index), and no
        // projector running.
        let env = Env::open(colocated).await;
        let p = recipient_partition();
        let trig = triggered();
        let done = delivered_for(&trig, T0 + 5);
        env.append(Topic::Deliveries, std::slice::from_ref(&done))
            .await;
        env.append(Topic::Triggers, std::slice::from_ref(&trig))
            .await;
        let nid = notification_of(&trig);

        // When: its history is read.
        let got = history(&*env.store, &*env.log, &env.topics, "acme", &nid)
            .await
            .unwrap();

        // Then: both events, in lifecycle order, though no history row exists.
        assert_eq!(
            got,
            vec![trig.clone(), done.clone()],
            "colocated: {colocated}"
        );
        let rows = env
            .store
            .scan(&Scan::partition(
                Table::NotificationEvents,
                "acme",
                &nid,
                10,
            ))
            .await
            .unwrap();
        assert!(rows.is_empty(), "no projection was written");
        // And: another tenant asking for the same id finds nothing.
        let other = history(&*env.store, &*env.log, &env.topics, "other", &nid)
            .await
            .unwrap();
        assert!(other.is_empty());
        // And: the projector reading the same records (as it does on a log
        // without an index) adds rows, and the history still holds each
        // event once.
        let mut runner = env
            .runner(Projector, Arc::new(NoEffects), Topic::Triggers, p)
            .with_inputs(&[Topic::Deliveries]);
        runner.start().await.unwrap();
        for t in [Topic::Triggers, Topic::Deliveries] {
            runner
                .step_topic(t, env.records(t, p, 0).await)
                .await
                .unwrap();
        }
        let got = history(&*env.store, &*env.log, &env.topics, "acme", &nid)
            .await
            .unwrap();
        assert_eq!(got, vec![trig.clone(), done.clone()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rows_written_before_the_index_still_read() {
    // Given: records appended without an index (as releases before it did),
    // whose history rows are a reference into the log and a copy.
    let env = Env::open(true).await;
    let p = recipient_partition();
    let trig = triggered();
    let done = delivered_for(&trig, T0 + 5);
    for (topic, e) in [(Topic::Triggers, &trig), (Topic::Deliveries, &done)] {
        let at = env
            .log
            .append(
                &env.name(topic),
                vec![Record::new(e.partition_key.clone(), e.encode())],
            )
            .await
            .unwrap();
        assert_eq!(at[0].partition, p);
    }
    let nid = notification_of(&trig);
    let row = |e: &clarion_domain::Event| {
        RowKey::new(Table::NotificationEvents, "acme", &nid, e.id.0.to_vec())
    };
    let mut w = WriteBatch::new();
    w.put(
        row(&trig),
        HistoryRef {
            topic: Topic::Triggers,
            partition: p,
            offset: 0,
        }
        .encode(),
    );
    w.put(row(&done), Bytes::from(done.encode()));
    env.store.write(w).await.unwrap();

    // When / Then: the history resolves the reference and reads the copy.
    let got = history(&*env.store, &*env.log, &env.topics, "acme", &nid)
        .await
        .unwrap();
    assert_eq!(got, vec![trig, done]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_running_effects_is_finished_by_the_next_start() {
    // Given: a runner whose effects crash the task on their first run, after
    // the batch committed (`step_until_the_effect_crashes`).
    let mut env = Env::new().await;
    let p = u1_partition();

    // When: the step crashes while running the effect.
    let (key, crashed, calls_a, crashing) = step_until_the_effect_crashes(&env).await;

    // Then: the crash happened after the commit: the input's state and offset
    // are committed and the outbox row is still there.
    assert!(crashed.expect_err("the step panicked").is_panic());
    assert_eq!(*calls_a.lock().unwrap(), vec![0]);
    assert!(crashing.ran().is_empty());
    assert_eq!(committed_rows(&env).await, vec![0]);
    assert_eq!(env.offset(RECORDER, Topic::Triggers, p).await, 1);
    let rows = env.outbox_rows(&key).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].0,
        0u64.to_be_bytes().to_vec(),
        "keyed by last offset"
    );
    let emitted = delivered_for(&fact(0), T0);
    assert_eq!(
        OutboxEntry::decode(rows[0].1.clone()).unwrap(),
        OutboxEntry {
            emits: vec![Emit {
                topic: Topic::Deliveries,
                event: emitted.clone(),
            }],
            effects: vec![Bytes::from_static(b"n0")],
        }
    );

    // When: the process restarts and the runner starts again.
    let (calls_b, effects_b) = restart_and_step(&mut env).await;

    // Then: the effect ran exactly once, its report is published, the emit is
    // published again under the same id (at least once), the input is not
    // applied again, and the outbox is empty.
    assert_eq!(effects_b.ran(), vec![(Bytes::from_static(b"n0"), T0)]);
    assert!(calls_b.lock().unwrap().is_empty());
    // Published before the crash and again on completion: same event twice.
    assert_eq!(
        env.events(Topic::Deliveries).await,
        vec![emitted.clone(), emitted]
    );
    assert_eq!(
        env.events(Topic::Notifications).await,
        vec![effect_result(b"n0", T0)]
    );
    assert!(env.outbox_rows(&key).await.is_empty());
    assert_eq!(committed_rows(&env).await, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colocated_emits_commit_with_the_batch_so_a_crash_neither_loses_nor_repeats_them() {
    // Given: the log and store in one file, and a runner whose effects crash
    // the task on their first run, after the batch committed.
    let mut env = Env::colocated().await;
    let p = u1_partition();

    // When: the step crashes while running the effect.
    let (key, crashed, _, _) = step_until_the_effect_crashes(&env).await;

    // Then: the emit was appended by the commit itself, and the outbox row
    // holds only the effect.
    assert!(crashed.expect_err("the step panicked").is_panic());
    let emitted = delivered_for(&fact(0), T0);
    assert_eq!(env.events(Topic::Deliveries).await, vec![emitted.clone()]);
    assert_eq!(committed_rows(&env).await, vec![0]);
    assert_eq!(env.offset(RECORDER, Topic::Triggers, p).await, 1);
    let rows = env.outbox_rows(&key).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        OutboxEntry::decode(rows[0].1.clone()).unwrap(),
        OutboxEntry {
            emits: Vec::new(),
            effects: vec![Bytes::from_static(b"n0")],
        }
    );

    // When: the process restarts and the runner starts again.
    let (calls_b, effects_b) = restart_and_step(&mut env).await;

    // Then: the effect ran once, and the emit is in the log exactly once
    // (with separate files it is published again on completion).
    assert_eq!(effects_b.ran(), vec![(Bytes::from_static(b"n0"), T0)]);
    assert!(calls_b.lock().unwrap().is_empty());
    assert_eq!(env.events(Topic::Deliveries).await, vec![emitted]);
    assert_eq!(
        env.events(Topic::Notifications).await,
        vec![effect_result(b"n0", T0)]
    );
    assert!(env.outbox_rows(&key).await.is_empty());

    // And: a batch with emits and no effects writes no outbox row at all:
    // the log has the emit, and the outbox stays empty even before the step
    // returns (nothing is left to complete).
    env.append(Topic::Triggers, &[fact(1)]).await;
    let plain = Behaviour {
        effect: false,
        ..emit_and_effect()
    };
    let (proc_c, _) = Recorder::new(plain);
    let mut c = env.runner(proc_c, Arc::new(NoEffects), Topic::Triggers, p);
    c.start().await.unwrap();
    c.step(env.records(Topic::Triggers, p, 1).await)
        .await
        .unwrap();
    assert_eq!(env.events(Topic::Deliveries).await.len(), 2);
    assert!(env.outbox_rows(&key).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colocated_commit_that_fails_appends_nothing_and_a_retry_takes_the_same_offsets() {
    // Given: the log and store in one file; another writer of the file has
    // put a record where the log will append next (the log keeps each
    // partition's end in memory), so the next append's insert fails.
    let env = Env::colocated().await;
    let c = env.colocated.clone().unwrap();
    let p = u1_partition();
    let topic = env.name(Topic::Deliveries);
    let emit = Emit {
        topic: Topic::Deliveries,
        event: delivered_for(&fact(0), T0),
    };
    let encoded = clarion_runtime::runner::encode_emits(std::slice::from_ref(&emit));
    // One commit so the log knows the partition's end (offset 1 next).
    c.commit(
        WriteBatch::new(),
        &env.topics,
        vec![emit.clone()],
        encoded.clone(),
    )
    .await
    .unwrap();
    let raw = rusqlite::Connection::open(env.dir.path().join("clarion.db")).unwrap();
    raw.execute_batch("PRAGMA busy_timeout=10000").unwrap();
    let squat = |sql: &str| raw.execute(sql, rusqlite::params![topic, p]).unwrap();
    // One record, key "squatter", value 0x00, framed as the log frames a
    // batch: the codec byte (00, plain), then each length (u32, little
    // endian) before its bytes.
    let insert = concat!(
        "INSERT INTO record_batches (topic, partition, base_offset, count, ts, body)
         SELECT id, ?2, 1, 1, 0, x'",
        "00",
        "08000000",
        "7371756174746572",
        "01000000",
        "00",
        "' FROM topics WHERE name = ?1"
    );
    assert_eq!(squat(insert), 1);
    let state = RowKey::new(Table::SinkDeliveries, "acme", RECORDER, b"state".to_vec());
    let mut writes = WriteBatch::new();
    writes.put(state.clone(), Bytes::from_static(b"v"));

    // When: a commit writes state and emits the same event again.
    let failed = c
        .commit(
            writes.clone(),
            &env.topics,
            vec![emit.clone()],
            encoded.clone(),
        )
        .await;

    // Then: it fails as a whole: no state row, and the log holds only the
    // first emit and the squatter.
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(env.store.get(&state).await.unwrap(), None);
    assert_eq!(env.records(Topic::Deliveries, p, 0).await.len(), 2);

    // When: the squatter is gone and the commit is retried.
    let delete = "DELETE FROM record_batches WHERE partition = ?2 AND base_offset = 1
                  AND topic = (SELECT id FROM topics WHERE name = ?1)";
    assert_eq!(squat(delete), 1);
    c.commit(writes, &env.topics, vec![emit], encoded.clone())
        .await
        .unwrap();

    // Then: both committed, and the emit took offset 1: the failed attempt
    // left the log's notion of the partition's end where it was.
    assert_eq!(
        env.store.get(&state).await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    let recs = env.records(Topic::Deliveries, p, 0).await;
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(recs[1].value, encoded[0]);
}

// ---------------------------------------------------------------------------
// 4. Offsets.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_resumes_at_its_stored_offset() {
    // Given: a processor without dedup (so only the offset can prevent a
    // re-application) that processed N = 5 inputs in two batches.
    let mut env = Env::new().await;
    let p = u1_partition();
    let topic = Topic::Notifications;
    let behaviour = Behaviour::default();
    env.append(topic, &(0..5).map(fact).collect::<Vec<_>>())
        .await;
    let (proc_a, calls_a) = Recorder::new(behaviour.clone());
    let mut a = env.runner(proc_a, Arc::new(NoEffects), topic, p);
    a.start().await.unwrap();
    let recs = env.records(topic, p, 0).await;
    assert_eq!(recs.len(), 5);
    a.step(recs[..3].to_vec()).await.unwrap();
    assert_eq!(env.offset(RECORDER, topic, p).await, 3);
    a.step(recs[3..].to_vec()).await.unwrap();
    assert_eq!(*calls_a.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    drop(a);

    // When: the process restarts and a new runner starts.
    env.reopen();
    let (proc_b, calls_b) = Recorder::new(behaviour.clone());
    let mut b = env.runner(proc_b, Arc::new(NoEffects), topic, p);
    b.start().await.unwrap();

    // Then: its position is N.
    assert_eq!(env.offset(RECORDER, topic, p).await, 5);
    assert_eq!(committed_rows(&env).await, vec![0, 1, 2, 3, 4]);

    // When: the log re-delivers everything from 0, plus two new inputs.
    env.append(topic, &[fact(5), fact(6)]).await;
    b.step(env.records(topic, p, 0).await).await.unwrap();

    // Then: only the new inputs are applied.
    assert_eq!(*calls_b.lock().unwrap(), vec![5, 6]);
    assert_eq!(env.offset(RECORDER, topic, p).await, 7);
    drop(b);

    // When: a third incarnation runs with `run` and one more input arrives.
    let (proc_c, calls_c) = Recorder::new(behaviour);
    let c = env.runner(proc_c, Arc::new(NoEffects), topic, p);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(c.run(shutdown));
    env.append(topic, &[fact(7)]).await;
    wait_until(|| async { env.offset(RECORDER, topic, p).await == 8 }).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // Then: it started at 7 and applied only offset 7; every input was
    // applied exactly once overall, and the position is mirrored to the log.
    assert_eq!(*calls_c.lock().unwrap(), vec![7]);
    assert_eq!(committed_rows(&env).await, (0..8).collect::<Vec<u64>>());
    assert_eq!(
        env.log
            .committed_offset(RECORDER, &env.name(topic), p)
            .await
            .unwrap(),
        Some(8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_fenced_out_by_a_newer_owner_stops_without_committing() {
    // Given: runner a owns the partition (fencing on, as with group
    // assignment) and committed inputs 0..3.
    let env = Env::new().await;
    let p = u1_partition();
    let topic = Topic::Notifications;
    env.append(topic, &(0..3).map(fact).collect::<Vec<_>>())
        .await;
    let (proc_a, calls_a) = Recorder::new(Behaviour::default());
    let a = env
        .runner(proc_a, Arc::new(NoEffects), topic, p)
        .with_fencing();
    let (_stop_a, shutdown_a) = watch::channel(false);
    let task_a = tokio::spawn(a.run(shutdown_a));
    wait_until(|| async { env.offset(RECORDER, topic, p).await == 3 }).await;
    let epoch = RowKey::new(
        Table::ProcessorOffsets,
        SYSTEM_TENANT,
        &runner_key(&env, RECORDER, topic, p),
        b"owner".to_vec(),
    );
    let epoch_of = || async {
        env.store
            .get(&epoch)
            .await
            .unwrap()
            .map(|b| u64::from_be_bytes(b[..].try_into().unwrap()))
    };
    assert_eq!(epoch_of().await, Some(1));

    // When: runner b takes the partition over while a goes on (a process
    // that lost its partition without noticing), and inputs 3..6 arrive.
    let (proc_b, calls_b) = Recorder::new(Behaviour::default());
    let b = env
        .runner(proc_b, Arc::new(NoEffects), topic, p)
        .with_fencing();
    let (stop_b, shutdown_b) = watch::channel(false);
    let task_b = tokio::spawn(b.run(shutdown_b));
    wait_until(|| async { epoch_of().await == Some(2) }).await;
    env.append(topic, &(3..6).map(fact).collect::<Vec<_>>())
        .await;

    // Then: a's commit is refused and a stops by itself; b applies 3..6,
    // and each input is committed once.
    tokio::time::timeout(Duration::from_secs(30), task_a)
        .await
        .expect("the fenced runner stops by itself")
        .unwrap()
        .unwrap();
    wait_until(|| async { env.offset(RECORDER, topic, p).await == 6 }).await;
    stop_b.send(true).unwrap();
    task_b.await.unwrap().unwrap();
    assert_eq!(*calls_b.lock().unwrap(), vec![3, 4, 5]);
    assert_eq!(&calls_a.lock().unwrap()[..3], &[0, 1, 2]);
    assert_eq!(committed_rows(&env).await, (0..6).collect::<Vec<u64>>());
    assert_eq!(epoch_of().await, Some(2));
}

/// Waits (bounded) for asynchronous progress of a spawned runner. This polls
/// for completion of work, not for the passage of domain time.
async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 30s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// 5. Timers.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_exactly_when_due_and_only_once() {
    // Given: a processor that schedules, per input, a Delivered event for the
    // deliveries topic two hours after the batch's time.
    let mut env = Env::new().await;
    let p = u1_partition();
    let behaviour = Behaviour {
        timer: Some((TWO_HOURS, Topic::Deliveries)),
        ..Default::default()
    };
    env.append(Topic::Notifications, &[fact(0)]).await;
    let (proc_a, _) = Recorder::new(behaviour.clone());
    let mut a = env.runner(proc_a, Arc::new(NoEffects), Topic::Notifications, p);
    a.start().await.unwrap();
    a.step(env.records(Topic::Notifications, p, 0).await)
        .await
        .unwrap();
    let due = T0 + TWO_HOURS.as_millis() as i64;
    let expected = delivered_for(&fact(0), due);
    let key = runner_key(&env, RECORDER, Topic::Notifications, p);
    assert_eq!(
        env.timer_rows(&key).await,
        1,
        "the timer is committed with the batch"
    );

    // When/then: before the clock moves, nothing fires.
    assert_eq!(a.fire_timers().await.unwrap(), 0);
    assert!(env.events(Topic::Deliveries).await.is_empty());

    // When/then: one millisecond early, still nothing.
    env.clock.advance(TWO_HOURS - Duration::from_millis(1));
    assert_eq!(a.fire_timers().await.unwrap(), 0);
    assert!(env.events(Topic::Deliveries).await.is_empty());

    // Given: the process restarts before the timer is due (timers are state,
    // not memory).
    drop(a);
    env.reopen();
    let (proc_b, calls_b) = Recorder::new(behaviour);
    let mut b = env.runner(proc_b, Arc::new(NoEffects), Topic::Notifications, p);
    b.start().await.unwrap();
    assert_eq!(b.fire_timers().await.unwrap(), 0);

    // When: the due instant arrives.
    env.clock.advance(Duration::from_millis(1));
    assert_eq!(env.clock_now(), due);

    // Then: the timer fires once and its event is in the topic exactly once.
    assert_eq!(b.fire_timers().await.unwrap(), 1);
    assert_eq!(env.events(Topic::Deliveries).await, vec![expected.clone()]);
    assert_eq!(env.timer_rows(&key).await, 0, "a fired timer is deleted");

    // When/then: firing again (even much later) fires nothing.
    assert_eq!(b.fire_timers().await.unwrap(), 0);
    env.clock.advance(TWO_HOURS);
    assert_eq!(b.fire_timers().await.unwrap(), 0);
    assert_eq!(env.events(Topic::Deliveries).await, vec![expected]);
    assert!(calls_b.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// 6. Poison.
// ---------------------------------------------------------------------------

/// Fixed pseudo-random bytes (xorshift), so a failure reproduces.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_stops_the_partition_at_its_offset() {
    // Given: a good input (offset 0), random bytes (offset 1) and another good
    // input (offset 2) on one partition.
    let mut env = Env::new().await;
    let p = u1_partition();
    let topic = Topic::Triggers;
    let junk = garbage(97);
    let reason = Event::decode(&junk)
        .expect_err("the junk must not decode")
        .to_string();
    env.append(topic, &[fact(0)]).await;
    let at = env
        .log
        .append(
            &env.name(topic),
            vec![Record::new(recipient_key(&acme(), "u1"), junk)],
        )
        .await
        .unwrap();
    assert_eq!((at[0].partition, at[0].offset), (p, 1));
    env.append(topic, &[fact(2)]).await;
    let behaviour = Behaviour {
        dedup: true,
        emit_to: Some(Topic::Deliveries),
        ..Default::default()
    };

    // When: a batch holding all three is stepped.
    let (proc_a, calls_a) = Recorder::new(behaviour.clone());
    let mut a = env.runner(proc_a, Arc::new(NoEffects), topic, p);
    a.start().await.unwrap();
    let err = a
        .step(env.records(topic, p, 0).await)
        .await
        .expect_err("poison stops the step");

    // Then: the error names offset 1; the good prefix (offset 0) is applied
    // and committed whole, and nothing at or past the poison is: the stored
    // position is exactly the poison's offset.
    match err {
        ProcessError::Poison { offset, reason: r } => {
            assert_eq!(offset, 1);
            assert_eq!(r, reason);
        }
        other => panic!("expected Poison, got {other:?}"),
    }
    assert_eq!(*calls_a.lock().unwrap(), vec![0]);
    assert_eq!(env.offset(RECORDER, topic, p).await, 1);
    assert_eq!(committed_rows(&env).await, vec![0]);
    assert_eq!(
        env.events(Topic::Deliveries).await,
        vec![delivered_for(&fact(0), T0)]
    );

    // When: the rest is stepped again
    let err = a.step(env.records(topic, p, 1).await).await.unwrap_err();

    // Then: the partition stays stopped exactly at offset 1.
    assert!(
        matches!(err, ProcessError::Poison { offset: 1, .. }),
        "{err:?}"
    );
    assert_eq!(env.offset(RECORDER, topic, p).await, 1);
    assert_eq!(committed_rows(&env).await, vec![0]);
    drop(a);

    // When: the process restarts and tries again.
    env.reopen();
    let (proc_b, calls_b) = Recorder::new(behaviour);
    let mut b = env.runner(proc_b, Arc::new(NoEffects), topic, p);
    b.start().await.unwrap();
    let err = b.step(env.records(topic, p, 0).await).await.unwrap_err();

    // Then: same stop, same position; offset 2 was never applied.
    assert!(
        matches!(err, ProcessError::Poison { offset: 1, .. }),
        "{err:?}"
    );
    assert_eq!(env.offset(RECORDER, topic, p).await, 1);
    assert!(calls_b.lock().unwrap().is_empty());
    assert_eq!(committed_rows(&env).await, vec![0]);
    assert_eq!(
        env.events(Topic::Deliveries).await,
        vec![delivered_for(&fact(0), T0)]
    );
}

/// Parks a record as an operator does (the gateway's `Park` writes this).
async fn park(env: &Env, topic: Topic, partition: u32, offset: u64) {
    clarion_runtime::quarantine::park(
        &*env.store,
        &pb::RecordQuarantined {
            processor: RECORDER.into(),
            topic: env.name(topic),
            partition,
            offset,
            note: "test".into(),
            actor: "operator:test".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn run_stops_and_goes_on_once_parked(colocated: bool) {
    use clarion_runtime::quarantine::{self, PartitionReport};
    // Given: on one partition a good input (0), random bytes (1), a good
    // input (2), an input the processor refuses (3) and a good one (4)
    let env = if colocated {
        Env::colocated().await
    } else {
        Env::new().await
    };
    let p = u1_partition();
    let topic = Topic::Triggers;
    env.append(topic, &[fact(0)]).await;
    env.log
        .append(
            &env.name(topic),
            vec![Record::new(recipient_key(&acme(), "u1"), garbage(41))],
        )
        .await
        .unwrap();
    env.append(topic, &[fact(2), fact(3), fact(4)]).await;
    let behaviour = Behaviour {
        dedup: true,
        emit_to: Some(Topic::Deliveries),
        refuse: Some(3),
        ..Default::default()
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let make = {
        let calls = calls.clone();
        move || Recorder {
            behaviour: behaviour.clone(),
            calls: calls.clone(),
        }
    };
    let report = PartitionReport::default();
    let key = runner_key(&env, RECORDER, topic, p);
    let runner = env
        .runner(make(), Arc::new(NoEffects), topic, p)
        .with_restart(Arc::new(make))
        .with_report(report.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runner.run(stop_rx));

    // When: it runs, it stops at offset 1 and says so (its report, the
    // store's stop row); offset 0 is applied, nothing past 1 is
    let stopped_at = |offset: u64| {
        let (report, store, key) = (report.clone(), env.store.clone(), key.clone());
        async move {
            let here = report.snapshot();
            let stored = quarantine::stop_of(&*store, &key).await.unwrap();
            here.len() == 1
                && here[0].state == "stopped"
                && here[0].offset == offset
                && stored.is_some_and(|s| s.offset == offset)
        }
    };
    wait_until(|| stopped_at(1)).await;
    assert_eq!(env.offset(RECORDER, topic, p).await, 1);
    assert_eq!(committed_rows(&env).await, vec![0]);
    let stop = quarantine::stop_of(&*env.store, &key)
        .await
        .unwrap()
        .unwrap();
    assert!(stop.reason.contains("malformed event envelope"), "{stop:?}");

    // When: the operator parks offset 1; then it goes on to 2 and stops at
    // the input the processor refuses
    park(&env, topic, p, 1).await;
    wait_until(|| stopped_at(3)).await;
    assert_eq!(env.offset(RECORDER, topic, p).await, 3);
    assert_eq!(committed_rows(&env).await, vec![0, 2]);
    let stop = quarantine::stop_of(&*env.store, &key)
        .await
        .unwrap()
        .unwrap();
    assert!(stop.reason.contains("the recorder refuses it"), "{stop:?}");

    // When: that is parked too; then 4 is applied, nothing is stopped, and
    // exactly 0, 2 and 4 were applied once each (no skip but the parked)
    park(&env, topic, p, 3).await;
    wait_until(|| async { env.offset(RECORDER, topic, p).await == 5 }).await;
    wait_until(|| async { report.snapshot().is_empty() }).await;
    assert_eq!(committed_rows(&env).await, vec![0, 2, 4]);
    assert!(quarantine::stopped(&*env.store).await.unwrap().is_empty());
    assert_eq!(
        quarantine::parked_offsets(&*env.store, &key).await.unwrap(),
        [1, 3].into_iter().collect()
    );
    // (Without the colocated log, emits are published after the commit.)
    wait_until(|| async { env.events(Topic::Deliveries).await.len() >= 3 }).await;
    let mut delivered: Vec<Id> = env
        .events(Topic::Deliveries)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    delivered.sort();
    let mut expected: Vec<Id> = [0, 2, 4]
        .into_iter()
        .map(|n| delivered_for(&fact(n), T0).id)
        .collect();
    expected.sort();
    assert_eq!(delivered, expected);
    let _ = stop_tx.send(true);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_partition_stops_at_poison_and_goes_on_past_what_is_parked() {
    run_stops_and_goes_on_once_parked(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_colocated_partition_stops_at_poison_and_goes_on_past_what_is_parked() {
    run_stops_and_goes_on_once_parked(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_that_does_not_clear_stops_the_partition_after_its_retries() {
    use clarion_runtime::quarantine::{self, PartitionReport};
    // Given: inputs 0, 1 (whose processing always fails with a store error)
    // and 2, an unknown event type (3) and 4
    let env = Env::colocated().await;
    let p = u1_partition();
    let topic = Topic::Triggers;
    env.append(topic, &[fact(0), fact(1), fact(2)]).await;
    let mut unknown = <pb::EventEnvelope as prost::Message>::decode(&fact(3).encode()[..]).unwrap();
    unknown.event_type = "clarion.notification.from_the_future.v9".into();
    env.log
        .append(
            &env.name(topic),
            vec![Record::new(
                recipient_key(&acme(), "u1"),
                prost::Message::encode_to_vec(&unknown),
            )],
        )
        .await
        .unwrap();
    env.append(topic, &[fact(4)]).await;
    let behaviour = Behaviour {
        store_error: Some(1),
        ..Default::default()
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let make = {
        let calls = calls.clone();
        move || Recorder {
            behaviour: behaviour.clone(),
            calls: calls.clone(),
        }
    };
    let report = PartitionReport::default();
    let key = runner_key(&env, RECORDER, topic, p);
    let cfg = RunnerConfig {
        retry_limit: 3,
        retry_backoff_max: Duration::from_millis(5),
        quarantine_poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    };
    let runner = PartitionRunner::new(
        make(),
        Arc::new(NoEffects),
        env.log.clone(),
        env.store.clone(),
        env.topics.clone(),
        topic,
        p,
        Arc::new(env.clock.clone()),
        cfg,
    )
    .with_colocated(env.colocated.clone().unwrap())
    .with_restart(Arc::new(make))
    .with_report(report.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runner.run(stop_rx));

    // When: it runs: after its retries (then one record a batch, to find
    // the record that fails) it stops exactly at 1; 0 is committed
    let stopped = |store: Arc<dyn Store>, key: String| async move {
        quarantine::stop_of(&*store, &key).await.unwrap()
    };
    wait_until(|| async { stopped(env.store.clone(), key.clone()).await.is_some() }).await;
    let stop = stopped(env.store.clone(), key.clone()).await.unwrap();
    assert_eq!(stop.offset, 1, "{stop:?}");
    assert!(stop.reason.contains("disk I/O error"), "{stop:?}");
    assert!(
        stop.reason.contains("still failing after 3 retries"),
        "{stop:?}"
    );
    assert_eq!(env.offset(RECORDER, topic, p).await, 1);
    assert_eq!(committed_rows(&env).await, vec![0]);

    // When: the operator parks 1; then it applies 2 and stops at the
    // unknown event type
    park(&env, topic, p, 1).await;
    wait_until(|| async {
        stopped(env.store.clone(), key.clone())
            .await
            .is_some_and(|s| s.offset == 3)
    })
    .await;
    let stop = stopped(env.store.clone(), key.clone()).await.unwrap();
    assert!(stop.reason.contains("unknown event type"), "{stop:?}");
    assert_eq!(committed_rows(&env).await, vec![0, 2]);

    // When: that is parked too; then it goes on to the end, and exactly the
    // parked records were skipped
    park(&env, topic, p, 3).await;
    wait_until(|| async { env.offset(RECORDER, topic, p).await == 5 }).await;
    assert_eq!(committed_rows(&env).await, vec![0, 2, 4]);
    assert_eq!(
        quarantine::parked_offsets(&*env.store, &key).await.unwrap(),
        [1, 3].into_iter().collect()
    );
    assert!(quarantine::stopped(&*env.store).await.unwrap().is_empty());
    wait_until(|| async { report.snapshot().is_empty() }).await;
    let _ = stop_tx.send(true);
    task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------
// 7. Pipelined commits (colocated `run` decides a batch while the previous
//    one commits).
// ---------------------------------------------------------------------------

const COUNTER: &str = "counter";

/// Keeps one running count per partition in a state row and records, per
/// input, the count it assigned: a batch that read state without the
/// previous, still-committing batch's writes would assign a count twice.
struct Counter {
    assigned: Arc<Mutex<Vec<(u64, u64)>>>,
}

fn counter_key() -> RowKey {
    RowKey::new(Table::SinkDeliveries, "acme", COUNTER, Vec::new())
}

#[async_trait]
impl Processor for Counter {
    fn name(&self) -> &'static str {
        COUNTER
    }

    fn dedup(&self) -> bool {
        true
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut count = match store.get(&counter_key()).await? {
            Some(v) => u64::from_be_bytes(v[..].try_into().expect("8 bytes")),
            None => 0,
        };
        for input in inputs {
            count += 1;
            self.assigned.lock().unwrap().push((input.offset, count));
        }
        batch
            .writes
            .put(counter_key(), Bytes::copy_from_slice(&count.to_be_bytes()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_read_the_state_and_dedup_rows_of_the_batch_still_committing() {
    // Given: on the embedded default (log and store in one file), 300 inputs
    // of which the last 100 repeat events 100..200 (a producer retry), read
    // in batches of 7, so each batch is decided while the one before commits.
    let env = Env::colocated().await;
    let p = u1_partition();
    let topic = Topic::Notifications;
    let mut events: Vec<Event> = (0..200).map(fact).collect();
    events.extend((100..200).map(fact));
    env.append(topic, &events).await;
    let assigned = Arc::new(Mutex::new(Vec::new()));
    let runner = PartitionRunner::new(
        Counter {
            assigned: assigned.clone(),
        },
        Arc::new(NoEffects),
        env.log.clone(),
        env.store.clone(),
        env.topics.clone(),
        topic,
        p,
        Arc::new(env.clock.clone()),
        RunnerConfig {
            max_batch: 7,
            ..RunnerConfig::default()
        },
    )
    .with_colocated(env.colocated.clone().unwrap());

    // When: it runs until its position passes every input.
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(runner.run(shutdown));
    wait_until(|| async { env.offset(COUNTER, topic, p).await == 300 }).await;
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    // Then: each distinct event counted once, in order, and none repeated.
    let assigned = assigned.lock().unwrap().clone();
    let expected: Vec<(u64, u64)> = (0..200).map(|i| (i, i + 1)).collect();
    assert_eq!(assigned, expected);
    let stored = env.store.get(&counter_key()).await.unwrap().unwrap();
    assert_eq!(stored[..], 200u64.to_be_bytes());
}
