//! The domain hot path, one notification at a time (pure CPU, no IO):
//!
//! - `trigger_validate_accept`: `TriggerCommand::validate` + `accept` of a
//!   one-recipient trigger (what the gateway does per Trigger call);
//! - `route_fr-CA_fallback_fr`: starting the workflow run and rendering its
//!   send (`Run::apply(Start)` + `router::render_send`) with a compiled template
//!   whose variants are `default` and `fr`, for a `fr-CA` recipient (fallback
//!   walk, two minijinja renders, two output events);
//! - `render_plain` / `render_minijinja`: `CompiledTemplate::render` of the
//!   load generator's subject and body for a `fr-CA` recipient: as they are
//!   (plain interpolation, `template::plain`), and the same texts wrapped in
//!   `{% if true %}…{% endif %}`, which sends them through minijinja;
//! - `event_encode_decode_300B`: `Event::encode` + `Event::decode` of a ~300-byte
//!   `NotificationTriggered` envelope (what every processor does per record);
//! - `notification_path`: all of the above chained as the pipeline does it for
//!   one notification: accept, encode, decode, route, encode the two outputs.
//!
//! Throughput is in elements (notifications or events) per second.
//!
//!     cargo bench -p clarion-bench --bench domain -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use clarion_bench::{sample_event, trigger_command, RECORD_BYTES};
use clarion_domain::flow::{Ctx, Flow, Input, Output, RetryPolicy, Run};
use clarion_domain::router::{render_send, SendInput, TemplateVars};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::{CompiledTemplate, Template};
use clarion_domain::trigger::TriggerLimits;
use clarion_domain::{Actor, Channel, Event, Payload, TenantId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn template() -> CompiledTemplate {
    clarion_bench::email_template().compile()
}

fn workflow() -> Flow {
    clarion_bench::email_workflow()
}

/// What the router does for a new trigger: start the run, render its send,
/// and build the `Routed` and `DispatchRequested` events.
fn route(trigger: &Event, wf: &Flow, tpl: &CompiledTemplate) -> Vec<Event> {
    let Payload::Triggered(t) = &trigger.payload else {
        return Vec::new();
    };
    let payload = clarion_domain::payload::SharedPayload::parse(&t.payload_json);
    let subscriber = Subscriber {
        subscriber_id: t.subscriber_id.clone(),
        email: "tech42@example.test".into(),
        locale: "fr-CA".into(),
        ..Default::default()
    };
    let retry = RetryPolicy::default();
    let sub_json = subscriber.template_context();
    let tenant = serde_json::json!({});
    let ctx = Ctx {
        now_ms: 1_700_000_000_500,
        payload: &payload,
        subscriber: &sub_json,
        tenant: &tenant,
        retry: &retry,
    };
    let mut run = Run::new(&t.notification_id, wf);
    let mut out = Vec::new();
    for o in run.apply(wf, Input::Start, &ctx) {
        if let Output::Send {
            step,
            attempt_id,
            spec,
        } = o
        {
            let (routed, dispatch) = render_send(&SendInput {
                tenant: trigger.tenant.as_str(),
                notification_id: &t.notification_id,
                workflow_id: &wf.def.id,
                workflow_version: wf.version,
                step: &step,
                step_index: 0,
                attempt_id: &attempt_id,
                spec: &spec,
                subscriber: &subscriber,
                payload: &payload,
                template: Some(tpl),
                default_provider: &sink,
                app: None,
                push_targets: &[],
                digest: None,
            })
            .expect("renders");
            let actor = Actor::System("router".into());
            out.push(trigger.caused(0, ctx.now_ms, actor.clone(), Payload::Routed(routed)));
            out.push(trigger.caused(1, ctx.now_ms, actor, Payload::DispatchRequested(dispatch)));
        }
    }
    out
}

fn sink(_: Channel) -> String {
    "sink".into()
}

fn bench_domain(c: &mut Criterion) {
    let tenant = TenantId::parse("acme").expect("tenant");
    let actor = Actor::ApiKey("k_bench".into());
    let limits = TriggerLimits::default();
    let tpl = template();
    let wf = workflow();
    // The same ~300-byte trigger the log bench writes.
    let event = sample_event(RECORD_BYTES);
    let cmd = {
        let clarion_domain::Payload::Triggered(t) = &event.payload else {
            unreachable!("sample_event is a trigger")
        };
        let mut c = trigger_command("appointment", "tech-42", 0);
        c.payload_json = t.payload_json.clone();
        c
    };
    let encoded = event.encode();
    let route_once = |trigger: &Event| route(trigger, &wf, &tpl);
    // Sanity: the fixture routes, with the fr-CA → fr fallback.
    let out = route_once(&event);
    match &out[..] {
        [_, d] => match &d.payload {
            clarion_domain::Payload::DispatchRequested(d) => {
                assert_eq!(d.locale, "fr", "{d:?}");
                assert!(d.body.starts_with("Bonjour Ana (tech-42)"), "{d:?}");
            }
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("route failed: {other:?}"),
    }
    eprintln!(
        "fixture: trigger envelope {} bytes, routed {} bytes, dispatch_requested {} bytes",
        encoded.len(),
        out[0].encode().len(),
        out[1].encode().len()
    );

    let mut g = c.benchmark_group("domain");
    g.throughput(Throughput::Elements(1));
    let mut seed = 0u128;
    g.bench_function("trigger_validate_accept", |b| {
        b.iter(|| {
            seed += 1;
            let cmd = black_box(&cmd);
            cmd.validate(&limits).expect("valid");
            black_box(cmd.accept(&tenant, 1, seed.to_le_bytes(), 1_700_000_000_000, &actor))
        })
    });
    g.bench_function("route_fr-CA_fallback_fr", |b| {
        b.iter(|| black_box(route_once(black_box(&event))))
    });
    // The same texts, once plain and once through minijinja.
    let payload =
        clarion_domain::payload::SharedPayload::parse(r#"{"name":"Ana","day":"2026-12-01"}"#);
    let subscriber = Subscriber {
        subscriber_id: "tech-42".into(),
        email: "tech42@example.test".into(),
        locale: "fr-CA".into(),
        ..Default::default()
    };
    let vars = TemplateVars {
        tenant: "acme",
        notification_id: "n1",
        payload: &payload,
        subscriber: &subscriber,
        digest: None,
    };
    let wrapped: Vec<_> = clarion_bench::email_variants()
        .into_iter()
        .map(|mut v| {
            v.subject = format!("{{% if true %}}{}{{% endif %}}", v.subject);
            v.body = format!("{{% if true %}}{}{{% endif %}}", v.body);
            v
        })
        .collect();
    let by_minijinja = Template::new("appointment-tpl", 1, "email", &wrapped)
        .expect("valid template")
        .compile();
    assert_eq!(
        tpl.render("fr-CA", &vars).expect("renders"),
        by_minijinja.render("fr-CA", &vars).expect("renders"),
        "both renderers print the same"
    );
    g.bench_function("render_plain", |b| {
        b.iter(|| black_box(tpl.render("fr-CA", black_box(&vars)).expect("renders")))
    });
    g.bench_function("render_minijinja", |b| {
        b.iter(|| {
            black_box(
                by_minijinja
                    .render("fr-CA", black_box(&vars))
                    .expect("renders"),
            )
        })
    });
    g.bench_function("event_encode_decode_300B", |b| {
        b.iter(|| {
            let bytes = black_box(&event).encode();
            black_box(Event::decode(black_box(&bytes)).expect("decodes"))
        })
    });
    g.bench_function("event_decode_300B", |b| {
        b.iter(|| black_box(Event::decode(black_box(&encoded)).expect("decodes")))
    });
    g.bench_function("notification_path", |b| {
        b.iter(|| {
            seed += 1;
            let cmd = black_box(&cmd);
            cmd.validate(&limits).expect("valid");
            let triggered = cmd.accept(&tenant, 1, seed.to_le_bytes(), 1_700_000_000_000, &actor);
            let bytes = triggered[0].encode();
            let decoded = Event::decode(&bytes).expect("decodes");
            let out = route_once(&decoded);
            black_box(out.iter().map(|e| e.encode().len()).sum::<usize>())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_domain);
criterion_main!(benches);
