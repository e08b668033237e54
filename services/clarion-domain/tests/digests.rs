//! Digests, pure: the accumulator's decisions, a run at a digest step
//! (given/when/then on a simulated clock), the checks at publication, and a
//! property test that every digested event lands in exactly one digest,
//! which closes once.

use std::collections::{BTreeMap, HashMap};

use clarion_domain::digest::{self, Batch, Decision, Item, Open, Rule};
use clarion_domain::flow::run::{Purpose, Waiting};
use clarion_domain::flow::{Ctx, Digested, Flow, Input, Output, RetryPolicy, Run, Terminal};
use clarion_domain::Channel;
use proptest::prelude::*;
use serde_json::{json, Value};

const H: i64 = 3_600_000;
const T0: i64 = 1_790_000_000_000;

fn channel_of(t: &str) -> Option<Channel> {
    Some(if t.starts_with("sms") {
        Channel::Sms
    } else {
        Channel::Email
    })
}

const DIGEST: &str = r#"
id: updates
trigger: { event: project.updated }
steps:
  - id: collect
    type: digest
    key: payload.project_id
    window: 1h
    max_items: 3
    if: payload.priority == "low"
  - { id: email, type: send, channel: email, template: digest-email }
"#;

/// Applies an input; returns the outputs.
fn apply(flow: &Flow, run: &mut Run, payload: &Value, now: i64, input: Input) -> Vec<Output> {
    let (sub, tenant) = (json!({"id": "s1"}), json!({"id": "acme"}));
    let retry = RetryPolicy::default();
    let ctx = Ctx {
        now_ms: now,
        payload,
        subscriber: &sub,
        tenant: &tenant,
        retry: &retry,
    };
    run.apply(flow, input, &ctx)
}

