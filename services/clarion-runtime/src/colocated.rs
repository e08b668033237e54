//! The embedded log and store in one SQLite file.
//!
//! With both in one file and one writer thread, a processor's commit (its
//! state, dedup rows and input position) and the events it emits are one
//! transaction: the emits need no outbox row written before and deleted
//! after, and a crash can neither lose them nor publish them twice. This is
//! the embedded default. Kafka has no transactions that span the store, so
//! there the runner keeps the outbox (crate docs).

use std::sync::Arc;

use bytes::Bytes;
use clarion_log::embedded::SqliteLog;
use clarion_log::{Appended, EventLog, LogError, Record};
use clarion_sqlite::writer::Together;
use clarion_store::embedded::SqliteStore;
use clarion_store::{Store, StoreError, WriteBatch};
use tokio::sync::oneshot;

use crate::processor::{Emit, ProcessError};
use crate::topics::{Topic, Topics};

/// An embedded log and store sharing one file and its writer.
pub struct Colocated {
    log: Arc<SqliteLog>,
    store: Arc<SqliteStore>,
}

impl Colocated {
    /// Opens (creating if needed) the log and the store in the file at
    /// `path` (which may carry the log's `?sync=full`).
    pub fn open(path: &str) -> Result<Colocated, ProcessError> {
        let log = Arc::new(SqliteLog::open(path)?);
        let store = Arc::new(SqliteStore::open_with_writer(log.writer().clone())?);
        Ok(Colocated { log, store })
    }

