//! Routing: turning a run's "send" into a rendered, addressed message.
//!
//! Pure: the caller supplies the subscriber, the compiled template, the
//! payload and, for push and in-app sends, the step's app and the devices a
//! push goes to. Failures (no address, missing template, render error, no
//! active device, a link or data path that does not resolve) come back as
//! reasons; the run treats them as terminal failures of that attempt, so a
//! workflow's fallback takes over.

use clarion_proto::events as pb;
use serde_json::{json, Value};

use crate::flow::SendSpec;
use crate::payload::SharedPayload;
use crate::push::App;
use crate::subscriber::Subscriber;
use crate::template::{walk, CompiledTemplate, Found, Variables};
use crate::Channel;

mod push_fields;

pub const ROUTER: &str = "router";

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

/// What templates see: `payload`, `subscriber`, `tenant_id`, `notification_id`.
pub fn template_context(
    tenant: &str,
    notification_id: &str,
    payload: &Value,
    subscriber: &Subscriber,
) -> Value {
    json!({
        "payload": payload,
        "subscriber": subscriber.template_context(),
        "tenant_id": tenant,
        "notification_id": notification_id,
    })
}

/// The variables of [`template_context`], read where they are: no JSON
/// tree is built for a render, and minijinja gets the payload converted once
/// for every run sharing it.
pub struct TemplateVars<'a> {
    pub tenant: &'a str,
    pub notification_id: &'a str,
    pub payload: &'a SharedPayload,
    pub subscriber: &'a Subscriber,
    /// The closed digest a leader's sends render (`digest.items`,
    /// `digest.count`, `digest.first_at`, `digest.last_at`):
    /// [`crate::digest::Batch::template_value`].
    pub digest: Option<&'a Value>,
}

impl Variables for TemplateVars<'_> {
    fn lookup(&self, path: &[String]) -> Option<Found<'_>> {
        let (root, rest) = path.split_first()?;
        match (root.as_str(), rest) {
            ("payload", _) => walk(self.payload.json(), rest).map(Found::Json),
            ("subscriber", _) => self.subscriber.lookup(rest),
            ("tenant_id", []) => Some(Found::Str(self.tenant)),
            ("notification_id", []) => Some(Found::Str(self.notification_id)),
            ("digest", _) => walk(self.digest?, rest).map(Found::Json),
            _ => None,
        }
    }

    fn value(&self) -> minijinja::Value {
        minijinja::context! {
            payload => self.payload.template_value(),
            subscriber => self.subscriber.template_value(),
            tenant_id => self.tenant,
            notification_id => self.notification_id,
            digest => self.digest,
        }
    }
}

/// Follows a dotted path (`payload.backup.phone`) into `root`; strings and
/// numbers resolve, anything else does not.
pub fn resolve_path(root: &Value, path: &str) -> Option<String> {
    let mut v = root;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One send to render.
pub struct SendInput<'a> {
    pub tenant: &'a str,
    pub notification_id: &'a str,
    pub workflow_id: &'a str,
    pub workflow_version: u32,
    pub step: &'a str,
    pub step_index: u32,
    pub attempt_id: &'a str,
    pub spec: &'a SendSpec,
    pub subscriber: &'a Subscriber,
    pub payload: &'a SharedPayload,
    pub template: Option<&'a CompiledTemplate>,
    /// Provider used when the step names none.
    pub default_provider: &'a dyn Fn(Channel) -> String,
    /// push and in_app: the step's app as the caller found it (`None`: the
    /// step names none, or the tenant has no such app).
    pub app: Option<&'a App>,
    /// push: the devices it goes to (the app's active ones).
    pub push_targets: &'a [pb::PushTarget],
    /// The closed digest the run leads, as templates see it.
    pub digest: Option<&'a Value>,
}

/// The address a send goes to: the step's alternate contact (`to`, a path
/// into the payload or the subscriber) or the recipient's own address on
/// the channel. The router also asks it before a send, to check the address
/// against the subscriber's unverified contacts.
pub fn send_address(
    to: &Recipient<'_>,
    spec: &SendSpec,
    channel: Channel,
) -> Result<String, String> {
    match &spec.to {
        Some(path) => resolve_path(
            &template_context(to.tenant, to.notification_id, to.payload, to.subscriber),
            path,
        )
        .ok_or_else(|| format!("alternate contact {path:?} is missing or empty")),
        None => to
            .subscriber
            .address(channel)
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "subscriber {:?} has no address for channel {channel}",
                    to.subscriber.subscriber_id
                )
            }),
    }
}

