//! Recurring reminders (docs/scheduling.md): a schedule's state for one
//! subscriber, and what happens when the timer of its next occurrence comes
//! due.
//!
//! The router keeps one [`pb::ScheduleRecord`] per schedule and subscriber.
//! Every change (a `ScheduleSet`, a pause, a resume) bumps the record's
//! generation and sets a timer for the next occurrence carrying that
//! generation: a timer of an older generation, or for an occurrence the
//! record no longer waits for, is stale and does nothing. So pausing needs
//! no timer deletion, and a replayed or repeated timer fires nothing twice.
//!
//! When a timer fires late (the server was down), the catch-up policy
//! decides: `latest_once` fires the latest missed occurrence once and counts
//! the others; `skip` fires an occurrence only if it is late by at most
//! [`LATE_GRACE_MS`]. Never a burst of every missed occurrence.

use clarion_proto::events as pb;

use crate::error::Violations;
use crate::ids::Id;
use crate::time::{self, Recurrence, Tz};

/// How late (ms) an occurrence may fire and still count as on time under
/// `skip`: the runtime's timer loop and a restart take a moment, and an
/// occurrence due during them should not be lost.
pub const LATE_GRACE_MS: i64 = 60_000;

/// What happens to occurrences missed while the server was down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Fire the latest missed occurrence once (default).
    LatestOnce,
    /// Fire none of them (an occurrence late by at most the grace is on time).
    Skip,
}

impl CatchUp {
    /// `""` is the default, `latest_once`.
    pub fn parse(s: &str) -> Option<CatchUp> {
        match s {
            "" | "latest_once" => Some(CatchUp::LatestOnce),
            "skip" => Some(CatchUp::Skip),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::LatestOnce => "latest_once",
            CatchUp::Skip => "skip",
        }
    }
}

pub const ACTIVE: &str = "active";
pub const PAUSED: &str = "paused";
pub const DONE: &str = "done";
pub const DELETED: &str = "deleted";

/// Checks a schedule as set (field names as in `CreateScheduleRequest`; a
/// schedule id is an id like a workflow's: A-Z, a-z, 0-9, `.`, `_`, `-`);
/// returns its recurrence read in `tz`.
pub fn validate(set: &pb::ScheduleSet, tz: Tz) -> Result<Recurrence, Violations> {
    let mut v = Violations::default();
    crate::workflow::validate_id(&mut v, "schedule_id", &set.schedule_id);
    if !set.timezone.is_empty() {
        if let Err(e) = time::zone(&set.timezone) {
            v.push("timezone", e);
        }
    }
    if CatchUp::parse(&set.catch_up).is_none() {
        v.push(
            "catch_up",
            format!("{:?} is not latest_once or skip", set.catch_up),
        );
    }
    if set.end_at_ms > 0 && set.end_at_ms <= set.start_at_ms {
        v.push("end_at", "must be after start_at");
    }
    let rec = match (set.rrule.is_empty(), set.cron.is_empty()) {
        (true, true) => Err(("rrule", "one of rrule or cron is required".to_string())),
        (false, false) => Err(("cron", "set either rrule or cron, not both".to_string())),
        (false, true) => {
            Recurrence::rrule(&set.rrule, set.start_at_ms, tz).map_err(|e| ("rrule", e))
        }
        (true, false) => Recurrence::cron(&set.cron, set.start_at_ms, tz).map_err(|e| ("cron", e)),
    };
    match rec {
        Ok(r) => v.into_result().map(|()| r),
        Err((field, reason)) => {
            v.push(field, reason);
            Err(v)
        }
    }
}

/// The zone a schedule is read in: its own, else the subscriber's, else the
/// tenant's default, else UTC.
pub fn zone_for(set: &pb::ScheduleSet, subscriber_tz: &str, tenant_tz: &str) -> Tz {
    time::recipient_zone(&[&set.timezone, subscriber_tz, tenant_tz])
}

/// A record's recurrence, read in its resolved zone (`None`: the stored
/// rule no longer parses; it fires nothing).
pub fn recurrence_of(rec: &pb::ScheduleRecord) -> Option<(Recurrence, Tz)> {
    let set = rec.set.as_ref()?;
    let tz = time::recipient_zone(&[&rec.resolved_timezone]);
    let r = if set.rrule.is_empty() {
        Recurrence::cron(&set.cron, set.start_at_ms, tz)
    } else {
        Recurrence::rrule(&set.rrule, set.start_at_ms, tz)
    };
    r.ok().map(|r| (r, tz))
}

/// The first occurrence after `after_ms` within the schedule's end.
fn next_within(r: &Recurrence, set: &pb::ScheduleSet, after_ms: i64) -> Option<i64> {
    r.next_after(after_ms)
        .filter(|at| set.end_at_ms <= 0 || *at <= set.end_at_ms)
}

/// The next occurrences of a record after `after_ms` (for reads).
pub fn upcoming(rec: &pb::ScheduleRecord, after_ms: i64, n: usize) -> Vec<i64> {
    let (Some((r, _)), Some(set)) = (recurrence_of(rec), rec.set.as_ref()) else {
        return Vec::new();
    };
    if rec.state != ACTIVE {
        return Vec::new();
    }
    r.next_n(after_ms - 1, n)
        .into_iter()
        .filter(|at| set.end_at_ms <= 0 || *at <= set.end_at_ms)
        .collect()
}

/// The generation after `prev`'s (1 for a new schedule).
fn next_generation(prev: Option<&pb::ScheduleRecord>) -> u64 {
    prev.and_then(|p| p.set.as_ref())
        .map_or(1, |s| s.generation + 1)
}

