//! The tenant-wide index of notifications the console searches (issue #29):
//! one row per notification in [`Table::NotificationIndex`], in the
//! partition of the UTC day its id was made (`d/<yyyymmdd>`), clustered by
//! the id's 16 bytes. Ids lead with their creation time, so a day's rows are
//! in time order and a reverse scan lists the newest first.
//!
//! The router owns the rows: it writes one when it accepts a trigger (in the
//! batch that writes the subscriber's index row, [`crate::subscriber_index`])
//! and overwrites it when the run's [`Status`] changes. Both are puts of the
//! same key with nothing read first, so the hot path pays one small write per
//! notification plus one per change of status.

use clarion_domain::flow::run::{Purpose, StepStatus, Terminal, Waiting};
use clarion_domain::flow::Run;
use clarion_domain::Id;
use clarion_store::{RowKey, Scan, Table};
use prost::Message;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// A notification's status as the index knows it: the run's, as the router
/// sees it (the detail page derives the full status from the history).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for its trigger's `send_at`.
    Scheduled,
    Running,
    /// Running again after an operator retried it from the dead-letter queue.
    Retrying,
    /// Ended; a send was delivered (or engaged with).
    Delivered,
    /// Ended; a send was accepted by its provider, none reported delivered.
    Sent,
    /// Ended; every send failed or none was made.
    Failed,
    /// Ended without a send to report (e.g. every send suppressed by preferences).
    Completed,
    DeadLettered,
    /// A dead letter an operator took out of the queue.
    Discarded,
    Cancelled,
    Suppressed,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Scheduled,
        Status::Running,
        Status::Retrying,
        Status::Delivered,
        Status::Sent,
        Status::Failed,
        Status::Completed,
        Status::DeadLettered,
        Status::Discarded,
        Status::Cancelled,
        Status::Suppressed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Retrying => "retrying",
            Status::Delivered => "delivered",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Completed => "completed",
            Status::DeadLettered => "dead_lettered",
            Status::Discarded => "discarded",
            Status::Cancelled => "cancelled",
            Status::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The status of a trigger just accepted: waiting for `send_at`, or running.
    pub fn accepted(send_at_ms: i64) -> Status {
        if send_at_ms > 0 {
            Status::Scheduled
        } else {
            Status::Running
        }
    }

    /// The status of a run ended with `outcome` before it ran (the
    /// router's endings of triggers it did not start are `suppressed`).
    pub fn of_outcome(outcome: &str) -> Status {
        match outcome {
            "cancelled" => Status::Cancelled,
            "dead_lettered" => Status::DeadLettered,
            "completed" => Status::Completed,
            _ => Status::Suppressed,
        }
    }

    /// The status of a run (`in_dlq`: whether it is in the dead-letter queue).
    pub fn of_run(run: &Run, in_dlq: bool) -> Status {
        match run.terminal {
            None if matches!(
                run.waiting,
                Waiting::Timer {
                    purpose: Purpose::SendAt,
                    ..
                }
            ) =>
            {
                Status::Scheduled
            }
            None if run.generation > 0 => Status::Retrying,
            None => Status::Running,
            Some(Terminal::Completed) => completed(run),
            Some(Terminal::DeadLettered) if in_dlq => Status::DeadLettered,
            Some(Terminal::DeadLettered) => Status::Discarded,
            Some(Terminal::Cancelled) => Status::Cancelled,
            Some(Terminal::Suppressed) => Status::Suppressed,
        }
    }
}

/// How far the sends of a completed run got.
fn completed(run: &Run) -> Status {
    let reached = |s: &StepStatus| {
        !matches!(
            s,
            StepStatus::Pending
                | StepStatus::Sent
                | StepStatus::Failed
                | StepStatus::TimedOut
                | StepStatus::Suppressed
        )
    };
    if run.step_status.values().any(reached) {
        Status::Delivered
    } else if run.attempts.iter().any(|a| a.sent) {
        Status::Sent
    } else if run.attempts.iter().any(|a| a.error.is_some()) {
        Status::Failed
    } else {
        Status::Completed
    }
}

/// What a row holds besides its key (the creation time is in the id).
/// Protobuf: a few dozen bytes, written on the hot path.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub workflow_id: String,
    #[prost(string, tag = "2")]
    pub subscriber_id: String,
    /// [`Status::as_str`].
    #[prost(string, tag = "3")]
    pub status: String,
    #[prost(int64, tag = "4")]
    pub updated_at_ms: i64,
}

impl Entry {
    pub fn new(workflow_id: &str, subscriber_id: &str, status: Status, at_ms: i64) -> Entry {
        Entry {
            workflow_id: workflow_id.to_string(),
            subscriber_id: subscriber_id.to_string(),
            status: status.as_str().to_string(),
            updated_at_ms: at_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        <Entry as Message>::decode(bytes).ok()
    }
}

/// The day (since the Unix epoch, UTC) of an instant.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The partition of a day: `d/<yyyymmdd>` (UTC).
pub fn day_pk(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("d/{y:04}{m:02}{d:02}")
}

/// Year, month and day of a day number (Howard Hinnant's `civil_from_days`:
/// exact for the proleptic Gregorian calendar, no table, no allocation).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The row of a notification (`None` for an id that is not 32 hex digits,
/// which Clarion never makes).
pub fn row(tenant: &str, notification_id: &str) -> Option<RowKey> {
    let id = Id::parse_hex(notification_id)?;
    Some(RowKey::new(
        Table::NotificationIndex,
        tenant,
        &day_pk(day_of(id.time_ms())),
        id.0.to_vec(),
    ))
}

/// One day's notifications, newest first, up to `limit` rows.
pub fn day_newest_first(tenant: &str, day: i64, limit: usize) -> Scan {
    Scan::partition(Table::NotificationIndex, tenant, &day_pk(day), limit).reversed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn day_partitions_are_the_utc_date_of_the_id() {
        for ms in [
            0i64,
            1,
            DAY_MS - 1,
            DAY_MS,
            951_782_400_000,     // 2000-02-29
            1_709_251_199_999,   // 2024-02-29T23:59:59.999Z
            1_709_251_200_000,   // 2024-03-01
            4_102_444_800_000,   // 2100-01-01
            253_402_300_799_999, // 9999-12-31
        ] {
            let want = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .format("d/%Y%m%d")
                .to_string();
            assert_eq!(day_pk(day_of(ms)), want, "{ms}");
        }
        // Every day of four centuries agrees with chrono.
        for day in -1_000..146_097 {
            let want = DateTime::<Utc>::from_timestamp_millis(day * DAY_MS)
                .unwrap()
                .format("d/%Y%m%d")
                .to_string();
            assert_eq!(day_pk(day), want);
        }

        let id = Id::time_ordered(1_709_251_199_999, &[b"n"]).to_hex();
        let key = row("acme", &id).expect("a hex id");
        assert_eq!(key.table, Table::NotificationIndex);
        assert_eq!(
            (key.tenant.as_str(), key.pk.as_str()),
            ("acme", "d/20240229")
        );
        assert_eq!(key.ck, Id::parse_hex(&id).unwrap().0.to_vec());
        assert!(row("acme", "not-hex").is_none());
    }

    #[test]
    fn entries_round_trip_in_a_few_bytes() {
        let e = Entry::new("welcome", "ana", Status::DeadLettered, 1_709_251_199_999);
        let bytes = e.encode();
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(Entry::decode(&bytes), Some(e));
        assert_eq!(Entry::decode(&[0xff, 0xff]), None);
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("DELIVERED"), None);
    }
}
