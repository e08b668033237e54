//! The partition runner: the exactly-once loop described in the crate docs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clarion_domain::Event;
use clarion_log::{EventLog, LogRecord};
use clarion_store::{RowKey, Scan, Store, Table, WriteBatch, SYSTEM_TENANT};
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::colocated::{records_by_topic, Colocated};
use crate::outbox::OutboxEntry;
use crate::overlay::Overlay;
use crate::processor::{Batch, Effects, Emit, Input, ProcessError, Processor};
use crate::quarantine::{self, PartitionReport, PartitionState, Stop};
use crate::telemetry::{self, Parent};
use crate::timers;
use crate::topics::{Topic, Topics};

/// How often a runner with timers looks for due ones (and at least once per
/// idle poll).
const TIMER_CHECK_EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Most records applied in one commit.
    pub max_batch: usize,
    /// How long one poll of the log waits for records.
    pub poll_wait: Duration,
    /// How long a follower's reader waits after a batch that did not fill
    /// `max_batch` (see `Processor::follows`); on-path processors ignore it.
    pub linger: Duration,
    /// How long applied event ids are remembered. Duplicates come from
    /// republished outboxes and producer retries, i.e. within minutes.
    pub dedup_ttl: Duration,
    /// Effects run concurrently up to this many (across the batches whose
    /// effects are outstanding).
    pub effect_concurrency: usize,
    /// Committed batches whose effects may still be running before the
    /// runner waits for one to finish (backpressure; see `complete`).
    pub max_outstanding_batches: usize,
    /// How often the position is mirrored to the log's consumer group (for
    /// lag monitoring with standard Kafka tools; the store's copy is the truth).
    pub group_commit_every: Duration,
    /// Retries of an error that may clear (a store or log error) before the
    /// partition stops at the record it was applying. A full disk is
    /// retried for as long as it lasts.
    pub retry_limit: u32,
    /// Longest wait between two retries (they start at 100 ms and double).
    pub retry_backoff_max: Duration,
    /// How often a stopped partition looks whether its record was parked.
    pub quarantine_poll: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            // The binary's `runtime.max-batch` default too; why 4,096: its docs.
            max_batch: 4096,
            poll_wait: Duration::from_millis(100),
            linger: Duration::ZERO,
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            effect_concurrency: 64,
            max_outstanding_batches: 64,
            group_commit_every: Duration::from_secs(2),
            retry_limit: 8,
            retry_backoff_max: Duration::from_secs(5),
            quarantine_poll: Duration::from_millis(500),
        }
    }
}

/// Runs one processor over one partition of one topic.
pub struct PartitionRunner<P: Processor> {
    processor: P,
    effects: Arc<dyn Effects>,
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    topics: Topics,
    /// Input topics; the first is the primary (it names timers and is waited
    /// on when idle). One runner per partition reads all of them, so the
    /// processor's state for that partition has a single writer.
    inputs: Vec<Topic>,
    partition: u32,
    clock: Arc<dyn Clock>,
    cfg: RunnerConfig,
    key: String,
    /// Next offset to decide, per input.
    positions: HashMap<Topic, u64>,
    /// Next offset after what has committed, per input (what is mirrored to
    /// the log's consumer group).
    committed_positions: HashMap<Topic, u64>,
    last_group_commit: Option<Instant>,
    last_timer_check: Option<Instant>,
    /// Set when the log and the store share one SQLite file: emits then
    /// commit with the batch instead of going through the outbox.
    colocated: Option<Arc<Colocated>>,
    /// Outbox entries whose effects are running (see `complete`).
    outstanding: JoinSet<Result<(), ProcessError>>,
    /// Bounds the effects running at once, across outstanding entries.
    effect_permits: Arc<Semaphore>,
    /// Makes a fresh processor: with it, `run` survives errors (see
    /// [`PartitionRunner::with_restart`]); without it, it returns them.
    restart: Option<Restart<P>>,
    report: PartitionReport,
    /// Offsets an operator parked, per input: skipped.
    parked: HashMap<Topic, BTreeSet<u64>>,
    /// The input being decided (a failure's place).
    deciding: Option<Topic>,
    /// A record that could not be decoded after a batch's good prefix: the
    /// prefix commits, then the runner stops here.
    poisoned: Option<(Topic, ProcessError)>,
    /// An input the processor refused, after others of its batch: the next
    /// attempt applies the batch up to it (a fresh processor, the failed
    /// batch's changes gone), commits that, then stops at it.
    refused: Option<(Topic, u64, String)>,
    /// Set while the runner waits for storage (reported as paused).
    paused: bool,
    /// After an error kept failing a batch: applies one record a batch up
    /// to this offset, so the record that fails is the one it stops at.
    narrow_until: Option<u64>,
    /// A batch committed since the last error (retries count afresh).
    progressed: bool,
    /// Seals the personal fields of what the processor emits (issue #32).
    personal: Option<Arc<crate::personal::Personal>>,
    /// Claims a fencing epoch when it starts (see [`PartitionRunner::with_fencing`]).
    fencing: bool,
    /// The epoch claimed: every commit is guarded by it.
    fence: Option<Bytes>,
}

/// Clustering key of a partition's owner epoch, beside its position.
const FENCE_CK: &[u8] = b"owner";

/// Makes the processor afresh after an error (its in-memory state may hold
/// a batch that did not commit).
pub type Restart<P> = Arc<dyn Fn() -> P + Send + Sync>;

/// How `run` treats an error.
enum Failure {
    /// The partition cannot get past this record: stop until it is parked.
    Stop(Topic, u64, String),
    /// Storage is full: wait for space, however long.
    Full(String),
    /// May clear: retry, then stop after `retry_limit`.
    Transient(String),
}