/// Whom a send is for: what an alternate contact path may read.
pub struct Recipient<'a> {
    pub tenant: &'a str,
    pub notification_id: &'a str,
    pub subscriber: &'a Subscriber,
    pub payload: &'a SharedPayload,
}

/// Renders a send into the `Routed` record and the `DispatchRequested` message.
pub fn render_send(
    input: &SendInput<'_>,
) -> Result<(pb::NotificationRouted, pb::DispatchRequested), String> {
    let channel: Channel = input.spec.channel.parse()?;
    let template = input
        .template
        .ok_or_else(|| format!("template {:?} does not exist", input.spec.template))?;
    let recipient = Recipient {
        tenant: input.tenant,
        notification_id: input.notification_id,
        subscriber: input.subscriber,
        payload: input.payload,
    };
    let to = send_address(&recipient, input.spec, channel)?;
    let vars = TemplateVars {
        tenant: input.tenant,
        notification_id: input.notification_id,
        payload: input.payload,
        subscriber: input.subscriber,
        digest: input.digest,
    };
    let extras = push_fields::of(input, channel, &vars)?;
    let rendered = template
        .render(&input.subscriber.locale, &vars)
        .map_err(|e| e.to_string())?;
    let provider = input
        .spec
        .provider
        .clone()
        .unwrap_or_else(|| (input.default_provider)(channel));
    Ok((
        pb::NotificationRouted {
            notification_id: input.notification_id.to_string(),
            workflow_id: input.workflow_id.to_string(),
            workflow_version: input.workflow_version,
            step: input.step_index,
            channel: channel.to_string(),
            template_id: template.template.template_id.clone(),
            template_version: template.template.version,
            locale: rendered.locale.clone(),
            provider: provider.clone(),
        },
        pb::DispatchRequested {
            notification_id: input.notification_id.to_string(),
            attempt_id: input.attempt_id.to_string(),
            channel: channel.to_string(),
            provider,
            to,
            subject: rendered.subject,
            body: rendered.body,
            locale: rendered.locale,
            subscriber_id: input.subscriber.subscriber_id.clone(),
            step: input.step.to_string(),
            workflow_id: input.workflow_id.to_string(),
            push_targets: extras.push_targets,
            push: extras.push.map(Box::new),
            link: extras.link,
            category: extras.category,
            data_json: extras.data_json,
            template_id: template.template.template_id.clone(),
            template_version: template.template.version,
            country: input.subscriber.country.clone(),
            context_in_outcomes: true,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    fn tpl() -> CompiledTemplate {
        Template::new(
            "appt",
            2,
            "sms",
            &[
                pb::TemplateVariant {
                    locale: "default".into(),
                    subject: String::new(),
                    body: "Visit at {{ payload.time }}".into(),
                },
                pb::TemplateVariant {
                    locale: "fr".into(),
                    subject: String::new(),
                    body: "Visite à {{ payload.time }}".into(),
                },
            ],
        )
        .unwrap()
        .compile()
    }

    fn sink(_: Channel) -> String {
        "sink".into()
    }

    fn input<'a>(
        spec: &'a SendSpec,
        sub: &'a Subscriber,
        payload: &'a SharedPayload,
        t: Option<&'a CompiledTemplate>,
    ) -> SendInput<'a> {
        SendInput {
            tenant: "acme",
            notification_id: "n1",
            workflow_id: "wf",
            workflow_version: 3,
            step: "sms",
            step_index: 1,
            attempt_id: "a1",
            spec,
            subscriber: sub,
            payload,
            template: t,
            default_provider: &sink,
            app: None,
            push_targets: &[],
            digest: None,
        }
    }

    #[test]
    fn renders_localized_to_the_subscriber_or_an_alternate_contact() {
        let t = tpl();
        let sub = Subscriber {
            subscriber_id: "tech-7".into(),
            phone: "+15145550100".into(),
            locale: "fr-CA".into(),
            ..Default::default()
        };
        let payload =
            SharedPayload::new(json!({"time": "9:30", "backup": {"phone": "+15145550199"}}));
        let mut spec = SendSpec {
            channel: "sms".into(),
            template: "appt".into(),
            provider: None,
            to: None,
            ..Default::default()
        };
        let (routed, d) = render_send(&input(&spec, &sub, &payload, Some(&t))).unwrap();
        assert_eq!(
            (d.to.as_str(), d.body.as_str(), d.provider.as_str()),
            ("+15145550100", "Visite à 9:30", "sink")
        );
        assert_eq!((routed.locale.as_str(), routed.template_version), ("fr", 2));
        spec.to = Some("payload.backup.phone".into());
        let (_, d) = render_send(&input(&spec, &sub, &payload, Some(&t))).unwrap();
        assert_eq!(d.to, "+15145550199");
        spec.to = Some("payload.manager.phone".into());
        let err = render_send(&input(&spec, &sub, &payload, Some(&t))).unwrap_err();
        assert!(err.contains("alternate contact"), "{err}");
    }

    /// A one-variant email template of `body`.
    fn body_template(body: &str) -> CompiledTemplate {
        Template::new(
            "t",
            1,
            "email",
            &[pb::TemplateVariant {
                locale: "default".into(),
                subject: "s".into(),
                body: body.into(),
            }],
        )
        .unwrap()
        .compile()
    }

    #[test]
    fn template_variables_read_in_place_print_as_their_json_view() {
        let sub = Subscriber {
            subscriber_id: "tech-7".into(),
            email: "t7@example.test".into(),
            phone: "+15145550100".into(),
            locale: "fr-CA".into(),
            timezone: "America/Toronto".into(),
            attributes: json!({"tier": "gold", "visits": 3, "team": {"lead": "Ana"}})
                .as_object()
                .cloned()
                .unwrap(),
            webhook_url: String::new(),
            country: String::new(),
        };
        let payload = SharedPayload::new(json!({"time": "9:30", "n": 2, "at": {"room": "B"}}));
        let vars = TemplateVars {
            tenant: "acme",
            notification_id: "n1",
            payload: &payload,
            subscriber: &sub,
            digest: None,
        };
        let json = template_context("acme", "n1", payload.json(), &sub);
        for text in [
            "{{ subscriber.id }}|{{ subscriber.email }}|{{ subscriber.phone }}|{{ subscriber.locale }}",
            "{{ subscriber.timezone }}|{{ subscriber.attributes.tier }}|{{ subscriber.attributes.visits }}",
            "{{ subscriber.attributes.team.lead }}|{{ payload.time }}|{{ payload.n }}|{{ payload.at.room }}",
            "{{ tenant_id }}/{{ notification_id }}",
            // Not plain values: minijinja prints these from `value()`.
            "{{ subscriber.attributes.team }}|{{ payload.at }}",
        ] {
            // A tag sends the same text through minijinja.
            let by_minijinja = body_template(&format!("{{% if true %}}{text}{{% endif %}}"));
            let expected = by_minijinja.render("", &json).unwrap().body;
            assert_eq!(by_minijinja.render("", &vars).unwrap().body, expected);
            assert_eq!(body_template(text).render("", &vars).unwrap().body, expected);
        }
        for missing in [
            "{{ subscriber.nickname }}",
            "{{ payload.time.hour }}",
            "{{ tenant }}",
        ] {
            let err = body_template(missing).render("", &vars).unwrap_err();
            assert!(err.message.contains("undefined"), "{missing}: {err}");
        }
    }

    #[test]
    fn missing_address_or_template_is_a_reason() {
        let t = tpl();
        let sub = Subscriber {
            subscriber_id: "u".into(),
            ..Default::default()
        };
        let spec = SendSpec {
            channel: "sms".into(),
            template: "appt".into(),
            provider: None,
            to: None,
            ..Default::default()
        };
        let p = SharedPayload::new(json!({"time": "1"}));
        assert!(render_send(&input(&spec, &sub, &p, Some(&t)))
            .unwrap_err()
            .contains("no address for channel sms"));
        assert!(render_send(&input(&spec, &sub, &p, None))
            .unwrap_err()
            .contains("does not exist"));
    }
}
