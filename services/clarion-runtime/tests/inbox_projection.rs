//! The inbox projection over the real embedded parts (the log and the store
//! in one SQLite file), its runners stepped by hand: items and marks land
//! in the feed with consistent counts and a growing version, repeats change
//! nothing, the cap drops the oldest items, the hub hears of every move,
//! and a fresh store rebuilt from the log holds the very same rows.
//!
//! Two tenants, `acme` and `globex`, each with a subscriber `ana`: one
//! tenant's feed never shows in the other's.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use clarion_domain::ids::recipient_key;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::{EventLog, Record};
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::inbox::rows::{self, Filter, Part, Status};
use clarion_runtime::inbox::{HubEffects, InboxHub, InboxProjector};
use clarion_runtime::{Clock, ManualClock, PartitionRunner, RunnerConfig, Topic, Topics};
use clarion_store::{Scan, Store, Table};
use tempfile::TempDir;

const T0: i64 = 1_700_000_000_000;
const PARTITIONS: u32 = 2;
const SUB: &str = "ana";

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

struct Env {
    _dir: TempDir,
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    topics: Topics,
    clock: ManualClock,
    hub: Arc<InboxHub>,
    runners: Vec<PartitionRunner<InboxProjector>>,
    seq: u64,
}

async fn runners(
    log: &Arc<dyn EventLog>,
    store: &Arc<dyn Store>,
    colocated: Option<&Arc<Colocated>>,
    topics: &Topics,
    clock: &ManualClock,
    hub: &Arc<InboxHub>,
    cap: u64,
) -> Vec<PartitionRunner<InboxProjector>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let mut r = PartitionRunner::new(
            InboxProjector::with_cap(cap),
            Arc::new(HubEffects(hub.clone())),
            log.clone(),
            store.clone(),
            topics.clone(),
            Topic::Deliveries,
            p,
            Arc::new(clock.clone()),
            RunnerConfig::default(),
        );
        if let Some(c) = colocated {
            r = r.with_colocated(c.clone());
        }
        r.start().await.expect("starts");
        out.push(r);
    }
    out
}

impl Env {
    async fn new(cap: u64) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clarion.db");
        let colocated = Arc::new(Colocated::open(path.to_str().unwrap()).expect("open"));
        let (log, store) = (colocated.log(), colocated.store());
        let mut topics = Topics::new("test.", PARTITIONS);
        topics.ensure(&*log).await.expect("create topics");
        let clock = ManualClock::new(T0);
        let hub = Arc::new(InboxHub::default());
        let runners = runners(&log, &store, Some(&colocated), &topics, &clock, &hub, cap).await;
        Env {
            _dir: dir,
            log,
            store,
            topics,
            clock,
            hub,
            runners,
            seq: 0,
        }
    }

    fn event(&mut self, t: &str, payload: Payload) -> Event {
        self.seq += 1;
        self.clock.advance(std::time::Duration::from_millis(10));
        let tenant = tenant(t);
        Event {
            id: Id::derive(&[b"inbox-test", &self.seq.to_be_bytes()]),
            partition_key: recipient_key(&tenant, SUB),
            tenant,
            occurred_at_ms: self.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload,
        }
    }

    fn item(&mut self, t: &str, id: &str, category: &str) -> Event {
        self.event(
            t,
            Payload::InboxItemWritten(pb::InboxItemWritten {
                subscriber_id: SUB.into(),
                item_id: id.into(),
                notification_id: format!("n-{id}"),
                attempt_id: id.into(),
                title: format!("{t} title {id}"),
                body: format!("{t} body {id}"),
                category: category.into(),
                ..Default::default()
            }),
        )
    }

    fn mark(&mut self, t: &str, ids: &[&str], all: bool, category: &str, mark: &str) -> Event {
        self.event(
            t,
            Payload::InboxItemsMarked(pb::InboxItemsMarked {
                subscriber_id: SUB.into(),
                item_ids: ids.iter().map(|s| s.to_string()).collect(),
                all,
                category: category.into(),
                mark: mark.into(),
                origin: None,
            }),
        )
    }

    async fn append(&self, events: &[Event]) {
        let recs = events
            .iter()
            .map(|e| Record {
                key: e.partition_key.clone(),
                value: Bytes::from(e.encode()),
                index: None,
            })
            .collect();
        self.log
            .append(&self.topics.name(Topic::Deliveries), recs)
            .await
            .expect("append");
    }

    /// Appends and projects.
    async fn apply(&mut self, events: &[Event]) {
        self.append(events).await;
        project(&*self.log, &self.topics, &mut self.runners).await;
    }

    async fn counts(&self, t: &str) -> pb::InboxCountsRecord {
        rows::counts(&*self.store, t, SUB).await.unwrap()
    }

    async fn list(
        &self,
        t: &str,
        status: Status,
        archived: bool,
        category: Option<&str>,
    ) -> Vec<String> {
        let filter = Filter {
            status,
            archived,
            category: category.map(str::to_string),
        };
        rows::list(&*self.store, t, SUB, &filter, None, 100)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|(_, r)| r.item_id)
            .collect()
    }
}

