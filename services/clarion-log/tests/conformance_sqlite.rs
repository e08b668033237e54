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

#[tokio::test]
async fn records_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let path = path.to_str().unwrap();
    {
        let log = SqliteLog::open(path).unwrap();
        log.create_topic("t", 1).await.unwrap();
        log.append(
            "t",
            vec![clarion_log::Record {
                key: "k".into(),
                value: "a".into(),
            }],
        )
        .await
        .unwrap();
    }
    let log = SqliteLog::open(path).unwrap();
    let a = log
        .append(
            "t",
            vec![clarion_log::Record {
                key: "k".into(),
                value: "b".into(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(a[0].offset, 1, "offsets continue after reopen");
    let all = log.read("t", 0, 0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
}
