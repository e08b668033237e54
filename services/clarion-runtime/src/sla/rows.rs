//! The SLA role's rows (see the module's documentation).

use std::time::Duration;

use clarion_store::{RowKey, Table, SYSTEM_TENANT};
use serde::{Deserialize, Serialize};

pub const PENDING_PK: &str = "sla-pending";
pub const EARLY_PK: &str = "sla-early";
pub const STATE_PK: &str = "sla-state";
pub const OUTBOX_PK: &str = "sla-outbox";
pub const MINUTE_MS: i64 = 60_000;
/// Counts outlive the longest window.
pub const COUNT_TTL: Duration = Duration::from_secs(8 * 24 * 3600);
/// A send with no outcome for this long is forgotten (its SLAs counted
/// it missed long before).
pub const PENDING_TTL: Duration = Duration::from_secs(8 * 24 * 3600);

pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

pub fn counts_pk(sla_id: &str) -> String {
    format!("sla-c/{sla_id}")
}

/// ck of a count row: the minute first, so a window is one range scan.
pub fn count_ck(minute: i64, partition: u32, provider: &str) -> Vec<u8> {
    let mut ck = minute.to_be_bytes().to_vec();
    ck.extend_from_slice(&partition.to_be_bytes());
    ck.extend_from_slice(provider.as_bytes());
    ck
}

/// The provider of a count row's ck.
pub fn provider_of(ck: &[u8]) -> &str {
    ck.get(12..)
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("")
}

pub fn count_key(tenant: &str, sla_id: &str, ck: Vec<u8>) -> RowKey {
    RowKey::new(Table::Alerts, tenant, &counts_pk(sla_id), ck)
}

pub fn pending_key(tenant: &str, attempt_id: &str) -> RowKey {
    RowKey::new(
        Table::Alerts,
        tenant,
        PENDING_PK,
        attempt_id.as_bytes().to_vec(),
    )
}

/// Outcomes read before their send's request (see `Early`).
pub fn early_key(tenant: &str, attempt_id: &str) -> RowKey {
    RowKey::new(
        Table::Alerts,
        tenant,
        EARLY_PK,
        attempt_id.as_bytes().to_vec(),
    )
}

pub fn state_key(tenant: &str, sla_id: &str) -> RowKey {
    RowKey::new(Table::Alerts, tenant, STATE_PK, sla_id.as_bytes().to_vec())
}

pub fn outbox_key(id: &[u8]) -> RowKey {
    RowKey::new(Table::Alerts, SYSTEM_TENANT, OUTBOX_PK, id.to_vec())
}

/// Met and missed sends of one minute, partition and provider.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub met: u64,
    pub missed: u64,
}

/// A dispatched send the SLAs wait on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub requested_at_ms: i64,
    pub provider: String,
    /// The SLAs still waiting, with their milestone and threshold.
    pub slas: Vec<Waiting>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Waiting {
    pub sla_id: String,
    pub milestone: String,
    pub threshold_ms: u64,
}

/// Outcomes of a send read before its dispatch request. The counter reads
/// requests and outcomes from different topics, which a log does not order
/// between them (on Kafka, a reader restarted further back, or one topic
/// fetched ahead of another): the outcomes wait here and are counted when
/// the request says which SLAs the send is under.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Early {
    pub outcomes: Vec<EarlyOutcome>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EarlyOutcome {
    pub at_ms: i64,
    pub provider: String,
    /// `sent` or `delivered`; `None` for a failure.
    pub reached: Option<String>,
}

/// The evaluator's judgement of an SLA, kept between ticks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub breached: bool,
    pub demoted_provider: String,
    /// Breaches so far: names the next breach's event.
    pub breaches: u32,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("SLA rows encode")
}

pub fn decode<T: for<'de> Deserialize<'de> + Default>(b: &[u8]) -> T {
    serde_json::from_slice(b).unwrap_or_default()
}
