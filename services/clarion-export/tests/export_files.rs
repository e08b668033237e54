//! Exports from a real embedded log (a SQLite file) holding two tenants'
//! notifications: masking, the watermark in every file and row, the signed
//! manifest (verify passes, then fails after one byte of a file or of the
//! manifest changes), age encryption decrypted with the age crate, and the
//! `clarion.export.created.v1` event in the log.

use std::io::Read;
use std::sync::Arc;

use async_trait::async_trait;
use clarion_dispatch::secrets::Keyring;
use clarion_domain::event::Payload;
use clarion_domain::{Actor, Event, Id, TenantId};
use clarion_export::export::{ExportContext, Progress};
use clarion_export::{run_export, verify_dir, ExportRequest, Format, MaskRules, OpenPersonal};
use clarion_log::{EventLog, Record};
use clarion_proto::events as pb;
use clarion_runtime::{Topic, Topics};

/// The log in these tests holds plain values (nothing sealed): opening
/// leaves them as they are. The end-to-end tests use the real keys.
struct Plain;

#[async_trait]
impl OpenPersonal for Plain {
    async fn open_event(&self, _: &mut Event) -> Result<(), String> {
        Ok(())
    }
}

const T0: i64 = 1_796_000_000_000; // 2026-11-30

fn ev(tenant: &str, sub: &str, at: i64, payload: Payload) -> Event {
    Event {
        id: Id(rand::random()),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/{sub}"),
        occurred_at_ms: at,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("test".into()),
        payload,
    }
}

async fn append(log: &dyn EventLog, topics: &Topics, t: Topic, events: Vec<Event>) {
    let recs = events
        .iter()
        .map(|e| Record::new(e.partition_key.clone(), e.encode()))
        .collect();
    log.append(&topics.name(t), recs).await.unwrap();
}

/// One notification: triggered at `at`, an email (or SMS) sent and
/// delivered, opened.
async fn notification(
    log: &dyn EventLog,
    topics: &Topics,
    tenant: &str,
    sub: &str,
    n: usize,
    at: i64,
    sms: bool,
) {
    let nid = format!("{tenant}-n{n}");
    let aid = format!("{nid}-a1");
    let (channel, to) = if sms {
        ("sms", "+15550001234".to_string())
    } else {
        ("email", format!("{sub}@example.com"))
    };
    append(
        log,
        topics,
        Topic::Triggers,
        vec![ev(
            tenant,
            sub,
            at,
            Payload::Triggered(pb::NotificationTriggered {
                notification_id: nid.clone(),
                workflow_id: "welcome".into(),
                subscriber_id: sub.into(),
                ..Default::default()
            }),
        )],
    )
    .await;
    append(
        log,
        topics,
        Topic::Dispatch,
        vec![ev(
            tenant,
            sub,
            at + 10,
            Payload::DispatchRequested(pb::DispatchRequested {
                notification_id: nid.clone(),
                attempt_id: aid.clone(),
                channel: channel.into(),
                provider: "sink".into(),
                to,
                subject: format!("Hello {sub}"),
                body: format!("Your code for {tenant} is 42"),
                subscriber_id: sub.into(),
                workflow_id: "welcome".into(),
                ..Default::default()
            }),
        )],
    )
    .await;
    append(
        log,
        topics,
        Topic::Deliveries,
        vec![
            ev(
                tenant,
                sub,
                at + 20,
                Payload::Sent(pb::NotificationSent {
                    notification_id: nid.clone(),
                    attempt_id: aid.clone(),
                    provider: "sink".into(),
                    ..Default::default()
                }),
            ),
            ev(
                tenant,
                sub,
                at + 30,
                Payload::Delivered(pb::NotificationDelivered {
                    notification_id: nid.clone(),
                    attempt_id: aid.clone(),
                    provider: "sink".into(),
                    context: None,
                }),
            ),
        ],
    )
    .await;
    append(
        log,
        topics,
        Topic::Notifications,
        vec![ev(
            tenant,
            sub,
            at + 25,
            Payload::Ended(pb::RunEnded {
                notification_id: nid.clone(),
                outcome: "completed".into(),
                workflow_id: "welcome".into(),
                subscriber_id: sub.into(),
                ..Default::default()
            }),
        )],
    )
    .await;
    append(
        log,
        topics,
        Topic::Triggers,
        vec![ev(
            tenant,
            sub,
            at + 40,
            Payload::Engaged(pb::EngagementRecorded {
                notification_id: nid,
                attempt_id: aid,
                kind: "opened".into(),
                source: "pixel".into(),
            }),
        )],
    )
    .await;
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    ctx: ExportContext,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        clarion_log::open(&format!("sqlite://{}", dir.path().join("log.db").display()))
            .await
            .unwrap();
    let mut topics = Topics::new("", 2);
    topics.ensure(&*log).await.unwrap();
    for (i, sub) in ["alice", "bob", "carol"].iter().enumerate() {
        notification(&*log, &topics, "acme", sub, i, T0 + i as i64 * 1000, i == 1).await;
    }
    // Outside the range, and another tenant's.
    notification(&*log, &topics, "acme", "dave", 9, T0 + 10_000_000, false).await;
    for (i, sub) in ["erin", "frank"].iter().enumerate() {
        notification(
            &*log,
            &topics,
            "globex",
            sub,
            i,
            T0 + i as i64 * 1000,
            false,
        )
        .await;
    }
    let keyring = Arc::new(Keyring::new("k1", &[("k1", [9; 32])]).unwrap());
    Fixture {
        root: dir.path().to_path_buf(),
        _dir: dir,
        ctx: ExportContext {
            log,
            topics,
            keyring,
            opener: Arc::new(Plain),
        },
    }
}

