//! Issue #34, tenant-controlled code and sizes, end to end on the embedded
//! backend: a tenant's runaway template and its condition with nested
//! comprehensions over a large payload fail their own sends with a budget
//! reason, while another tenant's sends on the same partition are delivered;
//! and bad input, however large, gets a readable INVALID_ARGUMENT.

use crate::support;

use std::time::Duration;

use clarion_proto::api;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

/// Far beyond what any of these sends needs; only there to turn a stalled
/// partition into a failure instead of a hung test. Not a timing assertion.
const STALL: Duration = Duration::from_secs(20);

const RUNAWAY: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";

const HEAVY_CONDITION: &str = "payload.l.exists(a, payload.l.exists(b, a != b))";

async fn put_template(ch: &tonic::transport::Channel, key: &str, id: &str, body: &str) {
    Tenants::new(ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: id.into(),
                channel: "email".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Hello".into(),
                    body: body.into(),
                }],
            },
        ))
        .await
        .expect("put template");
}

fn recipient(id: &str) -> api::Recipient {
    api::Recipient {
        subscriber_id: id.into(),
        email: format!("{id}@example.test"),
        ..Default::default()
    }
}

async fn trigger(
    ch: &tonic::transport::Channel,
    key: &str,
    workflow: &str,
    who: &str,
    payload: &str,
) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: workflow.into(),
                recipients: vec![recipient(who)],
                payload_json: payload.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids
        .remove(0)
}

