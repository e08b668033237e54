//! Which tenants have subscribers with stored rows of a kind (preferences,
//! devices) on a router partition: the others need no lookup before a send.
//!
//! Every send is checked against its subscriber's preferences, and nearly
//! every subscriber has none (no row). Looking each one up would be a store
//! read per notification for a row that does not exist. The router is the
//! only writer of its partition's preferences rows, so it knows where rows
//! exist: the commit that writes a tenant's first preferences row on a
//! partition also writes a mark (a row of the system tenant), and a router
//! reads the marks once, at its first batch. A tenant without a mark is
//! checked with default preferences (its topics' rules still apply) and no
//! read. Devices likewise: a push to a subscriber of a tenant that never
//! registered a device here reads nothing (and fails over at once), and
//! device rows are looked up only for tenants that have some.
//!
//! The marks read at start are those of every partition, not only the
//! router's own: after the partition count changes, a subscriber's events
//! may come to another partition than the one that wrote its row. A mark
//! only ever costs lookups, never skips one that could find a row.

use std::collections::HashSet;

use bytes::Bytes;
use clarion_store::{RowKey, Scan, Store, StoreError, Table, SYSTEM_TENANT};

use crate::processor::Batch;

/// The marks' partition (in the marked table, system tenant).
const PK: &str = "router-marks";

/// A partition's mark of a tenant: clustering key the tenant, a 0 byte
/// (tenant ids never hold one), then the partition.
fn key(table: Table, tenant: &str, partition: u32) -> RowKey {
    let mut ck = Vec::with_capacity(tenant.len() + 5);
    ck.extend_from_slice(tenant.as_bytes());
    ck.push(0);
    ck.extend_from_slice(&partition.to_be_bytes());
    RowKey::new(table, SYSTEM_TENANT, PK, ck)
}

#[derive(Debug)]
pub(super) struct Marks {
    /// The table whose rows are marked (and which holds the marks).
    table: Table,
    read: bool,
    tenants: HashSet<String>,
}

impl Marks {
    /// Marks of the rows of `table`.
    pub(super) fn of(table: Table) -> Marks {
        Marks {
            table,
            read: false,
            tenants: HashSet::new(),
        }
    }

    /// Reads every partition's marks, once (before the router's first batch).
    pub(super) async fn read_once(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if self.read {
            return Ok(());
        }
        let rows = store
            .scan(&Scan::partition(self.table, SYSTEM_TENANT, PK, usize::MAX))
            .await?;
        for (ck, _) in rows {
            if let Some(end) = ck.iter().position(|b| *b == 0) {
                self.tenants
                    .insert(String::from_utf8_lossy(&ck[..end]).into_owned());
            }
        }
        self.read = true;
        Ok(())
    }

    /// Whether subscribers of `tenant` may have stored rows.
    pub(super) fn has(&self, tenant: &str) -> bool {
        // Until the marks are read nothing is known: look everything up.
        !self.read || self.tenants.contains(tenant)
    }

    /// A row of `tenant` is written in this batch: marks the tenant, in
    /// memory at once and in the batch's commit.
    pub(super) fn note(&mut self, batch: &mut Batch, tenant: &str) {
        if self.read && self.tenants.contains(tenant) {
            return;
        }
        batch
            .writes
            .put(key(self.table, tenant, batch.partition), Bytes::new());
        self.tenants.insert(tenant.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_store::embedded::SqliteStore;

    #[tokio::test]
    async fn a_tenant_is_marked_from_its_first_row_on_any_partition() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let mut marks = Marks::of(Table::Preferences);
        assert!(marks.has("acme"), "unread: everything may have rows");
        marks.read_once(&store).await.unwrap();
        assert!(!marks.has("acme"), "a new file has no rows");

        let mut batch = Batch {
            partition: 1,
            ..Default::default()
        };
        marks.note(&mut batch, "acme");
        marks.note(&mut batch, "acme");
        assert_eq!(batch.writes.len(), 1, "one mark per tenant and partition");
        assert!(marks.has("acme") && !marks.has("acm"));
        store.write(batch.writes).await.unwrap();

        // Another partition's router (or this one restarted) reads it.
        let mut other = Marks::of(Table::Preferences);
        other.read_once(&store).await.unwrap();
        assert!(other.has("acme"));
        assert!(!other.has("globex"), "another tenant stays unmarked");
        // Marks of another table are apart.
        let mut devices = Marks::of(Table::Devices);
        devices.read_once(&store).await.unwrap();
        assert!(!devices.has("acme"));
    }
}
