//! A digest of 10,000 items (issue #33, docs/benchmarks.md): the router
//! (`Router::process`, as the runner calls it) accumulates 10,000 triggers
//! of one subscriber and key into one digest in batches of 500, each batch's
//! writes committed to a real SQLite store; then a flush closes it, and the
//! leader's send renders every item. Prints the time to accumulate, the time
//! to close and render, and the digest's bytes on disk per item (row values
//! and keys, and the file's growth).
//!
//!     cargo run --release -p clarion-bench --bin digestbench -- --items 10000

use std::time::Instant;

use clap::Parser;
use clarion_domain::flow::Flow;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::projector::Projector;
use clarion_runtime::router::Router;
use clarion_runtime::{Batch, Input, Processor};
use clarion_store::embedded::SqliteStore;
use clarion_store::{Scan, Store, Table};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const T0: i64 = 1_700_000_000_000;
const SUB: &str = "sub-1";

#[derive(Parser)]
struct Args {
    /// Items in the digest (its `max_items` is the limit, 10,000).
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// Triggers per router batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

const WORKFLOW: &str = r#"
id: digest
trigger: { event: project.updated }
steps:
  - { id: collect, type: digest, key: payload.project, window: 1d }
  - { id: mail, type: send, channel: email, template: digest-tpl }
"#;

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

async fn publish(store: &dyn Store, tenant: &TenantId) {
    let variant = pb::TemplateVariant {
        locale: "default".into(),
        subject: "{{ digest.count }} updates".into(),
        // Every item, briefly: a 10,000-item body stays under the render cap (512 KiB).
        body: "{% for i in digest.items %}#{{ i.n }} {{ i.priority }}\n{% endfor %}".into(),
    };
    let template = Template::new("digest-tpl", 1, "email", &[variant]).expect("template");
    let flow = Flow::parse(WORKFLOW, 1, |_| Some(clarion_domain::Channel::Email)).expect("flow");
    let events = [
        config_event(tenant, "t", Payload::TemplatePublished(template.to_event())),
        config_event(
            tenant,
            "w",
            Payload::WorkflowPublished(clarion_domain::workflow::published(&flow)),
        ),
    ];
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
    store.write(batch.writes).await.expect("config");
}

fn trigger(tenant: &TenantId, n: usize) -> Event {
    let cmd = TriggerCommand {
        workflow_id: "digest".into(),
        recipients: vec![Recipient {
            subscriber_id: SUB.into(),
            contact: Some(pb::RecipientOverride {
                email: "sub-1@example.test".into(),
                ..Default::default()
            }),
        }],
        payload_json: format!(
            r#"{{"project":"apollo","n":{n},"title":"Ticket {n} was updated by the field technician","priority":"low"}}"#
        ),
        ..Default::default()
    };
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&(n as u64).to_le_bytes());
    cmd.accept(tenant, 1, seed, T0, &Actor::ApiKey("k".into()))
        .remove(0)
}

fn file_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile_dir()?;
    let path = dir.join("bench.db");
    let store = SqliteStore::open(path.to_str().unwrap())?;
    let tenant = TenantId::parse("acme").expect("tenant");
    publish(&store, &tenant).await;
    let mut router = Router::new(Default::default());
    let before = file_bytes(&path);
    let started = Instant::now();
    let mut offset = 0;
    for chunk in (0..args.items).collect::<Vec<_>>().chunks(args.batch) {
        let inputs: Vec<Input> = chunk
            .iter()
            .map(|n| {
                offset += 1;
                input(offset, trigger(&tenant, *n))
            })
            .collect();
        let mut batch = Batch {
            now_ms: T0 + offset as i64,
            ..Default::default()
        };
        router.process(&store, &mut batch, &inputs).await?;
        store.write(batch.writes).await?;
    }
    let accumulate = started.elapsed();
    let rows = store
        .scan(&Scan::partition(
            Table::Digests,
            "acme",
            SUB,
            usize::MAX >> 1,
        ))
        .await?;
    let row_bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
    let grown = file_bytes(&path).saturating_sub(before);
    let flush = Event {
        id: Id::derive(&[b"flush"]),
        tenant: tenant.clone(),
        partition_key: clarion_domain::ids::recipient_key(&tenant, SUB),
        occurred_at_ms: T0,
        causation_id: None,
        correlation_id: None,
        actor: Actor::ApiKey("k".into()),
        payload: Payload::DigestFlushRequested(pb::DigestFlushRequested {
            subscriber_id: SUB.into(),
            workflow_id: "digest".into(),
            digest_key: "apollo".into(),
            origin: None,
        }),
    };
    let mut batch = Batch {
        now_ms: T0 + offset as i64 + 1,
        ..Default::default()
    };
    let started = Instant::now();
    router
        .process(&store, &mut batch, &[input(offset + 1, flush)])
        .await?;
    let close = started.elapsed();
    let started = Instant::now();
    store.write(batch.writes).await?;
    let commit = started.elapsed();
    let body = batch.emits.iter().find_map(|e| match &e.event.payload {
        Payload::DispatchRequested(d) => Some((d.subject.clone(), d.body.len())),
        _ => None,
    });
    let failed = batch.emits.iter().find_map(|e| match &e.event.payload {
        Payload::Failed(f) => Some(f.reason.clone()),
        _ => None,
    });
    println!(
        "digest of {} items (batches of {}):",
        args.items, args.batch
    );
    println!(
        "  accumulate: {:.2} s ({:.0} items/s)",
        accumulate.as_secs_f64(),
        args.items as f64 / accumulate.as_secs_f64()
    );
    println!(
        "  on disk: {} rows, {:.0} bytes/item of keys+values; file grew {:.0} bytes/item (runs and indexes included)",
        rows.len(),
        row_bytes as f64 / args.items as f64,
        grown as f64 / args.items as f64
    );
    println!(
        "  close (read {} items, render, decide): {:.1} ms; commit {:.1} ms",
        args.items,
        close.as_secs_f64() * 1e3,
        commit.as_secs_f64() * 1e3
    );
    match (body, failed) {
        (Some((subject, len)), _) => println!("  rendered: {subject:?}, body {len} bytes"),
        (None, reason) => println!("  render failed: {reason:?}"),
    }
    let left = store
        .scan(&Scan::partition(Table::Digests, "acme", SUB, 10))
        .await?;
    println!("  digest rows left after the close: {}", left.len());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("digestbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
