//! The embedded log's append path against a raw SQLite baseline.
//!
//! - `sqlite_log/batch/N`: one task calling `SqliteLog::append` with batches of
//!   N ~300-byte records (N = 1, 64, 1024), each awaited before the next;
//! - `sqlite_log/concurrent_appenders/C`: C tasks each appending one record at a
//!   time, so the writer thread's group commit merges their appends;
//! - `raw_rusqlite/txn/N`: the baseline: a plain rusqlite loop inserting
//!   ~300-byte rows, one transaction per N rows (N = 1024 is the reference; 1
//!   and 64 for the matching log cases), into a `WITHOUT ROWID` table with the
//!   schema of the log's `records` table.
//!
//! Both sides use a file in a temporary directory with `journal_mode=WAL` and
//! `synchronous=NORMAL`, as the log does. Throughput is records per second; the
//! pipeline/raw ratio is `sqlite_log` records/s over `raw_rusqlite/txn/1024`.
//!
//!     cargo bench -p clarion-bench --bench log_append -- --warm-up-time 1 --measurement-time 3

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clarion_bench::record_value;
use clarion_log::embedded::SqliteLog;
use clarion_log::{partition_for, EventLog, Record};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rusqlite::{params, Connection};

const TOPIC: &str = "bench";
const PARTITIONS: u32 = 4;
/// Distinct keys (recipients) the records cycle through.
const KEYS: usize = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    // Two workers: the size of the machine the figures are taken on.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn records(value: &Bytes, n: usize, start: usize) -> Vec<Record> {
    (start..start + n)
        .map(|i| Record::new(format!("acme/sub-{}", i % KEYS), value.clone()))
        .collect()
}

fn bench_sqlite_log(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let log = Arc::new(SqliteLog::open(path.to_str().expect("utf-8 path")).expect("open log"));
    rt.block_on(log.create_topic(TOPIC, PARTITIONS))
        .expect("create topic");
    let value = Bytes::from(record_value());
    eprintln!("record value: {} bytes", value.len());

    let mut g = c.benchmark_group("sqlite_log");
    g.sample_size(20);
    for n in [1usize, 64, 1024] {
        let batch = records(&value, n, 0);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("batch", n), &batch, |b, batch| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        log.append(TOPIC, batch.clone()).await.expect("append");
                    }
                    start.elapsed()
                })
            })
        });
    }
    // As the pipeline appends: every record also carries a notification's
    // history key (tenant, 0, 16-byte time-ordered id; six records share one).
    let n = 1024usize;
    let mut next_id = 0u64;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("batch_indexed", n), |b| {
        b.iter_custom(|iters| {
            let mut batches = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                let batch: Vec<Record> = records(&value, n, 0)
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut k = b"acme\0".to_vec();
                        k.extend_from_slice(&(next_id + i as u64 / 6).to_be_bytes());
                        k.extend_from_slice(&[0; 8]);
                        r.indexed(k)
                    })
                    .collect();
                next_id += n as u64;
                batches.push(batch);
            }
            rt.block_on(async {
                let start = Instant::now();
                for batch in batches {
                    log.append(TOPIC, batch).await.expect("append");
                }
                start.elapsed()
            })
        })
    });
    for appenders in [16usize, 64, 256] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("concurrent_appenders", appenders), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let iters = iters as usize;
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..appenders)
                        .map(|a| {
                            // Split `iters` appends over the tasks exactly.
                            let mine = iters / appenders + usize::from(a < iters % appenders);
                            let log = log.clone();
                            let value = value.clone();
                            tokio::spawn(async move {
                                for i in 0..mine {
                                    log.append(TOPIC, records(&value, 1, a * 7919 + i))
                                        .await
                                        .expect("append");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("appender task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn bench_raw_rusqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = Connection::open(dir.path().join("raw.db")).expect("open raw db");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE records (
             topic INTEGER NOT NULL,
             partition INTEGER NOT NULL,
             offset INTEGER NOT NULL,
             key TEXT NOT NULL,
             value BLOB NOT NULL,
             ts INTEGER NOT NULL,
             PRIMARY KEY (topic, partition, offset)
         ) WITHOUT ROWID;",
    )
    .expect("schema");
    let value = record_value();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("acme/sub-{i}")).collect();
    let mut next = [0i64; PARTITIONS as usize];
    let mut k = 0usize;

    let mut g = c.benchmark_group("raw_rusqlite");
    g.sample_size(20);
    for n in [1usize, 64, 1024] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("txn", n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let tx = conn.transaction().expect("begin");
                    {
                        let mut ins = tx
                            .prepare_cached(
                                "INSERT INTO records (topic, partition, offset, key, value, ts)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            )
                            .expect("prepare");
                        let ts = now_ms();
                        for _ in 0..n {
                            let key = &keys[k % KEYS];
                            let p = partition_for(key, PARTITIONS) as usize;
                            ins.execute(params![1i64, p as i64, next[p], key, &value[..], ts])
                                .expect("insert");
                            next[p] += 1;
                            k += 1;
                        }
                    }
                    tx.commit().expect("commit");
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench_sqlite_log, bench_raw_rusqlite
}
criterion_main!(benches);
