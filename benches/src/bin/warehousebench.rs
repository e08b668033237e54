//! The warehouse exporter's throughput (issue #30, docs/benchmarks.md):
//! fills an embedded log (one SQLite file, as `clarion serve` has) with the
//! events of N notifications over two tenants and two partitions — each a
//! `DispatchRequested`, `Sent`, `Delivered` and `RunEnded`, and every
//! fourth an open — then times exporters reading every partition to the end
//! and writing the Parquet files. Prints events/s, rows/s and Parquet bytes
//! per notification.
//!
//!     cargo run --release -p clarion-bench --bin warehousebench -- --notifications 200000

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::Record;
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::{SystemClock, Topic, Topics};
use clarion_warehouse::{Destination, Exporter, ExporterConfig, INPUTS};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTITIONS: u32 = 2;
const T0: i64 = 1_796_600_000_000;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    notifications: usize,
    /// Rows per file roll (the age never triggers within a run).
    #[arg(long, default_value_t = 1_000_000)]
    max_file_rows: usize,
}

fn event(n: usize, k: u32, tenant: &TenantId, key: &str, payload: Payload) -> Event {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(n as u64).to_be_bytes());
    id[8..12].copy_from_slice(&k.to_be_bytes());
    Event {
        id: Id(id),
        tenant: tenant.clone(),
        partition_key: key.to_string(),
        occurred_at_ms: T0 + n as i64,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("bench".into()),
        payload,
    }
}

/// The events of notification `n`, by topic.
fn notification(n: usize, tenants: &[TenantId]) -> Vec<(Topic, Event)> {
    let tenant = &tenants[n % tenants.len()];
    let key = format!("{tenant}/sub-{}", n % 10_000);
    let nid = format!("n-{n:012}");
    let attempt = format!("{nid}/mail/0");
    let mut out = vec![
        (
            Topic::Dispatch,
            event(
                n,
                0,
                tenant,
                &key,
                Payload::DispatchRequested(pb::DispatchRequested {
                    notification_id: nid.clone(),
                    attempt_id: attempt.clone(),
                    channel: "email".into(),
                    provider: "smtp".into(),
                    to: "ana@example.test".into(),
                    subject: "Your visit".into(),
                    body: "Hello Ana, your technician comes on Tuesday.".into(),
                    locale: "en".into(),
                    subscriber_id: format!("sub-{}", n % 10_000),
                    step: "mail".into(),
                    workflow_id: "appointment".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            Topic::Deliveries,
            event(
                n,
                1,
                tenant,
                &key,
                Payload::Sent(pb::NotificationSent {
                    notification_id: nid.clone(),
                    attempt_id: attempt.clone(),
                    provider: "smtp".into(),
                    provider_message_id: format!("<{n}@clarion.test>"),
                    context: None,
                }),
            ),
        ),
        (
            Topic::Deliveries,
            event(
                n,
                2,
                tenant,
                &key,
                Payload::Delivered(pb::NotificationDelivered {
                    notification_id: nid.clone(),
                    attempt_id: attempt.clone(),
                    provider: "smtp".into(),
                    context: None,
                }),
            ),
        ),
        (
            Topic::Notifications,
            event(
                n,
                3,
                tenant,
                &key,
                Payload::Ended(pb::RunEnded {
                    notification_id: nid.clone(),
                    outcome: "completed".into(),
                    workflow_id: "appointment".into(),
                    workflow_version: 3,
                    step: "mail".into(),
                    subscriber_id: format!("sub-{}", n % 10_000),
                    attempts: vec![pb::AttemptRecord {
                        attempt_id: attempt.clone(),
                        step: "mail".into(),
                        channel: "email".into(),
                        provider: "smtp".into(),
                        at_ms: T0 + n as i64,
                        sent: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            ),
        ),
    ];
    if n.is_multiple_of(4) {
        out.push((
            Topic::Triggers,
            event(
                n,
                4,
                tenant,
                &key,
                Payload::Engaged(pb::EngagementRecorded {
                    notification_id: nid,
                    attempt_id: attempt,
                    kind: "opened".into(),
                    source: "pixel".into(),
                }),
            ),
        ));
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let c = Colocated::open(dir.path().join("clarion.db").to_str().expect("utf-8"))?;
    let (log, store) = (c.log(), c.store());
    let mut topics = Topics::new("b.", PARTITIONS);
    topics.ensure(&*log).await?;
    let tenants = [
        TenantId::parse("acme").unwrap(),
        TenantId::parse("globex").unwrap(),
    ];

    let fill = Instant::now();
    let mut events = 0usize;
    for chunk in (0..args.notifications).collect::<Vec<_>>().chunks(2_000) {
        let mut by_topic: std::collections::HashMap<Topic, Vec<Record>> = Default::default();
        for n in chunk {
            for (t, e) in notification(*n, &tenants) {
                by_topic
                    .entry(t)
                    .or_default()
                    .push(Record::new(e.partition_key.clone(), e.encode()));
                events += 1;
            }
        }
        for (t, recs) in by_topic {
            log.append(&topics.name(t), recs).await?;
        }
    }
    eprintln!(
        "filled {events} events in {:.1} s",
        fill.elapsed().as_secs_f64()
    );

    let root = dir.path().join("warehouse");
    let dest = Destination::open("", &root).map_err(anyhow::Error::msg)?;
    let cfg = ExporterConfig {
        max_file_age_ms: i64::MAX / 2,
        max_file_rows: args.max_file_rows,
        max_file_bytes: usize::MAX,
        ..ExporterConfig::default()
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PARTITIONS {
        let mut ends = [0u64; 4];
        for (i, t) in INPUTS.iter().enumerate() {
            ends[i] = log.end_offset(&topics.name(*t), p).await?;
        }
        let exporter = Exporter::new(
            "exporter",
            log.clone(),
            store.clone(),
            topics.clone(),
            p,
            Arc::new(SystemClock),
            dest.clone(),
            cfg.clone(),
        );
        tasks.spawn(async move { exporter.run_to(ends, &mut |_| {}).await });
    }
    let mut rows = 0;
    while let Some(r) = tasks.join_next().await {
        rows += r??;
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = walk(&root)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    println!(
        "exported {events} events into {rows} rows in {secs:.2} s: {:.0} events/s, {:.0} rows/s; \
         {bytes} Parquet bytes, {:.1} bytes per notification",
        events as f64 / secs,
        rows as f64 / secs,
        bytes as f64 / args.notifications as f64
    );
    Ok(())
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
