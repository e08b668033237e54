//! Delayed sends, send windows and quiet hours, given/when/then on a
//! simulated clock (issue #33): a delay "24 h before" an appointment across
//! daylight-saving changes, a trigger's `send_at`, a send window's edge on
//! a Friday at 17:00, a deferred send keeping its attempt id, and quiet
//! hours held, dropped or bypassed. Zones are IANA names; nothing reads the
//! server's `TZ`.

use chrono::{Datelike, NaiveDate, Timelike, Weekday};
use clarion_domain::flow::run::Purpose;
use clarion_domain::flow::{Ctx, Flow, Input, Output, RetryPolicy, Run, Terminal};
use clarion_domain::quiet::QuietHours;
use clarion_domain::recipient::timing::{decide, Check, Gate, Scope, SendWindows};
use clarion_domain::time::{self, Tz};
use clarion_domain::Channel;
use clarion_proto::events as pb;
use serde_json::{json, Value};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

/// A run and the world around it: the clock, its timers, sends, notes, end.
struct Sim {
    flow: Flow,
    run: Run,
    now: i64,
    payload: Value,
    timers: Vec<(u32, i64, Purpose)>,
    sends: Vec<String>,
    notes: Vec<String>,
    ends: Vec<(Terminal, String)>,
}

impl Sim {
    fn new(yaml: &str, now: i64, payload: Value) -> Sim {
        let flow = Flow::parse(yaml, 1, |t| {
            Some(if t.starts_with("sms") {
                Channel::Sms
            } else {
                Channel::Email
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let run = Run::new("n1", &flow);
        Sim {
            flow,
            run,
            now,
            payload,
            timers: vec![],
            sends: vec![],
            notes: vec![],
            ends: vec![],
        }
    }

    fn apply(&mut self, input: Input) {
        let (null, retry) = (json!({}), RetryPolicy::default());
        let ctx = Ctx {
            now_ms: self.now,
            payload: &self.payload,
            subscriber: &null,
            tenant: &null,
            retry: &retry,
        };
        for o in self.run.apply(&self.flow, input, &ctx) {
            match o {
                Output::Send { attempt_id, .. } => self.sends.push(attempt_id),
                Output::Timer {
                    seq,
                    due_ms,
                    purpose,
                } => self.timers.push((seq, due_ms, purpose)),
                Output::Note(n) => self.notes.push(n),
                Output::End { terminal, reason } => self.ends.push((terminal, reason)),
                // These workflows have no digest step.
                Output::Digest { step, .. } => panic!("unexpected digest at {step}"),
            }
        }
    }

    /// Moves the clock to `t`, firing the timers due by then.
    fn at(&mut self, t: i64) {
        self.timers.sort_by_key(|(_, due, _)| *due);
        while let Some(pos) = self.timers.iter().position(|(_, due, _)| *due <= t) {
            let (seq, due, _) = self.timers.remove(pos);
            self.now = due;
            self.apply(Input::Timer { seq });
        }
        self.now = t;
    }
}

fn ms(rfc3339: &str) -> i64 {
    time::parse_instant(rfc3339).unwrap()
}

fn zone(name: &str) -> Tz {
    time::zone(name).unwrap()
}

const REMINDER: &str = r#"
id: appointment-reminder
steps:
  - { id: before, type: delay, until: payload.appointment_at, offset: -24h }
  - { id: sms, type: send, channel: sms, template: sms-reminder }
"#;

/// The reminder waits until exactly 24 h of elapsed time before the
/// appointment; returns when it was sent.
fn reminded_at(appointment: &str, now: i64) -> i64 {
    let mut s = Sim::new(REMINDER, now, json!({ "appointment_at": appointment }));
    s.apply(Input::Start);
    assert!(s.sends.is_empty(), "waits first");
    let (_, due, purpose) = s.timers[0];
    assert_eq!(purpose, Purpose::Delay);
    assert!(
        s.notes[0].starts_with("step before: waiting until "),
        "{:?}",
        s.notes
    );
    s.at(due - 1);
    assert!(s.sends.is_empty(), "not a millisecond early");
    s.at(due);
    assert_eq!(s.sends.len(), 1);
    due
}

#[test]
fn given_an_appointment_the_day_of_the_spring_change_in_new_york_then_the_reminder_is_24h_of_elapsed_time_before(
) {
    // 2026-03-08 02:00 EST → 03:00 EDT. Appointment Sunday 10:00 EDT.
    let ny = zone("America/New_York");
    let appt = "2026-03-08T10:00:00-04:00";
    let due = reminded_at(appt, ms("2026-03-01T00:00:00Z"));
    assert_eq!(due, ms(appt) - DAY, "elapsed time, not wall clock");
    // The day before, that is 09:00 on the wall clock (EST).
    let local = time::local_of(due, ny);
    assert_eq!(
        (local.date().weekday(), local.hour(), local.minute()),
        (Weekday::Sat, 9, 0)
    );
}

#[test]
fn given_an_appointment_the_day_of_the_autumn_change_in_paris_then_the_reminder_is_24h_of_elapsed_time_before(
) {
    // 2026-10-25 03:00 CEST → 02:00 CET. Appointment Sunday 10:00 CET.
    let paris = zone("Europe/Paris");
    let appt = "2026-10-25T10:00:00+01:00";
    let due = reminded_at(appt, ms("2026-10-01T00:00:00Z"));
    assert_eq!(due, ms(appt) - DAY);
    let local = time::local_of(due, paris);
    assert_eq!((local.date().weekday(), local.hour()), (Weekday::Sat, 11));
    // And in milliseconds since the epoch in the payload, the same.
    let mut s = Sim::new(
        REMINDER,
        ms("2026-10-01T00:00:00Z"),
        json!({ "appointment_at": ms(appt) }),
    );
    s.apply(Input::Start);
    assert_eq!(s.timers[0].1, due);
}

#[test]
fn given_an_appointment_less_than_24h_away_then_if_past_decides() {
    let now = ms("2026-05-01T12:00:00Z");
    let payload = json!({ "appointment_at": "2026-05-02T08:00:00Z" });
    // send (the default): at once, noted.
    let mut s = Sim::new(REMINDER, now, payload.clone());
    s.apply(Input::Start);
    assert_eq!(s.sends.len(), 1, "sent at once");
    assert!(
        s.notes[0].contains("2026-05-01T08:00:00Z has passed; going on at once"),
        "{:?}",
        s.notes
    );
    // skip: the run ends suppressed, with the reason.
    let skip = REMINDER.replace("offset: -24h }", "offset: -24h, if_past: skip }");
    let mut s = Sim::new(&skip, now, payload);
    s.apply(Input::Start);
    assert!(s.sends.is_empty());
    assert_eq!(s.ends[0].0, Terminal::Suppressed);
    assert!(
        s.ends[0].1.contains("has passed; skipped (if_past: skip)"),
        "{:?}",
        s.ends
    );
    // A payload without the time: as past, saying why.
    let mut s = Sim::new(REMINDER, now, json!({}));
    s.apply(Input::Start);
    assert_eq!(s.sends.len(), 1);
    assert!(
        s.notes[0].contains("payload.appointment_at is missing"),
        "{:?}",
        s.notes
    );
}

const ONE_SMS: &str = r#"
id: one-sms
cancel_key: job
steps:
  - { id: sms, type: send, channel: sms, template: sms-x }
"#;

#[test]
fn given_a_send_at_in_the_future_then_the_run_waits_and_a_cancel_ends_it_unsent() {
    let now = ms("2026-06-01T08:00:00Z");
    let at = now + 2 * H;
    let mut s = Sim::new(ONE_SMS, now, json!({}));
    s.apply(Input::StartAt { at_ms: at });
    assert!(s.sends.is_empty());
    assert_eq!(s.timers, vec![(1, at, Purpose::SendAt)]);
    assert_eq!(
        s.notes,
        vec!["waiting until 2026-06-01T10:00:00Z".to_string()]
    );
    s.at(at);
    assert_eq!(s.sends.len(), 1, "sent when due");

    let mut s = Sim::new(ONE_SMS, now, json!({}));
    s.apply(Input::StartAt { at_ms: at });
    s.apply(Input::Cancel {
        reason: "cancelled by key".into(),
    });
    s.at(at + H);
    assert!(s.sends.is_empty(), "the pending timer changes nothing");
    assert_eq!(s.ends[0].0, Terminal::Cancelled);

    // A send_at in the past starts at once.
    let mut s = Sim::new(ONE_SMS, now, json!({}));
    s.apply(Input::StartAt { at_ms: now - H });
    assert_eq!(s.sends.len(), 1);
}

#[test]
fn given_a_deferred_send_then_it_is_tried_again_with_the_same_attempt_id() {
    let now = ms("2026-06-01T08:00:00Z");
    for purpose in [Purpose::Window, Purpose::QuietHours] {
        let mut s = Sim::new(ONE_SMS, now, json!({}));
        s.apply(Input::Start);
        let first = s.sends[0].clone();
        s.apply(Input::Deferred {
            attempt_id: first.clone(),
            until_ms: now + H,
            purpose,
        });
        assert_eq!(s.timers[0].2, purpose);
        s.at(now + H);
        assert_eq!(
            s.sends,
            vec![first.clone(), first.clone()],
            "same attempt id"
        );
        s.apply(Input::Sent {
            attempt_id: first,
            provider: String::new(),
        });
        assert_eq!(s.ends[0].0, Terminal::Completed);
        assert_eq!(s.run.attempts.len(), 1, "one attempt in the history");
    }
}

fn windows(specs: &[&str]) -> SendWindows {
    let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
    SendWindows::parse(&specs).expect("valid")
}

fn check<'a>(
    now_ms: i64,
    zone: Tz,
    w: Option<&'a SendWindows>,
    holidays: &'a [NaiveDate],
) -> Check<'a> {
    Check {
        now_ms,
        step: "email",
        channel: "email",
        attempt_id: "a1",
        zone,
        windows: w,
        holidays,
        quiet: None,
        critical: false,
        spread_ms: 0,
    }
}

#[test]
fn given_a_window_mon_fri_9_to_17_then_friday_16_59_59_sends_and_17_00_waits_until_monday() {
    let ny = zone("America/New_York");
    let w = windows(&["Mon-Fri 09:00-17:00"]);
    // Friday 2026-03-13, EDT (UTC-4).
    let before = ms("2026-03-13T16:59:59-04:00");
    assert_eq!(
        decide(&check(before, ny, Some(&w), &[])),
        Gate::Go { note: None }
    );
    let at_five = ms("2026-03-13T17:00:00-04:00");
    match decide(&check(at_five, ny, Some(&w), &[])) {
        Gate::Wait {
            until_ms,
            purpose,
            note,
        } => {
            assert_eq!(until_ms, ms("2026-03-16T09:00:00-04:00"), "Monday 09:00");
            assert_eq!(purpose, Purpose::Window);
            assert_eq!(
                note,
                "outside send windows Mon-Fri 09:00-17:00 America/New_York; step email waits until 2026-03-16T13:00:00Z"
            );
        }
        other => panic!("{other:?}"),
    }
    // A tenant holiday on the Monday: Tuesday 09:00.
    let holiday = [NaiveDate::from_ymd_opt(2026, 3, 16).unwrap()];
    match decide(&check(at_five, ny, Some(&w), &holiday)) {
        Gate::Wait { until_ms, .. } => assert_eq!(until_ms, ms("2026-03-17T09:00:00-04:00")),
        other => panic!("{other:?}"),
    }
}

fn quiet(rules: &[(&str, &str, &str, &[&str])], tz: &str, version: u32) -> QuietHours {
    QuietHours::from_event(&pb::QuietHoursSet {
        subscriber_id: "ana".into(),
        rules: rules
            .iter()
            .map(|(start, end, policy, channels)| pb::QuietRule {
                channels: channels.iter().map(|c| c.to_string()).collect(),
                days: vec![],
                start: start.to_string(),
                end: end.to_string(),
                policy: policy.to_string(),
            })
            .collect(),
        timezone: tz.into(),
        enabled: true,
        version,
        origin: None,
    })
    .expect("valid quiet hours")
}

#[test]
fn given_quiet_hours_22_to_7_in_paris_then_sms_is_held_email_dropped_and_critical_passes() {
    let q = quiet(
        &[
            ("22:00", "07:00", "hold", &["sms"]),
            ("22:00", "07:00", "drop", &["email"]),
        ],
        "Europe/Paris",
        3,
    );
    let utc = zone("UTC");
    let night = ms("2026-07-01T23:30:00+02:00");
    let mut c = check(night, utc, None, &[]);
    c.channel = "sms";
    c.step = "sms";
    c.quiet = Some((&q, Scope::Subscriber));
    c.spread_ms = 5 * 60_000;
    match decide(&c) {
        Gate::Wait {
            until_ms,
            purpose,
            note,
        } => {
            let end = ms("2026-07-02T07:00:00+02:00");
            assert!(
                (end..end + 5 * 60_000).contains(&until_ms),
                "released within the spread"
            );
            assert_eq!(purpose, Purpose::QuietHours);
            assert!(
                note.starts_with("held: quiet hours 22:00-07:00 Europe/Paris, subscriber setting v3; step sms released at 2026-07-02T05:0"),
                "{note}"
            );
        }
        other => panic!("{other:?}"),
    }
    c.channel = "email";
    match decide(&c) {
        Gate::Drop { reason } => assert_eq!(
            reason,
            "dropped: quiet hours 22:00-07:00 Europe/Paris, subscriber setting v3"
        ),
        other => panic!("{other:?}"),
    }
    c.critical = true;
    match decide(&c) {
        Gate::Go { note: Some(n) } => assert!(
            n.starts_with("critical: quiet hours 22:00-07:00 Europe/Paris bypassed"),
            "{n}"
        ),
        other => panic!("{other:?}"),
    }
    // In the daytime, nothing to say.
    c.critical = false;
    c.now_ms = ms("2026-07-02T12:00:00+02:00");
    assert_eq!(decide(&c), Gate::Go { note: None });
}
