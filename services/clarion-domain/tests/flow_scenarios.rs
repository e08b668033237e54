//! Scenario tests of the workflow engine, given/when/then, on a simulated
//! clock: "two hours later" is an integer, so every timing rule is checked
//! to the millisecond without waiting.

use clarion_domain::flow::run::{Purpose, Waiting};
use clarion_domain::flow::{Ctx, Engagement, Flow, Input, Output, RetryPolicy, Run, Terminal};
use clarion_domain::Channel;
use serde_json::{json, Value};

const H: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

/// A run plus the world around it: a clock, pending timers, what was sent.
struct Sim {
    flow: Flow,
    run: Run,
    now: i64,
    payload: Value,
    subscriber: Value,
    retry: RetryPolicy,
    timers: Vec<(u32, i64)>,
    sends: Vec<(String, String, clarion_domain::flow::SendSpec)>,
    ends: Vec<(Terminal, String)>,
    notes: Vec<String>,
}

fn channel_of(t: &str) -> Option<Channel> {
    Some(match t {
        t if t.starts_with("sms") => Channel::Sms,
        t if t.starts_with("push") => Channel::Push,
        _ => Channel::Email,
    })
}

impl Sim {
    fn new(yaml: &str) -> Sim {
        let flow = Flow::parse(yaml, 1, channel_of).unwrap_or_else(|e| panic!("{e}"));
        let run = Run::new("n1", &flow);
        Sim {
            flow,
            run,
            now: T0,
            payload: json!({"backup": {"phone": "+15145550199"}, "priority": "high"}),
            subscriber: json!({"id": "tech-7", "attributes": {"tier": "gold"}}),
            retry: RetryPolicy::default(),
            timers: vec![],
            sends: vec![],
            ends: vec![],
            notes: vec![],
        }
    }

    fn apply(&mut self, input: Input) {
        let tenant = json!({});
        let ctx = Ctx {
            now_ms: self.now,
            payload: &self.payload,
            subscriber: &self.subscriber,
            tenant: &tenant,
            retry: &self.retry,
        };
        for o in self.run.apply(&self.flow, input, &ctx) {
            match o {
                Output::Send {
                    step,
                    attempt_id,
                    spec,
                } => self.sends.push((step, attempt_id, spec)),
                Output::Timer { seq, due_ms, .. } => self.timers.push((seq, due_ms)),
                Output::End { terminal, reason } => self.ends.push((terminal, reason)),
                Output::Note(n) => self.notes.push(n),
                Output::Digest { .. } => {}
            }
        }
    }

    /// Moves the clock to `t` and fires every timer due by then, in order.
    fn at(&mut self, t: i64) {
        self.timers.sort_by_key(|(_, due)| *due);
        while let Some(pos) = self.timers.iter().position(|(_, due)| *due <= t) {
            let (seq, due) = self.timers.remove(pos);
            self.now = due;
            self.apply(Input::Timer { seq });
        }
        self.now = t;
    }

    fn last_attempt(&self) -> String {
        self.sends.last().unwrap().1.clone()
    }

    fn sent_last(&mut self) {
        let a = self.last_attempt();
        self.apply(Input::Sent {
            attempt_id: a,
            provider: String::new(),
        });
    }

    fn channels(&self) -> Vec<&str> {
        self.sends
            .iter()
            .map(|(_, _, s)| s.channel.as_str())
            .collect()
    }
}

const EMAIL_THEN_SMS: &str = r#"
id: appointment
trigger: { event: appointment.booked }
steps:
  - { id: email, type: send, channel: email, template: appt-email }
  - { id: wait-open, type: wait, for: opened, step: email, timeout: 2h, on_event: end }
  - { id: sms, type: send, channel: sms, template: sms-appt }
"#;

