//! Scenario tests of the per-recipient rules (`clarion_domain::recipient`),
//! given/when/then, on a simulated clock and with no store or runtime: the
//! state is the aggregate the router keeps, and each decision is applied
//! to it the way the router applies it (evolve with the decision's event).

use clarion_domain::flow::throttle::Hold;
use clarion_domain::flow::{Flow, Input, Run, TenantLimits, Terminal};
use clarion_domain::recipient::acceptance::{self, Verdict};
use clarion_domain::recipient::dedup::{self, Mark};
use clarion_domain::recipient::dlq::{self, Alert, Change};
use clarion_domain::recipient::throttle::{self, Counted, Decision, Limits};
use clarion_domain::recipient::{Ctx, Event, State};
use clarion_domain::Channel;
use clarion_proto::events as pb;
use serde_json::{json, Value};

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
const T0: i64 = 1_700_000_000_000;

fn flow(yaml: &str) -> Flow {
    Flow::parse(yaml, 1, |t| {
        Some(if t.starts_with("sms") {
            Channel::Sms
        } else {
            Channel::Email
        })
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn email_flow(extra: &str) -> Flow {
    flow(&format!(
        "id: visit\n{extra}steps:\n  - {{ id: mail, type: send, channel: email, template: email-t }}\n"
    ))
}

fn triggered(nid: &str, subscriber: &str, payload: &Value) -> pb::NotificationTriggered {
    pb::NotificationTriggered {
        notification_id: nid.into(),
        workflow_id: "visit".into(),
        workflow_version: 1,
        subscriber_id: subscriber.into(),
        payload_json: payload.to_string(),
        ..Default::default()
    }
}

/// A router partition's recipients, and its clock.
struct World {
    state: State,
    now: i64,
    partition: u32,
    partitions: u32,
}

impl World {
    fn new() -> World {
        World {
            state: State::default(),
            now: T0,
            partition: 0,
            partitions: 1,
        }
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            now_ms: self.now,
            partition: self.partition,
            partitions: self.partitions,
        }
    }

    /// A trigger of `flow` arrives: content dedup decides, and a fresh
    /// content is marked as the router marks it.
    fn trigger(&mut self, flow: &Flow, t: &pb::NotificationTriggered) -> dedup::Decision {
        let window = flow.dedup_window_ms.expect("the workflow dedups");
        let payload: Value = serde_json::from_str(&t.payload_json).unwrap();
        let hash = dedup::content_hash("acme", &t.workflow_id, &t.subscriber_id, &payload);
        let seen = self.state.content.get("acme", &hash).cloned();
        let d = dedup::decide(flow, window, seen.as_ref(), &t.notification_id, self.now);
        if let dedup::Decision::Fresh(mark) = &d {
            self.state.evolve(Event::ContentMarked(dedup::Marked {
                tenant: "acme".into(),
                hash,
                mark: mark.clone(),
            }));
        }
        d
    }

    /// A send is checked; one that goes counts in its windows.
    fn send(&mut self, limits: Limits<'_>, subscriber: &str, channel: &str) -> Decision {
        let counters = throttle::counters(limits, subscriber, channel, &self.ctx());
        let d = throttle::decide(limits, &counters, &self.state.throttle, "acme", self.now);
        if d == Decision::Go {
            self.state.evolve(Event::SendCounted(Counted {
                tenant: "acme".into(),
                windows: counters
                    .iter()
                    .map(|c| (c.key.clone(), c.window_ms))
                    .collect(),
                at_ms: self.now,
            }));
        }
        d
    }
}

// --- content dedup -----------------------------------------------------

#[test]
fn given_content_accepted_when_it_comes_again_within_the_window_then_it_is_suppressed_naming_the_first(
) {
    let f = email_flow("dedup_window: 10m\n");
    let mut w = World::new();
    let p = json!({"day": "Friday"});
    assert!(matches!(
        w.trigger(&f, &triggered("n1", "ana", &p)),
        dedup::Decision::Fresh(_)
    ));
    // When the same content comes 9 min 59.999 s later
    w.now = T0 + 10 * MIN - 1;
    let d = w.trigger(&f, &triggered("n2", "ana", &p));
    // Then it is a duplicate of n1
    assert_eq!(
        d,
        dedup::Decision::Duplicate {
            reason: "same content as notification n1 within the 10m dedup window".into()
        }
    );
    // And the notification ends suppressed, with the workflow's version
    let ended = acceptance::suppressed(&triggered("n2", "ana", &p), &f, "why".into());
    assert_eq!(ended.outcome, Terminal::Suppressed.as_str());
    assert_eq!(
        (ended.notification_id.as_str(), ended.workflow_id.as_str()),
        ("n2", "visit")
    );
}

#[test]
fn given_content_accepted_when_the_window_has_passed_then_it_starts_and_is_marked_anew() {
    let f = email_flow("dedup_window: 10m\n");
    let mut w = World::new();
    let p = json!({"day": "Friday"});
    w.trigger(&f, &triggered("n1", "ana", &p));
    // When it comes exactly 10 minutes later
    w.now = T0 + 10 * MIN;
    let d = w.trigger(&f, &triggered("n3", "ana", &p));
    // Then it is fresh, and from now on n3 is the one duplicates name
    assert_eq!(
        d,
        dedup::Decision::Fresh(Mark {
            at_ms: T0 + 10 * MIN,
            notification_id: Some("n3".into())
        })
    );
    w.now += MIN;
    assert!(
        matches!(w.trigger(&f, &triggered("n4", "ana", &p)), dedup::Decision::Duplicate { reason } if reason.contains("notification n3"))
    );
}

#[test]
fn given_content_accepted_when_another_recipient_or_payload_comes_then_it_is_not_a_duplicate() {
    let f = email_flow("dedup_window: 1h\n");
    let mut w = World::new();
    w.trigger(&f, &triggered("n1", "ana", &json!({"day": "Friday"})));
    w.now += MIN;
    let other_recipient = w.trigger(&f, &triggered("n2", "bob", &json!({"day": "Friday"})));
    let other_payload = w.trigger(&f, &triggered("n3", "ana", &json!({"day": "Monday"})));
    assert!(matches!(other_recipient, dedup::Decision::Fresh(_)));
    assert!(matches!(other_payload, dedup::Decision::Fresh(_)));
}

#[test]
fn a_stored_mark_from_another_batch_counts_like_one_in_memory() {
    // The router reads the store's row when memory lost the mark.
    let f = email_flow("dedup_window: 10m\n");
    let stored = Mark::decode(br#"{"at":1700000000000,"notification_id":"n1"}"#).unwrap();
    let d = dedup::decide(
        &f,
        f.dedup_window_ms.unwrap(),
        Some(&stored),
        "n2",
        T0 + MIN,
    );
    assert!(matches!(d, dedup::Decision::Duplicate { reason } if reason.contains("n1")));
}

// --- trigger acceptance ------------------------------------------------

#[test]
fn given_a_trigger_of_a_version_that_does_not_exist_then_it_ends_suppressed_saying_so() {
    let mut t = triggered("n1", "ana", &json!({}));
    t.workflow_version = 7;
    let ended = acceptance::unknown_version(&t);
    assert_eq!(ended.outcome, "suppressed");
    assert_eq!(ended.reason, r#"workflow "visit" version 7 does not exist"#);
    assert_eq!(
        (ended.workflow_id.as_str(), ended.workflow_version),
        ("visit", 7)
    );
    assert_eq!(
        (ended.notification_id.as_str(), ended.subscriber_id.as_str()),
        ("n1", "ana")
    );
    assert!(ended.attempts.is_empty());
}

#[test]
fn given_a_trigger_condition_then_true_starts_false_or_failing_suppresses_with_the_reason() {
    assert_eq!(acceptance::verdict(Ok(true)), Verdict::Start);
    assert_eq!(
        acceptance::verdict(Ok(false)),
        Verdict::Suppress("trigger condition is false".into())
    );
    assert_eq!(
        acceptance::verdict(Err("no such key: tier".into())),
        Verdict::Suppress("trigger condition could not be evaluated: no such key: tier".into())
    );
}

#[test]
fn given_a_suppressed_trigger_then_its_run_is_recorded_ended_and_a_repeat_finds_it_ended() {
    let f = email_flow("");
    let mut run = Run::new("n1", &f);
    acceptance::suppress(&mut run, &f, "trigger condition is false".into(), T0);
    assert_eq!(run.terminal, Some(Terminal::Suppressed));
    assert_eq!(run.reason, "trigger condition is false");
    assert_eq!(run.pc, None);
    assert!(run.attempts.is_empty(), "nothing was sent");
}

#[test]
fn a_run_is_indexed_by_its_cancellation_key_when_the_payload_has_one() {
    let f = email_flow("cancel_key: booking.id\n");
    let p = json!({"booking": {"id": "b-42"}});
    assert_eq!(acceptance::cancel_key(&f, &p).as_deref(), Some("b-42"));
    assert_eq!(acceptance::cancel_key(&f, &json!({})), None);
    assert_eq!(acceptance::cancel_key(&email_flow(""), &p), None);
}

// --- throttling --------------------------------------------------------

#[test]
fn given_a_drop_limit_reached_then_the_next_send_is_dropped_until_the_window_slides() {
    let f = email_flow("throttle: [ { scope: recipient, limit: 2, window: 1h } ]\n");
    let limits = Limits {
        flow: &f,
        tenant: None,
    };
    let mut w = World::new();
    assert_eq!(w.send(limits, "ana", "email"), Decision::Go);
    w.now = T0 + MIN;
    assert_eq!(w.send(limits, "ana", "email"), Decision::Go);
    // When a third send comes within the hour
    w.now = T0 + 2 * MIN;
    let d = w.send(limits, "ana", "email");
    // Then it is dropped, with whose limit it was
    assert_eq!(
        d,
        Decision::Held(Hold::Drop(
            "throttled: recipient limit of 2 per 1h reached (workflow visit)".into()
        ))
    );
    // And another recipient is not affected
    assert_eq!(w.send(limits, "bob", "email"), Decision::Go);
    // When the first send leaves the window, there is room again
    w.now = T0 + H;
    assert_eq!(w.send(limits, "ana", "email"), Decision::Go);
    w.now = T0 + H + 1;
    assert!(matches!(w.send(limits, "ana", "email"), Decision::Held(_)));
}

#[test]
fn given_a_defer_limit_reached_then_the_send_waits_until_the_oldest_leaves() {
    let f = email_flow(
        "throttle: [ { scope: channel, channel: email, limit: 1, window: 1h, on_exceed: defer } ]\n",
    );
    let limits = Limits {
        flow: &f,
        tenant: None,
    };
    let mut w = World::new();
    assert_eq!(w.send(limits, "ana", "email"), Decision::Go);
    w.now = T0 + 10 * MIN;
    let Decision::Held(Hold::Defer(at, reason)) = w.send(limits, "ana", "email") else {
        panic!("deferred")
    };
    assert_eq!(at, T0 + H);
    assert!(
        reason.starts_with("throttled: channel email limit of 1 per 1h"),
        "{reason}"
    );
    // A held send counts nowhere: at the time it was deferred to, it goes.
    w.now = at;
    assert_eq!(w.send(limits, "ana", "email"), Decision::Go);
    // The limit names a channel: sms is not limited by it.
    assert_eq!(w.send(limits, "ana", "sms"), Decision::Go);
}

#[test]
fn given_workflow_and_tenant_limits_both_full_then_a_drop_wins_and_defers_wait_for_the_later() {
    let f =
        email_flow("throttle: [ { scope: recipient, limit: 1, window: 1h, on_exceed: defer } ]\n");
    let drop = TenantLimits::parse(
        "throttle:\n  - {scope: recipient, limit: 1, window: 1d}\n",
        3,
    )
    .unwrap();
    let defer = TenantLimits::parse(
        "throttle:\n  - {scope: recipient, limit: 1, window: 2h, on_exceed: defer}\n",
        4,
    )
    .unwrap();
    // Given a workflow that defers and a tenant that drops, both full
    let mut w = World::new();
    let with_drop = Limits {
        flow: &f,
        tenant: Some(&drop),
    };
    assert_eq!(
        throttle::counters(with_drop, "ana", "email", &w.ctx()).len(),
        2
    );
    assert_eq!(w.send(with_drop, "ana", "email"), Decision::Go);
    w.now = T0 + MIN;
    // Then the tenant's drop beats the workflow's defer
    assert_eq!(
        w.send(with_drop, "ana", "email"),
        Decision::Held(Hold::Drop(
            "throttled: recipient limit of 1 per 1d reached (tenant limits v3)".into()
        ))
    );
    // Given two limits that defer, both full
    let mut w = World::new();
    let with_defer = Limits {
        flow: &f,
        tenant: Some(&defer),
    };
    assert_eq!(w.send(with_defer, "ana", "email"), Decision::Go);
    w.now = T0 + MIN;
    // Then the send waits for the later of the two (the tenant's 2 h window)
    let Decision::Held(Hold::Defer(at, reason)) = w.send(with_defer, "ana", "email") else {
        panic!("deferred")
    };
    assert_eq!(at, T0 + 2 * H);
    assert!(reason.ends_with("(tenant limits v4)"), "{reason}");
}

#[test]
fn limits_spanning_recipients_give_each_partition_its_share_rounded_up() {
    let f = email_flow("throttle: [ { scope: workflow, limit: 5, window: 1h } ]\n");
    let limits = Limits {
        flow: &f,
        tenant: None,
    };
    let mut w = World::new();
    w.partitions = 2;
    w.partition = 1;
    let c = throttle::counters(limits, "ana", "email", &w.ctx());
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].limit, 3);
    assert_eq!(c[0].key, "throttle:w/visit/workflow/*/3600000/p1");
    for who in ["ana", "bob", "cy"] {
        assert_eq!(w.send(limits, who, "email"), Decision::Go);
    }
    assert!(matches!(
        w.send(limits, "dee", "email"),
        Decision::Held(Hold::Drop(_))
    ));
    // A recipient's own scope is exact, and named by the recipient.
    let r = email_flow("throttle: [ { scope: channel, limit: 5, window: 1h } ]\n");
    let c = throttle::counters(
        Limits {
            flow: &r,
            tenant: None,
        },
        "ana",
        "email",
        &w.ctx(),
    );
    assert_eq!(
        (c[0].limit, c[0].key.as_str()),
        (5, "throttle:w/visit/channel/*/3600000/c/ana/email")
    );
}

// --- dead-letter accounting --------------------------------------------

/// A tenant's dead-letter queue over two partitions, seen from one.
struct Queue {
    own: i64,
    others: i64,
    threshold: u64,
    alerts: Vec<Alert>,
}

impl Queue {
    fn change(&mut self, delta: i64) -> u64 {
        let d = dlq::decide(Change {
            own: self.own,
            others: self.others,
            delta,
            threshold: self.threshold,
        });
        self.own = d.own;
        self.alerts.extend(d.alert);
        d.total
    }
}

#[test]
fn given_a_threshold_then_crossing_it_upward_alerts_once_and_staying_above_or_going_down_does_not()
{
    let mut q = Queue {
        own: 1,
        others: 1,
        threshold: 3,
        alerts: vec![],
    };
    // When a dead letter takes the total to the threshold
    assert_eq!(q.change(1), 3);
    // Then one alert, with the total
    assert_eq!(
        q.alerts,
        [Alert {
            total: 3,
            threshold: 3
        }]
    );
    // When more come while above it: no more alerts
    assert_eq!(q.change(1), 4);
    assert_eq!(q.alerts.len(), 1);
    // When the queue shrinks, even across the threshold: none
    assert_eq!(q.change(-1), 3);
    assert_eq!(q.change(-1), 2);
    assert_eq!(q.alerts.len(), 1);
    // When it crosses upward again: a second alert
    assert_eq!(q.change(1), 3);
    assert_eq!(q.alerts.len(), 2);
}

#[test]
fn a_threshold_of_zero_never_alerts_and_counts_never_go_negative() {
    let mut q = Queue {
        own: 0,
        others: 0,
        threshold: 0,
        alerts: vec![],
    };
    for _ in 0..5 {
        q.change(1);
    }
    assert!(q.alerts.is_empty());
    q.own = 0;
    assert_eq!(q.change(-1), 0);
    assert_eq!(q.own, 0);
}

#[test]
fn a_run_enters_the_queue_when_dead_lettered_and_leaves_when_retried_or_discarded() {
    use Terminal::*;
    // Dead-lettered now: in (+1); already in: stays, no change.
    assert_eq!(dlq::membership(false, true, Some(DeadLettered)), (true, 1));
    assert_eq!(dlq::membership(true, true, Some(DeadLettered)), (true, 0));
    // Retried: the run is live again, out of the queue (-1).
    assert_eq!(dlq::membership(true, false, None), (false, -1));
    // A discarded dead letter stays out; a late engagement changes nothing.
    assert_eq!(
        dlq::membership(false, false, Some(DeadLettered)),
        (false, 0)
    );
    assert_eq!(dlq::membership(true, false, Some(DeadLettered)), (true, 0));
    assert_eq!(dlq::membership(false, false, Some(Completed)), (false, 0));
}

#[test]
fn the_state_remembers_counts_and_profiles_it_was_told() {
    let mut s = State::default();
    assert_eq!(s.dlq.own("acme"), None, "not read yet");
    s.evolve(Event::DeadLettersCounted(dlq::Counted {
        tenant: "acme".into(),
        own: 4,
    }));
    assert_eq!((s.dlq.own("acme"), s.dlq.own("globex")), (Some(4), None));
    s.profiles.load("acme", "ana", None);
    assert_eq!(s.profiles.get("acme", "ana"), Some(&None));
    let up = pb::SubscriberUpserted {
        subscriber_id: "ana".into(),
        email: "ana@example.test".into(),
        ..Default::default()
    };
    s.evolve(Event::ProfileUpserted(
        clarion_domain::recipient::profile::Upserted {
            tenant: "acme".into(),
            subscriber: clarion_domain::subscriber::Subscriber::from_event(&up),
        },
    ));
    let got = s.profiles.get("acme", "ana").unwrap().as_ref().unwrap();
    assert_eq!(got.email, "ana@example.test");
    // Another tenant's subscriber of the same id is another recipient.
    assert_eq!(s.profiles.get("globex", "ana"), None);
}

/// The workflow engine is untouched by acceptance: a started run sends.
#[test]
fn a_started_run_sends_its_first_step() {
    let f = email_flow("");
    let mut run = Run::new("n1", &f);
    let retry = Default::default();
    let ctx = clarion_domain::flow::Ctx {
        now_ms: T0,
        payload: &Value::Null,
        subscriber: &Value::Null,
        tenant: &Value::Null,
        retry: &retry,
    };
    let out = run.apply(&f, Input::Start, &ctx);
    assert_eq!(out.len(), 1);
}
