//! Scaling a processor role over Kafka (issue #31): two real `clarion run
//! router` processes share the triggers partitions through the router's
//! consumer group (`runtime.partition-assignment = "group"`); `kill -9` of one
//! mid-stream moves its partitions to the other, and every notification of
//! two tenants reaches the sink provider exactly once (nothing lost, nothing
//! twice). The gateway, dispatcher and projector run in this process on the
//! same broker (tansu, `scripts/kafka-up.sh`; CLARION_KAFKA_BROKERS) and the
//! same store file, their processor roles in groups of one member. Fails
//! (does not skip) when the broker is missing, unless CLARION_SKIP_KAFKA=1.

use crate::support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clarion::config::PartitionAssignment;
use clarion::roles::Role;
use clarion_proto::api;
use support::*;

const PARTITIONS: u32 = 4;

/// A `clarion run router` child process, killed on drop.
struct RouterProcess {
    child: Child,
    http: u16,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_router(config: &Path, http: u16) -> RouterProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("--config")
        .arg(config)
        .args(["run", "router", "--http-listen"])
        .arg(format!("127.0.0.1:{http}"))
        .env(
            "CLARION_LOG",
            "warn,clarion_runtime::assignment=info,clarion_log::kafka_group=info",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn clarion run router");
    RouterProcess { child, http }
}

impl RouterProcess {
    /// The triggers partitions this process runs now, from its
    /// `clarion_partition_owned` gauge.
    async fn owned(&self, triggers: &str) -> Option<BTreeSet<u32>> {
        let body = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("clarion_partition_owned{") && l.ends_with(" 1"))
                .filter(|l| l.contains(&format!("topic=\"{triggers}\"")))
                .filter_map(|l| {
                    let at = l.find("partition=\"")? + "partition=\"".len();
                    l[at..].split('"').next()?.parse().ok()
                })
                .collect(),
        )
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Waits until the routers own these partitions each (`None`: no
/// expectation on that one), then returns what they own.
async fn wait_owned(
    routers: &[&RouterProcess],
    triggers: &str,
    ok: impl Fn(&[BTreeSet<u32>]) -> bool,
    what: &str,
) -> Vec<BTreeSet<u32>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut owned = Vec::new();
        for r in routers {
            owned.push(r.owned(triggers).await.unwrap_or_default());
        }
        if ok(&owned) {
            return owned;
        }
        assert!(Instant::now() < deadline, "{what}: routers own {owned:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_config(dir: &Path, brokers: &str, prefix: &str) -> std::path::PathBuf {
    let path = dir.join("router.toml");
    std::fs::write(
        &path,
        format!(
            "data-dir = {data:?}\n\
             [log]\nurl = \"{url}\"\ntopic-prefix = \"{prefix}\"\npartitions = {PARTITIONS}\n\
             [store]\nurl = \"sqlite://{store}\"\n\
             [grpc]\nlisten = \"127.0.0.1:{grpc}\"\n\
             [runtime]\npoll-wait-ms = 20\nmax-batch = 64\n\
             partition-assignment = \"group\"\ngroup-session-timeout-ms = 6000\n",
            data = dir.display().to_string(),
            store = dir.join("store.db").display(),
            url = crate::support::kafka_url(brokers),
            grpc = free_port(),
        ),
    )
    .unwrap();
    path
}

async fn trigger(client: &mut Notifications, key: &str, sub: &str) -> Option<String> {
    let r = client
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "to-sink".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: sub.into(),
                    email: format!("{sub}@example.test"),
                    ..Default::default()
                }],
                payload_json: r#"{"day":"today"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .ok()?;
    r.into_inner().notification_ids.into_iter().next()
}

