//! Digests: one subscriber's events with the same key, collected over a
//! window and sent as one message (docs/scheduling.md, "Digests").
//!
//! The accumulator's decisions, pure: a run reaching a `digest` step either
//! *leads* a new digest (nothing open for its subscriber, workflow and key:
//! its run waits until the digest closes, then sends it) or *joins* the open
//! one (its item is appended and its run ends). A digest closes once: when
//! its window or schedule is due, when it reaches `max_items`, or when it is
//! flushed. The router keeps the open digests in the store (a header row and
//! one row per item) and writes each decision in its batch commit.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event in a digest: its run's notification, when it arrived, and its
/// payload whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub notification_id: String,
    pub at_ms: i64,
    pub payload: Value,
}

/// A closed digest, kept on the leader's run for its sends (templates see
/// `digest.items`, `digest.count`, `digest.first_at`, `digest.last_at`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The digest key's value.
    pub key: String,
    pub items: Vec<Item>,
}

impl Batch {
    /// What templates see as `digest`: the payloads in arrival order, their
    /// count, and the first and last arrival times (RFC 3339, UTC).
    pub fn template_value(&self) -> Value {
        let at = |i: Option<&Item>| i.map(|i| rfc3339(i.at_ms)).unwrap_or_default();
        serde_json::json!({
            "key": self.key,
            "items": self.items.iter().map(|i| &i.payload).collect::<Vec<_>>(),
            "count": self.items.len(),
            "first_at": at(self.items.first()),
            "last_at": at(self.items.last()),
        })
    }
}

/// `ms` since the epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The header of an open digest (its `0x00` row): who leads it, when it
/// closes, and how many items it holds (items are numbered from 0 in
/// arrival order; the leader's own is item 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub leader: String,
    pub opened_at_ms: i64,
    pub closes_at_ms: i64,
    pub count: u32,
    /// Closes as soon as it holds this many (0: no limit).
    pub max_items: u32,
}

impl Open {
    /// Whether the digest is full (it closes now).
    pub fn full(&self) -> bool {
        self.max_items > 0 && self.count >= self.max_items
    }
}

/// What becomes of a run that reaches a digest step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing was open: the run leads `open` (its item is number 0) and
    /// waits until it closes (`open.full()`: at once).
    Lead(Open),
    /// Appended to the open digest as item `no`; `open` is its header now
    /// (`open.full()`: the run that filled it closes it).
    Join { open: Open, no: u32 },
}

/// How a digest step closes, resolved for one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// When the digest closes if it opens now.
    pub closes_at_ms: i64,
    /// 0: no limit.
    pub max_items: u32,
}

/// A run with notification `nid` reaches the digest step at `now_ms`; `open`
/// is the open digest of its subscriber, workflow and key, if any.
pub fn decide(open: Option<&Open>, rule: Rule, nid: &str, now_ms: i64) -> Decision {
    match open {
        None => Decision::Lead(Open {
            leader: nid.to_string(),
            opened_at_ms: now_ms,
            closes_at_ms: rule.closes_at_ms.max(now_ms),
            count: 1,
            max_items: rule.max_items,
        }),
        Some(o) => {
            let mut open = o.clone();
            let no = open.count;
            open.count += 1;
            Decision::Join { open, no }
        }
    }
}

/// A run reaching the step finds the open digest's leader no longer
/// leading (its run was cancelled): it takes the digest over, items and
/// all, so that nothing that joined is lost. Its item is number
/// `old.count`; the digest closes by the taker's rule.
pub fn take_over(old: &Open, rule: Rule, nid: &str, now_ms: i64) -> (Open, u32) {
    let open = Open {
        leader: nid.to_string(),
        opened_at_ms: old.opened_at_ms,
        closes_at_ms: rule.closes_at_ms.max(now_ms),
        count: old.count + 1,
        max_items: rule.max_items,
    };
    (open, old.count)
}

/// Whether a digest-close timer for `leader` still means something: the
/// digest open for the key is the one it leads. A timer of a digest that
/// closed early (full, flushed) finds another leader or none, and does
/// nothing.
pub fn timer_closes(open: Option<&Open>, leader: &str) -> bool {
    open.is_some_and(|o| o.leader == leader)
}

/// When a digest opened at `now_ms` closes: after `window_ms`, or at the
/// next occurrence of `schedule` (an RRULE or cron) in zone `tz`.
pub fn closes_at(
    window_ms: Option<u64>,
    schedule: Option<&str>,
    now_ms: i64,
    tz: crate::time::Tz,
) -> Result<i64, String> {
    match (window_ms, schedule) {
        (Some(ms), _) => Ok(now_ms.saturating_add(ms.min(i64::MAX as u64) as i64)),
        // From the local midnight: an RRULE's unspecified hour, minute
        // and second are those of its start ("BYHOUR=8" is 08:00:00).
        (None, Some(s)) => crate::time::Recurrence::parse(s, local_midnight(now_ms, tz), tz)?
            .next_after(now_ms)
            .ok_or_else(|| format!("the schedule {s:?} has no occurrence after now")),
        (None, None) => Err("the digest has neither a window nor a schedule".into()),
    }
}

/// The start of the local day of `ms` in `tz`, as an instant.
fn local_midnight(ms: i64, tz: crate::time::Tz) -> i64 {
    let day = crate::time::local_of(ms, tz).date();
    crate::time::instant_of(day.and_time(chrono::NaiveTime::MIN), tz)
}

/// The note of a run that joined a digest (also its end reason).
pub fn joined_reason(leader: &str) -> String {
    format!("digested into {leader}")
}

/// The note of a critical run at a digest step.
pub const CRITICAL_BYPASS: &str = "critical: digest bypassed";
