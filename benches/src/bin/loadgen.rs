//! `loadgen`: end-to-end load generator for a running `clarion serve`.
//!
//! Trigger mode (default) drives `NotificationService/Trigger` over gRPC and
//! measures two things:
//!
//! 1. **Ack**: the latency of each Trigger call (the notification is durably in
//!    the log when it returns) in an HDR histogram, and accepted notifications/s.
//!    Closed loop by default (`--concurrency` tasks, each sends as soon as its
//!    previous call returns). With `--rate R` it is open loop: send i is
//!    scheduled at `start + i/R`, spread over the tasks; when a task is still
//!    busy with an earlier call at a send's scheduled time, that send's
//!    latency is counted from its scheduled time (no coordinated omission).
//!    When the task was idle, latency is counted from the actual send, so the
//!    client's own timer granularity (~1 ms) is not charged to the server.
//!    Both views are reported.
//! 2. **Delivery**: the server's Prometheus counters, scraped every 100 ms from
//!    `--metrics`. `clarion_processor_events_total{processor="dispatcher"}`
//!    counts dispatch requests the dispatcher committed, which for the `sink`
//!    provider *is* the delivery (the sink row is written in that commit; the
//!    `sent` and `delivered` events are appended right after). Delivered/s is
//!    the counter's increase over the run divided by the time from the first
//!    trigger until the counter reached its final value (it has all accepted
//!    notifications, or it stopped growing for `--stall-secs`).
//!    `clarion_log_appended_records_total` counts every event appended to the
//!    log (each sink notification is 6 events: triggered, routed,
//!    dispatch_requested, sent, delivered, ended) and is reported the same way
//!    as the pipeline's events/s.
//!    (`clarion_dispatch_sent_total` is not used: the sink path does not
//!    increment it.)
//!
//! `--kafka-baseline BROKERS` instead runs a raw rdkafka produce + consume of
//! `--kafka-records` records on a fresh topic, with the producer settings of
//! the Kafka log backend (idempotent, acks=all, linger.ms=2,
//! batch.num.messages=500), and reports produce/s, consume/s and the latency
//! of a single awaited produce.
//!
//! Output: a human-readable summary, then one JSON line.
//!
//! Examples:
//!
//!     loadgen --api-key $KEY --concurrency 64 --duration-secs 20
//!     loadgen --api-key $KEY --rate 1000 --duration-secs 20
//!     loadgen --kafka-baseline 127.0.0.1:9092

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgAction, Parser};
use clarion_proto::api;
use clarion_proto::api::notification_service_client::NotificationServiceClient;
use clarion_proto::api::tenant_service_client::TenantServiceClient;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// End-to-end load generator for `clarion serve` (see the module docs in
/// benches/src/bin/loadgen.rs and benches/README.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", version, about, long_about)]
struct Cli {
    /// gRPC endpoint of the Clarion gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051", value_name = "URL")]
    endpoint: String,
    /// Tenant API key (the demo key `clarion serve` prints on first start).
    #[arg(
        long,
        env = "CLARION_API_KEY",
        required_unless_present = "kafka_baseline",
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Prometheus endpoint of the same server, for delivery counters; with
    /// every role in its own process, each process's, comma-separated (the
    /// counters are added up). An unreachable endpoint skips the delivery
    /// measurement.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/metrics",
        value_name = "URL"
    )]
    metrics: String,
    /// Create (a new version of) the template `<workflow-id>-tpl` (variants
    /// default and fr) and the single-step email workflow `<workflow-id>` with
    /// provider `sink` before the run. `--setup=false` uses what exists.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    setup: bool,
    /// Workflow to trigger.
    #[arg(long, default_value = "loadgen", value_name = "ID")]
    workflow_id: String,
    /// Send steps in the set-up workflow, alternating email and SMS (both to
    /// the sink provider): 1 is the spine's single email, 2 the workflow
    /// engine's two-step sequence. Each notification is delivered this many
    /// times.
    #[arg(long, default_value_t = 1, value_name = "N")]
    steps: usize,
    /// Concurrent Trigger tasks (each has at most one call in flight).
    #[arg(long, default_value_t = 64, value_name = "N")]
    concurrency: usize,
    /// HTTP/2 connections the tasks are spread over.
    #[arg(long, default_value_t = 4, value_name = "N")]
    connections: usize,
    /// Length of the trigger phase.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    duration_secs: u64,
    /// Open loop at this many Trigger calls per second (default: closed loop,
    /// as fast as the tasks get answers).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Recipients per Trigger call (each is one notification).
    #[arg(long, default_value_t = 1, value_name = "K")]
    recipients_per_trigger: usize,
    /// Distinct subscriber ids the recipients cycle through (`lg-0` ..), each
    /// with an inline email and locale fr-CA (rendered with the fr variant).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    subscribers: usize,
    /// Size of the trigger's payload JSON.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    payload_bytes: usize,
    /// Longest wait, after the trigger phase, for deliveries to catch up.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    drain_timeout_secs: u64,
    /// Stop waiting for deliveries when the counters did not move for this long.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    stall_secs: u64,
    /// PID of the server process: report its CPU use (total and per thread
    /// name, from /proc) over the trigger phase and the drain.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// How often the server's counters are scraped during the trigger phase
    /// (every 100 ms after it, while the backlog drains). A scrape renders
    /// the whole Prometheus page on one of the server's async workers (about
    /// a millisecond here), so scraping as often as the drain needs would
    /// perturb the latency being measured.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    scrape_ms: u64,
    /// Free-form label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// Instead of driving Clarion, benchmark raw rdkafka produce + consume
    /// against these brokers (comma-separated host:port).
    #[arg(long, value_name = "BROKERS")]
    kafka_baseline: Option<String>,
    /// Records produced (and consumed back) by the Kafka baseline.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    kafka_records: usize,
    /// Size of each baseline record's value.
    #[arg(long, default_value_t = 300, value_name = "BYTES")]
    kafka_record_bytes: usize,
    /// Partitions of the baseline topic (Clarion's default is 4 per topic).
    #[arg(long, default_value_t = 4, value_name = "N")]
    kafka_partitions: u32,
    /// Sequential produce-and-await calls timed for the single-record latency.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    kafka_latency_samples: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        match &cli.kafka_baseline {
            Some(brokers) => kafka_baseline(&cli, brokers).await,
            None => trigger_load(&cli).await,
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

