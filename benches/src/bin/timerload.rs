//! Pending timers at scale (scripts/bench-timers.sh runs the whole thing):
//!
//! * `load`: every role in-process on the embedded backend (a data dir on
//!   disk) with the manual clock at a fixed instant, then `--timers` pending
//!   timers of mixed kinds made through the real path — triggers of a
//!   workflow waiting in a `delay: 1d` step, SMS sends held by the tenant's
//!   quiet hours, digests (each trigger opens its own, `window: 1d`) and
//!   daily schedules — appended to the log as the gateway appends them.
//!   Waits until the router has made them all, then prints the process's
//!   resident memory, the data dir's size and the bytes per timer.
//! * `fire`: the same data dir, the clock moved two days on: every timer is
//!   due. Prints how fast the due timers are fired (appended to the log as
//!   inputs and removed), and how long until the router has applied them.
//!
//! Prints one JSON line per phase.
//!
//! ```text
//! timerload --data-dir /tmp/t load --timers 10000000
//! timerload --data-dir /tmp/t fire
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use clarion::{Config, Node, Role};
use clarion_domain::flow::Flow;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Channel, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::{ManualClock, Topic};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Monday 2027-01-04 12:00 UTC: the load's clock.
const T0: i64 = 1_799_064_000_000;
const DAY: i64 = 86_400_000;
const TENANT: &str = "timers";

#[derive(Parser, Debug)]
#[command(about = "Pending timers at scale: memory, disk, restart, firing rate")]
struct Cli {
    #[arg(long)]
    data_dir: PathBuf,
    #[command(subcommand)]
    phase: Phase,
}

#[derive(Subcommand, Debug)]
enum Phase {
    /// Make `timers` pending timers (mixed kinds).
    Load {
        #[arg(long, default_value_t = 1_000_000)]
        timers: u64,
        /// Shares of delays, holds, digests and schedules, in that order.
        #[arg(long, default_value = "70,10,10,10")]
        mix: String,
        /// Notifications per appended trigger request.
        #[arg(long, default_value_t = 50)]
        recipients: usize,
    },
    /// Move the clock two days on and fire everything due.
    Fire,
}

fn config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::load(None).expect("default config");
    cfg.data_dir = dir.to_path_buf();
    cfg
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir)?;
    match cli.phase {
        Phase::Load {
            timers,
            mix,
            recipients,
        } => load(&cli.data_dir, timers, &mix, recipients).await,
        Phase::Fire => fire(&cli.data_dir).await,
    }
}

/// Every role but the gateway, on the manual clock at `now`.
async fn start(
    dir: &std::path::Path,
    now: i64,
) -> anyhow::Result<(Node, watch::Sender<bool>, JoinSet<anyhow::Result<()>>)> {
    let node = Node::open(config(dir))
        .await?
        .with_clock(Arc::new(ManualClock::new(now)));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for role in [Role::Projector, Role::Router, Role::Dispatcher] {
        node.spawn_role(role, &mut tasks, None, &rx).await?;
    }
    Ok((node, shutdown, tasks))
}

fn event(tag: &[u8], key: String, at: i64, payload: Payload) -> Event {
    Event {
        id: Id::derive(&[b"timerload", tag]),
        tenant: TenantId::parse(TENANT).expect("tenant id"),
        partition_key: key,
        occurred_at_ms: at,
        causation_id: None,
        correlation_id: None,
        actor: Actor::Operator("bench".into()),
        payload,
    }
}

const WORKFLOWS: [(&str, &str); 3] = [
    (
        "delayed",
        "id: delayed\nsteps:\n  - {id: wait, type: delay, duration: 1d}\n  - {id: mail, type: send, channel: email, template: tl-email, provider: sink}\n",
    ),
    (
        "held",
        "id: held\nsteps:\n  - {id: text, type: send, channel: sms, template: tl-sms, provider: sink}\n",
    ),
    (
        "digested",
        "id: digested\nsteps:\n  - {id: collect, type: digest, key: payload.n, window: 1d}\n  - {id: mail, type: send, channel: email, template: tl-email, provider: sink}\n",
    ),
];

