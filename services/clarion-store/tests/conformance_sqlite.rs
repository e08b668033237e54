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
