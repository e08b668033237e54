//! The exporter: one task per partition reads the recipient streams,
//! turns events into rows, and rolls them into Parquet files.
//!
//! Exactly once, without relying on the log's transactions: the position
//! in each input only moves in the store write that records the files
//! holding every row read up to it (the manifest). A roll:
//! 1. commits a `staged` note naming the files, then writes them under
//!    staging names no reader globs (`_staging/...`);
//! 2. commits the manifest row, the positions, the join's state and the
//!    note turned `publishing`, in one store write;
//! 3. renames each file to its place, then deletes the note.
//!
//! A crash before 2 leaves staged files only: the restart deletes them
//! and reads the rows again from the unmoved positions. A crash after 2
//! leaves the renames to finish: the restart does them. Rows in memory
//! between rolls are simply read again. So no file is half-visible, and no
//! row is in two files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clarion_domain::event::Payload;
use clarion_domain::Event;
use clarion_log::EventLog;
use clarion_runtime::{Clock, Topic, Topics};
use clarion_store::{Scan, Store, WriteBatch};
use tokio::sync::watch;

use crate::destination::{Destination, STAGING};
use crate::encode;
use crate::pii::Recipients;
use crate::rows::{self, AttemptInfo, Outcome, Row};
use crate::state::{self, FileEntry, Keys, ManifestEntry, Staged};
use crate::WarehouseError;

/// The streams the tables are made of: engagement and delivery receipts
/// (on the recipient's trigger stream), run ends, send requests, outcomes.
pub const INPUTS: [Topic; 4] = [
    Topic::Triggers,
    Topic::Notifications,
    Topic::Dispatch,
    Topic::Deliveries,
];

/// The state name of the live exporter (`clarion run exporter`).
pub const LIVE: &str = "exporter";

/// An outcome whose request was not read within this long is written with
/// what it says alone (a request from before the exporter existed).
const WAITING_LIMIT_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// A row is in a published file within about this long (ms).
    pub max_file_age_ms: i64,
    /// A roll happens once this many rows are buffered.
    pub max_file_rows: usize,
    /// ... or this many bytes (estimated, before compression).
    pub max_file_bytes: usize,
    /// Most records read from one input at a time.
    pub max_batch: usize,
    /// How long an idle read waits.
    pub poll_wait: Duration,
    /// How long a live exporter lets records gather after a pass that
    /// filled no input's batch (`runtime.follower-linger-ms`): fewer, larger
    /// reads of the log the spine is writing.
    pub linger: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        ExporterConfig {
            max_file_age_ms: 60_000,
            max_file_rows: 1_000_000,
            max_file_bytes: 128 << 20,
            max_batch: 4096,
            poll_wait: Duration::from_millis(100),
            linger: Duration::ZERO,
        }
    }
}

/// The exporter of one partition.
pub struct Exporter {
    name: String,
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    topics: Topics,
    partition: u32,
    clock: Arc<dyn Clock>,
    dest: Destination,
    cfg: ExporterConfig,
    keys: Keys,
    /// Next offset per input: read so far, and as committed.
    positions: [u64; 4],
    committed: [u64; 4],
    seq: u64,
    buffer: Vec<Row>,
    buffer_bytes: usize,
    /// When the oldest buffered row was read (clock time).
    first_row_ms: Option<i64>,
    last_commit_ms: i64,
    /// Requests read since the last roll (stored by it), and the roll's
    /// before (only in memory): outcomes mostly follow their request soon.
    attempts: HashMap<(String, String), AttemptInfo>,
    previous: HashMap<(String, String), AttemptInfo>,
    /// Outcomes read before their request, and which changed since the roll.
    waiting: HashMap<(String, String), Vec<Outcome>>,
    waiting_changed: Vec<(String, String)>,
    /// Rows in files published by this exporter since it was made.
    rows_written: u64,
    /// Turns send addresses into the `recipient` column; without it the
    /// column is null (never a clear address).
    recipients: Option<Arc<Recipients>>,
}

