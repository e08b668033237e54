//! Export throughput: fills an embedded log (a SQLite file) with N
//! notifications of two tenants (trigger, send request, sent, delivered,
//! end: five events each), then exports one tenant's as JSON Lines and as
//! Parquet and prints rows/s and log records read/s.
//!
//!     cargo run --release -p clarion-export --example export_bench -- 50000

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use clarion_dispatch::secrets::Keyring;
use clarion_domain::event::Payload;
use clarion_domain::{Actor, Event, Id, TenantId};
use clarion_export::export::ExportContext;
use clarion_export::{run_export, ExportRequest, Format, MaskRules, OpenPersonal};
use clarion_log::{EventLog, Record};
use clarion_proto::events as pb;
use clarion_runtime::{Topic, Topics};

struct Plain;

#[async_trait]
impl OpenPersonal for Plain {
    async fn open_event(&self, _: &mut Event) -> Result<(), String> {
        Ok(())
    }
}

const T0: i64 = 1_796_000_000_000;

fn ev(tenant: &str, sub: &str, at: i64, payload: Payload) -> Event {
    Event {
        id: Id(rand::random()),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/{sub}"),
        occurred_at_ms: at,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("bench".into()),
        payload,
    }
}

fn story(tenant: &str, i: usize) -> [(Topic, Event); 5] {
    let sub = format!("s{}", i % 1000);
    let nid = format!("{tenant}-{i}");
    let aid = format!("{nid}-a");
    let at = T0 + i as i64;
    [
        (
            Topic::Triggers,
            ev(
                tenant,
                &sub,
                at,
                Payload::Triggered(pb::NotificationTriggered {
                    notification_id: nid.clone(),
                    workflow_id: "w".into(),
                    subscriber_id: sub.clone(),
                    ..Default::default()
                }),
            ),
        ),
        (
            Topic::Dispatch,
            ev(
                tenant,
                &sub,
                at,
                Payload::DispatchRequested(pb::DispatchRequested {
                    notification_id: nid.clone(),
                    attempt_id: aid.clone(),
                    channel: "email".into(),
                    provider: "smtp".into(),
                    to: format!("{sub}@example.com"),
                    subject: "Your order shipped".into(),
                    body: "Hello, your order 12345 left our warehouse today and arrives on Friday."
                        .into(),
                    subscriber_id: sub.clone(),
                    workflow_id: "w".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            Topic::Deliveries,
            ev(
                tenant,
                &sub,
                at + 1,
                Payload::Sent(pb::NotificationSent {
                    notification_id: nid.clone(),
                    attempt_id: aid.clone(),
                    provider: "smtp".into(),
                    ..Default::default()
                }),
            ),
        ),
        (
            Topic::Deliveries,
            ev(
                tenant,
                &sub,
                at + 2,
                Payload::Delivered(pb::NotificationDelivered {
                    notification_id: nid.clone(),
                    attempt_id: aid,
                    provider: "smtp".into(),
                    context: None,
                }),
            ),
        ),
        (
            Topic::Notifications,
            ev(
                tenant,
                &sub,
                at + 1,
                Payload::Ended(pb::RunEnded {
                    notification_id: nid,
                    outcome: "completed".into(),
                    workflow_id: "w".into(),
                    subscriber_id: sub.clone(),
                    ..Default::default()
                }),
            ),
        ),
    ]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(50_000, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        clarion_log::open(&format!("sqlite://{}", dir.path().join("log.db").display()))
            .await
            .unwrap();
    let mut topics = Topics::new("", 4);
    topics.ensure(&*log).await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let mut by_topic: std::collections::HashMap<Topic, Vec<Record>> = Default::default();
        for &i in chunk {
            for tenant in ["acme", "globex"] {
                for (t, e) in story(tenant, i) {
                    by_topic
                        .entry(t)
                        .or_default()
                        .push(Record::new(e.partition_key.clone(), e.encode()));
                }
            }
        }
        for (t, recs) in by_topic {
            log.append(&topics.name(t), recs).await.unwrap();
        }
    }
    let ctx = ExportContext {
        log,
        topics,
        keyring: Arc::new(Keyring::new("k", &[("k", [3; 32])]).unwrap()),
        opener: Arc::new(Plain),
    };
    for format in [Format::Jsonl, Format::Parquet] {
        let req = ExportRequest {
            tenant: TenantId::parse("acme").unwrap(),
            from_ms: T0,
            until_ms: T0 + n as i64 + 10,
            subscriber: None,
            workflow: None,
            format,
            actor: Actor::Operator("bench".into()),
            requester: "operator:bench".into(),
            purpose: "benchmark".into(),
            masks: MaskRules::default(),
            encrypt_to: None,
            max_rows_per_file: 1_000_000,
        };
        let out = dir.path().join(format.as_str());
        let start = Instant::now();
        let done = run_export(&ctx, &req, &out, T0, &mut ()).await.unwrap();
        let s = start.elapsed().as_secs_f64();
        println!(
            "{}: {} rows from {} log records in {:.2} s: {:.0} rows/s, {:.0} records/s",
            format.as_str(),
            done.manifest.rows,
            done.records,
            s,
            done.manifest.rows as f64 / s,
            done.records as f64 / s
        );
    }
}
