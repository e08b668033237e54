//! The embedded store: one SQLite file, a table per logical table.
//!
//! Writes are jobs of the file's one writer thread (`clarion_sqlite::writer`;
//! SQLite has one writer anyway), the store's own or, when the log and the
//! store share a file, the log's. Reads use a small pool of connections so
//! they proceed while a write commits (WAL).
//! TTL is an `expires_at` column (with a partial index) filtered on read and
//! purged on open, every minute by a thread of the store, and by
//! [`SqliteStore::purge_expired`].

use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_sqlite::multi_row;
use clarion_sqlite::readers::Readers;
use clarion_sqlite::writer::{WriteJob, Writer};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};

use crate::{Op, Result, RowKey, Scan, Store, StoreError, Table, WriteBatch};

const READERS: usize = 4;
/// Reads of at most this many rows run inline on the async worker.
const SMALL_READ_ROWS: usize = 1000;

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn expiry(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now_ms() + t.as_millis() as i64)
}

fn connect(path: &str) -> Result<Connection> {
    clarion_sqlite::connect(path).map_err(storage)
}

/// The per-row statements of one table, formatted once: the hot paths look
/// them up rather than format a fresh SQL string for every row.
struct TableSql {
    get: String,
    /// Upserts of 1, 2, 4, ... rows ([`multi_row`]).
    puts: Vec<String>,
    delete: String,
}

fn sql(table: Table) -> &'static TableSql {
    static SQL: std::sync::OnceLock<Vec<TableSql>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        // Indexed by the enum's discriminant: `Table::ALL` lists the tables
        // in declaration order.
        debug_assert!(Table::ALL.iter().enumerate().all(|(i, t)| *t as usize == i));
        Table::ALL
            .iter()
            .map(|t| TableSql {
                get: format!(
                    "SELECT value FROM {t} WHERE tenant = ?1 AND pk = ?2 AND ck = ?3
                     AND (expires_at IS NULL OR expires_at > ?4)"
                ),
                // An upsert rewrites an existing row in place, where OR
                // REPLACE deletes and reinserts it (run records are rewritten
                // on every step).
                puts: multi_row::statements(
                    &format!("INSERT OR FAIL INTO {t} (tenant, pk, ck, value, expires_at)"),
                    "(?,?,?,?,?)",
                    "ON CONFLICT (tenant, pk, ck)
                     DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                ),
                delete: format!("DELETE FROM {t} WHERE tenant = ?1 AND pk = ?2 AND ck = ?3"),
            })
            .collect()
    });
    &all[table as usize]
}

/// The embedded SQLite store.
pub struct SqliteStore {
    /// The file's single writer: the store's own, or the embedded log's when
    /// both live in one file ([`SqliteStore::open_with_writer`]).
    writer: Writer,
    readers: Readers,
    /// Dropped with the store: stop the checkpoint (if the store owns the
    /// file's writer) and purge threads.
    _checkpointer: Option<std::sync::mpsc::Sender<()>>,
    _purger: std::sync::mpsc::Sender<()>,
}

/// Most ops committed in one grouped transaction.
const MAX_GROUP_OPS: usize = 20_000;

fn unavailable(e: String) -> StoreError {
    StoreError::Unavailable(e)
}

/// Applies a batch's ops in the writer's transaction, grouped by table
/// ([`by_table`]). A run of puts to one table goes in multi-row upserts
/// ([`multi_row`]; a processor's batch puts many run records, then many index
/// rows); deletes go one by one (they are rare on the hot path).
fn apply_ops(tx: &Transaction<'_>, batch: &WriteBatch) -> rusqlite::Result<()> {
    let order = by_table(&batch.ops);
    let op = |i: usize| &batch.ops[order[i] as usize];
    let mut i = 0;
    while i < order.len() {
        match op(i) {
            Op::Delete { key } => {
                tx.prepare_cached(&sql(key.table).delete)?
                    .execute(params![key.tenant, key.pk, key.ck])?;
                i += 1;
            }
            Op::Put { key, .. } => {
                let table = key.table;
                let run = (i..order.len())
                    .take(multi_row::MAX_ROWS)
                    .take_while(|&j| matches!(op(j), Op::Put { key, .. } if key.table == table))
                    .count();
                let (shift, n) = multi_row::chunk(run);
                let mut stmt = tx.prepare_cached(&sql(table).puts[shift])?;
                for j in 0..n {
                    let Op::Put { key, value, ttl } = op(i + j) else {
                        unreachable!("the run holds puts only")
                    };
                    stmt.raw_bind_parameter(5 * j + 1, &key.tenant)?;
                    stmt.raw_bind_parameter(5 * j + 2, &key.pk)?;
                    stmt.raw_bind_parameter(5 * j + 3, &key.ck)?;
                    stmt.raw_bind_parameter(5 * j + 4, &value[..])?;
                    stmt.raw_bind_parameter(5 * j + 5, expiry(*ttl))?;
                }
                stmt.raw_execute()?;
                i += n;
            }
        }
    }
    Ok(())
}

