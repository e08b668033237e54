//! The Kafka backend (rdkafka).
//!
//! The producer is idempotent with `acks=all`, so a retried produce never
//! duplicates or reorders within a partition. We pick partitions ourselves
//! with the shared partitioner, so keys land where the embedded log would put
//! them. Kafka transactions are not used (the test broker, tansu, does not
//! serve them): exactly-once comes from deterministic event ids, the dedup
//! table and offsets committed with processor state (see clarion-runtime).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka_reader::{SharedReader, SharedSubscription};
use crate::{partition_for, Appended, EventLog, LogError, LogRecord, Record, Result, Subscription};

pub(crate) const META_TIMEOUT: Duration = Duration::from_secs(10);

/// Most records the producer puts in one record batch.
const MAX_BATCH: u64 = 500;

// Broker quirks this backend absorbs (seen with tansu 0.6, harmless on Kafka):
// - a fetch at an offset inside a record batch returns only the batches that
//   start at or after it, so the rest of the containing batch is skipped;
// - the high watermark is the last batch's base offset + 1, not the last
//   record's offset + 1.
// So reads start up to `MAX_BATCH` records early and drop what precedes the
// wanted offset, and the end offset is found by reading the last batch.

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// How long a fetch waits at the broker for records when there are none
/// (`fetch.wait.max.ms`), unless the URL says otherwise.
const DEFAULT_FETCH_WAIT_MS: u32 = 10;

/// How long the producer lets records gather before it sends a batch
/// (`linger.ms`), unless the URL says otherwise.
const DEFAULT_LINGER_MS: u32 = 5;

/// What a `kafka://` URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaUrl {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// `fetch_wait_ms`: how long a fetch waits at the broker when there is
    /// nothing to read. It trades latency for broker load: every process
    /// polls at least that often when idle.
    pub fetch_wait_ms: u32,
    /// `linger_ms`: how long the producer lets records gather into one
    /// request. It trades an append's latency for CPU, ours and the broker's:
    /// the producer's thread wakes and a produce request is made per linger
    /// at most, so a trickle of single-record appends (one per Trigger) costs
    /// a request each when it is short (docs/benchmarks.md, Kafka at scale).
    pub linger_ms: u32,
    /// `readers=shared`: a process's tailing readers share consumers (see
    /// `kafka_reader`); `readers=own` (the default): a consumer each. Shared
    /// is experimental: the e2e suite's Kafka SLA scenario timed out with it
    /// until two causes were fixed (docs/architecture.md, "Kafka at scale").
    pub shared_readers: bool,
}

/// The part of a `kafka://` URL after the scheme: `host:port[,host:port]`,
/// optionally followed by `?fetch_wait_ms=N` (1..=10000), `linger_ms=N`
/// (0..=1000) and `readers=own|shared`, joined by `&`.
pub fn parse_url(rest: &str) -> Result<KafkaUrl> {
    let (brokers, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut wait = DEFAULT_FETCH_WAIT_MS;
    let mut linger = DEFAULT_LINGER_MS;
    let mut shared_readers = false;
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        let bad = |problem: &str| LogError::BadUrlParam {
            param: kv.split('=').next().unwrap_or(kv).to_string(),
            problem: problem.to_string(),
        };
        match kv.split_once('=') {
            Some(("fetch_wait_ms", v)) => {
                wait = v
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=10_000).contains(w))
                    .ok_or_else(|| bad("must be a whole number of milliseconds from 1 to 10000"))?;
            }
            Some(("linger_ms", v)) => {
                linger = v
                    .parse::<u32>()
                    .ok()
                    .filter(|l| *l <= 1_000)
                    .ok_or_else(|| bad("must be a whole number of milliseconds from 0 to 1000"))?;
            }
            Some(("readers", v)) => {
                shared_readers = match v {
                    "own" => false,
                    "shared" => true,
                    _ => return Err(bad("must be own or shared")),
                };
            }
            _ => {
                return Err(bad(
                    "unknown (the Kafka log takes fetch_wait_ms, linger_ms, readers)",
                ))
            }
        }
    }
    if brokers.is_empty() {
        return Err(LogError::BadUrl(format!("kafka://{rest}")));
    }
    Ok(KafkaUrl {
        brokers: brokers.to_string(),
        fetch_wait_ms: wait,
        linger_ms: linger,
        shared_readers,
    })
}

/// A Kafka cluster reached through rdkafka.
pub struct KafkaLog {
    brokers: String,
    fetch_wait_ms: u32,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    partitions: Mutex<HashMap<String, u32>>,
    /// One committing consumer per group, created on first use.
    groups: Mutex<HashMap<String, std::sync::Arc<BaseConsumer>>>,
    /// The tailing readers' consumers: one, plus one more for each further
    /// reader of a partition already read in this process (a process
    /// running several roles reads some partitions once per role).
    readers: Mutex<Vec<std::sync::Arc<SharedReader>>>,
    /// Whether tailing readers share them (`readers=shared`).
    shared_readers: bool,
}

