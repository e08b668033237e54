//! The in-app inbox's benchmarks against a running `clarion serve`
//! (scripts/bench-inbox.sh starts one):
//!
//! * `read`: fills one subscriber's feed with `--items` items (through the
//!   real path: a workflow with one in_app step, triggered over gRPC), then
//!   GETs the feed's first page over REST at a fixed rate (open loop,
//!   latency from each request's due time).
//! * `live`: opens one Server-Sent Events stream per subscriber
//!   (`--subscribers`), then triggers at `--rate` per second round-robin;
//!   each item carries its trigger's sequence number, and its latency is
//!   from the trigger's due time to the item's arrival on the stream.
//!
//! Prints one JSON line with the latency percentiles in microseconds.
//!
//! ```text
//! inboxload --endpoint http://127.0.0.1:50063 --http http://127.0.0.1:18083 \
//!           --api-key ck_... read --items 10000 --rate 500
//! inboxload ... live --subscribers 200 --rate 1000
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use clarion_proto::api;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "In-app inbox benchmarks: feed reads, trigger → SSE arrival")]
struct Cli {
    /// gRPC endpoint of the gateway.
    #[arg(long, default_value = "http://127.0.0.1:50063")]
    endpoint: String,
    /// HTTP base URL of the gateway.
    #[arg(long, default_value = "http://127.0.0.1:18083")]
    http: String,
    #[arg(long)]
    api_key: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Feed reads with `items` items in one feed.
    Read {
        #[arg(long, default_value_t = 10_000)]
        items: u64,
        /// GETs per second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        duration_secs: u64,
        #[arg(long, default_value_t = 3)]
        warmup_secs: u64,
        /// Query of the GET (e.g. `status=unread&limit=50`).
        #[arg(long, default_value = "")]
        query: String,
    },
    /// Trigger → SSE arrival.
    Live {
        #[arg(long, default_value_t = 200)]
        subscribers: u64,
        /// Triggers per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        duration_secs: u64,
        #[arg(long, default_value_t = 3)]
        warmup_secs: u64,
    },
}

const WORKFLOW: &str = "
id: inbox-bench
steps:
  - { id: inbox, type: send, channel: in_app, template: inbox-bench }
";

fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii key"),
    );
    r
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(cli))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let ch = Channel::from_shared(cli.endpoint.clone())?
        .connect()
        .await?;
    setup(&ch, &cli.api_key).await?;
    match cli.mode {
        Mode::Read {
            items,
            rate,
            duration_secs,
            warmup_secs,
            ref query,
        } => {
            fill(&ch, &cli, "reader", items).await?;
            let url = format!("{}/v1/subscribers/reader/inbox?{query}", cli.http);
            read_load(&cli.api_key, &url, rate, warmup_secs, duration_secs, items).await
        }
        Mode::Live {
            subscribers,
            rate,
            duration_secs,
            warmup_secs,
        } => live(&ch, &cli, subscribers, rate, warmup_secs, duration_secs).await,
    }
}

/// The in_app template and the one-step workflow.
async fn setup(ch: &Channel, key: &str) -> anyhow::Result<()> {
    api::tenant_service_client::TenantServiceClient::new(ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: "inbox-bench".into(),
                channel: "in_app".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Job {{ payload.seq }}".into(),
                    body: "{{ payload.seq }}".into(),
                }],
            },
        ))
        .await?;
    api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            key,
            api::ApplyWorkflowRequest {
                definition: WORKFLOW.into(),
            },
        ))
        .await?;
    Ok(())
}

async fn upsert(ch: &Channel, key: &str, id: &str) -> anyhow::Result<()> {
    api::subscriber_service_client::SubscriberServiceClient::new(ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: id.into(),
                ..Default::default()
            },
        ))
        .await?;
    Ok(())
}

async fn trigger(ch: Channel, key: String, subscriber: String, seq: u64) -> anyhow::Result<()> {
    api::notification_service_client::NotificationServiceClient::new(ch)
        .trigger(authed(
            &key,
            api::TriggerRequest {
                workflow_id: "inbox-bench".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: subscriber,
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"seq":{seq}}}"#),
                ..Default::default()
            },
        ))
        .await?;
    Ok(())
}