#[test]
fn given_email_opened_at_1h59_then_no_sms() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    s.sent_last();
    let email = s.sends[0].1.clone();
    // When the email is opened at 1 h 59
    s.at(T0 + H + 59 * 60_000);
    s.apply(Input::Engaged {
        attempt_id: email,
        kind: Engagement::Opened,
    });
    // Then the run ends without an SMS, and the stale timeout changes nothing
    s.at(T0 + 3 * H);
    assert_eq!(s.channels(), ["email"]);
    assert_eq!(s.ends, [(Terminal::Completed, "all steps done".into())]);
    assert_eq!(s.run.step_status["email"], "opened");
}

#[test]
fn given_email_not_opened_then_sms_at_exactly_2h() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    s.sent_last();
    s.at(T0 + 2 * H - 1);
    assert_eq!(s.channels(), ["email"], "nothing before 2 h");
    s.at(T0 + 2 * H);
    assert_eq!(
        s.channels(),
        ["email", "sms"],
        "the SMS goes at exactly 2 h"
    );
    assert_eq!(s.run.step_status["wait-open"], "timed_out");
    s.sent_last();
    assert_eq!(s.ends.len(), 1);
    assert_eq!(s.ends[0].0, Terminal::Completed);
}

#[test]
fn a_click_satisfies_a_wait_for_open() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    s.sent_last();
    let email = s.sends[0].1.clone();
    s.apply(Input::Engaged {
        attempt_id: email,
        kind: Engagement::Clicked,
    });
    assert_eq!(s.channels(), ["email"]);
    assert_eq!(s.ends[0].0, Terminal::Completed);
}

const FALLBACK: &str = r#"
id: reach-technician
steps:
  - id: reach
    type: fallback
    chain:
      - { channel: push, template: push-job, app: fieldapp }
      - { channel: sms, template: sms-job }
      - { channel: email, template: email-job }
    ack: { for: acknowledged, timeout: 10m }
"#;

#[test]
fn given_push_fails_then_falls_back_to_sms() {
    let mut s = Sim::new(FALLBACK);
    s.apply(Input::Start);
    let push = s.last_attempt();
    s.apply(Input::Failed {
        attempt_id: push,
        retryable: false,
        reason: "token unregistered".into(),
    });
    assert_eq!(s.channels(), ["push", "sms"]);
    // When the SMS is sent and acknowledged within 10 minutes
    s.sent_last();
    let sms = s.last_attempt();
    s.at(T0 + 9 * 60_000);
    s.apply(Input::Engaged {
        attempt_id: sms,
        kind: Engagement::Acknowledged,
    });
    // Then no email, and the run is complete
    s.at(T0 + H);
    assert_eq!(s.channels(), ["push", "sms"]);
    assert_eq!(s.ends, [(Terminal::Completed, "all steps done".into())]);
}

#[test]
fn given_no_acknowledgement_then_each_channel_in_turn_then_dead_letter() {
    let mut s = Sim::new(FALLBACK);
    s.apply(Input::Start);
    s.sent_last();
    s.at(T0 + 10 * 60_000);
    assert_eq!(s.channels(), ["push", "sms"]);
    s.sent_last();
    s.at(T0 + 20 * 60_000);
    assert_eq!(s.channels(), ["push", "sms", "email"]);
    s.sent_last();
    s.at(T0 + 30 * 60_000);
    assert_eq!(s.ends.len(), 1);
    assert_eq!(s.ends[0].0, Terminal::DeadLettered);
    assert!(
        s.ends[0].1.contains("no acknowledged within 10m"),
        "{:?}",
        s.ends
    );
}

const ESCALATE: &str = r#"
id: job-assigned
steps:
  - { id: notify, type: send, channel: sms, template: sms-job }
  - { id: wait-ack, type: wait, for: acknowledged, step: notify, timeout: 15m, on_event: end, on_timeout: escalate }
  - { id: escalate, type: send, channel: sms, template: sms-escalation, to: payload.backup.phone }
"#;

#[test]
fn given_no_ack_then_escalates_to_the_backup_technician() {
    let mut s = Sim::new(ESCALATE);
    s.apply(Input::Start);
    s.sent_last();
    s.at(T0 + 15 * 60_000);
    assert_eq!(s.sends.len(), 2);
    let (step, _, spec) = &s.sends[1];
    assert_eq!(step, "escalate");
    assert_eq!(spec.to.as_deref(), Some("payload.backup.phone"));
}

