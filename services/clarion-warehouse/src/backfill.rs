//! `clarion warehouse backfill --from <offset|time>`: where each input's
//! reading starts, and how far it goes.

use clarion_log::EventLog;
use clarion_runtime::Topics;

use crate::exporter::INPUTS;
use crate::WarehouseError;

/// Where a backfill starts: an offset (the same in every input partition)
/// or the first record appended at or after a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Offset(u64),
    TimeMs(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;

    /// A number is an offset; otherwise an RFC 3339 time
    /// (`2026-12-07T00:00:00Z`) or a date (`2026-12-07`, midnight UTC).
    fn from_str(s: &str) -> Result<StartAt, String> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(StartAt::Offset(n));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(StartAt::TimeMs(t.timestamp_millis()));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let t = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            return Ok(StartAt::TimeMs(t.timestamp_millis()));
        }
        Err(format!(
            "--from: {s:?} is neither an offset (a number) nor a time (RFC 3339, e.g. \
             2026-12-07T00:00:00Z, or a date 2026-12-07)"
        ))
    }
}

/// The first offset of a partition whose append time is at or after
/// `at_ms` (binary search: the append times of a partition only grow).
pub async fn offset_at(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    at_ms: i64,
) -> Result<u64, WarehouseError> {
    let (mut lo, mut hi) = (0u64, log.end_offset(topic, partition).await?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let recs = log.read(topic, partition, mid, 1).await?;
        match recs.first() {
            Some(r) if r.timestamp_ms < at_ms => lo = r.offset + 1,
            Some(_) => hi = mid,
            None => lo = hi,
        }
    }
    Ok(lo)
}

/// The start and end offsets of each input (in [`INPUTS`] order) of one
/// partition.
pub async fn range(
    log: &dyn EventLog,
    topics: &Topics,
    partition: u32,
    from: StartAt,
) -> Result<([u64; 4], [u64; 4]), WarehouseError> {
    let (mut start, mut end) = ([0; 4], [0; 4]);
    for (i, t) in INPUTS.iter().enumerate() {
        let name = topics.name(*t);
        end[i] = log.end_offset(&name, partition).await?;
        start[i] = match from {
            StartAt::Offset(o) => o.min(end[i]),
            StartAt::TimeMs(at) => offset_at(log, &name, partition, at).await?,
        };
    }
    Ok((start, end))
}
