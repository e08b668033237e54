//! Property tests of the run state machine: whatever order facts arrive in
//! (outcomes, engagement, timers, cancellations, duplicates and stale inputs),
//! every run ends in exactly one terminal state, once, no attempt is ever
//! sent twice, and an outcome the run awaits always changes it.

use std::collections::HashMap;

use clarion_domain::flow::run::Waiting;
use clarion_domain::flow::{Ctx, Engagement, Flow, Input, Output, RetryPolicy, Run, Terminal};
use clarion_domain::Channel;
use proptest::prelude::*;
use serde_json::json;

const FLOWS: &[&str] = &[
    r#"
id: email-then-sms
steps:
  - { id: email, type: send, channel: email, template: e }
  - { id: wait, type: wait, for: opened, step: email, timeout: 2h, on_event: end }
  - { id: sms, type: send, channel: sms, template: sms }
"#,
    r#"
id: fallback
goal: clicked
steps:
  - id: reach
    type: fallback
    chain: [ { channel: push, template: push, app: fieldapp }, { channel: sms, template: sms }, { channel: email, template: e } ]
    ack: { for: acknowledged, timeout: 10m }
  - { id: pause, type: delay, duration: 1h }
  - { id: check, type: branch, step_status: { step: reach, is: clicked }, then: end, else: remind }
  - { id: remind, type: send, channel: email, template: e2 }
"#,
    r#"
id: escalate
steps:
  - { id: notify, type: send, channel: sms, template: sms }
  - { id: wait, type: wait, for: acknowledged, step: notify, timeout: 15m, on_event: end, on_timeout: esc }
  - { id: esc, type: send, channel: sms, template: sms2, to: payload.backup }
"#,
];

fn channel_of(t: &str) -> Option<Channel> {
    Some(if t.starts_with("sms") {
        Channel::Sms
    } else if t.starts_with("push") {
        Channel::Push
    } else {
        Channel::Email
    })
}

/// What the world does next; indices pick among the attempts/timers so far.
#[derive(Clone, Debug)]
enum Fact {
    Sent(usize),
    Failed(usize, bool),
    Engaged(usize, u8),
    FireTimer(usize),
    Cancel,
    Retry,
    Throttle(usize, bool),
}

fn fact() -> impl Strategy<Value = Fact> {
    prop_oneof![
        4 => any::<usize>().prop_map(Fact::Sent),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Fact::Failed(i, r)),
        3 => (any::<usize>(), 0u8..5).prop_map(|(i, k)| Fact::Engaged(i, k)),
        4 => any::<usize>().prop_map(Fact::FireTimer),
        1 => Just(Fact::Cancel),
        1 => Just(Fact::Retry),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, d)| Fact::Throttle(i, d)),
    ]
}

const KINDS: [Engagement; 5] = [
    Engagement::Delivered,
    Engagement::Opened,
    Engagement::Clicked,
    Engagement::Acknowledged,
    Engagement::Read,
];

struct World {
    /// Every `Output::Send`'s attempt id, in order: the sends made.
    sends: Vec<String>,
    /// Per attempt id, how many times the run accepted that it was held
    /// (throttled) rather than sent: only such an attempt may go out again.
    held: HashMap<String, usize>,
    timers: Vec<(u32, i64)>,
    ends: Vec<Terminal>,
    now: i64,
}

