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
//!
//! A topic new to the consumer has its metadata fetched before its partition
//! is assigned (issue #31). Splitting a partition queue creates the topic in
//! librdkafka without asking for its leader: the consumer asks for the
//! topics it knows when it connects, so a topic added to a connected
//! consumer was fetched only after librdkafka's periodic topic scan, up to a
//! second later. A runner's inputs went live that far apart, and a processor
//! reading several topics saw records out of their order (the SLA counter
//! read a send's outcome before its dispatch request and dropped it). Known,
//! the topic's partitions also stay known when unassigned, so the split
//! queue a partition keeps stays its fetch queue.

use std::collections::{HashMap, HashSet};
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

/// A partition marked read by a subscription being made (see
/// `SharedReader::reserve`).
struct Reservation {
    reader: Arc<SharedReader>,
    key: (String, i32),
    queue: Option<Queue>,
}

impl Reservation {
    /// The partition's queue, now read by the subscription made.
    fn keep(mut self) -> Queue {
        self.queue.take().expect("a reservation's queue")
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.queue.is_some() {
            let mut splits = self.reader.splits.lock().expect("splits lock");
            if let Some(s) = splits.get_mut(&self.key) {
                s.in_use = false;
            }
        }
    }
}

/// The process's shared tailing consumer (see the module docs).
pub(crate) struct SharedReader {
    consumer: Arc<StreamConsumer>,
    splits: Mutex<HashMap<(String, i32), Split>>,
    /// Topics whose metadata the consumer has (their partitions' leaders).
    known: Mutex<HashSet<String>>,
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
            known: Mutex::default(),
            events,
        })
    }

    /// Adds `topic`/`partition` to the assignment at `start` (where the
    /// broker is asked to fetch from) and returns a subscription that
    /// yields records from `from` on, fetched from when this returns; `None`
    /// if another subscription reads that partition now.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        start: u64,
        from: u64,
    ) -> Result<Option<SharedSubscription>> {
        let Some(reserved) = self.reserve(topic, partition)? else {
            return Ok(None);
        };
        self.learn(topic).await?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(start as i64))
            .map_err(unavailable)?;
        self.consumer
            .incremental_assign(&tpl)
            .map_err(unavailable)?;
        Ok(Some(SharedSubscription {
            reader: self.clone(),
            queue: reserved.keep(),
            topic: topic.to_string(),
            partition,
            position: from,
        }))
    }

    /// Marks the partition read and returns its queue, split now if it
    /// never was; `None` if another subscription reads it. Until kept, the
    /// reservation is undone when dropped (an error or a cancelled
    /// subscribe before the partition was assigned).
    fn reserve(self: &Arc<Self>, topic: &str, partition: u32) -> Result<Option<Reservation>> {
        let key = (topic.to_string(), partition as i32);
        let mut splits = self.splits.lock().expect("splits lock");
        let queue = match splits.get_mut(&key) {
            Some(s) if s.in_use => return Ok(None),
            Some(s) => {
                s.in_use = true;
                s.queue.clone()
            }
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
                        in_use: true,
                    },
                );
                queue
            }
        };
        Ok(Some(Reservation {
            reader: self.clone(),
            key,
            queue: Some(queue),
        }))
    }

    /// Fetches `topic`'s metadata into the consumer once (see the module
    /// docs), so its partitions are fetched as soon as they are assigned.
    async fn learn(&self, topic: &str) -> Result<()> {
        if self.known.lock().expect("known lock").contains(topic) {
            return Ok(());
        }
        let (consumer, t) = (self.consumer.clone(), topic.to_string());
        let md = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&t), crate::kafka::META_TIMEOUT)
        })
        .await
        .map_err(unavailable)?
        .map_err(|e| LogError::Unavailable(format!("metadata of {topic}: {e}")))?;
        let found = md.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                self.known
                    .lock()
                    .expect("known lock")
                    .insert(topic.to_string());
                Ok(())
            }
            _ => Err(LogError::Unavailable(format!(
                "no metadata for topic {topic:?} yet"
            ))),
        }
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
