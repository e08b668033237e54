//! The log conformance suite on the embedded SQLite backend (a real file).

use std::sync::Arc;

use clarion_log::{embedded::SqliteLog, log_conformance_tests, EventLog, LogRecord};

async fn make() -> Option<Arc<dyn EventLog>> {
    // Leaked so the file outlives the test body; removed when the process exits.
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let path = dir.path().join("log.db");
    Some(Arc::new(SqliteLog::open(path.to_str().unwrap()).unwrap()))
}

fn prefix() -> String {
    "t-".to_string()
}

log_conformance_tests!(make(), prefix);

/// The same suite with record batches compressed.
mod compressed {
    use super::*;

    async fn make() -> Option<Arc<dyn EventLog>> {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let path = dir.path().join("log.db");
        let url = format!("{}?compression=lz4", path.to_str().unwrap());
        Some(Arc::new(SqliteLog::open(&url).unwrap()))
    }

    log_conformance_tests!(make(), prefix);
}

/// The records under the secondary key `idx`, with their topics.
async fn indexed(log: &SqliteLog, idx: &str) -> Vec<(String, LogRecord)> {
    log.read_indexed(idx.as_bytes())
        .await
        .unwrap()
        .expect("the embedded log keeps an index")
}

/// The single number `sql` selects from the file at `path`.
fn count(path: &str, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// A log file's path in a fresh directory (removed when dropped).
fn log_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db").to_str().unwrap().to_string();
    (dir, path)
}

