//! Auditor replay and tamper evidence end to end (issue #32, docs/audit.md):
//! `clarion serve`'s roles in-process with the notary, two tenants.
//!
//! - replay: what the APIs answered at time T (preferences, workflow
//!   version, notification statuses) is recorded, more changes follow, and
//!   `audit replay --at T` rebuilds exactly what was recorded;
//! - verify: an untouched log verifies; one byte of one record changed in
//!   the SQLite file is named as the first break;
//! - Kafka (tansu): the notary chains the broker's partitions and verify
//!   passes, then detects a changed link.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clarion::{Config, Node, Role};
use clarion_proto::api;
use support::*;
use tonic::transport::Channel;

type Prefs = api::preference_service_client::PreferenceServiceClient<Channel>;
type Workflows = api::workflow_service_client::WorkflowServiceClient<Channel>;

const ROLES: &[Role] = &[
    Role::Projector,
    Role::Router,
    Role::Dispatcher,
    Role::Notary,
];
const TENANTS: [&str; 2] = ["acme", "globex"];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn audited(mut cfg: Config) -> Config {
    // Small enough that the test's chains carry signed checkpoints.
    cfg.audit.checkpoint_every = 3;
    cfg
}

async fn upsert(ch: &Channel, key: &str, tenant: &str, id: &str) {
    Subscribers::new(ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: id.into(),
                email: format!("{id}@{tenant}.test"),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

async fn set_pref(ch: &Channel, key: &str, id: &str, path: &str, value: &str) {
    Prefs::new(ch.clone())
        .update_preferences(authed(
            key,
            api::UpdatePreferencesRequest {
                subscriber_id: id.into(),
                changes: vec![api::PreferenceSetting {
                    path: path.into(),
                    value: value.into(),
                }],
            },
        ))
        .await
        .unwrap();
}

/// Triggers `visit` for `subscriber` with `reference` in the payload;
/// waits for the run to end and returns the notification id.
async fn trigger(ch: &Channel, key: &str, subscriber: &str, reference: &str) -> String {
    let id = Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "visit".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: subscriber.into(),
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"day":"Monday","ref":"{reference}"}}"#),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids
        .remove(0);
    let n = wait_until(ch, key, &id, Duration::from_secs(20), ended).await;
    assert!(ended(&n), "{n:?}");
    id
}

/// What the APIs answer for one tenant.
#[derive(Debug, PartialEq)]
struct Seen {
    /// subscriber -> (channels, marketing, topics)
    preferences: BTreeMap<String, (BTreeMap<String, String>, String, usize)>,
    workflow_version: u32,
    statuses: BTreeMap<String, String>,
}

