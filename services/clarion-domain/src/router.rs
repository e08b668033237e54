//! Routing: a triggered notification becomes a rendered dispatch request.
//!
//! Pure: the caller supplies the subscriber, the workflow version the trigger
//! pinned, the compiled template and the time. A routing failure (no address,
//! missing template, render error) is itself an event, so the notification's
//! history always ends in a terminal state instead of vanishing.

use clarion_proto::events as pb;
use serde_json::{json, Value};

use crate::event::{Actor, Event, Payload};
use crate::subscriber::Subscriber;
use crate::template::CompiledTemplate;
use crate::workflow::Workflow;
use crate::Channel;

pub const ROUTER: &str = "router";

/// What the router looked up for one trigger.
pub struct RouteInput<'a> {
    pub trigger: &'a Event,
    pub subscriber: Option<&'a Subscriber>,
    pub workflow: Option<&'a Workflow>,
    pub template: Option<&'a CompiledTemplate>,
    /// Provider used when the step names none.
    pub default_provider: &'a dyn Fn(Channel) -> String,
    pub now_ms: i64,
}

/// Attempt ids are the idempotency key every provider sees: stable for a given
/// notification, step and attempt number, whoever computes them and however often.
pub fn attempt_id(notification_id: &str, step: u32, attempt: u32) -> String {
    crate::ids::Id::derive(&[
        b"attempt",
        notification_id.as_bytes(),
        &step.to_le_bytes(),
        &attempt.to_le_bytes(),
    ])
    .to_hex()
}

