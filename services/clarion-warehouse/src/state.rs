//! The exporter's rows in the store (`Table::Warehouse`). A partition's
//! own state is not a tenant's: it is kept under the system tenant, as
//! processor offsets are. What a send attempt was (the join's state) is
//! the tenant's: kept under its tenant.

use std::time::Duration;

use bytes::Bytes;
use clarion_store::{RowKey, Table, SYSTEM_TENANT};
use serde::{Deserialize, Serialize};

use crate::schema::WarehouseTable;

/// How long a send attempt's request is remembered for outcomes that come
/// late (delivery receipts).
pub const ATTEMPT_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The keys of one exporter partition (`name`: `exporter`, or `backfill`
/// for `clarion warehouse backfill`, which keeps a state of its own).
#[derive(Clone, Debug)]
pub struct Keys {
    pk: String,
}

impl Keys {
    pub fn new(name: &str, partition: u32) -> Keys {
        Keys {
            pk: format!("{name}/{partition}"),
        }
    }

    fn own(&self, ck: &str) -> RowKey {
        RowKey::new(
            Table::Warehouse,
            SYSTEM_TENANT,
            &self.pk,
            ck.as_bytes().to_vec(),
        )
    }

    /// The next offset of an input topic (by its base name).
    pub fn position(&self, topic: &str) -> RowKey {
        self.own(&format!("pos/{topic}"))
    }

    /// The sequence number of the next roll (part of file names).
    pub fn seq(&self) -> RowKey {
        self.own("seq")
    }

    /// Files of a roll between staging and publishing (see [`Staged`]).
    pub fn staged(&self) -> RowKey {
        self.own("staged")
    }

    /// Outcomes read before their request, per tenant and attempt.
    pub fn waiting_pk(&self) -> String {
        format!("{}/waiting", self.pk)
    }

    pub fn waiting(&self, tenant: &str, attempt: &str) -> RowKey {
        RowKey::new(
            Table::Warehouse,
            SYSTEM_TENANT,
            &self.waiting_pk(),
            format!("{tenant}\u{0}{attempt}").into_bytes(),
        )
    }

    /// The manifest: one row per roll, by sequence number.
    pub fn manifest_pk(&self) -> String {
        format!("{}/manifest", self.pk)
    }

    pub fn manifest(&self, seq: u64) -> RowKey {
        RowKey::new(
            Table::Warehouse,
            SYSTEM_TENANT,
            &self.manifest_pk(),
            seq.to_be_bytes().to_vec(),
        )
    }
}

/// A send attempt's request, under its tenant.
pub fn attempt_key(tenant: &str, attempt_id: &str) -> RowKey {
    RowKey::new(
        Table::Warehouse,
        tenant,
        "attempt",
        attempt_id.as_bytes().to_vec(),
    )
}

pub fn u64_of(b: &[u8]) -> u64 {
    <[u8; 8]>::try_from(b).map(u64::from_be_bytes).unwrap_or(0)
}

pub fn u64_bytes(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_be_bytes())
}

/// One published file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub table: String,
    pub tenant: String,
    pub date: String,
    /// Path under the warehouse root once published.
    pub path: String,
    /// Where it is written first, invisible to readers.
    pub staging: String,
    pub rows: u64,
    pub bytes: u64,
}

impl FileEntry {
    pub fn table(&self) -> Option<WarehouseTable> {
        WarehouseTable::ALL
            .into_iter()
            .find(|t| t.name() == self.table)
    }
}

/// A roll in progress. `staged`: files are being written under their
/// staging names and nothing committed; a restart deletes them (the rows
/// are read again from the log). `publishing`: the manifest and positions
/// committed; a restart finishes moving the files to their names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    pub state: String,
    pub seq: u64,
    pub files: Vec<FileEntry>,
}

/// The manifest row of one roll: its files and the input offsets they
/// cover (`[from, to)` per topic), committed with the positions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub seq: u64,
    pub files: Vec<FileEntry>,
    /// Topic base name → `[from, to)`.
    pub offsets: Vec<(String, u64, u64)>,
    pub written_at_ms: i64,
}
