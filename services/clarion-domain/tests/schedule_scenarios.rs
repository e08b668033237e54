//! Recurring reminders on a manual clock (time is only ever the `now_ms`
//! the scenario passes): DST transitions in Europe/Paris and
//! America/New_York, the spring-forward and fall-back days, COUNT / UNTIL /
//! end, pause and resume, and the catch-up policy after days of downtime.

use chrono::{Datelike, NaiveDateTime, Timelike};
use clarion_domain::schedule::{self, Due};
use clarion_domain::time::{self, Tz};
use clarion_proto::events as pb;

const PARIS: Tz = Tz::Europe__Paris;
const NEW_YORK: Tz = Tz::America__New_York;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The instant of a local wall time ("2026-03-29 09:00") in `tz`.
fn at(local: &str, tz: Tz) -> i64 {
    let t = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M").unwrap();
    time::instant_of(t, tz)
}

fn local(ms: i64, tz: Tz) -> NaiveDateTime {
    time::local_of(ms, tz)
}

fn set_of(rule: &str, start_ms: i64, catch_up: &str) -> pb::ScheduleSet {
    let (rrule, cron) = if rule.contains("FREQ=") {
        (rule.to_string(), String::new())
    } else {
        (String::new(), rule.to_string())
    };
    pb::ScheduleSet {
        schedule_id: "weekly".into(),
        subscriber_id: "ana".into(),
        workflow_id: "reminder".into(),
        rrule,
        cron,
        start_at_ms: start_ms,
        catch_up: catch_up.into(),
        ..Default::default()
    }
}

fn due_of(rec: &pb::ScheduleRecord) -> pb::ScheduleDue {
    let set = rec.set.as_ref().unwrap();
    pb::ScheduleDue {
        schedule_id: set.schedule_id.clone(),
        subscriber_id: set.subscriber_id.clone(),
        generation: set.generation,
        occurrence_at_ms: rec.next_at_ms,
    }
}

/// Fires every timer on time until `until_ms`: the instants that fired.
fn run_on_time(mut rec: pb::ScheduleRecord, until_ms: i64) -> (Vec<i64>, pb::ScheduleRecord) {
    let mut fired = Vec::new();
    while rec.next_at_ms > 0 && rec.next_at_ms <= until_ms {
        let due = due_of(&rec);
        match schedule::on_due(Some(&rec), &due, due.occurrence_at_ms) {
            Due::Fire {
                occurrence_at_ms,
                missed,
                late_by_ms,
                record,
            } => {
                assert_eq!((missed, late_by_ms), (0, 0), "on time, nothing missed");
                fired.push(occurrence_at_ms.expect("an on-time occurrence fires"));
                // The same timer again (a repeat, a replay) fires nothing.
                assert!(matches!(
                    schedule::on_due(Some(&record), &due, due.occurrence_at_ms),
                    Due::Stale(_)
                ));
                rec = *record;
            }
            Due::Stale(why) => panic!("on-time timer stale: {why}"),
        }
        assert!(fired.len() < 10_000, "runaway schedule");
    }
    (fired, rec)
}

fn weekly_monday_nine_stays_local(tz: Tz, from: &str, to: &str) {
    let start = at(from, tz);
    let set = set_of("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0", start, "");
    let rec = schedule::set(None, &set, tz, start);
    let (fired, _) = run_on_time(rec, at(to, tz));
    // Every Monday of the period, each at 09:00 local, whatever the offset.
    assert!(fired.len() >= 34, "{} fired", fired.len());
    for w in fired.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            [7 * DAY - HOUR, 7 * DAY, 7 * DAY + HOUR].contains(&gap),
            "weekly gap {gap}"
        );
    }
    let mut offsets = std::collections::BTreeSet::new();
    for f in &fired {
        let l = local(*f, tz);
        assert_eq!(l.weekday(), chrono::Weekday::Mon, "{l}");
        assert_eq!((l.hour(), l.minute()), (9, 0), "{l}");
        offsets.insert((f - at(&l.format("%Y-%m-%d 00:00").to_string(), Tz::UTC)) / HOUR);
    }
    // Both offsets (standard and summer time) were crossed.
    assert_eq!(offsets.len(), 2, "{offsets:?}");
}