fn request(tenant: &str, format: Format) -> ExportRequest {
    ExportRequest {
        tenant: TenantId::parse(tenant).unwrap(),
        from_ms: T0,
        until_ms: T0 + 3_600_000,
        subscriber: None,
        workflow: None,
        format,
        actor: Actor::Operator("auditor-ann".into()),
        requester: "operator:auditor-ann".into(),
        purpose: "DSAR #77".into(),
        masks: MaskRules::default(),
        encrypt_to: None,
        max_rows_per_file: 1000,
    }
}

fn jsonl_rows(bytes: &[u8]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let header = serde_json::from_slice(lines.next().unwrap()).unwrap();
    (
        header,
        lines.map(|l| serde_json::from_slice(l).unwrap()).collect(),
    )
}

struct Count(u64, u64);
impl Progress for Count {
    fn total(&mut self, n: u64) {
        self.0 = n;
    }
    fn read(&mut self, n: u64) {
        self.1 += n;
    }
}

#[tokio::test]
async fn jsonl_export_is_masked_watermarked_scoped_signed_and_audited() {
    let f = fixture().await;
    let out = f.root.join("acme-export");
    let mut count = Count(0, 0);
    let done = run_export(
        &f.ctx,
        &request("acme", Format::Jsonl),
        &out,
        T0 + 7_200_000,
        &mut count,
    )
    .await
    .unwrap();
    assert!(
        count.0 > 0 && count.0 == count.1,
        "progress {}/{}",
        count.1,
        count.0
    );
    let m = &done.manifest;
    assert_eq!((m.rows, m.files.len()), (3, 1), "{m:?}");
    let (header, rows) = jsonl_rows(&std::fs::read(out.join(&m.files[0].name)).unwrap());
    let wm = &header["clarion.export.watermark"];
    assert_eq!(wm["requester"], "operator:auditor-ann");
    assert_eq!(wm["purpose"], "DSAR #77");
    assert_eq!(wm["export_id"], m.export_id.as_str());
    let subs: Vec<&str> = rows
        .iter()
        .map(|r| r["subscriber_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        subs,
        ["alice", "bob", "carol"],
        "acme's, in the range, by trigger time"
    );
    for r in &rows {
        let w = r["watermark"].as_str().unwrap();
        assert!(
            w.contains("operator:auditor-ann")
                && w.contains("DSAR #77")
                && w.contains(&m.export_id),
            "{w}"
        );
        assert_eq!(r["status"], "delivered");
        assert_eq!(r["notification_status"], "completed");
        assert_eq!(r["engagement"], "opened");
        assert!(
            r["body"].as_str().unwrap().contains("acme"),
            "bodies kept by default"
        );
    }
    assert_eq!(rows[0]["to"], "a***@example.com");
    assert_eq!(rows[1]["to"], "********1234");
    assert_eq!(rows[2]["to"], "c***@example.com");
    verify_dir(&out, Some(&m.signing.public_key)).unwrap();

    // The export is in the log: ExportCreated on acme's config stream, by the requester.
    let config = f.ctx.topics.name(Topic::Config);
    let recs = f.ctx.log.read(&config, 0, 0, 100).await.unwrap();
    let created: Vec<Event> = recs
        .into_iter()
        .map(|r| Event::decode_bytes(r.value).unwrap())
        .collect();
    assert_eq!(created.len(), 1);
    let e = &created[0];
    assert_eq!(e.tenant.as_str(), "acme");
    assert_eq!(e.actor, Actor::Operator("auditor-ann".into()));
    let Payload::ExportCreated(c) = &e.payload else {
        panic!("{e:?}")
    };
    assert_eq!(
        (c.export_id.as_str(), c.purpose.as_str(), c.format.as_str()),
        (m.export_id.as_str(), "DSAR #77", "jsonl")
    );
    assert_eq!(c.files[0].sha256, m.files[0].sha256);
    let manifest_bytes = std::fs::read(out.join("manifest.json")).unwrap();
    assert_eq!(
        c.manifest_sha256,
        clarion_export::manifest::sha256_hex(&manifest_bytes)
    );
}

#[tokio::test]
async fn verify_fails_after_one_byte_of_a_file_or_the_manifest_changes() {
    let f = fixture().await;
    let out = f.root.join("e");
    let m = run_export(&f.ctx, &request("globex", Format::Jsonl), &out, T0, &mut ())
        .await
        .unwrap()
        .manifest;
    assert_eq!(m.rows, 2);
    verify_dir(&out, None).unwrap();
    let file = out.join(&m.files[0].name);
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let e = verify_dir(&out, None).unwrap_err();
    assert_eq!(e.file, m.files[0].name, "{e}");
    assert!(e.to_string().contains("SHA-256"), "{e}");
    std::fs::write(&file, &good).unwrap();
    verify_dir(&out, None).unwrap();

    // An edited manifest (one more row claimed) breaks the signature.
    let mpath = out.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).unwrap();
    let edited = text.replacen("\"rows\": 2", "\"rows\": 3", 1);
    assert_ne!(edited, text);
    std::fs::write(&mpath, edited).unwrap();
    let e = verify_dir(&out, None).unwrap_err();
    assert_eq!(e.file, "manifest.sig", "{e}");
    std::fs::write(&mpath, &text).unwrap();

    // Pinned to another tenant's key: refused, naming the manifest.
    let acme = clarion_export::signing::TenantKeys::derive(
        &f.ctx.keyring,
        &TenantId::parse("acme").unwrap(),
    )
    .unwrap();
    let e = verify_dir(&out, Some(&acme.public_key_b64())).unwrap_err();
    assert_eq!(e.file, "manifest.json", "{e}");
    verify_dir(&out, Some(&m.signing.public_key)).unwrap();
}

