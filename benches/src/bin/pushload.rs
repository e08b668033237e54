//! `pushload`: pushes/s through the dispatcher's push provider to the local
//! APNs server (`clarion-push-servers`: HTTP/2 over TLS, ES256 provider
//! token checked), both in this process on the same cores, over one HTTP/2
//! connection.
//!
//! Each of `--concurrency` tasks runs the dispatcher's effect for one
//! `DispatchRequested` of channel push after another, as the dispatcher
//! runner does after its commit: decode the event, open each device's
//! sealed token (AES-256-GCM), build the APNs request, send it, classify
//! the answer, build the outcome events. `--devices N` gives every send N
//! iOS devices of the subscriber (a fan-out: N concurrent streams per send).
//! `--raw` instead calls `ApnsClient::send` directly (the client and the
//! server alone).
//!
//! Output: a human-readable summary, then one JSON line.
//!
//!     pushload --devices 1 --concurrency 256 --duration-secs 10
//!     pushload --devices 3 --concurrency 128 --duration-secs 10

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use clarion_dispatch::apns::{apns_id_for_attempt, ApnsRequest, Environment, PushType};
use clarion_dispatch::push::{ApnsAppConfig, PushAppConfig, PushConfig, PushProvider};
use clarion_dispatch::secrets::Keyring;
use clarion_dispatch::{device_token, DispatchEffects};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_push_servers::apns::{self, ApnsServer, Options, ProviderKey};
use clarion_runtime::{Clock, Effects, SystemClock};
use serde_json::json;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
struct Args {
    /// iOS devices per send (the fan-out).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Sends in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Runtime worker threads (client and server share them).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `ApnsClient::send` alone, without the dispatcher's effect.
    #[arg(long)]
    raw: bool,
}

const TENANT: &str = "bench";
const APP: &str = "fieldapp";

fn config(server: &ApnsServer, key: &ProviderKey) -> PushConfig {
    PushConfig {
        apps: vec![PushAppConfig {
            tenant: TENANT.into(),
            app: APP.into(),
            apns: Some(ApnsAppConfig {
                team_id: apns::TEAM_ID.into(),
                key_id: apns::KEY_ID.into(),
                key_pem: key.pem.clone(),
                topic: "com.bench.field".into(),
                environment: Environment::Sandbox,
                base_url: Some(server.base_url.clone()),
                ca_pem: Some(server.ca_pem.clone()),
                timeout_ms: 10_000,
            }),
            fcm: None,
        }],
    }
}

/// `n` encoded dispatch requests of `devices` devices each, distinct
/// attempts and tokens.
fn requests(keyring: &Keyring, n: usize, devices: usize) -> Vec<Vec<u8>> {
    let tenant = TenantId::parse(TENANT).expect("tenant id");
    (0..n)
        .map(|i| {
            let targets = (0..devices)
                .map(|d| pb::PushTarget {
                    device_id: format!("dev-{i}-{d}"),
                    platform: "ios".into(),
                    provider: "apns".into(),
                    token: Some(device_token::seal(
                        keyring,
                        TENANT,
                        &format!("{:064x}", i * 16 + d),
                    )),
                    token_registered_at_ms: 1,
                })
                .collect();
            let e = Event {
                id: Id::derive(&[format!("bench-{i}").as_bytes()]),
                partition_key: clarion_domain::ids::recipient_key(&tenant, &format!("sub-{i}")),
                tenant: tenant.clone(),
                occurred_at_ms: 1,
                causation_id: None,
                correlation_id: None,
                actor: Actor::System("router".into()),
                payload: Payload::DispatchRequested(pb::DispatchRequested {
                    notification_id: format!("n{i}"),
                    attempt_id: format!("{i:032x}"),
                    channel: "push".into(),
                    provider: "push".into(),
                    subject: "Tâche assignée".into(),
                    body: "Réparation de chaudière demain à 10 h, 12 rue des Érables".into(),
                    locale: "fr-CA".into(),
                    subscriber_id: format!("sub-{i}"),
                    push_targets: targets,
                    push: Some(Box::new(pb::PushOptions {
                        app_id: APP.into(),
                        priority: "high".into(),
                        sound: "default".into(),
                        collapse_key: format!("job-{i}"),
                        ..Default::default()
                    })),
                    link: format!("fieldapp://jobs/J-{i}"),
                    data_json: json!({"job": format!("J-{i}")}).to_string(),
                    ..Default::default()
                }),
            };
            e.encode()
        })
        .collect()
}

