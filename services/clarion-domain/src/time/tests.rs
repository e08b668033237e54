//! Scenario tests of time arithmetic in named zones (dates in 2026: US
//! clocks change on March 8 and November 1, EU ones on March 29 and
//! October 25, Lord Howe's on April 5 and October 4).

use chrono::{NaiveDate, NaiveDateTime};

use super::*;

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn utc(s: &str) -> i64 {
    parse_instant(s).unwrap()
}

fn tz(name: &str) -> Tz {
    zone(name).unwrap()
}

#[test]
fn a_skipped_local_time_moves_forward_by_the_gap_and_a_repeated_one_is_the_earlier() {
    let ny = tz("America/New_York");
    assert_eq!(
        instant_of(local("2026-03-08 02:30:00"), ny),
        utc("2026-03-08T07:30:00Z")
    ); // 03:30 EDT
    assert_eq!(
        instant_of(local("2026-11-01 01:30:00"), ny),
        utc("2026-11-01T05:30:00Z")
    ); // EDT, not EST
    let paris = tz("Europe/Paris");
    assert_eq!(
        instant_of(local("2026-03-29 02:30:00"), paris),
        utc("2026-03-29T01:30:00Z")
    ); // 03:30 CEST
    assert_eq!(
        instant_of(local("2026-10-25 02:30:00"), paris),
        utc("2026-10-25T00:30:00Z")
    ); // CEST
       // Lord Howe moves by half an hour: 02:15 does not exist on October 4.
    let lh = tz("Australia/Lord_Howe");
    assert_eq!(
        instant_of(local("2026-10-04 02:15:00"), lh),
        utc("2026-10-03T15:45:00Z")
    ); // 02:45 +11
    assert_eq!(
        local_of(utc("2026-10-03T15:45:00Z"), lh),
        local("2026-10-04 02:45:00")
    );
    // Unambiguous times are exact.
    assert_eq!(
        instant_of(local("2026-07-01 09:00:00"), paris),
        utc("2026-07-01T07:00:00Z")
    );
}

#[test]
fn a_weekly_nine_oclock_reminder_stays_nine_oclock_local_across_both_transitions() {
    for (zone_name, spring, fall) in [
        ("America/New_York", "2026-03-02", "2026-10-26"),
        ("Europe/Paris", "2026-03-23", "2026-10-19"),
    ] {
        let z = tz(zone_name);
        for from in [spring, fall] {
            let start = instant_of(local(&format!("{from} 00:00:00")), z);
            let r = Recurrence::parse(
                "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0",
                start,
                z,
            )
            .unwrap();
            let next = r.next_n(start, 3);
            assert_eq!(next.len(), 3);
            let offsets: Vec<_> = next
                .iter()
                .map(|&at| {
                    assert_eq!(local_of(at, z).format("%a %H:%M").to_string(), "Mon 09:00");
                    format_local(at, z)[19..].to_string()
                })
                .collect();
            // The offset changes between the first and second Monday: the
            // wall time did not.
            assert_ne!(
                offsets[0], offsets[1],
                "{zone_name} from {from}: {offsets:?}"
            );
            // And cron says the same.
            let c = Recurrence::parse("0 9 * * 1", start, z).unwrap();
            assert_eq!(
                c.next_n(start, 3),
                next,
                "{zone_name}: cron and RRULE agree"
            );
        }
    }
}

#[test]
fn a_daily_two_thirty_reminder_on_the_transition_days() {
    let paris = tz("Europe/Paris");
    let start = utc("2026-03-27T12:00:00Z");
    let r = Recurrence::parse("FREQ=DAILY;BYHOUR=2;BYMINUTE=30;BYSECOND=0", start, paris).unwrap();
    let spring: Vec<String> = r
        .next_n(start, 3)
        .iter()
        .map(|&t| format_local(t, paris))
        .collect();
    assert_eq!(
        spring,
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:30:00+02:00", // 02:30 does not exist: shifted by the gap
            "2026-03-30T02:30:00+02:00",
        ]
    );
    let start = utc("2026-10-23T12:00:00Z");
    let r = Recurrence::parse("30 2 * * *", start, paris).unwrap();
    let fall: Vec<String> = r
        .next_n(start, 3)
        .iter()
        .map(|&t| format_local(t, paris))
        .collect();
    assert_eq!(
        fall,
        [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00", // occurs twice: once, the earlier
            "2026-10-26T02:30:00+01:00",
        ]
    );
}