fn apply(run: &mut Run, flow: &Flow, w: &mut World, input: Input) {
    let p = json!({"backup": "+15145550199"});
    let s = json!({});
    let retry = RetryPolicy::default();
    let ctx = Ctx {
        now_ms: w.now,
        payload: &p,
        subscriber: &s,
        tenant: &s,
        retry: &retry,
    };
    for o in run.apply(flow, input, &ctx) {
        match o {
            Output::Send { attempt_id, .. } => w.sends.push(attempt_id),
            Output::Timer { seq, due_ms, .. } => w.timers.push((seq, due_ms)),
            Output::End { terminal, .. } => w.ends.push(terminal),
            Output::Note(_) | Output::Digest { .. } => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_run_ends_once_and_never_sends_an_attempt_twice(
        which in 0..FLOWS.len(),
        facts in proptest::collection::vec(fact(), 0..40),
    ) {
        let flow = Flow::parse(FLOWS[which], 1, channel_of).unwrap();
        let mut run = Run::new("n", &flow);
        let mut w = World { sends: vec![], held: HashMap::new(), timers: vec![], ends: vec![], now: 1_000 };
        apply(&mut run, &flow, &mut w, Input::Start);
        let mut retried = false;
        for f in facts {
            w.now += 60_000;
            let pick = |v: &Vec<String>, i: usize| v.get(i % v.len().max(1)).cloned();
            let input = match f {
                Fact::Sent(i) => pick(&w.sends, i).map(|a| Input::Sent { attempt_id: a, provider: String::new() }),
                Fact::Failed(i, r) => pick(&w.sends, i).map(|a| Input::Failed { attempt_id: a, retryable: r, reason: "x".into() }),
                Fact::Engaged(i, k) => pick(&w.sends, i).map(|a| Input::Engaged { attempt_id: a, kind: KINDS[k as usize] }),
                Fact::FireTimer(i) => w.timers.get(i % w.timers.len().max(1)).map(|(seq, due)| { w.now = w.now.max(*due); Input::Timer { seq: *seq } }),
                Fact::Cancel => Some(Input::Cancel { reason: "c".into() }),
                // Operators retry a dead letter at most once here, so runs stay finite.
                Fact::Retry if !retried => { retried = true; Some(Input::Retry) }
                Fact::Retry => None,
                Fact::Throttle(i, defer) => pick(&w.sends, i).map(|a| Input::Throttled {
                    attempt_id: a,
                    defer_until: defer.then_some(w.now + 60_000),
                    reason: "throttled".into(),
                }),
            };
            if let Some(input) = input {
                // `awaits` promises a change (the router skips its
                // before/after comparison on it): hold it to that.
                let before = run.awaits(&input).then(|| run.clone());
                // A hold the run accepts: the attempt it waits on was not sent.
                if let Input::Throttled { attempt_id, .. } = &input {
                    if matches!(&run.waiting, Waiting::Outcome { attempt_id: a } if a == attempt_id) {
                        *w.held.entry(attempt_id.clone()).or_default() += 1;
                    }
                }
                apply(&mut run, &flow, &mut w, input);
                if let Some(before) = before {
                    prop_assert_ne!(&before, &run, "an awaited outcome changed nothing");
                }
            }
        }
        // Drain: the world answers everything outstanding until the run ends.
        for _ in 0..200 {
            if run.is_terminal() { break; }
            w.now += 3_600_000;
            match run.waiting.clone() {
                clarion_domain::flow::run::Waiting::Outcome { attempt_id } => apply(&mut run, &flow, &mut w, Input::Sent { attempt_id, provider: String::new() }),
                clarion_domain::flow::run::Waiting::Timer { seq, .. } => apply(&mut run, &flow, &mut w, Input::Timer { seq }),
                clarion_domain::flow::run::Waiting::Nothing => prop_assert!(false, "a live run must be waiting on something: {run:?}"),
            }
        }
        prop_assert!(run.is_terminal(), "run never ended: {run:?}");
        // Every send the run made: an attempt id goes out once, plus once
        // more for each time the run accepted it was held (a throttled send
        // never went out, so its retry reuses the id).
        let mut made: HashMap<&String, usize> = HashMap::new();
        for a in &w.sends {
            *made.entry(a).or_default() += 1;
        }
        for (a, n) in &made {
            let held = w.held.get(*a).copied().unwrap_or(0);
            prop_assert!(*n <= 1 + held, "attempt {} was sent {} times, held {} times: {:?}", a, n, held, w.sends);
        }
        // One terminal state per life: a dead letter may be retried (once
        // here), which starts a new life that ends once more.
        let lives = if retried && w.ends.first() == Some(&Terminal::DeadLettered) { 2 } else { 1 };
        prop_assert!(w.ends.len() == lives || (lives == 2 && w.ends.len() == 1), "ends: {:?}", w.ends);
        prop_assert_eq!(Some(run.terminal.unwrap()), w.ends.last().copied());
    }
}
