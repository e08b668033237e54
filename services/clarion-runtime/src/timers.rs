//! Timers: events to append at a due time.
//!
//! A processor schedules a timer as part of its batch commit (so it exists iff
//! the decision that made it committed). The runner of that partition fires due
//! timers by appending their events to the log, where they are inputs like any
//! other: replaying the log replays the timer, and firing twice after a crash
//! is harmless because the event id is fixed when the timer is scheduled.

use bytes::Bytes;
use clarion_log::EventLog;
use clarion_store::{RowKey, Scan, Store, Table, WriteBatch, SYSTEM_TENANT};
use std::ops::Bound;

use crate::colocated::Colocated;
use crate::outbox::OutboxEntry;
use crate::processor::{Emit, ProcessError};
use crate::runner::{encode_emits, publish};
use crate::topics::Topics;

/// Clustering key: due time (sign-flipped so byte order is time order), then
/// the event id so timers due at the same instant do not collide.
fn ck(due_ms: i64, emit: &Emit) -> Vec<u8> {
    let mut ck = ((due_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    ck.extend_from_slice(&emit.event.id.0);
    ck
}

pub(crate) fn row(owner: &str, due_ms: i64, emit: &Emit) -> (RowKey, Bytes) {
    let entry = OutboxEntry {
        emits: vec![emit.clone()],
        effects: Vec::new(),
    };
    (
        RowKey::new(Table::Timers, SYSTEM_TENANT, owner, ck(due_ms, emit)),
        entry.encode(),
    )
}

/// Due timers fired per scan of a partition's timers at most.
const FIRE_CHUNK: usize = 20_000;

/// The scan of `owner`'s timers due at `now_ms`, at most `limit` of them.
fn due_scan(owner: &str, now_ms: i64, limit: usize) -> Scan {
    let upto = ((now_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    let mut end = upto;
    end.extend_from_slice(&[0xff; 16]);
    Scan::partition(Table::Timers, SYSTEM_TENANT, owner, limit)
        .range(Bound::Unbounded, Bound::Included(end))
}

/// Whether a timer of `owner` is due at `now_ms`.
pub async fn any_due(store: &dyn Store, owner: &str, now_ms: i64) -> Result<bool, ProcessError> {
    Ok(!store.scan(&due_scan(owner, now_ms, 1)).await?.is_empty())
}

/// Fires every timer of `owner` due at `now_ms`; returns how many fired.
/// With the log and store `colocated`, the appends and the deletes of the
/// timer rows are one transaction; otherwise a crash between them fires the
/// timer again, with the same event id.
pub async fn fire_due(
    store: &dyn Store,
    log: &dyn EventLog,
    colocated: Option<&Colocated>,
    topics: &Topics,
    owner: &str,
    now_ms: i64,
) -> Result<usize, ProcessError> {
    // Big chunks: the runner looks for due timers between its batches, so
    // a small chunk made firing wait for the router (9,000 timers/s with
    // 1,000 per scan, 77,000/s with 20,000; docs/benchmarks.md, "Pending
    // timers"). What fired is then applied at the router's own pace.
    let due = store.scan(&due_scan(owner, now_ms, FIRE_CHUNK)).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut emits = Vec::with_capacity(due.len());
    let mut del = WriteBatch::new();
    for (ck, value) in &due {
        let entry = OutboxEntry::decode(value.clone()).map_err(|e| ProcessError::Poison {
            offset: 0,
            reason: e.to_string(),
        })?;
        emits.extend(entry.emits);
        del.delete(RowKey::new(Table::Timers, SYSTEM_TENANT, owner, ck.clone()));
    }
    match colocated {
        Some(c) => {
            let encoded = encode_emits(&emits);
            c.commit(del, topics, emits, encoded).await?
        }
        None => {
            publish(log, topics, &emits).await?;
            store.write(del).await?;
        }
    }
    Ok(due.len())
}
