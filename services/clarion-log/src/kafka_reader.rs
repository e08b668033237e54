//! One consumer for every tailing reader of a process.
//!
//! Why: a processor runner reads each of its input topics' partition, and a
//! process runs many runners (the router alone reads six topics per
//! partition). With a librdkafka consumer per subscription, a process kept
//! dozens of clients, each with its own broker threads and its own fetch
//! loop polling the broker every `fetch.wait.max.ms` even when idle: the
//! broker answered a stream of tiny fetches, and on a small machine its CPU,
//! not ours, set the pipeline's pace. One consumer fetches every assigned
//! partition in one request per broker; each subscription reads its own
//! partition's queue, split off the consumer's main queue
//! (`split_partition_queue`), so partitions stay independent. A process
//! that runs several roles reads some partitions several times (router and
//! projector both read the deliveries): a consumer reads a partition once,
//! so `KafkaLog` keeps as many as the most readers of one partition.
//!
//! Partitions join and leave the consumer's assignment one by one
//! (`incremental_assign` / `incremental_unassign`; the consumer never
//! subscribes, so no group protocol is involved). A partition's queue is
//! kept once split: rdkafka does not forward a dropped partition queue back
//! to the main queue, so a partition read again reuses its queue. A second
//! concurrent reader of a partition already being read gets `None` (the
//! caller tries the next consumer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::{LogError, LogRecord, Result, Subscription};

type Queue = Arc<StreamPartitionQueue<DefaultConsumerContext>>;

/// A split partition queue and whether a subscription reads it now.
struct Split {
    queue: Queue,
    in_use: bool,
}

/// The process's shared tailing consumer (see the module docs).
pub(crate) struct SharedReader {
    consumer: Arc<StreamConsumer>,
    splits: Mutex<HashMap<(String, i32), Split>>,
    /// Serves the consumer's main queue (events, errors): rdkafka requires
    /// it to be polled even when every partition is split off.
    events: tokio::task::JoinHandle<()>,
}

impl Drop for SharedReader {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl SharedReader {
    /// Wraps `consumer` (configured for manual assignment, never
    /// subscribed). Must be called inside a Tokio runtime.
    pub(crate) fn new(consumer: StreamConsumer) -> Arc<SharedReader> {
        let consumer = Arc::new(consumer);
        let main = consumer.clone();
        let events = tokio::spawn(async move {
            loop {
                match main.recv().await {
                    // Every assigned partition is split before it is
                    // assigned, so nothing should arrive here.
                    Ok(m) => tracing::warn!(
                        topic = m.topic(),
                        partition = m.partition(),
                        offset = m.offset(),
                        "kafka reader: a record on the main queue (dropped)"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka reader: consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Arc::new(SharedReader {
            consumer,
            splits: Mutex::default(),
            events,
        })
    }

    /// Adds `topic`/`partition` to the assignment at `start` (where the
    /// broker is asked to fetch from) and returns a subscription that
    /// yields records from `from` on; `None` if another subscription reads
    /// that partition now.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        start: u64,
        from: u64,
    ) -> Result<Option<SharedSubscription>> {
        let key = (topic.to_string(), partition as i32);
        let mut splits = self.splits.lock().expect("splits lock");
        let queue = match splits.get(&key) {
            Some(s) if s.in_use => return Ok(None),
            Some(s) => s.queue.clone(),
            None => {
                // Split before assigning, so no record of the partition
                // reaches the main queue first.
                let queue = self
                    .consumer
                    .split_partition_queue(topic, partition as i32)
                    .map(Arc::new)
                    .ok_or_else(|| {
                        LogError::Unavailable(format!("cannot read {topic}/{partition}"))
                    })?;
                splits.insert(
                    key.clone(),
                    Split {
                        queue: queue.clone(),
                        in_use: false,
                    },
                );
                queue
            }
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(start as i64))
            .map_err(unavailable)?;
        self.consumer
            .incremental_assign(&tpl)
            .map_err(unavailable)?;
        splits.get_mut(&key).expect("split above").in_use = true;
        Ok(Some(SharedSubscription {
            reader: self.clone(),
            queue,
            topic: topic.to_string(),
            partition,
            position: from,
        }))
    }

    /// Takes a partition out of the assignment: its fetched records are
    /// dropped and nothing more is fetched until it is read again.
    fn release(&self, topic: &str, partition: u32) {
        let mut splits = self.splits.lock().expect("splits lock");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition as i32);
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::warn!(topic, partition, error = %e, "kafka reader: could not unassign");
        }
        if let Some(s) = splits.get_mut(&(topic.to_string(), partition as i32)) {
            s.in_use = false;
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// The record of a fetched message, at `partition`.
fn record(partition: u32, m: &BorrowedMessage<'_>) -> LogRecord {
    LogRecord {
        partition,
        offset: m.offset() as u64,
        key: m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
    }
}

/// A tailing reader of one partition through the shared consumer.
pub(crate) struct SharedSubscription {
    reader: Arc<SharedReader>,
    queue: Queue,
    topic: String,
    partition: u32,
    /// The next offset wanted: records before it (the lead-in a fetch
    /// starts early with, see `kafka.rs`) are dropped.
    position: u64,
}

impl Drop for SharedSubscription {
    fn drop(&mut self) {
        self.reader.release(&self.topic, self.partition);
    }
}

#[async_trait]
impl Subscription for SharedSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            // Wait for the first wanted record; after that take only what is ready.
            let left = if out.is_empty() {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            } else {
                Duration::ZERO
            };
            match tokio::time::timeout(left, self.queue.recv()).await {
                Ok(Ok(m)) => {
                    if (m.offset() as u64) < self.position {
                        continue;
                    }
                    let r = record(self.partition, &m);
                    self.position = r.offset + 1;
                    out.push(r);
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => break,
            }
        }
        Ok(out)
    }
}
