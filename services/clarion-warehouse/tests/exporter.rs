//! The exporter over a real embedded log and store (one SQLite file), on a
//! manual clock: rows of two tenants land once in their partitions, an
//! outcome read before its request still joins it, and a roll a crash
//! interrupted is undone (staged) or finished (publishing) on restart.

use std::sync::Arc;

use clarion_domain::event::{Actor, Payload};
use clarion_domain::{Event, Id, TenantId};
use clarion_log::{EventLog, Record};
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::{Clock, ManualClock, Topic, Topics};
use clarion_store::{Store, WriteBatch};
use clarion_warehouse::state::{FileEntry, Keys, Staged};
use clarion_warehouse::{Destination, Exporter, ExporterConfig, INPUTS};

const NOW: i64 = 1_796_600_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    topics: Topics,
    clock: Arc<ManualClock>,
    next_id: u8,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let c = Colocated::open(dir.path().join("c.db").to_str().unwrap()).unwrap();
        let mut topics = Topics::new("t.", 1);
        topics.ensure(&*c.log()).await.unwrap();
        Fixture {
            root: dir.path().join("warehouse"),
            _dir: dir,
            log: c.log(),
            store: c.store(),
            topics,
            clock: Arc::new(ManualClock::new(NOW)),
            next_id: 0,
        }
    }

    async fn append(&mut self, topic: Topic, tenant: &str, payload: Payload) {
        self.next_id += 1;
        let e = Event {
            id: Id([self.next_id; 16]),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: format!("{tenant}/sub"),
            occurred_at_ms: self.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload,
        };
        self.log
            .append(
                &self.topics.name(topic),
                vec![Record::new(e.partition_key.clone(), e.encode())],
            )
            .await
            .unwrap();
    }

    fn exporter(&self) -> Exporter {
        self.exporter_to(Destination::open("", &self.root).unwrap())
    }

    fn exporter_to(&self, dest: Destination) -> Exporter {
        Exporter::new(
            "exporter",
            self.log.clone(),
            self.store.clone(),
            self.topics.clone(),
            0,
            self.clock.clone(),
            dest,
            ExporterConfig {
                max_file_age_ms: 1000,
                ..ExporterConfig::default()
            },
        )
    }

    async fn ends(&self) -> [u64; 4] {
        let mut out = [0; 4];
        for (i, t) in INPUTS.iter().enumerate() {
            out[i] = self.log.end_offset(&self.topics.name(*t), 0).await.unwrap();
        }
        out
    }

    /// Runs an exporter to the log's end; the rows it wrote.
    async fn export(&self) -> u64 {
        let ends = self.ends().await;
        self.exporter().run_to(ends, &mut |_| {}).await.unwrap()
    }

    /// Every published file, relative to the root.
    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(&self.root).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    fn rows_in(&self, file: &str) -> usize {
        let bytes = std::fs::read(self.root.join(file)).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
            bytes,
        ))
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
    }
}

fn requested(attempt: &str, channel: &str) -> Payload {
    Payload::DispatchRequested(pb::DispatchRequested {
        notification_id: format!("n-{attempt}"),
        attempt_id: attempt.into(),
        channel: channel.into(),
        provider: "sink".into(),
        subscriber_id: "sub".into(),
        step: "s1".into(),
        workflow_id: "wf".into(),
        locale: "en".into(),
        ..Default::default()
    })
}

fn sent(attempt: &str) -> Payload {
    Payload::Sent(pb::NotificationSent {
        notification_id: format!("n-{attempt}"),
        attempt_id: attempt.into(),
        provider: "sink".into(),
        provider_message_id: "m".into(),
        context: None,
    })
}

fn ended(attempt: &str) -> Payload {
    Payload::Ended(pb::RunEnded {
        notification_id: format!("n-{attempt}"),
        outcome: "completed".into(),
        workflow_id: "wf".into(),
        workflow_version: 1,
        subscriber_id: "sub".into(),
        attempts: vec![pb::AttemptRecord {
            attempt_id: attempt.into(),
            channel: "email".into(),
            sent: true,
            at_ms: NOW,
            ..Default::default()
        }],
        ..Default::default()
    })
}

