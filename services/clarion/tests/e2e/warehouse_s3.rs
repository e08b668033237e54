//! The warehouse exporter writing to an S3-compatible object store: a real
//! S3 wire-format server (moto's `moto_server`, installed into
//! `$CLARION_VENV` by scripts/test-deps.sh; the test is skipped loudly when
//! it is missing, and fails when `CI` is set). A real `clarion serve` is
//! killed (`kill -9`) while it exports, three times; after the last restart
//! the objects are downloaded and DuckDB counts, per tenant, status and
//! channel, exactly what was triggered: no row twice, none missing, and no
//! staged object left. The files hold no clear address of either tenant's
//! recipients: `messages.recipient` is the documented keyed hash, the same
//! `clarion export --mask to=hash` gives.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clarion_warehouse::destination::S3Options;
use clarion_warehouse::Destination;
use support::warehouse::*;
use support::*;

const BUCKET: &str = "clarion-wh";
const PREFIX: &str = "tables";
const PHONE: &str = "+15550100";

/// `moto_server` from the test virtualenv, or `None` (skip) outside CI.
fn moto_server() -> Option<PathBuf> {
    let venv = std::env::var_os("CLARION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/clarion-venv")
        });
    let bin = venv.join("bin/moto_server");
    if bin.exists() {
        return Some(bin);
    }
    let msg = format!(
        "moto_server is missing at {}: run scripts/test-deps.sh (make test-deps)",
        bin.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED (not in CI): {msg}");
    None
}

/// A process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(addr: std::net::SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts moto on a free port and makes the bucket (moto takes unsigned
/// requests: a plain `PUT /<bucket>`).
async fn start_s3(bin: &Path) -> (Proc, String) {
    let port = free_port();
    let proc = Proc(
        Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_listening(format!("127.0.0.1:{port}").parse().unwrap(), "moto").await;
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .expect("create bucket");
    assert!(made.status().is_success(), "create bucket: {made:?}");
    (proc, endpoint)
}

fn s3_options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: endpoint.into(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: String::new(),
        allow_http: true,
    }
}

/// The published objects, downloaded into `into` (DuckDB reads them from
/// there: its `httpfs` extension is not available offline); their names.
async fn download(dest: &Destination, into: &Path) -> Vec<String> {
    let _ = std::fs::remove_dir_all(into);
    let names = dest.list("").await.unwrap();
    for name in names.iter().filter(|n| !n.starts_with("_staging/")) {
        let path = into.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, dest.get(name).await.unwrap()).unwrap();
    }
    names
}

/// What DuckDB finds in the files about personal data and templates.
const PII_SCRIPT: &str = r#"
import duckdb, glob, json, sys
root, needles = sys.argv[1], json.loads(sys.argv[2])
con = duckdb.connect()
def rel(t):
    return f"read_parquet('{root}/{t}/**/*.parquet', hive_partitioning = true, hive_types = {{'tenant': VARCHAR, 'date': VARCHAR}})"
leaks = []
for t in ["notifications", "messages", "engagement"]:
    if not glob.glob(f"{root}/{t}/**/*.parquet", recursive=True):
        continue  # no row of that table (no engagement here)
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel(t)}").fetchall()
            if r[1] == "VARCHAR"]
    for c in cols:
        for n in needles:
            hits = con.execute(f"SELECT count(*) FROM {rel(t)} WHERE contains(\"{c}\", ?)", [n]).fetchone()[0]
            if hits:
                leaks.append([t, c, n, hits])
out = {
  "leaks": leaks,
  "recipients": [list(r) for r in con.execute(f"SELECT DISTINCT tenant, channel, recipient FROM {rel('messages')} ORDER BY ALL").fetchall()],
  "templates": [list(r) for r in con.execute(f"SELECT DISTINCT tenant, workflow_id, template_id, template_version FROM {rel('messages')} ORDER BY ALL").fetchall()],
}
print(json.dumps(out))
"#;