impl Exporter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        topics: Topics,
        partition: u32,
        clock: Arc<dyn Clock>,
        dest: Destination,
        cfg: ExporterConfig,
    ) -> Exporter {
        Exporter {
            name: name.to_string(),
            keys: Keys::new(name, partition),
            log,
            store,
            topics,
            partition,
            clock,
            dest,
            cfg,
            positions: [0; 4],
            committed: [0; 4],
            seq: 0,
            buffer: Vec::new(),
            buffer_bytes: 0,
            first_row_ms: None,
            last_commit_ms: 0,
            attempts: HashMap::new(),
            previous: HashMap::new(),
            waiting: HashMap::new(),
            waiting_changed: Vec::new(),
            rows_written: 0,
            recipients: None,
        }
    }

    /// Fills `messages.recipient` with keyed hashes of the send addresses
    /// (see [`crate::pii`]).
    pub fn with_recipients(mut self, recipients: Arc<Recipients>) -> Exporter {
        self.recipients = Some(recipients);
        self
    }

    /// Runs until `shutdown`, starting over from the store after an error
    /// (with backoff): what was only in memory is read again.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), WarehouseError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.run_once(&mut shutdown, None, &mut |_| {}).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    metrics::counter!("clarion_warehouse_errors_total").increment(1);
                    tracing::warn!(partition = self.partition, error = %e, "warehouse exporter failed; starting over from its last roll");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Exports up to `ends` (next offsets per input, in [`INPUTS`] order),
    /// then rolls what is left and returns the rows written; `progress`
    /// hears of each record read. For `clarion warehouse backfill`.
    pub async fn run_to(
        mut self,
        ends: [u64; 4],
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, WarehouseError> {
        let (_tx, mut rx) = watch::channel(false);
        self.run_once(&mut rx, Some(ends), progress).await?;
        Ok(self.rows_written)
    }

    /// Sets the stored positions (in [`INPUTS`] order) before a run.
    pub async fn reset_positions(&self, from: [u64; 4]) -> Result<(), WarehouseError> {
        let mut w = WriteBatch::new();
        for (t, pos) in INPUTS.iter().zip(from) {
            w.put(self.keys.position(t.base_name()), state::u64_bytes(pos));
        }
        self.store.write(w).await?;
        Ok(())
    }

    async fn run_once(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        ends: Option<[u64; 4]>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), WarehouseError> {
        self.start().await?;
        let mut subs = Vec::new();
        for (i, t) in INPUTS.iter().enumerate() {
            let name = self.topics.name(*t);
            subs.push(
                self.log
                    .subscribe(&name, self.partition, self.positions[i])
                    .await?,
            );
        }
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let (mut read, mut filled) = (0, false);
            for (i, sub) in subs.iter_mut().enumerate() {
                let end = ends.map_or(u64::MAX, |e| e[i]);
                if self.positions[i] >= end {
                    continue;
                }
                // Only the last input waits, and only when the others were idle.
                let wait = if i + 1 == INPUTS.len() && read == 0 && ends.is_none() {
                    self.cfg.poll_wait
                } else {
                    Duration::ZERO
                };
                let max = self.cfg.max_batch.min((end - self.positions[i]) as usize);
                let recs = sub.next_batch(max, wait).await?;
                read += recs.len();
                filled |= recs.len() >= max;
                for r in recs {
                    if r.offset >= end {
                        break;
                    }
                    // Most records make no row (triggers, routing, config):
                    // their payloads are not decoded.
                    if Event::peek_type(&r.value).is_some_and(|t| !makes_rows(t)) {
                        self.positions[i] = r.offset + 1;
                        progress(1);
                        continue;
                    }
                    let e = Event::decode_bytes(r.value).map_err(|e| {
                        WarehouseError::Poison(format!(
                            "{} partition {} offset {}: {e}",
                            INPUTS[i], self.partition, r.offset
                        ))
                    })?;
                    self.apply(&e).await?;
                    self.positions[i] = r.offset + 1;
                    progress(1);
                }
            }
            let done = ends.is_some_and(|e| self.positions.iter().zip(e).all(|(p, e)| *p >= e));
            if done {
                self.roll().await?;
                return Ok(());
            }
            if self.roll_due() {
                self.roll().await?;
            }
            if read == 0 && ends.is_some() {
                tokio::time::sleep(self.cfg.poll_wait).await;
            } else if read > 0 && !filled && ends.is_none() && !self.cfg.linger.is_zero() {
                tokio::time::sleep(self.cfg.linger).await;
            }
        }
    }

    /// Loads the state: finishes or undoes a roll a crash interrupted,
    /// then reads positions, the sequence and the waiting outcomes.
    async fn start(&mut self) -> Result<(), WarehouseError> {
        self.recover().await?;
        for (i, t) in INPUTS.iter().enumerate() {
            let pos = self.store.get(&self.keys.position(t.base_name())).await?;
            self.positions[i] = pos.map_or(0, |b| state::u64_of(&b));
        }
        self.committed = self.positions;
        self.seq = self
            .store
            .get(&self.keys.seq())
            .await?
            .map_or(0, |b| state::u64_of(&b));
        self.buffer.clear();
        self.buffer_bytes = 0;
        self.first_row_ms = None;
        self.attempts.clear();
        self.previous.clear();
        self.waiting.clear();
        self.waiting_changed.clear();
        let rows = self
            .store
            .scan(&Scan::partition(
                clarion_store::Table::Warehouse,
                clarion_store::SYSTEM_TENANT,
                &self.keys.waiting_pk(),
                usize::MAX,
            ))
            .await?;
        for (ck, v) in rows {
            let key = String::from_utf8_lossy(&ck).to_string();
            let Some((tenant, attempt)) = key.split_once('\u{0}') else {
                continue;
            };
            let outcomes: Vec<Outcome> = serde_json::from_slice(&v)?;
            self.waiting
                .insert((tenant.into(), attempt.into()), outcomes);
        }
        self.last_commit_ms = self.clock.now_ms();
        Ok(())
    }

    /// A roll interrupted by a crash: staged files are deleted, published
    /// ones finish moving (see the module docs).
    async fn recover(&mut self) -> Result<(), WarehouseError> {
        if let Some(raw) = self.store.get(&self.keys.staged()).await? {
            let staged: Staged = serde_json::from_slice(&raw)?;
            for f in &staged.files {
                if staged.state == "publishing" {
                    self.dest.rename(&f.staging, &f.path).await?;
                } else {
                    self.dest.delete(&f.staging).await?;
                }
            }
            tracing::info!(partition = self.partition, state = %staged.state, files = staged.files.len(), "warehouse: finished a roll a previous run left");
            let mut w = WriteBatch::new();
            w.delete(self.keys.staged());
            self.store.write(w).await?;
        }
        // Whatever else is staged under this exporter's names was never
        // committed (or was cut short mid-write): its rows are read again.
        let swept = self.dest.sweep_staging(&self.file_prefix()).await?;
        if swept > 0 {
            tracing::info!(
                partition = self.partition,
                files = swept,
                "warehouse: deleted uncommitted staged files"
            );
        }
        Ok(())
    }

    /// The start of this exporter's file names (`exporter-p3-`): no other
    /// exporter's files start with it.
    fn file_prefix(&self) -> String {
        format!("{}-p{}-", self.name, self.partition)
    }

    fn roll_due(&self) -> bool {
        let now = self.clock.now_ms();
        match self.first_row_ms {
            Some(first) => {
                self.buffer.len() >= self.cfg.max_file_rows
                    || self.buffer_bytes >= self.cfg.max_file_bytes
                    || now - first >= self.cfg.max_file_age_ms
            }
            // Events that made no row still move the positions now and then.
            None => {
                self.positions != self.committed
                    && now - self.last_commit_ms >= self.cfg.max_file_age_ms
            }
        }
    }

    /// The rows an event makes (none for most events).
    async fn apply(&mut self, e: &Event) -> Result<(), WarehouseError> {
        match &e.payload {
            Payload::Ended(end) => self.push(rows::notification_row(e, end)),
            Payload::Engaged(g) => self.push(rows::engagement_row(e, g)),
            Payload::DispatchRequested(d) => {
                let key = (e.tenant.as_str().to_string(), d.attempt_id.clone());
                let recipient = match &self.recipients {
                    Some(r) => r.recipient(&e.tenant, d).await?,
                    None => None,
                };
                let info = AttemptInfo::of(d, e.occurred_at_ms, recipient);
                if let Some(outcomes) = self.waiting.remove(&key) {
                    for o in outcomes {
                        self.push(o.row(&info));
                    }
                    self.waiting_changed.push(key.clone());
                }
                self.attempts.insert(key, info);
            }
            _ => {
                if let Some(o) = Outcome::of(e) {
                    self.outcome(o).await?;
                }
            }
        }
        Ok(())
    }

    async fn outcome(&mut self, o: Outcome) -> Result<(), WarehouseError> {
        let key = (o.tenant.clone(), o.attempt_id.clone());
        let known = match self.attempts.get(&key).or_else(|| self.previous.get(&key)) {
            Some(info) => Some(info.clone()),
            None => match self.store.get(&state::attempt_key(&key.0, &key.1)).await? {
                Some(raw) => Some(serde_json::from_slice::<AttemptInfo>(&raw)?),
                None => None,
            },
        };
        match known {
            Some(info) => self.push(o.row(&info)),
            None => {
                self.waiting.entry(key.clone()).or_default().push(o);
                self.waiting_changed.push(key);
            }
        }
        Ok(())
    }

    fn push(&mut self, row: Row) {
        self.buffer_bytes += row.approx_bytes();
        self.buffer.push(row);
        self.first_row_ms.get_or_insert_with(|| self.clock.now_ms());
    }

    /// Outcomes that waited too long for their request are written alone.
    fn expire_waiting(&mut self) {
        let now = self.clock.now_ms();
        let stale: Vec<(String, String)> = self
            .waiting
            .iter()
            .filter(|(_, os)| os.iter().any(|o| now - o.at_ms > WAITING_LIMIT_MS))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            let outcomes = self.waiting.remove(&key).unwrap_or_default();
            for o in outcomes {
                let info = AttemptInfo {
                    provider: o.provider.clone(),
                    requested_at: o.at_ms,
                    ..AttemptInfo::default()
                };
                self.push(o.row(&info));
            }
            self.waiting_changed.push(key);
        }
    }

    /// Writes the buffered rows as files and commits them with the
    /// positions (the module docs say why in this order).
    async fn roll(&mut self) -> Result<(), WarehouseError> {
        self.expire_waiting();
        let now = self.clock.now_ms();
        // The next file's buffer starts the size of this one: grown by
        // doubling, a large buffer was reallocated and copied several times
        // per file (a seventh of the exporter's CPU under the spine's load).
        let next = Vec::with_capacity(self.buffer.len());
        let rows = std::mem::replace(&mut self.buffer, next);
        let n_rows = rows.len() as u64;
        let seq = self.seq;
        let mut files = Vec::new();
        let mut payloads = Vec::new();
        for (i, (group, rows)) in encode::group(rows).into_iter().enumerate() {
            let bytes = encode::parquet_bytes(group.table, &rows)?;
            let file = format!("{}{seq:010}-{i}.parquet", self.file_prefix());
            files.push(FileEntry {
                table: group.table.name().into(),
                tenant: group.tenant.clone(),
                date: group.date.clone(),
                path: format!("{}/{file}", group.dir()),
                staging: format!("{STAGING}/{file}"),
                rows: rows.len() as u64,
                bytes: bytes.len() as u64,
            });
            payloads.push(bytes);
        }
        if !files.is_empty() {
            self.write_staged(seq, &files, "staged").await?;
            for (f, bytes) in files.iter().zip(payloads) {
                self.dest.put(&f.staging, bytes).await?;
            }
        }
        let mut w = WriteBatch::new();
        self.state_writes(&mut w, seq, &files, now)?;
        if !w.is_empty() {
            self.store.write(w).await?;
        }
        for f in &files {
            self.dest.rename(&f.staging, &f.path).await?;
        }
        if !files.is_empty() {
            let mut w = WriteBatch::new();
            w.delete(self.keys.staged());
            self.store.write(w).await?;
            self.seq += 1;
        }
        self.count(&files);
        tracing::debug!(
            partition = self.partition,
            seq,
            rows = n_rows,
            files = files.len(),
            "warehouse roll"
        );
        self.committed = self.positions;
        self.previous = std::mem::take(&mut self.attempts);
        self.buffer_bytes = 0;
        self.first_row_ms = None;
        self.last_commit_ms = now;
        self.rows_written += n_rows;
        Ok(())
    }

    async fn write_staged(
        &self,
        seq: u64,
        files: &[FileEntry],
        state: &str,
    ) -> Result<(), WarehouseError> {
        let staged = Staged {
            state: state.into(),
            seq,
            files: files.to_vec(),
        };
        let mut w = WriteBatch::new();
        w.put(self.keys.staged(), serde_json::to_vec(&staged)?);
        self.store.write(w).await?;
        Ok(())
    }

    /// What commits with a roll's files: manifest, positions, sequence,
    /// the join's state, and the note that publishing is under way.
    fn state_writes(
        &mut self,
        w: &mut WriteBatch,
        seq: u64,
        files: &[FileEntry],
        now: i64,
    ) -> Result<(), WarehouseError> {
        for (i, t) in INPUTS.iter().enumerate() {
            if self.positions[i] != self.committed[i] {
                w.put(
                    self.keys.position(t.base_name()),
                    state::u64_bytes(self.positions[i]),
                );
            }
        }
        if !files.is_empty() {
            let entry = ManifestEntry {
                seq,
                files: files.to_vec(),
                offsets: INPUTS
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        (
                            t.base_name().to_string(),
                            self.committed[i],
                            self.positions[i],
                        )
                    })
                    .collect(),
                written_at_ms: now,
            };
            w.put(self.keys.manifest(seq), serde_json::to_vec(&entry)?);
            w.put(self.keys.seq(), state::u64_bytes(seq + 1));
            let staged = Staged {
                state: "publishing".into(),
                seq,
                files: files.to_vec(),
            };
            w.put(self.keys.staged(), serde_json::to_vec(&staged)?);
        }
        for ((tenant, attempt), info) in &self.attempts {
            w.put_ttl(
                state::attempt_key(tenant, attempt),
                serde_json::to_vec(info)?,
                state::ATTEMPT_TTL,
            );
        }
        for key in std::mem::take(&mut self.waiting_changed) {
            let row = self.keys.waiting(&key.0, &key.1);
            match self.waiting.get(&key) {
                Some(outcomes) => w.put(row, serde_json::to_vec(outcomes)?),
                None => w.delete(row),
            };
        }
        Ok(())
    }

    fn count(&self, files: &[FileEntry]) {
        for f in files {
            let table = f.table().map_or("unknown", |t| t.name());
            metrics::counter!("clarion_warehouse_rows_total", "table" => table).increment(f.rows);
            metrics::counter!("clarion_warehouse_files_total", "table" => table).increment(1);
            metrics::counter!("clarion_warehouse_bytes_total", "table" => table).increment(f.bytes);
        }
    }
}

/// Whether events of this type can make a row (see `Exporter::apply`).
fn makes_rows(event_type: &str) -> bool {
    event_type == "clarion.notification.ended.v1"
        || clarion_domain::event::SEND_FACTS.contains(&event_type)
}