async fn project(
    log: &dyn EventLog,
    topics: &Topics,
    runners: &mut [PartitionRunner<InboxProjector>],
) {
    for (p, r) in runners.iter_mut().enumerate() {
        let recs = log
            .read(&topics.name(Topic::Deliveries), p as u32, 0, 100_000)
            .await
            .expect("read");
        r.step(recs).await.expect("projects");
    }
}

/// Every inbox row of `tenant`'s `ana`, by table, partition and key.
async fn dump(store: &dyn Store, t: &str) -> BTreeMap<(String, Vec<u8>), Bytes> {
    let mut out = BTreeMap::new();
    for part in [
        Part::Items,
        Part::Ids,
        Part::Unread,
        Part::Unseen,
        Part::Read,
        Part::Archived,
        Part::Category("jobs".into()),
        Part::Category("approvals".into()),
    ] {
        let pk = rows::pk(SUB, part.clone());
        for (ck, v) in store
            .scan(&Scan::partition(Table::InboxItems, t, &pk, 100_000))
            .await
            .unwrap()
        {
            out.insert((pk.clone(), ck), v);
        }
    }
    if let Some(v) = store.get(&rows::counts_key(t, SUB)).await.unwrap() {
        out.insert(("counts".into(), Vec::new()), v);
    }
    out
}

/// The counts recomputed from the items: what the counts row must say.
async fn recount(store: &dyn Store, t: &str) -> (u64, u64, u64, u64) {
    let items = store
        .scan(&Scan::partition(Table::InboxItems, t, SUB, 100_000))
        .await
        .unwrap();
    let (mut unread, mut unseen, mut total) = (0, 0, 0);
    for (_, v) in &items {
        let r = rows::decode_item(v).unwrap();
        if r.archived_at_ms == 0 {
            total += 1;
            unread += u64::from(r.read_at_ms == 0);
            unseen += u64::from(r.seen_at_ms == 0);
        }
    }
    (unread, unseen, total, items.len() as u64)
}

async fn consistent(env: &Env, t: &str) {
    let c = env.counts(t).await;
    assert_eq!(
        (c.unread, c.unseen, c.total, c.kept),
        recount(&*env.store, t).await,
        "{t}: {c:?}"
    );
}

