//! Records a partition cannot process: where a partition stopped, what an
//! operator parked, and what this process reports about its partitions.
//!
//! A runner that meets a record it cannot process (undecodable, an unknown
//! event type, an input its processor refuses, a store error that does not
//! clear) stops that one partition of that one processor at the record's
//! offset; the rest of the process goes on. It says so three ways: a log
//! line with the offset and reason, the `clarion_partition_stopped` gauge
//! and [`PartitionReport`] (served at `/v1/admin/partitions`), and a row in
//! the store's quarantine table ([`record_stop`]) that any gateway lists.
//! An operator inspects the record and parks it ([`park`]): a
//! `RecordQuarantined` row, with who, why and the record's hash. The stopped
//! runner polls for it, then skips exactly that offset and goes on; every
//! parked offset stays listed. Nothing is skipped that no operator parked.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, Table, WriteBatch, SYSTEM_TENANT};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::processor::ProcessError;

/// Partition of the quarantine table holding stopped partitions.
const STOPPED_PK: &str = "stopped";
/// Partition of the quarantine table holding parked records.
const PARKED_PK: &str = "parked";
/// Most rows one listing reads.
const MAX_LISTED: usize = 10_000;

/// A processor partition: `processor/topic/partition`, as in offset keys.
pub fn partition_key(processor: &str, topic: &str, partition: u32) -> String {
    format!("{processor}/{topic}/{partition}")
}

/// Where a partition stopped, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub processor: String,
    /// The full topic name.
    pub topic: String,
    pub partition: u32,
    /// The record it stopped at; everything before it is applied.
    pub offset: u64,
    pub reason: String,
    pub stopped_at_ms: i64,
}

impl Stop {
    pub fn key(&self) -> String {
        partition_key(&self.processor, &self.topic, self.partition)
    }
}

fn stopped_row(key: &str) -> RowKey {
    RowKey::new(Table::Quarantine, SYSTEM_TENANT, STOPPED_PK, key.as_bytes())
}

/// Clustering key of a parked record: the partition, a 0 byte (which no
/// key contains, so one partition's offsets are a contiguous range), then
/// the offset big-endian.
fn parked_ck(key: &str, offset: u64) -> Vec<u8> {
    let mut ck = Vec::with_capacity(key.len() + 9);
    ck.extend_from_slice(key.as_bytes());
    ck.push(0);
    ck.extend_from_slice(&offset.to_be_bytes());
    ck
}

fn parked_row(key: &str, offset: u64) -> RowKey {
    RowKey::new(
        Table::Quarantine,
        SYSTEM_TENANT,
        PARKED_PK,
        parked_ck(key, offset),
    )
}

/// Records that the partition stopped (replacing an earlier stop of it).
pub async fn record_stop(store: &dyn Store, stop: &Stop) -> Result<(), ProcessError> {
    let value = serde_json::to_vec(stop).expect("a stop serializes");
    let mut w = WriteBatch::new();
    w.put(stopped_row(&stop.key()), value);
    Ok(store.write(w).await?)
}

/// Removes the partition's stop (it goes on).
pub async fn clear_stop(store: &dyn Store, key: &str) -> Result<(), ProcessError> {
    let mut w = WriteBatch::new();
    w.delete(stopped_row(key));
    Ok(store.write(w).await?)
}

