//! Clarion's store: the wide-column shape every projection, dedup table,
//! outbox, timer and processor offset is written against.
//!
//! A row is `(tenant, pk) -> ck -> value`: `(tenant, pk)` is the partition key,
//! `ck` the clustering key (bytes, ordered), `value` opaque bytes. Operations
//! are the ones ScyllaDB does well and SQLite does trivially: point get, scan of
//! one partition by clustering range, atomic write batch, TTL, and
//! insert-if-absent. Every operation names its tenant; system rows (processor
//! offsets, outboxes) use [`SYSTEM_TENANT`], which no real tenant id can equal.
//!
//! Backends are picked by URL: `sqlite://path` (embedded default) or
//! `scylla://host:port[,host:port]/keyspace` (feature `scylla`).

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod embedded;
#[cfg(feature = "scylla")]
pub mod scylla;
pub mod table;
pub mod testing;

pub use table::Table;

/// Tenant of rows that belong to no tenant (processor bookkeeping). Contains
/// `_`, which tenant ids may not, so it can never collide with one.
pub const SYSTEM_TENANT: &str = "_system";

/// Address of one row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub table: Table,
    pub tenant: String,
    pub pk: String,
    pub ck: Vec<u8>,
}

impl RowKey {
    pub fn new(table: Table, tenant: &str, pk: &str, ck: impl Into<Vec<u8>>) -> RowKey {
        RowKey {
            table,
            tenant: tenant.to_string(),
            pk: pk.to_string(),
            ck: ck.into(),
        }
    }
}

/// One mutation of a write batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: RowKey,
        value: Bytes,
        /// Expire the row after this long; `None` keeps it.
        ttl: Option<Duration>,
    },
    Delete {
        key: RowKey,
    },
}

/// Mutations applied atomically: all or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
    /// Rows that must hold exactly these values for the batch to apply
    /// (else it fails with [`StoreError::Fenced`] and nothing is written):
    /// a processor's fencing epoch, so that one that lost its partition
    /// cannot commit after the new owner started. Atomic with the batch on
    /// SQLite; on ScyllaDB read just before the batch (see its docs).
    pub guards: Vec<(RowKey, Bytes)>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, key: RowKey, value: impl Into<Bytes>) -> &mut Self {
        self.ops.push(Op::Put {
            key,
            value: value.into(),
            ttl: None,
        });
        self
    }

    pub fn put_ttl(&mut self, key: RowKey, value: impl Into<Bytes>, ttl: Duration) -> &mut Self {
        self.ops.push(Op::Put {
            key,
            value: value.into(),
            ttl: Some(ttl),
        });
        self
    }

    pub fn delete(&mut self, key: RowKey) -> &mut Self {
        self.ops.push(Op::Delete { key });
        self
    }

    /// The batch applies only if the row `key` holds `value` (see
    /// [`WriteBatch::guards`]).
    pub fn guard(&mut self, key: RowKey, value: impl Into<Bytes>) -> &mut Self {
        self.guards.push((key, value.into()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A clustering-key range of one partition.
#[derive(Clone, Debug)]
pub struct Scan {
    pub table: Table,
    pub tenant: String,
    pub pk: String,
    pub from: Bound<Vec<u8>>,
    pub to: Bound<Vec<u8>>,
    pub limit: usize,
    /// Highest clustering keys first.
    pub reverse: bool,
}

impl Scan {
    /// The whole partition, ascending, up to `limit` rows.
    pub fn partition(table: Table, tenant: &str, pk: &str, limit: usize) -> Scan {
        Scan {
            table,
            tenant: tenant.to_string(),
            pk: pk.to_string(),
            from: Bound::Unbounded,
            to: Bound::Unbounded,
            limit,
            reverse: false,
        }
    }

    pub fn reversed(mut self) -> Scan {
        self.reverse = true;
        self
    }

    pub fn range(mut self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan {
        self.from = from;
        self.to = to;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {0:?}: use sqlite://PATH or scylla://HOST:PORT/KEYSPACE")]
    BadUrl(String),
    #[error("this build has no {0} store backend: rebuild with `--features {0}`")]
    NotBuilt(&'static str),
    #[error("store error: {0}")]
    Storage(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the file's size cap) is full, or refuses writes: clears
    /// when space returns. The message begins "storage full: ".
    #[error("{0}")]
    Full(String),
    /// A guard of the batch did not hold ([`WriteBatch::guard`]): another
    /// process took over. The message begins [`FENCED`].
    #[error("{0}")]
    Fenced(String),
}

/// How the message of [`StoreError::Fenced`] begins.
pub const FENCED: &str = "fenced: ";

impl StoreError {
    /// A SQLite writer's error: [`StoreError::Full`] for a full or failing
    /// disk ([`clarion_sqlite::is_storage_full`]), else `Storage`.
    pub fn from_writer(msg: String) -> StoreError {
        if msg.starts_with(FENCED) {
            StoreError::Fenced(msg)
        } else if clarion_sqlite::is_storage_full(&msg) {
            StoreError::Full(msg)
        } else {
            StoreError::Storage(msg)
        }
    }

    /// Whether retrying the same call later may succeed (the backend was
    /// unreachable, or the disk full).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &RowKey) -> Result<Option<Bytes>>;

    /// Point lookups in one call; the answer is in the order of `keys`.
    async fn get_many(&self, keys: &[RowKey]) -> Result<Vec<Option<Bytes>>>;

    /// Rows of one partition within a clustering range, ordered by `ck`.
    async fn scan(&self, scan: &Scan) -> Result<Vec<(Vec<u8>, Bytes)>>;

    /// Applies every op or none.
    async fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Writes the row unless a live one exists. `None`: written; `Some(v)`: the
    /// existing value, untouched. Atomic against concurrent callers.
    async fn insert_if_absent(
        &self,
        key: &RowKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<Bytes>>;
}

/// Opens the backend named by `url`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(embedded::SqliteStore::open(path)?));
    }
    if let Some(rest) = url.strip_prefix("scylla://") {
        #[cfg(feature = "scylla")]
        {
            return Ok(Arc::new(scylla::ScyllaStore::connect(rest).await?));
        }
        #[cfg(not(feature = "scylla"))]
        {
            let _ = rest;
            return Err(StoreError::NotBuilt("scylla"));
        }
    }
    Err(StoreError::BadUrl(url.to_string()))
}