/// A schedule set (created or replaced) at `now_ms`, read in `tz`: the new
/// record, active, waiting for its first occurrence at or after the later
/// of now and its start (done when there is none). What fired before is
/// kept (the same schedule, redefined).
pub fn set(
    prev: Option<&pb::ScheduleRecord>,
    set: &pb::ScheduleSet,
    tz: Tz,
    now_ms: i64,
) -> pb::ScheduleRecord {
    let mut s = set.clone();
    s.generation = next_generation(prev);
    let mut rec = pb::ScheduleRecord {
        set: Some(s),
        resolved_timezone: tz.name().to_string(),
        ..prev.cloned().unwrap_or_default()
    };
    schedule_next(&mut rec, now_ms - 1);
    rec
}

/// Sets the record's next occurrence after `after_ms` (done without one).
fn schedule_next(rec: &mut pb::ScheduleRecord, after_ms: i64) {
    let next = match (recurrence_of(rec), rec.set.as_ref()) {
        (Some((r, _)), Some(set)) => next_within(&r, set, after_ms),
        _ => None,
    };
    rec.next_at_ms = next.unwrap_or(0);
    rec.state = if next.is_some() { ACTIVE } else { DONE }.to_string();
}

/// A pause, resume or delete at `now_ms`: the record after it (`None`:
/// deleted, the row goes). Resuming goes on from the first occurrence at or
/// after now: paused time is not caught up. Resuming a finished schedule
/// leaves it done.
pub fn change_state(
    rec: &pb::ScheduleRecord,
    state: &str,
    now_ms: i64,
) -> Option<pb::ScheduleRecord> {
    let mut rec = rec.clone();
    let generation = next_generation(Some(&rec));
    if let Some(s) = rec.set.as_mut() {
        s.generation = generation;
    }
    match state {
        DELETED => return None,
        PAUSED if rec.state == ACTIVE => {
            rec.state = PAUSED.into();
            rec.next_at_ms = 0;
        }
        ACTIVE if rec.state == PAUSED => schedule_next(&mut rec, now_ms - 1),
        _ => {} // nothing to change (a repeat); the generation moved anyway
    }
    Some(rec)
}

/// What a due timer does.
#[derive(Clone, Debug, PartialEq)]
pub enum Due {
    /// Nothing: the schedule changed since the timer was set (paused,
    /// deleted, redefined) or the occurrence already fired.
    Stale(&'static str),
    /// The decision: the occurrence that fires (if any), how many missed
    /// ones were passed over, and the record after it (with its next
    /// occurrence, whose timer is to be set when `next_at_ms` > 0).
    Fire {
        occurrence_at_ms: Option<i64>,
        late_by_ms: i64,
        missed: u32,
        record: Box<pb::ScheduleRecord>,
    },
}

/// The decision when the timer of `due` fires at `now_ms` (maybe long after
/// the occurrence, after downtime).
pub fn on_due(rec: Option<&pb::ScheduleRecord>, due: &pb::ScheduleDue, now_ms: i64) -> Due {
    let Some(rec) = rec else {
        return Due::Stale("the schedule was deleted");
    };
    let Some(set) = rec.set.as_ref() else {
        return Due::Stale("the schedule has no definition");
    };
    if set.generation != due.generation {
        return Due::Stale("the schedule changed since the timer was set");
    }
    if rec.state != ACTIVE {
        return Due::Stale("the schedule is not active");
    }
    if rec.next_at_ms != due.occurrence_at_ms {
        return Due::Stale("the occurrence is not the one the schedule waits for");
    }
    let Some((r, _)) = recurrence_of(rec) else {
        return Due::Stale("the stored recurrence does not parse");
    };
    let now = now_ms.max(due.occurrence_at_ms);
    let upto = if set.end_at_ms > 0 {
        now.min(set.end_at_ms)
    } else {
        now
    };
    // Occurrences in [due, now]: the due one and the ones missed after it.
    let (count, latest) = r.missed(due.occurrence_at_ms - 1, upto);
    let latest = latest.unwrap_or(due.occurrence_at_ms);
    let count = count.max(1);
    let fires = match CatchUp::parse(&set.catch_up).unwrap_or(CatchUp::LatestOnce) {
        CatchUp::LatestOnce => Some(latest),
        CatchUp::Skip => (now - latest <= LATE_GRACE_MS).then_some(latest),
    };
    let mut record = rec.clone();
    if let Some(at) = fires {
        record.last_occurrence_at_ms = at;
        record.fired += 1;
    }
    schedule_next(&mut record, now);
    Due::Fire {
        occurrence_at_ms: fires,
        late_by_ms: now - fires.unwrap_or(due.occurrence_at_ms),
        missed: count - u32::from(fires.is_some()),
        record: Box::new(record),
    }
}

/// The notification an occurrence starts: the same for the same tenant,
/// schedule, subscriber and instant, so a repeated timer or a replay starts
/// it once (the router finds its run).
pub fn notification_id(tenant: &str, schedule_id: &str, subscriber: &str, at_ms: i64) -> Id {
    Id::time_ordered(
        at_ms,
        &[
            b"schedule",
            tenant.as_bytes(),
            schedule_id.as_bytes(),
            subscriber.as_bytes(),
            &at_ms.to_be_bytes(),
        ],
    )
}

/// The fixed id of the timer event of an occurrence for a generation.
pub fn due_event_id(
    tenant: &str,
    schedule_id: &str,
    subscriber: &str,
    generation: u64,
    at_ms: i64,
) -> Id {
    Id::derive(&[
        b"schedule-due",
        tenant.as_bytes(),
        schedule_id.as_bytes(),
        subscriber.as_bytes(),
        &generation.to_be_bytes(),
        &at_ms.to_be_bytes(),
    ])
}
