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

use std::sync::mpsc::{channel, Receiver, Sender};

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
}

/// Jobs that must commit together or not at all (a processor's state and
/// the events it emits).
pub struct Together(pub Vec<Box<dyn WriteJob>>);

impl WriteJob for Together {
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
    jobs: Sender<Box<dyn WriteJob>>,
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
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || group_commit_loop(conn, rx, max_group))
            .map_err(|e| e.to_string())?;
        Ok(Writer {
            jobs,
            path: path.to_string(),
        })
    }

    /// The file this writer writes.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Queues `job`; its `finish` is always called, with an error if the
    /// writer has stopped.
    pub fn submit(&self, job: Box<dyn WriteJob>) {
        if let Err(e) = self.jobs.send(job) {
            e.0.finish(Err("SQLite writer stopped".into()));
        }
    }
}

fn group_commit_loop(mut conn: Connection, rx: Receiver<Box<dyn WriteJob>>, max_group: usize) {
    while let Ok(first) = rx.recv() {
        let mut weight = first.weight();
        let mut group = vec![first];
        while weight < max_group {
            match rx.try_recv() {
                Ok(job) => {
                    weight += job.weight();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
    }
}

/// Commits `group` in one transaction, or, if that fails, each job in one
/// of its own; then tells every job its outcome.
fn commit_group(conn: &mut Connection, mut group: Vec<Box<dyn WriteJob>>) {
    match run(conn, &mut group) {
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
/// reverse order, that it rolled back.
fn run(conn: &mut Connection, jobs: &mut [Box<dyn WriteJob>]) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
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
        outcome = tx.commit().map_err(|e| e.to_string());
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
        commit_group(&mut crate::connect(&path).unwrap(), group);
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
