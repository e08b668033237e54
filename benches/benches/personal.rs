//! The cost of crypto-shredding on the hot path (issue #32,
//! docs/personal-data.md).
//!
//! - `personal/seal_dispatch/1000`: `Personal::seal_event` on 1,000 rendered
//!   email dispatches (address, subject, ~200-byte body) of 100 subscribers of
//!   2 tenants, keys cached (as on the router's hot path after the first
//!   message of a subscriber). Throughput in dispatches per second.
//! - `personal/open_dispatch/1000`: `Personal::open_event` of the same,
//!   sealed (the dispatcher's cost before a send).
//!
//!     cargo bench -p clarion-bench --bench personal -- --warm-up-time 1 --measurement-time 3

use std::sync::Arc;

use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::personal::Personal;
use clarion_runtime::secrets::Keyring;
use clarion_store::embedded::SqliteStore;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const N: usize = 1000;
const T0: i64 = 1_796_000_000_000;

fn dispatches() -> Vec<Event> {
    (0..N)
        .map(|i| {
            let tenant = TenantId::parse(if i % 2 == 0 { "acme" } else { "globex" }).unwrap();
            let sub = format!("sub-{}", i % 100);
            Event {
                id: Id::derive(&[&i.to_le_bytes()]),
                partition_key: format!("{}/{sub}", tenant.as_str()),
                tenant,
                occurred_at_ms: T0 + i as i64,
                causation_id: None,
                correlation_id: None,
                actor: Actor::System("router".into()),
                payload: Payload::DispatchRequested(pb::DispatchRequested {
                    notification_id: format!("n{i}"),
                    attempt_id: format!("a{i}"),
                    channel: "email".into(),
                    provider: "smtp".into(),
                    to: format!("{sub}@example.com"),
                    subject: "Your technician visit on Tuesday".into(),
                    body: "Hello, your technician will arrive on Tuesday between 9:00 and 11:00. \
                           Reply STOP to opt out. Reference 12345, site 42, contract 7788."
                        .repeat(2),
                    subscriber_id: sub,
                    country: "FR".into(),
                    ..Default::default()
                }),
            }
        })
        .collect()
}

fn personal(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("k.db").to_str().unwrap()).unwrap();
    let ring = Keyring::new("k1", &[("k1", [9u8; 32])]).unwrap();
    let p = Personal::new(Arc::new(store), Arc::new(ring));
    let plain = dispatches();
    // Warm the key caches and make the sealed set.
    let sealed: Vec<Event> = rt.block_on(async {
        let mut out = plain.clone();
        for e in &mut out {
            p.seal_event(e).await.unwrap();
        }
        out
    });
    let mut g = c.benchmark_group("personal");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("seal_dispatch/1000", |b| {
        b.iter_batched(
            || plain.clone(),
            |mut events| {
                rt.block_on(async {
                    for e in &mut events {
                        p.seal_event(e).await.unwrap();
                    }
                });
                events
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("open_dispatch/1000", |b| {
        b.iter_batched(
            || sealed.clone(),
            |mut events| {
                rt.block_on(async {
                    for e in &mut events {
                        p.open_event(e).await.unwrap();
                    }
                });
                events
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, personal);
criterion_main!(benches);