#[tokio::test]
async fn rows_of_two_tenants_land_once_in_their_partitions() {
    let mut f = Fixture::new().await;
    for (tenant, attempt) in [("acme", "a1"), ("globex", "g1")] {
        f.append(Topic::Dispatch, tenant, requested(attempt, "email"))
            .await;
        f.append(Topic::Deliveries, tenant, sent(attempt)).await;
        f.append(Topic::Notifications, tenant, ended(attempt)).await;
    }
    f.append(
        Topic::Triggers,
        "acme",
        Payload::Engaged(pb::EngagementRecorded {
            notification_id: "n-a1".into(),
            attempt_id: "a1".into(),
            kind: "opened".into(),
            source: "pixel".into(),
        }),
    )
    .await;
    assert_eq!(f.export().await, 5);
    let files = f.files();
    assert_eq!(files.len(), 5, "{files:?}");
    for tenant in ["acme", "globex"] {
        for table in ["messages", "notifications"] {
            let dir = format!("{table}/tenant={tenant}/date=2026-12-06/");
            let file = files
                .iter()
                .find(|p| p.starts_with(&dir))
                .unwrap_or_else(|| panic!("{dir} in {files:?}"));
            assert_eq!(f.rows_in(file), 1);
        }
    }
    assert!(files
        .iter()
        .any(|p| p.starts_with("engagement/tenant=acme/")));

    // A second run from the stored positions writes nothing again.
    assert_eq!(f.export().await, 0);
    assert_eq!(f.files(), files);
}

#[tokio::test]
async fn an_outcome_read_before_its_request_waits_for_it_across_restarts() {
    let mut f = Fixture::new().await;
    f.append(Topic::Deliveries, "acme", sent("a1")).await;
    // Up to the outcome only: it waits (stored), no row yet.
    let mut ends = f.ends().await;
    ends[2] = 0;
    assert_eq!(f.exporter().run_to(ends, &mut |_| {}).await.unwrap(), 0);
    f.append(Topic::Dispatch, "acme", requested("a1", "sms"))
        .await;
    // A new exporter (a restart) reads the request: the row is written.
    assert_eq!(f.export().await, 1);
    let files = f.files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("messages/tenant=acme/"));
}

#[tokio::test]
async fn a_crash_mid_roll_is_undone_when_staged_and_finished_when_publishing() {
    let mut f = Fixture::new().await;
    let keys = Keys::new("exporter", 0);
    let dest = Destination::open("", &f.root).unwrap();
    let file = |n: &str| FileEntry {
        table: "messages".into(),
        tenant: "acme".into(),
        date: "2026-12-06".into(),
        path: format!("messages/tenant=acme/date=2026-12-06/{n}.parquet"),
        staging: format!("_staging/{n}.parquet"),
        rows: 1,
        bytes: 3,
    };
    // Staged, nothing committed: the staged file goes, nothing is published.
    dest.put("_staging/x.parquet", b"abc".to_vec())
        .await
        .unwrap();
    let staged = Staged {
        state: "staged".into(),
        seq: 0,
        files: vec![file("x")],
    };
    let mut w = WriteBatch::new();
    w.put(keys.staged(), serde_json::to_vec(&staged).unwrap());
    f.store.write(w).await.unwrap();
    // A put cut short leaves the local store's temporary file, which no
    // note names: swept too. Another exporter's staged file is left alone.
    let staging = f.root.join("_staging");
    std::fs::write(staging.join("exporter-p0-0000000000-0.parquet#7"), b"ab").unwrap();
    std::fs::write(staging.join("backfill-p0-0000000000-0.parquet"), b"ab").unwrap();
    f.append(Topic::Dispatch, "acme", requested("a1", "email"))
        .await;
    f.append(Topic::Deliveries, "acme", sent("a1")).await;
    assert_eq!(f.export().await, 1);
    let files = f.files();
    assert!(!files.iter().any(|p| p.contains("x.parquet")), "{files:?}");
    assert!(!files.iter().any(|p| p.contains("#7")), "{files:?}");
    assert!(
        files.contains(&"_staging/backfill-p0-0000000000-0.parquet".to_string()),
        "{files:?}"
    );
    assert_eq!(files.len(), 2, "{files:?}");
    std::fs::remove_file(staging.join("backfill-p0-0000000000-0.parquet")).unwrap();

    // Publishing (committed): the restart finishes the rename.
    dest.put("_staging/y.parquet", b"abc".to_vec())
        .await
        .unwrap();
    let publishing = Staged {
        state: "publishing".into(),
        seq: 1,
        files: vec![file("y")],
    };
    let mut w = WriteBatch::new();
    w.put(keys.staged(), serde_json::to_vec(&publishing).unwrap());
    f.store.write(w).await.unwrap();
    assert_eq!(f.export().await, 0);
    let files = f.files();
    assert!(
        files.contains(&"messages/tenant=acme/date=2026-12-06/y.parquet".to_string()),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|p| p.starts_with("_staging/")),
        "{files:?}"
    );
}

