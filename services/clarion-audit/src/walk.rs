//! Reading a partition from an offset to a fixed end, on either log.
//!
//! One tailing reader per partition (on Kafka a one-shot `read` opens a
//! consumer per call), in large batches; the end is the partition's end
//! offset when the walk starts, so records appended meanwhile are left to
//! the next run.

use std::time::{Duration, Instant};

use clarion_log::{EventLog, LogRecord};

use crate::{AuditError, Result};

/// Records asked for per read.
pub const CHUNK: usize = 8192;

/// No record for this long while short of the end: the walk fails.
const STALL: Duration = Duration::from_secs(30);

/// One partition of one topic: its full name, base name (in keys and
/// hashes) and number.
#[derive(Clone, Debug)]
pub struct Part {
    pub name: String,
    pub base: &'static str,
    pub partition: u32,
}

/// Every partition of every topic of the deployment, config first (a
/// replay wants the workflows before the notifications that run them).
pub fn parts(topics: &clarion_runtime::Topics) -> Vec<Part> {
    use clarion_runtime::Topic;
    let order = [
        Topic::Config,
        Topic::Triggers,
        Topic::Notifications,
        Topic::Dispatch,
        Topic::Deliveries,
    ];
    order
        .into_iter()
        .flat_map(|t| {
            (0..topics.partitions_of(t)).map(move |p| Part {
                name: topics.name(t),
                base: t.base_name(),
                partition: p,
            })
        })
        .collect()
}

/// A pull-based reader of `part` over `[from, end)`.
pub struct Walker {
    sub: Box<dyn clarion_log::Subscription>,
    part: Part,
    next: u64,
    end: u64,
}

impl Walker {
    pub async fn open(log: &dyn EventLog, part: &Part, from: u64, end: u64) -> Result<Walker> {
        Ok(Walker {
            sub: log.subscribe(&part.name, part.partition, from).await?,
            part: part.clone(),
            next: from,
            end,
        })
    }

    /// The next records in order; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<LogRecord>>> {
        let started = Instant::now();
        while self.next < self.end {
            let want = ((self.end - self.next) as usize).min(CHUNK);
            let mut batch = self
                .sub
                .next_batch(want, Duration::from_millis(500))
                .await?;
            let (next, end) = (self.next, self.end);
            batch.retain(|r| r.offset >= next && r.offset < end);
            if let Some(last) = batch.last() {
                self.next = last.offset + 1;
                return Ok(Some(batch));
            }
            if started.elapsed() > STALL {
                return Err(AuditError::Walk {
                    topic: self.part.name.clone(),
                    partition: self.part.partition,
                    reason: format!("no record at offset {next} within {STALL:?} (end {end})"),
                });
            }
        }
        Ok(None)
    }
}

/// Calls `each` with the records of `part` in `[from, end)`, in order, a
/// batch at a time; `each` returns false to stop early.
pub async fn walk(
    log: &dyn EventLog,
    part: &Part,
    from: u64,
    end: u64,
    mut each: impl FnMut(&[LogRecord]) -> bool,
) -> Result<()> {
    if from >= end {
        return Ok(());
    }
    let mut w = Walker::open(log, part, from, end).await?;
    while let Some(batch) = w.next().await? {
        if !each(&batch) {
            break;
        }
    }
    Ok(())
}
