//! The embedded log: one SQLite file, one writer thread with group commit.
//!
//! Appends from every task are queued to a single writer thread, which takes
//! everything waiting, writes it in one transaction and answers each caller.
//! Under load that turns thousands of small appends into a few large commits;
//! when idle, an append commits alone with no added delay. Readers use their
//! own connections (WAL mode lets them read while the writer writes) and are
//! woken by a per-partition watch channel carrying the end offset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, watch};

use crate::{partition_for, Appended, EventLog, LogError, LogRecord, Record, Result, Subscription};

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 4096;

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn connect(path: &str) -> Result<Connection> {
    clarion_sqlite::connect(path).map_err(storage)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    topic INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
";

#[derive(Clone, Copy)]
struct TopicMeta {
    id: i64,
    partitions: u32,
}

enum Cmd {
    Append {
        topic: TopicMeta,
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Vec<Appended>>>,
    },
}

type Watches = Arc<Mutex<HashMap<(i64, u32), watch::Sender<u64>>>>;

/// The embedded SQLite log.
pub struct SqliteLog {
    path: String,
    tx: std::sync::mpsc::Sender<Cmd>,
    /// Short operations (metadata, group offsets, one-shot reads).
    meta: Arc<Mutex<Connection>>,
    topics: Mutex<HashMap<String, TopicMeta>>,
    watches: Watches,
    /// Dropped with the log: stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path`. `path` may carry
    /// `?sync=full` to fsync every commit.
    pub fn open(path: &str) -> Result<SqliteLog> {
        let (path, sync_full) = match path.split_once('?') {
            Some((p, q)) => (p.to_string(), q.split('&').any(|kv| kv == "sync=full")),
            None => (path.to_string(), false),
        };
        let writer = connect(&path)?;
        writer.execute_batch(SCHEMA).map_err(storage)?;
        // A 64 MiB page cache for the writer (SQLite's default is 2 MiB).
        writer
            .execute_batch("PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=0;")
            .map_err(storage)?;
        if sync_full {
            writer
                .execute_batch("PRAGMA synchronous=FULL;")
                .map_err(storage)?;
        }
        let meta = connect(&path)?;
        let watches: Watches = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let w = watches.clone();
        std::thread::Builder::new()
            .name("clarion-log-writer".into())
            .spawn(move || writer_loop(writer, rx, w))
            .map_err(storage)?;
        let checkpointer =
            clarion_sqlite::spawn_checkpointer(&path, "clarion-log-ckpt").map_err(storage)?;
        Ok(SqliteLog {
            path,
            tx,
            meta: Arc::new(Mutex::new(meta)),
            topics: Mutex::default(),
            watches,
            _checkpointer: checkpointer,
        })
    }

    async fn meta_op<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.meta.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().expect("log meta lock")))
            .await
            .map_err(storage)?
    }

    async fn topic(&self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self.topics.lock().expect("topics lock").get(name) {
            return Ok(*t);
        }
        let n = name.to_string();
        let t = self
            .meta_op(move |c| {
                c.query_row(
                    "SELECT id, partitions FROM topics WHERE name = ?1",
                    [&n],
                    |r| {
                        Ok(TopicMeta {
                            id: r.get(0)?,
                            partitions: r.get(1)?,
                        })
                    },
                )
                .optional()
                .map_err(storage)
            })
            .await?
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        self.topics
            .lock()
            .expect("topics lock")
            .insert(name.to_string(), t);
        Ok(t)
    }

    async fn checked(&self, topic: &str, partition: u32) -> Result<TopicMeta> {
        let t = self.topic(topic).await?;
        if partition >= t.partitions {
            return Err(LogError::BadPartition {
                topic: topic.to_string(),
                partition,
                partitions: t.partitions,
            });
        }
        Ok(t)
    }

    fn watch(&self, topic: i64, partition: u32, end: u64) -> watch::Receiver<u64> {
        let mut w = self.watches.lock().expect("watch lock");
        w.entry((topic, partition))
            .or_insert_with(|| watch::channel(end).0)
            .subscribe()
    }
}