/// Every event detail of a notification's history, as one text.
fn history_text(n: &api::Notification) -> String {
    n.events
        .iter()
        .map(|e| format!("{} {}\n", e.event_type, e.detail_json))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_breakers_fail_alone_and_other_tenants_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    // One partition: both tenants' recipients share the same router partition.
    cfg.log.partitions = 1;
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;

    // Given tenant A with a runaway template and a costly condition
    let a = create_tenant(&ch, "mallory").await;
    put_template(&ch, &a, "loop-tpl", RUNAWAY).await;
    put_template(&ch, &a, "plain-tpl", "Hi {{ subscriber.id }}").await;
    let runaway = "id: runaway\nsteps:\n  - {id: email, type: send, channel: email, template: loop-tpl, provider: sink}\n";
    let heavy = format!(
        "id: heavy\ntrigger:\n  condition: '{HEAVY_CONDITION}'\nsteps:\n  - {{id: email, type: send, channel: email, template: plain-tpl, provider: sink}}\n"
    );
    apply_workflows(&ch, &a, &[runaway, &heavy]).await;
    // and tenant B with an ordinary workflow
    let b = create_tenant(&ch, "bystander").await;
    appointment_workflow(&ch, &b, "appointment", "sink").await;

    // When A's sends and B's are triggered together: a 30,000-element list
    // makes the condition 9·10⁸ iterations unmetered (payload under 64 KiB).
    let big = serde_json::json!({ "l": vec![1; 30_000] }).to_string();
    let mut a_loops = Vec::new();
    let mut a_heavy = Vec::new();
    let mut b_ids = Vec::new();
    for i in 0..3 {
        a_loops.push(trigger(&ch, &a, "runaway", &format!("ma{i}"), "{}").await);
        a_heavy.push(trigger(&ch, &a, "heavy", &format!("mh{i}"), &big).await);
        b_ids.push(
            trigger(
                &ch,
                &b,
                "appointment",
                &format!("b{i}"),
                r#"{"day":"lundi"}"#,
            )
            .await,
        );
    }

    // Then B's are delivered
    for id in &b_ids {
        let n = wait_status(&ch, &b, id, "delivered", STALL).await;
        assert_eq!(n.status, "delivered", "{}", history_text(&n));
    }
    // and A's fail with their budget reason in the history
    for id in &a_loops {
        let n = wait_until(&ch, &a, id, STALL, ended).await;
        let text = history_text(&n);
        assert!(
            text.contains("exceeded its render budget (fuel"),
            "{id}: {text}"
        );
        assert_ne!(n.status, "delivered", "{text}");
    }
    for id in &a_heavy {
        let n = wait_until(&ch, &a, id, STALL, ended).await;
        let text = history_text(&n);
        assert!(
            text.contains("exceeded its evaluation budget"),
            "{id}: {text}"
        );
        assert_eq!(n.status, "suppressed", "{text}");
    }
    // and the partition went on: a later send of B is delivered too.
    let later = trigger(&ch, &b, "appointment", "b-late", r#"{"day":"mardi"}"#).await;
    let n = wait_status(&ch, &b, &later, "delivered", STALL).await;
    assert_eq!(n.status, "delivered", "{}", history_text(&n));
    node.stop().await;
}

fn wire_size(e: &tonic::Status) -> usize {
    e.message().len() + e.details().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bad_input_gets_a_readable_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.limits.max_fanout = 3;
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    let mut wf = api::workflow_service_client::WorkflowServiceClient::new(ch.clone());
    let apply = |definition: String| authed(&key, api::ApplyWorkflowRequest { definition });

    // A definition that does not parse, whose error names a 200 KiB key
    let long = "k".repeat(200 * 1024);
    let e = wf
        .apply(apply(format!(
            "{{\"id\": \"x\", \"steps\": [], \"{long}\": 1}}"
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{:.300}", e.message());
    assert!(wire_size(&e) < 8 * 1024, "{} bytes", wire_size(&e));
    assert!(e.message().contains("unknown field"), "{}", e.message());

    // A definition that parses, with hundreds of problems quoting long text
    let bad = "b".repeat(700);
    let steps: String = (0..100)
        .map(|i| {
            format!(
                "  - {{id: s{i}, type: send, channel: {bad}, template: {bad}, provider: {bad}}}\n"
            )
        })
        .collect();
    let e = wf
        .apply(apply(format!("id: many\nsteps:\n{steps}")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{:.300}", e.message());
    assert!(wire_size(&e) < 8 * 1024, "{} bytes", wire_size(&e));
    let listed = e
        .get_details_bad_request()
        .expect("details")
        .field_violations;
    assert!(listed.len() <= 21, "{}", listed.len());
    assert!(
        listed
            .last()
            .unwrap()
            .description
            .contains("more problems not listed"),
        "{listed:?}"
    );
    assert_eq!(listed[0].field, "steps[0].channel");

    // Over the size limits: the field is named.
    let e = wf
        .apply(apply(format!(
            "id: big\nname: {}\nsteps: []\n",
            "n".repeat(300 * 1024)
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "definition"
    );
    let e = wf
        .apply(apply(
            "id: long\ndedup_window: 36500d\nsteps:\n  - {id: w, type: delay, duration: 1h}\n"
                .into(),
        ))
        .await
        .unwrap_err();
    let listed = e.get_details_bad_request().unwrap().field_violations;
    assert_eq!(listed[0].field, "dedup_window", "{listed:?}");
    assert!(
        listed[0].description.contains("maximum of 30d"),
        "{listed:?}"
    );

    // Fan-out: 2 workflows on one event × 2 recipients = 4 > 3.
    appointment_workflow(&ch, &key, "tpl-source", "sink").await;
    for id in ["one", "two"] {
        wf.apply(apply(format!(
            "id: {id}\ntrigger: {{event: order.shipped}}\nsteps:\n  - {{id: e, type: send, channel: email, template: tpl-source-tpl, provider: sink}}\n"
        )))
        .await
        .expect("apply");
    }
    let e = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: "order.shipped".into(),
                recipients: vec![recipient("r1"), recipient("r2")],
                payload_json: r#"{"day":"lundi"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let listed = e.get_details_bad_request().unwrap().field_violations;
    assert_eq!(listed[0].field, "recipients");
    assert!(
        listed[0].description.contains("over the limit of 3"),
        "{listed:?}"
    );
    node.stop().await;
}
