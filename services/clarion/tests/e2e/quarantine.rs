//! A record that cannot be processed stops its partition only: a poison
//! record appended to one partition of the triggers topic of a running
//! server stops that router partition, which reports it (gRPC, the HTTP
//! partition report); the other partition keeps delivering; the operator
//! inspects and parks the record with the real `clarion quarantine`
//! command, and the partition delivers what was queued behind it. Nothing
//! else is lost or sent twice.

use crate::support;

use std::time::{Duration, Instant};

use clarion_log::{partition_for, Record};
use clarion_proto::api;
use clarion_runtime::Topic;
use support::*;

type Quarantine =
    api::quarantine_service_client::QuarantineServiceClient<tonic::transport::Channel>;

/// Fixed pseudo-random bytes that do not decode as an event envelope.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A subscriber id of `tenant` whose triggers land on `partition`.
fn subscriber_on(tenant: &str, partition: u32, partitions: u32, skip: usize) -> String {
    (0..)
        .map(|i| format!("s{i}"))
        .filter(|s| partition_for(&format!("{tenant}/{s}"), partitions) == partition)
        .nth(skip)
        .unwrap()
}

async fn trigger(ch: &tonic::transport::Channel, key: &str, sub: &str) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "appointment".into(),
                event: String::new(),
                recipients: vec![api::Recipient {
                    subscriber_id: sub.into(),
                    email: format!("{sub}@example.test"),
                    ..Default::default()
                }],
                payload_json: r#"{"day":"lundi"}"#.into(),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger accepted")
        .into_inner()
        .notification_ids[0]
        .clone()
}