fn read_range(
    conn: &Connection,
    topic: i64,
    partition: u32,
    from: u64,
    max: usize,
) -> Result<Vec<LogRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT offset, key, value, ts FROM records
             WHERE topic = ?1 AND partition = ?2 AND offset >= ?3
             ORDER BY offset LIMIT ?4",
        )
        .map_err(storage)?;
    let rows = stmt
        .query_map(params![topic, partition, from as i64, max as i64], |r| {
            Ok(LogRecord {
                partition,
                offset: r.get::<_, i64>(0)? as u64,
                key: r.get(1)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                timestamp_ms: r.get(3)?,
            })
        })
        .map_err(storage)?;
    rows.collect::<std::result::Result<_, _>>().map_err(storage)
}

fn end_of(conn: &Connection, topic: i64, partition: u32) -> Result<u64> {
    let max: Option<i64> = conn
        .query_row(
            "SELECT MAX(offset) FROM records WHERE topic = ?1 AND partition = ?2",
            params![topic, partition],
            |r| r.get(0),
        )
        .map_err(storage)?;
    Ok(max.map(|m| m as u64 + 1).unwrap_or(0))
}

fn writer_loop(mut conn: Connection, rx: std::sync::mpsc::Receiver<Cmd>, watches: Watches) {
    let mut next: HashMap<(i64, u32), u64> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut n: usize = group
            .iter()
            .map(|Cmd::Append { records, .. }| records.len())
            .sum();
        while n < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => {
                    let Cmd::Append { records, .. } = &cmd;
                    n += records.len();
                    group.push(cmd);
                }
                Err(_) => break,
            }
        }
        let before = next.clone();
        match write_group(&mut conn, &mut next, &group) {
            Ok(results) => {
                let mut touched = Vec::new();
                for (cmd, res) in group.into_iter().zip(results) {
                    let Cmd::Append { topic, reply, .. } = cmd;
                    for a in &res {
                        touched.push((topic.id, a.partition));
                    }
                    let _ = reply.send(Ok(res));
                }
                touched.sort_unstable();
                touched.dedup();
                let w = watches.lock().expect("watch lock");
                for k in touched {
                    if let (Some(s), Some(end)) = (w.get(&k), next.get(&k)) {
                        s.send_replace(*end);
                    }
                }
            }
            Err(e) => {
                // Nothing of the group was committed: roll back our counters too.
                next = before;
                let msg = e.to_string();
                for Cmd::Append { reply, .. } in group {
                    let _ = reply.send(Err(LogError::Storage(msg.clone())));
                }
            }
        }
    }
}