/// A decided batch: everything its commit writes and what to do after.
struct Decided {
    topic: Topic,
    last: u64,
    /// Inputs applied (after dedup).
    applied: usize,
    started: Instant,
    decided: Instant,
    /// Shared with the writer's job and, while it commits, the next batch's
    /// [`Overlay`].
    writes: Arc<WriteBatch>,
    /// Emits that commit with the batch (colocated), and every emit's bytes.
    commit_emits: Vec<Emit>,
    encoded: Vec<Bytes>,
    /// What remains after the commit (in the batch's outbox row if any).
    pending: OutboxEntry,
    outbox_key: String,
    outbox_ck: Vec<u8>,
    /// The outputs' trace spans, reported once the batch commits (empty
    /// unless tracing is on, [`telemetry`]).
    spans: Vec<telemetry::Pending>,
}

/// What the input readers send: batches of an input's partition.
type Batches = tokio::sync::mpsc::Receiver<(Topic, clarion_log::Result<Vec<LogRecord>>)>;

/// A batch handed to the writer whose commit has not been seen yet.
struct InFlight {
    decided: Decided,
    submitted: Instant,
    commit: CommitFuture,
}

/// A batch's commit, resolving once it committed (or failed).
type CommitFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ProcessError>> + Send>>;

/// Store key of a processor partition's position.
pub fn offset_key(processor: &str, topic_name: &str, partition: u32) -> RowKey {
    RowKey::new(
        Table::ProcessorOffsets,
        SYSTEM_TENANT,
        &format!("{processor}/{topic_name}/{partition}"),
        Vec::new(),
    )
}