/// CPU seconds this process used so far (user + system, from /proc).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Counters {
    sends: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

async fn drive(args: &Args, counters: Arc<Counters>, server: &ApnsServer, key: &ProviderKey) {
    let keyring = Arc::new(Keyring::new("k1", &[("k1", [9; 32])]).expect("keyring"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cfg = config(server, key);
    let provider = PushProvider::new(&cfg, keyring.clone(), clock.clone()).expect("provider");
    let effects = Arc::new(DispatchEffects::new(vec![Arc::new(provider)]));
    let reqs = Arc::new(requests(&keyring, 4096, args.devices));
    let raw = Arc::new(
        cfg.apps[0]
            .apns
            .as_ref()
            .expect("apns")
            .client(Environment::Sandbox, clock.clone(), "bench")
            .expect("client"),
    );
    for t in 0..args.concurrency {
        let (effects, reqs, raw, counters, clock) = (
            effects.clone(),
            reqs.clone(),
            raw.clone(),
            counters.clone(),
            clock.clone(),
        );
        let raw_mode = args.raw;
        tokio::spawn(async move {
            let mut i = t;
            while !counters.stop.load(Ordering::Relaxed) {
                let ok = if raw_mode {
                    let req = ApnsRequest::new(
                        json!({"aps": {"alert": {"title": "Tâche", "body": "Réparation"}}}),
                        PushType::Alert,
                        apns_id_for_attempt(&format!("{i:032x}")),
                    );
                    matches!(
                        raw.send(&format!("{:064x}", i), &req).await,
                        clarion_dispatch::apns::Outcome::Accepted { .. }
                    )
                } else {
                    let emits = effects.run(&reqs[i % reqs.len()], clock.now_ms()).await;
                    emits
                        .iter()
                        .any(|e| matches!(e.event.payload, Payload::Delivered(_)))
                };
                let c = if ok {
                    &counters.sends
                } else {
                    &counters.failed
                };
                c.fetch_add(1, Ordering::Relaxed);
                i += STRIDE;
            }
        });
    }
}

/// Tasks step through the request pool by a prime stride, so two tasks do
/// not send the same request at the same time.
const STRIDE: usize = 7919;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let key = ProviderKey::generate();
    let server = ApnsServer::start_with(Options {
        record: false,
        ..Options::new(key.public.clone())
    })
    .await;
    let counters = Arc::new(Counters {
        sends: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    drive(&args, counters.clone(), &server, &key).await;
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let (s0, a0, f0, c0, t0) = (
        counters.sends.load(Ordering::SeqCst),
        server.accepted(),
        counters.failed.load(Ordering::SeqCst),
        cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    let secs = t0.elapsed().as_secs_f64();
    let sends = counters.sends.load(Ordering::SeqCst) - s0;
    let pushes = (server.accepted() - a0) as u64;
    let failed = counters.failed.load(Ordering::SeqCst) - f0;
    let cpu = cpu_seconds() - c0;
    counters.stop.store(true, Ordering::SeqCst);
    let per_push_us = if pushes == 0 {
        0.0
    } else {
        cpu * 1e6 / pushes as f64
    };
    println!(
        "mode {}, {} device(s) per send, concurrency {}, {} threads, {:.1} s",
        if args.raw {
            "raw client"
        } else {
            "dispatcher effect"
        },
        args.devices,
        args.concurrency,
        args.threads,
        secs
    );
    println!("sends/s        {:>10.0}", sends as f64 / secs);
    println!(
        "pushes/s       {:>10.0}  (accepted by the APNs server)",
        pushes as f64 / secs
    );
    println!("failed sends   {failed:>10}");
    println!("connections    {:>10}", server.connections());
    println!(
        "CPU            {:>10.2} cores, {per_push_us:.1} µs per push (client and server)",
        cpu / secs
    );
    println!(
        "{}",
        json!({
            "raw": args.raw, "devices": args.devices, "concurrency": args.concurrency,
            "threads": args.threads, "seconds": secs,
            "sends_per_s": sends as f64 / secs, "pushes_per_s": pushes as f64 / secs,
            "failed": failed, "connections": server.connections(),
            "cpu_cores": cpu / secs, "cpu_us_per_push": per_push_us,
        })
    );
    Ok(())
}
