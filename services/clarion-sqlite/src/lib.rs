//! How Clarion opens and maintains its SQLite files (the embedded log and
//! the embedded store): WAL mode, the durability level, the busy timeout and
//! WAL checkpoints off the writer's path.

pub mod multi_row;
pub mod readers;
pub mod writer;

use std::path::Path;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

use rusqlite::Connection;

/// How the writer's errors of a full disk begin: SQLite's `SQLITE_FULL`
/// (the disk, or the file's `max_page_count`, is full) and `SQLITE_IOERR`
/// (a write the OS refused, e.g. `ENOSPC` reported late). Callers tell them
/// from other failures with [`is_storage_full`]: they clear when space
/// returns, so work waits and retries rather than stopping for good.
pub const STORAGE_FULL: &str = "storage full: ";

/// A SQLite error as the writer reports it: prefixed with [`STORAGE_FULL`]
/// when the disk is full or failing writes.
pub fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => format!("{STORAGE_FULL}{e}"),
        _ => e.to_string(),
    }
}

/// Whether a writer error (see [`describe`]) is a full or failing disk.
pub fn is_storage_full(msg: &str) -> bool {
    msg.starts_with(STORAGE_FULL)
}

/// Opens (creating the directory if needed) a connection in WAL mode with
/// `synchronous=NORMAL`: a commit survives a process crash (kill -9); only
/// an OS crash or power loss can lose the last commits.
pub fn connect(path: &str) -> Result<Connection, String> {
    if let Some(dir) = Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
    }
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    conn.execute_batch(
        // busy_timeout first: switching to WAL (and recovering a WAL left by a
        // crash) takes locks, and without it a concurrent opener fails at once.
        // A 512 KiB page cache (SQLite's default is 2 MiB; writers set their
        // own): a reader's cache is emptied whenever another connection has
        // committed since its last read, which under load is every read, so
        // it only needs to hold one read's interior pages, and emptying a
        // small cache is cheaper (4 % less CPU at 6,000 notifications/s).
        //
        // 8 KiB pages for a new file (an existing one keeps its own): every
        // commit writes the right-edge pages of the B-trees it touches in
        // full, and the checkpointer copies them again; with larger pages a
        // commit touches fewer of them. 8 KiB delivered 3–14 % more than
        // 4 KiB under load for the same CPU at 1,000 notifications/s;
        // 32 KiB a little more still, but cost more at low rates
        // (docs/benchmarks.md).
        "PRAGMA busy_timeout=10000; PRAGMA page_size=8192; PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL; PRAGMA cache_size=-512;",
    )
    .map_err(|e| e.to_string())?;
    // rusqlite keeps 16 prepared statements by default; the writer that
    // log and store share uses more than that (the log's inserts, a few per
    // store table), and a statement pushed out is compiled again on its next
    // use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Pragmas of a file's writer connection ([`writer::Writer`]).
///
/// A 16 MiB page cache (SQLite's default is 2 MiB). Keys are time-ordered,
/// so the pages a commit touches are mostly the right edges of the B-trees.
/// Not larger: a B-tree split parks a page at the lock-byte page number
/// (1 GiB), and every commit then scans the whole page cache to drop pages
/// past the end of the file (`pcache1TruncateUnsafe`); with 256 MiB that
/// scan was 8 % of the server's CPU (docs/benchmarks.md). No automatic
/// checkpoints: [`spawn_checkpointer`] runs them off the writer's path.
///
/// Statement journals in memory (`temp_store=MEMORY`): a statement that
/// may fail halfway (an upsert, a multi-row insert) first copies every page
/// it touches into a journal so that it alone can be undone, and past
/// 64 KiB SQLite spills that journal to a temporary file: a `write` per
/// page, on the writer's hot path. Held in memory it costs a copy. The
/// writer never needs a statement undone on its own (a failed job rolls its
/// whole transaction back, [`writer`]), so the hot inserts say `OR FAIL`
/// and open no statement journal at all.
const WRITER_PRAGMAS: &str =
    "PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY;";

