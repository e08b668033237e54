//! Reads of the projection: a dimension's values over a time range, each
//! with its totals and its series of buckets, and the providers' health.
//! Every read names the tenant; the work is bounded by [`MAX_VALUES`]
//! values and the range limits of [`Granularity`] (checked by callers
//! with [`ReportQuery::check`]).

use std::ops::Bound;

use clarion_domain::Violations;
use clarion_store::{Scan, Store, StoreError, Table};

use crate::counts::Counts;
use crate::dimension::Dimension;
pub use crate::rows::Granularity;
use crate::rows::{self, ProviderState};

/// Most values of one dimension a report covers (the most recently
/// counted ones).
pub const MAX_VALUES: usize = 50;

/// Most shards (input partitions) a scan expects per bucket or provider:
/// a bound on the rows read, far above any partition count in use.
const MAX_SHARDS: usize = 1024;

/// The longest range per granularity: a day of minutes, 92 days of hours.
pub fn max_range_ms(g: Granularity) -> i64 {
    match g {
        Granularity::Minute => 24 * 3_600_000,
        Granularity::Hour => 92 * 86_400_000,
    }
}

/// Ranges up to this long default to minutes; longer ones to hours.
pub const MINUTES_UP_TO_MS: i64 = 6 * 3_600_000;

#[derive(Clone, Debug, PartialEq)]
pub struct ReportQuery {
    pub dimension: Dimension,
    /// Only this value of the dimension (all of them when `None`).
    pub value: Option<String>,
    /// Buckets starting at or after this (ms).
    pub from_ms: i64,
    /// Buckets starting before this (ms).
    pub to_ms: i64,
    pub granularity: Granularity,
}

impl ReportQuery {
    /// Checks the range against the granularity, naming the field at fault.
    pub fn check(&self) -> Result<(), Violations> {
        let mut v = Violations::default();
        if self.to_ms <= self.from_ms {
            v.push("to", "must be after `from`");
        } else if self.to_ms - self.from_ms > max_range_ms(self.granularity) {
            v.push(
                "from",
                format!(
                    "the range is longer than {} hours, the most a report by {} covers",
                    max_range_ms(self.granularity) / 3_600_000,
                    self.granularity.as_str()
                ),
            );
        }
        if self.value.as_ref().is_some_and(|s| s.len() > 256) {
            v.push("value", "is longer than 256 bytes");
        }
        v.into_result()
    }
}

/// One bucket of a series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub start_ms: i64,
    pub counts: Counts,
}

/// One value of the dimension: its totals over the range, and its
/// buckets that counted anything (oldest first).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub value: String,
    pub totals: Counts,
    pub series: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub query: ReportQuery,
    /// By totals' attempts, most first.
    pub groups: Vec<Group>,
    /// Whether values were left out over [`MAX_VALUES`].
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("stored analytics row: {0}")]
    Corrupt(String),
}

/// The report `q` asks for, of tenant `tenant`.
pub async fn report(
    store: &dyn Store,
    tenant: &str,
    q: &ReportQuery,
) -> Result<Report, QueryError> {
    let (values, truncated) = match &q.value {
        Some(v) => (vec![v.clone()], false),
        None => values(store, tenant, q.dimension).await?,
    };
    let mut groups = Vec::with_capacity(values.len());
    for value in values {
        let series = series(store, tenant, q, &value).await?;
        if series.is_empty() && q.value.is_none() {
            continue;
        }
        let mut totals = Counts::default();
        for p in &series {
            totals.merge(&p.counts);
        }
        groups.push(Group {
            value,
            totals,
            series,
        });
    }
    groups.sort_by(|a, b| {
        (b.totals.attempted, b.totals.opened)
            .cmp(&(a.totals.attempted, a.totals.opened))
            .then_with(|| a.value.cmp(&b.value))
    });
    Ok(Report {
        query: q.clone(),
        groups,
        truncated,
    })
}