#[test]
fn given_a_retryable_error_then_retries_with_backoff_and_succeeds() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    let first = s.last_attempt();
    s.apply(Input::Failed {
        attempt_id: first.clone(),
        retryable: true,
        reason: "421 try later".into(),
    });
    assert_eq!(s.sends.len(), 1, "no immediate resend");
    let (_, due) = s.timers.last().copied().unwrap();
    let delay = due - T0;
    assert!(
        (800..=1200).contains(&delay),
        "first backoff ~1 s ± 20 %: {delay}"
    );
    s.at(due - 1);
    assert_eq!(s.sends.len(), 1);
    s.at(due);
    assert_eq!(s.sends.len(), 2);
    let second = s.last_attempt();
    assert_ne!(first, second, "a retry is a new attempt with its own id");
    s.apply(Input::Failed {
        attempt_id: second,
        retryable: true,
        reason: "421 try later".into(),
    });
    let (_, due2) = s.timers.last().copied().unwrap();
    assert!(
        (1600..=2400).contains(&(due2 - s.now)),
        "second backoff ~2 s: {}",
        due2 - s.now
    );
    s.at(due2);
    s.sent_last();
    assert_eq!(s.run.step_status["email"], "sent");
    assert!(matches!(
        s.run.waiting,
        Waiting::Timer {
            purpose: Purpose::WaitTimeout,
            ..
        }
    ));
}

#[test]
fn given_retries_exhausted_then_dead_letter_then_operator_retry_delivers() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.retry = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    s.apply(Input::Start);
    for _ in 0..3 {
        let a = s.last_attempt();
        s.apply(Input::Failed {
            attempt_id: a,
            retryable: true,
            reason: "connection refused".into(),
        });
        let t = s.timers.iter().map(|(_, d)| *d).max().unwrap_or(s.now);
        s.at(t);
    }
    assert_eq!(s.sends.len(), 3, "max_attempts = 3");
    assert_eq!(s.ends.len(), 1);
    assert_eq!(s.ends[0].0, Terminal::DeadLettered);
    assert!(s.ends[0]
        .1
        .contains("step email failed: connection refused"));
    assert_eq!(s.run.attempts.len(), 3);
    assert!(s.run.attempts.iter().all(|a| a.error.is_some()));
    // When an operator retries, the run re-enters the failed step
    s.apply(Input::Retry);
    assert_eq!(s.sends.len(), 4);
    assert_eq!(s.sends[3].0, "email");
    let ids: std::collections::HashSet<_> = s.sends.iter().map(|x| x.1.clone()).collect();
    assert_eq!(ids.len(), 4, "fresh attempt id");
    s.sent_last();
    assert_eq!(s.run.terminal, None, "running again, waiting for the open");
    s.at(T0 + 10 * H);
    s.sent_last();
    assert_eq!(s.ends.last().unwrap().0, Terminal::Completed);
}

#[test]
fn cancellation_stops_a_waiting_run() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    s.sent_last();
    s.apply(Input::Cancel {
        reason: "appointment cancelled".into(),
    });
    s.at(T0 + 5 * H);
    assert_eq!(s.channels(), ["email"]);
    assert_eq!(
        s.ends,
        [(Terminal::Cancelled, "appointment cancelled".into())]
    );
    s.apply(Input::Cancel {
        reason: "again".into(),
    });
    assert_eq!(s.ends.len(), 1, "one terminal state, once");
}