#[tokio::test]
async fn records_survive_reopening_the_file() {
    let (_dir, path) = log_file();
    let path = path.as_str();
    {
        let log = SqliteLog::open(path).unwrap();
        log.create_topic("t", 1).await.unwrap();
        log.append("t", vec![clarion_log::Record::new("k", "a")])
            .await
            .unwrap();
    }
    let log = SqliteLog::open(path).unwrap();
    let a = log
        .append("t", vec![clarion_log::Record::new("k", "b")])
        .await
        .unwrap();
    assert_eq!(a[0].offset, 1, "offsets continue after reopen");
    let all = log.read("t", 0, 0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
}

#[tokio::test]
async fn records_are_found_again_by_their_index_across_topics() {
    use clarion_log::Record;
    let (_dir, path) = log_file();
    let path = path.as_str();
    {
        let log = SqliteLog::open(path).unwrap();
        log.create_topic("a", 2).await.unwrap();
        log.create_topic("b", 1).await.unwrap();
        log.append(
            "a",
            vec![
                Record::new("k1", "a1").indexed("n1"),
                Record::new("k2", "a2").indexed("n2"),
                Record::new("k1", "a3"),
                Record::new("k1", "a4").indexed("n1"),
            ],
        )
        .await
        .unwrap();
        log.append("b", vec![Record::new("k9", "b1").indexed("n1")])
            .await
            .unwrap();
    }
    // Reopened: the index is in the file, not in memory.
    let log = SqliteLog::open(path).unwrap();
    let found = |recs: Vec<(String, LogRecord)>| {
        recs.into_iter()
            .map(|(t, r)| (t, r.key, String::from_utf8(r.value.to_vec()).unwrap()))
            .collect::<Vec<_>>()
    };
    let s = |t: &str, k: &str, v: &str| (t.to_string(), k.to_string(), v.to_string());
    assert_eq!(
        found(indexed(&log, "n1").await),
        vec![s("a", "k1", "a1"), s("a", "k1", "a4"), s("b", "k9", "b1")]
    );
    assert_eq!(found(indexed(&log, "n2").await), vec![s("a", "k2", "a2")]);
    assert!(found(indexed(&log, "n3").await).is_empty());
}

/// Index rows go in by statements of 32, 16, ..., 1 rows:
/// 63 indexed records (every chunk size once) of 21 keys, out of order and
/// mixed with unindexed ones, each still found under its own key only.
#[tokio::test]
async fn every_record_of_a_large_append_is_found_under_its_key() {
    use clarion_log::Record;
    let (_dir, path) = log_file();
    let log = SqliteLog::open(&path).unwrap();
    log.create_topic("t", 1).await.unwrap();
    let key = |i: usize| format!("n{:02}", (i * 13) % 21);
    let mut records = Vec::new();
    for i in 0..63 {
        records.push(Record::new("k", format!("v{i}")).indexed(key(i)));
        if i % 5 == 0 {
            records.push(Record::new("k", format!("plain{i}")));
        }
    }
    log.append("t", records).await.unwrap();
    for n in 0..21 {
        let k = format!("n{n:02}");
        let got: Vec<String> = indexed(&log, &k)
            .await
            .into_iter()
            .map(|(_, r)| String::from_utf8(r.value.to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..63)
            .filter(|&i| key(i) == k)
            .map(|i| format!("v{i}"))
            .collect();
        assert_eq!(want.len(), 3);
        assert_eq!(got, want, "records under {k}, in offset order");
    }
}

#[tokio::test]
async fn a_file_with_a_row_per_record_is_moved_into_batches_on_open() {
    // Given: a file in the layout before record batches: a row per record,
    // the index by offset; two appends at different times on partition 0.
    let (_dir, path) = log_file();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE topics (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                                  partitions INTEGER NOT NULL);
             CREATE TABLE records (topic INTEGER NOT NULL, partition INTEGER NOT NULL,
                 offset INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 ts INTEGER NOT NULL, PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
             CREATE TABLE record_index (idx BLOB NOT NULL, topic INTEGER NOT NULL,
                 partition INTEGER NOT NULL, offset INTEGER NOT NULL,
                 PRIMARY KEY (idx, topic, partition, offset)) WITHOUT ROWID;
             INSERT INTO topics VALUES (1, 'a', 2), (2, 'b', 1);
             INSERT INTO records VALUES
                 (1, 0, 0, 'k0', x'00', 100), (1, 0, 1, 'k1', x'01', 100),
                 (1, 0, 2, 'k2', x'02', 100), (1, 0, 3, 'k3', x'03', 200),
                 (1, 0, 4, 'k4', x'04', 200), (1, 1, 0, 'j0', x'10', 100),
                 (2, 0, 0, 'b0', x'20', 300);
             INSERT INTO record_index VALUES
                 (x'6e31', 1, 0, 1), (x'6e31', 1, 0, 4), (x'6e31', 2, 0, 0),
                 (x'6e32', 1, 1, 0);",
        )
        .unwrap();
    }

    // When: the log opens it.
    let log = SqliteLog::open(&path).unwrap();

    // Then: every record reads back at its offset, with its key, value and
    // time; the index finds the same records; appends continue after them.
    let a0 = log.read("a", 0, 0, 10).await.unwrap();
    assert_eq!(
        a0.iter()
            .map(|r| (r.offset, r.key.as_str(), r.value[0], r.timestamp_ms))
            .collect::<Vec<_>>(),
        vec![
            (0, "k0", 0, 100),
            (1, "k1", 1, 100),
            (2, "k2", 2, 100),
            (3, "k3", 3, 200),
            (4, "k4", 4, 200)
        ]
    );
    assert_eq!(log.read("a", 0, 3, 10).await.unwrap()[0].key, "k3");
    assert_eq!(log.read("a", 1, 0, 10).await.unwrap()[0].key, "j0");
    assert_eq!(log.read("b", 0, 0, 10).await.unwrap()[0].key, "b0");
    let found = |recs: Vec<(String, LogRecord)>| {
        recs.into_iter()
            .map(|(t, r)| (t, r.partition, r.offset, r.key))
            .collect::<Vec<_>>()
    };
    let at = |t: &str, p: u32, o: u64, k: &str| (t.to_string(), p, o, k.to_string());
    assert_eq!(
        found(indexed(&log, "n1").await),
        vec![
            at("a", 0, 1, "k1"),
            at("a", 0, 4, "k4"),
            at("b", 0, 0, "b0")
        ]
    );
    assert_eq!(found(indexed(&log, "n2").await), vec![at("a", 1, 0, "j0")]);
    assert_eq!(log.end_offset("a", 0).await.unwrap(), 5);
    let next = log
        .append("a", vec![clarion_log::Record::new("k0", "new")])
        .await
        .unwrap();
    assert_eq!((next[0].partition, next[0].offset), (0, 5));
    drop(log);
    let old = count(
        &path,
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('records', 'record_index')",
    );
    assert_eq!(old, 0, "the old tables are gone");
}

#[tokio::test]
async fn a_file_may_hold_compressed_and_plain_batches() {
    use clarion_log::Record;
    let (_dir, path) = log_file();
    // Records that repeat themselves, so LZ4 has something to take out.
    let recs = |from: usize| -> Vec<Record> {
        (from..from + 50)
            .map(|i| Record::new("k", format!("{i:04} {}", "event ".repeat(20))).indexed("n"))
            .collect()
    };
    let size = |path: &str| {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row("SELECT SUM(length(body)) FROM record_batches", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    {
        let log = SqliteLog::open(&format!("{path}?compression=lz4")).unwrap();
        log.create_topic("t", 1).await.unwrap();
        log.append("t", recs(0)).await.unwrap();
    }
    let compressed = size(&path);
    {
        let log = SqliteLog::open(&path).unwrap();
        log.append("t", recs(50)).await.unwrap();
    }
    let plain = size(&path) - compressed;
    assert!(compressed * 3 < plain, "{compressed} bytes against {plain}");

    let log = SqliteLog::open(&path).unwrap();
    let all = log.read("t", 0, 0, 200).await.unwrap();
    let want: Vec<Record> = recs(0).into_iter().chain(recs(50)).collect();
    assert_eq!(all.len(), 100);
    for (i, (got, want)) in all.iter().zip(&want).enumerate() {
        assert_eq!((got.offset, &got.value), (i as u64, &want.value));
    }
    assert_eq!(
        indexed(&log, "n")
            .await
            .iter()
            .map(|(_, r)| r.offset)
            .collect::<Vec<_>>(),
        (0..100).collect::<Vec<u64>>()
    );
    assert!(matches!(
        SqliteLog::open(&format!("{path}?compression=gzip")),
        Err(clarion_log::LogError::BadUrlParam { .. })
    ));
}

/// One commit's records of a key, over several topics, take one index row
/// (`record_keys.more` holds the others), and all are found again, in
/// topic, partition and offset order.
#[tokio::test]
async fn a_jobs_records_of_one_key_share_an_index_row() {
    use clarion_log::Record;
    let (_dir, path) = log_file();
    let log = SqliteLog::open(&path).unwrap();
    log.create_topic("a", 1).await.unwrap();
    log.create_topic("b", 2).await.unwrap();
    let (job, rxs) = log
        .append_jobs(vec![
            (
                "b".to_string(),
                vec![
                    Record::new("k1", "b1").indexed("n1"),
                    Record::new("k2", "b2").indexed("n2"),
                    Record::new("k1", "b3").indexed("n1"),
                ],
            ),
            (
                "a".to_string(),
                vec![
                    Record::new("k1", "a1").indexed("n1"),
                    Record::new("k1", "a2"),
                ],
            ),
        ])
        .await
        .unwrap();
    log.writer().submit(job);
    let mut offsets = Vec::new();
    for rx in rxs {
        offsets.push(rx.await.unwrap().unwrap().len());
    }
    assert_eq!(offsets, vec![3, 2], "each topic's append is answered");
    // A second commit adds a row of its own for n1.
    log.append("a", vec![Record::new("k1", "a3").indexed("n1")])
        .await
        .unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(Vec<u8>, bool)> = conn
        .prepare("SELECT idx, more IS NOT NULL FROM record_keys ORDER BY idx, batch")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (b"n1".to_vec(), true),
            (b"n1".to_vec(), false),
            (b"n2".to_vec(), false)
        ]
    );
    let values = |recs: Vec<(String, LogRecord)>| {
        recs.into_iter()
            .map(|(t, r)| format!("{t}:{}", String::from_utf8(r.value.to_vec()).unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(indexed(&log, "n1").await),
        vec!["a:a1", "a:a3", "b:b1", "b:b3"]
    );
    assert_eq!(values(indexed(&log, "n2").await), vec!["b:b2"]);
}

/// A file whose index predates `record_keys.more` gets the column when
/// opened, and its rows are still found.
#[tokio::test]
async fn an_index_from_before_shared_rows_still_reads() {
    use clarion_log::Record;
    let (_dir, path) = log_file();
    {
        let log = SqliteLog::open(&path).unwrap();
        log.create_topic("t", 1).await.unwrap();
        log.append(
            "t",
            vec![
                Record::new("k", "v1").indexed("n1"),
                Record::new("k", "v2").indexed("n1"),
            ],
        )
        .await
        .unwrap();
    }
    {
        // The table as it was: a row per record, no `more`.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE old_keys (idx BLOB NOT NULL, batch INTEGER NOT NULL,
                 pos INTEGER NOT NULL, PRIMARY KEY (idx, batch, pos)) WITHOUT ROWID;
             INSERT INTO old_keys SELECT idx, batch, pos FROM record_keys;
             INSERT INTO old_keys SELECT idx, batch, 1 FROM record_keys;
             DROP TABLE record_keys;
             ALTER TABLE old_keys RENAME TO record_keys;",
        )
        .unwrap();
    }
    let log = SqliteLog::open(&path).unwrap();
    let got: Vec<String> = indexed(&log, "n1")
        .await
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.value.to_vec()).unwrap())
        .collect();
    assert_eq!(got, vec!["v1", "v2"]);
    let more = count(
        &path,
        "SELECT COUNT(*) FROM pragma_table_info('record_keys') WHERE name = 'more'",
    );
    assert_eq!(more, 1);
}