/// The stored next offset of a processor partition (0 if it never committed).
pub async fn stored_offset(
    store: &dyn Store,
    processor: &str,
    topic_name: &str,
    partition: u32,
) -> Result<u64, ProcessError> {
    Ok(store
        .get(&offset_key(processor, topic_name, partition))
        .await?
        .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

impl<P: Processor> PartitionRunner<P> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        processor: P,
        effects: Arc<dyn Effects>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        topics: Topics,
        topic: Topic,
        partition: u32,
        clock: Arc<dyn Clock>,
        cfg: RunnerConfig,
    ) -> Self {
        let key = format!("{}/{}/{}", processor.name(), topics.name(topic), partition);
        let effect_permits = Arc::new(Semaphore::new(cfg.effect_concurrency.max(1)));
        Self {
            processor,
            effects,
            log,
            store,
            topics,
            inputs: vec![topic],
            partition,
            clock,
            cfg,
            key,
            positions: HashMap::new(),
            committed_positions: HashMap::new(),
            last_group_commit: None,
            last_timer_check: None,
            colocated: None,
            outstanding: JoinSet::new(),
            effect_permits,
            restart: None,
            report: PartitionReport::default(),
            parked: HashMap::new(),
            deciding: None,
            poisoned: None,
            refused: None,
            paused: false,
            narrow_until: None,
            progressed: false,
            personal: None,
            fencing: false,
            fence: None,
        }
    }

    /// Several processes may run this processor (partitions assigned by a
    /// consumer group): the runner claims a new epoch for its partition when
    /// it starts, and each commit applies only while the partition's epoch
    /// is still its own. A process that lost the partition without noticing
    /// (paused past its session, cut off from the group) then fails its next
    /// commit instead of writing after the new owner started, and its
    /// runner stops.
    pub fn with_fencing(mut self) -> Self {
        self.fencing = true;
        self
    }

    /// The row holding the partition's current owner epoch.
    fn fence_key(&self) -> RowKey {
        RowKey::new(
            Table::ProcessorOffsets,
            SYSTEM_TENANT,
            &self.key,
            FENCE_CK.to_vec(),
        )
    }

    /// Claims the next epoch of the partition, retrying a store that is
    /// unavailable until `shutdown` (`false`). Once per ownership, not per
    /// restart: a restarted runner of a process that lost the partition
    /// must not fence the new owner out.
    async fn claim(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let key = self.fence_key();
        loop {
            let claimed = async {
                let current = self
                    .store
                    .get(&key)
                    .await?
                    .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                let next = Bytes::copy_from_slice(&(current + 1).to_be_bytes());
                let mut w = WriteBatch::new();
                w.put(key.clone(), next.clone());
                self.store.write(w).await?;
                Ok::<_, clarion_store::StoreError>((current + 1, next))
            }
            .await;
            match claimed {
                Ok((epoch, bytes)) => {
                    tracing::info!(runner = %self.key, epoch, "partition epoch claimed");
                    self.fence = Some(bytes);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(runner = %self.key, error = %e, "could not claim the partition's epoch; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return false;
            }
        }
    }

    /// Seals personal fields of every emitted event before it is committed
    /// or published (`crate::personal`): the log never holds them in clear.
    pub fn with_personal(mut self, personal: Arc<crate::personal::Personal>) -> Self {
        self.personal = Some(personal);
        self
    }

    /// `run` survives errors: a record it cannot process stops this
    /// partition until an operator parks it (`crate::quarantine`), an error
    /// that may clear is retried with backoff, and after each the runner
    /// starts over from the store with a processor from `make`.
    pub fn with_restart(mut self, make: Restart<P>) -> Self {
        self.restart = Some(make);
        self
    }

    /// Where this runner reports being stopped or paused.
    pub fn with_report(mut self, report: PartitionReport) -> Self {
        self.report = report;
        self
    }

    /// The log and store are `colocated` (the same objects as `log` and
    /// `store`): commit emits in the batch's transaction.
    pub fn with_colocated(mut self, colocated: Arc<Colocated>) -> Self {
        self.colocated = Some(colocated);
        self
    }

    /// Also reads these topics (same partition number), in the same runner.
    pub fn with_inputs(mut self, more: &[Topic]) -> Self {
        for t in more {
            if !self.inputs.contains(t) {
                self.inputs.push(*t);
            }
        }
        self
    }

    fn runner_key(&self, topic: Topic) -> String {
        format!(
            "{}/{}/{}",
            self.processor.name(),
            self.topics.name(topic),
            self.partition
        )
    }

    /// The processor this runner drives (its in-memory state, for tests and
    /// diagnostics).
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// Next offset to apply on the primary input.
    pub fn next_offset(&self) -> u64 {
        self.positions.get(&self.inputs[0]).copied().unwrap_or(0)
    }

    /// Processes until `shutdown` turns true or an error stops it.
    ///
    /// Each input is read by a task of its own that hands batches over a
    /// small channel, so the runner wakes as soon as any input has records
    /// (a router reacts to a delivery outcome at once, not at its next poll
    /// of triggers) and reading the next batch overlaps applying this one.
    /// The channel holds at most a couple of batches: a runner that falls
    /// behind stops its readers rather than buffering the log in memory.
    /// Reads run ahead of the committed position; a restart resumes from
    /// the store's positions and `step_topic` skips what it already applied.
    ///
    /// With [`PartitionRunner::with_restart`], errors do not end it: see
    /// [`PartitionRunner::recover`].
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ProcessError> {
        let mut failures = 0u32;
        if self.fencing && !self.claim(&mut shutdown).await {
            return Ok(());
        }
        loop {
            let mut in_flight = None;
            let outcome = self.run_once(&mut shutdown, &mut in_flight).await;
            // A commit handed to the writer lands or fails before the
            // positions are read again.
            if let Some(f) = in_flight.take() {
                let _ = f.commit.await;
            }
            let e = match outcome {
                Ok(true) => return Ok(()),
                // Reads again in whole batches (see `narrow_until`).
                Ok(false) => {
                    self.reset();
                    continue;
                }
                Err(ProcessError::Store(clarion_store::StoreError::Fenced(reason))) => {
                    // Another process owns the partition now: nothing to retry.
                    tracing::error!(runner = %self.key, %reason, "partition taken over by another process: this runner stops");
                    self.settle().await?;
                    return Ok(());
                }
                Err(e) => e,
            };
            let Some(make) = self.restart.clone() else {
                return Err(e);
            };
            if !self.recover(e, &mut failures, &mut shutdown).await {
                return Ok(());
            }
            self.processor = make();
            self.reset();
        }
    }

    /// Forgets the positions, to start over from the store's.
    fn reset(&mut self) {
        self.positions.clear();
        self.committed_positions.clear();
        self.deciding = None;
        self.poisoned = None;
    }

    /// Decides what an error means for the partition, and waits
    /// accordingly: `false` if shutdown came meanwhile.
    async fn recover(
        &mut self,
        e: ProcessError,
        failures: &mut u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if std::mem::take(&mut self.progressed) {
            *failures = 0;
        }
        let topic = self.deciding.unwrap_or(self.inputs[0]);
        // Where it resumes: the first record not committed.
        let at = self.committed_positions.get(&topic).copied().unwrap_or(0);
        let failure = match e {
            // Refused after inputs that were not committed: commit those
            // first (the next decide stops before it), then stop.
            ProcessError::Poison { offset, .. }
                if offset > at
                    && self
                        .refused
                        .as_ref()
                        .is_some_and(|(t, o, _)| *t == topic && *o == offset) =>
            {
                return true;
            }
            ProcessError::Poison { offset, reason } => Failure::Stop(topic, offset, reason),
            ProcessError::Store(e) if matches!(e, clarion_store::StoreError::Full(_)) => {
                Failure::Full(e.to_string())
            }
            ProcessError::Log(e) if matches!(e, clarion_log::LogError::Full(_)) => {
                Failure::Full(e.to_string())
            }
            other => Failure::Transient(other.to_string()),
        };
        let wait = match failure {
            Failure::Stop(topic, offset, reason) => {
                *failures = 0;
                let parked = self.stay_stopped(topic, offset, reason, shutdown).await;
                self.refused = None;
                return parked;
            }
            Failure::Full(reason) => {
                tracing::warn!(runner = %self.key, offset = at, %reason, "storage full: the partition pauses and retries");
                self.report.set(&self.key, self.state("paused", at, reason));
                self.paused = true;
                *failures = (*failures).min(6) + 1;
                *failures - 1
            }
            // Which record fails? One record a batch finds it (the batch
            // that kept failing holds at most `max_batch` from `at`).
            Failure::Transient(reason)
                if *failures >= self.cfg.retry_limit && self.narrow_until.is_none() =>
            {
                tracing::warn!(runner = %self.key, offset = at, %reason, "still failing: retrying one record at a time");
                self.narrow_until = Some(at + self.cfg.max_batch as u64);
                *failures = self.cfg.retry_limit.saturating_sub(1);
                0
            }
            Failure::Transient(reason) if *failures >= self.cfg.retry_limit => {
                *failures = 0;
                self.narrow_until = None;
                let reason = format!(
                    "{reason} (still failing after {} retries)",
                    self.cfg.retry_limit
                );
                return self.stay_stopped(topic, at, reason, shutdown).await;
            }
            Failure::Transient(reason) => {
                *failures += 1;
                tracing::warn!(runner = %self.key, offset = at, %reason, retry = *failures, "processing failed; retrying");
                *failures - 1
            }
        };
        let backoff = (Duration::from_millis(100) * 2u32.saturating_pow(wait.min(16)))
            .min(self.cfg.retry_backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => !*shutdown.borrow(),
            _ = shutdown.changed() => false,
        }
    }

    fn state(&self, state: &'static str, offset: u64, reason: String) -> PartitionState {
        PartitionState {
            processor: self.processor.name().to_string(),
            topic: self.topics.name(self.inputs[0]),
            partition: self.partition,
            state,
            offset,
            reason,
            since_ms: self.clock.now_ms(),
        }
    }

    /// Stops the partition at `offset` of `topic`: reports it, then waits
    /// until an operator parks that record (`true`) or shutdown (`false`).
    async fn stay_stopped(
        &mut self,
        topic: Topic,
        offset: u64,
        reason: String,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let stop = Stop {
            processor: self.processor.name().to_string(),
            topic: self.topics.name(topic),
            partition: self.partition,
            offset,
            reason,
            stopped_at_ms: self.clock.now_ms(),
        };
        let key = stop.key();
        tracing::error!(
            processor = %stop.processor, topic = %stop.topic, partition = stop.partition,
            offset, reason = %stop.reason,
            "partition stopped at a record it cannot process; the rest goes on. Inspect it with \
             `clarion quarantine show`, and park it with `clarion quarantine park` to go on past it"
        );
        self.paused = false;
        self.report.clear(&self.key);
        self.report.set(
            &self.key,
            PartitionState {
                topic: stop.topic.clone(),
                ..self.state("stopped", offset, stop.reason.clone())
            },
        );
        let mut recorded = false;
        loop {
            if !recorded {
                match quarantine::record_stop(&*self.store, &stop).await {
                    Ok(()) => recorded = true,
                    Err(e) => {
                        tracing::warn!(runner = %key, error = %e, "could not record the stop")
                    }
                }
            }
            match quarantine::parked(&*self.store, &key, offset).await {
                Ok(Some(q)) => {
                    tracing::warn!(runner = %key, offset, note = %q.note, "record parked by an operator: going on past it");
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(runner = %key, error = %e, "could not read the quarantine")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.quarantine_poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return false;
            }
        }
        if let Err(e) = quarantine::clear_stop(&*self.store, &key).await {
            tracing::warn!(runner = %key, error = %e, "could not clear the recorded stop");
        }
        self.report.clear(&self.key);
        true
    }

    /// One incarnation of [`PartitionRunner::run`]: from the stored
    /// positions until shutdown (`true`), the end of a narrowed stretch
    /// (`false`: read again in whole batches) or an error (`in_flight` is
    /// left with the batch still committing, if any).
    async fn run_once(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        in_flight: &mut Option<InFlight>,
    ) -> Result<bool, ProcessError> {
        self.start().await?;
        let narrow = self.narrow_until.is_some();
        let (_readers, mut rx) = self.spawn_readers(narrow).await?;
        tracing::info!(runner = %self.key, from = self.next_offset(), inputs = self.inputs.len(), "processor started");
        // Idle, the runner still wakes every `poll_wait` to fire due timers.
        let tick = self.cfg.poll_wait.max(Duration::from_millis(1));
        // A batch's commit overlaps deciding the next (docs/architecture.md,
        // "Pipelined commits"; on Kafka too, with the store written by a
        // task): at most one batch is in flight, and the next is handed to
        // the writer only after it committed.
        loop {
            if *shutdown.borrow() {
                break;
            }
            if narrow && self.narrow_until.is_none() {
                if let Some(f) = in_flight.take() {
                    self.land(f).await?;
                }
                return Ok(false);
            }
            tokio::select! {
                done = async {
                    match in_flight.as_mut() {
                        Some(f) => (&mut f.commit).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let f = in_flight.take().expect("a batch in flight");
                    done?;
                    self.committed(f.decided, f.submitted).await?;
                }
                got = rx.recv() => match got {
                    Some((topic, recs)) => self.on_batch(topic, recs?, in_flight).await?,
                    None => break,
                },
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => break,
            }
            // Under load batches come every few milliseconds: looking for due
            // timers after each would be a store scan per batch for nothing.
            if self.processor.uses_timers()
                && self
                    .last_timer_check
                    .is_none_or(|t| t.elapsed() >= TIMER_CHECK_EVERY)
            {
                self.last_timer_check = Some(Instant::now());
                // Timers fire from committed rows: with a batch in flight,
                // wait for it only when something is due.
                if let Some(f) = &in_flight {
                    let view = Overlay::new(self.store.clone(), Some(f.decided.writes.clone()));
                    if timers::any_due(&view, &self.key, self.clock.now_ms()).await? {
                        let f = in_flight.take().expect("a batch in flight");
                        self.land(f).await?;
                    }
                }
                if in_flight.is_none() {
                    self.fire_timers().await?;
                }
            }
        }
        if let Some(f) = in_flight.take() {
            self.land(f).await?;
        }
        // A clean stop lets running effects finish (each is bounded by its
        // send timeout) rather than leave them to be redone at the next start.
        self.settle().await?;
        Ok(true)
    }

    /// Starts a task per input reading its partition from the position,
    /// sending batches to the returned channel (one record a batch when
    /// `narrow`). The tasks end with the returned set.
    async fn spawn_readers(
        &self,
        narrow: bool,
    ) -> Result<(tokio::task::JoinSet<()>, Batches), ProcessError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<(Topic, clarion_log::Result<Vec<LogRecord>>)>(
            2 * self.inputs.len(),
        );
        let mut readers = tokio::task::JoinSet::new();
        for t in self.inputs.clone() {
            let from = self.positions.get(&t).copied().unwrap_or(0);
            let mut sub = self
                .log
                .subscribe(&self.topics.name(t), self.partition, from)
                .await?;
            // Narrowed: one record a batch (see `narrow_until`).
            let max = if narrow { 1 } else { self.cfg.max_batch };
            let (tx, max, wait) = (tx.clone(), max, self.cfg.poll_wait);
            let linger = if self.processor.follows() && !narrow {
                self.cfg.linger
            } else {
                Duration::ZERO
            };
            readers.spawn(async move {
                loop {
                    match sub.next_batch(max, wait).await {
                        Ok(recs) if recs.is_empty() => {}
                        Ok(recs) => {
                            let full = recs.len() >= max;
                            if tx.send((t, Ok(recs))).await.is_err() {
                                return; // the runner stopped
                            }
                            if !full && !linger.is_zero() {
                                tokio::time::sleep(linger).await;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send((t, Err(e))).await;
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        Ok((readers, rx))
    }

    /// Decides a batch read from `topic` while the previous one (if any)
    /// commits, then hands it over and acts on the previous one (see
    /// "Pipelined commits").
    async fn on_batch(
        &mut self,
        topic: Topic,
        recs: Vec<LogRecord>,
        in_flight: &mut Option<InFlight>,
    ) -> Result<(), ProcessError> {
        // Apart from the log (Kafka), a crash leaves each input's outbox
        // rows, replayed input by input: a batch of another input waits
        // until the one in flight completed, so replays keep their order.
        if self.colocated.is_none() && in_flight.as_ref().is_some_and(|f| f.decided.topic != topic)
        {
            let f = in_flight.take().expect("a batch in flight");
            self.land(f).await?;
        }
        let view = Overlay::new(
            self.store.clone(),
            in_flight.as_ref().map(|f| f.decided.writes.clone()),
        );
        let next = self.decide(topic, recs, &view).await?;
        drop(view);
        // The previous batch's effects run while this one commits.
        let previous = match in_flight.take() {
            Some(f) => {
                f.commit.await?;
                Some((f.decided, f.submitted))
            }
            None => None,
        };
        if let Some(d) = next {
            *in_flight = Some(self.submit(d).await?);
        }
        if let Some((d, submitted)) = previous {
            self.committed(d, submitted).await?;
        }
        // A record that did not decode after a good prefix: the prefix
        // commits, then it stops.
        if let Some((topic, e)) = self.poisoned.take() {
            if let Some(f) = in_flight.take() {
                self.land(f).await?;
            }
            self.deciding = Some(topic);
            return Err(e);
        }
        Ok(())
    }

    /// Finishes what a previous incarnation committed but did not complete,
    /// and loads the position. Called by `run`; public for tests that drive
    /// `step` by hand.
    pub async fn start(&mut self) -> Result<(), ProcessError> {
        // After an error the runner starts again in the same process: effects
        // of entries it completed may still be running, and their outbox rows
        // are still stored. Let them finish first, or the scan below would
        // run them a second time.
        self.settle().await?;
        for topic in self.inputs.clone() {
            let key = self.runner_key(topic);
            let rows = self
                .store
                .scan(&Scan::partition(
                    Table::Outbox,
                    SYSTEM_TENANT,
                    &key,
                    usize::MAX,
                ))
                .await?;
            for (ck, value) in rows {
                let entry = OutboxEntry::decode(value).map_err(|e| ProcessError::Poison {
                    offset: 0,
                    reason: e.to_string(),
                })?;
                tracing::info!(runner = %key, emits = entry.emits.len(), effects = entry.effects.len(), "completing outbox left by a previous run");
                let encoded = encode_emits(&entry.emits);
                self.complete(&key, ck, &entry, &encoded).await?;
            }
            // What a crash left is done before new work starts.
            self.settle().await?;
            let pos = stored_offset(
                &*self.store,
                self.processor.name(),
                &self.topics.name(topic),
                self.partition,
            )
            .await?;
            self.positions.insert(topic, pos);
            self.committed_positions.insert(topic, pos);
            let parked = quarantine::parked_offsets(&*self.store, &key).await?;
            self.parked.insert(topic, parked);
        }
        Ok(())
    }

    /// Applies one batch of records of the primary input: decide, commit, act.
    /// Returns once its effects finished too.
    pub async fn step(&mut self, recs: Vec<LogRecord>) -> Result<(), ProcessError> {
        let primary = self.inputs[0];
        self.step_topic(primary, recs).await?;
        self.settle().await
    }

    /// Applies one batch of records of input `topic`: decides it, commits
    /// it, then acts on it, one after the other (`run` overlaps a batch's
    /// commit with deciding the next).
    pub async fn step_topic(
        &mut self,
        topic: Topic,
        recs: Vec<LogRecord>,
    ) -> Result<(), ProcessError> {
        let view = Overlay::new(self.store.clone(), None);
        let before = self.positions.get(&topic).copied();
        let Some(d) = self.decide(topic, recs, &view).await? else {
            return Ok(());
        };
        let landed = match self.submit(d).await {
            Ok(f) => f.commit.await.map(|()| (f.decided, f.submitted)),
            Err(e) => Err(e),
        };
        match landed {
            Ok((d, submitted)) => {
                self.committed(d, submitted).await?;
                // A record that did not decode after the batch's good
                // prefix: the prefix committed, the partition stops here.
                match self.poisoned.take() {
                    Some((_, e)) => Err(e),
                    None => Ok(()),
                }
            }
            Err(e) => {
                // A caller may step the same records again: they were not
                // applied.
                match before {
                    Some(pos) => self.positions.insert(topic, pos),
                    None => self.positions.remove(&topic),
                };
                Err(e)
            }
        }
    }

    /// Hands a decided batch to its commit, which starts at once (the answer
    /// is awaited later): on the embedded default to the file's writer;
    /// otherwise to a task writing the store, while the batch's writes stay
    /// readable for deciding the next (`Overlay`).
    async fn submit(&self, mut d: Decided) -> Result<InFlight, ProcessError> {
        let submitted = Instant::now();
        let commit: CommitFuture = match &self.colocated {
            Some(c) => Box::pin(
                c.submit(
                    d.writes.clone(),
                    &self.topics,
                    // Not needed after this (a colocated batch's outbox entry
                    // holds effects only): they move into the records.
                    std::mem::take(&mut d.commit_emits),
                    std::mem::take(&mut d.encoded),
                )
                .await?
                .committed(),
            ),
            None => {
                let writes = WriteBatch::clone(&d.writes);
                let store = self.store.clone();
                let write = tokio::spawn(async move { store.write(writes).await });
                Box::pin(async move {
                    match write.await {
                        Ok(r) => Ok(r?),
                        Err(e) => Err(ProcessError::Store(clarion_store::StoreError::Storage(
                            format!("the commit's task ended: {e}"),
                        ))),
                    }
                })
            }
        };
        Ok(InFlight {
            decided: d,
            submitted,
            commit,
        })
    }

    /// Waits for an in-flight batch's commit, then acts on it.
    async fn land(&mut self, f: InFlight) -> Result<(), ProcessError> {
        f.commit.await?;
        self.committed(f.decided, f.submitted).await
    }

    /// Decides one batch of records of input `topic`, reading state through
    /// `store` (which sees a still-committing batch's writes). `None` if
    /// every record was applied before.
    async fn decide(
        &mut self,
        topic: Topic,
        recs: Vec<LogRecord>,
        store: &Overlay,
    ) -> Result<Option<Decided>, ProcessError> {
        let Some(last) = recs.last().map(|r| r.offset) else {
            return Ok(None);
        };
        let mut last = last;
        let started = Instant::now();
        let traced_from = telemetry::enabled().then(std::time::SystemTime::now);
        self.deciding = Some(topic);
        let next_offset = self.positions.get(&topic).copied().unwrap_or(0);
        let mut inputs = Vec::with_capacity(recs.len());
        let parked = self.parked.get(&topic).filter(|p| !p.is_empty());
        let (mut skipped, mut ignored) = (0, 0u64);
        // The records move into the inputs: each clone or drop of a record's
        // view of its batch is an atomic operation on the batch's counter.
        for r in recs {
            if r.offset < next_offset {
                continue; // re-delivered by the log
            }
            if let Some((t, at, reason)) = &self.refused {
                if *t == topic && r.offset >= *at {
                    let poison = ProcessError::Poison {
                        offset: *at,
                        reason: reason.clone(),
                    };
                    if inputs.is_empty() && skipped == 0 {
                        return Err(poison);
                    }
                    self.poisoned = Some((topic, poison));
                    last = *at - 1;
                    break;
                }
            }
            if parked.is_some_and(|p| p.contains(&r.offset)) {
                tracing::info!(runner = %self.key, offset = r.offset, "skipping a record an operator parked");
                skipped += 1;
                continue;
            }
            // An event we cannot read stops the partition (after what
            // precedes it): skipping it would silently lose a fact; the
            // operator fixes the build, or parks the record
            // (`crate::quarantine`).
            let unwanted =
                |types: &[&str]| Event::peek_type(&r.value).is_some_and(|t| !types.contains(&t));
            if self.processor.accepted_types().is_some_and(unwanted) {
                ignored += 1;
                continue;
            }
            let event = match Event::decode(&r.value) {
                Ok(event) => event,
                Err(e) => {
                    let poison = ProcessError::Poison {
                        offset: r.offset,
                        reason: e.to_string(),
                    };
                    if inputs.is_empty() && skipped == 0 {
                        return Err(poison);
                    }
                    self.poisoned = Some((topic, poison));
                    last = r.offset - 1;
                    break;
                }
            };
            inputs.push(Input {
                offset: r.offset,
                event,
                raw: r.value,
            });
        }
        if skipped > 0 {
            metrics::counter!("clarion_quarantine_skipped_total", "processor" => self.processor.name())
                .increment(skipped);
        }
        if inputs.is_empty() && skipped == 0 && ignored == 0 {
            return Ok(None);
        }

        let mut writes = WriteBatch::new();
        if self.processor.dedup() {
            let before = inputs.len();
            let keys: Vec<RowKey> = inputs.iter().map(|i| self.dedup_key(&i.event)).collect();
            let seen = store.get_many(&keys).await?;
            let mut in_batch = HashSet::new();
            let mut fresh = Vec::with_capacity(inputs.len());
            for ((input, key), seen) in inputs.into_iter().zip(keys).zip(seen) {
                if seen.is_none() && in_batch.insert(input.event.id) {
                    writes.put_ttl(key, Bytes::new(), self.cfg.dedup_ttl);
                    fresh.push(input);
                }
            }
            let dropped = before - fresh.len();
            if dropped > 0 {
                metrics::counter!("clarion_processor_duplicates_total", "processor" => self.processor.name()).increment(dropped as u64);
            }
            inputs = fresh;
        }

        let mut batch = Batch {
            topic: Some(topic),
            partition: self.partition,
            now_ms: self.clock.now_ms(),
            // Processors emit up to about two events an input (a trigger's
            // `Routed` and `DispatchRequested`, a send's `Sent` and
            // `Delivered`): sized once rather than grown, which copied the
            // large `Emit`s again at every doubling.
            emits: Vec::with_capacity(2 * inputs.len()),
            ..Default::default()
        };
        if !inputs.is_empty() {
            if let Err(e) = self.processor.process(store, &mut batch, &inputs).await {
                // A stop names a record of the batch (the one parking skips).
                let e = match e {
                    ProcessError::Poison { offset, reason }
                        if !inputs.iter().any(|i| i.offset == offset) =>
                    {
                        ProcessError::Poison {
                            offset: inputs[0].offset,
                            reason,
                        }
                    }
                    e => e,
                };
                if let ProcessError::Poison { offset, reason } = &e {
                    self.refused = Some((topic, *offset, reason.clone()));
                }
                return Err(e);
            }
        }
        if let Some(p) = &self.personal {
            for emit in &mut batch.emits {
                p.seal_event(&mut emit.event).await?;
            }
        }
        writes.ops.append(&mut batch.writes.ops);

        for (due, emit) in &batch.timers {
            let (key, value) = timers::row(&self.key, *due, emit);
            writes.put(key, value);
        }
        let spans = match traced_from {
            Some(from) => batch
                .emits
                .iter()
                .filter_map(|emit| {
                    telemetry::Pending::of(self.processor.name(), &emit.event, Parent::Cause, from)
                })
                .collect(),
            None => Vec::new(),
        };
        let emits = std::mem::take(&mut batch.emits);
        let effects = std::mem::take(&mut batch.effects);
        // Each output is encoded once, for the outbox row or the append.
        let encoded = encode_emits(&emits);
        // What remains to do after the commit: with the log in the store's
        // file the emits commit with the batch, and only effects remain.
        let colocated = self.colocated.is_some();
        let (commit_emits, pending) = if colocated {
            (
                emits,
                OutboxEntry {
                    emits: Vec::new(),
                    effects,
                },
            )
        } else {
            (Vec::new(), OutboxEntry { emits, effects })
        };
        let outbox_ck = last.to_be_bytes().to_vec();
        let outbox_key = self.runner_key(topic);
        if !pending.is_empty() {
            let pending_encoded: &[Bytes] = if colocated { &[] } else { &encoded };
            writes.put(
                RowKey::new(Table::Outbox, SYSTEM_TENANT, &outbox_key, outbox_ck.clone()),
                pending.encode_with(pending_encoded),
            );
        }
        writes.put(
            offset_key(
                self.processor.name(),
                &self.topics.name(topic),
                self.partition,
            ),
            Bytes::copy_from_slice(&(last + 1).to_be_bytes()),
        );
        if let Some(epoch) = &self.fence {
            writes.guard(self.fence_key(), epoch.clone());
        }
        // The next batch of this input starts after this one, whether or not
        // this one has committed yet (a failed commit stops the runner).
        self.positions.insert(topic, last + 1);
        Ok(Some(Decided {
            topic,
            last,
            applied: inputs.len(),
            started,
            decided: Instant::now(),
            writes: Arc::new(writes),
            commit_emits,
            encoded,
            pending,
            outbox_key,
            outbox_ck,
            spans,
        }))
    }

    /// Acts on a batch that committed: metrics, effects, the mirrored position.
    async fn committed(&mut self, d: Decided, submitted: Instant) -> Result<(), ProcessError> {
        // Where a batch's time goes: deciding it (decode, dedup, process) on
        // this task, then its commit (from handing it to the writer until
        // it committed; in `run` the next batch is decided meanwhile).
        let name = self.processor.name();
        metrics::histogram!("clarion_processor_step_seconds", "processor" => name, "input" => d.topic.base_name(), "phase" => "decide")
            .record((d.decided - d.started).as_secs_f64());
        metrics::histogram!("clarion_processor_step_seconds", "processor" => name, "input" => d.topic.base_name(), "phase" => "commit")
            .record(submitted.elapsed().as_secs_f64());
        self.committed_positions.insert(d.topic, d.last + 1);
        self.progressed = true;
        telemetry::end_all(d.spans);
        if self.narrow_until.is_some_and(|until| d.last >= until) {
            self.narrow_until = None;
        }
        if self.paused {
            self.paused = false;
            self.report.clear(&self.key);
            tracing::info!(runner = %self.key, "storage is back: the partition goes on");
        }
        metrics::counter!("clarion_processor_events_total", "processor" => name)
            .increment(d.applied as u64);
        // Batches per processor: with the events counter, the mean batch size
        // (small batches under load mean per-commit costs dominate).
        metrics::counter!("clarion_processor_batches_total", "processor" => name).increment(1);

        if !d.pending.is_empty() {
            let pending_encoded: &[Bytes] = if self.colocated.is_some() {
                &[]
            } else {
                &d.encoded
            };
            self.complete(&d.outbox_key, d.outbox_ck, &d.pending, pending_encoded)
                .await?;
        }
        self.mirror_position().await;
        Ok(())
    }

    /// Keyed by the notification the event belongs to (its correlation id,
    /// which leads with the notification's creation time) before the event
    /// id: a batch's dedup rows then land next to each other at the end of
    /// the table rather than on as many random pages.
    fn dedup_key(&self, e: &Event) -> RowKey {
        let mut ck = Vec::with_capacity(32);
        if let Some(c) = &e.correlation_id {
            ck.extend_from_slice(&c.0);
        }
        ck.extend_from_slice(&e.id.0);
        RowKey::new(Table::Dedup, e.tenant.as_str(), self.processor.name(), ck)
    }

    /// Publishes an outbox entry's emits, then starts its effects and
    /// returns without waiting for them.
    ///
    /// Why: effects are external sends, and one slow or hanging destination
    /// must not hold the partition (every other tenant's sends behind it).
    /// The exactly-once recipe is unchanged, only the wait moved:
    /// * the batch's state, dedup ids, offset and this outbox row committed
    ///   before anything here runs, and effects carry deterministic attempt
    ///   ids (the idempotency keys providers see);
    /// * emits are published here, in batch order, before the next batch;
    /// * the effects run in a task of their own ([`run_effects`]), which
    ///   publishes what each effect reports as soon as it is done (a fast
    ///   send's `Sent` does not wait for a slow one of the same batch) and
    ///   deletes the row only after the last effect finished and its
    ///   reports were published; entries may so complete out of order;
    /// * a crash leaves the rows of unfinished entries, and `start` runs
    ///   them again, as before;
    /// * at most `max_outstanding_batches` entries run at once: past that
    ///   the runner waits for one to finish (backpressure, bounded memory),
    ///   and `effect_concurrency` bounds the sends across all of them. Each
    ///   send is bounded by its provider's timeout, so a wait here is too.
    async fn complete(
        &mut self,
        outbox_key: &str,
        ck: Vec<u8>,
        entry: &OutboxEntry,
        encoded: &[Bytes],
    ) -> Result<(), ProcessError> {
        publish_encoded(&*self.log, &self.topics, &entry.emits, encoded).await?;
        let row = RowKey::new(Table::Outbox, SYSTEM_TENANT, outbox_key, ck);
        if entry.effects.is_empty() {
            let mut del = WriteBatch::new();
            del.delete(row);
            self.store.write(del).await?;
            return Ok(());
        }
        while let Some(done) = self.outstanding.try_join_next() {
            effects_finished(done)?;
        }
        while self.outstanding.len() >= self.cfg.max_outstanding_batches.max(1) {
            if let Some(done) = self.outstanding.join_next().await {
                effects_finished(done)?;
            }
        }
        self.outstanding.spawn(run_effects(
            EffectRun {
                effects: self.effects.clone(),
                log: self.log.clone(),
                topics: self.topics.clone(),
                store: self.store.clone(),
                permits: self.effect_permits.clone(),
                concurrency: self.cfg.effect_concurrency.max(1),
                now_ms: self.clock.now_ms(),
                processor: self.processor.name(),
            },
            entry.effects.clone(),
            row,
        ));
        Ok(())
    }

    /// Waits until the effects of every completed outbox entry finished.
    pub async fn settle(&mut self) -> Result<(), ProcessError> {
        while let Some(done) = self.outstanding.join_next().await {
            effects_finished(done)?;
        }
        Ok(())
    }

    /// Appends every timer of this partition that is due by the clock.
    pub async fn fire_timers(&self) -> Result<usize, ProcessError> {
        timers::fire_due(
            &*self.store,
            &*self.log,
            self.colocated.as_deref(),
            &self.topics,
            &self.key,
            self.clock.now_ms(),
        )
        .await
    }

    async fn mirror_position(&mut self) {
        if self
            .last_group_commit
            .is_some_and(|t| t.elapsed() < self.cfg.group_commit_every)
        {
            return;
        }
        self.last_group_commit = Some(Instant::now());
        for (topic, pos) in &self.committed_positions {
            if let Err(e) = self
                .log
                .commit_offset(
                    self.processor.name(),
                    &self.topics.name(*topic),
                    self.partition,
                    *pos,
                )
                .await
            {
                tracing::warn!(runner = %self.key, error = %e, "could not mirror position to the log");
            }
        }
    }
}

/// What the effects of one outbox entry run with.
struct EffectRun {
    /// Names the effects' spans.
    processor: &'static str,
    effects: Arc<dyn Effects>,
    log: Arc<dyn EventLog>,
    topics: Topics,
    store: Arc<dyn Store>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    now_ms: i64,
}

/// Runs an outbox entry's effects, publishing reports as they come (those
/// ready together in one append), then deletes the entry's row.
async fn run_effects(run: EffectRun, effects: Vec<Bytes>, row: RowKey) -> Result<(), ProcessError> {
    let EffectRun {
        processor,
        effects: runner,
        log,
        topics,
        store,
        permits,
        concurrency,
        now_ms,
    } = run;
    let mut reports = futures::stream::iter(effects)
        .map(|f| {
            let (runner, permits) = (runner.clone(), permits.clone());
            async move {
                let _permit = permits.acquire_owned().await;
                let traced_from = telemetry::enabled().then(std::time::SystemTime::now);
                let reports = runner.run(&f, now_ms).await;
                if let Some(from) = traced_from {
                    // Each report's span covers the effect (a provider call).
                    telemetry::end_all(
                        reports
                            .iter()
                            .filter_map(|r| {
                                telemetry::Pending::of(processor, &r.event, Parent::Cause, from)
                            })
                            .collect(),
                    );
                }
                reports
            }
        })
        .buffer_unordered(concurrency)
        .ready_chunks(1024);
    while let Some(ready) = reports.next().await {
        let follow: Vec<Emit> = ready.into_iter().flatten().collect();
        publish(&*log, &topics, &follow).await?;
    }
    let mut del = WriteBatch::new();
    del.delete(row);
    store.write(del).await?;
    Ok(())
}

/// The result of an effects task; a panic in an effect goes on unwinding
/// in the runner, as it did when effects ran on the runner's task.
fn effects_finished(
    done: Result<Result<(), ProcessError>, tokio::task::JoinError>,
) -> Result<(), ProcessError> {
    match done {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: only when the runner itself is dropped.
        Err(_) => Ok(()),
    }
}

/// The log encoding of each output, in order.
pub fn encode_emits(emits: &[Emit]) -> Vec<Bytes> {
    emits
        .iter()
        .map(|e| Bytes::from(e.event.encode()))
        .collect()
}

/// Appends events to their topics, one append per topic.
pub async fn publish(
    log: &dyn EventLog,
    topics: &Topics,
    emits: &[Emit],
) -> Result<(), ProcessError> {
    publish_encoded(log, topics, emits, &encode_emits(emits)).await
}

/// [`publish`] with the events already encoded (`encoded[i]` is `emits[i]`).
pub async fn publish_encoded(
    log: &dyn EventLog,
    topics: &Topics,
    emits: &[Emit],
    encoded: &[Bytes],
) -> Result<(), ProcessError> {
    for (topic, records) in records_by_topic(topics, emits, encoded) {
        log.append(&topic, records).await?;
    }
    Ok(())
}