fn flow(yaml: &str) -> Flow {
    Flow::parse(yaml, 1, channel_of).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn given_a_low_priority_event_then_the_run_asks_the_accumulator_with_its_key() {
    let f = flow(DIGEST);
    let mut run = Run::new("n1", &f);
    let p = json!({"project_id": 42, "priority": "low"});
    let out = apply(&f, &mut run, &p, T0, Input::Start);
    assert_eq!(
        out,
        [Output::Digest {
            step: "collect".into(),
            key: "42".into()
        }]
    );
    // When it leads: it waits for the close, at the window's end.
    let out = apply(
        &f,
        &mut run,
        &p,
        T0,
        Input::Digested(Digested::Leads {
            closes_at_ms: T0 + H,
        }),
    );
    assert_eq!(
        out,
        [Output::Timer {
            seq: 1,
            due_ms: T0 + H,
            purpose: Purpose::Digest
        }]
    );
    // Then the timer sends the digest with the next step.
    let out = apply(&f, &mut run, &p, T0 + H, Input::Timer { seq: 1 });
    assert!(
        matches!(&out[..], [Output::Send { step, .. }] if step == "email"),
        "{out:?}"
    );
}

#[test]
fn given_an_open_digest_then_a_joining_run_ends_digested_into_the_leader() {
    let f = flow(DIGEST);
    let mut run = Run::new("n2", &f);
    let p = json!({"project_id": "p-9", "priority": "low"});
    apply(&f, &mut run, &p, T0, Input::Start);
    let out = apply(
        &f,
        &mut run,
        &p,
        T0,
        Input::Digested(Digested::Joined {
            leader: "n1".into(),
        }),
    );
    assert_eq!(
        out.last(),
        Some(&Output::End {
            terminal: Terminal::Completed,
            reason: "digested into n1".into()
        })
    );
    assert!(out.contains(&Output::Note("digested into n1".into())));
    assert!(run.attempts.is_empty(), "a joined run sends nothing");
}

#[test]
fn given_a_high_priority_event_then_it_skips_the_digest_and_sends_at_once() {
    let f = flow(DIGEST);
    let mut run = Run::new("n1", &f);
    let p = json!({"project_id": 42, "priority": "high"});
    let out = apply(&f, &mut run, &p, T0, Input::Start);
    assert!(
        matches!(&out[..], [Output::Send { step, .. }] if step == "email"),
        "{out:?}"
    );
}

#[test]
fn given_no_key_value_then_the_run_goes_on_undigested_with_a_note() {
    let f = flow(DIGEST);
    let mut run = Run::new("n1", &f);
    let p = json!({"priority": "low"});
    let out = apply(&f, &mut run, &p, T0, Input::Start);
    assert_eq!(
        out[0],
        Output::Note("step collect: no value at payload.project_id; not digested".into())
    );
    assert!(matches!(&out[1], Output::Send { .. }), "{out:?}");
}

#[test]
fn given_a_bypass_or_an_early_close_then_the_run_goes_on() {
    let f = flow(DIGEST);
    let p = json!({"project_id": 42, "priority": "low"});
    // Critical: the router answers with a bypass, which is noted.
    let mut run = Run::new("n1", &f);
    apply(&f, &mut run, &p, T0, Input::Start);
    let out = apply(
        &f,
        &mut run,
        &p,
        T0,
        Input::Digested(Digested::Bypassed {
            reason: digest::CRITICAL_BYPASS.into(),
        }),
    );
    assert_eq!(
        out[0],
        Output::Note("step collect: critical: digest bypassed".into())
    );
    assert!(matches!(&out[1], Output::Send { .. }));
    // A leader whose digest filled or was flushed goes on, and its timer
    // then finds nothing to do.
    let mut run = Run::new("n2", &f);
    apply(&f, &mut run, &p, T0, Input::Start);
    let leads = Digested::Leads {
        closes_at_ms: T0 + H,
    };
    apply(&f, &mut run, &p, T0, Input::Digested(leads.clone()));
    let out = apply(&f, &mut run, &p, T0 + 1, Input::Digested(Digested::Closed));
    assert!(matches!(&out[..], [Output::Send { .. }]), "{out:?}");
    assert!(apply(&f, &mut run, &p, T0 + H, Input::Timer { seq: 1 }).is_empty());
    // Repeats and answers out of place change nothing.
    assert!(apply(&f, &mut run, &p, T0 + H, Input::Digested(Digested::Closed)).is_empty());
    assert!(apply(&f, &mut run, &p, T0 + H, Input::Digested(leads)).is_empty());
    assert!(matches!(run.waiting, Waiting::Outcome { .. }));
}

#[test]
fn the_accumulator_leads_joins_and_fills() {
    let rule = Rule {
        closes_at_ms: T0 + H,
        max_items: 3,
    };
    let Decision::Lead(open) = digest::decide(None, rule, "n1", T0) else {
        panic!("nothing open: leads")
    };
    assert_eq!(
        (open.count, open.closes_at_ms, open.full()),
        (1, T0 + H, false)
    );
    let Decision::Join { open, no } = digest::decide(Some(&open), rule, "n2", T0 + 5) else {
        panic!("joins")
    };
    assert_eq!((no, open.count, open.leader.as_str()), (1, 2, "n1"));
    let Decision::Join { open, no } = digest::decide(Some(&open), rule, "n3", T0 + 6) else {
        panic!("joins")
    };
    assert_eq!((no, open.full()), (2, true), "the third item fills it");
    assert!(digest::timer_closes(Some(&open), "n1"));
    assert!(!digest::timer_closes(Some(&open), "n2"));
    assert!(!digest::timer_closes(None, "n1"));
    // One item: the leader fills it at once.
    let one = Rule {
        max_items: 1,
        ..rule
    };
    assert!(matches!(digest::decide(None, one, "n1", T0), Decision::Lead(o) if o.full()));
}

#[test]
fn templates_see_the_items_in_order_their_count_and_times() {
    let b = Batch {
        key: "42".into(),
        items: (0..3)
            .map(|i| Item {
                notification_id: format!("n{i}"),
                at_ms: T0 + i * 60_000,
                payload: json!({"n": i, "deep": {"list": [1, 2, {"x": null}]}}),
            })
            .collect(),
    };
    let v = b.template_value();
    assert_eq!(v["count"], 3);
    assert_eq!(
        v["items"][2],
        json!({"n": 2, "deep": {"list": [1, 2, {"x": null}]}})
    );
    assert_eq!(v["first_at"], "2026-09-21T14:13:20.000Z");
    assert_eq!(v["last_at"], "2026-09-21T14:15:20.000Z");
}

#[test]
fn a_scheduled_digest_closes_at_the_next_occurrence_in_the_recipients_zone() {
    let paris = clarion_domain::time::zone("Europe/Paris").unwrap();
    // 2026-09-21 14:13:20 UTC is 16:13:20 in Paris: the next 08:00 there is
    // the 22nd at 06:00 UTC.
    let at = digest::closes_at(None, Some("FREQ=DAILY;BYHOUR=8;BYMINUTE=0"), T0, paris).unwrap();
    assert_eq!(digest::rfc3339(at), "2026-09-22T06:00:00.000Z");
    let at = digest::closes_at(Some(3_600_000), None, T0, paris).unwrap();
    assert_eq!(at, T0 + H);
}

fn rejected(yaml_step: &str) -> Vec<(String, String)> {
    let yaml = format!(
        "id: d\ntrigger: {{ event: e }}\nsteps:\n  - {yaml_step}\n  - {{ id: email, type: send, channel: email, template: t }}\n"
    );
    match Flow::parse(&yaml, 1, channel_of) {
        Ok(_) => panic!("accepted: {yaml_step}"),
        Err(v) => v.0.into_iter().map(|f| (f.field, f.description)).collect(),
    }
}

#[test]
fn bad_digest_steps_are_refused_naming_the_field_and_the_reason() {
    let cases = [
        (
            "{ id: c, type: digest, key: '', window: 1h }",
            "steps[0].key",
            "needs a key",
        ),
        ("{ id: c, type: digest, window: 1h }", "", "key"),
        (
            "{ id: c, type: digest, key: project_id, window: 1h }",
            "steps[0].key",
            "not a payload path",
        ),
        (
            "{ id: c, type: digest, key: payload.p }",
            "steps[0].window",
            "needs a `window`",
        ),
        (
            "{ id: c, type: digest, key: payload.p, window: 1h, schedule: '0 8 * * *' }",
            "steps[0].schedule",
            "not both",
        ),
        (
            "{ id: c, type: digest, key: payload.p, window: soon }",
            "steps[0].window",
            "",
        ),
        (
            "{ id: c, type: digest, key: payload.p, window: 400d }",
            "steps[0].window",
            "",
        ),
        (
            "{ id: c, type: digest, key: payload.p, schedule: 'FREQ=SOMETIMES' }",
            "steps[0].schedule",
            "",
        ),
        (
            "{ id: c, type: digest, key: payload.p, window: 1h, max_items: 0 }",
            "steps[0].max_items",
            "1 to 10000",
        ),
        (
            "{ id: c, type: digest, key: payload.p, window: 1h, max_items: 10001 }",
            "steps[0].max_items",
            "1 to 10000",
        ),
        (
            "{ id: c, type: digest, key: payload.p, window: 1h, if: 'payload.x ==' }",
            "steps[0].if",
            "",
        ),
    ];
    for (step, field, reason) in cases {
        let errors = rejected(step);
        assert!(
            errors
                .iter()
                .any(|(f, d)| f.contains(field) && d.contains(reason) && !d.is_empty()),
            "{step}: {errors:?}"
        );
    }
    // A good one passes, with a schedule in either syntax.
    for good in [
        "{ id: c, type: digest, key: payload.p.q, window: 30m, max_items: 10000 }",
        "{ id: c, type: digest, key: payload.p, schedule: 'FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0' }",
        "{ id: c, type: digest, key: payload.p, schedule: '0 8 * * *', if: 'payload.prio == \"low\"' }",
    ] {
        let yaml = format!(
            "id: d\ntrigger: {{ event: e }}\nsteps:\n  - {good}\n  - {{ id: email, type: send, channel: email, template: t }}\n"
        );
        Flow::parse(&yaml, 1, channel_of).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

/// What happens to the accumulator, in some order.
#[derive(Clone, Debug)]
enum Op {
    /// An event with this key arrives.
    Event(u8),
    /// The close timer of the n-th digest ever opened fires (maybe stale).
    Timer(usize),
    /// A flush of this key (None: every key).
    Flush(Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3).prop_map(Op::Event),
        2 => (0usize..20).prop_map(Op::Timer),
        1 => proptest::option::of(0u8..3).prop_map(Op::Flush),
    ]
}

/// The router's use of the accumulator, with a map for the store: headers
/// and items by key, closed digests collected.
#[derive(Default)]
struct Model {
    open: BTreeMap<u8, (Open, Vec<String>)>,
    leaders: Vec<(String, u8)>,
    closed: Vec<(String, Vec<String>)>,
}

impl Model {
    fn close(&mut self, key: u8, leader: &str) {
        if !digest::timer_closes(self.open.get(&key).map(|(o, _)| o), leader) {
            return;
        }
        let (open, items) = self.open.remove(&key).unwrap();
        assert_eq!(open.count as usize, items.len());
        self.closed.push((leader.to_string(), items));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_digested_event_is_in_exactly_one_digest_and_each_closes_once(
        ops in proptest::collection::vec(op(), 1..80),
        max_items in 0u32..5,
    ) {
        let mut m = Model::default();
        let rule = Rule { closes_at_ms: T0 + H, max_items };
        let mut events = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Event(key) => {
                    let nid = format!("n{i}");
                    events.push(nid.clone());
                    match digest::decide(m.open.get(&key).map(|(o, _)| o), rule, &nid, T0) {
                        Decision::Lead(open) => {
                            let full = open.full();
                            m.open.insert(key, (open, vec![nid.clone()]));
                            m.leaders.push((nid.clone(), key));
                            if full { m.close(key, &nid); }
                        }
                        Decision::Join { open, no } => {
                            let entry = m.open.get_mut(&key).unwrap();
                            prop_assert_eq!(no as usize, entry.1.len());
                            entry.1.push(nid);
                            let (full, leader) = (open.full(), open.leader.clone());
                            entry.0 = open;
                            if full { m.close(key, &leader); }
                        }
                    }
                }
                Op::Timer(n) => {
                    if let Some((leader, key)) = m.leaders.get(n).cloned() {
                        m.close(key, &leader);
                    }
                }
                Op::Flush(key) => {
                    let keys: Vec<u8> = m.open.keys().copied().filter(|k| key.is_none_or(|f| f == *k)).collect();
                    for k in keys {
                        let leader = m.open[&k].0.leader.clone();
                        m.close(k, &leader);
                    }
                }
            }
        }
        // Every timer fires in the end.
        for (leader, key) in m.leaders.clone() {
            m.close(key, &leader);
        }
        prop_assert!(m.open.is_empty());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (_, items) in &m.closed {
            if max_items > 0 { prop_assert!(items.len() <= max_items as usize); }
            for nid in items { *seen.entry(nid.clone()).or_default() += 1; }
        }
        for nid in &events {
            prop_assert_eq!(seen.get(nid).copied(), Some(1), "{} in one digest", nid);
        }
        let mut leaders: Vec<&String> = m.closed.iter().map(|(l, _)| l).collect();
        let n = leaders.len();
        leaders.sort();
        leaders.dedup();
        prop_assert_eq!(leaders.len(), n, "a digest closes once");
        prop_assert_eq!(n, m.leaders.len(), "every digest opened closes");
    }
}
