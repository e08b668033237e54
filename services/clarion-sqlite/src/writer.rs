//! The single writer of a SQLite file, with group commit.
//!
//! SQLite has one writer per file anyway; funnelling every write through one
//! thread turns thousands of small writes into a few large transactions (one
//! commit, one WAL frame per touched page) and, when the embedded log and
//! store share a file, lets a processor's state change and the events it
//! emits commit in one transaction (no outbox for emits).
//!
//! Writes are [`WriteJob`]s. The thread takes every job waiting (up to a
//! weight), applies them in one IMMEDIATE transaction and commits. If the
//! group fails, each job is retried in a transaction of its own, so one bad
//! job fails alone and the others still commit.
//!
//! The thread's connection sits behind a mutex: a foreground job submitted
//! while the writer is idle takes the connection on the submitting thread
//! and commits there, alone ([`Writer::submit`]). At 1,000 Triggers/s that
//! is most of them, and each acknowledgement saves the two thread hand-offs
//! of a trip through the writer thread (docs/benchmarks.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// One unit of writing, applied inside the writer's transaction.
pub trait WriteJob: Send {
    /// About how many rows it writes (bounds a group's size).
    fn weight(&self) -> usize;

    /// Writes inside the group's transaction. Called again, in a transaction
    /// of its own, when its group failed.
    fn apply(&mut self, tx: &Transaction<'_>) -> Result<(), String>;

    /// The transaction that ran `apply` rolled back (maybe after a partial
    /// apply): undo whatever `apply` changed in memory.
    fn rolled_back(&mut self) {}

    /// The outcome, once the job's transaction committed or failed for good.
    fn finish(self: Box<Self>, outcome: Result<(), String>);

    /// A throughput job (a processor's batch commit), as opposed to one a
    /// request is waiting on (a Trigger's append). Waiting foreground jobs
    /// commit first, in groups of their own, so a Trigger's acknowledgement
    /// does not wait for a group full of processor batches.
    fn background(&self) -> bool {
        false
    }
}

/// Jobs that must commit together or not at all (a processor's state and
/// the events it emits), in the background class.
pub struct Together(pub Vec<Box<dyn WriteJob>>);

impl WriteJob for Together {
    fn background(&self) -> bool {
        true
    }

    fn weight(&self) -> usize {
        self.0.iter().map(|j| j.weight()).sum()
    }

    fn apply(&mut self, tx: &Transaction<'_>) -> Result<(), String> {
        self.0.iter_mut().try_for_each(|j| j.apply(tx))
    }

    fn rolled_back(&mut self) {
        self.0.iter_mut().rev().for_each(|j| j.rolled_back());
    }

    fn finish(self: Box<Self>, outcome: Result<(), String>) {
        for j in self.0 {
            j.finish(outcome.clone());
        }
    }
}

/// Handle to a file's writer thread; clones share the thread, which ends
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: Sender<Queued>,
    /// The file's one write connection: the writer thread holds it for a
    /// group's transaction, and an idle writer lends it to a foreground job
    /// on the submitting thread ([`Writer::submit`]).
    conn: Arc<Mutex<Connection>>,
    /// When a foreground job may commit on the submitting thread.
    lending: Arc<Lending>,
    path: String,
}