/// The positions of `ops` grouped by table, each table's ops in their
/// order (a counting sort). Ops on different tables touch different rows,
/// so the reordering changes nothing but speed: a processor that writes,
/// per input, one row each to two tables (a subscriber's index and the
/// tenant's notification index) would otherwise alternate tables and
/// write every row with a statement of its own, where grouped they go in
/// multi-row statements (issue #29 measured the difference on the spine).
fn by_table(ops: &[Op]) -> Vec<u32> {
    let table = |op: &Op| match op {
        Op::Put { key, .. } | Op::Delete { key } => key.table as usize,
    };
    let mut starts = [0u32; Table::ALL.len() + 1];
    for op in ops {
        starts[table(op) + 1] += 1;
    }
    for t in 1..starts.len() {
        starts[t] += starts[t - 1];
    }
    let mut order = vec![0u32; ops.len()];
    for (i, op) in ops.iter().enumerate() {
        let slot = &mut starts[table(op)];
        order[*slot as usize] = i as u32;
        *slot += 1;
    }
    order
}

/// Fails (`crate::FENCED`) unless every guard row holds its value, in the
/// batch's transaction: a process that wrote the row later wins.
fn check_guards(tx: &Transaction<'_>, batch: &WriteBatch) -> std::result::Result<(), String> {
    for (key, want) in &batch.guards {
        let got: Option<Vec<u8>> = tx
            .prepare_cached(&sql(key.table).get)
            .and_then(|mut s| {
                s.query_row(params![key.tenant, key.pk, key.ck, now_ms()], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| clarion_sqlite::describe(&e))?;
        if got.as_deref() != Some(&want[..]) {
            return Err(format!(
                "{}{}/{} holds another owner's epoch",
                crate::FENCED,
                key.table,
                key.pk
            ));
        }
    }
    Ok(())
}

/// A write batch as a job of the file's writer.
struct BatchJob {
    /// Shared: a runner that decides its next batch while this one commits
    /// reads this one's writes meanwhile (`clarion_runtime::overlay`).
    batch: std::sync::Arc<WriteBatch>,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
}

impl WriteJob for BatchJob {
    fn weight(&self) -> usize {
        self.batch.len()
    }

    fn apply(&mut self, tx: &Transaction<'_>) -> std::result::Result<(), String> {
        check_guards(tx, &self.batch)?;
        apply_ops(tx, &self.batch).map_err(|e| clarion_sqlite::describe(&e))
    }

    fn finish(self: Box<Self>, outcome: std::result::Result<(), String>) {
        let _ = self.reply.send(outcome.map_err(StoreError::from_writer));
    }
}

/// Runs `f` on `writer`; awaits its answer.
async fn write_fn<T, F>(writer: &Writer, background: bool, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnMut(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    writer.call(background, f, move |a| {
        let _ = tx.send(a);
    });
    rx.await
        .map_err(|_| unavailable("store writer stopped".into()))?
        .map_err(StoreError::from_writer)
}

fn create_tables(c: &Connection) -> Result<()> {
    for t in Table::ALL {
        c.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                tenant TEXT NOT NULL,
                pk TEXT NOT NULL,
                ck BLOB NOT NULL,
                value BLOB NOT NULL,
                expires_at INTEGER,
                PRIMARY KEY (tenant, pk, ck)
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS {t}_expiry ON {t} (expires_at)
                WHERE expires_at IS NOT NULL;"
        ))
        .map_err(storage)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) a store in a file of its own, with its own
    /// writer thread and checkpointer.
    pub fn open(path: &str) -> Result<SqliteStore> {
        let conn = clarion_sqlite::connect_writer(path).map_err(storage)?;
        let writer =
            Writer::spawn(conn, path, "clarion-store-writer", MAX_GROUP_OPS).map_err(storage)?;
        let checkpointer =
            clarion_sqlite::spawn_checkpointer(path, "clarion-store-ckpt").map_err(storage)?;
        Self::with_writer(writer, Some(checkpointer))
    }

    /// Opens a store in the file `writer` writes (the embedded log's), so a
    /// processor's state and the events it emits can commit together. The
    /// writer's owner checkpoints the file.
    pub fn open_with_writer(writer: Writer) -> Result<SqliteStore> {
        Self::with_writer(writer, None)
    }

    fn with_writer(
        writer: Writer,
        checkpointer: Option<std::sync::mpsc::Sender<()>>,
    ) -> Result<SqliteStore> {
        let path = writer.path().to_string();
        create_tables(&connect(&path)?)?;
        let readers = Readers::open(&path, READERS).map_err(storage)?;
        let store = SqliteStore {
            _purger: spawn_purger(writer.clone())?,
            writer,
            readers,
            _checkpointer: checkpointer,
        };
        purge_blocking(&store.writer)?;
        Ok(store)
    }

    /// The file's writer (to commit other jobs together with store writes).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// A write batch as a job for [`SqliteStore::writer`], to commit in one
    /// transaction with other jobs ([`clarion_sqlite::writer::Together`]).
    /// The receiver answers once the job's transaction has committed or failed.
    pub fn write_job(
        &self,
        batch: WriteBatch,
    ) -> (
        Box<dyn WriteJob>,
        tokio::sync::oneshot::Receiver<Result<()>>,
    ) {
        self.shared_write_job(std::sync::Arc::new(batch))
    }

    /// [`SqliteStore::write_job`] of a batch the caller keeps reading.
    pub fn shared_write_job(
        &self,
        batch: std::sync::Arc<WriteBatch>,
    ) -> (
        Box<dyn WriteJob>,
        tokio::sync::oneshot::Receiver<Result<()>>,
    ) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        (Box::new(BatchJob { batch, reply }), rx)
    }

    /// Deletes rows whose TTL has passed.
    pub async fn purge_expired(&self) -> Result<()> {
        while write_fn(&self.writer, true, purge_chunk).await? {}
        Ok(())
    }

    /// Runs a read on a reader connection ([`Readers::read`]: a `small`
    /// one inline when a connection is free).
    async fn read<T: Send + 'static>(
        &self,
        small: bool,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.readers.read(small, f).await.map_err(storage)?
    }
}