/// Every string cell of every file under `root`, by column name.
fn string_cells(f: &Fixture) -> Vec<(String, String)> {
    use arrow_array::cast::AsArray;
    let mut out = Vec::new();
    for file in f.files() {
        let bytes = std::fs::read(f.root.join(&file)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for (i, field) in batch.schema().fields().iter().enumerate() {
                if let Some(col) = batch.column(i).as_string_opt::<i32>() {
                    for v in col.iter().flatten() {
                        out.push((field.name().clone(), v.to_string()));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn sealed_addresses_of_two_tenants_become_keyed_hashes_and_errors_are_scrubbed() {
    use clarion_runtime::personal::Personal;
    use clarion_runtime::secrets::Keyring;
    use clarion_warehouse::pii::Recipients;

    let mut f = Fixture::new().await;
    let ring = Arc::new(Keyring::new("k1", &[("k1", [9; 32])]).unwrap());
    let personal = Personal::new(f.store.clone(), ring.clone());
    let addr = "alice@example.com";
    for (tenant, attempt) in [("acme", "a1"), ("globex", "g1")] {
        let mut e = Event {
            id: Id([0; 16]),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: format!("{tenant}/sub"),
            occurred_at_ms: NOW,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload: requested(attempt, "email"),
        };
        if let Payload::DispatchRequested(d) = &mut e.payload {
            d.to = addr.into();
            d.template_id = "welcome".into();
            d.template_version = 3;
        }
        personal.seal_event(&mut e).await.unwrap();
        let Payload::DispatchRequested(d) = &e.payload else {
            unreachable!()
        };
        assert!(Personal::is_sealed(&d.to), "the log holds it sealed");
        f.append(Topic::Dispatch, tenant, e.payload.clone()).await;
        f.append(
            Topic::Deliveries,
            tenant,
            Payload::Failed(pb::NotificationFailed {
                notification_id: format!("n-{attempt}"),
                attempt_id: attempt.into(),
                provider: "smtp".into(),
                stage: "dispatch".into(),
                reason: format!("550 <{addr}> unknown; call +1 555 010 0123"),
                ..Default::default()
            }),
        )
        .await;
    }
    let ends = f.ends().await;
    let rows = f
        .exporter()
        .with_recipients(Recipients::new(personal.clone(), ring.clone()))
        .run_to(ends, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(rows, 2);

    let cells = string_cells(&f);
    for (col, v) in &cells {
        assert!(
            !v.contains("example.com") && !v.contains("0100123") && !v.contains("555 010"),
            "a clear address in {col}: {v}"
        );
    }
    let recipients: Vec<&String> = cells
        .iter()
        .filter(|(c, _)| c == "recipient")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(recipients.len(), 2);
    for r in &recipients {
        assert!(
            r.starts_with("hmac-sha256:") && r.len() == 12 + 64,
            "the documented form: {r}"
        );
    }
    assert_ne!(recipients[0], recipients[1], "per-tenant keys");
    // The same value `clarion export --mask to=hash` gives for acme.
    let keys =
        clarion_export::signing::TenantKeys::derive(&ring, &TenantId::parse("acme").unwrap())
            .unwrap();
    let m = clarion_export::mask::Masker::new(
        clarion_export::MaskRules::parse(&["to=hash"]).unwrap(),
        keys.hash_key,
    );
    let acme = m.apply(clarion_export::mask::Target::Email, addr);
    assert!(recipients.contains(&&acme), "{recipients:?} lacks {acme}");
    let errors: Vec<&String> = cells
        .iter()
        .filter(|(c, _)| c == "error")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(errors, ["550 <[email]> unknown; call [phone]"; 2]);
    let templates: Vec<&String> = cells
        .iter()
        .filter(|(c, _)| c == "template_id")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(templates, ["welcome"; 2]);

    // Erased before the export: the recipient reads `[erased]`.
    let mut g = Fixture::new().await;
    let personal = Personal::new(g.store.clone(), ring.clone());
    let mut e = Event {
        id: Id([0; 16]),
        tenant: TenantId::parse("acme").unwrap(),
        partition_key: "acme/sub".into(),
        occurred_at_ms: NOW,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("test".into()),
        payload: requested("a1", "email"),
    };
    if let Payload::DispatchRequested(d) = &mut e.payload {
        d.to = addr.into();
    }
    personal.seal_event(&mut e).await.unwrap();
    g.append(Topic::Dispatch, "acme", e.payload.clone()).await;
    g.append(Topic::Deliveries, "acme", sent("a1")).await;
    personal
        .erase_subscriber(&TenantId::parse("acme").unwrap(), "sub")
        .await
        .unwrap();
    let ends = g.ends().await;
    g.exporter()
        .with_recipients(Recipients::new(personal, ring))
        .run_to(ends, &mut |_| {})
        .await
        .unwrap();
    let recipient: Vec<String> = string_cells(&g)
        .into_iter()
        .filter(|(c, _)| c == "recipient")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(recipient, ["[erased]"]);
}

/// A real S3 wire-format server: moto's `moto_server` from the test
/// virtualenv (scripts/test-deps.sh), with the bucket `clarion-wh` made; `None`
/// (skipped loudly) when it is missing outside CI.
#[cfg(feature = "s3")]
struct Moto(std::process::Child, String);

#[cfg(feature = "s3")]
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "s3")]
fn moto() -> Option<Moto> {
    use std::io::{Read, Write};
    let venv = std::env::var_os("CLARION_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/clarion-venv")
        });
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        let msg = format!("{} is missing: run scripts/test-deps.sh", bin.display());
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED (not in CI): {msg}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child, format!("http://127.0.0.1:{port}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("moto did not listen: {e}"),
        }
    };
    // moto takes unsigned requests: make the bucket with a bare PUT.
    write!(
        conn,
        "PUT /clarion-wh HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "create bucket: {answer}"
    );
    Some(moto)
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_crash_mid_roll_is_undone_when_staged_and_finished_when_publishing() {
    use clarion_warehouse::destination::S3Options;
    let Some(moto) = moto() else {
        return;
    };
    let mut f = Fixture::new().await;
    let opts = S3Options {
        endpoint: moto.1.clone(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        allow_http: true,
        ..S3Options::default()
    };
    let dest = Destination::open_with("s3://clarion-wh/tables", &f.root, &opts).unwrap();
    let keys = Keys::new("exporter", 0);
    let file = |n: &str| FileEntry {
        table: "messages".into(),
        tenant: "acme".into(),
        date: "2026-12-06".into(),
        path: format!("messages/tenant=acme/date=2026-12-06/{n}.parquet"),
        staging: format!("_staging/{n}.parquet"),
        rows: 1,
        bytes: 3,
    };
    let note = |state: &str, seq: u64, names: &[&str]| {
        let staged = Staged {
            state: state.into(),
            seq,
            files: names.iter().map(|n| file(n)).collect(),
        };
        let mut w = WriteBatch::new();
        w.put(keys.staged(), serde_json::to_vec(&staged).unwrap());
        w
    };

    // Staged, nothing committed: the staged object goes; so does an
    // orphan of this exporter no note names; another exporter's stays.
    for name in [
        "_staging/x.parquet",
        "_staging/exporter-p0-0000000009-0.parquet",
        "_staging/backfill-p0-0000000000-0.parquet",
    ] {
        dest.put(name, b"abc".to_vec()).await.unwrap();
    }
    f.store.write(note("staged", 0, &["x"])).await.unwrap();
    f.append(Topic::Dispatch, "acme", requested("a1", "email"))
        .await;
    f.append(Topic::Deliveries, "acme", sent("a1")).await;
    let ends = f.ends().await;
    let rows = f
        .exporter_to(dest.clone())
        .run_to(ends, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let names = dest.list("").await.unwrap();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("_staging/"))
            .collect::<Vec<_>>(),
        ["_staging/backfill-p0-0000000000-0.parquet"],
        "{names:?}"
    );
    let published: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("messages/tenant=acme/"))
        .collect();
    assert_eq!(published.len(), 1, "{names:?}");
    let bytes = dest.get(published[0]).await.unwrap();
    assert_eq!(&bytes[..4], b"PAR1", "a whole Parquet file");
    dest.delete("_staging/backfill-p0-0000000000-0.parquet")
        .await
        .unwrap();

    // Publishing (committed), cut between copy and delete for `y` (both
    // objects there) and before the copy for `z`: the restart finishes both
    // and leaves one object each, with the staged bytes.
    dest.put("_staging/y.parquet", b"yyy".to_vec())
        .await
        .unwrap();
    dest.put(
        "messages/tenant=acme/date=2026-12-06/y.parquet",
        b"yyy".to_vec(),
    )
    .await
    .unwrap();
    dest.put("_staging/z.parquet", b"zzz".to_vec())
        .await
        .unwrap();
    f.store
        .write(note("publishing", 1, &["y", "z"]))
        .await
        .unwrap();
    let ends = f.ends().await;
    assert_eq!(
        f.exporter_to(dest.clone())
            .run_to(ends, &mut |_| {})
            .await
            .unwrap(),
        0
    );
    let names = dest.list("").await.unwrap();
    assert!(
        !names.iter().any(|n| n.starts_with("_staging/")),
        "{names:?}"
    );
    for (n, want) in [("y", b"yyy"), ("z", b"zzz")] {
        let got = dest
            .get(&format!("messages/tenant=acme/date=2026-12-06/{n}.parquet"))
            .await
            .unwrap();
        assert_eq!(&got[..], want, "{n}");
    }

    // A restart after the copy and the delete, before the note went: the
    // copy's source is gone (404), which means published.
    f.store.write(note("publishing", 1, &["y"])).await.unwrap();
    let ends = f.ends().await;
    f.exporter_to(dest.clone())
        .run_to(ends, &mut |_| {})
        .await
        .unwrap();
    let got = dest
        .get("messages/tenant=acme/date=2026-12-06/y.parquet")
        .await
        .unwrap();
    assert_eq!(&got[..], b"yyy");
}
