//! The warehouse exporter's encode path (issue #30): buffered rows →
//! groups by table, tenant and date → Arrow record batches → Snappy
//! Parquet bytes, which is what a roll does before it writes files.
//!
//! `warehouse_encode/rows/10000`: 2,500 notifications over 2 tenants, each
//! a `notifications` row and two `messages` rows (sent, delivered; with a
//! keyed-hash recipient and a template id and version), and an open for
//! one in four — 10,000 rows. Throughput is in rows per second.
//! `warehouse_encode/scrub`: the personal-data scrub of a provider error.
//!
//!     cargo bench -p clarion-bench --bench warehouse_encode -- --warm-up-time 1 --measurement-time 3

use std::time::Duration;

use clarion_warehouse::encode;
use clarion_warehouse::pii::scrub;
use clarion_warehouse::rows::{EngagementRow, MessageRow, NotificationRow, Row, Values};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const NOTIFICATIONS: usize = 2_500;
const T0: i64 = 1_796_600_000_000;

fn message(tenant: &str, i: usize, outcome: &str, at: i64) -> Row {
    Row {
        tenant: tenant.into(),
        at_ms: at,
        values: Values::Message(MessageRow {
            notification_id: format!("{i:032x}"),
            attempt_id: format!("{:032x}", i * 7 + 1),
            workflow_id: format!("wf-{}", i % 5),
            step: "s1".into(),
            subscriber_id: format!("sub-{i}"),
            recipient: Some(format!("hmac-sha256:{:064x}", i * 31)),
            channel: if i.is_multiple_of(2) { "email" } else { "sms" }.into(),
            provider: "sink".into(),
            template_id: format!("tpl-{}", i % 5),
            template_version: 3,
            locale: "en".into(),
            outcome: outcome.into(),
            error_class: None,
            error: None,
            requested_at: at - 40,
            outcome_at: at,
            latency_ms: 40,
        }),
    }
}

fn rows() -> Vec<Row> {
    let mut out = Vec::with_capacity(NOTIFICATIONS * 4);
    for i in 0..NOTIFICATIONS {
        let tenant = if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        };
        let at = T0 + i as i64;
        out.push(message(tenant, i, "sent", at));
        out.push(message(tenant, i, "delivered", at + 900));
        out.push(Row {
            tenant: tenant.into(),
            at_ms: at + 1000,
            values: Values::Notification(NotificationRow {
                notification_id: format!("{i:032x}"),
                workflow_id: format!("wf-{}", i % 5),
                workflow_version: 2,
                subscriber_id: format!("sub-{i}"),
                status: "sent".into(),
                outcome: "completed".into(),
                reason: String::new(),
                last_step: "s1".into(),
                channel_path: "email".into(),
                attempts: 1,
                sent_attempts: 1,
                first_attempt_at: Some(at),
                last_attempt_at: Some(at),
                ended_at: at + 1000,
            }),
        });
        if i.is_multiple_of(4) {
            out.push(Row {
                tenant: tenant.into(),
                at_ms: at + 5000,
                values: Values::Engagement(EngagementRow {
                    notification_id: format!("{i:032x}"),
                    attempt_id: format!("{:032x}", i * 7 + 1),
                    kind: "opened".into(),
                    source: "pixel".into(),
                    occurred_at: at + 5000,
                }),
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let rows = rows();
    let mut g = c.benchmark_group("warehouse_encode");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function(format!("rows/{}", rows.len()), |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (group, rows) in encode::group(rows.clone()) {
                bytes += encode::parquet_bytes(group.table, &rows).unwrap().len();
            }
            bytes
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("scrub", |b| {
        b.iter(|| scrub("550 5.1.1 <alice@example.com>: mailbox unavailable, +1 555 010 0123"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