#[test]
fn delay_branch_and_stop() {
    let mut s = Sim::new(
        r#"
id: vip
steps:
  - { id: pause, type: delay, duration: 30m }
  - { id: gold, type: branch, if: 'subscriber.attributes.tier == "gold"', then: sms, else: email }
  - { id: email, type: send, channel: email, template: e1 }
  - { id: done, type: stop }
  - { id: sms, type: send, channel: sms, template: sms1 }
  - { id: failed-sms, type: branch, step_status: { step: sms, is: failed }, then: email, else: end }
"#,
    );
    s.apply(Input::Start);
    s.at(T0 + 30 * 60_000 - 1);
    assert!(s.sends.is_empty());
    s.at(T0 + 30 * 60_000);
    assert_eq!(s.channels(), ["sms"]);
    let a = s.last_attempt();
    s.apply(Input::Failed {
        attempt_id: a,
        retryable: false,
        reason: "invalid number".into(),
    });
    // A plain send that fails terminally is dead-lettered, not branched past.
    assert_eq!(s.ends[0].0, Terminal::DeadLettered);

    let mut s = Sim::new(
        r#"
id: vip
steps:
  - { id: gold, type: branch, if: 'subscriber.attributes.tier == "platinum"', then: sms, else: email }
  - { id: email, type: send, channel: email, template: e1 }
  - { id: done, type: stop }
  - { id: sms, type: send, channel: sms, template: sms1 }
"#,
    );
    s.apply(Input::Start);
    s.sent_last();
    assert_eq!(s.channels(), ["email"]);
    assert_eq!(
        s.ends,
        [(Terminal::Completed, "stopped at step done".into())]
    );
}

#[test]
fn the_goal_ends_the_run_early() {
    let mut s = Sim::new(
        r#"
id: onboarding
goal: clicked
steps:
  - { id: e1, type: send, channel: email, template: e1 }
  - { id: d, type: delay, duration: 1d }
  - { id: e2, type: send, channel: email, template: e2 }
"#,
    );
    s.apply(Input::Start);
    s.sent_last();
    let a = s.sends[0].1.clone();
    s.at(T0 + 2 * H);
    s.apply(Input::Engaged {
        attempt_id: a,
        kind: Engagement::Clicked,
    });
    s.at(T0 + 48 * H);
    assert_eq!(s.sends.len(), 1);
    assert_eq!(
        s.ends,
        [(Terminal::Completed, "goal clicked reached".into())]
    );
}

#[test]
fn trigger_conditions_filter_runs() {
    let f = Flow::parse(
        r#"
id: urgent
trigger: { event: job.created, condition: 'payload.priority == "high"' }
steps: [ { id: s, type: send, channel: sms, template: sms1 } ]
"#,
        1,
        channel_of,
    )
    .unwrap();
    assert_eq!(
        f.matches(&json!({"priority": "high"}), &json!({}), &json!({})),
        Ok(true)
    );
    assert_eq!(
        f.matches(&json!({"priority": "low"}), &json!({}), &json!({})),
        Ok(false)
    );
}

fn problems(yaml: &str) -> Vec<(String, String)> {
    match Flow::parse(yaml, 1, |t| {
        (t != "missing").then(|| channel_of(t)).flatten()
    }) {
        Ok(_) => vec![],
        Err(v) => v.0.into_iter().map(|f| (f.field, f.description)).collect(),
    }
}

#[test]
fn invalid_definitions_are_rejected_with_path_and_reason() {
    let p = problems("id: x\nsteps:\n  - { id: a, type: send, channel: fax, template: missing }\n");
    assert_eq!(p[0].0, "steps[0].channel");
    assert_eq!(p[1].0, "steps[0].template");
    assert!(p[1].1.contains("no template \"missing\""));

    let p = problems(
        "id: x\nsteps:\n  - { id: a, type: send, channel: email, template: e, next: nowhere }\n",
    );
    assert_eq!(
        p,
        [(
            "steps[0].next".into(),
            "jumps to unknown step \"nowhere\"".into()
        )]
    );

    let p = problems(
        "id: x\nsteps:\n  - { id: a, type: send, channel: email, template: e }\n  - { id: w, type: wait, for: opened, step: a, timeout: 2h, on_timeout: a }\n",
    );
    assert_eq!(p[0].0, "steps");
    assert!(p[0].1.contains("cycle: a → w → a"), "{p:?}");

    let p = problems("id: x\nsteps:\n  - { id: b, type: branch, if: 'payload.x ==', then: end }\n");
    assert_eq!(p[0].0, "steps[0].if");
    assert!(p[0].1.contains("does not compile"));

    let p = problems("id: x\nsteps:\n  - { id: d, type: delay, duration: soon }\n");
    assert_eq!(p[0].0, "steps[0].duration");

    let p = problems("id: x\nsteps:\n  - { id: d, type: teleport }\n");
    assert!(p[0].0.starts_with("definition"), "{p:?}");
    assert!(p[0].1.contains("teleport"), "{p:?}");

    let p = problems(
        "id: x\ntrigger: { condition: 'nope.x == 1' }\nsteps: [ { id: s, type: stop } ]\n",
    );
    assert_eq!(p[0].0, "trigger.condition");
}

