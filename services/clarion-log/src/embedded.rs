//! The embedded log: one SQLite file, one writer thread with group commit.
//!
//! Records are stored many to a row ([`batch`]): an append becomes one row
//! per partition it touches, built by the appending task.
//!
//! Appends from every task are queued to a single writer thread
//! (`clarion_sqlite::writer`, which the embedded store shares when both are
//! in one file), which takes everything waiting, writes it in one
//! transaction and answers each caller.
//! Under load that turns thousands of small appends into a few large commits;
//! when idle, an append commits alone with no added delay. Readers use their
//! own connections (WAL mode lets them read while the writer writes) and are
//! woken by a per-partition watch channel carrying the end offset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, watch};

use clarion_sqlite::readers::Readers;
use clarion_sqlite::writer::{WriteJob, Writer};

use crate::{Appended, EventLog, LogError, LogRecord, Record, Result, Subscription};

mod batch;
mod keys;
mod migrate;
mod recent;

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 4096;
/// Reader connections for reads outside subscriptions (which have their own).
const READERS: usize = 4;

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
-- Records of one partition, `count` of them from `base_offset` on, all
-- appended at `ts`, framed in `body` (see `batch`). A rowid table: bodies
-- run to several pages, which an index B-tree (WITHOUT ROWID) would copy
-- into its interior pages.
CREATE TABLE IF NOT EXISTS record_batches (
    id INTEGER PRIMARY KEY,
    topic INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    count INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS record_batches_by_offset
    ON record_batches (topic, partition, base_offset);
-- Records by their secondary key (`Record::index`): a notification's events
-- across every topic, as the batch and the position in it; one row per key
-- and append job, further records of it in `more` (see `keys`). Keys lead
-- with the tenant, then a time-ordered id, so appends land near the right
-- edge. (Files from before `more` get the column when opened.)
CREATE TABLE IF NOT EXISTS record_keys (
    idx BLOB NOT NULL,
    batch INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    more BLOB,
    PRIMARY KEY (idx, batch, pos)
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

type Watches = Arc<Mutex<HashMap<(i64, u32), watch::Sender<u64>>>>;

/// What appends share: the next offset of each partition (read from the
/// file on first use, then kept here by the writer thread, the only one
/// that appends) and the watches that wake subscribers.
#[derive(Default)]
struct Tails {
    next: Mutex<HashMap<(i64, u32), u64>>,
    watches: Watches,
    /// The last batches of partitions someone here subscribed to.
    recent: recent::RecentBatches,
}

/// The embedded SQLite log.
pub struct SqliteLog {
    path: String,
    writer: Writer,
    /// Reads outside subscriptions (metadata, group offsets, one-shot
    /// reads, a notification's history by the index).
    readers: Readers,
    topics: Mutex<HashMap<String, TopicMeta>>,
    tails: Arc<Tails>,
    /// Dropped with the log: stops the checkpoint thread.
    _checkpointer: std::sync::mpsc::Sender<()>,
    /// Whether appends compress their batches (`compression=lz4`).
    compress: bool,
}

/// Records to append to one or more topics, as a job of the file's writer.
struct AppendJob {
    tails: Arc<Tails>,
    parts: Vec<AppendPart>,
    /// Each partition this job advanced, with its next offset before.
    undo: Vec<((i64, u32), Option<u64>)>,
    /// The job's index entries, gathered over its parts ([`keys::insert`]).
    keys: Vec<(bytes::Bytes, i64, u32)>,
    /// When its batches were appended (set by the last `apply`).
    ts: i64,
}

/// One topic's records of an [`AppendJob`].
struct AppendPart {
    topic: TopicMeta,
    rows: batch::Split,
    /// The first offset of each of `rows.batches`, once inserted.
    bases: Vec<u64>,
    assigned: Vec<Appended>,
    reply: oneshot::Sender<Result<Vec<Appended>>>,
}

impl WriteJob for AppendJob {
    fn weight(&self) -> usize {
        self.parts.iter().map(|p| p.rows.places.len()).sum()
    }

    fn apply(&mut self, tx: &rusqlite::Transaction<'_>) -> std::result::Result<(), String> {
        let mut next = self.tails.next.lock().expect("log tails lock");
        let mut ins = tx
            .prepare_cached(
                "INSERT OR FAIL INTO record_batches (topic, partition, base_offset, count, ts, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|e| clarion_sqlite::describe(&e))?;
        let ts = now_ms();
        self.ts = ts;
        for part in &mut self.parts {
            for b in &part.rows.batches {
                let k = (part.topic.id, b.partition);
                let base = match next.get(&k) {
                    Some(o) => *o,
                    None => end_of(tx, k.0, b.partition).map_err(|e| e.to_string())?,
                };
                if !self.undo.iter().any(|(u, _)| *u == k) {
                    self.undo.push((k, next.get(&k).copied()));
                }
                // Counted before the insert: a rollback after a failed insert
                // then restores it like any other.
                next.insert(k, base + u64::from(b.count));
                ins.execute(params![k.0, b.partition, base as i64, b.count, ts, &b.body])
                    .map_err(|e| clarion_sqlite::describe(&e))?;
                part.bases.push(base);
                if b.index.is_empty() {
                    continue;
                }
                let id = tx.last_insert_rowid();
                self.keys
                    .extend(b.index.iter().map(|(idx, pos)| (idx.clone(), id, *pos)));
            }
            let (batches, bases) = (&part.rows.batches, &part.bases);
            part.assigned
                .extend(part.rows.places.iter().map(|&(slot, pos)| Appended {
                    partition: batches[slot as usize].partition,
                    offset: bases[slot as usize] + u64::from(pos),
                }));
        }
        keys::insert(tx, &mut self.keys).map_err(|e| clarion_sqlite::describe(&e))?;
        self.keys.clear();
        Ok(())
    }

    fn rolled_back(&mut self) {
        let mut next = self.tails.next.lock().expect("log tails lock");
        for (k, before) in self.undo.drain(..).rev() {
            match before {
                Some(o) => next.insert(k, o),
                None => next.remove(&k),
            };
        }
        for part in &mut self.parts {
            part.bases.clear();
            part.assigned.clear();
        }
        self.keys.clear();
    }

    fn finish(mut self: Box<Self>, outcome: std::result::Result<(), String>) {
        if outcome.is_ok() {
            crate::count_appended(self.weight());
            // Everything in `next` is committed now (finish runs after the
            // group's commit), so waking at its current end is safe; the
            // batches of watched partitions are kept for their readers
            // first, so that a reader woken finds them.
            let next = self.tails.next.lock().expect("log tails lock");
            let w = self.tails.watches.lock().expect("watch lock");
            let ts = self.ts;
            for part in &mut self.parts {
                for (b, &base) in part.rows.batches.iter_mut().zip(&part.bases) {
                    let k = (part.topic.id, b.partition);
                    if w.contains_key(&k) {
                        let body = bytes::Bytes::from(std::mem::take(&mut b.body));
                        self.tails.recent.push(
                            k,
                            recent::Recent {
                                base,
                                count: b.count,
                                ts,
                                body,
                            },
                        );
                    }
                }
            }
            for (k, _) in &self.undo {
                if let (Some(s), Some(end)) = (w.get(k), next.get(k)) {
                    s.send_replace(*end);
                }
            }
        }
        for part in self.parts {
            let answer = outcome
                .clone()
                .map(|()| part.assigned)
                .map_err(LogError::from_writer);
            let _ = part.reply.send(answer);
        }
    }
}

/// What a `sqlite://` URL's query sets.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// `sync=full`: fsync every commit (the default, `sync=normal`, syncs
    /// at checkpoints: a power cut may lose the last commits, a crash not).
    sync_full: bool,
    /// `compression=lz4`: store new record batches compressed
    /// (`compression=none`, the default, stores them plain). Files may mix
    /// both; reads take either.
    compress: bool,
}

/// Splits `path[?k=v&...]` into the file's path and its [`Options`].
fn parse_path(url: &str) -> Result<(String, Options)> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let mut o = Options::default();
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        let bad = |problem: &str| LogError::BadUrlParam {
            param: kv.split('=').next().unwrap_or(kv).to_string(),
            problem: problem.to_string(),
        };
        match kv.split_once('=') {
            Some(("sync", v)) => {
                o.sync_full = match v {
                    "full" => true,
                    "normal" => false,
                    _ => return Err(bad("must be full or normal")),
                }
            }
            Some(("compression", v)) => {
                o.compress = match v {
                    "lz4" => true,
                    "none" => false,
                    _ => return Err(bad("must be lz4 or none")),
                }
            }
            _ => return Err(bad("unknown (the SQLite log takes sync and compression)")),
        }
    }
    Ok((path.to_string(), o))
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path`, which may carry
    /// `?sync=full` to fsync every commit and `compression=lz4` to
    /// compress record batches ([`Options`]).
    pub fn open(path: &str) -> Result<SqliteLog> {
        let (path, options) = parse_path(path)?;
        let mut conn = clarion_sqlite::connect_writer(&path).map_err(storage)?;
        let tx = conn.transaction().map_err(storage)?;
        tx.execute_batch(SCHEMA).map_err(storage)?;
        migrate::from_record_rows(&tx).map_err(storage)?;
        migrate::record_keys_more(&tx).map_err(storage)?;
        tx.commit().map_err(storage)?;
        if options.sync_full {
            conn.execute_batch("PRAGMA synchronous=FULL;")
                .map_err(storage)?;
        }
        let writer =
            Writer::spawn(conn, &path, "clarion-log-writer", MAX_GROUP).map_err(storage)?;
        let readers = Readers::open(&path, READERS).map_err(storage)?;
        let checkpointer =
            clarion_sqlite::spawn_checkpointer(&path, "clarion-log-ckpt").map_err(storage)?;
        Ok(SqliteLog {
            path,
            writer,
            readers,
            topics: Mutex::default(),
            tails: Arc::default(),
            _checkpointer: checkpointer,
            compress: options.compress,
        })
    }

    /// The file's writer. The embedded store can share it
    /// (`SqliteStore::open_with_writer`), so that a processor's state and
    /// the events it emits commit in one transaction.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// An append as a job for [`SqliteLog::writer`], to commit in one
    /// transaction with other jobs ([`clarion_sqlite::writer::Together`]).
    /// The receiver answers once the job's transaction committed or failed.
    pub async fn append_job(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<(Box<dyn WriteJob>, oneshot::Receiver<Result<Vec<Appended>>>)> {
        let (job, mut rxs) = self.append_jobs(vec![(topic.to_string(), records)]).await?;
        Ok((job, rxs.pop().expect("one receiver per topic")))
    }

    /// Appends to several topics as one job (see [`SqliteLog::append_job`]),
    /// with a receiver per topic, in order. A key's records across the
    /// topics share one index row ([`keys`]).
    pub async fn append_jobs(
        &self,
        appends: Vec<(String, Vec<Record>)>,
    ) -> Result<(
        Box<dyn WriteJob>,
        Vec<oneshot::Receiver<Result<Vec<Appended>>>>,
    )> {
        let mut parts = Vec::with_capacity(appends.len());
        let mut rxs = Vec::with_capacity(appends.len());
        for (topic, records) in appends {
            let topic = self.topic(&topic).await?;
            let (reply, rx) = oneshot::channel();
            parts.push(AppendPart {
                topic,
                rows: batch::split(records, topic.partitions, self.compress),
                bases: Vec::new(),
                assigned: Vec::new(),
                reply,
            });
            rxs.push(rx);
        }
        Ok((
            Box::new(AppendJob {
                tails: self.tails.clone(),
                parts,
                undo: Vec::new(),
                keys: Vec::new(),
                ts: 0,
            }),
            rxs,
        ))
    }

    /// Runs a write on the file's writer thread (the only connection that
    /// writes, so it never meets a lock held by another and sleeps in
    /// SQLite's busy handler).
    async fn write_op<T: Send + 'static>(
        &self,
        f: impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.writer.call(false, f, move |answer| {
            let _ = reply.send(answer.map_err(LogError::from_writer));
        });
        rx.await
            .map_err(|_| LogError::Unavailable("log writer stopped".into()))?
    }

    /// Runs a read on a reader connection ([`Readers::read`]: a `small`
    /// one inline when a connection is free).
    async fn read_op<T: Send + 'static>(
        &self,
        small: bool,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.readers.read(small, f).await.map_err(storage)?
    }

    async fn topic(&self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self.topics.lock().expect("topics lock").get(name) {
            return Ok(*t);
        }
        let n = name.to_string();
        let t = self
            .read_op(true, move |c| {
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
        let mut w = self.tails.watches.lock().expect("watch lock");
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
    // From the batch that holds `from` on; each batch holds at least one
    // record, so `max` batches are always enough.
    let mut stmt = conn
        .prepare_cached(
            "SELECT base_offset, ts, body FROM record_batches
             WHERE topic = ?1 AND partition = ?2 AND base_offset >= COALESCE(
                 (SELECT MAX(base_offset) FROM record_batches
                  WHERE topic = ?1 AND partition = ?2 AND base_offset <= ?3), 0)
             ORDER BY base_offset LIMIT ?4",
        )
        .map_err(storage)?;
    let mut rows = stmt
        .query(params![topic, partition, from as i64, max as i64])
        .map_err(storage)?;
    let mut out = Vec::with_capacity(max.min(1024));
    while let Some(r) = rows.next().map_err(storage)? {
        let (base, ts): (i64, i64) = (r.get(0).map_err(storage)?, r.get(1).map_err(storage)?);
        let body: Vec<u8> = r.get(2).map_err(storage)?;
        if push_batch(&mut out, partition, base as u64, ts, body.into(), from, max)? {
            break;
        }
    }
    Ok(out)
}

/// Appends the records of a stored batch (`base`, `ts`, `body`) from offset
/// `from` on to `out`, until it holds `max`; whether it does.
fn push_batch(
    out: &mut Vec<LogRecord>,
    partition: u32,
    base: u64,
    ts: i64,
    body: bytes::Bytes,
    from: u64,
    max: usize,
) -> Result<bool> {
    let mut frames = batch::frames(body)?;
    let skipped = from.saturating_sub(base);
    frames.skip_records(skipped as usize)?;
    for (offset, frame) in (base + skipped..).zip(frames) {
        let (key, value) = frame?;
        out.push(LogRecord {
            partition,
            offset,
            key,
            value,
            timestamp_ms: ts,
        });
        if out.len() == max {
            return Ok(true);
        }
    }
    Ok(false)
}

fn end_of(conn: &Connection, topic: i64, partition: u32) -> Result<u64> {
    let end: Option<i64> = conn
        .query_row(
            "SELECT base_offset + count FROM record_batches
             WHERE topic = ?1 AND partition = ?2 ORDER BY base_offset DESC LIMIT 1",
            params![topic, partition],
            |r| r.get(0),
        )
        .optional()
        .map_err(storage)?;
    Ok(end.map(|e| e as u64).unwrap_or(0))
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
            .write_op(move |c| {
                c.execute(
                    "INSERT INTO topics (name, partitions) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                    params![name, partitions],
                )?;
                c.query_row(
                    "SELECT partitions FROM topics WHERE name = ?1",
                    [&name],
                    |r| r.get::<_, u32>(0),
                )
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
        let (job, rx) = self.append_job(topic, records).await?;
        self.writer.submit(job);
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
        self.read_op(false, move |c| read_range(c, t.id, partition, from, max))
            .await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        let t = self.checked(topic, partition).await?;
        self.read_op(true, move |c| end_of(c, t.id, partition))
            .await
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
            tails: self.tails.clone(),
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
        self.write_op(move |c| {
            c.execute(
                "INSERT INTO group_offsets (grp, topic, partition, next_offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(grp, topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                params![group, t.id, partition, next_offset as i64],
            )
            .map(|_| ())
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
        self.read_op(true, move |c| {
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

    fn keeps_index(&self) -> bool {
        true
    }

    async fn read_indexed(&self, index: &[u8]) -> Result<Option<Vec<(String, LogRecord)>>> {
        let idx = index.to_vec();
        self.read_op(false, move |c| read_index(c, &idx).map(Some))
            .await
    }
}

/// The records under `idx` in `record_keys`, with their topic names, in
/// topic, partition and offset order.
fn read_index(conn: &Connection, idx: &[u8]) -> Result<Vec<(String, LogRecord)>> {
    let mut stmt = conn
        .prepare_cached("SELECT batch, pos, more FROM record_keys WHERE idx = ?1")
        .map_err(storage)?;
    let mut rows = stmt.query(params![idx]).map_err(storage)?;
    let mut places = Vec::new();
    while let Some(r) = rows.next().map_err(storage)? {
        let first: (i64, u32) = (r.get(0).map_err(storage)?, r.get(1).map_err(storage)?);
        let more: Option<Vec<u8>> = r.get(2).map_err(storage)?;
        places.extend(
            keys::places(first, more.as_deref()).ok_or_else(|| {
                storage(format!("record_keys.more of batch {} is damaged", first.0))
            })?,
        );
    }
    places.sort_unstable();
    places.dedup();
    let mut batch_stmt = conn
        .prepare_cached(
            "SELECT t.name, b.topic, b.partition, b.base_offset, b.ts, b.body
             FROM record_batches b JOIN topics t ON t.id = b.topic
             WHERE b.id = ?1",
        )
        .map_err(storage)?;
    let mut out = Vec::with_capacity(places.len());
    for same_batch in places.chunk_by(|a, b| a.0 == b.0) {
        let id = same_batch[0].0;
        let (name, topic, partition, base, ts, body): (String, i64, u32, i64, i64, Vec<u8>) =
            batch_stmt
                .query_row(params![id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .map_err(storage)?;
        let mut frames = batch::frames(bytes::Bytes::from(body))?;
        let mut at = 0;
        for &(_, pos) in same_batch {
            frames.skip_records(pos as usize - at)?;
            let (key, value) = frames
                .next()
                .ok_or_else(|| storage(format!("batch at {base} has no record {pos}")))??;
            at = pos as usize + 1;
            out.push((
                (topic, partition, base + i64::from(pos)),
                name.clone(),
                LogRecord {
                    partition,
                    offset: (base + i64::from(pos)) as u64,
                    key,
                    value,
                    timestamp_ms: ts,
                },
            ));
        }
    }
    out.sort_by_key(|(order, _, _)| *order);
    Ok(out.into_iter().map(|(_, name, r)| (name, r)).collect())
}

/// How stale a subscription's last read may get before it reads without a
/// signal (for appends by other processes).
const CROSS_PROCESS_LOOK: Duration = Duration::from_millis(250);

struct SqliteSubscription {
    conn: Arc<Mutex<Connection>>,
    tails: Arc<Tails>,
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
        let recs = match self.tails.recent.from((topic, partition), from, max) {
            Some(batches) => {
                let mut out = Vec::with_capacity(max.min(1024));
                for b in batches {
                    if push_batch(&mut out, partition, b.base, b.ts, b.body, from, max)? {
                        break;
                    }
                }
                out
            }
            None => read_range(&conn.lock().expect("sub lock"), topic, partition, from, max)?,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_takes_sync_and_compression_and_nothing_else() {
        assert_eq!(
            parse_path("/d/clarion.db").unwrap(),
            ("/d/clarion.db".to_string(), Options::default())
        );
        assert_eq!(
            parse_path("/d/c.db?sync=full&compression=lz4").unwrap(),
            (
                "/d/c.db".to_string(),
                Options {
                    sync_full: true,
                    compress: true
                }
            )
        );
        for (url, param) in [
            ("/d/c.db?sync=sometimes", "sync"),
            ("/d/c.db?compression=zstd", "compression"),
            ("/d/c.db?sync=full&cache=big", "cache"),
            ("/d/c.db?compression", "compression"),
        ] {
            match parse_path(url) {
                Err(LogError::BadUrlParam { param: p, problem }) => {
                    assert_eq!(p, param, "{url}");
                    assert!(!problem.is_empty());
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
