//! Workflow definitions. The spine runs one step: send on one channel with one
//! template; the full engine (delays, waits, branches, fallbacks) builds on this.

use clarion_proto::events as pb;

use crate::channel::Channel;
use crate::error::Violations;

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub channel: Channel,
    pub template_id: String,
    /// `None`: the channel's configured default provider.
    pub provider: Option<String>,
}

/// A published, immutable workflow version.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub workflow_id: String,
    pub version: u32,
    pub name: String,
    pub steps: Vec<Step>,
}

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

pub const KNOWN_PROVIDERS: &[&str] = &["sink", "smtp", "webhook"];

impl Workflow {
    /// Validates a definition. `template_channel` answers the channel of an
    /// existing template, `None` when the tenant has no such template.
    pub fn new(
        workflow_id: &str,
        version: u32,
        name: &str,
        steps: &[pb::WorkflowStep],
        template_channel: impl Fn(&str) -> Option<Channel>,
    ) -> Result<Workflow, Violations> {
        let mut v = Violations::default();
        validate_id(&mut v, "workflow_id", workflow_id);
        if steps.is_empty() {
            v.push("steps", "at least one step is required");
        }
        if steps.len() > 1 {
            v.push(
                "steps",
                "this version runs single-step workflows; multi-step sequences come with the workflow engine",
            );
        }
        let mut out = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let channel = match s.channel.parse::<Channel>() {
                Ok(c) => Some(c),
                Err(e) => {
                    v.push(format!("steps[{i}].channel"), e);
                    None
                }
            };
            validate_id(&mut v, &format!("steps[{i}].template_id"), &s.template_id);
            match (template_channel(&s.template_id), channel) {
                (None, _) if !s.template_id.is_empty() => v.push(
                    format!("steps[{i}].template_id"),
                    format!("no template {:?} exists for this tenant", s.template_id),
                ),
                (Some(tc), Some(c)) if tc != c => v.push(
                    format!("steps[{i}].template_id"),
                    format!(
                        "template {:?} is for channel {tc}, the step sends on {c}",
                        s.template_id
                    ),
                ),
                _ => {}
            }
            if !s.provider.is_empty() && !KNOWN_PROVIDERS.contains(&s.provider.as_str()) {
                v.push(
                    format!("steps[{i}].provider"),
                    format!(
                        "unknown provider {:?} (known: {})",
                        s.provider,
                        KNOWN_PROVIDERS.join(", ")
                    ),
                );
            }
            if let Some(channel) = channel {
                out.push(Step {
                    channel,
                    template_id: s.template_id.clone(),
                    provider: (!s.provider.is_empty()).then(|| s.provider.clone()),
                });
            }
        }
        v.into_result()?;
        Ok(Workflow {
            workflow_id: workflow_id.to_string(),
            version,
            name: name.to_string(),
            steps: out,
        })
    }

    /// Rebuilds a workflow from its (already validated) published event.
    pub fn from_event(e: &pb::WorkflowPublished) -> Result<Workflow, Violations> {
        Workflow::new(&e.workflow_id, e.version, &e.name, &e.steps, |_| {
            None::<Channel>
        })
        .or_else(|_| {
            // Templates are checked at publish time; here only the shape matters.
            let steps =
                e.steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        Ok(Step {
                            channel: s.channel.parse().map_err(|m| {
                                Violations::single(format!("steps[{i}].channel"), m)
                            })?,
                            template_id: s.template_id.clone(),
                            provider: (!s.provider.is_empty()).then(|| s.provider.clone()),
                        })
                    })
                    .collect::<Result<Vec<_>, Violations>>()?;
            Ok(Workflow {
                workflow_id: e.workflow_id.clone(),
                version: e.version,
                name: e.name.clone(),
                steps,
            })
        })
    }

    pub fn to_event(&self) -> pb::WorkflowPublished {
        pb::WorkflowPublished {
            workflow_id: self.workflow_id.clone(),
            version: self.version,
            name: self.name.clone(),
            steps: self
                .steps
                .iter()
                .map(|s| pb::WorkflowStep {
                    channel: s.channel.to_string(),
                    template_id: s.template_id.clone(),
                    provider: s.provider.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
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
    fn rejects_unknown_channels_templates_and_providers() {
        let err = Workflow::new(
            "wf",
            1,
            "",
            &[step("fax", "nope", "carrier-pigeon")],
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
    }

    #[test]
    fn rejects_channel_mismatch() {
        let err = Workflow::new("wf", 1, "", &[step("sms", "welcome", "")], |_| {
            Some(Channel::Email)
        })
        .unwrap_err();
        assert!(err.to_string().contains("is for channel email"), "{err}");
    }

    #[test]
    fn round_trips_through_its_event() {
        let w = Workflow::new(
            "wf",
            3,
            "Welcome",
            &[step("email", "welcome", "smtp")],
            |_| Some(Channel::Email),
        )
        .unwrap();
        assert_eq!(Workflow::from_event(&w.to_event()).unwrap(), w);
    }
}
