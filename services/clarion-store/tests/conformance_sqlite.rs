//! The store conformance suite on the embedded SQLite backend (a real file).

use std::sync::Arc;

use clarion_store::{embedded::SqliteStore, store_conformance_tests, Store};

async fn make() -> Option<Arc<dyn Store>> {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let path = dir.path().join("store.db");
    Some(Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap()))
}

fn tenant() -> String {
    "acme".to_string()
}

store_conformance_tests!(make(), tenant);

/// Expired rows are deleted from the file (not only hidden from reads), and
/// rows still alive or without a TTL stay.
#[tokio::test]
async fn purge_deletes_expired_rows_from_the_file() {
    use bytes::Bytes;
    use clarion_store::{RowKey, Table, WriteBatch};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
    let mut b = WriteBatch::new();
    for i in 0..12_000u32 {
        // More than one purge chunk of expiring rows.
        let key = RowKey::new(Table::Dedup, "acme", "router", i.to_be_bytes().to_vec());
        b.put_ttl(key, Bytes::new(), Duration::from_secs(1));
    }
    let keep = RowKey::new(Table::Dedup, "acme", "router", b"keep".to_vec());
    b.put_ttl(keep.clone(), Bytes::new(), Duration::from_secs(3600));
    let forever = RowKey::new(Table::Subscribers, "acme", "ana", Vec::new());
    b.put(forever.clone(), Bytes::from_static(b"ana"));
    store.write(b).await.unwrap();
    // TTL is wall-clock (as on ScyllaDB): the one real wait of this test.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.purge_expired().await.unwrap();

    let raw = rusqlite::Connection::open(&path).unwrap();
    let count = |t: &str| -> i64 {
        raw.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        count("dedup"),
        1,
        "only the row with an hour to live is left"
    );
    assert_eq!(count("subscribers"), 1);
    assert!(store.get(&keep).await.unwrap().is_some());
    assert!(store.get(&forever).await.unwrap().is_some());
}
