//! The router's decisions for whole batches, as the pipeline feeds it: the
//! biggest single share of the server's CPU at full load (docs/benchmarks.md).
//!
//! - `router/notifications/500`: a batch of 10 Trigger requests of 50
//!   recipients each (one `Triggered` per recipient, the payload shared, as
//!   the load generator sends them) starts 500 runs and renders their sends;
//!   then a batch of the sink's `Sent` and `Delivered` for them ends the runs.
//!   Only `Router::process` is timed. Store reads are real (a SQLite file:
//!   the published workflow and template, and the run lookups of new
//!   notifications, which miss); the batches' writes are not committed, as
//!   the runner would commit them after deciding.
//!
//! - `router/notifications-preferences/500`: the same, for a tenant whose
//!   subscribers have stored preferences (every tenth of them a row, written
//!   by the router from `PreferencesChanged` events) and whose workflow names
//!   a registered topic: every send looks its subscriber's preferences up
//!   (read with one `get_many` per batch the first time, from memory after)
//!   and evaluates the topic's rules. The plain bench above checks too, with
//!   no lookup: a tenant without rows.
//!
//! Throughput is in notifications per second.
//!
//!     cargo bench -p clarion-bench --bench router -- --warm-up-time 1 --measurement-time 3

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clarion_bench::padded_payload;
use clarion_domain::preferences::topic::Topic;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::projector::Projector;
use clarion_runtime::router::Router;
use clarion_runtime::{Batch, Input, Processor};
use clarion_store::embedded::SqliteStore;
use clarion_store::Store;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

// The server's allocator (services/clarion/src/main.rs): the router
// allocates on every input, and under glibc malloc the allocator was 40 %
// of this bench's samples, which the server never pays.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const REQUESTS: usize = 10;
const RECIPIENTS: usize = 50;
const T0: i64 = 1_700_000_000_000;

fn input(offset: usize, event: Event) -> Input {
    Input {
        offset: offset as u64,
        raw: event.encode().into(),
        event,
    }
}

fn config_event(tenant: &TenantId, tag: &str, payload: Payload) -> Event {
    Event {
        id: Id::derive(&[b"config", tag.as_bytes()]),
        tenant: tenant.clone(),
        partition_key: clarion_domain::ids::tenant_key(tenant),
        occurred_at_ms: T0 - 60_000,
        causation_id: None,
        correlation_id: None,
        actor: Actor::Operator("op-1".into()),
        payload,
    }
}

/// The load generator's workflow and template, published and projected;
/// with `topic`, the workflow names it and it is registered.
async fn publish_config(store: &dyn Store, tenant: &TenantId, topic: Option<&str>) {
    let template = clarion_bench::email_template();
    let mut workflow = clarion_bench::email_workflow();
    workflow.def.topic = topic.map(str::to_string);
    let mut events = vec![
        config_event(
            tenant,
            "template",
            Payload::TemplatePublished(template.to_event()),
        ),
        config_event(
            tenant,
            "workflow",
            Payload::WorkflowPublished(clarion_domain::workflow::published(&workflow)),
        ),
    ];
    if let Some(id) = topic {
        let t = Topic {
            id: id.into(),
            name: id.into(),
            default_opt_in: true,
            version: 1,
            ..Topic::default()
        };
        let registered = t.to_event(None, pb::Origin::default());
        events.push(config_event(
            tenant,
            "topic",
            Payload::TopicRegistered(registered),
        ));
    }
    let inputs: Vec<Input> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| input(i, e))
        .collect();
    let mut batch = Batch::default();
    Projector
        .process(store, &mut batch, &inputs)
        .await
        .expect("projects");
    store.write(batch.writes).await.expect("config committed");
}

/// Every tenth of the bench's subscribers chooses email for `topic` (so
/// every send still goes): the router applies the changes and they commit.
async fn store_preferences(router: &mut Router, store: &dyn Store, tenant: &TenantId, topic: &str) {
    let inputs: Vec<Input> = (0..REQUESTS * RECIPIENTS)
        .step_by(10)
        .map(|i| {
            let subscriber = format!("lg-{i}");
            let change = pb::PreferenceChange {
                path: format!("topics.{topic}.email"),
                old: pb::Setting::Inherit as i32,
                new: pb::Setting::On as i32,
            };
            let e = Event {
                id: Id::derive(&[b"pref", subscriber.as_bytes()]),
                tenant: tenant.clone(),
                partition_key: clarion_domain::ids::recipient_key(tenant, &subscriber),
                occurred_at_ms: T0,
                causation_id: None,
                correlation_id: None,
                actor: Actor::ApiKey("k_bench".into()),
                payload: Payload::PreferencesChanged(pb::PreferencesChanged {
                    subscriber_id: subscriber,
                    changes: vec![change],
                    origin: None,
                }),
            };
            input(i, e)
        })
        .collect();
    let mut batch = Batch::default();
    router
        .process(store, &mut batch, &inputs)
        .await
        .expect("preferences apply");
    store
        .write(batch.writes)
        .await
        .expect("preferences committed");
}

