//! A router partition's run horizon: the latest creation time among the
//! notifications it has started runs for.
//!
//! A trigger must find its run if it has one (a retried request, a
//! re-delivered `Triggered`): that is the router's deduplication. Nearly
//! every trigger is new, though, and looking each one up in the store was a
//! read per notification for rows that do not exist (about 3 % of the
//! server's time at full load). Notification ids lead with their creation
//! time (`Id::time_ordered`), so a partition that keeps the latest time it
//! has seen, committed with the runs it creates, knows that an id created
//! after it has no run. Ids at or before the horizon, or not time-ordered,
//! are looked up as before: the horizon only ever saves reads, never
//! decides that a run exists.
//!
//! The horizon read at start is the latest of every partition's (after the
//! partition count changes, a recipient's triggers may come to another
//! partition than before). A partition whose router never committed a
//! trigger starts there (at 0 on a new file). One that did before horizons
//! were kept (a file from an older version) has no known horizon and keeps
//! looking every trigger up.

use bytes::Bytes;
use clarion_domain::Id;
use clarion_store::{RowKey, Scan, Store, StoreError, Table, SYSTEM_TENANT};

use crate::processor::Batch;

#[derive(Debug, Default, PartialEq)]
enum State {
    /// Not read yet: nothing is surely new.
    #[default]
    Unread,
    /// No id created after this time (ms) has a run in this partition.
    Known(i64),
    /// Runs were created before the horizon was kept.
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Horizon {
    state: State,
    /// The latest creation time among this batch's triggers.
    seen: i64,
}

/// The horizons' rows: one per partition (the clustering key).
const PK: &str = "router-horizon";

fn key(partition: u32) -> RowKey {
    RowKey::new(
        Table::Runs,
        SYSTEM_TENANT,
        PK,
        partition.to_be_bytes().to_vec(),
    )
}

/// The creation time an id claims, if it is an id at all.
fn created_ms(notification_id: &str) -> Option<i64> {
    Id::parse_hex(notification_id).map(|id| id.time_ms())
}

impl Horizon {
    /// Reads the partition's horizon before its first batch of triggers.
    /// `first_offset` is where that batch starts: the router resumes after
    /// the last trigger it committed, so 0 means it never committed one.
    ///
    /// The horizon is the latest of every partition's: after the partition
    /// count changed, a recipient's triggers may come to a partition other
    /// than the one that made its earlier runs.
    pub(crate) async fn read_once(
        &mut self,
        store: &dyn Store,
        partition: u32,
        first_offset: u64,
    ) -> Result<(), StoreError> {
        if self.state != State::Unread {
            return Ok(());
        }
        let rows = store
            .scan(&Scan::partition(Table::Runs, SYSTEM_TENANT, PK, 100_000))
            .await?;
        let own = partition.to_be_bytes();
        let mut latest = 0i64;
        let mut has_own = false;
        for (ck, value) in &rows {
            let Ok(b) = <[u8; 8]>::try_from(&value[..]) else {
                self.state = State::Unknown; // not ours to read: be safe
                return Ok(());
            };
            latest = latest.max(i64::from_be_bytes(b));
            has_own |= ck[..] == own;
        }
        self.state = if has_own || first_offset == 0 {
            State::Known(latest)
        } else {
            State::Unknown
        };
        Ok(())
    }

    /// Whether the notification surely has no run: it was created after
    /// every notification this partition has started a run for.
    pub(crate) fn surely_new(&self, notification_id: &str) -> bool {
        match self.state {
            State::Known(h) => created_ms(notification_id).is_some_and(|t| t > h),
            State::Unread | State::Unknown => false,
        }
    }

    /// Notes a trigger this batch handles (whether or not a run starts).
    pub(crate) fn note(&mut self, notification_id: &str) {
        if let Some(t) = created_ms(notification_id) {
            self.seen = self.seen.max(t);
        }
    }

    /// Moves the horizon past the batch's triggers, in the batch's commit.
    pub(crate) fn write(&mut self, batch: &mut Batch) {
        if let State::Known(h) = self.state {
            if self.seen > h {
                batch.writes.put(
                    key(batch.partition),
                    Bytes::copy_from_slice(&self.seen.to_be_bytes()),
                );
                self.state = State::Known(self.seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_at(ms: i64) -> String {
        Id::time_ordered(ms, &[b"n"]).to_hex()
    }

    #[test]
    fn only_ids_created_after_the_horizon_are_surely_new() {
        let mut h = Horizon {
            state: State::Known(1_000),
            seen: 0,
        };
        assert!(h.surely_new(&id_at(1_001)));
        assert!(!h.surely_new(&id_at(1_000)));
        assert!(!h.surely_new(&id_at(999)));
        assert!(!h.surely_new("not-an-id"));
        h.note(&id_at(5_000));
        h.note(&id_at(2_000));
        let mut batch = Batch {
            partition: 3,
            ..Default::default()
        };
        h.write(&mut batch);
        assert_eq!(batch.writes.ops.len(), 1);
        assert!(!h.surely_new(&id_at(5_000)));
        assert!(h.surely_new(&id_at(5_001)));
        // Nothing later seen: nothing to write.
        let mut again = Batch::default();
        h.write(&mut again);
        assert!(again.writes.ops.is_empty());
    }

    #[tokio::test]
    async fn the_horizon_is_read_from_the_store_once() {
        use clarion_store::embedded::SqliteStore;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let read = |partition: u32, first_offset: u64| {
            let store = &store;
            async move {
                let mut h = Horizon::default();
                h.read_once(store, partition, first_offset).await.unwrap();
                h
            }
        };
        // Never committed a trigger: nothing has a run yet.
        let mut fresh = read(0, 0).await;
        assert_eq!(fresh.state, State::Known(0));
        // Committed triggers, but no horizon kept: every id is looked up.
        assert_eq!(read(0, 500).await.state, State::Unknown);
        // A kept horizon is read back.
        fresh.note(&id_at(7_000));
        let mut batch = Batch::default();
        fresh.write(&mut batch);
        store.write(batch.writes).await.unwrap();
        assert_eq!(read(0, 500).await.state, State::Known(7_000));
        // Another partition that committed triggers without one is unknown;
        // a new partition (the count grew) starts at the latest of all.
        assert_eq!(read(1, 500).await.state, State::Unknown);
        assert_eq!(read(2, 0).await.state, State::Known(7_000));
        let mut later = read(3, 0).await;
        later.note(&id_at(9_000));
        let mut batch = Batch {
            partition: 3,
            ..Default::default()
        };
        later.write(&mut batch);
        store.write(batch.writes).await.unwrap();
        assert_eq!(read(0, 500).await.state, State::Known(9_000));
        // Read only once.
        fresh.state = State::Known(1);
        fresh.read_once(&store, 0, 500).await.unwrap();
        assert_eq!(fresh.state, State::Known(1));
    }

    #[test]
    fn an_unknown_or_unread_horizon_makes_nothing_new() {
        for state in [State::Unread, State::Unknown] {
            let mut h = Horizon { state, seen: 0 };
            assert!(!h.surely_new(&id_at(i64::from(u32::MAX))));
            h.note(&id_at(10));
            let mut batch = Batch::default();
            h.write(&mut batch);
            assert!(batch.writes.ops.is_empty());
        }
    }
}