impl KafkaLog {
    /// Connects to the brokers of `url` (what follows `kafka://`, see
    /// [`parse_url`]) and checks that the cluster answers a metadata request.
    pub async fn connect(url: &str) -> Result<KafkaLog> {
        let KafkaUrl {
            brokers,
            fetch_wait_ms,
            linger_ms,
            shared_readers,
        } = parse_url(url)?;
        let brokers = brokers.as_str();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger_ms.to_string())
            .set("batch.num.messages", MAX_BATCH.to_string())
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(unavailable)?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .map_err(unavailable)?;
        let log = KafkaLog {
            brokers: brokers.to_string(),
            fetch_wait_ms,
            producer,
            admin,
            partitions: Mutex::default(),
            groups: Mutex::default(),
            readers: Mutex::default(),
            shared_readers,
        };
        let producer = log.producer.clone();
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, META_TIMEOUT))
            .await
            .map_err(unavailable)?
            .map_err(|e| LogError::Unavailable(format!("broker did not answer: {e}")))?;
        Ok(log)
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // The pipeline's latency at low load is bounded by it.
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            .set("enable.partition.eof", "false");
        c
    }

    fn group_consumer(&self, group: &str) -> Result<std::sync::Arc<BaseConsumer>> {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(c) = groups.get(group) {
            return Ok(c.clone());
        }
        let c: BaseConsumer = self.consumer_config(group).create().map_err(unavailable)?;
        let c = std::sync::Arc::new(c);
        groups.insert(group.to_string(), c.clone());
        Ok(c)
    }

    /// A reader of `topic`/`partition` from `from` with a consumer of its
    /// own (the caller checked the partition): for short reads (`read`,
    /// `end_offset`), which start and stop too often to share the tailing
    /// readers' consumers. It goes with the subscription.
    async fn own_subscription(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<SharedSubscription> {
        self.new_reader()?
            .subscribe(topic, partition, from.saturating_sub(MAX_BATCH - 1), from)
            .await?
            .ok_or_else(|| LogError::Unavailable(format!("cannot read {topic}/{partition}")))
    }

    /// A tailing reader's consumer, reading nothing yet.
    fn new_reader(&self) -> Result<std::sync::Arc<SharedReader>> {
        let c = self
            .consumer_config("clarion-reader")
            .create()
            .map_err(unavailable)?;
        Ok(SharedReader::new(c))
    }

    async fn checked(&self, topic: &str, partition: u32) -> Result<u32> {
        let n = self.partitions(topic).await?;
        if partition >= n {
            return Err(LogError::BadPartition {
                topic: topic.to_string(),
                partition,
                partitions: n,
            });
        }
        Ok(n)
    }

    async fn fetch_partitions(&self, topic: &str) -> Result<Option<u32>> {
        let producer = self.producer.clone();
        let t = topic.to_string();
        let md = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&t), META_TIMEOUT)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(md
            .topics()
            .iter()
            .find(|mt| mt.name() == topic)
            .filter(|mt| mt.error().is_none() && !mt.partitions().is_empty())
            .map(|mt| mt.partitions().len() as u32))
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
        let res = self
            .admin
            .create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(META_TIMEOUT)),
            )
            .await
            .map_err(unavailable)?;
        for r in res {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(LogError::Unavailable(format!("creating {name}: {code}")))
                }
            }
        }
        // Creation is asynchronous on some brokers: wait until metadata shows it.
        let deadline = tokio::time::Instant::now() + META_TIMEOUT;
        loop {
            if let Some(existing) = self.fetch_partitions(topic).await? {
                if existing != partitions {
                    return Err(LogError::PartitionMismatch {
                        topic: topic.to_string(),
                        existing,
                        requested: partitions,
                    });
                }
                self.partitions
                    .lock()
                    .expect("partitions lock")
                    .insert(topic.to_string(), existing);
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LogError::Unavailable(format!(
                    "topic {topic:?} not visible after creation"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.partitions.lock().expect("partitions lock").get(topic) {
            return Ok(*n);
        }
        let n = self
            .fetch_partitions(topic)
            .await?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        self.partitions
            .lock()
            .expect("partitions lock")
            .insert(topic.to_string(), n);
        Ok(n)
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        let n = self.partitions(topic).await?;
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let p = partition_for(&r.key, n);
            let mut rec = FutureRecord::to(topic)
                .key(r.key.as_bytes())
                .payload(&r.value[..])
                .partition(p as i32);
            // Enqueue without awaiting each delivery, so the batch goes out together.
            loop {
                match self.producer.send_result(rec) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        self.producer.poll(Duration::from_millis(10));
                        tokio::task::yield_now().await;
                    }
                    Err((e, _)) => return Err(unavailable(e)),
                }
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for res in join_all(pending).await {
            match res {
                Ok(Ok((partition, offset))) => out.push(Appended {
                    partition: partition as u32,
                    offset: offset as u64,
                }),
                Ok(Err((e, _))) => return Err(unavailable(e)),
                Err(_) => return Err(LogError::Unavailable("producer dropped the record".into())),
            }
        }
        crate::count_appended(out.len());
        Ok(out)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>> {
        let end = self.end_offset(topic, partition).await?;
        if from >= end || max == 0 {
            return Ok(Vec::new());
        }
        let want = ((end - from) as usize).min(max);
        let mut sub = self.own_subscription(topic, partition, from).await?;
        let mut out = Vec::with_capacity(want);
        let deadline = tokio::time::Instant::now() + META_TIMEOUT;
        while out.len() < want && tokio::time::Instant::now() < deadline {
            out.extend(
                sub.next_batch(want - out.len(), Duration::from_millis(500))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.checked(topic, partition).await?;
        let c = self.group_consumer("clarion-metadata")?;
        let t = topic.to_string();
        let (low, high) = tokio::task::spawn_blocking(move || {
            c.fetch_watermarks(&t, partition as i32, META_TIMEOUT)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        if high <= low.max(0) {
            return Ok(high.max(0) as u64);
        }
        // `high - 1` is at least the base of the last batch, so a record at
        // or after it exists: wait for it as long as any read may take (a
        // new consumer's first fetch took over the 300 ms this once waited,
        // under load, and the last record was left out), then read to the
        // end of its batch.
        let at = high as u64 - 1;
        let mut sub = self.own_subscription(topic, partition, at).await?;
        let deadline = tokio::time::Instant::now() + META_TIMEOUT;
        let mut end = None;
        loop {
            let wait = match end {
                Some(_) => Duration::from_millis(300),
                None => deadline.saturating_duration_since(tokio::time::Instant::now()),
            };
            let batch = sub.next_batch(10_000, wait).await?;
            match (batch.last(), end) {
                (Some(r), _) => end = Some(r.offset + 1),
                (None, Some(end)) => return Ok(end),
                (None, None) => {
                    return Err(LogError::Unavailable(format!(
                        "{topic}/{partition}: no record at offset {at} within {META_TIMEOUT:?}"
                    )))
                }
            }
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<Box<dyn Subscription>> {
        self.checked(topic, partition).await?;
        if !self.shared_readers {
            return Ok(Box::new(
                self.own_subscription(topic, partition, from).await?,
            ));
        }
        let start = from.saturating_sub(MAX_BATCH - 1);
        let readers = self.readers.lock().expect("readers lock").clone();
        for reader in readers {
            if let Some(sub) = reader.subscribe(topic, partition, start, from).await? {
                return Ok(Box::new(sub));
            }
        }
        // Each reader reads that partition already: one more, shared once
        // it took the partition (until then no other subscription sees it).
        let reader = self.new_reader()?;
        let sub = reader
            .subscribe(topic, partition, start, from)
            .await?
            .ok_or_else(|| LogError::Unavailable(format!("cannot read {topic}/{partition}")))?;
        self.readers.lock().expect("readers lock").push(reader);
        Ok(Box::new(sub))
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        self.checked(topic, partition).await?;
        let c = self.group_consumer(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(next_offset as i64))
            .map_err(unavailable)?;
        tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        self.checked(topic, partition).await?;
        let c = self.group_consumer(group)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition as i32);
        let got = tokio::task::spawn_blocking(move || c.committed_offsets(tpl, META_TIMEOUT))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(got
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            }))
    }

    async fn join_group(
        &self,
        settings: crate::group::GroupSettings,
        owner: std::sync::Arc<dyn crate::group::Ownership>,
    ) -> Result<Box<dyn crate::group::Membership>> {
        crate::kafka_group::join(&self.brokers, settings, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_url_names_brokers_and_optionally_the_fetch_wait_and_linger() {
        let url = |brokers: &str, fetch_wait_ms, linger_ms| KafkaUrl {
            brokers: brokers.to_string(),
            fetch_wait_ms,
            linger_ms,
            shared_readers: false,
        };
        assert_eq!(
            parse_url("127.0.0.1:9092").unwrap(),
            url("127.0.0.1:9092", DEFAULT_FETCH_WAIT_MS, DEFAULT_LINGER_MS)
        );
        assert_eq!(
            parse_url("a:9092,b:9092?fetch_wait_ms=100").unwrap(),
            url("a:9092,b:9092", 100, DEFAULT_LINGER_MS)
        );
        assert_eq!(
            parse_url("a:9092?linger_ms=0&fetch_wait_ms=20").unwrap(),
            url("a:9092", 20, 0)
        );
        assert!(parse_url("a:9092?readers=shared").unwrap().shared_readers);
        assert!(!parse_url("a:9092?readers=own").unwrap().shared_readers);
        for (url, param) in [
            ("a:9092?fetch_wait_ms=0", "fetch_wait_ms"),
            ("a:9092?fetch_wait_ms=soon", "fetch_wait_ms"),
            ("a:9092?fetch_wait_ms=10001", "fetch_wait_ms"),
            ("a:9092?linger_ms=1001", "linger_ms"),
            ("a:9092?linger_ms=-1", "linger_ms"),
            ("a:9092?readers=some", "readers"),
            ("a:9092?linger=5", "linger"),
        ] {
            match parse_url(url) {
                Err(LogError::BadUrlParam { param: p, .. }) => assert_eq!(p, param, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_url("?fetch_wait_ms=5"),
            Err(LogError::BadUrl(_))
        ));
    }
}