/// Opens the connection of a file's writer thread ([`writer::Writer`]):
/// [`connect`], then [`WRITER_PRAGMAS`] and [`writer_busy_handler`].
pub fn connect_writer(path: &str) -> Result<Connection, String> {
    let conn = connect(path)?;
    conn.execute_batch(WRITER_PRAGMAS)
        .map_err(|e| e.to_string())?;
    conn.busy_handler(Some(writer_busy_handler))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Busy handler of a writer connection: waits for a lock in steps of 50 µs
/// at first, then 1 ms, for up to about 10 s (like `busy_timeout=10000`).
/// SQLite's own handler sleeps 1, 2, 5, 10 ms...: a writer that meets the
/// checkpointer's brief lock would sleep 8 ms for a lock held 1 ms, and
/// every request waiting on that writer with it.
fn writer_busy_handler(attempt: i32) -> bool {
    const FINE: i32 = 200;
    let nap = if attempt < FINE {
        Duration::from_micros(50)
    } else {
        Duration::from_millis(1)
    };
    if attempt >= FINE + 10_000 {
        return false;
    }
    std::thread::sleep(nap);
    true
}

/// The checkpointer's pause between passive checkpoints: five times the
/// last one's duration, within these bounds.
const CHECKPOINT_PAUSE_MIN: Duration = Duration::from_millis(5);
const CHECKPOINT_PAUSE_MAX: Duration = Duration::from_millis(100);
/// The pause is this many times the last checkpoint's duration.
const CHECKPOINT_DUTY: u32 = 5;

/// The pause before the next passive checkpoint, given how long the last
/// one took. A checkpoint's fsync of the WAL stalls the writer's appends
/// on ext4 for as long as it runs (docs/benchmarks.md), so small, frequent
/// checkpoints keep each stall short while the load is light; but each
/// one copies every page changed since the last, and the hot pages change
/// in every interval, so under heavy load they back off, keeping the
/// checkpointer under a sixth of a core.
fn checkpoint_pause(last: Duration) -> Duration {
    (last * CHECKPOINT_DUTY).clamp(CHECKPOINT_PAUSE_MIN, CHECKPOINT_PAUSE_MAX)
}
/// WAL size (pages) past which it restarts the WAL (waiting for a pause).
const WAL_RESTART_PAGES: i64 = 16_384;

/// Checkpoints the WAL of `path` from a thread of its own, so the writer
/// never stalls copying pages into the database file and syncing it.
/// SQLite's automatic checkpoint runs inside the commit that crosses its
/// threshold, a latency spike for every caller waiting on that commit; the
/// writer connection should set `PRAGMA wal_autocheckpoint=0`. Passive
/// checkpoints run beside the writer; when the WAL still grows past
/// `WAL_RESTART_PAGES` a restarting checkpoint waits for a pause and resets
/// it. The thread ends when the returned sender is dropped.
pub fn spawn_checkpointer(path: &str, thread_name: &str) -> Result<Sender<()>, String> {
    let conn = connect(path)?;
    // A restarting checkpoint holds the write lock while it waits for
    // readers: wait for them in fine steps too, so the writer gets the lock
    // back as soon as they are done.
    conn.busy_handler(Some(writer_busy_handler))
        .map_err(|e| e.to_string())?;
    let (stop, rx) = channel::<()>();
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            // Runs one checkpoint: the WAL's size in pages, and how long it took.
            let checkpoint = |mode: &'static str| {
                let started = std::time::Instant::now();
                let wal_pages = conn.query_row(
                    &format!("PRAGMA wal_checkpoint({mode})"),
                    [],
                    |r| r.get::<_, i64>(1),
                );
                let took = started.elapsed();
                metrics::histogram!("clarion_sqlite_checkpoint_seconds", "mode" => mode.to_lowercase())
                    .record(took.as_secs_f64());
                (wal_pages, took)
            };
            let mut pause = CHECKPOINT_PAUSE_MAX;
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(pause) {
                let (passive, took) = checkpoint("PASSIVE");
                pause = checkpoint_pause(took);
                match passive {
                    Ok(wal_pages) if wal_pages > WAL_RESTART_PAGES => {
                        // It holds the write lock while it waits for readers:
                        // every commit waits with it.
                        let _ = checkpoint("RESTART");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_8_kib_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size =
            |c: &Connection| -> i64 { c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap() };
        let new = dir.path().join("new.db");
        let c = connect(new.to_str().unwrap()).unwrap();
        c.execute_batch("CREATE TABLE t (x)").unwrap();
        assert_eq!(page_size(&c), 8192);

        let old = dir.path().join("old.db");
        let c = Connection::open(&old).unwrap();
        c.execute_batch("PRAGMA page_size=4096; CREATE TABLE t (x)")
            .unwrap();
        drop(c);
        let c = connect(old.to_str().unwrap()).unwrap();
        assert_eq!(page_size(&c), 4096);
    }

    #[test]
    fn checkpoints_come_often_while_cheap_and_back_off_when_they_take_long() {
        let ms = Duration::from_millis;
        assert_eq!(checkpoint_pause(Duration::from_micros(200)), ms(5));
        assert_eq!(checkpoint_pause(ms(3)), ms(15));
        assert_eq!(checkpoint_pause(ms(16)), ms(80));
        assert_eq!(checkpoint_pause(ms(40)), ms(100));
    }

    #[test]
    fn the_checkpointer_moves_committed_pages_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.db");
        let path = path.to_str().unwrap();
        let writer = connect(path).unwrap();
        writer
            .execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t (v BLOB);")
            .unwrap();
        let mode: String = writer
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let db_size = || std::fs::metadata(path).unwrap().len();
        let before = db_size();
        for _ in 0..200 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        // Without automatic checkpoints the rows are only in the WAL.
        assert_eq!(db_size(), before);
        let stop = spawn_checkpointer(path, "test-ckpt").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_size() < 200 * 4000 {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stop);
    }
}
