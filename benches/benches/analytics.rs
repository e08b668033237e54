//! The analytics processor (issue #30): events/s from the recipient
//! streams into its projection, as the `analytics` role applies them.
//!
//! `analytics/events/2000`: 500 send attempts over 10 tenants, 2 channels,
//! 2 providers, 5 workflows and 5 templates, each with its dispatch, sent,
//! delivered and opened events: three batches (dispatch, deliveries,
//! engagement) as the runner reads the three topics. Timed: `process` and
//! the commit of its writes to a SQLite file (the join rows and the
//! minute and hour buckets), which is the processor's whole cost.
//! Throughput is in events per second.
//!
//!     cargo bench -p clarion-bench --bench analytics -- --warm-up-time 1 --measurement-time 3

use std::time::{Duration, Instant};

use clarion_analytics::AnalyticsProcessor;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::{Batch, Input, Processor};
use clarion_store::embedded::SqliteStore;
use clarion_store::Store;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ATTEMPTS: usize = 500;
const T0: i64 = 1_700_000_000_000;

fn event(tenant: &TenantId, tag: &[u8], at: i64, payload: Payload) -> Event {
    Event {
        id: Id::derive(&[tag]),
        tenant: tenant.clone(),
        partition_key: format!("{}/sub", tenant.as_str()),
        occurred_at_ms: at,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("bench".into()),
        payload,
    }
}

/// Round `n`'s three batches: dispatches, outcomes, engagement.
fn round(n: u64) -> [Vec<Input>; 3] {
    let mut out: [Vec<Input>; 3] = Default::default();
    let at = T0 + n as i64 * 1_000;
    for i in 0..ATTEMPTS {
        let tenant = TenantId::parse(&format!("tenant-{}", i % 10)).expect("tenant");
        let nid = Id::time_ordered(at - 50, &[&n.to_le_bytes(), &i.to_le_bytes()]).to_hex();
        let attempt = format!("{nid}-0");
        let tag = |k: &str| format!("{n}/{i}/{k}").into_bytes();
        let dispatch = pb::DispatchRequested {
            notification_id: nid.clone(),
            attempt_id: attempt.clone(),
            channel: ["email", "sms"][i % 2].into(),
            provider: ["smtp", "twilio"][i % 2].into(),
            workflow_id: format!("workflow-{}", i % 5),
            template_id: format!("template-{}", i % 5),
            subscriber_id: format!("sub-{i}"),
            ..Default::default()
        };
        let facts = [
            (0, at, Payload::DispatchRequested(dispatch)),
            (
                1,
                at + 20,
                Payload::Sent(pb::NotificationSent {
                    notification_id: nid.clone(),
                    attempt_id: attempt.clone(),
                    ..Default::default()
                }),
            ),
            (
                1,
                at + 900,
                Payload::Delivered(pb::NotificationDelivered {
                    notification_id: nid.clone(),
                    attempt_id: attempt.clone(),
                    ..Default::default()
                }),
            ),
            (
                2,
                at + 60_000,
                Payload::Engaged(pb::EngagementRecorded {
                    notification_id: nid.clone(),
                    attempt_id: attempt.clone(),
                    kind: "opened".into(),
                    source: "pixel".into(),
                }),
            ),
        ];
        for (k, (batch, at, payload)) in facts.into_iter().enumerate() {
            let e = event(&tenant, &tag(&k.to_string()), at, payload);
            let offset = out[batch].len() as u64;
            out[batch].push(Input {
                offset,
                raw: e.encode().into(),
                event: e,
            });
        }
    }
    out
}

/// Applies and commits one round; the time it took.
async fn apply(p: &mut AnalyticsProcessor, store: &dyn Store, n: u64) -> Duration {
    let batches = round(n);
    let started = Instant::now();
    for inputs in batches {
        let mut batch = Batch {
            now_ms: T0 + n as i64 * 1_000,
            ..Default::default()
        };
        p.process(store, &mut batch, &inputs)
            .await
            .expect("process");
        store.write(batch.writes).await.expect("commit");
    }
    started.elapsed()
}

fn bench_analytics(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path")).expect("store");
    let mut p = AnalyticsProcessor::default();
    let mut n = 0;
    let mut g = c.benchmark_group("analytics");
    g.throughput(Throughput::Elements((ATTEMPTS * 4) as u64));
    g.bench_function(format!("events/{}", ATTEMPTS * 4), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                total += rt.block_on(apply(&mut p, &store, n));
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench_analytics);
criterion_main!(benches);