#[test]
fn definitions_round_trip_through_canonical_json() {
    let f = Flow::parse(ESCALATE, 4, channel_of).unwrap();
    let back = Flow::from_json(&f.to_json(), 4).unwrap();
    assert_eq!(back.def, f.def);
    assert_eq!(back.version, 4);
}

#[test]
fn a_throttled_send_is_deferred_then_sent_with_the_same_attempt_id() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    let held = s.last_attempt();
    // Given the send is over a limit that frees up in 10 minutes
    s.apply(Input::Throttled {
        attempt_id: held.clone(),
        defer_until: Some(T0 + 600_000),
        reason: "throttled".into(),
    });
    assert!(s.run.attempts.is_empty(), "a held send is not an attempt");
    s.at(T0 + 600_000 - 1);
    assert_eq!(s.sends.len(), 1);
    s.at(T0 + 600_000);
    assert_eq!(s.sends.len(), 2);
    assert_eq!(s.last_attempt(), held, "never sent, so the same attempt id");
    s.sent_last();
    assert_eq!(s.run.step_status["email"], "sent");
}

#[test]
fn a_throttled_send_with_drop_ends_the_run_suppressed() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    let held = s.last_attempt();
    s.apply(Input::Throttled {
        attempt_id: held,
        defer_until: None,
        reason: "throttled: recipient limit of 3 per 1d reached".into(),
    });
    assert_eq!(
        s.ends,
        [(
            Terminal::Suppressed,
            "throttled: recipient limit of 3 per 1d reached".into()
        )]
    );
}

#[test]
fn only_a_condition_on_variables_needs_them_built() {
    let parse =
        |steps: &str| Flow::parse(&format!("id: f\nsteps:\n{steps}"), 1, channel_of).unwrap();
    let send = "  - { id: s, type: send, channel: sms, template: sms1 }\n";
    assert!(!parse(send).has_branch_conditions());
    let on_status = format!(
        "{send}  - {{ id: b, type: branch, step_status: {{ step: s, is: failed }}, then: end, else: end }}\n"
    );
    assert!(!parse(&on_status).has_branch_conditions());
    let on_vars = format!(
        "  - {{ id: b, type: branch, if: 'subscriber.attributes.tier == \"gold\"', then: s, else: end }}\n{send}"
    );
    assert!(parse(&on_vars).has_branch_conditions());
}

/// `surely_changes` is what lets the router skip copying a run to compare
/// with: it may say "not sure", but never "sure" for an input that changes
/// nothing.
#[test]
fn given_an_engagement_then_surely_changes_only_when_it_raises_the_status() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    let email = s.sends[0].1.clone();
    let sent = Input::Sent {
        attempt_id: email.clone(),
        provider: String::new(),
    };
    assert!(s.run.surely_changes(&sent), "the outcome it waits for");
    s.sent_last();
    assert!(!s.run.surely_changes(&sent), "a repeated sent");
    let engaged = |kind| Input::Engaged {
        attempt_id: email.clone(),
        kind,
    };
    for (kind, raises) in [
        (Engagement::Delivered, true),
        (Engagement::Delivered, false),
        (Engagement::Opened, true),
        (Engagement::Delivered, false),
        (Engagement::Opened, false),
    ] {
        let before = s.run.clone();
        assert_eq!(s.run.surely_changes(&engaged(kind)), raises, "{kind:?}");
        s.apply(engaged(kind));
        assert_eq!(s.run != before, raises, "{kind:?} changed the run");
    }
    // An attempt the run never made: not sure (and nothing changes).
    let stray = Input::Engaged {
        attempt_id: "other".into(),
        kind: Engagement::Clicked,
    };
    assert!(!s.run.surely_changes(&stray));
}

