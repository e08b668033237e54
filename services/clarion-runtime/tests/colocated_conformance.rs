//! The log and store conformance suites on the embedded default: the log and
//! the store in one SQLite file, sharing its writer thread.

use std::sync::Arc;

use clarion_runtime::colocated::Colocated;

/// A log and store in one fresh file, kept for the rest of the process.
fn open() -> &'static Colocated {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let path = dir.path().join("clarion.db");
    Box::leak(Box::new(Colocated::open(path.to_str().unwrap()).unwrap()))
}

mod store {
    use super::*;
    use clarion_store::{store_conformance_tests, Store};

    async fn make() -> Option<Arc<dyn Store>> {
        Some(open().store())
    }

    fn tenant() -> String {
        "acme".to_string()
    }

    store_conformance_tests!(make(), tenant);
}

mod log {
    use super::*;
    use clarion_log::{log_conformance_tests, EventLog};

    async fn make() -> Option<Arc<dyn EventLog>> {
        Some(open().log())
    }

    fn prefix() -> String {
        "t-".to_string()
    }

    log_conformance_tests!(make(), prefix);
}
