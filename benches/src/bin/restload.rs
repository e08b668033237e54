//! An open-loop HTTP load generator for Clarion's REST API: `GET` (or a
//! `POST` of a fixed body) at a fixed rate, with the latency of each request
//! measured from when it was *due*, not when it was sent, so a stalled
//! server shows in the figures instead of slowing the load (no coordinated
//! omission).
//!
//! ```text
//! restload --url http://127.0.0.1:8080/v1/subscribers/s1/preferences \
//!          --header "authorization: Bearer ck_..." --rate 2000 --duration-secs 20
//! ```
//!
//! Prints one JSON line: requests, status counts, and latency p50/p90/p99/
//! p99.9/max in microseconds. `--paths-from N` spreads the load over N
//! URLs (`{i}` in the URL is replaced by 0..N).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Open-loop REST load at a fixed rate; latency from the due time")]
struct Cli {
    /// URL to request; `{i}` is replaced by a number in 0..paths-from.
    #[arg(long)]
    url: String,
    /// A header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Requests per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// How many distinct URLs `{i}` takes.
    #[arg(long, default_value_t = 1)]
    paths_from: u64,
    /// POST this body (JSON) instead of GET.
    #[arg(long)]
    post: Option<String>,
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

struct Tally {
    latency: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &cli.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected `name: value`"))?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.trim().as_bytes())?,
            v.trim().parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .build()?;
    let tally = Arc::new(Mutex::new(Tally {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        statuses: BTreeMap::new(),
    }));
    let interval = Duration::from_nanos(1_000_000_000 / cli.rate.max(1));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(cli.warmup_secs);
    let end = measure_from + Duration::from_secs(cli.duration_secs);
    let mut due = start;
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let url = cli
            .url
            .replace("{i}", &(n % cli.paths_from.max(1)).to_string());
        let req = match &cli.post {
            Some(body) => client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone()),
            None => client.get(url),
        };
        let tally = tally.clone();
        let measured = due >= measure_from;
        let was_due = due;
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
                t.latency.saturating_record(us.max(1));
                *t.statuses.entry(status).or_default() += 1;
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done?;
        }
        n += 1;
        due += interval;
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let t = tally.lock().expect("tally");
    let h = &t.latency;
    Ok(json!({
        "rate": cli.rate,
        "duration_secs": cli.duration_secs,
        "requests": h.len(),
        "achieved_per_sec": h.len() as f64 / cli.duration_secs as f64,
        "statuses": t.statuses,
        "latency_us": {
            "p50": h.value_at_quantile(0.50),
            "p90": h.value_at_quantile(0.90),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
        },
    }))
}