#[tokio::test]
async fn parquet_export_carries_the_watermark_in_metadata_and_column_and_masks_by_rule() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let f = fixture().await;
    let out = f.root.join("p");
    let mut req = request("acme", Format::Parquet);
    req.masks = MaskRules::parse(&["to=redact", "body=hash"]).unwrap();
    req.subscriber = Some("bob".into());
    req.max_rows_per_file = 1;
    let m = run_export(&f.ctx, &req, &out, T0, &mut ())
        .await
        .unwrap()
        .manifest;
    assert_eq!(m.rows, 1);
    verify_dir(&out, None).unwrap();
    let bytes = bytes::Bytes::from(std::fs::read(out.join(&m.files[0].name)).unwrap());
    let reader = SerializedFileReader::new(bytes.clone()).unwrap();
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let wm = kv
        .iter()
        .find(|k| k.key == "clarion.export.watermark")
        .unwrap();
    let wm: serde_json::Value = serde_json::from_str(wm.value.as_deref().unwrap()).unwrap();
    assert_eq!(wm["purpose"], "DSAR #77");
    let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let col = |name: &str| {
        let a = batch.column_by_name(name).unwrap();
        a.as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .value(0)
            .to_string()
    };
    assert_eq!(col("subscriber_id"), "bob");
    assert_eq!(col("to"), "[masked]");
    assert!(col("body").starts_with("hmac-sha256:"), "{}", col("body"));
    assert!(col("watermark").contains("DSAR #77"));
}

