//! The alerts role over the real embedded parts: provider outcomes appended
//! to a SQLite log on two partitions, counted by `AlertCounter` runners into
//! a SQLite store, judged by the `Evaluator` on a manual clock. The sink is
//! a recorder (the HTTP sinks are tested end to end in the `clarion`
//! crate's `e2e_alerts`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::ids::recipient_key;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::embedded::SqliteLog;
use clarion_log::{EventLog, Record};
use clarion_proto::events as pb;
use clarion_runtime::alerts::{
    Alert, AlertCounter, AlertSink, Evaluator, EvaluatorConfig, MINUTE_MS,
};
use clarion_runtime::processor::NoEffects;
use clarion_runtime::{ManualClock, PartitionRunner, RunnerConfig, Topic, Topics};
use clarion_store::embedded::SqliteStore;
use clarion_store::Store;

/// A whole minute (2023-11-14T22:14:00Z).
const T0: i64 = 1_700_000_040_000;
const PARTITIONS: u32 = 2;

#[derive(Default, Clone)]
struct Recorder {
    alerts: Arc<Mutex<Vec<Alert>>>,
    /// Fail this many sends first.
    failures: Arc<Mutex<u32>>,
}

#[async_trait]
impl AlertSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn send(&self, alert: &Alert) -> Result<(), String> {
        let mut f = self.failures.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            return Err("receiver down".into());
        }
        self.alerts.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    topics: Topics,
    clock: ManualClock,
    runners: Vec<(u32, PartitionRunner<AlertCounter>)>,
    seq: u64,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
        let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(&path("log.db")).unwrap());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path("store.db")).unwrap());
        let mut topics = Topics::new("t.", PARTITIONS);
        topics.ensure(&*log).await.unwrap();
        let clock = ManualClock::new(T0);
        let mut runners = Vec::new();
        for p in 0..PARTITIONS {
            let mut r = PartitionRunner::new(
                AlertCounter::new(),
                Arc::new(NoEffects),
                log.clone(),
                store.clone(),
                topics.clone(),
                Topic::Deliveries,
                p,
                Arc::new(clock.clone()),
                RunnerConfig::default(),
            );
            r.start().await.unwrap();
            runners.push((p, r));
        }
        Env {
            _dir: dir,
            log,
            store,
            topics,
            clock,
            runners,
            seq: 0,
        }
    }

    fn evaluator(&self, sink: &Recorder) -> Evaluator {
        Evaluator::new(
            self.store.clone(),
            self.log.clone(),
            self.topics.clone(),
            Arc::new(self.clock.clone()),
            EvaluatorConfig {
                runbook_base_url: "https://runbooks.test/".into(),
                ..EvaluatorConfig::default()
            },
            vec![Arc::new(sink.clone())],
        )
    }

    /// One minute of a tenant's outcomes on `provider`, spread over
    /// subscribers (so over both partitions), in the minute starting `at`.
    async fn minute(&mut self, tenant: &str, provider: &str, at: i64, ok: u32, failed: u32) {
        let tid = TenantId::parse(tenant).unwrap();
        let mut events = Vec::new();
        for i in 0..ok + failed {
            self.seq += 1;
            let nid = Id::time_ordered(at, &[&self.seq.to_le_bytes()]).to_hex();
            let key = recipient_key(&tid, &format!("s{}", self.seq % 7));
            let when = at + 100 + i64::from(i);
            let ev = |n: u64, payload: Payload| Event {
                id: Id::derive(&[&self.seq.to_le_bytes(), &n.to_le_bytes()]),
                tenant: tid.clone(),
                partition_key: key.clone(),
                occurred_at_ms: when,
                causation_id: None,
                correlation_id: None,
                actor: Actor::System("dispatcher".into()),
                payload,
            };
            if i < ok {
                events.push(ev(
                    0,
                    Payload::Sent(pb::NotificationSent {
                        notification_id: nid.clone(),
                        provider: provider.into(),
                        ..Default::default()
                    }),
                ));
                events.push(ev(
                    1,
                    Payload::Delivered(pb::NotificationDelivered {
                        notification_id: nid,
                        provider: provider.into(),
                        ..Default::default()
                    }),
                ));
            } else {
                events.push(ev(
                    2,
                    Payload::Failed(pb::NotificationFailed {
                        notification_id: nid,
                        provider: provider.into(),
                        stage: "dispatch".into(),
                        reason: "503".into(),
                        ..Default::default()
                    }),
                ));
            }
        }
        let recs = events
            .iter()
            .map(|e| Record::new(e.partition_key.clone(), Bytes::from(e.encode())))
            .collect();
        self.log
            .append(&self.topics.name(Topic::Deliveries), recs)
            .await
            .unwrap();
    }

    /// Every counter runner applies what its partition holds.
    async fn count(&mut self) {
        for (p, r) in &mut self.runners {
            let from = clarion_runtime::runner::stored_offset(
                &*self.store,
                "alerts",
                &self.topics.name(Topic::Deliveries),
                *p,
            )
            .await
            .unwrap();
            let recs = self
                .log
                .read(&self.topics.name(Topic::Deliveries), *p, from, 100_000)
                .await
                .unwrap();
            if !recs.is_empty() {
                r.step(recs).await.unwrap();
            }
        }
    }

    async fn anomalies(&self) -> Vec<(String, pb::AnomalyDetected)> {
        let mut out = Vec::new();
        let name = self.topics.name(Topic::Notifications);
        for p in 0..PARTITIONS {
            for r in self.log.read(&name, p, 0, 100_000).await.unwrap() {
                let e = Event::decode(&r.value).unwrap();
                if let Payload::AnomalyDetected(a) = e.payload {
                    out.push((e.tenant.to_string(), a));
                }
            }
        }
        out
    }
}

