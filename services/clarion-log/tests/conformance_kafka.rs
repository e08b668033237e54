//! The log conformance suite against a real Kafka-protocol broker (tansu,
//! started by `scripts/kafka-up.sh`). The broker address comes from
//! `CLARION_KAFKA_BROKERS` (default 127.0.0.1:9092). CI always has the broker;
//! if it is not reachable this test fails rather than skipping, unless
//! `CLARION_SKIP_KAFKA=1` is set explicitly.
#![cfg(feature = "kafka")]

use std::sync::Arc;

use clarion_log::{log_conformance_tests, EventLog};

async fn make() -> Option<Arc<dyn EventLog>> {
    open("").await
}

/// `query`: the URL's parameters (the consumers' mode).
async fn open(query: &str) -> Option<Arc<dyn EventLog>> {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka conformance not run");
        return None;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let log = clarion_log::open(&format!("kafka://{brokers}{query}"))
        .await
        .unwrap_or_else(|e| panic!("Kafka broker at {brokers} (run scripts/kafka-up.sh): {e}"));
    Some(log)
}

fn prefix() -> String {
    format!("conf-{}-", uuid::Uuid::new_v4().simple())
}

log_conformance_tests!(make(), prefix);

/// The same suite with the tailing readers sharing consumers
/// (`readers=shared`, experimental).
mod shared_readers {
    use super::*;

    async fn make() -> Option<Arc<dyn EventLog>> {
        open("?readers=shared").await
    }

    log_conformance_tests!(make(), prefix);
}