/// A subscription reads the batches its log just committed from memory
/// (the last few MiB of each partition it watches); one that fell further
/// behind reads the older ones from the file: every record once, in order.
#[tokio::test]
async fn a_tail_reads_from_memory_and_from_the_file_alike() {
    use clarion_log::Record;
    use std::time::Duration;
    let (_dir, path) = log_file();
    let log = SqliteLog::open(&path).unwrap();
    log.create_topic("t", 1).await.unwrap();
    let mut sub = log.subscribe("t", 0, 0).await.unwrap();
    // 12 MiB in appends of 64 records of 4 KiB: the first ones leave memory.
    let value = |i: usize| format!("{i:08}{}", "x".repeat(4096));
    let total = 3 * 1024;
    for chunk in 0..total / 64 {
        let recs = (chunk * 64..(chunk + 1) * 64)
            .map(|i| Record::new("k", value(i)))
            .collect();
        log.append("t", recs).await.unwrap();
    }
    let mut got = 0usize;
    while got < total {
        let batch = sub.next_batch(500, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty(), "stalled at {got}");
        for r in batch {
            assert_eq!(r.offset as usize, got, "offsets in order, none twice");
            assert_eq!(&r.value[..8], format!("{got:08}").as_bytes());
            got += 1;
        }
    }
    // And what is appended now comes from memory, the same.
    log.append("t", vec![Record::new("k", "last")])
        .await
        .unwrap();
    let batch = sub.next_batch(500, Duration::from_secs(2)).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(
        (batch[0].offset as usize, &batch[0].value[..]),
        (total, &b"last"[..])
    );
}
