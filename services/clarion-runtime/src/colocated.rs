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

    /// Applies `writes` and appends `emits` (`encoded[i]` is `emits[i]`'s
    /// event) in one transaction: both or neither.
    pub async fn commit(
        &self,
        writes: WriteBatch,
        topics: &Topics,
        emits: &[Emit],
        encoded: &[Bytes],
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
        emits: &[Emit],
        encoded: &[Bytes],
    ) -> Result<Committing, ProcessError> {
        let (store_job, stored) = self.store.shared_write_job(writes);
        let mut jobs = vec![store_job];
        // One job for every topic: a notification's events of this batch
        // (a `Routed` and its `DispatchRequested`) share an index row.
        let by_topic = records_by_topic(topics, emits, encoded);
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
    Topic::ALL
        .into_iter()
        .filter_map(|t| {
            let recs: Vec<Record> = emits
                .iter()
                .zip(encoded)
                .filter(|(e, _)| e.topic == t)
                .map(|(e, value)| Record {
                    key: e.event.partition_key.clone(),
                    value: value.clone(),
                    index: crate::projector::event_history_index(&e.event),
                })
                .collect();
            (!recs.is_empty()).then(|| (topics.name(t), recs))
        })
        .collect()
}
