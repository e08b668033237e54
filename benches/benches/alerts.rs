//! The alerts role's cost (issue #30, docs/alerts.md).
//!
//! - `alerts/counter/4096`: `AlertCounter::process` on a batch of 4,096
//!   provider outcomes (sent, delivered, failed) of 20 tenants on 3
//!   providers over 2 minutes, as the runner hands it a deliveries batch:
//!   the counts are read from a SQLite file (`get_many`, rows present after
//!   the first batch) and the batch's writes built, not committed (the
//!   runner commits them). Throughput in events per second.
//! - `alerts/detector/1000`: `anomaly::observe` of one minute for 1,000
//!   warmed-up series (four signals each). Throughput in series-minutes per
//!   second.
//!
//!     cargo bench -p clarion-bench --bench alerts -- --warm-up-time 1 --measurement-time 3

use std::sync::Arc;

use clarion_domain::anomaly::{self, DetectorConfig, MinuteCounts, SeriesState};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::alerts::AlertCounter;
use clarion_runtime::{Batch, Input, Processor};
use clarion_store::embedded::SqliteStore;
use clarion_store::Store;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCH: usize = 4096;
const T0: i64 = 1_700_000_040_000;

fn outcomes() -> Vec<Input> {
    let providers = ["smtp", "twilio", "webhook"];
    (0..BATCH)
        .map(|i| {
            let tenant = TenantId::parse(&format!("t{}", i % 20)).unwrap();
            let at = T0 + (i as i64 * 120_000 / BATCH as i64);
            let nid = Id::time_ordered(at - 150, &[&i.to_le_bytes()]).to_hex();
            let provider = providers[i % 3].to_string();
            let payload = match i % 10 {
                0 => Payload::Failed(pb::NotificationFailed {
                    notification_id: nid,
                    provider,
                    stage: "dispatch".into(),
                    ..Default::default()
                }),
                1..=5 => Payload::Sent(pb::NotificationSent {
                    notification_id: nid,
                    provider,
                    ..Default::default()
                }),
                _ => Payload::Delivered(pb::NotificationDelivered {
                    notification_id: nid,
                    provider,
                    ..Default::default()
                }),
            };
            let event = Event {
                id: Id::derive(&[&i.to_le_bytes()]),
                partition_key: format!("{tenant}/s{i}"),
                tenant,
                occurred_at_ms: at,
                causation_id: None,
                correlation_id: None,
                actor: Actor::System("dispatcher".into()),
                payload,
            };
            Input {
                offset: i as u64,
                raw: event.encode().into(),
                event,
            }
        })
        .collect()
}

fn counter(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    let inputs = outcomes();
    // One committed batch: later ones read rows that exist, as in a run.
    rt.block_on(async {
        let mut batch = Batch::default();
        AlertCounter::new()
            .process(&*store, &mut batch, &inputs)
            .await
            .unwrap();
        store.write(batch.writes).await.unwrap();
    });
    let mut g = c.benchmark_group("alerts");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("counter/4096", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut batch = Batch::default();
                AlertCounter::new()
                    .process(&*store, &mut batch, &inputs)
                    .await
                    .unwrap();
                batch.writes.len()
            })
        })
    });
    g.finish();
}

fn detector(c: &mut Criterion) {
    let cfg = DetectorConfig::default();
    let minute = |m: i64| MinuteCounts {
        attempts: 100,
        delivered: 97 + (m % 3) as u64,
        failed: 3 - (m % 3) as u64,
        latency_sum_ms: 20_000 + (m % 5) as u64 * 100,
        latency_n: 100,
    };
    let mut states: Vec<SeriesState> = (0..1000).map(|_| SeriesState::default()).collect();
    for m in 0..60 {
        for s in &mut states {
            anomaly::observe(s, &minute(m), m * 60_000, &cfg);
        }
    }
    let mut g = c.benchmark_group("alerts");
    g.throughput(Throughput::Elements(states.len() as u64));
    let mut m = 60;
    g.bench_function("detector/1000", |b| {
        b.iter(|| {
            m += 1;
            let mut found = 0;
            for s in &mut states {
                found += anomaly::observe(s, &minute(m), m * 60_000, &cfg).len();
            }
            found
        })
    });
    g.finish();
}

criterion_group!(benches, counter, detector);
criterion_main!(benches);
