//! Workflow publication helpers: ids, providers, the single-step shorthand of
//! `TenantService.PutWorkflow`, and the published event ↔ [`Flow`] mapping.

use clarion_proto::events as pb;

use crate::channel::Channel;
use crate::error::Violations;
use crate::flow::{Flow, FlowDef, Next, SendSpec, StepDef, StepKind};

/// Ids of workflows and templates: 1-64 of `A-Za-z0-9._-`.
pub fn validate_id(v: &mut Violations, field: &str, id: &str) {
    if id.is_empty() {
        v.push(field, "is required");
    } else if id.len() > 64 {
        v.push(field, "must be at most 64 characters");
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        v.push(field, "may contain only A-Z, a-z, 0-9, '.', '_' and '-'");
    }
}

pub const KNOWN_PROVIDERS: &[&str] = &[
    "sink", "smtp", "webhook", "twilio", "push", "inbox", "sendgrid", "vonage",
];

/// The shorthand of `PutWorkflow`: one send step per entry, in order.
/// Problems are reported against the shorthand's own fields (`steps[0].channel`).
pub fn from_steps(
    workflow_id: &str,
    name: &str,
    steps: &[pb::WorkflowStep],
    version: u32,
    template_channel: impl Fn(&str) -> Option<Channel>,
) -> Result<Flow, Violations> {
    let def = FlowDef {
        id: workflow_id.to_string(),
        name: name.to_string(),
        trigger: crate::flow::def::TriggerDef {
            event: String::new(),
            condition: None,
        },
        cancel_key: None,
        goal: None,
        dedup_window: None,
        throttle: Vec::new(),
        topic: None,
        critical: false,
        windows: Vec::new(),
        personal: Vec::new(),
        steps: steps
            .iter()
            .enumerate()
            .map(|(i, s)| StepDef {
                id: format!("step-{i}"),
                kind: StepKind::Send {
                    send: SendSpec {
                        channel: s.channel.clone(),
                        template: s.template_id.clone(),
                        provider: (!s.provider.is_empty()).then(|| s.provider.clone()),
                        to: None,
                        ..Default::default()
                    },
                    next: Next::Continue,
                },
            })
            .collect(),
    };
    Flow::new(def, version, template_channel).map_err(|v| {
        Violations(
            v.0.into_iter()
                .map(|mut f| {
                    f.field = f.field.replace(".template", ".template_id");
                    if f.field == "id" {
                        f.field = "workflow_id".into();
                    }
                    f
                })
                .collect(),
        )
    })
}

/// The event that publishes `flow`.
pub fn published(flow: &Flow) -> pb::WorkflowPublished {
    pb::WorkflowPublished {
        workflow_id: flow.def.id.clone(),
        version: flow.version,
        name: flow.def.name.clone(),
        steps: Vec::new(),
        definition_json: flow.to_json(),
        trigger_event: flow.def.trigger.event.clone(),
        personal: flow.def.personal.clone(),
    }
}

/// Rebuilds the flow of a published version.
pub fn from_published(e: &pb::WorkflowPublished) -> Result<Flow, Violations> {
    Flow::from_json(&e.definition_json, e.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(channel: &str, template: &str, provider: &str) -> pb::WorkflowStep {
        pb::WorkflowStep {
            channel: channel.into(),
            template_id: template.into(),
            provider: provider.into(),
        }
    }

    #[test]
    fn shorthand_reports_its_own_field_names() {
        let err = from_steps(
            "wf",
            "",
            &[step("fax", "nope", "carrier-pigeon")],
            1,
            |_| None,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "steps[0].channel",
                "steps[0].template_id",
                "steps[0].provider"
            ]
        );
        let err = from_steps("wf", "", &[step("sms", "welcome", "")], 1, |_| {
            Some(Channel::Email)
        })
        .unwrap_err();
        assert!(err.to_string().contains("is for channel email"), "{err}");
    }

    #[test]
    fn published_events_round_trip() {
        let f = from_steps(
            "wf",
            "Welcome",
            &[step("email", "welcome", "smtp")],
            3,
            |_| Some(Channel::Email),
        )
        .unwrap();
        let back = from_published(&published(&f)).unwrap();
        assert_eq!(back.def, f.def);
        assert_eq!(back.version, 3);
    }
}
