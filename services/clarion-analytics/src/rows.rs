//! The rows of `Table::Analytics`, all under the tenant they count:
//!
//! | pk | ck | value |
//! |---|---|---|
//! | `m/<dimension>/<value>` | minute start, ms, big-endian; shard | [`Counts`] |
//! | `h/<dimension>/<value>` | hour start, ms, big-endian; shard | [`Counts`] |
//! | `v/<dimension>` | the value, NUL, shard | last time counted (ms, big-endian) |
//! | `p` | provider, NUL, shard | [`ProviderState`] |
//! | `s/<notification id>` | attempt id | the send's state ([`crate::attempt`]) |
//! | `a/<attempt id>` | empty | legacy: the send's state, as written before `s/` |
//! | `n/<notification id>` | empty | legacy: its latest attempt id |
//!
//! Minutes answer short ranges finely and hours long ones cheaply; both
//! are written by the same batch (one more row per dimension value and
//! batch), so neither is derived later and both are rebuilt from the log.
//! `v/` rows list the values a dimension has seen, so a grouped query
//! reads the value's rows rather than scanning the table.
//!
//! One tenant's sends are on every partition, and each partition has its
//! own runner: a row they all added to would be read, added to and written
//! by several at once, and updates would be lost. So every shared row ends
//! with the **shard** (the input partition, 4 bytes big-endian) that wrote
//! it — one writer per row — and queries add the shards up. Send rows
//! need none: a notification's events are all on its recipient's partition.
//!
//! A notification's sends are one partition (`s/<notification id>`, one
//! row per attempt), so an engagement that names no attempt finds the
//! notification's latest send by scanning it, without a row that points
//! there; and as notification ids lead with their creation time, new rows
//! land at the end of the table rather than on random pages. The `a/` and
//! `n/` rows are what the processor wrote before (one per request and per
//! notification, at the request): it still reads them for sends it has no
//! `s/` row of, and never writes them; they expire with their TTL.

use clarion_store::{RowKey, Table};
use serde::{Deserialize, Serialize};

use crate::dimension::Dimension;

/// A bucket size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Minute,
    Hour,
}

impl Granularity {
    pub const ALL: [Granularity; 2] = [Granularity::Minute, Granularity::Hour];

    pub fn ms(self) -> i64 {
        match self {
            Granularity::Minute => 60_000,
            Granularity::Hour => 3_600_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
        }
    }

    pub fn parse(s: &str) -> Option<Granularity> {
        Granularity::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// The start of the bucket holding `at_ms`.
    pub fn start(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.ms()) * self.ms()
    }

    fn prefix(self) -> &'static str {
        match self {
            Granularity::Minute => "m",
            Granularity::Hour => "h",
        }
    }
}

pub fn series_pk(g: Granularity, d: Dimension, value: &str) -> String {
    format!("{}/{}/{}", g.prefix(), d.as_str(), value)
}

pub fn time_ck(ms: i64) -> Vec<u8> {
    ms.max(0).to_be_bytes().to_vec()
}

/// The time of a bucket's ck (its first 8 bytes; the shard follows), or of
/// a value row.
pub fn ck_time(ck: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(ck.get(..8)?.try_into().ok()?))
}

pub fn bucket_key(
    tenant: &str,
    g: Granularity,
    d: Dimension,
    value: &str,
    start: i64,
    shard: u32,
) -> RowKey {
    let mut ck = time_ck(start);
    ck.extend_from_slice(&shard.to_be_bytes());
    RowKey::new(Table::Analytics, tenant, &series_pk(g, d, value), ck)
}

/// `name`, NUL, the shard: a name-keyed row of one writer.
fn named_ck(name: &str, shard: u32) -> Vec<u8> {
    let mut ck = Vec::with_capacity(name.len() + 5);
    ck.extend_from_slice(name.as_bytes());
    ck.push(0);
    ck.extend_from_slice(&shard.to_be_bytes());
    ck
}

/// The name of a [`named_ck`] (values and providers hold no NUL).
pub fn ck_name(ck: &[u8]) -> String {
    let name = ck.len().checked_sub(5).map_or(ck, |n| &ck[..n]);
    String::from_utf8_lossy(name).into_owned()
}

pub fn values_pk(d: Dimension) -> String {
    format!("v/{}", d.as_str())
}

pub fn value_key(tenant: &str, d: Dimension, value: &str, shard: u32) -> RowKey {
    RowKey::new(
        Table::Analytics,
        tenant,
        &values_pk(d),
        named_ck(value, shard),
    )
}

pub const PROVIDERS_PK: &str = "p";

pub fn provider_key(tenant: &str, provider: &str, shard: u32) -> RowKey {
    RowKey::new(
        Table::Analytics,
        tenant,
        PROVIDERS_PK,
        named_ck(provider, shard),
    )
}

/// The partition of a notification's send rows.
pub fn sends_pk(notification_id: &str) -> String {
    format!("s/{notification_id}")
}

/// The row of one send (attempt) of a notification.
pub fn send_key(tenant: &str, notification_id: &str, attempt_id: &str) -> RowKey {
    RowKey::new(
        Table::Analytics,
        tenant,
        &sends_pk(notification_id),
        attempt_id.as_bytes().to_vec(),
    )
}

/// Legacy (read only): a send's row as written before [`send_key`].
pub fn attempt_key(tenant: &str, attempt_id: &str) -> RowKey {
    RowKey::new(
        Table::Analytics,
        tenant,
        &format!("a/{attempt_id}"),
        Vec::new(),
    )
}

/// Legacy (read only): a notification's latest attempt id, as written
/// before a scan of [`sends_pk`] found it.
pub fn notification_key(tenant: &str, notification_id: &str) -> RowKey {
    RowKey::new(
        Table::Analytics,
        tenant,
        &format!("n/{notification_id}"),
        Vec::new(),
    )
}

/// A provider's last outcomes, all time (its counts are in the series).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderState {
    pub last_success_ms: i64,
    pub last_failure_ms: i64,
    /// The reason of the last failure.
    pub last_error: String,
}

impl ProviderState {
    /// Adds another shard's state: the latest success and failure win.
    pub fn merge(&mut self, other: &ProviderState) {
        self.last_success_ms = self.last_success_ms.max(other.last_success_ms);
        if other.last_failure_ms > self.last_failure_ms {
            self.last_failure_ms = other.last_failure_ms;
            self.last_error = other.last_error.clone();
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("provider state encode")
    }

    pub fn decode(b: &[u8]) -> Result<ProviderState, rmp_serde::decode::Error> {
        rmp_serde::from_slice(b)
    }
}
