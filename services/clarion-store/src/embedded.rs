//! The embedded store: one SQLite file, a table per logical table.
//!
//! Writes go through one connection (SQLite has one writer anyway); reads use
//! a small pool of connections so they proceed while a write commits (WAL).
//! TTL is an `expires_at` column (with a partial index) filtered on read and
//! purged on open, every minute by a thread of the store, and by
//! [`SqliteStore::purge_expired`].

use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

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
    put: String,
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
                put: format!(
                    "INSERT INTO {t} (tenant, pk, ck, value, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, pk, ck)
                     DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
                ),
                delete: format!("DELETE FROM {t} WHERE tenant = ?1 AND pk = ?2 AND ck = ?3"),
            })
            .collect()
    });
    &all[table as usize]
}

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    /// Batches for the group-commit thread.
    batches: std::sync::mpsc::Sender<WriteRequest>,
    /// Dropped with the store: stop the checkpoint and purge threads.
    _checkpointer: std::sync::mpsc::Sender<()>,
    _purger: std::sync::mpsc::Sender<()>,
}

struct WriteRequest {
    batch: WriteBatch,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Most ops committed in one grouped transaction.
const MAX_GROUP_OPS: usize = 20_000;

/// The group-commit loop: every processor partition commits a batch per step;
/// taking all batches waiting and committing them in one transaction turns
/// many small commits into few large ones. A failing group is retried batch by
/// batch, so one bad batch fails alone.
fn group_commit_loop(conn: Arc<Mutex<Connection>>, rx: std::sync::mpsc::Receiver<WriteRequest>) {
    while let Ok(first) = rx.recv() {
        let mut ops = first.batch.len();
        let mut group = vec![first];
        while ops < MAX_GROUP_OPS {
            match rx.try_recv() {
                Ok(r) => {
                    ops += r.batch.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let mut c = conn.lock().expect("store writer lock");
        let all: Vec<&WriteBatch> = group.iter().map(|r| &r.batch).collect();
        match apply_batches(&mut c, &all) {
            Ok(()) => {
                for r in group {
                    let _ = r.reply.send(Ok(()));
                }
            }
            Err(_) if group.len() > 1 => {
                for r in group {
                    let res = apply_batches(&mut c, &[&r.batch]);
                    let _ = r.reply.send(res);
                }
            }
            Err(e) => {
                for r in group {
                    let _ = r.reply.send(Err(StoreError::Storage(e.to_string())));
                }
            }
        }
    }
}

/// Applies batches in one IMMEDIATE transaction (the write lock up front, so
/// busy_timeout applies; a deferred read-then-write cannot wait for others).
fn apply_batches(c: &mut Connection, batches: &[&WriteBatch]) -> Result<()> {
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(storage)?;
    for batch in batches {
        for op in &batch.ops {
            match op {
                Op::Put { key, value, ttl } => {
                    tx.prepare_cached(&sql(key.table).put)
                        .map_err(storage)?
                        .execute(params![
                            key.tenant,
                            key.pk,
                            key.ck,
                            &value[..],
                            expiry(*ttl)
                        ])
                        .map_err(storage)?;
                }
                Op::Delete { key } => {
                    tx.prepare_cached(&sql(key.table).delete)
                        .map_err(storage)?
                        .execute(params![key.tenant, key.pk, key.ck])
                        .map_err(storage)?;
                }
            }
        }
    }
    tx.commit().map_err(storage)
}

impl SqliteStore {
    pub fn open(path: &str) -> Result<SqliteStore> {
        let writer = connect(path)?;
        // The writer gets a 16 MiB page cache (SQLite's default is 2 MiB):
        // keys are time-ordered, so the pages a commit touches are mostly the
        // right edges of the B-trees. Not larger: a B-tree split parks a page
        // at the lock-byte page number (1 GiB), and every commit then scans
        // the whole page cache to drop pages past the end of the file
        // (`pcache1TruncateUnsafe`); with 256 MiB that scan was 8 % of the
        // server's CPU (docs/benchmarks.md).
        writer
            .execute_batch("PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=0;")
            .map_err(storage)?;
        for t in Table::ALL {
            writer
                .execute_batch(&format!(
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
        let readers = (0..READERS)
            .map(|_| connect(path).map(|c| Arc::new(Mutex::new(c))))
            .collect::<Result<Vec<_>>>()?;
        let writer = Arc::new(Mutex::new(writer));
        let (batches, rx) = std::sync::mpsc::channel();
        let w = writer.clone();
        std::thread::Builder::new()
            .name("clarion-store-writer".into())
            .spawn(move || group_commit_loop(w, rx))
            .map_err(storage)?;
        let store = SqliteStore {
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
            batches,
            _checkpointer: clarion_sqlite::spawn_checkpointer(path, "clarion-store-ckpt")
                .map_err(storage)?,
            _purger: spawn_purger(path)?,
        };
        store.purge_expired_blocking()?;
        Ok(store)
    }

    /// Deletes rows whose TTL has passed.
    pub async fn purge_expired(&self) -> Result<()> {
        let w = self.writer.clone();
        tokio::task::spawn_blocking(move || purge(&w.lock().expect("store writer lock")))
            .await
            .map_err(storage)?
    }

    fn purge_expired_blocking(&self) -> Result<()> {
        purge(&self.writer.lock().expect("store writer lock"))
    }

    /// Runs a read on a reader connection. A `small` read (point lookups,
    /// short scans: tens of microseconds on cached pages) runs right here on
    /// the async worker when a reader is free: handing it to the blocking
    /// pool costs two thread switches, more than the read itself. Large
    /// reads, or all readers busy, go to the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        small: bool,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        if small {
            for j in 0..self.readers.len() {
                let i = (start + j) % self.readers.len();
                if let Ok(c) = self.readers[i].try_lock() {
                    return f(&c);
                }
            }
        }
        let c = self.readers[start % self.readers.len()].clone();
        tokio::task::spawn_blocking(move || f(&c.lock().expect("store reader lock")))
            .await
            .map_err(storage)?
    }

    async fn write_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let w = self.writer.clone();
        tokio::task::spawn_blocking(move || f(&mut w.lock().expect("store writer lock")))
            .await
            .map_err(storage)?
    }
}

/// Deletes expired rows every `PURGE_EVERY` from a thread of its own, in
/// chunks, each its own short transaction, so the writer never waits long.
/// Reads already filter expired rows out; this keeps the tables from growing
/// with dedup ids, throttle marks and idempotency keys. The thread ends when
/// the returned sender is dropped.
fn spawn_purger(path: &str) -> Result<std::sync::mpsc::Sender<()>> {
    const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
    let conn = connect(path)?;
    let (stop, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("clarion-store-purge".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(PURGE_EVERY)
            {
                if let Err(e) = purge(&conn) {
                    tracing::warn!(error = %e, "purging expired rows failed");
                }
            }
        })
        .map_err(storage)?;
    Ok(stop)
}

/// Deletes every row whose TTL has passed, at most `CHUNK` per transaction
/// (found through the partial index on `expires_at`).
fn purge(c: &Connection) -> Result<()> {
    const CHUNK: usize = 5_000;
    let now = now_ms();
    for t in Table::ALL {
        let sql = format!(
            "DELETE FROM {t} WHERE (tenant, pk, ck) IN (
                 SELECT tenant, pk, ck FROM {t}
                 WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT {CHUNK})"
        );
        while c.execute(&sql, [now]).map_err(storage)? == CHUNK {}
    }
    Ok(())
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
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.batches
            .send(WriteRequest { batch, reply })
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }

    async fn insert_if_absent(
        &self,
        key: &RowKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<Bytes>> {
        let k = key.clone();
        self.write_with(move |c| {
            // IMMEDIATE: the write lock up front, so busy_timeout applies
            // (a deferred read-then-write cannot wait for other writers).
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(storage)?;
            let now = now_ms();
            // An expired row counts as absent and is replaced.
            let changed = tx
                .execute(
                    &format!(
                        "INSERT INTO {} (tenant, pk, ck, value, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (tenant, pk, ck) DO UPDATE
                         SET value = excluded.value, expires_at = excluded.expires_at
                         WHERE expires_at IS NOT NULL AND expires_at <= ?6",
                        k.table
                    ),
                    params![k.tenant, k.pk, k.ck, &value[..], expiry(ttl), now],
                )
                .map_err(storage)?;
            let existing = if changed == 1 {
                None
            } else {
                get_one(&tx, &k, now)?
            };
            tx.commit().map_err(storage)?;
            Ok(existing)
        })
        .await
    }
}