impl Writer {
    /// Starts the writer thread on `conn` (the caller sets its pragmas),
    /// committing groups of up to `max_group` weight.
    pub fn spawn(
        conn: Connection,
        path: &str,
        thread_name: &str,
        max_group: usize,
    ) -> Result<Writer, String> {
        let (jobs, rx) = channel();
        let conn = Arc::new(Mutex::new(conn));
        let lending = Arc::new(Lending::default());
        let (c, q) = (conn.clone(), lending.clone());
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || group_commit_loop(c, rx, max_group, q))
            .map_err(|e| e.to_string())?;
        Ok(Writer {
            jobs,
            conn,
            lending,
            path: path.to_string(),
        })
    }

    /// The file this writer writes.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Caps the file at `pages` pages (SQLite's `max_page_count` of the
    /// writer's connection; `None` only reads it): a write that would grow
    /// it further fails as storage full ([`crate::is_storage_full`]), as on
    /// a full disk, and a higher cap lets writes go on. Returns the cap in
    /// force. Blocks until the writer runs it.
    pub fn max_page_count(&self, pages: Option<u64>) -> Result<u64, String> {
        let (tx, rx) = channel();
        let sql = match pages {
            Some(n) => format!("PRAGMA max_page_count = {n}"),
            None => "PRAGMA max_page_count".to_string(),
        };
        self.call(
            false,
            move |t| t.query_row(&sql, [], |r| r.get::<_, i64>(0)),
            move |a| {
                let _ = tx.send(a);
            },
        );
        let n = rx
            .recv()
            .map_err(|_| "SQLite writer stopped".to_string())??;
        Ok(n as u64)
    }

    /// How many pages the file has now.
    pub fn page_count(&self) -> Result<u64, String> {
        let (tx, rx) = channel();
        self.call(
            false,
            |t| t.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)),
            move |a| {
                let _ = tx.send(a);
            },
        );
        let n = rx
            .recv()
            .map_err(|_| "SQLite writer stopped".to_string())??;
        Ok(n as u64)
    }

    /// Runs `f` in a transaction of the writer and hands its answer (or the
    /// transaction's error) to `reply`. `background`: see
    /// [`WriteJob::background`].
    pub fn call<T, F>(
        &self,
        background: bool,
        f: F,
        reply: impl FnOnce(Result<T, String>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(Box::new(FnJob {
            f,
            answer: None,
            reply: Some(Box::new(reply)),
            background,
        }));
    }

    /// Commits `job`; its `finish` is always called, with an error if the
    /// writer has stopped.
    ///
    /// A foreground job that finds the writer idle (nothing queued, no
    /// transaction in progress) commits at once on the calling thread, in a
    /// transaction of its own: a Trigger's append then costs no hand-off to
    /// the writer thread and back (two thread wake-ups, each a wait for a
    /// CPU on a busy machine). Otherwise it is queued, and the writer
    /// thread commits it with the others waiting, foreground first. See
    /// [`Lending`] for when the writer does not lend its connection.
    pub fn submit(&self, job: Box<dyn WriteJob>) {
        if !job.background() && self.lending.may_lend() {
            if let Ok(mut conn) = self.conn.try_lock() {
                commit_group(&mut conn, vec![job], "inline");
                return;
            }
        }
        let fore = usize::from(!job.background());
        let queued = Queued {
            since: Instant::now(),
            job,
        };
        self.lending.queued.fetch_add(fore, Ordering::AcqRel);
        if let Err(e) = self.jobs.send(queued) {
            self.lending.queued.fetch_sub(fore, Ordering::AcqRel);
            e.0.job.finish(Err("SQLite writer stopped".into()));
        }
    }
}

/// Whether an idle writer lends its connection to a foreground job.
///
/// Only while foreground jobs come one at a time: for [`LEND_PAUSE`] after
/// the writer thread took a foreground group of more than
/// [`LEND_MAX_GROUP`] jobs, requests are arriving in bursts (a closed loop
/// of many callers), and the first of each burst committing alone on its
/// async worker would cost one more transaction per burst and hold a
/// worker the others need. The thread's group commit serves those better.
struct Lending {
    /// Foreground jobs submitted to the thread and not yet taken into a
    /// group (background ones waiting for company are overtaken anyway).
    queued: AtomicUsize,
    /// When the thread last took a large foreground group, in µs since
    /// `epoch` (0: never).
    last_burst_us: AtomicU64,
    epoch: Instant,
}

