//! A batch's effects no longer hold the partition: a later batch's effects
//! run and finish while an earlier one's hang, and the exactly-once recipe
//! holds: a row leaves the outbox only when its effects finished, and a
//! restart runs again exactly what had not. Real SQLite log and store in one
//! file (the embedded default), the runner's own `run` loop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::ids::recipient_key;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::Record;
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::{
    Batch, Effects, Emit, Input, ManualClock, PartitionRunner, ProcessError, Processor,
    RunnerConfig, Topic, Topics,
};
use clarion_store::{Scan, Store, Table, SYSTEM_TENANT};
use tokio::sync::{watch, Semaphore};

/// One effect per input: the notification id.
struct OneEffectEach;

#[async_trait]
impl Processor for OneEffectEach {
    fn name(&self) -> &'static str {
        "fx"
    }

    async fn process(
        &mut self,
        _store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        for i in inputs {
            let nid = i.event.payload.notification_id().unwrap_or_default();
            batch.effects.push(Bytes::copy_from_slice(nid.as_bytes()));
        }
        Ok(())
    }
}

/// Records effects as they start and finish; `slow` waits for a permit.
struct Gated {
    started: Mutex<Vec<String>>,
    finished: Mutex<Vec<String>>,
    gate: Semaphore,
}

impl Gated {
    fn new(open: bool) -> Arc<Gated> {
        Arc::new(Gated {
            started: Mutex::default(),
            finished: Mutex::default(),
            gate: Semaphore::new(if open { 1_000 } else { 0 }),
        })
    }

    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }

    fn finished(&self) -> Vec<String> {
        self.finished.lock().unwrap().clone()
    }
}

#[async_trait]
impl Effects for Gated {
    async fn run(&self, effect: &[u8], _now_ms: i64) -> Vec<Emit> {
        let name = String::from_utf8_lossy(effect).to_string();
        self.started.lock().unwrap().push(name.clone());
        if name == "slow" {
            let _ = self.gate.acquire().await.unwrap();
        }
        self.finished.lock().unwrap().push(name);
        Vec::new()
    }
}

fn event(nid: &str) -> Event {
    let tenant = TenantId::parse("acme").unwrap();
    Event {
        id: Id::derive(&[nid.as_bytes()]),
        partition_key: recipient_key(&tenant, "u1"),
        tenant,
        occurred_at_ms: 0,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("test".into()),
        payload: Payload::Sent(pb::NotificationSent {
            notification_id: nid.into(),
            attempt_id: "a".into(),
            provider: "test".into(),
            provider_message_id: String::new(),
            context: None,
        }),
    }
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    // A stall bound, not a timing assertion: each step takes milliseconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn outbox_rows(store: &dyn Store, topics: &Topics) -> usize {
    let key = format!("fx/{}/0", topics.name(Topic::Triggers));
    store
        .scan(&Scan::partition(Table::Outbox, SYSTEM_TENANT, &key, 100))
        .await
        .unwrap()
        .len()
}

fn runner(c: &Arc<Colocated>, topics: &Topics, fx: Arc<Gated>) -> PartitionRunner<OneEffectEach> {
    PartitionRunner::new(
        OneEffectEach,
        fx,
        c.log(),
        c.store(),
        topics.clone(),
        Topic::Triggers,
        0,
        Arc::new(ManualClock::new(0)),
        RunnerConfig {
            poll_wait: Duration::from_millis(5),
            ..RunnerConfig::default()
        },
    )
    .with_colocated(c.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_effect_holds_only_its_own_batch_and_is_redone_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db").display().to_string();
    let c = Arc::new(Colocated::open(&path).unwrap());
    let mut topics = Topics::new("t.", 1);
    topics.ensure(&*c.log()).await.unwrap();
    let append = |nid: &str| {
        let (log, name, e) = (c.log(), topics.name(Topic::Triggers), event(nid));
        async move {
            log.append(
                &name,
                vec![Record {
                    key: e.partition_key.clone(),
                    value: Bytes::from(e.encode()),
                    index: None,
                }],
            )
            .await
            .unwrap();
        }
    };

    let fx = Gated::new(false);
    let (stop, rx) = watch::channel(false);
    let first = tokio::spawn(runner(&c, &topics, fx.clone()).run(rx));
    append("slow").await;
    until("the slow effect to start", || fx.started() == ["slow"]).await;
    append("fast").await;
    until("the later batch's effect to finish", || {
        fx.finished() == ["fast"]
    })
    .await;
    assert_eq!(
        outbox_rows(&*c.store(), &topics).await,
        1,
        "the slow batch's row stays until its effect finished; the fast one's is gone"
    );

    // The process dies with the slow effect unfinished.
    first.abort();
    let _ = first.await;
    drop(stop);
    assert_eq!(outbox_rows(&*c.store(), &topics).await, 1);

    // A new runner redoes exactly the unfinished effect, then deletes its row.
    let again = Gated::new(true);
    let mut r = runner(&c, &topics, again.clone());
    r.start().await.unwrap();
    assert_eq!(again.finished(), ["slow"], "only what had not finished");
    assert_eq!(outbox_rows(&*c.store(), &topics).await, 0);
}