/// The dimension's values, most recently counted first, at most
/// [`MAX_VALUES`]; and whether more were left out.
async fn values(
    store: &dyn Store,
    tenant: &str,
    d: Dimension,
) -> Result<(Vec<String>, bool), QueryError> {
    let pk = rows::values_pk(d);
    let rows = store
        .scan(&Scan::partition(Table::Analytics, tenant, &pk, 10_000))
        .await?;
    // Each shard lists the values it counted: the latest time wins.
    let mut latest: std::collections::HashMap<String, i64> = Default::default();
    for (ck, v) in rows {
        let at = rows::ck_time(&v).unwrap_or(0);
        let e = latest.entry(rows::ck_name(&ck)).or_insert(at);
        *e = (*e).max(at);
    }
    let mut seen: Vec<(i64, String)> = latest.into_iter().map(|(v, at)| (at, v)).collect();
    seen.sort_by(|a, b| b.cmp(a));
    let truncated = seen.len() > MAX_VALUES;
    seen.truncate(MAX_VALUES);
    Ok((seen.into_iter().map(|(_, v)| v).collect(), truncated))
}

async fn series(
    store: &dyn Store,
    tenant: &str,
    q: &ReportQuery,
    value: &str,
) -> Result<Vec<Point>, QueryError> {
    let g = q.granularity;
    let pk = rows::series_pk(g, q.dimension, value);
    let points = (max_range_ms(g) / g.ms()) as usize + 1;
    // A row per shard and bucket, in time order: consecutive rows of one
    // bucket are added up.
    let scan = Scan::partition(Table::Analytics, tenant, &pk, points * MAX_SHARDS).range(
        Bound::Included(rows::time_ck(g.start(q.from_ms))),
        Bound::Excluded(rows::time_ck(q.to_ms)),
    );
    let mut out: Vec<Point> = Vec::new();
    for (ck, v) in store.scan(&scan).await? {
        let start_ms = rows::ck_time(&ck).ok_or_else(|| QueryError::Corrupt("key".into()))?;
        let counts = Counts::decode(&v).map_err(|e| QueryError::Corrupt(e.to_string()))?;
        match out.last_mut() {
            Some(p) if p.start_ms == start_ms => p.counts.merge(&counts),
            _ => out.push(Point { start_ms, counts }),
        }
    }
    Ok(out)
}

/// A provider's health: its outcomes over the range and its last ones.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderHealth {
    pub provider: String,
    pub totals: Counts,
    /// Failed of attempts over the range.
    pub error_rate: Option<f64>,
    /// 95th percentile of dispatch → sent over the range (bucket bound, ms).
    pub p95_latency_ms: Option<i64>,
    pub last: ProviderState,
}

/// Every provider the tenant sent through, with its health over
/// `[from_ms, to_ms)` by `granularity`.
pub async fn provider_health(
    store: &dyn Store,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
    granularity: Granularity,
) -> Result<Vec<ProviderHealth>, QueryError> {
    let rows = store
        .scan(&Scan::partition(
            Table::Analytics,
            tenant,
            rows::PROVIDERS_PK,
            MAX_VALUES * MAX_SHARDS,
        ))
        .await?;
    // A row per provider and shard, the shards of one provider together.
    let mut merged: Vec<(String, ProviderState)> = Vec::new();
    for (ck, v) in rows {
        let provider = rows::ck_name(&ck);
        let state = ProviderState::decode(&v).map_err(|e| QueryError::Corrupt(e.to_string()))?;
        match merged.last_mut() {
            Some((p, last)) if *p == provider => last.merge(&state),
            _ => merged.push((provider, state)),
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    for (provider, last) in merged {
        let q = ReportQuery {
            dimension: Dimension::Provider,
            value: Some(provider.clone()),
            from_ms,
            to_ms,
            granularity,
        };
        let mut totals = Counts::default();
        for p in series(store, tenant, &q, &provider).await? {
            totals.merge(&p.counts);
        }
        out.push(ProviderHealth {
            provider,
            error_rate: totals.failure_rate(),
            p95_latency_ms: totals.dispatch_to_sent.quantile_ms(0.95),
            totals,
            last,
        });
    }
    Ok(out)
}
