//! The warehouse exporter end to end: notifications with a mix of outcomes
//! (delivered, failed, opened, clicked) for two tenants, on the embedded
//! backend and on Kafka (tansu, see e2e_kafka.rs); once the exporter caught
//! up, DuckDB reads the Parquet files and its counts per status and channel
//! equal what was triggered, and the columns are those of
//! `schemas/warehouse/`. `clarion warehouse backfill` rebuilds the same.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use clarion::Role;
use support::warehouse::*;
use support::*;

const ROLES: [Role; 4] = [
    Role::Projector,
    Role::Router,
    Role::Dispatcher,
    Role::Exporter,
];

/// What one tenant triggers: sends that are delivered (email and SMS
/// through the built-in sink), sends that fail (email through a provider
/// this deployment does not configure), and opens and clicks.
struct Mix {
    tenant: &'static str,
    mail_ok: usize,
    mail_bad: usize,
    text_ok: usize,
    opened: usize,
    clicked: usize,
}

const MIXES: [Mix; 2] = [
    Mix {
        tenant: "acme",
        mail_ok: 5,
        mail_bad: 2,
        text_ok: 3,
        opened: 3,
        clicked: 2,
    },
    Mix {
        tenant: "globex",
        mail_ok: 2,
        mail_bad: 3,
        text_ok: 1,
        opened: 1,
        clicked: 0,
    },
];

type Expected = (
    BTreeMap<(String, String), u64>,
    BTreeMap<(String, String, String), u64>,
    BTreeMap<(String, String), u64>,
);

/// Triggers every tenant's mix, waits for each run to end, records the
/// engagement; returns the counts the warehouse must show.
async fn trigger_mix(node: &RunningNode) -> Expected {
    let ch = channel(node.grpc).await;
    let (mut notifications, mut messages, mut engagement): Expected = Default::default();
    for mix in &MIXES {
        let key = create_tenant(&ch, mix.tenant).await;
        one_step_workflow(&ch, &key, "mail-ok", "email", "sink").await;
        one_step_workflow(&ch, &key, "mail-bad", "email", "smtp").await;
        one_step_workflow(&ch, &key, "text-ok", "sms", "sink").await;
        let mut ok_mail = Vec::new();
        let mut ids = Vec::new();
        for (workflow, n) in [
            ("mail-ok", mix.mail_ok),
            ("mail-bad", mix.mail_bad),
            ("text-ok", mix.text_ok),
        ] {
            for i in 0..n {
                let id = trigger(&ch, &key, workflow, &format!("{workflow}-{i}")).await;
                if workflow == "mail-ok" {
                    ok_mail.push(id.clone());
                }
                ids.push(id);
            }
        }
        for id in &ids {
            let n = wait_until(&ch, &key, id, Duration::from_secs(30), ended).await;
            assert!(ended(&n), "{id} did not end: {n:?}");
        }
        for id in ok_mail.iter().take(mix.opened) {
            engage(&ch, &key, id, "opened").await;
        }
        for id in ok_mail.iter().take(mix.clicked) {
            engage(&ch, &key, id, "clicked").await;
        }
        let t = mix.tenant.to_string();
        let ok = (mix.mail_ok + mix.text_ok) as u64;
        notifications.insert((t.clone(), "sent".into()), ok);
        notifications.insert((t.clone(), "failed".into()), mix.mail_bad as u64);
        for (channel, outcome, n) in [
            ("email", "sent", mix.mail_ok),
            ("email", "delivered", mix.mail_ok),
            ("email", "failed", mix.mail_bad),
            ("sms", "sent", mix.text_ok),
            ("sms", "delivered", mix.text_ok),
        ] {
            if n > 0 {
                messages.insert((t.clone(), channel.into(), outcome.into()), n as u64);
            }
        }
        for (kind, n) in [("opened", mix.opened), ("clicked", mix.clicked)] {
            if n > 0 {
                engagement.insert((t.clone(), kind.into()), n as u64);
            }
        }
    }
    (notifications, messages, engagement)
}