/// Templates, workflows, the tenant's quiet hours (SMS held all of the
/// load's day, a Monday) — on the config topic, as the API appends them.
fn config_events() -> Vec<Event> {
    let key = clarion_domain::ids::tenant_key(&TenantId::parse(TENANT).expect("tenant"));
    let mut out = vec![event(
        b"tenant",
        key.clone(),
        T0 - DAY,
        Payload::TenantCreated(pb::TenantCreated {
            tenant_id: TENANT.into(),
            name: "timers".into(),
        }),
    )];
    for (id, channel) in [("tl-email", "email"), ("tl-sms", "sms")] {
        let variant = pb::TemplateVariant {
            locale: "default".into(),
            subject: "Reminder".into(),
            body: "Reminder {{ payload.n }}".into(),
        };
        let t =
            clarion_domain::template::Template::new(id, 1, channel, &[variant]).expect("template");
        out.push(event(
            id.as_bytes(),
            key.clone(),
            T0 - DAY,
            Payload::TemplatePublished(t.to_event()),
        ));
    }
    for (id, yaml) in WORKFLOWS {
        let flow = Flow::parse(yaml, 1, |t| {
            Some(if t == "tl-sms" {
                Channel::Sms
            } else {
                Channel::Email
            })
        })
        .unwrap_or_else(|e| panic!("workflow {id}: {e}"));
        out.push(event(
            id.as_bytes(),
            key.clone(),
            T0 - DAY,
            Payload::WorkflowPublished(clarion_domain::workflow::published(&flow)),
        ));
    }
    out.push(event(
        b"quiet",
        key,
        T0 - DAY,
        Payload::QuietHoursSet(pb::QuietHoursSet {
            subscriber_id: String::new(),
            rules: vec![pb::QuietRule {
                channels: vec!["sms".into()],
                days: vec!["mon".into()],
                start: "00:00".into(),
                end: "23:59".into(),
                policy: "hold".into(),
            }],
            timezone: "UTC".into(),
            enabled: true,
            version: 1,
            origin: None,
        }),
    ));
    out
}

/// The trigger events of request `i` of `workflow` (`recipients` each).
fn triggers(workflow: &str, i: u64, recipients: usize) -> Vec<Event> {
    let cmd = TriggerCommand {
        workflow_id: workflow.into(),
        recipients: (0..recipients)
            .map(|r| Recipient {
                subscriber_id: format!("s{}", (i as usize * recipients + r) % 1_000_000),
                contact: Some(pb::RecipientOverride {
                    email: "a@example.test".into(),
                    phone: "+15550100".into(),
                    ..Default::default()
                }),
            })
            .collect(),
        payload_json: json!({"n": i}).to_string(),
        ..Default::default()
    };
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    seed[8] = workflow.len() as u8;
    let tenant = TenantId::parse(TENANT).expect("tenant");
    cmd.accept(&tenant, 1, seed, T0, &Actor::ApiKey("bench".into()))
}

/// Daily 09:00 schedules, one per subscriber.
fn schedules(from: u64, count: u64) -> Vec<Event> {
    (from..from + count)
        .map(|n| {
            let sub = format!("r{n}");
            let key =
                clarion_domain::ids::recipient_key(&TenantId::parse(TENANT).expect("tenant"), &sub);
            event(
                format!("schedule-{n}").as_bytes(),
                key,
                T0,
                Payload::ScheduleSet(pb::ScheduleSet {
                    schedule_id: format!("daily-{n}"),
                    subscriber_id: sub,
                    workflow_id: "delayed".into(),
                    rrule: "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0".into(),
                    timezone: "Europe/Paris".into(),
                    start_at_ms: T0,
                    payload_json: "{}".into(),
                    catch_up: "latest_once".into(),
                    generation: 1,
                    ..Default::default()
                }),
            )
        })
        .collect()
}