// ---------------------------------------------------------------- histograms

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

fn summary_us(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "count": h.len(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn print_latency(name: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("  {name}: no samples");
        return;
    }
    println!(
        "  {name}: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    );
}

// ------------------------------------------------------------ trigger mode

fn authed<T>(auth: &MetadataValue<Ascii>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}

async fn setup(
    ch: &Channel,
    auth: &MetadataValue<Ascii>,
    workflow_id: &str,
    steps: usize,
) -> anyhow::Result<()> {
    let v = |locale: &str, subject: &str, body: &str| api::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    let template_id = format!("{workflow_id}-tpl");
    let mut tenants = TenantServiceClient::new(ch.clone());
    let t = tenants
        .put_template(authed(
            auth,
            api::Template {
                template_id: template_id.clone(),
                channel: "email".into(),
                variants: clarion_bench::EMAIL_VARIANTS
                    .iter()
                    .map(|(locale, subject, body)| v(locale, subject, body))
                    .collect(),
            },
        ))
        .await
        .context("PutTemplate")?
        .into_inner();
    let sms_template_id = format!("{workflow_id}-sms-tpl");
    if steps > 1 {
        tenants
            .put_template(authed(
                auth,
                api::Template {
                    template_id: sms_template_id.clone(),
                    channel: "sms".into(),
                    variants: vec![
                        v(
                            "default",
                            "",
                            "Reminder: technician visit on {{ payload.day }}.",
                        ),
                        v(
                            "fr",
                            "",
                            "Rappel : visite du technicien le {{ payload.day }}.",
                        ),
                    ],
                },
            ))
            .await
            .context("PutTemplate (sms)")?;
    }
    let step = |i: usize| {
        let (channel, template_id) = if i.is_multiple_of(2) {
            ("email", template_id.clone())
        } else {
            ("sms", sms_template_id.clone())
        };
        api::WorkflowStep {
            channel: channel.into(),
            template_id,
            provider: "sink".into(),
        }
    };
    let w = tenants
        .put_workflow(authed(
            auth,
            api::Workflow {
                workflow_id: workflow_id.into(),
                name: format!("loadgen: {steps} step(s) to the sink"),
                steps: (0..steps).map(step).collect(),
            },
        ))
        .await
        .context("PutWorkflow")?
        .into_inner();
    println!(
        "setup: template {workflow_id}-tpl v{}, workflow {workflow_id} v{} with {steps} step(s) (provider sink)",
        t.version, w.version
    );
    Ok(())
}

/// Builds Trigger requests: recipients cycle through the subscriber pool.
struct Requests {
    workflow_id: String,
    payload_json: String,
    per_trigger: usize,
    subscribers: usize,
    seq: AtomicU64,
}

impl Requests {
    fn next(&self) -> api::TriggerRequest {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) as usize;
        let recipients = (0..self.per_trigger)
            .map(|j| {
                let id = format!("lg-{}", (n * self.per_trigger + j) % self.subscribers);
                api::Recipient {
                    email: format!("{id}@example.test"),
                    phone: format!("+1555{:07}", (n * self.per_trigger + j) % self.subscribers),
                    locale: "fr-CA".into(),
                    subscriber_id: id,
                    ..Default::default()
                }
            })
            .collect();
        api::TriggerRequest {
            workflow_id: self.workflow_id.clone(),
            recipients,
            payload_json: self.payload_json.clone(),
            idempotency_key: String::new(),
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct WorkerStats {
    /// Latency as the server's clients see it (open loop: from the scheduled
    /// send when the task was late, else from the actual send).
    ack: Option<Histogram<u64>>,
    /// Open loop only: always from the scheduled time.
    from_schedule: Option<Histogram<u64>>,
    ok: u64,
    notifications: u64,
    errors: BTreeMap<String, u64>,
    /// Open loop: scheduled sends dropped because the run ended first.
    skipped: u64,
}

impl WorkerStats {
    fn new() -> Self {
        WorkerStats {
            ack: Some(histogram()),
            from_schedule: Some(histogram()),
            ..Default::default()
        }
    }

    fn merge(&mut self, o: WorkerStats) {
        if let (Some(a), Some(b)) = (self.ack.as_mut(), o.ack.as_ref()) {
            a.add(b).expect("same bounds");
        }
        if let (Some(a), Some(b)) = (self.from_schedule.as_mut(), o.from_schedule.as_ref()) {
            a.add(b).expect("same bounds");
        }
        self.ok += o.ok;
        self.notifications += o.notifications;
        self.skipped += o.skipped;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

async fn call(
    client: &mut NotificationServiceClient<Channel>,
    auth: &MetadataValue<Ascii>,
    reqs: &Requests,
    stats: &mut WorkerStats,
) -> bool {
    match client.trigger(authed(auth, reqs.next())).await {
        Ok(r) => {
            stats.ok += 1;
            stats.notifications += r.get_ref().notification_ids.len() as u64;
            true
        }
        Err(s) => {
            let msg: String = s.message().chars().take(120).collect();
            *stats
                .errors
                .entry(format!("{:?}: {msg}", s.code()))
                .or_default() += 1;
            false
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    w: usize,
    cli: Arc<Cli>,
    ch: Channel,
    auth: MetadataValue<Ascii>,
    reqs: Arc<Requests>,
    start: Instant,
    deadline: Instant,
) -> WorkerStats {
    let mut client = NotificationServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut st = WorkerStats::new();
    match cli.rate {
        None => {
            while Instant::now() < deadline {
                let t = Instant::now();
                call(&mut client, &auth, &reqs, &mut st).await;
                record(st.ack.as_mut().expect("histogram"), t.elapsed());
            }
        }
        Some(rate) => {
            // Sends w, w + C, w + 2C, ... of the global schedule `start + i / rate`.
            let c = cli.concurrency as f64;
            // Late tasks give up this long after the end instead of sending forever.
            let hard_stop = deadline + Duration::from_secs(10);
            let mut k = 0u64;
            loop {
                let slot = (w as f64 + k as f64 * c) / rate;
                let scheduled = start + Duration::from_secs_f64(slot);
                k += 1;
                if scheduled >= deadline {
                    break;
                }
                let free_at = Instant::now();
                if free_at >= hard_stop {
                    st.skipped += 1;
                    continue;
                }
                if free_at < scheduled {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                let sent = Instant::now();
                call(&mut client, &auth, &reqs, &mut st).await;
                let done = Instant::now();
                // Late because busy with an earlier call: the wait counts.
                let origin = if free_at > scheduled { scheduled } else { sent };
                record(st.ack.as_mut().expect("histogram"), done - origin);
                record(
                    st.from_schedule.as_mut().expect("histogram"),
                    done.saturating_duration_since(scheduled),
                );
            }
        }
    }
    if cli.rate.is_none() {
        st.from_schedule = None;
    }
    st
}

// ------------------------------------------------------------- metrics

/// One scrape: series (`name{labels}`) → value.
type Scrape = HashMap<String, f64>;

async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(hostport),
    )
    .await
    .context("connect timeout")??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .context("read timeout")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Scrapes `urls` (comma-separated: one per process when every role runs in
/// its own) and adds up each series over them.
async fn scrape(urls: &str) -> anyhow::Result<Scrape> {
    let mut out = Scrape::new();
    for url in urls.split(',').filter(|u| !u.is_empty()) {
        let body = http_get(url).await?;
        for l in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let Some((series, value)) = l.rsplit_once(' ') else {
                continue;
            };
            if let Ok(v) = value.trim().parse::<f64>() {
                *out.entry(series.trim().to_string()).or_default() += v;
            }
        }
    }
    Ok(out)
}

fn processor_events(s: &Scrape, processor: &str) -> f64 {
    s.get(&format!(
        "clarion_processor_events_total{{processor=\"{processor}\"}}"
    ))
    .copied()
    .unwrap_or(0.0)
}

fn triggers_accepted(s: &Scrape) -> f64 {
    s.get("clarion_triggers_accepted_total")
        .copied()
        .unwrap_or(0.0)
}

/// Events appended to the log, every topic (`None` before the first).
fn appended(s: &Scrape) -> Option<f64> {
    s.get("clarion_log_appended_records_total").copied()
}

/// Counters of interest at one instant.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: Duration,
    dispatcher: f64,
    /// Events appended to the log, every topic.
    logged: f64,
    router: f64,
    accepted: f64,
}

fn sample(s: &Scrape, at: Duration) -> Sample {
    Sample {
        at,
        dispatcher: processor_events(s, "dispatcher"),
        logged: appended(s).unwrap_or(0.0),
        router: processor_events(s, "router"),
        accepted: triggers_accepted(s),
    }
}

/// Waits until the server's processors are idle (counters unchanged for 1 s),
/// so a previous run's backlog does not count in this one.
async fn quiesce(url: &str) -> anyhow::Result<Scrape> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = scrape(url).await?;
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = scrape(url).await?;
        let same = ["dispatcher", "projector", "router"]
            .iter()
            .all(|p| processor_events(&now, p) == processor_events(&last, p))
            && appended(&now) == appended(&last);
        if !same {
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(1) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            println!("warning: server still busy after 300 s; starting anyway");
            return Ok(now);
        }
        last = now;
    }
}

// -------------------------------------------------------- process CPU

const CLK_TCK: f64 = 100.0;

/// CPU ticks (user + system) of a process and of its threads by name.
#[derive(Clone, Debug, Default)]
struct CpuSnap {
    total: u64,
    threads: BTreeMap<String, (u64, usize)>,
}

fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_string();
    let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After ")": state is field 3, utime 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn cpu_snap(pid: u32) -> Option<CpuSnap> {
    let (_, total) = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    let mut per_tid = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Some((name, t)) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            per_tid.insert(e.file_name().to_string_lossy().into_owned(), (name, t));
        }
    }
    for (_, (name, t)) in per_tid {
        let e = threads.entry(name).or_default();
        e.0 += t;
        e.1 += 1;
    }
    Some(CpuSnap { total, threads })
}

/// The machine's CPU time in ticks (the `cpu` line of /proc/stat): busy
/// (user, nice, system, irq, softirq), stolen by the hypervisor, and all.
/// On a shared virtual machine, steal is what other guests took from this
/// one while it wanted to run: a run with much of it measured the host.
#[derive(Clone, Copy, Debug)]
struct MachineSnap {
    busy: u64,
    steal: u64,
    total: u64,
}

fn machine_snap() -> Option<MachineSnap> {
    parse_machine_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_stat(stat: &str) -> Option<MachineSnap> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    // (guest time is already counted in user).
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(MachineSnap {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
        total: (0..8).map(at).sum(),
    })
}

/// Busy and stolen shares of the machine's CPU time between two snapshots.
fn machine_delta(a: &MachineSnap, b: &MachineSnap) -> Value {
    let total = b.total.saturating_sub(a.total).max(1) as f64;
    let pct = |x: u64, y: u64| (y.saturating_sub(x) as f64 / total * 1000.0).round() / 10.0;
    json!({ "busy_pct": pct(a.busy, b.busy), "steal_pct": pct(a.steal, b.steal) })
}

/// CPU use between two snapshots, in percent of one core.
fn cpu_delta(a: &CpuSnap, b: &CpuSnap, over: Duration) -> Value {
    let pct = |ticks: u64| {
        let secs = ticks as f64 / CLK_TCK;
        (secs / over.as_secs_f64() * 1000.0).round() / 10.0
    };
    let mut threads: Vec<(String, u64, usize)> = b
        .threads
        .iter()
        .map(|(n, (t, count))| {
            let before = a.threads.get(n).map(|x| x.0).unwrap_or(0);
            (n.clone(), t.saturating_sub(before), *count)
        })
        .filter(|(_, t, _)| *t > 0)
        .collect();
    threads.sort_by_key(|t| std::cmp::Reverse(t.1));
    json!({
        "process_pct": pct(b.total.saturating_sub(a.total)),
        "threads": threads
            .into_iter()
            .map(|(n, t, count)| json!({"name": n, "threads": count, "pct": pct(t)}))
            .collect::<Vec<_>>(),
    })
}

fn print_cpu(title: &str, v: &Value) {
    println!(
        "  {title}: {}% of one core (2 cores = 200%)",
        v["process_pct"]
    );
    if let Some(ts) = v["threads"].as_array() {
        for t in ts.iter().take(8) {
            println!(
                "    {:<18} x{:<3} {:>6}%",
                t["name"].as_str().unwrap_or_default(),
                t["threads"],
                t["pct"]
            );
        }
    }
}

// ------------------------------------------------------------- the run

async fn trigger_load(cli: &Cli) -> anyhow::Result<Value> {
    let cli = Arc::new(cli.clone());
    if cli.concurrency == 0
        || cli.connections == 0
        || cli.recipients_per_trigger == 0
        || cli.steps == 0
    {
        bail!(
            "--concurrency, --connections, --recipients-per-trigger and --steps must be at least 1"
        );
    }
    let key = cli.api_key.clone().context("--api-key is required")?;
    let auth: MetadataValue<Ascii> = format!("Bearer {key}")
        .parse()
        .context("the API key must be ASCII")?;
    let mut channels = Vec::new();
    for _ in 0..cli.connections {
        channels.push(
            Channel::from_shared(cli.endpoint.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {}", cli.endpoint))?,
        );
    }
    if cli.setup {
        setup(&channels[0], &auth, &cli.workflow_id, cli.steps).await?;
    }
    let reqs = Arc::new(Requests {
        workflow_id: cli.workflow_id.clone(),
        payload_json: clarion_bench::padded_payload("Ana", cli.payload_bytes),
        per_trigger: cli.recipients_per_trigger,
        subscribers: cli.subscribers.max(1),
        seq: AtomicU64::new(0),
    });
    // One call first: fails fast on a bad key or workflow, warms the caches.
    {
        let mut client = NotificationServiceClient::new(channels[0].clone());
        client
            .trigger(authed(&auth, reqs.next()))
            .await
            .context("first Trigger call")?;
    }

    let metrics_ok = match quiesce(&cli.metrics).await {
        Ok(_) => true,
        Err(e) => {
            println!(
                "warning: metrics at {} unavailable ({e:#}): delivery not measured",
                cli.metrics
            );
            false
        }
    };

    let mode = match cli.rate {
        Some(r) => format!("open loop at {r} triggers/s"),
        None => "closed loop (max throughput)".into(),
    };
    println!(
        "trigger phase: {mode}, {} s, concurrency {}, {} connection(s), {} recipient(s)/trigger",
        cli.duration_secs, cli.concurrency, cli.connections, cli.recipients_per_trigger
    );

    // Counter sampler: every 100 ms from just before the first trigger.
    let samples: Arc<tokio::sync::Mutex<Vec<Sample>>> = Arc::default();
    let stop_sampler = Arc::new(tokio::sync::Notify::new());
    let base = if metrics_ok {
        Some(sample(&scrape(&cli.metrics).await?, Duration::ZERO))
    } else {
        None
    };
    let cpu0 = cli.server_pid.and_then(cpu_snap);
    let self0 = cpu_snap(std::process::id());
    let machine0 = machine_snap();
    // Time zero of the run: samples and the trigger phase are timed from here.
    let start = Instant::now();
    let sampler = metrics_ok.then(|| {
        let (samples, stop, url) = (samples.clone(), stop_sampler.clone(), cli.metrics.clone());
        let (trigger_secs, scrape_ms) = (cli.duration_secs, cli.scrape_ms);
        tokio::spawn(async move {
            let during = Duration::from_secs(trigger_secs);
            let (slow, fast) = (
                Duration::from_millis(scrape_ms.max(1)),
                Duration::from_millis(100),
            );
            loop {
                // Sparse while the latency is measured, fine-grained once the
                // triggers stop (the drain's end is what delivered/s needs).
                let left = during.saturating_sub(start.elapsed());
                let nap = if left.is_zero() {
                    fast
                } else {
                    slow.min(left).max(Duration::from_millis(1))
                };
                tokio::select! {
                    _ = tokio::time::sleep(nap) => {}
                    _ = stop.notified() => return,
                }
                if let Ok(s) = scrape(&url).await {
                    samples.lock().await.push(sample(&s, start.elapsed()));
                }
            }
        })
    });
    let deadline = start + Duration::from_secs(cli.duration_secs);
    let tasks: Vec<_> = (0..cli.concurrency)
        .map(|w| {
            tokio::spawn(worker(
                w,
                cli.clone(),
                channels[w % channels.len()].clone(),
                auth.clone(),
                reqs.clone(),
                start,
                deadline,
            ))
        })
        .collect();
    let mut stats = WorkerStats::new();
    if cli.rate.is_none() {
        stats.from_schedule = None;
    }
    for t in tasks {
        stats.merge(t.await?);
    }
    let trigger_elapsed = start.elapsed();
    // The counters as the triggers stop (the sampler is sparse until then).
    if metrics_ok {
        if let Ok(s) = scrape(&cli.metrics).await {
            let mut all = samples.lock().await;
            all.push(sample(&s, trigger_elapsed));
            all.sort_by_key(|x| x.at);
        }
    }
    let cpu1 = cli.server_pid.and_then(cpu_snap);
    let self1 = cpu_snap(std::process::id());
    let machine1 = machine_snap();

    let accepted_per_s = stats.notifications as f64 / trigger_elapsed.as_secs_f64();
    let triggers_per_s = stats.ok as f64 / trigger_elapsed.as_secs_f64();
    let errors: u64 = stats.errors.values().sum();
    println!("\n== ack (Trigger) ==");
    println!(
        "  {} triggers ok, {} errors, {} notifications accepted in {:.2} s",
        stats.ok,
        errors,
        stats.notifications,
        trigger_elapsed.as_secs_f64()
    );
    println!("  triggers/s: {triggers_per_s:.0}   accepted notifications/s: {accepted_per_s:.0}");
    for (k, v) in &stats.errors {
        println!("  error x{v}: {k}");
    }
    let ack = stats.ack.as_ref().expect("histogram");
    print_latency("ack latency", ack);
    if let Some(h) = &stats.from_schedule {
        print_latency("ack latency from schedule", h);
        if stats.skipped > 0 {
            println!(
                "  {} scheduled sends skipped (client >10 s behind)",
                stats.skipped
            );
        }
    }

    // Drain: wait until every accepted notification is delivered and every
    // event projected, or the counters stall.
    let mut delivery = Value::Null;
    let mut cpu_drain = Value::Null;
    if let (Some(base), Some(sampler)) = (base, sampler) {
        let steps = cli.steps as f64;
        let want = stats.notifications as f64 * steps;
        let drain_deadline = Instant::now() + Duration::from_secs(cli.drain_timeout_secs);
        let stall = Duration::from_secs(cli.stall_secs);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let s = samples.lock().await;
            let Some(last) = s.last().copied() else {
                continue;
            };
            // When the counters took their current values; a server that
            // stopped answering counts as stalled too.
            let since = s
                .iter()
                .rev()
                .take_while(|x| x.dispatcher == last.dispatcher && x.logged == last.logged)
                .last()
                .map(|x| x.at)
                .unwrap_or(last.at);
            let idle = start.elapsed().saturating_sub(since);
            // Every delivery made, and no event appended for a second: the
            // pipeline is drained.
            let done = last.dispatcher - base.dispatcher >= want && idle >= Duration::from_secs(1);
            let stalled = idle >= stall;
            if done || stalled || Instant::now() > drain_deadline {
                break;
            }
        }
        stop_sampler.notify_one();
        let _ = sampler.await;
        let cpu2 = cli.server_pid.and_then(cpu_snap);
        let s = samples.lock().await.clone();
        let last = *s.last().context("no metrics samples")?;
        // When a counter first reached its final value.
        let reached = |f: fn(&Sample) -> f64| {
            let fin = f(&last);
            s.iter()
                .find(|x| f(x) >= fin)
                .map(|x| x.at)
                .unwrap_or(last.at)
        };
        let t_disp = reached(|x| x.dispatcher);
        let t_logged = reached(|x| x.logged);
        let at_trigger_end = s
            .iter()
            .rev()
            .find(|x| x.at <= trigger_elapsed)
            .copied()
            .unwrap_or(base);
        let delivered = last.dispatcher - base.dispatcher;
        let logged = last.logged - base.logged;
        let delivered_per_s = delivered / t_disp.as_secs_f64().max(1e-9);
        let notifications_per_s = delivered_per_s / steps;
        let logged_per_s = logged / t_logged.as_secs_f64().max(1e-9);
        let events_per_notification = logged / (stats.notifications as f64).max(1.0);
        let during = (at_trigger_end.dispatcher - base.dispatcher)
            / at_trigger_end.at.as_secs_f64().max(1e-9);
        let backlog =
            stats.notifications as f64 - (at_trigger_end.dispatcher - base.dispatcher) / steps;
        let complete = delivered >= want;
        println!("\n== delivery (sink), from {} ==", cli.metrics);
        println!(
            "  delivered {delivered:.0} messages of {} accepted notifications x {steps} step(s) ({}) in {:.2} s after the first trigger",
            stats.notifications,
            if complete { "all" } else { "INCOMPLETE" },
            t_disp.as_secs_f64()
        );
        println!(
            "  delivered/s: {delivered_per_s:.0} messages = {notifications_per_s:.0} notifications/s completed"
        );
        println!(
            "  log: {logged:.0} events appended ({events_per_notification:.1} per notification) in {:.2} s = {logged_per_s:.0} events/s",
            t_logged.as_secs_f64()
        );
        println!(
            "  during the trigger phase: {during:.0} delivered/s; backlog at its end {backlog:.0} notifications; drain took {:.2} s",
            t_disp.saturating_sub(trigger_elapsed).as_secs_f64()
        );
        println!(
            "  router applied {:.0} triggers, gateway counted {:.0} accepted",
            last.router - base.router,
            last.accepted - base.accepted
        );
        delivery = json!({
            "counter": "clarion_processor_events_total{processor=\"dispatcher\"}",
            "delivered": delivered,
            "complete": complete,
            "delivered_at_s": t_disp.as_secs_f64(),
            "steps": cli.steps,
            "delivered_per_s": delivered_per_s.round(),
            "notifications_per_s": notifications_per_s.round(),
            "events_per_notification": events_per_notification,
            "logged_events": logged,
            "logged_events_per_s": logged_per_s.round(),
            "delivered_per_s_during_trigger_phase": during.round(),
            "backlog_at_trigger_end": backlog,
            "drain_s": t_disp.saturating_sub(trigger_elapsed).as_secs_f64(),
            "router_triggers": last.router - base.router,
        });
        if let (Some(c1), Some(c2)) = (&cpu1, &cpu2) {
            let over = start.elapsed().saturating_sub(trigger_elapsed);
            if over > Duration::from_millis(500) {
                cpu_drain = cpu_delta(c1, c2, over);
            }
        }
    }

    let mut cpu = json!({});
    if let (Some(a), Some(b)) = (&cpu0, &cpu1) {
        println!("\n== server CPU ==");
        let v = cpu_delta(a, b, trigger_elapsed);
        print_cpu("trigger phase", &v);
        cpu["server_trigger_phase"] = v;
        if !cpu_drain.is_null() {
            print_cpu("drain after it", &cpu_drain);
            cpu["server_drain"] = cpu_drain;
        }
    }
    if let (Some(a), Some(b)) = (&self0, &self1) {
        let v = cpu_delta(a, b, trigger_elapsed);
        println!("  loadgen itself: {}% of one core", v["process_pct"]);
        cpu["loadgen_pct"] = v["process_pct"].clone();
    }
    if let (Some(a), Some(b)) = (&machine0, &machine1) {
        let v = machine_delta(a, b);
        println!(
            "  machine: {}% busy, {}% of its CPU time stolen by the hypervisor",
            v["busy_pct"], v["steal_pct"]
        );
        cpu["machine"] = v;
    }

    Ok(json!({
        "mode": "trigger",
        "label": cli.label,
        "endpoint": cli.endpoint,
        "loop": if cli.rate.is_some() { "open" } else { "closed" },
        "rate_target": cli.rate,
        "concurrency": cli.concurrency,
        "connections": cli.connections,
        "recipients_per_trigger": cli.recipients_per_trigger,
        "duration_s": trigger_elapsed.as_secs_f64(),
        "triggers_ok": stats.ok,
        "triggers_err": errors,
        "errors": stats.errors,
        "notifications_accepted": stats.notifications,
        "triggers_per_s": triggers_per_s.round(),
        "accepted_per_s": accepted_per_s.round(),
        "ack_latency_us": summary_us(ack),
        "ack_latency_from_schedule_us": stats.from_schedule.as_ref().map(summary_us),
        "delivery": delivery,
        "cpu": cpu,
    }))
}

// ------------------------------------------------------ Kafka baseline

async fn kafka_baseline(cli: &Cli, brokers: &str) -> anyhow::Result<Value> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    let n = cli.kafka_records;
    let parts = cli.kafka_partitions.max(1);
    let topic = format!("loadgen-baseline-{:016x}", rand::random::<u64>());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    for r in admin
        .create_topics(
            [&NewTopic::new(
                &topic,
                parts as i32,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        if let Err((name, code)) = r {
            bail!("creating {name}: {code}");
        }
    }
    // The log backend's producer settings (services/clarion-log/src/kafka.rs).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "500")
        .set("message.timeout.ms", "30000")
        .create()?;
    // Wait until the topic's partitions are visible.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = producer.clone();
        let t = topic.clone();
        let md = tokio::task::spawn_blocking(move || {
            p.client().fetch_metadata(Some(&t), Duration::from_secs(5))
        })
        .await??;
        if md
            .topics()
            .iter()
            .any(|mt| mt.name() == topic && mt.partitions().len() == parts as usize)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("topic {topic} not visible after creation");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let value = clarion_bench::sample_event(cli.kafka_record_bytes).encode();
    let keys: Vec<String> = (0..10_000).map(|i| format!("demo/lg-{i}")).collect();
    println!(
        "kafka baseline: topic {topic} ({parts} partitions), {n} records of {} bytes, brokers {brokers}",
        value.len()
    );

    // 1. Single awaited produce, one at a time (what one Trigger's append pays).
    let mut single = histogram();
    for i in 0..cli.kafka_latency_samples {
        let key = &keys[i % keys.len()];
        let t = Instant::now();
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(key.as_bytes())
                    .payload(&value[..])
                    .partition(clarion_log::partition_for(key, parts) as i32),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
        record(&mut single, t.elapsed());
    }

    // 2. Throughput: enqueue everything without awaiting, then await every
    // delivery. Each delivery is awaited by its own task, so its latency is
    // taken when the ack arrives, not when the loop gets to it.
    let mut inflight = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let key = &keys[i % keys.len()];
        let mut rec = FutureRecord::to(&topic)
            .key(key.as_bytes())
            .payload(&value[..])
            .partition(clarion_log::partition_for(key, parts) as i32);
        loop {
            match producer.send_result(rec) {
                Ok(d) => {
                    let at = Instant::now();
                    inflight.push(tokio::spawn(async move { (d.await, at.elapsed()) }));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    let mut per_record = histogram();
    for t in inflight {
        let (r, lat) = t.await?;
        r?.map_err(|(e, _)| e)?;
        record(&mut per_record, lat);
    }
    let produce_s = t0.elapsed().as_secs_f64();
    let produce_per_s = n as f64 / produce_s;

    // 3. Consume everything back (the log backend's consumer settings).
    let total = n + cli.kafka_latency_samples;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(&topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let t1 = Instant::now();
    let mut got = 0usize;
    let mut bytes = 0usize;
    let consume_deadline = Instant::now() + Duration::from_secs(600);
    while got < total && Instant::now() < consume_deadline {
        match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
            Ok(Ok(m)) => {
                use rdkafka::message::Message;
                got += 1;
                bytes += m.payload().map(|p| p.len()).unwrap_or(0);
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    let consume_s = t1.elapsed().as_secs_f64();
    let consume_per_s = got as f64 / consume_s;

    println!("\n== raw rdkafka baseline ==");
    print_latency("single produce (awaited, one at a time)", &single);
    println!(
        "  produce: {n} records in {produce_s:.2} s = {produce_per_s:.0} records/s ({:.1} MB/s)",
        produce_per_s * value.len() as f64 / 1e6
    );
    print_latency("per-record enqueue→ack under full load", &per_record);
    println!(
        "  consume: {got} of {total} records in {consume_s:.2} s = {consume_per_s:.0} records/s ({:.1} MB/s){}",
        bytes as f64 / consume_s / 1e6,
        if got < total { "  INCOMPLETE" } else { "" }
    );
    Ok(json!({
        "mode": "kafka_baseline",
        "label": cli.label,
        "brokers": brokers,
        "topic": topic,
        "partitions": parts,
        "record_bytes": value.len(),
        "records": n,
        "single_produce_latency_us": summary_us(&single),
        "produce_s": produce_s,
        "produce_per_s": produce_per_s.round(),
        "produce_latency_under_load_us": summary_us(&per_record),
        "consumed": got,
        "consume_s": consume_s,
        "consume_per_s": consume_per_s.round(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_gives_busy_steal_and_total_ticks() {
        let stat = "cpu  100 5 20 800 7 1 2 65 9 0\ncpu0 50 2 10 400 3 0 1 30 0 0\nintr 1\n";
        let m = parse_machine_stat(stat).expect("a cpu line");
        assert_eq!((m.busy, m.steal, m.total), (128, 65, 1000));
        let later = MachineSnap {
            busy: m.busy + 300,
            steal: m.steal + 100,
            total: m.total + 1000,
        };
        let v = machine_delta(&m, &later);
        assert_eq!(
            (v["busy_pct"].as_f64(), v["steal_pct"].as_f64()),
            (Some(30.0), Some(10.0))
        );
        assert!(parse_machine_stat("intr 1\n").is_none());
    }
}