/// Runs the real `clarion quarantine` command against the server.
async fn clarion_quarantine(grpc: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
            .arg("quarantine")
            .args(&args)
            .args(["--endpoint", &format!("http://{grpc}")])
            .env("CLARION_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("running clarion");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

/// Polls `f` until it returns `Some` (a generous bound that only detects a
/// stall, not a timing assertion).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "stalled waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn partition_report(addr: std::net::SocketAddr) -> serde_json::Value {
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /v1/admin/partitions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    let json = body.split("\r\n\r\n").nth(1).expect("an HTTP body");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_stops_one_partition_until_an_operator_parks_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let node = start(cfg, false).await;
    let topics = node.nodes[0].topics.clone();
    let parts = topics.partitions_of(Topic::Triggers);
    assert_eq!(parts, 2);
    let triggers = topics.name(Topic::Triggers);
    // The partition report, served as the binary serves it.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let routes = clarion_gateway::http::partition_routes(node.nodes[0].partitions.clone());
    tokio::spawn(async move { axum::serve(http, routes).await.unwrap() });

    let ch = channel(node.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    appointment_workflow(&ch, &acme, "appointment", "sink").await;
    appointment_workflow(&ch, &globex, "appointment", "sink").await;

    // Given: one trigger per tenant delivered on each partition
    let (bad, good) = (0u32, 1u32);
    let mut before = Vec::new();
    for (tenant, key) in [("acme", &acme), ("globex", &globex)] {
        for p in [bad, good] {
            before.push((
                tenant,
                trigger(&ch, key, &subscriber_on(tenant, p, parts, 0)).await,
            ));
        }
    }
    for (tenant, id) in &before {
        let key = if *tenant == "acme" { &acme } else { &globex };
        let n = wait_status(&ch, key, id, "delivered", Duration::from_secs(30)).await;
        assert_eq!(n.status, "delivered", "{n:?}");
    }

    // When: a record that is no event lands on partition `bad` of triggers,
    // and both tenants trigger on both partitions behind it
    let junk = garbage(61);
    let at = node.nodes[0]
        .log
        .append(
            &triggers,
            vec![Record::new(
                format!("acme/{}", subscriber_on("acme", bad, parts, 0)),
                junk.clone(),
            )],
        )
        .await
        .unwrap();
    assert_eq!(at[0].partition, bad);
    let poison = at[0].offset;
    let mut stuck = Vec::new();
    let mut flowing = Vec::new();
    for (tenant, key) in [("acme", &acme), ("globex", &globex)] {
        for i in 0..2 {
            stuck.push((
                tenant,
                trigger(&ch, key, &subscriber_on(tenant, bad, parts, i)).await,
            ));
            flowing.push((
                tenant,
                trigger(&ch, key, &subscriber_on(tenant, good, parts, i)).await,
            ));
        }
    }

    // Then: the other partition keeps delivering, for both tenants
    for (tenant, id) in &flowing {
        let key = if *tenant == "acme" { &acme } else { &globex };
        let n = wait_status(&ch, key, id, "delivered", Duration::from_secs(30)).await;
        assert_eq!(n.status, "delivered", "{n:?}");
    }
    // And the router partition reports its stop at the poison's offset:
    // over gRPC (from the store, for any gateway) ...
    let mut q = Quarantine::new(ch.clone());
    let stopped = eventually("the stop to be recorded", || {
        let mut q = q.clone();
        async move {
            let r = q
                .list(authed(ADMIN_TOKEN, api::ListQuarantineRequest {}))
                .await
                .unwrap()
                .into_inner();
            (!r.stopped.is_empty()).then_some(r)
        }
    })
    .await;
    assert_eq!(stopped.stopped.len(), 1, "{stopped:?}");
    let s = &stopped.stopped[0];
    assert_eq!(
        (
            s.processor.as_str(),
            s.topic.as_str(),
            s.partition,
            s.offset
        ),
        ("router", triggers.as_str(), bad, poison)
    );
    assert!(s.reason.contains("malformed event envelope"), "{s:?}");
    assert!(stopped.quarantined.is_empty());
    // ... and by this process over HTTP
    let report = partition_report(http_addr).await;
    let listed = report["partitions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{report}");
    assert_eq!(
        (
            listed[0]["state"].as_str(),
            listed[0]["offset"].as_u64(),
            listed[0]["partition"].as_u64()
        ),
        (Some("stopped"), Some(poison), Some(u64::from(bad)))
    );
    // And nothing behind the poison went out: the stop is ordered before
    // them in the partition, and the partition stopped there.
    for (tenant, id) in &stuck {
        let sunk = clarion_dispatch::dispatcher::sink_deliveries(node.store(), tenant, id)
            .await
            .unwrap();
        assert!(sunk.is_empty(), "{id} was delivered past the poison");
    }

    // Parking a record the partition is not stopped at is refused: nothing
    // is skipped that did not stop a partition
    let e = q
        .park(authed(
            ADMIN_TOKEN,
            api::ParkRecordRequest {
                processor: "router".into(),
                topic: triggers.clone(),
                partition: bad,
                offset: poison + 1,
                note: "wrong one".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    // And parking takes the admin token, not a tenant's key
    let e = q
        .park(authed(
            &acme,
            api::ParkRecordRequest {
                processor: "router".into(),
                topic: triggers.clone(),
                partition: bad,
                offset: poison,
                note: "a tenant trying".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // When: the operator inspects the record and parks it with `clarion`
    let (ok, out) = clarion_quarantine(
        node.grpc,
        &[
            "show",
            "--topic",
            &triggers,
            "--partition",
            &bad.to_string(),
            "--offset",
            &poison.to_string(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("does not decode"), "{out}");
    assert!(out.contains(&format!("size {} bytes", junk.len())), "{out}");
    let (ok, out) = clarion_quarantine(
        node.grpc,
        &[
            "park",
            "--processor",
            "router",
            "--topic",
            &triggers,
            "--partition",
            &bad.to_string(),
            "--offset",
            &poison.to_string(),
            "--note",
            "garbage appended by a broken producer (INC-42)",
        ],
    )
    .await;
    assert!(ok, "{out}");

    // Then: the partition goes on and delivers what was queued behind it
    for (tenant, id) in &stuck {
        let key = if *tenant == "acme" { &acme } else { &globex };
        let n = wait_status(&ch, key, id, "delivered", Duration::from_secs(30)).await;
        assert_eq!(n.status, "delivered", "{n:?}");
    }
    // And nothing else was lost or repeated: one sink delivery each
    for (tenant, id) in before.iter().chain(&stuck).chain(&flowing) {
        let sunk = clarion_dispatch::dispatcher::sink_deliveries(node.store(), tenant, id)
            .await
            .unwrap();
        assert_eq!(sunk.len(), 1, "{tenant} {id}: {sunk:?}");
    }
    // And the record stays listed as quarantined, with who and why; no
    // partition is stopped any more
    let (ok, out) = clarion_quarantine(node.grpc, &["list"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("stopped partitions: 0"), "{out}");
    assert!(out.contains("quarantined records: 1"), "{out}");
    let r = q
        .list(authed(ADMIN_TOKEN, api::ListQuarantineRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(r.stopped.is_empty(), "{r:?}");
    assert_eq!(r.quarantined.len(), 1);
    let parked = &r.quarantined[0];
    assert_eq!(
        (
            parked.offset,
            parked.partition,
            parked.actor.as_str(),
            parked.note.as_str(),
            parked.record_size
        ),
        (
            poison,
            bad,
            "operator:admin",
            "garbage appended by a broken producer (INC-42)",
            junk.len() as u64
        )
    );
    assert_eq!(
        parked.record_sha256,
        clarion_domain::tenant::sha256_hex(&junk)
    );
    let report = partition_report(http_addr).await;
    assert_eq!(report["partitions"], serde_json::json!([]), "{report}");
    node.stop().await;
}

/// Runs a blocking call of the file's writer off the async workers.
async fn on_writer<T: Send + 'static>(
    w: &clarion_sqlite::writer::Writer,
    f: impl FnOnce(&clarion_sqlite::writer::Writer) -> T + Send + 'static,
) -> T {
    let w = w.clone();
    tokio::task::spawn_blocking(move || f(&w)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_work_clearly_and_loses_nothing_once_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    appointment_workflow(&ch, &acme, "appointment", "sink").await;
    appointment_workflow(&ch, &globex, "appointment", "sink").await;
    let writer = node.nodes[0]
        .colocated
        .as_ref()
        .expect("the embedded default keeps log and store in one file")
        .writer()
        .clone();
    let trigger_padded = |key: String, sub: String, pad: usize| {
        let ch = ch.clone();
        async move {
            Notifications::new(ch)
                .trigger(authed(
                    &key,
                    api::TriggerRequest {
                        workflow_id: "appointment".into(),
                        event: String::new(),
                        recipients: vec![api::Recipient {
                            subscriber_id: sub.clone(),
                            email: format!("{sub}@example.test"),
                            ..Default::default()
                        }],
                        payload_json: format!(r#"{{"day":"lundi","pad":"{}"}}"#, "x".repeat(pad)),
                        idempotency_key: String::new(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().notification_ids[0].clone())
        }
    };

    // Given: the file may grow by only a few pages (a real SQLITE_FULL, as
    // on a full disk: SQLite's max_page_count on the writer's connection)
    let pages = on_writer(&writer, |w| w.page_count()).await.unwrap();
    on_writer(&writer, move |w| w.max_page_count(Some(pages + 16)))
        .await
        .unwrap();

    // When: both tenants trigger until the gateway refuses
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..2_000 {
        let (tenant, key) = if i % 2 == 0 {
            ("acme", &acme)
        } else {
            ("globex", &globex)
        };
        match trigger_padded(key.clone(), format!("s{i}"), 3000).await {
            Ok(id) => accepted.push((tenant, id)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }

    // Then: the refusal is UNAVAILABLE (retry later) and says why
    let e = refused.expect("a full file refuses new work");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("storage full"), "{e:?}");
    // And it goes on refusing while full. A group commit that failed rolled
    // back the pages it had taken, and a small write may fit in them: the
    // file is held at its size and the late trigger is larger than that room.
    let now = on_writer(&writer, |w| w.page_count()).await.unwrap();
    on_writer(&writer, move |w| w.max_page_count(Some(now)))
        .await
        .unwrap();
    let e = trigger_padded(acme.clone(), "late".into(), 60_000)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(!accepted.is_empty(), "some triggers fit before the cap");
    // And the processors, which cannot commit either, pause (reported,
    // retrying with backoff) rather than stop or crash
    let partitions = node.nodes[0].partitions.clone();
    let paused = eventually("a processor to pause", || {
        let partitions = partitions.clone();
        async move {
            let now = partitions.snapshot();
            (!now.is_empty()).then_some(now)
        }
    })
    .await;
    assert!(paused.iter().all(|s| s.state == "paused"), "{paused:?}");
    assert!(paused[0].reason.starts_with("storage full"), "{paused:?}");

    // When: space returns
    on_writer(&writer, |w| w.max_page_count(Some(1 << 30)))
        .await
        .unwrap();

    // Then: new work is accepted, and every accepted trigger is delivered
    // exactly once (the processors paused and went on)
    let after = trigger_padded(globex.clone(), "after".into(), 3000)
        .await
        .expect("accepted once space returned");
    accepted.push(("globex", after));
    for (tenant, id) in &accepted {
        let key = if *tenant == "acme" { &acme } else { &globex };
        let n = wait_status(&ch, key, id, "delivered", Duration::from_secs(60)).await;
        assert_eq!(n.status, "delivered", "{n:?}");
        let sunk = clarion_dispatch::dispatcher::sink_deliveries(node.store(), tenant, id)
            .await
            .unwrap();
        assert_eq!(sunk.len(), 1, "{tenant} {id}: {sunk:?}");
    }
    // And no partition is reported paused or stopped any more
    eventually("the pauses to clear", || {
        let partitions = partitions.clone();
        async move { partitions.snapshot().is_empty().then_some(()) }
    })
    .await;
    node.stop().await;
}
