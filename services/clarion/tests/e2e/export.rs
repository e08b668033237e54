//! Secure export end to end (issue #32), on the embedded log and on Kafka
//! (tansu): two tenants send email and SMS through every role in-process;
//! `clarion export` (the CLI's code) exports one tenant's history: only its
//! rows, addresses masked by default, the watermark in the file and every
//! row, `verify` passes with the tenant's public key and fails after one
//! byte changes, and the export is a `clarion.export.created.v1` event in
//! the log. The other tenant exports over REST (`POST /v1/exports`, admin
//! key): the same checks, and bad input is a 400 problem naming the field.
//! acme exports again over gRPC (`ComplianceService.CreateExport`): the
//! same checks and audit event, bad input INVALID_ARGUMENT naming the field.

use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clarion::{Config, Role};
use clarion_domain::event::Payload;
use clarion_domain::{Actor, Event, TenantId};
use clarion_export::signing::TenantKeys;
use clarion_export::{verify_dir, ExportRequest, Format, MaskRules};
use clarion_runtime::Topic;
use support::warehouse::*;
use support::*;

const ROLES: [Role; 3] = [Role::Projector, Role::Router, Role::Dispatcher];

/// Per tenant: two emails (alice, bob) and one SMS (alice); the first
/// email opened. Returns the notification ids.
async fn send_mix(ch: &tonic::transport::Channel, key: &str) -> BTreeSet<String> {
    one_step_workflow(ch, key, "mail", "email", "sink").await;
    one_step_workflow(ch, key, "text", "sms", "sink").await;
    let ids = vec![
        trigger(ch, key, "mail", "alice").await,
        trigger(ch, key, "mail", "bob").await,
        trigger(ch, key, "text", "alice").await,
    ];
    for id in &ids {
        let n = wait_until(ch, key, id, Duration::from_secs(30), ended).await;
        assert!(ended(&n), "{id} did not end: {n:?}");
    }
    engage(ch, key, &ids[0], "opened").await;
    ids.into_iter().collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The header and rows of a JSON Lines export file.
fn jsonl(path: &std::path::Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = serde_json::from_str(lines.next().unwrap()).unwrap();
    (
        header,
        lines.map(|l| serde_json::from_str(l).unwrap()).collect(),
    )
}

/// The rows are `ids`' and only theirs, masked by default, watermarked.
fn check_rows(rows: &[serde_json::Value], ids: &BTreeSet<String>, watermark_has: &[&str]) {
    let got: BTreeSet<String> = rows
        .iter()
        .map(|r| r["notification_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(&got, ids, "one tenant's notifications, each once");
    assert_eq!(rows.len(), 3, "one attempt each: {rows:#?}");
    for r in rows {
        let w = r["watermark"].as_str().unwrap();
        for part in watermark_has {
            assert!(w.contains(part), "watermark {w:?} lacks {part:?}");
        }
        let to = r["to"].as_str().unwrap();
        match r["channel"].as_str().unwrap() {
            "email" => assert!(
                to == "a***@example.test" || to == "b***@example.test",
                "email masked: {to}"
            ),
            "sms" => assert_eq!(to, "*****0100", "phone: last 4"),
            c => panic!("channel {c}"),
        }
        assert!(
            ["sent", "delivered"].contains(&r["status"].as_str().unwrap()),
            "{r}"
        );
        assert_eq!(r["notification_status"], "completed");
        let sub = r["subscriber_id"].as_str().unwrap();
        assert!(r["body"].as_str().unwrap().contains(sub), "body kept: {r}");
    }
    assert_eq!(
        rows.iter().filter(|r| r["engagement"] == "opened").count(),
        1
    );
}

/// One byte of the data file changed: verify names it; restored: passes.
fn tamper_and_verify(dir: &std::path::Path, file: &str, key: &str) {
    verify_dir(dir, Some(key)).unwrap();
    let path = dir.join(file);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let i = good.len() - 10;
    bad[i] ^= 0x20;
    std::fs::write(&path, &bad).unwrap();
    let e = verify_dir(dir, Some(key)).unwrap_err();
    assert_eq!(e.file, file, "{e}");
    std::fs::write(&path, &good).unwrap();
    verify_dir(dir, Some(key)).unwrap();
}

/// `clarion export ARGS` (the binary) with a configuration naming `data_dir`:
/// its exit status, stdout and stderr.
fn cli(data_dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let config = data_dir.join("cli.toml");
    std::fs::write(
        &config,
        format!("data-dir = {:?}\n", data_dir.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("--config")
        .arg(&config)
        .arg("export")
        .args(args)
        .env("CLARION_LOG", "warn")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `clarion export public-key` prints the key; `clarion export verify`
/// passes, then exits non-zero naming the file after one byte changed.
fn cli_verify(
    data_dir: &std::path::Path,
    dir: &std::path::Path,
    file: &str,
    tenant: &str,
    key: &str,
) {
    let (ok, printed, err) = cli(data_dir, &["public-key", "--tenant", tenant]);
    assert!(ok, "{err}");
    assert_eq!(printed.trim(), key);
    let d = dir.to_str().unwrap();
    let (ok, printed, err) = cli(data_dir, &["verify", d, "--public-key", key]);
    assert!(ok && printed.contains("check out"), "{printed} {err}");
    let path = dir.join(file);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let (ok, _, err) = cli(data_dir, &["verify", d, "--public-key", key]);
    assert!(
        !ok && err.contains(file),
        "verify must fail naming {file}: {err}"
    );
    std::fs::write(&path, &good).unwrap();
}

/// The config stream's ExportCreated events: (tenant, actor, export id).
async fn export_events(node: &clarion::Node) -> Vec<(String, Actor, String)> {
    let topic = node.topics.name(Topic::Config);
    let mut out = Vec::new();
    for p in 0..node.topics.partitions_of(Topic::Config) {
        let end = node.log.end_offset(&topic, p).await.unwrap();
        let mut at = 0;
        while at < end {
            let recs = node.log.read(&topic, p, at, 1000).await.unwrap();
            at = recs.last().map_or(end, |r| r.offset + 1);
            for r in recs {
                let e = Event::decode_bytes(r.value).unwrap();
                if let Payload::ExportCreated(c) = e.payload {
                    out.push((e.tenant.to_string(), e.actor, c.export_id));
                }
            }
        }
    }
    out
}

/// `ComplianceService.CreateExport` of the caller's tenant over a range.
async fn grpc_export(
    ch: &tonic::transport::Channel,
    key: &str,
    from: i64,
    until: i64,
    purpose: &str,
) -> Result<clarion_proto::api::ExportManifest, tonic::Status> {
    clarion_proto::api::compliance_service_client::ComplianceServiceClient::new(ch.clone())
        .create_export(authed(
            key,
            clarion_proto::api::CreateExportRequest {
                from: clarion_export::watermark::rfc3339(from),
                until: clarion_export::watermark::rfc3339(until),
                purpose: purpose.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn scenario(cfg: Config, separate: bool) {
    let node = start_roles(cfg.clone(), separate, &ROLES).await;
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let routes = node.nodes[0].tracking_routes().await.unwrap();
    let listener = tokio::net::TcpListener::bind(http).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
    let ch = channel(node.grpc).await;
    let from = now_ms() - 1000;
    let acme_key = create_tenant(&ch, "acme").await;
    let globex_key = create_tenant(&ch, "globex").await;
    let acme = send_mix(&ch, &acme_key).await;
    let globex = send_mix(&ch, &globex_key).await;
    let until = now_ms() + 1000;

    // The CLI's export of acme.
    let gw = &node.nodes[0];
    let out = cfg.data_dir.join("acme-export");
    let req = ExportRequest {
        tenant: TenantId::parse("acme").unwrap(),
        from_ms: from,
        until_ms: until,
        subscriber: None,
        workflow: None,
        format: Format::Jsonl,
        actor: Actor::Operator("ann".into()),
        requester: "operator:ann".into(),
        purpose: "audit 2026-Q4".into(),
        masks: MaskRules::default(),
        encrypt_to: None,
        max_rows_per_file: 1000,
    };
    let done = clarion::export_cli::run(gw, &req, &out, false)
        .await
        .unwrap();
    let m = &done.manifest;
    let (header, rows) = jsonl(&out.join(&m.files[0].name));
    assert_eq!(
        header["clarion.export.watermark"]["requester"],
        "operator:ann"
    );
    assert_eq!(
        header["clarion.export.watermark"]["purpose"],
        "audit 2026-Q4"
    );
    check_rows(
        &rows,
        &acme,
        &["operator:ann", "audit 2026-Q4", &m.export_id],
    );
    let acme_pk = TenantKeys::derive(&gw.keyring, &req.tenant)
        .unwrap()
        .public_key_b64();
    assert_eq!(m.signing.public_key, acme_pk);
    tamper_and_verify(&out, &m.files[0].name, &acme_pk);
    cli_verify(&cfg.data_dir, &out, &m.files[0].name, "acme", &acme_pk);

    // globex over REST, with its admin key.
    let url = format!("http://{http}/v1/exports");
    let body = format!(
        r#"{{"from":"{}","until":"{}","purpose":"legal hold 9","format":"jsonl"}}"#,
        clarion_export::watermark::rfc3339(from),
        clarion_export::watermark::rfc3339(until)
    );
    let (status, _, answer) = http_call("POST", &url, &globex_key, &body).await;
    assert_eq!(status, 201, "{answer}");
    let a: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(a["tenant"], "globex");
    assert!(
        a["requester"].as_str().unwrap().starts_with("api-key:"),
        "{a}"
    );
    let dir = std::path::PathBuf::from(a["directory"].as_str().unwrap());
    assert!(
        dir.starts_with(cfg.data_dir.join("exports").join("globex")),
        "{dir:?}"
    );
    let file = a["files"][0]["name"].as_str().unwrap();
    let (_, rows) = jsonl(&dir.join(file));
    check_rows(
        &rows,
        &globex,
        &["legal hold 9", a["export_id"].as_str().unwrap()],
    );
    let globex_pk = TenantKeys::derive(&gw.keyring, &TenantId::parse("globex").unwrap())
        .unwrap()
        .public_key_b64();
    assert_eq!(a["public_key"], globex_pk.as_str());
    assert_ne!(globex_pk, acme_pk);
    tamper_and_verify(&dir, file, &globex_pk);

    // Bad input: a problem naming the field, and no export recorded.
    let (status, head, problem) = http_call(
        "POST",
        &url,
        &globex_key,
        &body.replace("legal hold 9", " "),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert!(problem.contains("\"purpose\""), "{problem}");
    let (status, _, problem) = http_call(
        "POST",
        &url,
        &globex_key,
        &body.replace("\"jsonl\"", "\"csv\""),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem.contains("\"format\""), "{problem}");

    // acme again over gRPC (`ComplianceService.CreateExport`): the same
    // export, manifest and audit event as the REST door.
    let grpc = grpc_export(&ch, &acme_key, from, until, "dpo request 12").await;
    let g = grpc.as_ref().unwrap();
    assert_eq!(g.tenant, "acme");
    assert!(g.requester.starts_with("api-key:"), "{g:?}");
    let gdir = std::path::PathBuf::from(&g.directory);
    assert!(
        gdir.starts_with(cfg.data_dir.join("exports").join("acme")),
        "{gdir:?}"
    );
    let (_, rows) = jsonl(&gdir.join(&g.files[0].name));
    check_rows(&rows, &acme, &["dpo request 12", &g.export_id]);
    assert_eq!(g.public_key, acme_pk);
    tamper_and_verify(&gdir, &g.files[0].name, &acme_pk);
    let bad = grpc_export(&ch, &acme_key, from, until, "")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("purpose"), "{bad:?}");

    // The exports are audit events, in their tenants, by their requesters.
    let events = export_events(gw).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2].0, "acme");
    assert!(matches!(events[2].1, Actor::ApiKey(_)), "{:?}", events[2].1);
    assert_eq!(events[2].2, g.export_id);
    assert_eq!(
        events[0],
        (
            "acme".into(),
            Actor::Operator("ann".into()),
            m.export_id.clone()
        )
    );
    assert_eq!(events[1].0, "globex");
    assert!(matches!(events[1].1, Actor::ApiKey(_)), "{:?}", events[1].1);
    assert_eq!(events[1].2, a["export_id"].as_str().unwrap());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_export_masked_watermarked_signed_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    scenario(test_config(dir.path()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_export_masked_watermarked_signed_on_kafka() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka end-to-end not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("ex-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 2;
    scenario(cfg, true).await;
}
