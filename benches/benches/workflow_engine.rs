//! Rule matching and step evaluation of the workflow engine with 1,000
//! workflows per tenant (issue #3's bench). Goal: ≥ 200,000 evaluations/s per
//! core. One "evaluation" is one workflow's trigger condition checked against
//! a trigger, or one run step applied.

use std::collections::HashMap;
use std::hint::black_box;

use clarion_domain::flow::condition::Bindings;
use clarion_domain::flow::{Ctx, Engagement, Flow, Input, RetryPolicy, Run};
use clarion_domain::Channel;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

const WORKFLOWS: usize = 1_000;
const EVENTS: usize = 100;

fn channel_of(t: &str) -> Option<Channel> {
    Some(if t.starts_with("sms") {
        Channel::Sms
    } else {
        Channel::Email
    })
}

/// 1,000 workflows over 100 event names (10 per event), each with a CEL
/// trigger condition, and the three-step "email, wait 2 h for the open, SMS".
fn tenant_workflows() -> HashMap<String, Vec<Flow>> {
    let mut by_event: HashMap<String, Vec<Flow>> = HashMap::new();
    for i in 0..WORKFLOWS {
        let event = format!("event-{}", i % EVENTS);
        let yaml = format!(
            r#"
id: wf-{i}
trigger:
  event: {event}
  condition: 'payload.amount > {threshold} && subscriber.attributes.tier != "blocked"'
steps:
  - {{ id: email, type: send, channel: email, template: email-{i} }}
  - {{ id: wait, type: wait, for: opened, step: email, timeout: 2h, on_event: end }}
  - {{ id: sms, type: send, channel: sms, template: sms-{i} }}
"#,
            threshold = i % 500
        );
        let flow = Flow::parse(&yaml, 1, channel_of).expect("valid definition");
        by_event.entry(event).or_default().push(flow);
    }
    by_event
}

fn matching(c: &mut Criterion) {
    let index = tenant_workflows();
    let payload = json!({"amount": 250, "order": "A-1"});
    let subscriber = json!({"id": "u1", "attributes": {"tier": "gold"}});
    let tenant = json!({"id": "acme"});
    let candidates = &index["event-7"];
    let mut g = c.benchmark_group("workflow_matching");
    g.throughput(Throughput::Elements(candidates.len() as u64));
    g.bench_function(
        "one trigger against its event's 10 of 1000 workflows",
        |b| {
            b.iter(|| {
                let flows = &index[black_box("event-7")];
                let bindings = Bindings::new(&[
                    ("payload", &payload),
                    ("subscriber", &subscriber),
                    ("tenant", &tenant),
                ])
                .expect("bindings");
                let mut started = 0;
                for f in flows {
                    if f.matches_with(&bindings) == Ok(true) {
                        started += 1;
                    }
                }
                black_box(started)
            })
        },
    );
    g.finish();
}

fn steps(c: &mut Criterion) {
    let index = tenant_workflows();
    let flow = &index["event-3"][0];
    let payload = json!({"amount": 250});
    let subscriber = json!({"id": "u1"});
    let tenant = json!({});
    let retry = RetryPolicy::default();
    let ctx = Ctx {
        now_ms: 1_000,
        payload: &payload,
        subscriber: &subscriber,
        tenant: &tenant,
        retry: &retry,
    };
    let mut g = c.benchmark_group("workflow_steps");
    // start (send email) → sent (wait) → opened (end): three evaluations.
    g.throughput(Throughput::Elements(3));
    g.bench_function("start, sent, opened", |b| {
        b.iter(|| {
            let mut run = Run::new("n-1", flow);
            let out = run.apply(flow, Input::Start, &ctx);
            let attempt = match &out[0] {
                clarion_domain::flow::Output::Send { attempt_id, .. } => attempt_id.clone(),
                other => panic!("{other:?}"),
            };
            run.apply(
                flow,
                Input::Sent {
                    attempt_id: attempt.clone(),
                    provider: String::new(),
                },
                &ctx,
            );
            let end = run.apply(
                flow,
                Input::Engaged {
                    attempt_id: attempt,
                    kind: Engagement::Opened,
                },
                &ctx,
            );
            black_box(end)
        })
    });
    g.finish();
}

criterion_group!(benches, matching, steps);
criterion_main!(benches);