    pub fn log(&self) -> Arc<dyn EventLog> {
        self.log.clone()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The file's one writer (e.g. to cap its size: `max_page_count`).
    pub fn writer(&self) -> &clarion_sqlite::writer::Writer {
        self.log.writer()
    }

    /// Applies `writes` and appends `emits` (`encoded[i]` is `emits[i]`'s
    /// event) in one transaction: both or neither.
    pub async fn commit(
        &self,
        writes: WriteBatch,
        topics: &Topics,
        emits: Vec<Emit>,
        encoded: Vec<Bytes>,
    ) -> Result<(), ProcessError> {
        self.submit(Arc::new(writes), topics, emits, encoded)
            .await?
            .committed()
            .await
    }

    /// [`Colocated::commit`], handed to the writer without waiting for it:
    /// the answer tells when the transaction committed. Jobs commit in the
    /// order they are submitted (the writer takes its queue in order).
    pub async fn submit(
        &self,
        writes: Arc<WriteBatch>,
        topics: &Topics,
        emits: Vec<Emit>,
        encoded: Vec<Bytes>,
    ) -> Result<Committing, ProcessError> {
        let (store_job, stored) = self.store.shared_write_job(writes);
        let mut jobs = vec![store_job];
        // One job for every topic: a notification's events of this batch
        // (a `Routed` and its `DispatchRequested`) share an index row.
        let by_topic = records_by_topic_owned(topics, emits, encoded);
        let mut appended = Vec::new();
        if !by_topic.is_empty() {
            let (job, rxs) = self.log.append_jobs(by_topic).await?;
            jobs.push(job);
            appended = rxs;
        }
        self.log.writer().submit(Box::new(Together(jobs)));
        Ok(Committing { stored, appended })
    }
}

/// A transaction handed to the writer ([`Colocated::submit`]).
pub struct Committing {
    stored: oneshot::Receiver<Result<(), StoreError>>,
    appended: Vec<oneshot::Receiver<Result<Vec<Appended>, LogError>>>,
}

impl Committing {
    /// Resolves once the transaction committed (or failed).
    pub async fn committed(self) -> Result<(), ProcessError> {
        let stopped = || StoreError::Unavailable("SQLite writer stopped".into());
        self.stored.await.map_err(|_| stopped())??;
        for rx in self.appended {
            rx.await
                .map_err(|_| LogError::Unavailable("SQLite writer stopped".into()))??;
        }
        Ok(())
    }
}

/// The records to append for `emits`, grouped by topic (in `Topic::ALL`
/// order; within a topic, in emit order).
pub fn records_by_topic(
    topics: &Topics,
    emits: &[Emit],
    encoded: &[Bytes],
) -> Vec<(String, Vec<Record>)> {
    let keys = emits
        .iter()
        .map(|e| e.event.partition_key.clone())
        .collect();
    group(topics, &placing(emits), keys, encoded.to_vec())
}

/// [`records_by_topic`] of emits no longer needed: their partition keys and
/// encodings move into the records rather than being copied (a first clone
/// of a `Bytes` made from a `Vec` allocates its shared counter, and every
/// clone and drop is an atomic operation).
pub fn records_by_topic_owned(
    topics: &Topics,
    emits: Vec<Emit>,
    encoded: Vec<Bytes>,
) -> Vec<(String, Vec<Record>)> {
    let placing = placing(&emits);
    let keys = emits.into_iter().map(|e| e.event.partition_key).collect();
    group(topics, &placing, keys, encoded)
}

/// Each emit's topic and history key.
fn placing(emits: &[Emit]) -> Vec<(Topic, Option<Bytes>)> {
    // A notification's emits of one batch come one after the other (a
    // `Routed` and its `DispatchRequested`, a `Sent` and its `Delivered`):
    // its history key, parsed from the id's hex, is made once for them.
    let mut last: Option<(&str, &str, Bytes)> = None;
    emits
        .iter()
        .map(|e| {
            let tenant = e.event.tenant.as_str();
            let index = e.event.payload.notification_id().map(|nid| match &last {
                Some((t, n, idx)) if *t == tenant && *n == nid => idx.clone(),
                _ => {
                    let idx = crate::projector::history_index(tenant, nid);
                    last = Some((tenant, nid, idx.clone()));
                    idx
                }
            });
            (e.topic, index)
        })
        .collect()
}

/// The records of each topic, `keys[i]`, `values[i]` and `placing[i]`
/// being one emit's (moved into its record).
fn group(
    topics: &Topics,
    placing: &[(Topic, Option<Bytes>)],
    mut keys: Vec<String>,
    mut values: Vec<Bytes>,
) -> Vec<(String, Vec<Record>)> {
    Topic::ALL
        .into_iter()
        .filter_map(|t| {
            let recs: Vec<Record> = placing
                .iter()
                .zip(keys.iter_mut())
                .zip(values.iter_mut())
                .filter(|(((topic, _), _), _)| *topic == t)
                .map(|(((_, index), key), value)| Record {
                    key: std::mem::take(key),
                    value: std::mem::take(value),
                    index: index.clone(),
                })
                .collect();
            (!recs.is_empty()).then(|| (topics.name(t), recs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::{Actor, Event, Id, Payload, TenantId};
    use clarion_proto::events as pb;

    fn event(tenant: &str, n: u8, payload: Payload) -> Event {
        Event {
            id: Id::derive(&[tenant.as_bytes(), &[n]]),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: format!("{tenant}/s{n}"),
            occurred_at_ms: 1,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("t".into()),
            payload,
        }
    }

    #[test]
    fn each_record_is_indexed_under_its_own_notification() {
        let n1 = Id::derive(&[b"n1"]).to_hex();
        let n2 = Id::derive(&[b"n2"]).to_hex();
        let routed = |nid: &str| {
            Payload::Routed(pb::NotificationRouted {
                notification_id: nid.into(),
                ..Default::default()
            })
        };
        let dispatch = |nid: &str| {
            Payload::DispatchRequested(pb::DispatchRequested {
                notification_id: nid.into(),
                ..Default::default()
            })
        };
        let emit = |topic, event| Emit { topic, event };
        // Consecutive emits of one notification, then another's, the same id
        // under another tenant, and an event of no notification.
        let emits = vec![
            emit(Topic::Notifications, event("acme", 1, routed(&n1))),
            emit(Topic::Dispatch, event("acme", 2, dispatch(&n1))),
            emit(Topic::Notifications, event("acme", 3, routed(&n2))),
            emit(Topic::Notifications, event("beta", 4, routed(&n2))),
            emit(
                Topic::Triggers,
                event("acme", 5, Payload::SubscriberUpserted(Default::default())),
            ),
        ];
        let encoded: Vec<Bytes> = emits
            .iter()
            .map(|e| Bytes::from(e.event.encode()))
            .collect();
        let got = records_by_topic(&Topics::new("c.", 2), &emits, &encoded);
        // Emits handed over give the same records, keys moved in.
        let owned = records_by_topic_owned(&Topics::new("c.", 2), emits.clone(), encoded.clone());
        assert_eq!(owned, got);
        assert!(got.iter().flat_map(|(_, r)| r).all(|r| !r.key.is_empty()));
        let idx = |t: &str, n: &str| Some(crate::projector::history_index(t, n));
        let by: Vec<(String, Vec<Option<Bytes>>)> = got
            .into_iter()
            .map(|(t, recs)| (t, recs.into_iter().map(|r| r.index).collect()))
            .collect();
        assert_eq!(
            by,
            vec![
                ("c.triggers".to_string(), vec![None]),
                (
                    "c.notifications".to_string(),
                    vec![idx("acme", &n1), idx("acme", &n2), idx("beta", &n2)]
                ),
                ("c.dispatch".to_string(), vec![idx("acme", &n1)]),
            ]
        );
    }
}
