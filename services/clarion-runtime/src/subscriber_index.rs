//! The index of each subscriber's notifications (`GET
//! /v1/subscribers/{id}/notifications`): one row per notification the
//! router accepted, in the subscriber's partition of
//! [`Table::SubscriberNotifications`], clustered by notification id.
//! Notification ids lead with their creation time, so the clustering order
//! is the time order and a reverse scan lists the newest first.

use clarion_store::{RowKey, Scan, Table};
use serde::{Deserialize, Serialize};

/// What a row holds besides its key (the creation time is in the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub workflow_id: String,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The row of one notification of one subscriber.
pub fn row(tenant: &str, subscriber_id: &str, notification_id: &str) -> RowKey {
    RowKey::new(
        Table::SubscriberNotifications,
        tenant,
        subscriber_id,
        notification_id.as_bytes().to_vec(),
    )
}

/// The subscriber's notifications, newest first, up to `limit` rows.
pub fn newest_first(tenant: &str, subscriber_id: &str, limit: usize) -> Scan {
    Scan::partition(Table::SubscriberNotifications, tenant, subscriber_id, limit).reversed()
}