#[test]
fn weekly_monday_0900_stays_0900_local_across_both_transitions_in_paris() {
    // 2026: summer time from Mar 29, back on Oct 25.
    weekly_monday_nine_stays_local(PARIS, "2026-02-01 00:00", "2026-12-01 00:00");
}

#[test]
fn weekly_monday_0900_stays_0900_local_across_both_transitions_in_new_york() {
    // 2026: summer time from Mar 8, back on Nov 1.
    weekly_monday_nine_stays_local(NEW_YORK, "2026-02-01 00:00", "2026-12-01 00:00");
}

/// Fires of a daily 02:30 rule on the local dates from..to.
fn daily_0230(rule: &str, tz: Tz, from: &str, to: &str) -> Vec<NaiveDateTime> {
    let start = at(from, tz);
    let rec = schedule::set(None, &set_of(rule, start, ""), tz, start);
    let (fired, _) = run_on_time(rec, at(to, tz));
    fired.into_iter().map(|f| local(f, tz)).collect()
}

#[test]
fn a_daily_0230_reminder_fires_at_0330_on_the_spring_forward_day() {
    for rule in ["FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "30 2 * * *"] {
        let got = daily_0230(rule, PARIS, "2026-03-28 00:00", "2026-03-30 23:00");
        let shown: Vec<String> = got
            .iter()
            .map(|t| t.format("%d %H:%M").to_string())
            .collect();
        // 02:30 does not exist on the 29th: shifted forward by the gap.
        assert_eq!(shown, ["28 02:30", "29 03:30", "30 02:30"], "{rule}");
    }
}

#[test]
fn a_daily_0230_reminder_fires_once_on_the_fall_back_day_at_the_earlier_0230() {
    for rule in ["FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "30 2 * * *"] {
        let start = at("2026-10-24 00:00", PARIS);
        let rec = schedule::set(None, &set_of(rule, start, ""), PARIS, start);
        let (fired, _) = run_on_time(rec, at("2026-10-26 23:00", PARIS));
        assert_eq!(fired.len(), 3, "{rule}: one per day");
        // 02:30 happens twice on the 25th: the earlier one, still in summer
        // time (UTC+2), i.e. 00:30 UTC.
        let sunday = fired[1];
        assert_eq!(
            local(sunday, PARIS).format("%d %H:%M").to_string(),
            "25 02:30"
        );
        assert_eq!(local(sunday, Tz::UTC).format("%H:%M").to_string(), "00:30");
    }
}

#[test]
fn count_until_and_end_at_end_the_schedule() {
    let start = at("2026-01-05 00:00", PARIS);
    let count = set_of("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;COUNT=3", start, "");
    let (fired, rec) = run_on_time(schedule::set(None, &count, PARIS, start), start + 30 * DAY);
    assert_eq!(fired.len(), 3);
    assert_eq!(
        (rec.state.as_str(), rec.next_at_ms, rec.fired),
        ("done", 0, 3)
    );

    let until = set_of(
        "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;UNTIL=20260108T235959Z",
        start,
        "",
    );
    let (fired, rec) = run_on_time(schedule::set(None, &until, PARIS, start), start + 30 * DAY);
    assert_eq!(fired.len(), 4, "the 5th to the 8th");
    assert_eq!(rec.state, "done");

    let mut ends = set_of("0 9 * * *", start, "");
    ends.end_at_ms = at("2026-01-06 12:00", PARIS);
    let (fired, rec) = run_on_time(schedule::set(None, &ends, PARIS, start), start + 30 * DAY);
    assert_eq!(fired.len(), 2);
    assert_eq!(rec.state, "done");
}

/// A daily 09:00 schedule that fired on the 5th, then a server down from
/// before the 6th's occurrence until the 8th 10:00 (3 days).
fn after_downtime(catch_up: &str) -> (Due, i64) {
    let start = at("2026-01-05 00:00", PARIS);
    let set = set_of("FREQ=DAILY;BYHOUR=9;BYMINUTE=0", start, catch_up);
    let (_, rec) = run_on_time(
        schedule::set(None, &set, PARIS, start),
        at("2026-01-05 12:00", PARIS),
    );
    assert_eq!(rec.next_at_ms, at("2026-01-06 09:00", PARIS));
    let now = at("2026-01-08 10:00", PARIS);
    (schedule::on_due(Some(&rec), &due_of(&rec), now), now)
}