fn duckdb_pii(root: &Path, needles: &[String]) -> serde_json::Value {
    let out = Command::new(duckdb_python())
        .args(["-c", PII_SCRIPT])
        .arg(root)
        .arg(serde_json::to_string(needles).unwrap())
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("duckdb's JSON")
}

/// `hmac-sha256:<hex>` of `value` under `tenant`'s export hash key: what
/// docs/warehouse.md says `recipient` holds.
fn keyed_hash(cfg: &clarion::Config, tenant: &str, value: &str) -> String {
    let ring = clarion_runtime::secrets::Keyring::load(&cfg.secrets, &cfg.data_dir).unwrap();
    let tenant = clarion_domain::TenantId::parse(tenant).unwrap();
    let keys = clarion_export::signing::TenantKeys::derive(&ring, &tenant).unwrap();
    let rules = clarion_export::MaskRules::parse(&["to=hash"]).unwrap();
    let m = clarion_export::mask::Masker::new(rules, keys.hash_key);
    m.apply(clarion_export::mask::Target::Email, value)
}

/// `clarion serve` from `config`; the admin token when it prints one.
fn spawn_server(config: &Path, first: bool) -> (Proc, Option<std::sync::mpsc::Receiver<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("CLARION_LOG", "warn")
        .stdout(if first { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .expect("spawn clarion serve");
    if !first {
        return (Proc(child), None);
    }
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read to the end: a closed pipe would fail the server's next print.
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(v) = l.trim().strip_prefix("admin token:") {
                let _ = tx.send(v.trim().to_string());
            }
        }
    });
    (Proc(child), Some(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_export_survives_kill_dash_nine_and_holds_no_clear_address() {
    let Some(moto) = moto_server() else {
        return;
    };
    let (_moto, endpoint) = start_s3(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = free_port();
    let config = dir.path().join("clarion.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {data:?}\n[grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [runtime]\npoll-wait-ms = 20\nmax-batch = 64\n\
             [warehouse]\nurl = \"s3://{BUCKET}/{PREFIX}\"\nmax-file-age-ms = 30\nmax-file-rows = 40\n\
             [warehouse.s3]\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\naccess-key-id = \"testing\"\n\
             secret-access-key = \"testing\"\nallow-http = true\n",
            data = dir.path().join("data").display().to_string(),
            http = free_port(),
        ),
    )
    .unwrap();
    let cfg = clarion::Config {
        data_dir: dir.path().join("data"),
        ..clarion::Config::default()
    };
    let addr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    let dest = Destination::open_with(
        &format!("s3://{BUCKET}/{PREFIX}"),
        dir.path(),
        &s3_options(&endpoint),
    )
    .unwrap();
    let dest_ref = &dest;
    let published = move || async move {
        let names = dest_ref.list("").await.unwrap();
        names
            .iter()
            .filter(|n| !n.starts_with("_staging/") && n.ends_with(".parquet"))
            .count()
    };

    let (first, token) = spawn_server(&config, true);
    let token = token.unwrap();
    let admin = tokio::task::spawn_blocking(move || token.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the admin token is printed on first start");
    wait_listening(addr, "clarion").await;
    let ch = channel(addr).await;
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let key = create_tenant_with(&ch, &admin, tenant).await;
        one_step_workflow(&ch, &key, "mail-ok", "email", "sink").await;
        one_step_workflow(&ch, &key, "text-ok", "sms", "sink").await;
        keys.push((tenant, key));
    }

    // (tenant, notification id) → 1; (tenant, channel) → sends; addresses.
    let mut accepted: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sends: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut emails: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut server = Some(first);
    for round in 0..4u64 {
        if server.is_none() {
            server = Some(spawn_server(&config, false).0);
            wait_listening(addr, "clarion").await;
        }
        let ch = channel(addr).await;
        let before = published().await;
        for i in 0..24 {
            let (tenant, key) = &keys[i % 2];
            let (workflow, channel) = if i % 3 == 0 {
                ("text-ok", "sms")
            } else {
                ("mail-ok", "email")
            };
            let subscriber = format!("{tenant}-r{round}-{i}");
            let id = trigger(&ch, key, workflow, &subscriber).await;
            accepted.insert((tenant.to_string(), id), 1);
            *sends
                .entry((tenant.to_string(), channel.into()))
                .or_default() += 1;
            if channel == "email" {
                emails
                    .entry(tenant.to_string())
                    .or_default()
                    .insert(format!("{subscriber}@example.test"));
            }
        }
        if round == 3 {
            break; // the last round runs to the end
        }
        // Killed at a different point each round: at once (rows only in
        // memory), then once 1 and 2 more objects of this round are out.
        let deadline = Instant::now() + Duration::from_secs(60);
        while published().await < before + round as usize {
            assert!(
                Instant::now() < deadline,
                "round {round}: nothing published"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(server.take());
    }

    let local = dir.path().join("downloaded");
    let deadline = Instant::now() + Duration::from_secs(120);
    let read = loop {
        let names = download(&dest, &local).await;
        let read = duckdb_read(&local);
        let staged = names.iter().any(|n| n.starts_with("_staging/"));
        if (read.notification_ids == accepted && !staged) || Instant::now() > deadline {
            assert!(!staged, "a staged object was left: {names:?}");
            break read;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        read.notification_ids, accepted,
        "each accepted notification exactly once"
    );
    assert_eq!(read.message_dups, 0, "a message outcome twice");
    let mut want_status = BTreeMap::new();
    let mut want_messages = BTreeMap::new();
    for ((tenant, channel), n) in &sends {
        *want_status
            .entry((tenant.clone(), "sent".to_string()))
            .or_insert(0) += n;
        for outcome in ["sent", "delivered"] {
            want_messages.insert((tenant.clone(), channel.clone(), outcome.to_string()), *n);
        }
    }
    assert_eq!(read.notifications, want_status, "notifications per status");
    assert_eq!(
        read.messages, want_messages,
        "messages per channel and outcome"
    );
    for table in ["notifications", "messages", "engagement"] {
        if let Some(cols) = read.columns.get(table).filter(|c| !c.is_empty()) {
            assert_eq!(cols, &documented_columns(table), "{table}'s columns");
        }
    }

    // No clear address of either tenant's recipients in any column.
    let mut needles: Vec<String> = emails.values().flatten().cloned().collect();
    needles.push(PHONE.into());
    needles.push("example.test".into());
    needles.push("5550100".into());
    let pii = duckdb_pii(&local, &needles);
    assert_eq!(pii["leaks"], serde_json::json!([]), "clear addresses");

    // `recipient` is the documented keyed hash, per tenant.
    let mut want: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (tenant, addrs) in &emails {
        for a in addrs {
            want.insert((tenant.clone(), "email".into(), keyed_hash(&cfg, tenant, a)));
        }
        want.insert((
            tenant.clone(),
            "sms".into(),
            keyed_hash(&cfg, tenant, PHONE),
        ));
    }
    let got: BTreeSet<(String, String, String)> = pii["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().unwrap_or("<null>").to_string();
            (s(0), s(1), s(2))
        })
        .collect();
    assert_eq!(got, want, "recipients as keyed hashes");
    let phones: BTreeSet<&String> = want
        .iter()
        .filter(|(_, c, _)| c == "sms")
        .map(|(_, _, h)| h)
        .collect();
    assert_eq!(phones.len(), 2, "one phone hashes apart in two tenants");

    // Template id and version of each send.
    let templates = pii["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 4, "{templates:?}");
    for t in templates {
        assert_eq!(
            t[2].as_str().unwrap(),
            format!("{}-tpl", t[1].as_str().unwrap())
        );
        assert_eq!(t[3], serde_json::json!(1), "{t:?}");
    }
    drop(server);
}