#[tokio::test]
async fn encrypted_export_verifies_on_disk_and_decrypts_with_the_identity() {
    let f = fixture().await;
    let out = f.root.join("enc");
    let identity = age::x25519::Identity::generate();
    let mut req = request("acme", Format::Jsonl);
    req.encrypt_to = Some(identity.to_public().to_string());
    let m = run_export(&f.ctx, &req, &out, T0, &mut ())
        .await
        .unwrap()
        .manifest;
    assert!(m.files[0].name.ends_with(".jsonl.age"), "{:?}", m.files);
    verify_dir(&out, None).unwrap();
    let sealed = std::fs::read(out.join(&m.files[0].name)).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("example.com"));
    let dec = age::Decryptor::new(&sealed[..]).unwrap();
    let mut plain = Vec::new();
    dec.decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let (header, rows) = jsonl_rows(&plain);
    assert_eq!(
        header["clarion.export.watermark"]["export_id"],
        m.export_id.as_str()
    );
    assert_eq!(rows.len(), 3);
    // Another identity cannot.
    let other = age::x25519::Identity::generate();
    assert!(age::Decryptor::new(&sealed[..])
        .unwrap()
        .decrypt(std::iter::once(&other as &dyn age::Identity))
        .is_err());
}

#[tokio::test]
async fn bad_requests_name_their_field_and_write_nothing() {
    let f = fixture().await;
    let out = f.root.join("bad");
    let mut req = request("acme", Format::Jsonl);
    req.purpose = "  ".into();
    let e = run_export(&f.ctx, &req, &out, T0, &mut ())
        .await
        .unwrap_err();
    assert!(
        e.is_user_error() && e.to_string().starts_with("purpose:"),
        "{e}"
    );
    let mut req = request("acme", Format::Jsonl);
    req.until_ms = req.from_ms;
    assert!(run_export(&f.ctx, &req, &out, T0, &mut ())
        .await
        .unwrap_err()
        .to_string()
        .starts_with("until:"));
    let mut req = request("acme", Format::Jsonl);
    req.encrypt_to = Some("age1notakey".into());
    assert!(run_export(&f.ctx, &req, &out, T0, &mut ())
        .await
        .unwrap_err()
        .to_string()
        .starts_with("encrypt_to:"));
    assert!(!out.exists());
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("x"), b"x").unwrap();
    let e = run_export(&f.ctx, &request("acme", Format::Jsonl), &out, T0, &mut ())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("out:"), "{e}");
    assert!(
        f.ctx
            .log
            .read(&f.ctx.topics.name(Topic::Config), 0, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "no audit event for a refused export"
    );
}
