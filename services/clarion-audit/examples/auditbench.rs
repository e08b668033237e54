//! Throughput of the notary, `verify` and `replay` on an embedded log
//! (docs/benchmarks.md):
//!
//!     cargo run --release --locked -p clarion-audit --example auditbench -- [NOTIFICATIONS] [DIR]
//!
//! Writes NOTIFICATIONS (default 250,000) notifications of two tenants,
//! four events each (triggered, sent, delivered, ended: ~1M records) over
//! four partitions into a fresh SQLite file (in DIR, default the temp
//! directory), chains them with the notary, then verifies every chain and
//! replays one tenant.

use std::sync::Arc;
use std::time::Instant;

use clarion_audit::replay::{Plain, Query, Replay};
use clarion_audit::signing::AuditKey;
use clarion_audit::verify::Verify;
use clarion_audit::walk::parts;
use clarion_audit::{Notary, NotaryConfig};
use clarion_domain::event::{Actor, Event, Payload};
use clarion_domain::ids::{Id, TenantId};
use clarion_log::Record;
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::{SystemClock, Topic, Topics};

fn event(tenant: &str, n: usize, step: usize) -> (Topic, Event) {
    let id = format!("n{n:09}");
    let subscriber = format!("s{}", n % 1000);
    let (topic, payload) = match step {
        0 => (
            Topic::Triggers,
            Payload::Triggered(pb::NotificationTriggered {
                notification_id: id.clone(),
                workflow_id: "visit".into(),
                subscriber_id: subscriber.clone(),
                payload_json: r#"{"day":"Monday","order":"A-1001"}"#.into(),
                ..Default::default()
            }),
        ),
        1 => (
            Topic::Deliveries,
            Payload::Sent(pb::NotificationSent {
                notification_id: id.clone(),
                ..Default::default()
            }),
        ),
        2 => (
            Topic::Deliveries,
            Payload::Delivered(pb::NotificationDelivered {
                notification_id: id.clone(),
                ..Default::default()
            }),
        ),
        _ => (
            Topic::Notifications,
            Payload::Ended(pb::RunEnded {
                notification_id: id.clone(),
                outcome: "delivered".into(),
                ..Default::default()
            }),
        ),
    };
    let e = Event {
        id: Id::derive(&[tenant.as_bytes(), id.as_bytes(), &[step as u8]]),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/{subscriber}"),
        occurred_at_ms: 1_765_000_000_000 + n as i64,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("bench".into()),
        payload,
    };
    (topic, e)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let notifications: usize = args.next().map_or(250_000, |a| a.parse().unwrap());
    let dir = tempfile::tempdir_in(
        args.next()
            .unwrap_or_else(|| std::env::temp_dir().display().to_string()),
    )
    .unwrap();
    let path = dir.path().join("clarion.db").display().to_string();
    let c = Colocated::open(&path).unwrap();
    let (log, store) = (c.log(), c.store());
    let mut topics = Topics::new("", 4);
    topics.ensure(&*log).await.unwrap();

    let started = Instant::now();
    let mut records = 0usize;
    for chunk in (0..notifications).collect::<Vec<_>>().chunks(2000) {
        for step in 0..4 {
            let mut by_topic: std::collections::HashMap<Topic, Vec<Record>> = Default::default();
            for &n in chunk {
                let tenant = if n % 2 == 0 { "acme" } else { "globex" };
                let (t, e) = event(tenant, n, step);
                by_topic
                    .entry(t)
                    .or_default()
                    .push(Record::new(e.partition_key.clone(), e.encode()));
            }
            for (t, recs) in by_topic {
                records += recs.len();
                log.append(&topics.name(t), recs).await.unwrap();
            }
        }
    }
    println!(
        "wrote {records} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let key = Arc::new(AuditKey::generate());
    let started = Instant::now();
    let mut chaining = Vec::new();
    for part in parts(&topics) {
        let mut n = Notary::new(
            log.clone(),
            store.clone(),
            part,
            Arc::new(SystemClock),
            key.clone(),
            NotaryConfig::default(),
        );
        chaining.push(tokio::spawn(async move { n.catch_up().await.unwrap() }));
    }
    for h in chaining {
        h.await.unwrap();
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "notary: {records} records chained in {s:.2} s = {:.0} events/s",
        records as f64 / s
    );

    let verify = Verify {
        log: log.clone(),
        store: store.clone(),
        parts: parts(&topics),
        tenant: None,
        public_key: key.public(),
        concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let r = verify.run(&|_| {}).await.unwrap();
    assert!(r.first_break.is_none() && r.tail == 0, "{r:?}");
    println!(
        "verify: {} records, {} links, {} checkpoints in {:.2} s = {:.0} events/s",
        r.records,
        r.checked,
        r.checkpoints,
        r.elapsed.as_secs_f64(),
        r.events_per_s()
    );

    let replay = Replay {
        log: log.clone(),
        topics: topics.clone(),
        opener: Arc::new(Plain),
        query: Query {
            tenant: "acme".into(),
            at_ms: i64::MAX / 2,
            subscriber: None,
        },
    };
    let st = replay.run(&|_| {}).await.unwrap();
    println!(
        "replay (acme, every partition): {} records read, {} events applied, {} notifications in {:.2} s = {:.0} events/s",
        st.records_read,
        st.events_applied,
        st.notifications.len(),
        st.elapsed.as_secs_f64(),
        st.events_per_s()
    );
}