#[test]
fn half_hour_zones() {
    let kolkata = tz("Asia/Kolkata");
    let start = utc("2026-01-01T00:00:00Z");
    let r = Recurrence::parse(
        "FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0;COUNT=2",
        start,
        kolkata,
    )
    .unwrap();
    assert_eq!(
        r.next_n(start, 5),
        [utc("2026-01-01T03:30:00Z"), utc("2026-01-02T03:30:00Z")],
        "COUNT ends it"
    );
    let lh = tz("Australia/Lord_Howe");
    let start = utc("2026-10-02T00:00:00Z");
    let r = Recurrence::parse("15 2 * * *", start, lh).unwrap();
    let got: Vec<String> = r
        .next_n(start, 3)
        .iter()
        .map(|&t| format_local(t, lh))
        .collect();
    assert_eq!(
        got,
        [
            "2026-10-03T02:15:00+10:30",
            "2026-10-04T02:45:00+11:00",
            "2026-10-05T02:15:00+11:00"
        ]
    );
}

#[test]
fn until_ends_a_rule_and_missed_counts_without_a_burst() {
    let ny = tz("America/New_York");
    let start = utc("2026-06-01T00:00:00Z");
    let r = Recurrence::parse(
        "RRULE:FREQ=DAILY;BYHOUR=8;BYMINUTE=0;BYSECOND=0;UNTIL=20260605T235959Z",
        start,
        ny,
    )
    .unwrap();
    // The start is May 31, 20:00 local: June 1 to 5 at 08:00, then UNTIL.
    let got = r.next_n(start, 10);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[4], utc("2026-06-05T12:00:00Z"));
    let hourly = Recurrence::parse("0 * * * *", start, ny).unwrap();
    let (n, latest) = hourly.missed(start, start + 3 * 86_400_000);
    assert_eq!(n, 72);
    assert_eq!(latest, Some(start + 3 * 86_400_000));
    assert_eq!(hourly.missed(start, start), (0, None));
}

#[test]
fn windows_open_and_close_in_the_recipient_zone() {
    let ny = tz("America/New_York");
    let w = Windows::parse(&["Mon-Fri 09:00-17:00".into()]).unwrap();
    // Friday December 4, 2026.
    let before_close = instant_of(local("2026-12-04 16:59:59"), ny);
    let at_close = instant_of(local("2026-12-04 17:00:00"), ny);
    assert_eq!(w.next_open(before_close, ny, &[]), Some(before_close));
    let monday = instant_of(local("2026-12-07 09:00:00"), ny);
    assert_eq!(w.next_open(at_close, ny, &[]), Some(monday));
    // A holiday on Monday: Tuesday.
    let holidays = [NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()];
    assert_eq!(
        w.next_open(at_close, ny, &holidays),
        Some(instant_of(local("2026-12-08 09:00:00"), ny))
    );
    assert!(!w.is_open(monday + 3_600_000, ny, &holidays));
    // Several ranges; the earliest opening wins.
    let w = Windows::parse(&["Sat 10:00-12:00".into(), "Fri 18:00-20:00".into()]).unwrap();
    assert_eq!(
        w.next_open(at_close, ny, &[]),
        Some(instant_of(local("2026-12-04 18:00:00"), ny))
    );
    assert!(Windows::parse(&[])
        .unwrap()
        .is_open(at_close, ny, &holidays));
}

#[test]
fn bad_input_says_what_is_wrong() {
    let z = Tz::UTC;
    assert!(zone("Mars/Olympus_Mons")
        .unwrap_err()
        .contains("unknown time zone"));
    assert!(Recurrence::parse("FREQ=SOMETIMES", 0, z)
        .unwrap_err()
        .contains("RRULE"));
    assert!(Recurrence::parse("61 * * * *", 0, z)
        .unwrap_err()
        .contains("cron"));
    assert!(Recurrence::parse("every monday", 0, z)
        .unwrap_err()
        .contains("5 fields"));
    let (i, e) =
        Windows::parse(&["Mon 08:00-09:00".into(), "Mon-Fri 17:00-09:00".into()]).unwrap_err();
    assert_eq!(i, 1);
    assert!(e.contains("end must be after the start"), "{e}");
    assert!(Windows::parse(&["Funday 08:00-09:00".into()]).is_err());
    assert_eq!(parse_signed_duration("-24h"), Ok(-86_400_000));
    assert_eq!(parse_signed_duration("2h30m"), Ok(9_000_000));
    assert!(parse_signed_duration("soon").is_err());
    assert!(parse_signed_duration("-").is_err());
    assert!(parse_date("2026-02-30").is_err());
    assert!(parse_local_time("25:00").is_err());
}

/// Every scenario above again, in a process whose `TZ` is far from UTC:
/// nothing may change (the module never reads the server's zone).
#[test]
fn the_servers_tz_changes_nothing() {
    if std::env::var_os("CLARION_TZ_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["time::tests::", "--test-threads", "1"])
        .env("TZ", "Pacific/Chatham")
        .env("CLARION_TZ_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "under TZ=Pacific/Chatham:\n{text}");
    let passed = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed >= 7, "the scenarios ran under the other TZ: {text}");
}
