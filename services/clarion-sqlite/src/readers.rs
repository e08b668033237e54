//! A small pool of reader connections to one file, shared by the embedded
//! log and store. WAL mode lets each read its snapshot while the writer
//! writes, so reads from several tasks run side by side instead of taking
//! turns on one connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Reader connections, used round-robin.
pub struct Readers {
    conns: Vec<Arc<Mutex<Connection>>>,
    next: AtomicUsize,
}

impl Readers {
    /// Opens `n` (at least one) reader connections to `path` ([`crate::connect`]).
    pub fn open(path: &str, n: usize) -> Result<Readers, String> {
        let conns = (0..n.max(1))
            .map(|_| crate::connect(path).map(|c| Arc::new(Mutex::new(c))))
            .collect::<Result<_, _>>()?;
        Ok(Readers {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a reader connection. A `small` read (point lookups,
    /// short scans: tens of microseconds on cached pages) runs right here
    /// on the async worker when a connection is free: handing it to the
    /// blocking pool costs two thread switches, more than the read itself.
    /// Large reads, or all connections busy, go to the blocking pool.
    /// The outer error is the blocking task's failure (a panic in `f`).
    pub async fn read<T, E>(
        &self,
        small: bool,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<Result<T, E>, String>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if small {
            for j in 0..self.conns.len() {
                let i = (start + j) % self.conns.len();
                if let Ok(c) = self.conns[i].try_lock() {
                    return Ok(f(&c));
                }
            }
        }
        let c = self.conns[start % self.conns.len()].clone();
        tokio::task::spawn_blocking(move || f(&c.lock().expect("SQLite reader lock")))
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_runs_while_another_holds_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let path = path.to_str().unwrap();
        crate::connect(path)
            .unwrap()
            .execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let readers = Arc::new(Readers::open(path, 2).unwrap());
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow = {
            let readers = readers.clone();
            tokio::spawn(async move {
                readers
                    .read(false, move |c| {
                        started_tx.send(()).unwrap();
                        released.recv().unwrap();
                        c.query_row("SELECT v FROM t", [], |r| r.get::<_, i64>(0))
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // One connection is held by the slow read: this one takes the other.
        let v = readers
            .read(true, |c| {
                c.query_row("SELECT v FROM t", [], |r| r.get::<_, i64>(0))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, 7);
        assert!(
            !slow.is_finished(),
            "the slow read still holds its connection"
        );
        release.send(()).unwrap();
        assert_eq!(slow.await.unwrap().unwrap().unwrap(), 7);
    }
}
