//! The router's test bench over the real embedded parts: the log and the
//! store in one SQLite file (the default), projector and router runners
//! stepped by hand on a manual clock. Shared by the router's scenario tests
//! (each adds its own steps in an `impl Env` of its own).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use clarion_domain::Event;
use clarion_log::{EventLog, Record};
use clarion_runtime::colocated::Colocated;
use clarion_runtime::processor::NoEffects;
use clarion_runtime::projector::Projector;
use clarion_runtime::router::Router;
use clarion_runtime::{ManualClock, PartitionRunner, RunnerConfig, Topic, Topics};
use clarion_store::Store;
use tempfile::TempDir;

pub const T0: i64 = 1_700_000_000_000;
pub const PARTITIONS: u32 = 2;

pub struct Env {
    pub _dir: TempDir,
    pub colocated: Arc<Colocated>,
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    pub topics: Topics,
    pub clock: ManualClock,
    /// One router per partition of the recipient streams.
    pub routers: Vec<PartitionRunner<Router>>,
    pub config: PartitionRunner<Projector>,
    /// Events appended so far, to make ids unique.
    pub seq: u32,
    /// Crypto-shredding for the routers (issue #32), when a test sets it
    /// before `restart_routers`.
    pub personal: Option<Arc<clarion_runtime::personal::Personal>>,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clarion.db");
        let colocated = Arc::new(Colocated::open(path.to_str().unwrap()).expect("open"));
        let (log, store) = (colocated.log(), colocated.store());
        let mut topics = Topics::new("test.", PARTITIONS);
        topics.ensure(&*log).await.expect("create topics");
        let clock = ManualClock::new(T0);
        let mut env = Env {
            config: PartitionRunner::new(
                Projector,
                Arc::new(NoEffects),
                log.clone(),
                store.clone(),
                topics.clone(),
                Topic::Config,
                0,
                Arc::new(clock.clone()),
                RunnerConfig::default(),
            )
            .with_colocated(colocated.clone()),
            _dir: dir,
            colocated,
            log,
            store,
            topics,
            clock,
            routers: Vec::new(),
            seq: 0,
            personal: None,
        };
        env.restart_routers().await;
        env.config.start().await.expect("projector starts");
        env
    }

    /// New routers (cold memory), as after a restart of the process.
    pub async fn restart_routers(&mut self) {
        self.routers.clear();
        for p in 0..PARTITIONS {
            let mut router = Router::new(HashMap::new()).with_partitions(PARTITIONS);
            if let Some(p) = &self.personal {
                router = router.with_personal(p.clone());
            }
            let mut r = PartitionRunner::new(
                router,
                Arc::new(NoEffects),
                self.log.clone(),
                self.store.clone(),
                self.topics.clone(),
                Topic::Triggers,
                p,
                Arc::new(self.clock.clone()),
                RunnerConfig::default(),
            )
            .with_colocated(self.colocated.clone())
            .with_inputs(&[Topic::Deliveries]);
            if let Some(p) = &self.personal {
                r = r.with_personal(p.clone()); // seals what the router emits
            }
            r.start().await.expect("router starts");
            self.routers.push(r);
        }
    }

    pub async fn append(&self, topic: Topic, events: &[Event]) {
        let recs = events
            .iter()
            .map(|e| Record {
                key: e.partition_key.clone(),
                value: Bytes::from(e.encode()),
                index: clarion_runtime::projector::event_history_index(e),
            })
            .collect();
        self.log
            .append(&self.topics.name(topic), recs)
            .await
            .expect("append");
    }

    pub async fn records(&self, topic: Topic, partition: u32) -> Vec<clarion_log::LogRecord> {
        self.log
            .read(&self.topics.name(topic), partition, 0, 100_000)
            .await
            .expect("read")
    }

    pub async fn events(&self, topic: Topic) -> Vec<Event> {
        let mut out = Vec::new();
        for p in 0..self.topics.partitions_of(topic) {
            for r in self.records(topic, p).await {
                out.push(Event::decode(&r.value).expect("decodes"));
            }
        }
        out
    }

    /// Appends configuration and projects it.
    pub async fn configure(&mut self, events: Vec<Event>) {
        self.append(Topic::Config, &events).await;
        let recs = self.records(Topic::Config, 0).await;
        self.config.step(recs).await.expect("projects");
    }
}

/// A config event of tenant `t` (templates, workflows, settings), logged a
/// minute before `T0`; `tag` makes its id.
pub fn config_event(
    t: &clarion_domain::TenantId,
    tag: &str,
    payload: clarion_domain::Payload,
) -> Event {
    Event {
        id: clarion_domain::Id::derive(&[b"config", t.as_str().as_bytes(), tag.as_bytes()]),
        tenant: t.clone(),
        partition_key: clarion_domain::ids::tenant_key(t),
        occurred_at_ms: T0 - 60_000,
        causation_id: None,
        correlation_id: None,
        actor: clarion_domain::Actor::Operator("op-1".into()),
        payload,
    }
}