/// DuckDB's view of `root` equals `expected`, with no row twice and the
/// documented columns.
async fn assert_warehouse(root: &std::path::Path, expected: &Expected) -> Read {
    let (notifications, messages, engagement) = expected;
    let read = wait_read(root, Duration::from_secs(60), |r| {
        &r.notifications == notifications && &r.messages == messages && &r.engagement == engagement
    })
    .await;
    assert_eq!(
        &read.notifications, notifications,
        "notifications per tenant and status"
    );
    assert_eq!(
        &read.messages, messages,
        "messages per tenant, channel and outcome"
    );
    assert_eq!(
        &read.engagement, engagement,
        "engagement per tenant and kind"
    );
    assert!(
        read.notification_ids.values().all(|n| *n == 1),
        "a notification twice: {:?}",
        read.notification_ids
    );
    assert_eq!(read.message_dups, 0, "a message outcome twice");
    for table in ["notifications", "messages", "engagement"] {
        assert_eq!(
            read.columns[table],
            documented_columns(table),
            "{table}'s Parquet columns against schemas/warehouse/{table}.md"
        );
    }
    assert!(
        !read.dates.is_empty() && read.dates.iter().all(|d| d.len() == 10),
        "UTC date partitions: {:?}",
        read.dates
    );
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_what_two_tenants_triggered_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.warehouse.max_file_age_ms = 200;
    let node = start_roles(cfg.clone(), false, &ROLES).await;
    let expected = trigger_mix(&node).await;
    let root = dir.path().join("warehouse");
    assert_warehouse(&root, &expected).await;

    // Nothing staged is left once the rolls are done, and every file is
    // under its table, tenant and date.
    let files: Vec<String> = walk(&root);
    assert!(
        files.iter().all(|f| !f.starts_with("_staging/")),
        "{files:?}"
    );
    for f in files.iter().filter(|f| f.ends_with(".parquet")) {
        let parts: Vec<&str> = f.split('/').collect();
        assert_eq!(parts.len(), 4, "{f}");
        assert!(
            ["notifications", "messages", "engagement"].contains(&parts[0]),
            "{f}"
        );
        assert!(["tenant=acme", "tenant=globex"].contains(&parts[1]), "{f}");
        assert!(parts[2].starts_with("date="), "{f}");
    }

    // A backfill from the start rebuilds the same tables elsewhere.
    let again = dir.path().join("rebuilt");
    let (rows, records, _) = clarion::warehouse_cli::run_backfill(
        &node.nodes[0],
        "0".parse().unwrap(),
        again.to_str().unwrap(),
        false,
    )
    .await
    .unwrap();
    assert!(
        records >= rows && rows > 0,
        "{rows} rows from {records} records"
    );
    let rebuilt = duckdb_read(&again);
    assert_eq!(rebuilt.notifications, expected.0);
    assert_eq!(rebuilt.messages, expected.1);
    assert_eq!(rebuilt.engagement, expected.2);
    let (n, m, e) = &expected;
    assert_eq!(
        rows,
        n.values().sum::<u64>() + m.values().sum::<u64>() + e.values().sum::<u64>()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_what_two_tenants_triggered_on_kafka() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka end-to-end not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("wh-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 2;
    cfg.warehouse.max_file_age_ms = 200;
    let node = start_roles(cfg, true, &ROLES).await;
    let expected = trigger_mix(&node).await;
    assert_warehouse(&dir.path().join("warehouse"), &expected).await;
    node.stop().await;
}

/// Every file under `root`, relative, sorted.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// How many Parquet files are published under `root` (none yet: 0).
fn published(root: &std::path::Path) -> usize {
    if !root.exists() {
        return 0;
    }
    walk(root)
        .iter()
        .filter(|f| !f.starts_with("_staging/") && f.ends_with(".parquet"))
        .count()
}

/// A real `clarion serve` on a fixed data directory and ports, restartable.
struct Server(std::process::Child);

impl Server {
    fn spawn(config: &std::path::Path, stdout: std::process::Stdio) -> Server {
        Server(
            std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
                .arg("--config")
                .arg(config)
                .arg("serve")
                .env("CLARION_LOG", "warn")
                .stdout(stdout)
                .spawn()
                .expect("spawn clarion serve"),
        )
    }

    /// SIGKILL: no shutdown, no flush; what a crash is.
    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(addr: std::net::SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_during_export_leaves_no_row_twice_and_none_missing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = free_port();
    let config = dir.path().join("clarion.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {data:?}\n[grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [runtime]\npoll-wait-ms = 20\nmax-batch = 64\n[warehouse]\nmax-file-age-ms = 30\nmax-file-rows = 40\n",
            data = dir.path().join("data").display().to_string(),
            http = free_port(),
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{grpc_port}").parse().unwrap();

    // First start: the admin token is printed once.
    let mut first = Server::spawn(&config, std::process::Stdio::piped());
    let out = first.0.stdout.take().unwrap();
    // Read to the end: a closed pipe would fail the server's next print.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(v) = l.trim().strip_prefix("admin token:") {
                let _ = tx.send(v.trim().to_string());
            }
        }
    });
    let admin = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the admin token is printed on first start");
    wait_listening(addr).await;
    let ch = channel(addr).await;
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let key = create_tenant_with(&ch, &admin, tenant).await;
        one_step_workflow(&ch, &key, "mail-ok", "email", "sink").await;
        keys.push((tenant, key));
    }

    let root = dir.path().join("data/warehouse");
    let mut accepted: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut server = Some(first);
    for round in 0..4u64 {
        if server.is_none() {
            server = Some(Server::spawn(&config, std::process::Stdio::null()));
            wait_listening(addr).await;
        }
        let ch = channel(addr).await;
        let before = published(&root);
        for i in 0..30 {
            let (tenant, key) = &keys[i % 2];
            let id = trigger(&ch, key, "mail-ok", &format!("r{round}-{i}")).await;
            accepted.insert((tenant.to_string(), id), 1);
        }
        // Killed while runs end and the exporter rolls their rows, at a
        // different point each round: at once (rows only in memory), then
        // once the exporter has published 1, 2, 3 files of this round.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while published(&root) < before + round as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the exporter published nothing"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.take().unwrap().kill9();
    }

    let _last = Server::spawn(&config, std::process::Stdio::null());
    wait_listening(addr).await;
    // The outcomes (one topic) and the runs' ends (another) are rolled into
    // files of their own: wait for both, then check.
    let expected = |tenant: &str, outcome: &str| {
        let n = accepted.keys().filter(|(t, _)| t == tenant).count() as u64;
        let key = (tenant.to_string(), "email".to_string(), outcome.to_string());
        (key, n)
    };
    let outcomes = |r: &Read| {
        keys.iter().all(|(tenant, _)| {
            ["sent", "delivered"].iter().all(|o| {
                let (key, n) = expected(tenant, o);
                r.messages.get(&key) == Some(&n)
            })
        })
    };
    let read = wait_read(&root, Duration::from_secs(90), |r| {
        r.notification_ids == accepted && outcomes(r)
    })
    .await;
    assert_eq!(
        read.notification_ids, accepted,
        "each accepted notification exactly once"
    );
    assert_eq!(read.message_dups, 0, "a message outcome twice");
    for (tenant, _) in &keys {
        for outcome in ["sent", "delivered"] {
            let (key, n) = expected(tenant, outcome);
            let got = read.messages.get(&key);
            assert_eq!(got, Some(&n), "{tenant}'s {outcome} messages");
        }
    }
    assert!(
        !walk(&root).iter().any(|f| f.starts_with("_staging/")),
        "a staged file was left behind"
    );
}