/// A batch of `REQUESTS` Trigger requests of `RECIPIENTS` each; `round`
/// makes every notification id new.
fn triggers(tenant: &TenantId, round: u64) -> Vec<Input> {
    let actor = Actor::ApiKey("k_bench".into());
    let mut out = Vec::with_capacity(REQUESTS * RECIPIENTS);
    for r in 0..REQUESTS {
        let cmd = TriggerCommand {
            workflow_id: "appointment".into(),
            recipients: (0..RECIPIENTS)
                .map(|i| {
                    let id = format!("lg-{}", (r * RECIPIENTS + i) % 10_000);
                    Recipient {
                        contact: Some(pb::RecipientOverride {
                            email: format!("{id}@example.test"),
                            locale: "fr-CA".into(),
                            ..Default::default()
                        }),
                        subscriber_id: id,
                    }
                })
                .collect(),
            payload_json: padded_payload("Ana", 100),
            idempotency_key: String::new(),
            ..Default::default()
        };
        let mut seed = [0u8; 16];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        seed[8..].copy_from_slice(&(r as u64).to_le_bytes());
        out.extend(cmd.accept(tenant, 1, seed, T0 + round as i64, &actor));
    }
    out.into_iter()
        .enumerate()
        .map(|(i, e)| input(i, e))
        .collect()
}

/// The sink's outcome for each dispatch the batch asked for.
fn outcomes(batch: &Batch) -> Vec<Input> {
    let actor = Actor::System("dispatcher".into());
    let mut out = Vec::new();
    for emit in &batch.emits {
        let Payload::DispatchRequested(d) = &emit.event.payload else {
            continue;
        };
        let e = &emit.event;
        let outcome = [
            Payload::Sent(pb::NotificationSent {
                notification_id: d.notification_id.clone(),
                attempt_id: d.attempt_id.clone(),
                provider: d.provider.clone(),
                provider_message_id: d.attempt_id.clone(),
                context: None,
            }),
            Payload::Delivered(pb::NotificationDelivered {
                notification_id: d.notification_id.clone(),
                attempt_id: d.attempt_id.clone(),
                provider: d.provider.clone(),
                context: None,
            }),
        ];
        for (i, payload) in (0..).zip(outcome) {
            out.push(e.caused(i, e.occurred_at_ms, actor.clone(), payload));
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, e)| input(i, e))
        .collect()
}

/// Routes one round: returns the time `process` took and the runs ended.
async fn round(
    router: &mut Router,
    store: &dyn Store,
    tenant: &TenantId,
    n: u64,
) -> (Duration, usize) {
    let triggers = triggers(tenant, n);
    let mut first = Batch {
        now_ms: T0 + n as i64,
        ..Default::default()
    };
    let started = Instant::now();
    router
        .process(store, &mut first, &triggers)
        .await
        .expect("triggers route");
    let mut took = started.elapsed();
    let outcomes = outcomes(&first);
    let mut second = Batch {
        now_ms: T0 + n as i64 + 1,
        ..Default::default()
    };
    let started = Instant::now();
    router
        .process(store, &mut second, &outcomes)
        .await
        .expect("outcomes apply");
    took += started.elapsed();
    let ended = second
        .emits
        .iter()
        .filter(|e| matches!(&e.event.payload, Payload::Ended(r) if r.outcome == "completed"))
        .count();
    (took, ended)
}

fn bench_router(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements((REQUESTS * RECIPIENTS) as u64));
    for preferences in [false, true] {
        let name = match preferences {
            false => "notifications",
            true => "notifications-preferences",
        };
        bench_one(&rt, &mut g, name, preferences);
    }
    g.finish();
}

fn bench_one(
    rt: &tokio::runtime::Runtime,
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    preferences: bool,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path")).expect("store");
    let tenant = TenantId::parse("acme").expect("tenant");
    let topic = preferences.then_some("appointments");
    rt.block_on(publish_config(&store, &tenant, topic));
    let mut router = Router::new(HashMap::new());
    if let Some(topic) = topic {
        rt.block_on(store_preferences(&mut router, &store, &tenant, topic));
        // As after a restart: the preferences come from the store.
        router = Router::new(HashMap::new());
    }
    // Sanity: every notification of a round is routed and completes.
    let (_, ended) = rt.block_on(round(&mut router, &store, &tenant, 0));
    assert_eq!(ended, REQUESTS * RECIPIENTS, "every run completes");

    let mut n = 1;
    g.bench_function(format!("{name}/{}", REQUESTS * RECIPIENTS), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                total += rt.block_on(round(&mut router, &store, &tenant, n)).0;
            }
            total
        })
    });
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