#[tokio::test]
async fn items_and_marks_make_a_consistent_feed_that_a_rebuild_reproduces() {
    let mut env = Env::new(rows::MAX_ITEMS_PER_FEED).await;
    let mut woke = env.hub.subscribe("acme", SUB).unwrap();

    // Given three items for acme's ana (two jobs, one approval) and one
    // for globex's ana.
    let events = vec![
        env.item("acme", "i1", "jobs"),
        env.item("acme", "i2", "approvals"),
        env.item("acme", "i3", "jobs"),
        env.item("globex", "g1", "jobs"),
    ];
    env.apply(&events).await;
    let c = env.counts("acme").await;
    assert_eq!((c.unread, c.unseen, c.total, c.version), (3, 3, 3, 3));
    assert_eq!(env.counts("globex").await.total, 1);
    assert_eq!(
        env.list("acme", Status::All, false, None).await,
        ["i3", "i2", "i1"],
        "newest first"
    );
    assert_eq!(
        *woke.rx.borrow_and_update(),
        3,
        "the hub heard of version 3"
    );

    // When the bell opens (all seen), then one job is read and the
    // approval acknowledged.
    let marks = vec![
        env.mark("acme", &[], true, "", "seen"),
        env.mark("acme", &["i1"], false, "", "read"),
        env.mark("acme", &["i2"], false, "", "acknowledged"),
    ];
    env.apply(&marks).await;
    let c = env.counts("acme").await;
    assert_eq!((c.unread, c.unseen, c.total, c.version), (1, 0, 3, 6));
    assert_eq!(env.list("acme", Status::Unread, false, None).await, ["i3"]);
    assert_eq!(
        env.list("acme", Status::Read, false, None).await,
        ["i2", "i1"]
    );
    assert_eq!(
        env.list("acme", Status::All, false, Some("jobs")).await,
        ["i3", "i1"]
    );
    consistent(&env, "acme").await;
    assert_eq!(*woke.rx.borrow_and_update(), 6);

    // Repeats change nothing: the same events again (an outbox publishing
    // twice), a mark that changes nothing, an unknown item.
    let before = dump(&*env.store, "acme").await;
    let mut again = events.clone();
    again.extend(marks.clone());
    env.apply(&again).await;
    let noop = vec![
        env.mark("acme", &["i1"], false, "", "read"),
        env.mark("acme", &["nope"], false, "", "archived"),
    ];
    env.apply(&noop).await;
    let after = dump(&*env.store, "acme").await;
    let without_recent = |m: &BTreeMap<(String, Vec<u8>), Bytes>| {
        m.iter()
            .filter(|((pk, _), _)| pk != "counts")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(without_recent(&before), without_recent(&after));
    assert_eq!(env.counts("acme").await.version, 6, "no change, no version");

    // Mark all read in one category; unread again; archive and back.
    let more = vec![
        env.mark("acme", &[], true, "jobs", "read"),
        env.mark("acme", &["i1"], false, "", "unread"),
        env.mark("acme", &[], true, "", "archived"),
    ];
    env.apply(&more).await;
    let c = env.counts("acme").await;
    assert_eq!((c.unread, c.unseen, c.total, c.version), (0, 0, 0, 9));
    assert_eq!(
        env.list("acme", Status::All, true, None).await,
        ["i3", "i2", "i1"],
        "the archive"
    );
    assert!(env.list("acme", Status::All, false, None).await.is_empty());
    let m = env.mark("acme", &["i1"], false, "", "unarchived");
    env.apply(&[m]).await;
    let c = env.counts("acme").await;
    assert_eq!((c.unread, c.unseen, c.total, c.version), (1, 0, 1, 10));
    consistent(&env, "acme").await;
    consistent(&env, "globex").await;
    // globex's ana never moved.
    let g = env.counts("globex").await;
    assert_eq!((g.unread, g.total, g.version), (1, 1, 1));
    assert_eq!(env.list("globex", Status::All, false, None).await, ["g1"]);

    // Items written after a version, for a resuming stream.
    let late = env.item("acme", "i4", "jobs");
    env.apply(&[late]).await;
    let written = rows::written_after(&*env.store, "acme", SUB, 10, 11, 100)
        .await
        .unwrap();
    assert_eq!(
        written
            .iter()
            .map(|r| r.item_id.as_str())
            .collect::<Vec<_>>(),
        ["i4"]
    );
    let all = rows::written_after(&*env.store, "acme", SUB, 0, 11, 2)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.item_id.as_str()).collect::<Vec<_>>(),
        ["i3", "i4"],
        "the newest, oldest first"
    );

    // A fresh store, projected from offset 0 of the same log: the same rows.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh: Arc<dyn Store> = Arc::new(
        clarion_store::embedded::SqliteStore::open(
            fresh_dir.path().join("store.db").to_str().unwrap(),
        )
        .unwrap(),
    );
    let other_hub = Arc::new(InboxHub::default());
    let mut rebuilt = runners(
        &env.log,
        &fresh,
        None,
        &env.topics,
        &env.clock,
        &other_hub,
        rows::MAX_ITEMS_PER_FEED,
    )
    .await;
    project(&*env.log, &env.topics, &mut rebuilt).await;
    for t in ["acme", "globex"] {
        let (a, b) = (dump(&*env.store, t).await, dump(&*fresh, t).await);
        assert!(!a.is_empty());
        assert_eq!(a, b, "{t}: the rebuilt feed differs");
    }
}

#[tokio::test]
async fn the_cap_drops_the_oldest_items_and_their_indexes() {
    let mut env = Env::new(3).await;
    let mut events = Vec::new();
    for i in 1..=5 {
        events.push(env.item("acme", &format!("i{i}"), ""));
    }
    env.apply(&events[..2]).await;
    // i1 read before it goes: counts follow.
    let m = env.mark("acme", &["i1"], false, "", "read");
    env.apply(&[m]).await;
    env.apply(&events[2..]).await;
    assert_eq!(
        env.list("acme", Status::All, false, None).await,
        ["i5", "i4", "i3"]
    );
    let c = env.counts("acme").await;
    assert_eq!((c.unread, c.total, c.kept), (3, 3, 3));
    consistent(&env, "acme").await;
    for gone in ["i1", "i2"] {
        assert!(rows::item(&*env.store, "acme", SUB, gone)
            .await
            .unwrap()
            .is_none());
    }
    let unread = env
        .store
        .scan(&Scan::partition(
            Table::InboxItems,
            "acme",
            &rows::pk(SUB, Part::Unread),
            100,
        ))
        .await
        .unwrap();
    assert_eq!(unread.len(), 3);
}

#[tokio::test]
async fn a_batch_that_writes_and_marks_the_same_items_sees_its_own_writes() {
    let mut env = Env::new(rows::MAX_ITEMS_PER_FEED).await;
    let events = vec![
        env.item("acme", "i1", "jobs"),
        env.mark("acme", &["i1"], false, "", "read"),
        env.item("acme", "i2", "jobs"),
        env.mark("acme", &[], true, "", "seen"),
        env.mark("acme", &[], true, "", "archived"),
        env.mark("acme", &[], true, "", "unarchived"),
        env.item("acme", "i3", "jobs"),
    ];
    env.apply(&events).await;
    let c = env.counts("acme").await;
    assert_eq!((c.unread, c.unseen, c.total, c.version), (2, 1, 3, 7));
    consistent(&env, "acme").await;
    assert_eq!(
        env.list("acme", Status::Unread, false, None).await,
        ["i3", "i2"]
    );
}