async fn seen_by_api(ch: &Channel, key: &str, ids: &[String]) -> Seen {
    let mut preferences = BTreeMap::new();
    for s in ["s1", "s2"] {
        let p = Prefs::new(ch.clone())
            .get_preferences(authed(
                key,
                api::GetPreferencesRequest {
                    subscriber_id: s.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let channels = p.channels.into_iter().collect();
        preferences.insert(s.to_string(), (channels, p.marketing, p.topics.len()));
    }
    let workflow_version = Workflows::new(ch.clone())
        .get(authed(
            key,
            api::GetWorkflowRequest {
                workflow_id: "visit".into(),
                version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .version;
    let mut statuses = BTreeMap::new();
    for id in ids {
        let n = Notifications::new(ch.clone())
            .get_notification(authed(
                key,
                api::GetNotificationRequest {
                    notification_id: id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        statuses.insert(id.clone(), n.status);
    }
    Seen {
        preferences,
        workflow_version,
        statuses,
    }
}

/// The same view, from a replay.
fn seen_by_replay(s: &clarion_audit::replay::State) -> Seen {
    let on_off = |b: &bool| if *b { "on" } else { "off" }.to_string();
    let mut preferences = BTreeMap::new();
    for id in ["s1", "s2"] {
        let p = s.preferences.get(id).cloned().unwrap_or_default();
        let channels = p
            .channels
            .iter()
            .map(|(c, b)| (c.clone(), on_off(b)))
            .collect();
        let marketing = p.marketing.as_ref().map_or("inherit".to_string(), on_off);
        preferences.insert(id.to_string(), (channels, marketing, p.topics.len()));
    }
    Seen {
        preferences,
        workflow_version: s.workflows.get("visit").map_or(0, |w| w.version),
        statuses: s
            .notifications
            .iter()
            .map(|(id, n)| (id.clone(), n.status.clone()))
            .collect(),
    }
}

/// Waits until the notary has chained everything, and returns the clean report.
async fn verified(node: &Node) -> clarion_audit::verify::Report {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = clarion::audit_cli::run_verify(node, None, None, false)
            .await
            .unwrap();
        assert_eq!(r.first_break, None, "{r:?}");
        if r.tail == 0 {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the notary did not catch up: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two tenants, each with subscribers s1 and s2, workflow `visit` v1, a
/// preference change and two ended notifications. Returns the keys and ids.
async fn before_t(ch: &Channel) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for tenant in TENANTS {
        let key = create_tenant(ch, tenant).await;
        appointment_workflow(ch, &key, "visit", "sink").await;
        for s in ["s1", "s2"] {
            upsert(ch, &key, tenant, s).await;
        }
        set_pref(ch, &key, "s1", "channels.sms", "off").await;
        set_pref(ch, &key, "s2", "marketing", "off").await;
        let mut ids = Vec::new();
        for s in ["s1", "s2"] {
            ids.push(trigger(ch, &key, s, &format!("{tenant}-{s}-before")).await);
        }
        out.push((key, ids));
    }
    out
}

/// Changes after T: preferences, a new workflow version, a new notification.
async fn after_t(ch: &Channel, tenant: &str, key: &str) -> String {
    set_pref(ch, key, "s1", "channels.email", "off").await;
    set_pref(ch, key, "s2", "marketing", "on").await;
    // A second version of `visit`: another name, the same step.
    Tenants::new(ch.clone())
        .put_workflow(authed(
            key,
            api::Workflow {
                workflow_id: "visit".into(),
                name: "Appointment reminder, second version".into(),
                steps: vec![api::WorkflowStep {
                    channel: "email".into(),
                    template_id: "visit-tpl".into(),
                    provider: "sink".into(),
                }],
            },
        ))
        .await
        .unwrap();
    trigger(ch, key, "s2", &format!("{tenant}-s2-after")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_at_t_rebuilds_what_the_apis_answered_at_t() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = audited(test_config(dir.path()));
    let node = start_roles(cfg.clone(), false, ROLES).await;
    let ch = channel(node.grpc).await;
    let tenants = before_t(&ch).await;
    let mut at_t = Vec::new();
    for (key, ids) in &tenants {
        at_t.push(seen_by_api(&ch, key, ids).await);
    }
    let t = now_ms();
    // Records appended from here on carry a later time than T.
    while now_ms() <= t {
        tokio::task::yield_now().await;
    }
    let mut later_ids = Vec::new();
    for (i, (tenant, (key, ids))) in TENANTS.iter().zip(&tenants).enumerate() {
        let late = after_t(&ch, tenant, key).await;
        let mut all = ids.clone();
        all.push(late.clone());
        let now = seen_by_api(&ch, key, &all).await;
        assert_eq!(now.workflow_version, 2);
        assert_ne!(now.preferences, at_t[i].preferences);
        later_ids.push(late);
    }
    let reader = node.nodes[0].clone();

    for (i, tenant) in TENANTS.iter().enumerate() {
        let state = clarion::audit_cli::run_replay(&reader, tenant, t, None, false)
            .await
            .unwrap();
        assert_eq!(seen_by_replay(&state), at_t[i], "{tenant}: {state:#?}");
        assert!(!state.notifications.contains_key(&later_ids[i]));
        assert_eq!(state.workflows["visit"].versions, vec![1]);
        assert_eq!(state.subscribers["s1"].email, format!("s1@{tenant}.test"));
        assert!(state.records_read > 0 && state.events_per_s() > 0.0);
        // Now: the later changes are there.
        let now = clarion::audit_cli::run_replay(&reader, tenant, now_ms(), None, false)
            .await
            .unwrap();
        assert_eq!(now.workflows["visit"].version, 2);
        assert!(now.notifications.contains_key(&later_ids[i]));
        // One subscriber: only its notifications and preferences.
        let one = clarion::audit_cli::run_replay(&reader, tenant, t, Some("s1".into()), false)
            .await
            .unwrap();
        assert_eq!(one.notifications.len(), 1, "{one:#?}");
        assert!(one.notifications.values().all(|n| n.subscriber_id == "s1"));
        assert_eq!(one.preferences.keys().collect::<Vec<_>>(), vec!["s1"]);
        assert_eq!(one.workflows["visit"].version, 1);
    }
    // Bad input names the argument.
    let e = clarion::audit_cli::run_replay(&reader, "Not A Tenant", t, None, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--tenant"), "{e}");
    node.stop().await;
}

/// Where `needle` is: the triggers partition and offset of that record.
async fn locate(node: &Node, needle: &[u8]) -> (u32, u64) {
    let name = node.topics.name(clarion_runtime::Topic::Triggers);
    for p in 0..node.topics.partitions {
        let end = node.log.end_offset(&name, p).await.unwrap();
        for r in node.log.read(&name, p, 0, end as usize).await.unwrap() {
            if r.value.windows(needle.len()).any(|w| w == needle) {
                return (p, r.offset);
            }
        }
    }
    panic!("no record holds the needle");
}

/// Flips one byte of `needle` in the stored record batches of the file.
fn flip_byte_in_log_file(path: &std::path::Path, needle: &[u8]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT id, body FROM record_batches ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (id, mut body) = rows
        .into_iter()
        .find(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
        .expect("the record is in the file (stored plain)");
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    body[at + needle.len() - 1] ^= 0x01;
    conn.execute(
        "UPDATE record_batches SET body = ?1 WHERE id = ?2",
        rusqlite::params![body, id],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_untouched_and_names_one_changed_byte_as_the_first_break() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = audited(test_config(dir.path()));
    let node = start_roles(cfg.clone(), false, ROLES).await;
    let ch = channel(node.grpc).await;
    before_t(&ch).await;
    let clean = verified(&node.nodes[0]).await;
    assert!(clean.checked > 20 && clean.checkpoints > 0, "{clean:?}");
    for tenant in TENANTS {
        let one = clarion::audit_cli::run_verify(&node.nodes[0], Some(tenant.into()), None, false)
            .await
            .unwrap();
        assert!(one.checked > 0 && one.first_break.is_none(), "{one:?}");
    }
    let needle = b"globex-s2-before";
    let (partition, offset) = locate(&node.nodes[0], needle).await;
    node.stop().await;

    flip_byte_in_log_file(&dir.path().join(clarion::config::EMBEDDED_FILE), needle);
    let reader = Node::open(cfg.clone()).await.unwrap();
    let report = clarion::audit_cli::run_verify(&reader, None, None, false)
        .await
        .unwrap();
    let first = report.first_break.clone().expect("the edit is detected");
    assert_eq!(
        (
            first.topic.as_str(),
            first.partition,
            first.offset,
            first.tenant.as_str()
        ),
        ("triggers", partition, offset, "globex"),
        "{report:?}"
    );
    assert_eq!(report.breaks, 1, "one edit, one break: {report:?}");
    // The command itself fails (exit status 1), naming the place.
    let cmd = clarion::audit_cli::AuditCmd::Verify {
        tenant: None,
        public_key: None,
        json: true,
    };
    let failed = clarion::audit_cli::audit(cfg.clone(), cmd)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        failed.contains(&format!(
            "triggers partition {partition} offset {offset} (tenant globex)"
        )),
        "{failed}"
    );
    // acme's chains are untouched; a foreign public key fails the checkpoints.
    let acme = clarion::audit_cli::run_verify(&reader, Some("acme".into()), None, false)
        .await
        .unwrap();
    assert_eq!(acme.first_break, None, "{acme:?}");
    let foreign = clarion_audit::AuditKey::generate().public().to_base64();
    let other = clarion::audit_cli::run_verify(&reader, Some("acme".into()), Some(&foreign), false)
        .await
        .unwrap();
    assert!(other
        .first_break
        .expect("refused")
        .what
        .contains("signature"));
    let bad = clarion::audit_cli::run_verify(&reader, None, Some("not base64!"), false)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("--public-key"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notary_chains_kafka_and_verify_detects_a_changed_link() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka audit not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = audited(test_config(dir.path()));
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("audit-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 2;
    let node = start_roles(cfg.clone(), true, ROLES).await;
    let ch = channel(node.grpc).await;
    let tenants = before_t(&ch).await;
    let clean = verified(&node.nodes[0]).await;
    assert!(clean.checked > 20 && clean.checkpoints > 0, "{clean:?}");
    // Replay reads the broker too.
    let state = clarion::audit_cli::run_replay(&node.nodes[0], "acme", now_ms(), None, false)
        .await
        .unwrap();
    assert_eq!(state.notifications.len(), tenants[0].1.len(), "{state:#?}");
    node.stop().await;

    // Change one stored link of globex: verify names it.
    let reader = Node::open(cfg).await.unwrap();
    let (pk, ck, row) = first_chain_row(&reader, "globex").await;
    let mut links = row.clone();
    links.links[0].1[0] ^= 1;
    let mut w = clarion_store::WriteBatch::new();
    w.put(
        clarion_store::RowKey::new(clarion_store::Table::Chain, "globex", &pk, ck),
        links.encode(),
    );
    reader.store.write(w).await.unwrap();
    let report = clarion::audit_cli::run_verify(&reader, None, None, false)
        .await
        .unwrap();
    let first = report.first_break.expect("detected");
    assert_eq!(
        (first.tenant.as_str(), first.offset),
        ("globex", row.links[0].0)
    );
}

/// The first stored chain row of `tenant` on any partition.
async fn first_chain_row(
    node: &Node,
    tenant: &str,
) -> (String, Vec<u8>, clarion_audit::rows::ChainRow) {
    for part in clarion_audit::walk::parts(&node.topics) {
        let pk = clarion_audit::rows::chain_pk(part.base, part.partition);
        let rows = node
            .store
            .scan(&clarion_store::Scan::partition(
                clarion_store::Table::Chain,
                tenant,
                &pk,
                1,
            ))
            .await
            .unwrap();
        if let Some((ck, v)) = rows.into_iter().next() {
            let row = clarion_audit::rows::ChainRow::decode(&v, "test").unwrap();
            if !row.links.is_empty() {
                return (pk, ck, row);
            }
        }
    }
    panic!("no chain row of {tenant}");
}
