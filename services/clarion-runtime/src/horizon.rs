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
//! A partition whose router never committed a trigger starts at 0. One that
//! did before the horizon existed (a file from an older version) has no
//! known horizon and keeps looking every trigger up.

use bytes::Bytes;
use clarion_domain::Id;
use clarion_store::{RowKey, Store, StoreError, Table, SYSTEM_TENANT};

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

fn key(partition: u32) -> RowKey {
    RowKey::new(
        Table::Runs,
        SYSTEM_TENANT,
        "router-horizon",
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
    pub(crate) async fn read_once(
        &mut self,
        store: &dyn Store,
        partition: u32,
        first_offset: u64,
    ) -> Result<(), StoreError> {
        if self.state != State::Unread {
            return Ok(());
        }
        let stored = store.get(&key(partition)).await?;
        self.state = match stored.as_deref().map(<[u8; 8]>::try_from) {
            Some(Ok(b)) => State::Known(i64::from_be_bytes(b)),
            Some(Err(_)) => State::Unknown,
            None if first_offset == 0 => State::Known(0),
            None => State::Unknown,
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
        // Never committed a trigger: nothing has a run yet.
        let mut fresh = Horizon::default();
        fresh.read_once(&store, 0, 0).await.unwrap();
        assert_eq!(fresh.state, State::Known(0));
        // Committed triggers, but no horizon kept: every id is looked up.
        let mut old = Horizon::default();
        old.read_once(&store, 0, 500).await.unwrap();
        assert_eq!(old.state, State::Unknown);
        // A kept horizon is read back, and only once.
        fresh.note(&id_at(7_000));
        let mut batch = Batch::default();
        fresh.write(&mut batch);
        store.write(batch.writes).await.unwrap();
        let mut again = Horizon::default();
        again.read_once(&store, 0, 500).await.unwrap();
        assert_eq!(again.state, State::Known(7_000));
        let mut other = Horizon::default();
        other.read_once(&store, 1, 500).await.unwrap();
        assert_eq!(other.state, State::Unknown, "partitions keep their own");
        again.state = State::Known(1);
        again.read_once(&store, 0, 500).await.unwrap();
        assert_eq!(again.state, State::Known(1));
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
