//! The event log: Clarion's source of truth.
//!
//! A log is a set of topics, each split into partitions; a record's key picks
//! its partition (the same function on every backend, so a key lands on the
//! same partition number whichever log is used). Offsets start at 0 and are
//! dense per partition. Committed consumer-group offsets follow Kafka's
//! convention: the committed value is the next offset to read.
//!
//! Backends are picked by URL: `sqlite://path` (embedded, the default) or
//! `kafka://host:port[,host:port]` (feature `kafka`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod embedded;
pub mod group;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod kafka_group;
#[cfg(feature = "kafka")]
mod kafka_reader;
pub mod partitioner;
pub mod testing;

pub use partitioner::partition_for;

/// A record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Bytes,
    /// A secondary key under which a backend that keeps an index
    /// ([`EventLog::read_indexed`]) finds the record again; Clarion sets it
    /// to the tenant and notification of a notification's events, so the
    /// embedded log itself answers "what happened to this notification".
    pub index: Option<Bytes>,
}

impl Record {
    /// A record with no secondary key.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Record {
        Record {
            key: key.into(),
            value: value.into(),
            index: None,
        }
    }

    /// The same record, found again by [`EventLog::read_indexed`]`(index)`.
    pub fn indexed(mut self, index: impl Into<Bytes>) -> Record {
        self.index = Some(index.into());
        self
    }
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub value: Bytes,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("partition {partition} out of range for topic {topic:?} ({partitions} partitions)")]
    BadPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("topic {topic:?} exists with {existing} partitions, {requested} requested")]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    #[error("unsupported log URL {0:?}: use sqlite://PATH or kafka://HOST:PORT")]
    BadUrl(String),
    #[error("log URL parameter {param:?}: {problem}")]
    BadUrlParam { param: String, problem: String },
    #[error("this build has no {0} log backend: rebuild with `--features {0}`")]
    NotBuilt(&'static str),
    #[error("log storage error: {0}")]
    Storage(String),
    #[error("log backend unavailable: {0}")]
    Unavailable(String),
    /// The backend does not offer this (e.g. consumer groups on the
    /// embedded log).
    #[error("the {backend} log does not support {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
    /// The disk (or the file's size cap) is full, or refuses writes: clears
    /// when space returns. The message begins "storage full: ".
    #[error("{0}")]
    Full(String),
}

impl LogError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Unavailable(_) | LogError::Full(_))
    }

    /// A SQLite writer's error: [`LogError::Full`] for a full or failing
    /// disk ([`clarion_sqlite::is_storage_full`]), else `Storage`.
    pub fn from_writer(msg: String) -> LogError {
        if clarion_sqlite::is_storage_full(&msg) {
            LogError::Full(msg)
        } else {
            LogError::Storage(msg)
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// A durable, partitioned, append-only log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Creates a topic, or checks the partition count of an existing one.
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()>;

    /// Number of partitions of a topic.
    async fn partitions(&self, topic: &str) -> Result<u32>;

    /// Appends a batch; each record goes to `partition_for(key)`. The result
    /// has one entry per record, in order. Durable when this returns.
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>>;

    /// Up to `max` records of a partition starting at `from`, without waiting.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>>;

    /// The offset the next appended record of the partition will get.
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64>;

    /// A tailing reader of one partition, starting at `from`.
    async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<Box<dyn Subscription>>;

    /// Records `next_offset` as the position of `group` on the partition.
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()>;

    /// The committed position of `group`, `None` if it never committed.
    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>>;

    /// Every record appended with `index` as its [`Record::index`], with
    /// its topic, in append order within each partition; `None` if this
    /// backend keeps no index (Kafka), in which case readers keep their own
    /// projection.
    async fn read_indexed(&self, index: &[u8]) -> Result<Option<Vec<(String, LogRecord)>>> {
        let _ = index;
        Ok(None)
    }

    /// Whether [`EventLog::read_indexed`] answers (and appends keep the
    /// index of records that carry one).
    fn keeps_index(&self) -> bool {
        false
    }

    /// Joins the group of [`group::GroupSettings`]: the group shares the
    /// topics' partitions out among its members and tells `owner` which
    /// are this process's (see [`group`] for the contract).
    async fn join_group(
        &self,
        settings: group::GroupSettings,
        owner: std::sync::Arc<dyn group::Ownership>,
    ) -> Result<Box<dyn group::Membership>> {
        let _ = (settings, owner);
        Err(LogError::Unsupported {
            backend: "embedded",
            what: "consumer groups (partition-assignment = \"group\")",
        })
    }
}

/// A tailing reader of one partition.
#[async_trait]
pub trait Subscription: Send {
    /// The next records, waiting up to `wait` for the first one; empty on timeout.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>>;
}

/// Counts records that became durable (`clarion_log_appended_records_total`):
/// every event of the pipeline passes here once, so its rate is the
/// pipeline's events/s (the load generator reports it).
fn count_appended(n: usize) {
    metrics::counter!("clarion_log_appended_records_total").increment(n as u64);
}

/// Opens the backend named by `url`.
pub async fn open(url: &str) -> Result<Arc<dyn EventLog>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(embedded::SqliteLog::open(path)?));
    }
    if let Some(brokers) = url.strip_prefix("kafka://") {
        #[cfg(feature = "kafka")]
        {
            return Ok(Arc::new(kafka::KafkaLog::connect(brokers).await?));
        }
        #[cfg(not(feature = "kafka"))]
        {
            let _ = brokers;
            return Err(LogError::NotBuilt("kafka"));
        }
    }
    Err(LogError::BadUrl(url.to_string()))
}