/// Deletes expired rows every `PURGE_EVERY`, in chunks, each a job of the
/// file's writer, so other writes wait at most one chunk. Reads already
/// filter expired rows out; this keeps the tables from growing with dedup
/// ids, throttle marks and idempotency keys. The thread ends when the
/// returned sender is dropped.
fn spawn_purger(writer: Writer) -> Result<std::sync::mpsc::Sender<()>> {
    const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
    let (stop, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("clarion-store-purge".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(PURGE_EVERY)
            {
                if let Err(e) = purge_blocking(&writer) {
                    tracing::warn!(error = %e, "purging expired rows failed");
                }
            }
        })
        .map_err(storage)?;
    Ok(stop)
}

/// Purges every expired row, one chunk per writer job, from a thread that
/// may block.
fn purge_blocking(writer: &Writer) -> Result<()> {
    loop {
        let (tx, rx) = std::sync::mpsc::channel();
        writer.call(true, purge_chunk, move |a| {
            let _ = tx.send(a);
        });
        let more = rx
            .recv()
            .map_err(|_| unavailable("store writer stopped".into()))?
            .map_err(StoreError::Storage)?;
        if !more {
            return Ok(());
        }
    }
}

/// Deletes at most `CHUNK` expired rows of each table (found through the
/// partial index on `expires_at`); true if some table may have more.
fn purge_chunk(tx: &Transaction<'_>) -> rusqlite::Result<bool> {
    const CHUNK: usize = 5_000;
    let now = now_ms();
    let mut more = false;
    for t in Table::ALL {
        let sql = format!(
            "DELETE FROM {t} WHERE (tenant, pk, ck) IN (
                 SELECT tenant, pk, ck FROM {t}
                 WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT {CHUNK})"
        );
        more |= tx.prepare_cached(&sql)?.execute([now])? == CHUNK;
    }
    Ok(more)
}