/// Foreground groups up to this size are not a burst.
const LEND_MAX_GROUP: usize = 4;
/// How long after a burst the writer does not lend its connection.
const LEND_PAUSE: Duration = Duration::from_millis(20);

impl Default for Lending {
    fn default() -> Self {
        Lending {
            queued: AtomicUsize::new(0),
            last_burst_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Lending {
    fn may_lend(&self) -> bool {
        self.may_lend_at(Instant::now())
    }

    fn may_lend_at(&self, now: Instant) -> bool {
        if self.queued.load(Ordering::Acquire) != 0 {
            return false;
        }
        match self.last_burst_us.load(Ordering::Acquire) {
            0 => true,
            at => {
                now.saturating_duration_since(self.epoch) >= Duration::from_micros(at) + LEND_PAUSE
            }
        }
    }

    /// The thread took a foreground group of `len` jobs.
    fn took(&self, len: usize) {
        self.took_at(len, Instant::now());
    }

    fn took_at(&self, len: usize, now: Instant) {
        if len > LEND_MAX_GROUP {
            let us = now.saturating_duration_since(self.epoch).as_micros() as u64;
            self.last_burst_us.store(us.max(1), Ordering::Release);
        }
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

/// A job and when it was submitted: the time it waits for the writer
/// (behind other commits, a background linger, or for a CPU) is part of
/// its caller's latency (`clarion_sqlite_queue_wait_seconds`).
struct Queued {
    since: Instant,
    job: Box<dyn WriteJob>,
}

/// Where a [`Writer::call`] answer goes.
type Reply<T> = Box<dyn FnOnce(Result<T, String>) + Send>;

/// A closure that computes an answer, as a job ([`Writer::call`]).
struct FnJob<T, F> {
    f: F,
    answer: Option<T>,
    reply: Option<Reply<T>>,
    background: bool,
}

impl<T, F> WriteJob for FnJob<T, F>
where
    T: Send,
    F: FnMut(&Transaction<'_>) -> rusqlite::Result<T> + Send,
{
    fn weight(&self) -> usize {
        1
    }

    fn apply(&mut self, tx: &Transaction<'_>) -> Result<(), String> {
        self.answer = Some((self.f)(tx).map_err(|e| crate::describe(&e))?);
        Ok(())
    }

    fn rolled_back(&mut self) {
        self.answer = None;
    }

    fn background(&self) -> bool {
        self.background
    }

    fn finish(mut self: Box<Self>, outcome: Result<(), String>) {
        let answer = outcome.and_then(|()| self.answer.take().ok_or_else(|| "no answer".into()));
        if let Some(reply) = self.reply.take() {
            reply(answer);
        }
    }
}

/// How long background jobs wait for company before they commit. A
/// processor batch's commit then shares its transaction with the batches
/// of other partitions and processors that follow within the moment, so
/// hot pages are written once per group rather than once per batch, and
/// the next batches grow. At 1,000 notifications/s this halved the
/// server's CPU (docs/benchmarks.md); the cost is at most this much added
/// latency per processor hop. Foreground jobs never wait.
pub const BACKGROUND_LINGER: Duration = Duration::from_millis(2);

/// The jobs waiting for the writer, by class.
#[derive(Default)]
struct Waiting {
    fore: VecDeque<Queued>,
    back: VecDeque<Queued>,
    back_weight: usize,
    /// When the oldest waiting background job arrived.
    back_since: Option<Instant>,
}

impl Waiting {
    fn push(&mut self, queued: Queued) {
        if queued.job.background() {
            self.back_weight += queued.job.weight();
            self.back_since.get_or_insert_with(Instant::now);
            self.back.push_back(queued);
        } else {
            self.fore.push_back(queued);
        }
    }

    fn is_empty(&self) -> bool {
        self.fore.is_empty() && self.back.is_empty()
    }

    /// When the background jobs should commit if nothing else comes first:
    /// once they make a full group, or `linger` after the oldest arrived.
    fn back_due(&self, max_group: usize, linger: Duration) -> Option<Instant> {
        let since = self.back_since?;
        Some(if self.back_weight >= max_group {
            since
        } else {
            since + linger
        })
    }

    /// The next group: waiting foreground jobs first, else background ones.
    fn take_group(&mut self, max_group: usize) -> Vec<Box<dyn WriteJob>> {
        let back = self.fore.is_empty();
        let from = if back { &mut self.back } else { &mut self.fore };
        let class = class_name(back);
        let now = Instant::now();
        let mut group = Vec::new();
        let mut weight = 0;
        while weight < max_group {
            let Some(Queued { since, job }) = from.pop_front() else {
                break;
            };
            metrics::histogram!("clarion_sqlite_queue_wait_seconds", "class" => class)
                .record(now.duration_since(since).as_secs_f64());
            weight += job.weight();
            group.push(job);
        }
        if back {
            self.back_weight -= weight;
            // What is left has waited long enough already.
            if self.back.is_empty() {
                self.back_since = None;
            }
        }
        group
    }
}

fn class_name(background: bool) -> &'static str {
    if background {
        "background"
    } else {
        "foreground"
    }
}

fn group_commit_loop(
    conn: Arc<Mutex<Connection>>,
    rx: Receiver<Queued>,
    max_group: usize,
    lending: Arc<Lending>,
) {
    let linger = BACKGROUND_LINGER;
    let mut waiting = Waiting::default();
    loop {
        if waiting.is_empty() {
            match rx.recv() {
                Ok(job) => waiting.push(job),
                Err(_) => return, // every handle dropped and nothing queued
            }
        }
        while let Ok(job) = rx.try_recv() {
            waiting.push(job);
        }
        // Background jobs linger a moment for company: one commit of many
        // batches writes each hot page once (and their runners get larger
        // batches next). A foreground job ends the wait.
        if waiting.fore.is_empty() {
            if let Some(due) = waiting.back_due(max_group, linger) {
                let left = due.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    match rx.recv_timeout(left) {
                        Ok(job) => {
                            waiting.push(job);
                            continue; // look again: it may be foreground
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {}
                    }
                }
            }
        }
        let group = waiting.take_group(max_group);
        let back = group.first().is_some_and(|j| j.background());
        // Counted out before the lock is taken: a foreground job submitted
        // meanwhile may then go inline first, which only reorders commits
        // that were concurrent anyway. (A group is of one class.)
        if !back {
            lending.took(group.len());
        }
        let class = class_name(back);
        let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        commit_group(&mut conn, group, class);
    }
}

/// Commits `group` in one transaction, or, if that fails, each job in one
/// of its own; then tells every job its outcome.
fn commit_group(conn: &mut Connection, mut group: Vec<Box<dyn WriteJob>>, class: &'static str) {
    metrics::counter!("clarion_sqlite_commits_total", "class" => class).increment(1);
    metrics::counter!("clarion_sqlite_committed_jobs_total", "class" => class)
        .increment(group.len() as u64);
    let started = Instant::now();
    let outcome = run(conn, &mut group);
    metrics::histogram!("clarion_sqlite_commit_seconds", "class" => class)
        .record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(()) => group.into_iter().for_each(|j| j.finish(Ok(()))),
        Err(e) if group.len() == 1 => group.into_iter().for_each(|j| j.finish(Err(e.clone()))),
        Err(_) => {
            for mut job in group {
                let outcome = run(conn, std::slice::from_mut(&mut job));
                job.finish(outcome);
            }
        }
    }
}

/// Applies `jobs` in one IMMEDIATE transaction (the write lock up front, so
/// `busy_timeout` applies if another process holds it; a deferred
/// read-then-write cannot wait). On failure every job that ran is told, in
/// reverse order, that it rolled back. A failed statement always fails the
/// whole transaction, so no statement ever needs undoing on its own: jobs
/// may write with `OR FAIL`, which opens no statement journal.
fn run(conn: &mut Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| crate::describe(&e))?;
    let mut outcome = Ok(());
    let mut ran = 0;
    for job in jobs.iter_mut() {
        ran += 1;
        if let Err(e) = job.apply(&tx) {
            outcome = Err(e);
            break;
        }
    }
    if outcome.is_ok() {
        outcome = tx.commit().map_err(|e| crate::describe(&e));
    } else {
        drop(tx); // rolls back
    }
    if outcome.is_err() {
        jobs[..ran].iter_mut().rev().for_each(|j| j.rolled_back());
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Inserts `value` into `t`; `value < 0` fails (a CHECK constraint).
    /// Counts its applies and rollbacks, and reports its outcome.
    struct Insert {
        value: i64,
        applied: Arc<Mutex<Vec<String>>>,
        done: Sender<(i64, Result<(), String>)>,
    }

    impl WriteJob for Insert {
        fn weight(&self) -> usize {
            1
        }
        fn apply(&mut self, tx: &Transaction<'_>) -> Result<(), String> {
            self.applied
                .lock()
                .unwrap()
                .push(format!("apply {}", self.value));
            tx.execute("INSERT INTO t (v) VALUES (?1)", [self.value])
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        fn rolled_back(&mut self) {
            self.applied
                .lock()
                .unwrap()
                .push(format!("undo {}", self.value));
        }
        fn finish(self: Box<Self>, outcome: Result<(), String>) {
            self.done.send((self.value, outcome)).unwrap();
        }
    }

    fn setup() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db").to_str().unwrap().to_string();
        crate::connect(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (v INTEGER NOT NULL CHECK (v >= 0))")
            .unwrap();
        (dir, path)
    }

    fn values(path: &str) -> Vec<i64> {
        let c = crate::connect(path).unwrap();
        let mut s = c.prepare("SELECT v FROM t ORDER BY v").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_failing_job_fails_alone_and_its_group_is_retried_job_by_job() {
        let (_dir, path) = setup();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (done, outcomes) = channel();
        let group: Vec<Box<dyn WriteJob>> = [1, -2, 3]
            .into_iter()
            .map(|v| -> Box<dyn WriteJob> {
                Box::new(Insert {
                    value: v,
                    applied: log.clone(),
                    done: done.clone(),
                })
            })
            .collect();
        commit_group(&mut crate::connect(&path).unwrap(), group, "foreground");
        let got: Vec<(i64, bool)> = outcomes.try_iter().map(|(v, o)| (v, o.is_ok())).collect();
        assert_eq!(got, vec![(1, true), (-2, false), (3, true)]);
        assert_eq!(values(&path), vec![1, 3]);
        // The group ran 1 and -2, rolled both back (newest first), then
        // each job ran alone.
        assert_eq!(
            log.lock().unwrap().clone(),
            [
                "apply 1", "apply -2", "undo -2", "undo 1", "apply 1", "apply -2", "undo -2",
                "apply 3"
            ]
        );
    }

    /// The hot inserts say `OR FAIL`, which stops a statement at its first
    /// failing row and keeps the rows before it: safe only because a failed
    /// job never commits. A multi-row `OR FAIL` insert that fails on its
    /// third row leaves none of its rows, and its group's other jobs commit.
    #[test]
    fn a_statement_that_fails_halfway_leaves_nothing_of_its_job() {
        struct Rows(Vec<i64>, Sender<Result<(), String>>);
        impl WriteJob for Rows {
            fn weight(&self) -> usize {
                self.0.len()
            }
            fn apply(&mut self, tx: &Transaction<'_>) -> Result<(), String> {
                let sql = format!(
                    "INSERT OR FAIL INTO t (v) VALUES {}",
                    vec!["(?)"; self.0.len()].join(",")
                );
                tx.execute(&sql, rusqlite::params_from_iter(&self.0))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            fn finish(self: Box<Self>, outcome: Result<(), String>) {
                self.1.send(outcome).unwrap();
            }
        }
        let (_dir, path) = setup();
        let (done, outcomes) = channel();
        let group: Vec<Box<dyn WriteJob>> = vec![
            Box::new(Rows(vec![1, 2], done.clone())),
            Box::new(Rows(vec![10, 11, -1, 12], done.clone())),
            Box::new(Rows(vec![3], done.clone())),
        ];
        commit_group(&mut crate::connect(&path).unwrap(), group, "foreground");
        let ok: Vec<bool> = outcomes.try_iter().map(|o| o.is_ok()).collect();
        assert_eq!(ok, [true, false, true]);
        assert_eq!(values(&path), vec![1, 2, 3]);
    }

    fn queued(job: Box<dyn WriteJob>) -> Queued {
        Queued {
            since: Instant::now(),
            job,
        }
    }

    /// A job that only has a class and a weight (for the queueing rules);
    /// tests tell jobs apart by weight.
    struct Tagged {
        weight: usize,
        background: bool,
    }

    impl WriteJob for Tagged {
        fn weight(&self) -> usize {
            self.weight
        }
        fn apply(&mut self, _: &Transaction<'_>) -> Result<(), String> {
            Ok(())
        }
        fn finish(self: Box<Self>, _: Result<(), String>) {}
        fn background(&self) -> bool {
            self.background
        }
    }

    fn tagged(weight: usize, background: bool) -> Box<dyn WriteJob> {
        Box::new(Tagged { weight, background })
    }

    fn weights(group: Vec<Box<dyn WriteJob>>) -> Vec<usize> {
        group.iter().map(|j| j.weight()).collect()
    }

    #[test]
    fn waiting_foreground_jobs_go_first_and_background_ones_wait_from_the_oldest() {
        let linger = Duration::from_millis(2);
        let mut w = Waiting::default();
        assert_eq!(w.back_due(10, linger), None, "nothing waiting, nothing due");
        w.push(queued(tagged(3, true)));
        let oldest = w
            .back_since
            .expect("the first background job starts the wait");
        assert_eq!(w.back_due(10, linger), Some(oldest + linger));
        w.push(queued(tagged(1, false)));
        w.push(queued(tagged(4, true)));
        // A later background job does not put the due time off.
        assert_eq!(w.back_due(10, linger), Some(oldest + linger));
        // Foreground first, whatever arrived before it.
        assert_eq!(weights(w.take_group(10)), vec![1]);
        assert_eq!(weights(w.take_group(10)), vec![3, 4]);
        assert!(w.is_empty());
        assert_eq!(w.back_due(10, linger), None);
    }

    #[test]
    fn a_full_background_group_is_due_at_once_and_what_is_left_does_not_wait_again() {
        let linger = Duration::from_millis(2);
        let mut w = Waiting::default();
        for _ in 0..3 {
            w.push(queued(tagged(4, true)));
        }
        let oldest = w.back_since.unwrap();
        // Weight 12 >= 8: a full group, due now.
        assert_eq!(w.back_due(8, linger), Some(oldest));
        assert_eq!(weights(w.take_group(8)), vec![4, 4]);
        // The job left over has waited since `oldest` already.
        assert_eq!(w.back_due(8, linger), Some(oldest + linger));
        assert_eq!(weights(w.take_group(8)), vec![4]);
        // A new job after the queue emptied starts a fresh wait.
        w.push(queued(tagged(1, true)));
        assert!(w.back_since.unwrap() >= oldest);
        assert_eq!(w.back_weight, 1);
    }

    /// Reports which thread applied it.
    struct WhereApplied {
        background: bool,
        done: Sender<Option<String>>,
        on: Option<String>,
    }

    impl WriteJob for WhereApplied {
        fn weight(&self) -> usize {
            1
        }
        fn apply(&mut self, tx: &Transaction<'_>) -> Result<(), String> {
            self.on = std::thread::current().name().map(str::to_string);
            tx.execute("INSERT INTO t (v) VALUES (1)", [])
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        fn background(&self) -> bool {
            self.background
        }
        fn finish(self: Box<Self>, outcome: Result<(), String>) {
            outcome.unwrap();
            self.done.send(self.on).unwrap();
        }
    }

    #[test]
    fn an_idle_writer_lends_its_connection_to_a_foreground_job_and_only_to_one() {
        let (_dir, path) = setup();
        let w = Writer::spawn(crate::connect(&path).unwrap(), &path, "test-writer", 100).unwrap();
        let (done, applied_on) = channel();
        let job = |background| -> Box<dyn WriteJob> {
            Box::new(WhereApplied {
                background,
                done: done.clone(),
                on: None,
            })
        };
        let here = std::thread::current().name().map(str::to_string);
        // Foreground, writer idle: committed before submit returns, here.
        w.submit(job(false));
        assert_eq!(applied_on.try_recv().unwrap(), here);
        // Background: always the writer thread's (it waits for company).
        w.submit(job(true));
        assert_eq!(applied_on.recv().unwrap().as_deref(), Some("test-writer"));
        // A transaction in progress (the connection taken): foreground jobs
        // queue for the writer thread instead of waiting here.
        let held = w.conn.lock().unwrap();
        w.submit(job(false));
        assert!(applied_on.try_recv().is_err(), "it must not run meanwhile");
        drop(held);
        assert_eq!(applied_on.recv().unwrap().as_deref(), Some("test-writer"));
        assert_eq!(values(&path), vec![1, 1, 1]);
    }

    #[test]
    fn lending_stops_for_a_while_after_a_burst() {
        let l = Lending::default();
        let t0 = l.epoch + Duration::from_secs(1);
        assert!(l.may_lend_at(t0), "an idle writer lends");
        l.queued.fetch_add(1, Ordering::AcqRel);
        assert!(
            !l.may_lend_at(t0),
            "not while a foreground job waits for the thread"
        );
        l.took_at(1, t0);
        assert!(l.may_lend_at(t0), "a group of one is no burst");
        l.queued.fetch_add(6, Ordering::AcqRel);
        l.took_at(6, t0);
        assert_eq!(l.queued.load(Ordering::Acquire), 0);
        assert!(!l.may_lend_at(t0), "a group of six: callers come in bursts");
        l.queued.fetch_add(LEND_MAX_GROUP, Ordering::AcqRel);
        l.took_at(LEND_MAX_GROUP, t0 + LEND_PAUSE / 2);
        assert!(
            !l.may_lend_at(t0 + LEND_PAUSE / 2),
            "still within the pause"
        );
        assert!(l.may_lend_at(t0 + LEND_PAUSE), "lending resumes after it");
    }

    #[test]
    fn jobs_together_commit_or_fail_as_one() {
        let (_dir, path) = setup();
        let w = Writer::spawn(crate::connect(&path).unwrap(), &path, "test-writer", 100).unwrap();
        let (done, outcomes) = channel();
        let job = |v| -> Box<dyn WriteJob> {
            Box::new(Insert {
                value: v,
                applied: Arc::default(),
                done: done.clone(),
            })
        };
        w.submit(Box::new(Together(vec![job(5), job(-1)])));
        let o: Vec<_> = (0..2).map(|_| outcomes.recv().unwrap()).collect();
        assert!(o.iter().all(|(_, r)| r.is_err()), "{o:?}");
        assert_eq!(values(&path), Vec::<i64>::new());
        w.submit(Box::new(Together(vec![job(5), job(6)])));
        let o: Vec<_> = (0..2).map(|_| outcomes.recv().unwrap()).collect();
        assert!(o.iter().all(|(_, r)| r.is_ok()), "{o:?}");
        assert_eq!(values(&path), vec![5, 6]);
    }
}
