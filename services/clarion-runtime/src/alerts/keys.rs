//! Row keys of the alerts role (`Table::Alerts`).

use std::time::Duration;

use clarion_store::{RowKey, Table, SYSTEM_TENANT};

pub const MINUTE_MS: i64 = 60_000;

/// Minute counts outlive their evaluation by a day: enough to look at an
/// alert's minutes while diagnosing it.
pub const COUNT_TTL: Duration = Duration::from_secs(86_400);

/// A tenant unseen for a week leaves the evaluation (its state stays).
pub const TENANT_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Series names: the tenant's whole traffic, or one provider's.
pub const TENANT_SERIES: &str = "tenant";

pub fn provider_series(provider: &str) -> String {
    format!("provider:{provider}")
}

/// Start of the minute holding `at_ms`.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

pub fn counts_pk(minute_ms: i64) -> String {
    format!("m/{minute_ms}")
}

/// One partition's counts of a series in a minute: each partition writes
/// only its own rows, so partitions never overwrite each other.
pub fn count_key(tenant: &str, minute_ms: i64, series: &str, partition: u32) -> RowKey {
    let mut ck = series.as_bytes().to_vec();
    ck.push(0);
    ck.extend_from_slice(&partition.to_be_bytes());
    RowKey::new(Table::Alerts, tenant, &counts_pk(minute_ms), ck)
}

/// The series of a count row's clustering key.
pub fn series_of_count(ck: &[u8]) -> Option<&str> {
    let end = ck.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&ck[..end]).ok()
}

pub const SERIES_PK: &str = "series";

pub fn series_key(tenant: &str, series: &str) -> RowKey {
    RowKey::new(Table::Alerts, tenant, SERIES_PK, series.as_bytes().to_vec())
}

/// Tenants seen by the counters: which tenants the evaluator visits. Not a
/// tenant's row, so under the system tenant.
pub const TENANTS_PK: &str = "tenants";

pub fn tenant_seen_key(tenant: &str) -> RowKey {
    RowKey::new(
        Table::Alerts,
        SYSTEM_TENANT,
        TENANTS_PK,
        tenant.as_bytes().to_vec(),
    )
}

/// The next minute the evaluator judges (system tenant: the deployment's).
pub fn cursor_key() -> RowKey {
    RowKey::new(
        Table::Alerts,
        SYSTEM_TENANT,
        "evaluator",
        b"cursor".to_vec(),
    )
}

/// Anomalies committed but not yet appended to the log or accepted by
/// every sink: an outbox like the runtime's (system tenant, as those are).
pub const OUTBOX_PK: &str = "outbox";

pub fn outbox_key(event_id: &[u8]) -> RowKey {
    RowKey::new(Table::Alerts, SYSTEM_TENANT, OUTBOX_PK, event_id.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_and_count_keys() {
        assert_eq!(minute_of(125_000), 120_000);
        assert_eq!(minute_of(-1), -60_000);
        let k = count_key("acme", 120_000, "provider:smtp", 3);
        assert_eq!(k.pk, "m/120000");
        assert_eq!(series_of_count(&k.ck), Some("provider:smtp"));
        assert_ne!(k, count_key("acme", 120_000, "provider:smtp", 4));
    }
}
