//! The last committed record batches of each subscribed partition, kept in
//! memory so that a subscription tailing the log reads them without SQLite.
//!
//! A processor reads what was appended a few milliseconds before: through
//! SQLite that was a statement, a B-tree seek, page reads from the WAL
//! (a reader's page cache is dropped at every commit of the writer) and a
//! copy of every body, about 4 % of the server's CPU under load
//! (docs/benchmarks.md). The writer thread has the bodies in hand when the
//! transaction commits and moves them here; a read takes shared references.
//!
//! Only committed batches enter, in offset order, and a partition's entries
//! are kept contiguous: a batch that does not start where the last one ended
//! (another process appended in between) starts the partition over. A read
//! is answered here only from the batch holding its first offset on, else
//! it goes to the file; so an answer is always what the file holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// Bytes of bodies kept per partition. A tailing reader is milliseconds
/// behind, which is a few hundred kilobytes at full load (a partition took
/// about 17 MB/s in the end-to-end bench, so this is some 60 ms); one that
/// fell further behind reads from the file, as it did before. Kept for
/// every partition subscribed to, also when idle: 32 MiB for the four
/// tailed topics of a log of 8 partitions.
const KEEP_BYTES: usize = 1 << 20;

/// A committed batch.
#[derive(Clone)]
pub(super) struct Recent {
    pub base: u64,
    pub count: u32,
    pub ts: i64,
    /// As stored (maybe compressed).
    pub body: Bytes,
}

#[derive(Default)]
struct Partition {
    batches: VecDeque<Recent>,
    bytes: usize,
}

/// Per `(topic id, partition)`.
#[derive(Default)]
pub(super) struct RecentBatches {
    parts: Mutex<HashMap<(i64, u32), Partition>>,
}

impl RecentBatches {
    /// Records `batch`, just committed to `key`, dropping the oldest past
    /// [`KEEP_BYTES`].
    pub(super) fn push(&self, key: (i64, u32), batch: Recent) {
        let mut parts = self.parts.lock().expect("recent batches lock");
        let p = parts.entry(key).or_default();
        if p.batches
            .back()
            .is_some_and(|b| b.base + u64::from(b.count) != batch.base)
        {
            p.batches.clear();
            p.bytes = 0;
        }
        p.bytes += batch.body.len();
        p.batches.push_back(batch);
        while p.bytes > KEEP_BYTES && p.batches.len() > 1 {
            let old = p.batches.pop_front().expect("more than one batch");
            p.bytes -= old.body.len();
        }
    }

    /// The batches of `key` from the one holding offset `from` on, enough
    /// for `max` records; `None` if `from` is not in memory.
    pub(super) fn from(&self, key: (i64, u32), from: u64, max: usize) -> Option<Vec<Recent>> {
        let parts = self.parts.lock().expect("recent batches lock");
        let p = parts.get(&key)?;
        let first = p
            .batches
            .partition_point(|b| b.base + u64::from(b.count) <= from);
        let holding = p.batches.get(first)?;
        if holding.base > from {
            return None; // older than what is kept
        }
        let mut out = Vec::new();
        let mut records = 0usize;
        for b in p.batches.range(first..) {
            records += (b.base + u64::from(b.count) - from.max(b.base)) as usize;
            out.push(b.clone());
            if records >= max {
                break;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: u64, count: u32, size: usize) -> Recent {
        Recent {
            base,
            count,
            ts: 7,
            body: Bytes::from(vec![0u8; size]),
        }
    }

    fn bases(got: Option<Vec<Recent>>) -> Option<Vec<u64>> {
        got.map(|v| v.iter().map(|b| b.base).collect())
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset() {
        let r = RecentBatches::default();
        let k = (1, 0);
        r.push(k, batch(0, 3, 10));
        r.push(k, batch(3, 2, 10));
        r.push(k, batch(5, 4, 10));
        assert_eq!(bases(r.from(k, 0, 100)), Some(vec![0, 3, 5]));
        assert_eq!(bases(r.from(k, 4, 100)), Some(vec![3, 5]));
        // Enough batches for `max` records, counted from `from`.
        assert_eq!(bases(r.from(k, 1, 2)), Some(vec![0]));
        assert_eq!(bases(r.from(k, 1, 3)), Some(vec![0, 3]));
        // Past the end, or another partition: not in memory.
        assert_eq!(bases(r.from(k, 9, 100)), None);
        assert_eq!(bases(r.from((1, 1), 0, 100)), None);
    }

    #[test]
    fn a_gap_starts_the_partition_over_and_old_batches_leave() {
        let r = RecentBatches::default();
        let k = (1, 0);
        r.push(k, batch(0, 3, 10));
        // Offsets 3..10 were appended elsewhere: 0..3 and 10.. are not
        // contiguous, so only what follows the gap is kept.
        r.push(k, batch(10, 2, 10));
        assert_eq!(bases(r.from(k, 0, 100)), None);
        assert_eq!(bases(r.from(k, 10, 100)), Some(vec![10]));
        // Past the byte budget the oldest go; the newest always stays.
        r.push(k, batch(12, 1, KEEP_BYTES));
        assert_eq!(bases(r.from(k, 10, 100)), None, "evicted");
        assert_eq!(bases(r.from(k, 12, 100)), Some(vec![12]));
    }
}