fn get_one(c: &Connection, k: &RowKey, now: i64) -> Result<Option<Bytes>> {
    c.prepare_cached(&sql(k.table).get)
        .map_err(storage)?
        .query_row(params![k.tenant, k.pk, k.ck, now], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .optional()
        .map(|v| v.map(Bytes::from))
        .map_err(storage)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &RowKey) -> Result<Option<Bytes>> {
        let k = key.clone();
        self.read(true, move |c| get_one(c, &k, now_ms())).await
    }

    async fn get_many(&self, keys: &[RowKey]) -> Result<Vec<Option<Bytes>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.read(keys.len() <= SMALL_READ_ROWS, move |c| {
            // One read transaction for all keys: one snapshot, and one WAL
            // check instead of one per key (each statement outside a
            // transaction is a read transaction of its own).
            let tx = c.unchecked_transaction().map_err(storage)?;
            let now = now_ms();
            let rows = keys.iter().map(|k| get_one(&tx, k, now)).collect();
            tx.finish().map_err(storage)?;
            rows
        })
        .await
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let s = scan.clone();
        self.read(s.limit <= SMALL_READ_ROWS, move |c| {
            let mut sql = format!(
                "SELECT ck, value FROM {} WHERE tenant = ? AND pk = ?
                 AND (expires_at IS NULL OR expires_at > ?)",
                s.table
            );
            let mut args: Vec<rusqlite::types::Value> = vec![
                s.tenant.clone().into(),
                s.pk.clone().into(),
                now_ms().into(),
            ];
            for (bound, incl, excl) in [(&s.from, ">=", ">"), (&s.to, "<=", "<")] {
                match bound {
                    Bound::Included(b) => {
                        sql.push_str(&format!(" AND ck {incl} ?"));
                        args.push(b.clone().into());
                    }
                    Bound::Excluded(b) => {
                        sql.push_str(&format!(" AND ck {excl} ?"));
                        args.push(b.clone().into());
                    }
                    Bound::Unbounded => {}
                }
            }
            sql.push_str(if s.reverse {
                " ORDER BY ck DESC LIMIT ?"
            } else {
                " ORDER BY ck ASC LIMIT ?"
            });
            args.push((s.limit.min(i64::MAX as usize) as i64).into());
            let mut stmt = c.prepare_cached(&sql).map_err(storage)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        Bytes::from(r.get::<_, Vec<u8>>(1)?),
                    ))
                })
                .map_err(storage)?;
            rows.collect::<std::result::Result<_, _>>().map_err(storage)
        })
        .await
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (job, rx) = self.write_job(batch);
        self.writer.submit(job);
        rx.await
            .map_err(|_| unavailable("store writer stopped".into()))?
    }

    async fn insert_if_absent(
        &self,
        key: &RowKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<Bytes>> {
        let k = key.clone();
        let upsert = format!(
            "INSERT INTO {} (tenant, pk, ck, value, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, pk, ck) DO UPDATE
             SET value = excluded.value, expires_at = excluded.expires_at
             WHERE expires_at IS NOT NULL AND expires_at <= ?6",
            k.table
        );
        write_fn(&self.writer, false, move |tx| {
            let now = now_ms();
            // An expired row counts as absent and is replaced.
            let changed = tx.execute(
                &upsert,
                params![k.tenant, k.pk, k.ck, &value[..], expiry(ttl), now],
            )?;
            if changed == 1 {
                return Ok(None);
            }
            tx.prepare_cached(&sql(k.table).get)?
                .query_row(params![k.tenant, k.pk, k.ck, now], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .optional()
                .map(|v| v.map(Bytes::from))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(table: Table, ck: &str) -> RowKey {
        RowKey::new(table, "acme", "p", ck.as_bytes().to_vec())
    }

    #[test]
    fn ops_group_by_table_keeping_each_tables_order() {
        let mut b = WriteBatch::new();
        b.put(key(Table::SubscriberNotifications, "a"), "1")
            .put(key(Table::NotificationIndex, "a"), "2")
            .delete(key(Table::SubscriberNotifications, "a"))
            .put(key(Table::NotificationIndex, "b"), "3")
            .put(key(Table::SubscriberNotifications, "a"), "4")
            .put(key(Table::Runs, "r"), "5");
        let order = by_table(&b.ops);
        let tables: Vec<Table> = order
            .iter()
            .map(|&i| match &b.ops[i as usize] {
                Op::Put { key, .. } | Op::Delete { key } => key.table,
            })
            .collect();
        // Each table's ops are contiguous and in the batch's order.
        let mut seen = Vec::new();
        for t in &tables {
            if seen.last() != Some(t) {
                assert!(!seen.contains(t), "{t:?} split in {tables:?}");
                seen.push(*t);
            }
        }
        let sub: Vec<u32> = order
            .iter()
            .zip(&tables)
            .filter(|(_, t)| **t == Table::SubscriberNotifications)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(sub, [0, 2, 4]);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn interleaved_tables_apply_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        let mut b = WriteBatch::new();
        b.put(key(Table::SubscriberNotifications, "a"), "1")
            .put(key(Table::NotificationIndex, "a"), "2")
            .delete(key(Table::SubscriberNotifications, "a"))
            .put(key(Table::NotificationIndex, "a"), "3")
            .put(key(Table::SubscriberNotifications, "b"), "4");
        store.write(b).await.unwrap();
        let get = |t, ck: &'static str| {
            let k = key(t, ck);
            let store = &store;
            async move { store.get(&k).await }
        };
        assert_eq!(
            get(Table::SubscriberNotifications, "a").await.unwrap(),
            None
        );
        assert_eq!(
            get(Table::SubscriberNotifications, "b")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"4"[..])
        );
        assert_eq!(
            get(Table::NotificationIndex, "a").await.unwrap().as_deref(),
            Some(&b"3"[..])
        );
    }
}