/// Routes one `NotificationTriggered` event.
pub fn route(input: &RouteInput<'_>) -> Vec<Event> {
    let Payload::Triggered(t) = &input.trigger.payload else {
        return Vec::new();
    };
    let actor = || Actor::System(ROUTER.into());
    let fail = |reason: String| {
        vec![input.trigger.caused(
            0,
            input.now_ms,
            actor(),
            Payload::Failed(pb::NotificationFailed {
                notification_id: t.notification_id.clone(),
                reason,
                retryable: false,
                stage: "route".into(),
                ..Default::default()
            }),
        )]
    };

    let Some(workflow) = input.workflow else {
        return fail(format!(
            "workflow {:?} version {} does not exist",
            t.workflow_id, t.workflow_version
        ));
    };
    let step_index = 0u32;
    let Some(step) = workflow.steps.first() else {
        return fail("workflow has no steps".into());
    };
    let Some(template) = input.template else {
        return fail(format!("template {:?} does not exist", step.template_id));
    };

    let base = input.subscriber.cloned().unwrap_or_else(|| Subscriber {
        subscriber_id: t.subscriber_id.clone(),
        ..Default::default()
    });
    let subscriber = match &t.recipient {
        Some(o) => base.with_override(o),
        None => base,
    };
    let Some(to) = subscriber.address(step.channel).map(str::to_string) else {
        return fail(format!(
            "subscriber {:?} has no address for channel {}",
            t.subscriber_id, step.channel
        ));
    };

    let payload: Value = serde_json::from_str(&t.payload_json).unwrap_or_else(|_| json!({}));
    let ctx = json!({
        "payload": payload,
        "subscriber": subscriber.template_context(),
        "tenant_id": input.trigger.tenant.as_str(),
        "notification_id": t.notification_id,
    });
    let rendered = match template.render(&subscriber.locale, &ctx) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let provider = step
        .provider
        .clone()
        .unwrap_or_else(|| (input.default_provider)(step.channel));

    vec![
        input.trigger.caused(
            0,
            input.now_ms,
            actor(),
            Payload::Routed(pb::NotificationRouted {
                notification_id: t.notification_id.clone(),
                workflow_id: workflow.workflow_id.clone(),
                workflow_version: workflow.version,
                step: step_index,
                channel: step.channel.to_string(),
                template_id: template.template.template_id.clone(),
                template_version: template.template.version,
                locale: rendered.locale.clone(),
                provider: provider.clone(),
            }),
        ),
        input.trigger.caused(
            1,
            input.now_ms,
            actor(),
            Payload::DispatchRequested(pb::DispatchRequested {
                notification_id: t.notification_id.clone(),
                attempt_id: attempt_id(&t.notification_id, step_index, 0),
                channel: step.channel.to_string(),
                provider,
                to,
                subject: rendered.subject,
                body: rendered.body,
                locale: rendered.locale,
                subscriber_id: t.subscriber_id.clone(),
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use crate::trigger::{Recipient, TriggerCommand};
    use crate::{Id, TenantId};

    fn given() -> (Event, Workflow, CompiledTemplate) {
        let tenant = TenantId::parse("acme").unwrap();
        let cmd = TriggerCommand {
            workflow_id: "appt".into(),
            recipients: vec![Recipient {
                subscriber_id: "tech-7".into(),
                contact: None,
            }],
            payload_json: r#"{"time":"9:30"}"#.into(),
            idempotency_key: String::new(),
        };
        let trigger = cmd.accept(&tenant, 1, [3; 16], 1_000, &Actor::ApiKey("k".into()))[0].clone();
        let tpl = Template::new(
            "appt",
            2,
            "email",
            &[
                pb::TemplateVariant {
                    locale: "default".into(),
                    subject: "Visit".into(),
                    body: "Visit at {{ payload.time }}".into(),
                },
                pb::TemplateVariant {
                    locale: "fr".into(),
                    subject: "Visite".into(),
                    body: "Visite à {{ payload.time }}".into(),
                },
            ],
        )
        .unwrap();
        let wf = Workflow::new(
            "appt",
            1,
            "",
            &[pb::WorkflowStep {
                channel: "email".into(),
                template_id: "appt".into(),
                provider: String::new(),
            }],
            |_| Some(Channel::Email),
        )
        .unwrap();
        (trigger, wf, tpl.compile())
    }

    fn sink(_: Channel) -> String {
        "sink".into()
    }

    #[test]
    fn given_a_french_subscriber_when_routed_then_renders_french_dispatch() {
        let (trigger, wf, tpl) = given();
        let sub = Subscriber {
            subscriber_id: "tech-7".into(),
            email: "tech7@example.test".into(),
            locale: "fr-CA".into(),
            ..Default::default()
        };
        let out = route(&RouteInput {
            trigger: &trigger,
            subscriber: Some(&sub),
            workflow: Some(&wf),
            template: Some(&tpl),
            default_provider: &sink,
            now_ms: 2_000,
        });
        assert_eq!(out.len(), 2);
        let Payload::DispatchRequested(d) = &out[1].payload else {
            panic!("{out:?}")
        };
        assert_eq!(
            (d.to.as_str(), d.body.as_str(), d.locale.as_str()),
            ("tech7@example.test", "Visite à 9:30", "fr")
        );
        assert_eq!(d.provider, "sink");
        assert_eq!(out[1].occurred_at_ms, 2_000);
        assert_eq!(out[1].correlation_id, trigger.correlation_id);
        // Routing the same input again yields the same ids (replay safety).
        let again = route(&RouteInput {
            trigger: &trigger,
            subscriber: Some(&sub),
            workflow: Some(&wf),
            template: Some(&tpl),
            default_provider: &sink,
            now_ms: 9_999,
        });
        assert_eq!(
            out.iter().map(|e| e.id).collect::<Vec<Id>>(),
            again.iter().map(|e| e.id).collect::<Vec<Id>>()
        );
    }

    #[test]
    fn given_no_address_then_the_notification_fails_with_a_reason() {
        let (trigger, wf, tpl) = given();
        let out = route(&RouteInput {
            trigger: &trigger,
            subscriber: None,
            workflow: Some(&wf),
            template: Some(&tpl),
            default_provider: &sink,
            now_ms: 2_000,
        });
        let Payload::Failed(f) = &out[0].payload else {
            panic!("{out:?}")
        };
        assert!(
            f.reason.contains("no address for channel email"),
            "{}",
            f.reason
        );
        assert_eq!(f.stage, "route");
    }
}