#[test]
fn latest_once_fires_the_latest_missed_occurrence_once_after_three_days_down() {
    let (due, now) = after_downtime("latest_once");
    let Due::Fire {
        occurrence_at_ms,
        missed,
        late_by_ms,
        record,
    } = due
    else {
        panic!("stale: {due:?}")
    };
    assert_eq!(occurrence_at_ms, Some(at("2026-01-08 09:00", PARIS)));
    assert_eq!(
        (missed, late_by_ms),
        (2, HOUR),
        "the 6th and 7th passed over"
    );
    assert_eq!(record.next_at_ms, at("2026-01-09 09:00", PARIS));
    assert_eq!(record.fired, 2);
    // The next timer (the 9th) is the only one: no burst, and on time.
    let _ = now;
    let (fired, _) = run_on_time(*record, at("2026-01-09 12:00", PARIS));
    assert_eq!(fired, [at("2026-01-09 09:00", PARIS)]);
}

#[test]
fn skip_fires_nothing_after_three_days_down_and_goes_on_from_now() {
    let (due, _) = after_downtime("skip");
    let Due::Fire {
        occurrence_at_ms,
        missed,
        record,
        ..
    } = due
    else {
        panic!("stale: {due:?}")
    };
    assert_eq!(occurrence_at_ms, None);
    assert_eq!(missed, 3, "the 6th, 7th and 8th");
    assert_eq!(record.next_at_ms, at("2026-01-09 09:00", PARIS));
    assert_eq!(record.fired, 1);
}

#[test]
fn skip_still_fires_an_occurrence_late_by_less_than_the_grace() {
    let start = at("2026-01-05 00:00", PARIS);
    let set = set_of("FREQ=DAILY;BYHOUR=9;BYMINUTE=0", start, "skip");
    let rec = schedule::set(None, &set, PARIS, start);
    let due = due_of(&rec);
    let late = due.occurrence_at_ms + schedule::LATE_GRACE_MS;
    let Due::Fire {
        occurrence_at_ms, ..
    } = schedule::on_due(Some(&rec), &due, late)
    else {
        panic!("stale")
    };
    assert_eq!(occurrence_at_ms, Some(due.occurrence_at_ms));
    let Due::Fire {
        occurrence_at_ms, ..
    } = schedule::on_due(Some(&rec), &due, late + 1)
    else {
        panic!("stale")
    };
    assert_eq!(occurrence_at_ms, None);
}

#[test]
fn pause_makes_timers_stale_and_resume_goes_on_from_now_without_catch_up() {
    let start = at("2026-01-05 00:00", PARIS);
    let set = set_of("FREQ=DAILY;BYHOUR=9;BYMINUTE=0", start, "latest_once");
    let rec = schedule::set(None, &set, PARIS, start);
    let old = due_of(&rec);
    let paused = schedule::change_state(&rec, schedule::PAUSED, start + HOUR).unwrap();
    assert_eq!((paused.state.as_str(), paused.next_at_ms), ("paused", 0));
    assert!(matches!(
        schedule::on_due(Some(&paused), &old, old.occurrence_at_ms),
        Due::Stale(_)
    ));
    // Resumed two weeks later: the next 09:00 after now, nothing caught up.
    let now = at("2026-01-19 12:00", PARIS);
    let resumed = schedule::change_state(&paused, schedule::ACTIVE, now).unwrap();
    assert_eq!(resumed.state, "active");
    assert_eq!(resumed.next_at_ms, at("2026-01-20 09:00", PARIS));
    assert!(matches!(
        schedule::on_due(Some(&resumed), &old, now),
        Due::Stale(_)
    ));
    assert_eq!(
        schedule::change_state(&resumed, schedule::DELETED, now),
        None
    );
    assert!(matches!(
        schedule::on_due(None, &due_of(&resumed), now),
        Due::Stale(_)
    ));
}

