//! Digests: one subscriber's events with the same key, collected over a
//! window and sent as one message (docs/scheduling.md).
//!
//! Issue #33 (digests) grows this module: the accumulator's decisions
//! (lead, join, close early at `max_items`, close by timer or flush).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event in a digest: its run's notification, when it arrived, and its
/// payload whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub notification_id: String,
    pub at_ms: i64,
    pub payload: Value,
}

/// A closed digest, kept on the leader's run for its sends (templates see
/// `digest.items`, `digest.count`, `digest.first_at`, `digest.last_at`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The digest key's value.
    pub key: String,
    pub items: Vec<Item>,
}