/// 40 steady minutes of two tenants: `busy` on `smtp` (100 a minute, 2
/// failing), `quiet` on `sms` (3 a minute); then `busy`'s smtp fails 40 % for
/// 5 minutes and `quiet`'s sms fails everything.
#[tokio::test]
async fn a_provider_drop_alerts_once_and_a_quiet_tenant_never() {
    let mut env = Env::new().await;
    let sink = Recorder::default();
    let eval = env.evaluator(&sink);
    // The first tick places the cursor: minutes from T0 on are judged.
    assert_eq!(eval.tick().await.unwrap(), 0);
    for m in 0..45 {
        let at = T0 + m * MINUTE_MS;
        let (busy_failed, quiet_failed) = if m < 40 { (2, 0) } else { (40, 3) };
        env.minute("busy", "smtp", at, 100 - busy_failed, busy_failed)
            .await;
        env.minute("quiet", "sms", at, 3 - quiet_failed, quiet_failed)
            .await;
    }
    env.count().await;
    env.clock.set(T0 + 45 * MINUTE_MS + 10_000);
    // From the minute before T0 (it had not closed at the first tick).
    assert_eq!(eval.tick().await.unwrap(), 46);

    // One outage, one alert: smtp's delivery rate leads; its failure rate
    // and the tenant's two detections are told with it.
    let alerts = sink.alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(
        (
            a.tenant.as_str(),
            a.anomaly.series.as_str(),
            a.anomaly.signal.as_str()
        ),
        ("busy", "provider:smtp", "delivery_rate")
    );
    assert_eq!(a.anomaly.minute_start_ms, T0 + 40 * MINUTE_MS);
    assert_eq!(a.anomaly.provider, "smtp");
    assert!((a.anomaly.observed - 0.6).abs() < 1e-9 && a.anomaly.z_score < -4.0);
    assert_eq!(a.runbook_url, "https://runbooks.test/delivery-rate-drop.md");
    let mut related: Vec<_> = a
        .related
        .iter()
        .map(|r| (r.series.as_str(), r.signal.as_str()))
        .collect();
    related.sort();
    assert_eq!(
        related,
        [
            ("provider:smtp", "failure_rate"),
            ("tenant", "delivery_rate"),
            ("tenant", "failure_rate"),
        ]
    );

    // Every detection is in the log once: the lead, the 3 grouped with it,
    // and the 4 minutes × 4 detectors the cool-down kept quiet. None of the
    // quiet tenant.
    let logged = env.anomalies().await;
    assert!(logged.iter().all(|(t, _)| t == "busy"));
    let lead = &a.anomaly.alert_id;
    assert_eq!(logged.iter().filter(|(_, x)| x.alerted).count(), 1);
    assert_eq!(
        logged
            .iter()
            .filter(|(_, x)| &x.grouped_into == lead)
            .count(),
        3
    );
    assert_eq!(
        logged
            .iter()
            .filter(|(_, x)| !x.alerted && x.grouped_into.is_empty())
            .count(),
        16
    );

    // Judged minutes are not judged again.
    assert_eq!(eval.tick().await.unwrap(), 0);
    assert_eq!(sink.alerts.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failing_sink_is_retried_with_the_same_alert() {
    let mut env = Env::new().await;
    let sink = Recorder::default();
    let eval = env.evaluator(&sink);
    eval.tick().await.unwrap();
    for m in 0..31 {
        let failed = if m < 30 { 1 } else { 60 };
        env.minute("busy", "push", T0 + m * MINUTE_MS, 100 - failed, failed)
            .await;
    }
    env.count().await;
    *sink.failures.lock().unwrap() = 100;
    env.clock.set(T0 + 31 * MINUTE_MS + 10_000);
    eval.tick().await.unwrap();
    assert!(sink.alerts.lock().unwrap().is_empty());
    let logged = env.anomalies().await.len();
    assert_eq!(logged, 4, "delivery and failure rate, tenant and provider");
    // The receiver is back: the alert arrives once, the log is not repeated.
    *sink.failures.lock().unwrap() = 0;
    eval.tick().await.unwrap();
    eval.tick().await.unwrap();
    let got = sink.alerts.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].anomaly.provider, "push");
    assert_eq!(got[0].related.len(), 3);
    assert_eq!(env.anomalies().await.len(), logged);
}