const MARKETING: &str = r#"
id: promo
topic: marketing
steps:
  - { id: email, type: send, channel: email, template: promo-email }
  - { id: sms, type: send, channel: sms, template: sms-promo }
"#;

#[test]
fn a_send_suppressed_by_preferences_is_skipped_and_the_run_goes_on() {
    let mut s = Sim::new(MARKETING);
    s.apply(Input::Start);
    s.sent_last();
    // Given the subscriber turned SMS off for the topic
    let sms = s.last_attempt();
    s.apply(Input::Suppressed {
        attempt_id: sms,
        reason: "subscriber turned sms off for topic marketing".into(),
    });
    assert_eq!(s.run.step_status["sms"], "suppressed");
    assert_eq!(s.run.attempts.len(), 1, "the suppressed send is no attempt");
    assert_eq!(s.ends, [(Terminal::Completed, "all steps done".into())]);
    assert!(s.notes[0].contains("step sms: suppressed"), "{:?}", s.notes);
}

#[test]
fn a_run_whose_every_send_is_suppressed_ends_suppressed_with_the_first_reason() {
    let mut s = Sim::new(MARKETING);
    s.apply(Input::Start);
    for reason in ["opted out of topic marketing (email)", "opted out (sms)"] {
        let a = s.last_attempt();
        s.apply(Input::Suppressed {
            attempt_id: a,
            reason: reason.into(),
        });
    }
    assert_eq!(
        s.ends,
        [(
            Terminal::Suppressed,
            "opted out of topic marketing (email)".into()
        )]
    );
}

#[test]
fn a_suppressed_channel_of_a_fallback_chain_falls_to_the_next() {
    let mut s = Sim::new(
        r#"
id: reach
steps:
  - id: reach
    type: fallback
    chain:
      - { channel: sms, template: sms-a }
      - { channel: email, template: email-a }
"#,
    );
    s.apply(Input::Start);
    let sms = s.last_attempt();
    s.apply(Input::Suppressed {
        attempt_id: sms,
        reason: "sms off".into(),
    });
    assert_eq!(s.channels(), ["sms", "email"]);
    s.sent_last();
    assert_eq!(s.ends, [(Terminal::Completed, "all steps done".into())]);
}

/// Failover (issue #31): the dispatcher tried two providers under one
/// attempt id. The run takes the attempt's first outcome and records which
/// provider won; a late report of the provider it failed over from (its
/// success, its failure) finds the run no longer waiting and sends nothing.
#[test]
fn given_a_failover_then_the_winner_is_recorded_and_late_reports_send_nothing() {
    let mut s = Sim::new(EMAIL_THEN_SMS);
    s.apply(Input::Start);
    let email = s.sends[0].1.clone();
    s.apply(Input::Sent {
        attempt_id: email.clone(),
        provider: "smtp".into(),
    });
    let sends = s.sends.len();
    let waiting = s.run.waiting.clone();
    s.apply(Input::Sent {
        attempt_id: email.clone(),
        provider: "sendgrid".into(),
    });
    s.apply(Input::Failed {
        attempt_id: email.clone(),
        retryable: true,
        reason: "sendgrid answered 503".into(),
    });
    assert_eq!(s.sends.len(), sends, "no second message");
    assert_eq!(s.run.waiting, waiting, "the run did not move");
    let a = s
        .run
        .attempts
        .iter()
        .find(|a| a.attempt_id == email)
        .unwrap();
    assert_eq!(a.provider, "smtp", "the winner");
    assert!(a.sent && a.error.is_none(), "{a:?}");
}