async fn load(
    dir: &std::path::Path,
    timers: u64,
    mix: &str,
    recipients: usize,
) -> anyhow::Result<()> {
    let shares: Vec<u64> = mix
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(shares.len() == 4, "--mix takes four shares");
    let total: u64 = shares.iter().sum();
    let counts: Vec<u64> = shares.iter().map(|s| timers * s / total).collect();
    let (node, shutdown, mut tasks) = start(dir, T0).await?;
    let gw = node.gateway_state(None);
    gw.append(Topic::Config, &config_events())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await; // projected before the triggers
    let started = Instant::now();
    let per = recipients as u64;
    for (k, workflow) in ["delayed", "held", "digested"].iter().enumerate() {
        let requests = counts[k].div_ceil(per);
        for chunk in (0..requests).collect::<Vec<_>>().chunks(20) {
            let events: Vec<Event> = chunk
                .iter()
                .flat_map(|&i| triggers(workflow, i, recipients))
                .collect();
            gw.append(Topic::Triggers, &events)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    for from in (0..counts[3]).step_by(1000) {
        let events = schedules(from, 1000.min(counts[3] - from));
        gw.append(Topic::Triggers, &events)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let appended = started.elapsed();
    let db = timers_db(dir)?;
    let want = counts.iter().sum::<u64>() * 95 / 100;
    let mut pending = 0;
    for _ in 0..7200 {
        pending = count_timers(&db)?;
        eprintln!("pending timers: {pending}");
        if pending >= want && idle(&db, Duration::from_secs(3), pending)? {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let rss = rss_kib();
    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    let disk = dir_bytes(dir);
    println!(
        "{}",
        json!({
            "phase": "load", "timers": pending, "kinds": {
                "delay": counts[0], "hold": counts[1], "digest": counts[2], "schedule": counts[3]},
            "append_secs": appended.as_secs_f64(), "load_secs": started.elapsed().as_secs_f64(),
            "rss_mib": rss / 1024, "disk_bytes": disk,
            "bytes_per_timer": disk / pending.max(1),
        })
    );
    Ok(())
}

async fn fire(dir: &std::path::Path) -> anyhow::Result<()> {
    let db = timers_db(dir)?;
    let now = T0 + 2 * DAY;
    let due_before = count_due(&db, now)?;
    let started = Instant::now();
    let (_node, shutdown, mut tasks) = start(dir, now).await?;
    let mut drained = None;
    for _ in 0..720_000 {
        if !any_due(&db, now)? {
            drained = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = drained.ok_or_else(|| anyhow::anyhow!("timers still due after 10 h"))?;
    let rss = rss_kib();
    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    println!(
        "{}",
        json!({
            "phase": "fire", "due": due_before, "drain_secs": drained.as_secs_f64(),
            "fired_per_sec": due_before as f64 / drained.as_secs_f64(),
            "rss_mib": rss / 1024,
        })
    );
    Ok(())
}

fn timers_db(dir: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    let path = config(dir)
        .colocated_file()
        .ok_or_else(|| anyhow::anyhow!("not the embedded backend"))?;
    let path = path.strip_prefix("sqlite://").unwrap_or(&path).to_string();
    Ok(rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

fn count_timers(db: &rusqlite::Connection) -> anyhow::Result<u64> {
    Ok(db.query_row("SELECT count(*) FROM timers", [], |r| r.get::<_, i64>(0))? as u64)
}

/// The timers' clustering key of `due_ms` (sign-flipped big-endian), the
/// bound of the due ones.
fn due_bound(due_ms: i64) -> Vec<u8> {
    let mut ck = ((due_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    ck.extend_from_slice(&[0xff; 16]);
    ck
}

fn count_due(db: &rusqlite::Connection, now: i64) -> anyhow::Result<u64> {
    Ok(db.query_row(
        "SELECT count(*) FROM timers WHERE ck <= ?1",
        [due_bound(now)],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

fn any_due(db: &rusqlite::Connection, now: i64) -> anyhow::Result<bool> {
    Ok(db.query_row(
        "SELECT EXISTS(SELECT 1 FROM timers WHERE ck <= ?1)",
        [due_bound(now)],
        |r| r.get::<_, i64>(0),
    )? == 1)
}

/// Whether the timer count stays at `n` for `quiet`.
fn idle(db: &rusqlite::Connection, quiet: Duration, n: u64) -> anyhow::Result<bool> {
    std::thread::sleep(quiet);
    Ok(count_timers(db)? == n)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