/// Streams triggers of both tenants, alternating, for `run`; returns the
/// accepted notification ids by tenant.
async fn stream(
    ch: &tonic::transport::Channel,
    keys: &[(&str, String)],
    from: usize,
    run: Duration,
    accepted: &mut HashMap<String, &'static str>,
) -> usize {
    let mut client = Notifications::new(ch.clone());
    let until = Instant::now() + run;
    let mut seq = from;
    while Instant::now() < until {
        let (tenant, key) = &keys[seq % keys.len()];
        let tenant: &'static str = if *tenant == "acme" { "acme" } else { "globex" };
        if let Some(id) = trigger(&mut client, key, &format!("sub-{seq}")).await {
            accepted.insert(id, tenant);
        }
        seq += 1;
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_partitions_and_a_killed_ones_move_with_nothing_lost_or_doubled() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka end-to-end not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("e2e-{}.", uuid::Uuid::new_v4().simple());
    let triggers = format!("{prefix}triggers");
    let mut cfg = test_config(dir.path());
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = prefix.clone();
    cfg.log.partitions = PARTITIONS;
    cfg.store.url = format!("sqlite://{}", dir.path().join("store.db").display());
    cfg.runtime.max_batch = 64;
    cfg.runtime.partition_assignment = PartitionAssignment::Group;
    cfg.runtime.group_session_timeout_ms = 6000;
    // The gateway, the dispatcher and the projector here; creates the topics
    // and the keyring the routers share.
    let node = start_roles(cfg, true, &[Role::Projector, Role::Dispatcher]).await;
    let config = write_config(dir.path(), &brokers, &prefix);
    let a = spawn_router(&config, free_port());
    let b = spawn_router(&config, free_port());

    // Both routers own partitions, none twice, all of them between them.
    let split = |o: &[BTreeSet<u32>]| {
        o.iter().all(|s| !s.is_empty())
            && o[0].is_disjoint(&o[1])
            && o[0].len() + o[1].len() == PARTITIONS as usize
    };
    let owned = wait_owned(&[&a, &b], &triggers, split, "split between two routers").await;
    eprintln!("routers own {owned:?}");

    let ch = channel(node.grpc).await;
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let key = create_tenant(&ch, tenant).await;
        appointment_workflow(&ch, &key, "to-sink", "sink").await;
        keys.push((tenant, key));
    }

    // A stream, then `kill -9` of router a while triggers keep coming.
    let mut accepted = HashMap::new();
    let seq = stream(&ch, &keys, 0, Duration::from_secs(3), &mut accepted).await;
    let before_kill = accepted.len();
    eprintln!("kill -9 of router a (owning {:?})", owned[0]);
    a.kill9();
    let seq = stream(&ch, &keys, seq, Duration::from_secs(3), &mut accepted).await;
    // b takes every partition once the group dropped a (session timeout).
    let all = |o: &[BTreeSet<u32>]| o[0].len() == PARTITIONS as usize;
    wait_owned(&[&b], &triggers, all, "the survivor took over").await;
    stream(&ch, &keys, seq, Duration::from_secs(2), &mut accepted).await;
    let per_tenant = |t: &str| accepted.values().filter(|v| **v == t).count();
    assert!(
        before_kill > 20 && per_tenant("acme") > 20 && per_tenant("globex") > 20,
        "the stream was too thin to mean anything: {before_kill} before the kill, {} acme, {} globex",
        per_tenant("acme"),
        per_tenant("globex")
    );

    // Every accepted notification reached the sink exactly once, recorded
    // under its own tenant only.
    let store = node.store();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut lost = Vec::new();
        let mut doubled = Vec::new();
        for (id, tenant) in &accepted {
            let other = if *tenant == "acme" { "globex" } else { "acme" };
            let n = clarion_dispatch::dispatcher::sink_deliveries(store, tenant, id)
                .await
                .unwrap()
                .len();
            let leaked = clarion_dispatch::dispatcher::sink_deliveries(store, other, id)
                .await
                .unwrap();
            assert!(leaked.is_empty(), "{id} of {tenant} recorded under {other}");
            match n {
                0 => lost.push(id.clone()),
                1 => {}
                _ => doubled.push((id.clone(), n)),
            }
        }
        assert!(doubled.is_empty(), "delivered more than once: {doubled:?}");
        if lost.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted notifications never reached the sink, e.g. {:?}",
            lost.len(),
            accepted.len(),
            &lost[..lost.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "group test: {} accepted ({} before the kill), each delivered once",
        accepted.len(),
        before_kill
    );
    drop(b);
    node.stop().await;
}