/// `items` items in `subscriber`'s feed, then waits until the feed holds them.
async fn fill(ch: &Channel, cli: &Cli, subscriber: &str, items: u64) -> anyhow::Result<()> {
    upsert(ch, &cli.api_key, subscriber).await?;
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..items {
        let permit = sem.clone().acquire_owned().await?;
        let (ch, key, sub) = (ch.clone(), cli.api_key.clone(), subscriber.to_string());
        tasks.spawn(async move {
            let r = trigger(ch, key, sub, seq).await;
            drop(permit);
            r
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let client = reqwest::Client::new();
    let url = format!("{}/v1/subscribers/{subscriber}/inbox/counts", cli.http);
    loop {
        let counts: serde_json::Value = client
            .get(&url)
            .bearer_auth(&cli.api_key)
            .send()
            .await?
            .json()
            .await?;
        if counts["total"].as_u64() >= Some(items.min(10_000)) {
            eprintln!("feed filled: {counts} in {:?}", started.elapsed());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

async fn read_load(
    key: &str,
    url: &str,
    rate: u64,
    warmup_secs: u64,
    duration_secs: u64,
    items: u64,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let tally = Arc::new(Mutex::new((histogram(), HashMap::<String, u64>::new())));
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(warmup_secs);
    let end = measure_from + Duration::from_secs(duration_secs);
    let mut due = start;
    let mut tasks = tokio::task::JoinSet::new();
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let req = client.get(url).bearer_auth(key);
        let (tally, measured, was_due) = (tally.clone(), due >= measure_from, due);
        tasks.spawn(async move {
            let status = match req.send().await {
                Ok(r) => {
                    let s = r.status().as_u16().to_string();
                    let _ = r.bytes().await;
                    s
                }
                Err(e) => format!("error: {}", e.without_url()),
            };
            if measured {
                let us = was_due.elapsed().as_micros() as u64;
                let mut t = tally.lock().expect("tally");
                t.0.saturating_record(us.max(1));
                *t.1.entry(status).or_default() += 1;
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done?;
        }
        due += interval;
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let t = tally.lock().expect("tally");
    Ok(json!({
        "mode": "read",
        "items_in_feed": items.min(10_000),
        "rate": rate,
        "requests": t.0.len(),
        "statuses": t.1,
        "latency_us": percentiles(&t.0),
    }))
}

/// When each trigger was due, by sequence number.
type Due = Arc<Mutex<HashMap<u64, Instant>>>;

async fn live(
    ch: &Channel,
    cli: &Cli,
    subscribers: u64,
    rate: u64,
    warmup_secs: u64,
    duration_secs: u64,
) -> anyhow::Result<serde_json::Value> {
    let due: Due = Arc::default();
    let tally = Arc::new(Mutex::new(histogram()));
    let measure_after = Arc::new(Mutex::new(u64::MAX));
    let client = reqwest::Client::new();
    let mut readers = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers as usize);
    for i in 0..subscribers {
        let id = format!("live{i}");
        upsert(ch, &cli.api_key, &id).await?;
        let resp = client
            .get(format!("{}/v1/subscribers/{id}/inbox/stream", cli.http))
            .bearer_auth(&cli.api_key)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "stream of {id}: {}", resp.status());
        let (due, tally, from, ready) = (
            due.clone(),
            tally.clone(),
            measure_after.clone(),
            ready_tx.clone(),
        );
        readers.spawn(read_stream(resp, due, tally, from, ready));
    }
    for _ in 0..subscribers {
        ready_rx.recv().await;
    }
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(warmup_secs);
    let end = measure_from + Duration::from_secs(duration_secs);
    let mut next = start;
    let mut seq = 0u64;
    let mut triggers = tokio::task::JoinSet::new();
    let mut failed = 0u64;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        if next >= measure_from && *measure_after.lock().expect("lock") == u64::MAX {
            *measure_after.lock().expect("lock") = seq;
        }
        due.lock().expect("lock").insert(seq, next);
        let sub = format!("live{}", seq % subscribers);
        triggers.spawn(trigger(ch.clone(), cli.api_key.clone(), sub, seq));
        while let Some(done) = triggers.try_join_next() {
            failed += u64::from(done?.is_err());
        }
        seq += 1;
        next += interval;
    }
    while let Some(done) = triggers.join_next().await {
        failed += u64::from(done?.is_err());
    }
    // The stragglers' time to arrive.
    let drain = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain && !due.lock().expect("lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    readers.abort_all();
    let missing = due.lock().expect("lock").len();
    let h = tally.lock().expect("tally");
    let measured_from = *measure_after.lock().expect("lock");
    Ok(json!({
        "mode": "live",
        "subscribers": subscribers,
        "rate": rate,
        "triggers": seq,
        "measured": h.len(),
        "measured_from_seq": measured_from,
        "trigger_errors": failed,
        "not_arrived": missing,
        "latency_us": percentiles(&h),
    }))
}

/// Reads one stream: each `item` event's sequence number (its body) is
/// looked up in `due`, and its latency recorded once the warm-up is over.
async fn read_stream(
    mut resp: reqwest::Response,
    due: Due,
    tally: Arc<Mutex<Histogram<u64>>>,
    measure_from: Arc<Mutex<u64>>,
    ready: tokio::sync::mpsc::Sender<()>,
) {
    let mut text = String::new();
    let mut announced = false;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let now = Instant::now();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            if !announced && block.contains("event: counts") {
                announced = true;
                let _ = ready.send(()).await;
            }
            if !block.contains("event: item") {
                continue;
            }
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let item: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            let Some(seq) = item["body"].as_str().and_then(|b| b.parse::<u64>().ok()) else {
                continue;
            };
            let Some(at) = due.lock().expect("lock").remove(&seq) else {
                continue;
            };
            if seq >= *measure_from.lock().expect("lock") {
                let us = now.duration_since(at).as_micros() as u64;
                tally.lock().expect("tally").saturating_record(us.max(1));
            }
        }
    }
}