fn write_group(
    conn: &mut Connection,
    next: &mut HashMap<(i64, u32), u64>,
    group: &[Cmd],
) -> Result<Vec<Vec<Appended>>> {
    // IMMEDIATE: take the write lock up front. A deferred transaction that
    // reads first cannot upgrade once another connection wrote, and SQLite
    // then fails at once instead of waiting (busy_timeout does not apply).
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(storage)?;
    let ts = now_ms();
    let mut out = Vec::with_capacity(group.len());
    {
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO records (topic, partition, offset, key, value, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(storage)?;
        for Cmd::Append { topic, records, .. } in group {
            let mut res = Vec::with_capacity(records.len());
            for r in records {
                let p = partition_for(&r.key, topic.partitions);
                let slot = match next.get_mut(&(topic.id, p)) {
                    Some(s) => s,
                    None => {
                        let end = end_of(&tx, topic.id, p)?;
                        next.entry((topic.id, p)).or_insert(end)
                    }
                };
                let offset = *slot;
                ins.execute(params![topic.id, p, offset as i64, r.key, &r.value[..], ts])
                    .map_err(storage)?;
                *slot += 1;
                res.push(Appended {
                    partition: p,
                    offset,
                });
            }
            out.push(res);
        }
    }
    tx.commit().map_err(storage)?;
    Ok(out)
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        if partitions == 0 {
            return Err(LogError::Storage(
                "a topic needs at least one partition".into(),
            ));
        }
        let name = topic.to_string();
        let existing = self
            .meta_op(move |c| {
                c.execute(
                    "INSERT INTO topics (name, partitions) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                    params![name, partitions],
                )
                .map_err(storage)?;
                c.query_row(
                    "SELECT partitions FROM topics WHERE name = ?1",
                    [&name],
                    |r| r.get::<_, u32>(0),
                )
                .map_err(storage)
            })
            .await?;
        if existing != partitions {
            return Err(LogError::PartitionMismatch {
                topic: topic.to_string(),
                existing,
                requested: partitions,
            });
        }
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic).await?.partitions)
    }

    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Appended>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let topic = self.topic(topic).await?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append {
                topic,
                records,
                reply,
            })
            .map_err(|_| LogError::Unavailable("log writer stopped".into()))?;
        rx.await
            .map_err(|_| LogError::Unavailable("log writer stopped".into()))?
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>> {
        let t = self.checked(topic, partition).await?;
        self.meta_op(move |c| read_range(c, t.id, partition, from, max))
            .await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        let t = self.checked(topic, partition).await?;
        self.meta_op(move |c| end_of(c, t.id, partition)).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<Box<dyn Subscription>> {
        let t = self.checked(topic, partition).await?;
        let conn = connect(&self.path)?;
        let end = end_of(&conn, t.id, partition)?;
        let watch = self.watch(t.id, partition, end);
        Ok(Box::new(SqliteSubscription {
            conn: Arc::new(Mutex::new(conn)),
            topic: t.id,
            partition,
            position: from,
            watch,
            last_fetch: std::time::Instant::now()
                .checked_sub(CROSS_PROCESS_LOOK)
                .unwrap_or_else(std::time::Instant::now),
        }))
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        let t = self.checked(topic, partition).await?;
        let group = group.to_string();
        self.meta_op(move |c| {
            c.execute(
                "INSERT INTO group_offsets (grp, topic, partition, next_offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                params![group, t.id, partition, next_offset as i64],
            )
            .map(|_| ())
            .map_err(storage)
        })
        .await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        let t = self.checked(topic, partition).await?;
        let group = group.to_string();
        self.meta_op(move |c| {
            c.query_row(
                "SELECT next_offset FROM group_offsets WHERE grp = ?1 AND topic = ?2 AND partition = ?3",
                params![group, t.id, partition],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|o| o.map(|v| v as u64))
            .map_err(storage)
        })
        .await
    }
}

/// How stale a subscription's last read may get before it reads without a
/// signal (for appends by other processes).
const CROSS_PROCESS_LOOK: Duration = Duration::from_millis(250);

struct SqliteSubscription {
    conn: Arc<Mutex<Connection>>,
    topic: i64,
    partition: u32,
    position: u64,
    watch: watch::Receiver<u64>,
    last_fetch: std::time::Instant,
}

impl SqliteSubscription {
    async fn fetch(&mut self, max: usize) -> Result<Vec<LogRecord>> {
        self.last_fetch = std::time::Instant::now();
        let (conn, topic, partition, from) =
            (self.conn.clone(), self.topic, self.partition, self.position);
        // Inline on the async worker: the subscription owns its connection
        // and a batch read from cached pages is shorter than the two thread
        // switches of a trip through the blocking pool.
        let recs = read_range(&conn.lock().expect("sub lock"), topic, partition, from, max)?;
        if let Some(last) = recs.last() {
            self.position = last.offset + 1;
        }
        Ok(recs)
    }
}

#[async_trait]
impl Subscription for SqliteSubscription {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>> {
        // The watch holds the end offset after the last commit in this
        // process; mark it seen before reading so a commit racing the read
        // wakes us. Reading only when it moved spares a query (and a hop to
        // the blocking pool) per idle input per pass. Appends from other
        // processes sharing the file do not signal it, so look anyway when
        // the last read is older than `CROSS_PROCESS_LOOK`.
        let end = *self.watch.borrow_and_update();
        if end > self.position || self.last_fetch.elapsed() >= CROSS_PROCESS_LOOK {
            let recs = self.fetch(max).await?;
            if !recs.is_empty() {
                return Ok(recs);
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = (deadline - now).min(CROSS_PROCESS_LOOK);
            let _ = tokio::time::timeout(nap, self.watch.changed()).await;
            let end = *self.watch.borrow_and_update();
            if end > self.position || self.last_fetch.elapsed() >= CROSS_PROCESS_LOOK {
                let recs = self.fetch(max).await?;
                if !recs.is_empty() {
                    return Ok(recs);
                }
            }
        }
    }
}
