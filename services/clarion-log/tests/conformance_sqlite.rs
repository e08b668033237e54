//! The log conformance suite on the embedded SQLite backend (a real file).

use std::sync::Arc;

use clarion_log::{embedded::SqliteLog, log_conformance_tests, EventLog};

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
    let found = |idx: &'static str| {
        let log = &log;
        async move {
            log.read_indexed(idx.as_bytes())
                .await
                .unwrap()
                .expect("the embedded log keeps an index")
                .into_iter()
                .map(|(t, r)| (t, r.key, String::from_utf8(r.value.to_vec()).unwrap()))
                .collect::<Vec<_>>()
        }
    };
    let s = |t: &str, k: &str, v: &str| (t.to_string(), k.to_string(), v.to_string());
    assert_eq!(
        found("n1").await,
        vec![s("a", "k1", "a1"), s("a", "k1", "a4"), s("b", "k9", "b1")]
    );
    assert_eq!(found("n2").await, vec![s("a", "k2", "a2")]);
    assert!(found("n3").await.is_empty());
}
