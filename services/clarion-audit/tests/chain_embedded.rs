//! The notary and `verify` on the embedded log and store (one SQLite file,
//! as `clarion serve` keeps them), two tenants: an untouched log verifies,
//! records past the notary are the tail, and one byte changed in the file
//! is named as the first break.

use std::sync::Arc;

use clarion_audit::signing::AuditKey;
use clarion_audit::verify::{Report, Verify};
use clarion_audit::walk::{parts, Part};
use clarion_audit::{Notary, NotaryConfig};
use clarion_domain::event::{Actor, Event, Payload};
use clarion_domain::ids::{Id, TenantId};
use clarion_log::Record;
use clarion_proto::events as pb;
use clarion_runtime::colocated::Colocated;
use clarion_runtime::{ManualClock, Topic, Topics};

fn upsert(tenant: &str, subscriber: &str, email: &str) -> Event {
    Event {
        id: Id::derive(&[tenant.as_bytes(), subscriber.as_bytes(), email.as_bytes()]),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/{subscriber}"),
        occurred_at_ms: 1_700_000_000_000,
        causation_id: None,
        correlation_id: None,
        actor: Actor::ApiKey("k".into()),
        payload: Payload::SubscriberUpserted(pb::SubscriberUpserted {
            subscriber_id: subscriber.into(),
            email: email.into(),
            ..Default::default()
        }),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: String,
    topics: Topics,
    key: Arc<AuditKey>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clarion.db").display().to_string();
        Setup {
            _dir: dir,
            path,
            topics: Topics::new("c.", 2),
            key: Arc::new(AuditKey::generate()),
        }
    }

    fn open(&self) -> Colocated {
        Colocated::open(&self.path).unwrap()
    }

    /// Appends `n` upserts per tenant (emails `<tenant>-<i>@example.test`).
    async fn append(&self, c: &Colocated, from: usize, n: usize) {
        let log = c.log();
        let mut topics = self.topics.clone();
        topics.ensure(&*log).await.unwrap();
        for i in from..from + n {
            for tenant in ["acme", "globex"] {
                let e = upsert(
                    tenant,
                    &format!("s{}", i % 5),
                    &format!("{tenant}-{i}@example.test"),
                );
                log.append(
                    &topics.name(Topic::Triggers),
                    vec![Record::new(e.partition_key.clone(), e.encode())],
                )
                .await
                .unwrap();
            }
        }
    }

    async fn notarize(&self, c: &Colocated) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        for part in parts(&self.topics) {
            let cfg = NotaryConfig {
                checkpoint_every: 3,
                ..NotaryConfig::default()
            };
            let mut n = Notary::new(
                c.log(),
                c.store(),
                part,
                clock.clone(),
                self.key.clone(),
                cfg,
            );
            n.catch_up().await.unwrap();
        }
    }

    async fn verify(&self, c: &Colocated, tenant: Option<&str>) -> Report {
        Verify {
            log: c.log(),
            store: c.store(),
            parts: parts(&self.topics),
            tenant: tenant.map(str::to_string),
            public_key: self.key.public(),
            concurrency: 2,
        }
        .run(&|_| {})
        .await
        .unwrap()
    }
}

/// Flips one byte of `needle` inside the stored record batches of the file.
fn flip_byte_in_log_file(path: &str, needle: &[u8]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT id, body FROM record_batches").unwrap();
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (id, mut body) = rows
        .into_iter()
        .find(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
        .expect("the record is in the file");
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    body[at] ^= 0x01;
    conn.execute(
        "UPDATE record_batches SET body = ?1 WHERE id = ?2",
        rusqlite::params![body, id],
    )
    .unwrap();
}

/// Where `needle` is: the triggers partition and offset of that record.
async fn locate(c: &Colocated, topics: &Topics, needle: &[u8]) -> (u32, u64) {
    let log = c.log();
    for p in 0..topics.partitions {
        let name = topics.name(Topic::Triggers);
        let end = log.end_offset(&name, p).await.unwrap();
        for r in log.read(&name, p, 0, end as usize).await.unwrap() {
            if r.value.windows(needle.len()).any(|w| w == needle) {
                return (p, r.offset);
            }
        }
    }
    panic!("no record holds the needle");
}

#[tokio::test]
async fn an_untouched_log_verifies_and_one_changed_byte_is_the_first_break() {
    let s = Setup::new();
    let c = s.open();
    s.append(&c, 0, 20).await;
    s.notarize(&c).await;

    let clean = s.verify(&c, None).await;
    assert_eq!(clean.first_break, None, "{clean:?}");
    assert_eq!(clean.records, 40);
    assert_eq!(clean.checked, 40);
    assert_eq!(clean.tail, 0);
    assert!(clean.checkpoints >= 4, "{clean:?}");

    // Appended after the notary ran: the unchained tail, not a break.
    s.append(&c, 20, 2).await;
    let tail = s.verify(&c, None).await;
    assert_eq!((tail.first_break.clone(), tail.tail), (None, 4), "{tail:?}");
    let one = s.verify(&c, Some("globex")).await;
    assert_eq!((one.records, one.tail), (22, 2), "{one:?}");
    s.notarize(&c).await;

    let needle = b"globex-7@example.test";
    let (partition, offset) = locate(&c, &s.topics, needle).await;
    drop(c);
    flip_byte_in_log_file(&s.path, needle);

    let c = s.open();
    let broken = s.verify(&c, None).await;
    let first = broken.first_break.clone().expect("the edit is found");
    assert_eq!(
        (
            first.topic.as_str(),
            first.partition,
            first.offset,
            first.tenant.as_str()
        ),
        ("triggers", partition, offset, "globex"),
        "{broken:?}"
    );
    assert!(first.what.contains("hash differs"), "{}", first.what);
    // The other tenant's chain is intact.
    let acme = s.verify(&c, Some("acme")).await;
    assert_eq!(acme.first_break, None, "{acme:?}");
    // A verifier holding another key refuses every checkpoint.
    let other = Verify {
        log: c.log(),
        store: c.store(),
        parts: parts(&s.topics),
        tenant: Some("acme".into()),
        public_key: AuditKey::generate().public(),
        concurrency: 1,
    }
    .run(&|_| {})
    .await
    .unwrap();
    let b = other.first_break.expect("a foreign key fails");
    assert!(b.what.contains("signature"), "{}", b.what);
}

#[tokio::test]
async fn a_restarted_notary_continues_the_same_chain() {
    let s = Setup::new();
    let c = s.open();
    s.append(&c, 0, 6).await;
    s.notarize(&c).await;
    s.append(&c, 6, 6).await;
    // A fresh notary (as after a restart) reads its heads back.
    s.notarize(&c).await;
    let r = s.verify(&c, None).await;
    assert_eq!(
        (r.first_break.clone(), r.checked, r.tail),
        (None, 24, 0),
        "{r:?}"
    );
    let _: Vec<Part> = parts(&s.topics);
}