/// The partition's recorded stop, if it is stopped.
pub async fn stop_of(store: &dyn Store, key: &str) -> Result<Option<Stop>, ProcessError> {
    Ok(store
        .get(&stopped_row(key))
        .await?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// Every stopped partition, by key.
pub async fn stopped(store: &dyn Store) -> Result<Vec<Stop>, ProcessError> {
    let rows = store
        .scan(&Scan::partition(
            Table::Quarantine,
            SYSTEM_TENANT,
            STOPPED_PK,
            MAX_LISTED,
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// Writes an operator's quarantine of a record: the partition named in it
/// skips that offset from now on.
pub async fn park(store: &dyn Store, q: &pb::RecordQuarantined) -> Result<(), ProcessError> {
    let key = partition_key(&q.processor, &q.topic, q.partition);
    let mut w = WriteBatch::new();
    w.put(parked_row(&key, q.offset), q.encode_to_vec());
    Ok(store.write(w).await?)
}

/// The quarantine entry of one record, if it was parked.
pub async fn parked(
    store: &dyn Store,
    key: &str,
    offset: u64,
) -> Result<Option<pb::RecordQuarantined>, ProcessError> {
    Ok(store
        .get(&parked_row(key, offset))
        .await?
        .and_then(|v| pb::RecordQuarantined::decode(&v[..]).ok()))
}

/// The parked offsets of one partition.
pub async fn parked_offsets(store: &dyn Store, key: &str) -> Result<BTreeSet<u64>, ProcessError> {
    let mut end = key.as_bytes().to_vec();
    end.push(1);
    let rows = store
        .scan(
            &Scan::partition(Table::Quarantine, SYSTEM_TENANT, PARKED_PK, usize::MAX)
                .range(Bound::Included(parked_ck(key, 0)), Bound::Excluded(end)),
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(ck, _)| {
            let tail = ck.get(ck.len().checked_sub(8)?..)?;
            Some(u64::from_be_bytes(tail.try_into().ok()?))
        })
        .collect())
}

/// Every quarantined record, by partition then offset.
pub async fn quarantined(store: &dyn Store) -> Result<Vec<pb::RecordQuarantined>, ProcessError> {
    let rows = store
        .scan(&Scan::partition(
            Table::Quarantine,
            SYSTEM_TENANT,
            PARKED_PK,
            MAX_LISTED,
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| pb::RecordQuarantined::decode(&v[..]).ok())
        .collect())
}

/// What a runner of this process is doing when it is not simply running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionState {
    pub processor: String,
    pub topic: String,
    pub partition: u32,
    /// "stopped" (at a record, until an operator parks it) or "paused"
    /// (storage full or unavailable: retrying with backoff).
    pub state: &'static str,
    /// Stopped: the record's offset; paused: the next offset to apply.
    pub offset: u64,
    pub reason: String,
    pub since_ms: i64,
}

/// The partitions of this process that are stopped or paused (shared by
/// its runners and the HTTP `/v1/admin/partitions` route), mirrored in the
/// `clarion_partition_stopped` and `clarion_partition_paused` gauges.
#[derive(Clone, Default)]
pub struct PartitionReport(Arc<Mutex<BTreeMap<String, PartitionState>>>);

impl PartitionReport {
    fn gauge(s: &PartitionState, value: f64) {
        let labels = [
            ("processor", s.processor.clone()),
            ("topic", s.topic.clone()),
            ("partition", s.partition.to_string()),
        ];
        match s.state {
            "stopped" => metrics::gauge!("clarion_partition_stopped", &labels).set(value),
            _ => metrics::gauge!("clarion_partition_paused", &labels).set(value),
        }
    }

    /// Sets the state of partition `key` (replacing any earlier one).
    pub fn set(&self, key: &str, state: PartitionState) {
        let mut map = self.0.lock().expect("partition report lock");
        if let Some(old) = map.get(key) {
            if old.state != state.state {
                Self::gauge(old, 0.0);
            }
        }
        Self::gauge(&state, 1.0);
        map.insert(key.to_string(), state);
    }

    /// Partition `key` runs again.
    pub fn clear(&self, key: &str) {
        if let Some(old) = self.0.lock().expect("partition report lock").remove(key) {
            Self::gauge(&old, 0.0);
        }
    }

    /// Every stopped or paused partition, by key.
    pub fn snapshot(&self) -> Vec<PartitionState> {
        self.0
            .lock()
            .expect("partition report lock")
            .values()
            .cloned()
            .collect()
    }
}

/// The bytes of a record as a quarantine entry keeps them: at most this many.
pub const MAX_KEPT_RECORD: usize = 64 * 1024;

/// A record's bytes as kept in its quarantine entry (empty beyond
/// [`MAX_KEPT_RECORD`]: the hash and size still identify it).
pub fn kept_bytes(value: &Bytes) -> Vec<u8> {
    if value.len() <= MAX_KEPT_RECORD {
        value.to_vec()
    } else {
        Vec::new()
    }
}