#[test]
fn a_redefined_schedule_ignores_the_old_timer() {
    let start = at("2026-01-05 00:00", PARIS);
    let rec = schedule::set(None, &set_of("0 9 * * *", start, ""), PARIS, start);
    let old = due_of(&rec);
    let redefined = schedule::set(Some(&rec), &set_of("0 9 * * *", start, ""), PARIS, start);
    assert_eq!(redefined.next_at_ms, old.occurrence_at_ms);
    assert!(matches!(
        schedule::on_due(Some(&redefined), &old, old.occurrence_at_ms),
        Due::Stale(_)
    ));
    assert!(matches!(
        schedule::on_due(Some(&redefined), &due_of(&redefined), old.occurrence_at_ms),
        Due::Fire { .. }
    ));
}

#[test]
fn notification_ids_are_fixed_by_tenant_schedule_subscriber_and_instant() {
    let id = |t: &str, s: &str, sub: &str, at: i64| schedule::notification_id(t, s, sub, at);
    assert_eq!(id("acme", "w", "ana", 5), id("acme", "w", "ana", 5));
    assert_ne!(id("acme", "w", "ana", 5), id("globex", "w", "ana", 5));
    assert_ne!(id("acme", "w", "ana", 5), id("acme", "w2", "ana", 5));
    assert_ne!(id("acme", "w", "ana", 5), id("acme", "w", "bob", 5));
    assert_ne!(id("acme", "w", "ana", 5), id("acme", "w", "ana", 6));
    assert_eq!(
        id("acme", "w", "ana", 1_700_000_000_000).time_ms(),
        1_700_000_000_000
    );
}

#[test]
fn the_zone_is_the_schedules_else_the_subscribers_else_the_tenants_else_utc() {
    let mut set = set_of("0 9 * * *", 0, "");
    assert_eq!(
        schedule::zone_for(&set, "America/New_York", "Europe/Paris"),
        NEW_YORK
    );
    assert_eq!(schedule::zone_for(&set, "", "Europe/Paris"), PARIS);
    assert_eq!(
        schedule::zone_for(&set, "Nowhere/Land", "Europe/Paris"),
        PARIS
    );
    assert_eq!(schedule::zone_for(&set, "", ""), Tz::UTC);
    set.timezone = "Asia/Kolkata".into();
    assert_eq!(
        schedule::zone_for(&set, "America/New_York", "Europe/Paris"),
        Tz::Asia__Kolkata
    );
}

#[test]
fn bad_definitions_name_the_field_and_the_reason() {
    let field = |set: &pb::ScheduleSet| -> Vec<String> {
        match schedule::validate(set, Tz::UTC) {
            Ok(_) => Vec::new(),
            Err(v) => v.0.iter().map(|f| f.field.clone()).collect(),
        }
    };
    let good = set_of("FREQ=DAILY;BYHOUR=9", 0, "");
    assert!(field(&good).is_empty());
    let cases: Vec<(pb::ScheduleSet, &str)> = vec![
        (set_of("FREQ=SOMETIMES", 0, ""), "rrule"),
        (set_of("61 9 * * *", 0, ""), "cron"),
        (
            pb::ScheduleSet {
                rrule: String::new(),
                ..good.clone()
            },
            "rrule",
        ),
        (
            pb::ScheduleSet {
                cron: "0 9 * * *".into(),
                ..good.clone()
            },
            "cron",
        ),
        (
            pb::ScheduleSet {
                timezone: "Mars/Olympus".into(),
                ..good.clone()
            },
            "timezone",
        ),
        (
            pb::ScheduleSet {
                start_at_ms: 10,
                end_at_ms: 5,
                ..good.clone()
            },
            "end_at",
        ),
        (
            pb::ScheduleSet {
                catch_up: "all".into(),
                ..good.clone()
            },
            "catch_up",
        ),
        (
            pb::ScheduleSet {
                schedule_id: "a b".into(),
                ..good.clone()
            },
            "schedule_id",
        ),
    ];
    for (set, want) in cases {
        assert_eq!(field(&set), [want], "{set:?}");
    }
    // The reason is the parser's.
    let v = schedule::validate(&set_of("FREQ=SOMETIMES", 0, ""), Tz::UTC).unwrap_err();
    assert!(!v.0[0].description.is_empty());
}
