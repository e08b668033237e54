//! The push and in-app parts of a dispatch: the devices a push goes to, its
//! provider options, the deep link, the inbox category and the client data.
//! Paths (`payload.job_id`, `subscriber.id`) are read in place from the
//! send's variables, like template variables.

use std::collections::BTreeMap;

use clarion_proto::events as pb;
use serde_json::Value;

use super::{SendInput, TemplateVars};
use crate::error::quote;
use crate::flow::duration::parse_ms;
use crate::push::{App, LinkSpec, LinkType, PushSpec};
use crate::template::{Found, Variables};
use crate::Channel;

/// What a push or in-app dispatch carries besides the rendered message.
#[derive(Debug, Default)]
pub(super) struct Extras {
    pub push_targets: Vec<pb::PushTarget>,
    pub push: Option<pb::PushOptions>,
    pub link: String,
    pub category: String,
    pub data_json: String,
}

/// The extras of a send (none for other channels), or why it cannot go.
pub(super) fn of(
    input: &SendInput<'_>,
    channel: Channel,
    vars: &TemplateVars<'_>,
) -> Result<Extras, String> {
    if !matches!(channel, Channel::Push | Channel::InApp) {
        return Ok(Extras::default());
    }
    let spec = input.spec;
    let app = match (&spec.app, input.app) {
        (Some(id), None) => return Err(format!("unknown app {}", quote(id))),
        (_, app) => app,
    };
    let mut x = Extras {
        category: spec.category.clone().unwrap_or_default(),
        ..Extras::default()
    };
    if channel == Channel::Push {
        let app = app.ok_or("a push step names the app whose devices receive it")?;
        if input.push_targets.is_empty() {
            return Err(format!("no active push device of app {}", app.app_id));
        }
        x.push_targets = input.push_targets.to_vec();
        x.push = Some(options(app, spec.push.as_ref(), vars)?);
    }
    if let Some(l) = &spec.link {
        x.link = link(app, l, vars)?;
    }
    if let Some(path) = &spec.data {
        x.data_json = data(path, vars)?;
    }
    Ok(x)
}

/// A push's provider options: the step's `push:` and the app's APNs topic
/// and environment.
fn options(
    app: &App,
    spec: Option<&PushSpec>,
    vars: &TemplateVars<'_>,
) -> Result<pb::PushOptions, String> {
    let none = PushSpec::default();
    let s = spec.unwrap_or(&none);
    let ttl_seconds = match &s.ttl {
        Some(t) => {
            let ms = parse_ms(t).map_err(|e| format!("push.ttl {e}"))?;
            u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
        }
        None => 0,
    };
    let text = |o: &Option<String>| o.clone().unwrap_or_default();
    Ok(pb::PushOptions {
        app_id: app.app_id.clone(),
        apns_topic: app.ios_bundle_id.clone(),
        apns_environment: app.apns_environment.clone(),
        push_type: s.push_type.clone().unwrap_or_else(|| "alert".into()),
        priority: text(&s.priority),
        ttl_seconds,
        collapse_key: text(&s.collapse_key),
        sound: text(&s.sound),
        badge: s.badge,
        android_channel_id: text(&s.android_channel_id),
        title_loc_key: text(&s.title_loc_key),
        title_loc_args: args(&s.title_loc_args, "push.title_loc_args", vars)?,
        body_loc_key: text(&s.body_loc_key),
        body_loc_args: args(&s.body_loc_args, "push.body_loc_args", vars)?,
    })
}

/// Localization arguments, each read at its path.
fn args(paths: &[String], field: &str, vars: &TemplateVars<'_>) -> Result<Vec<String>, String> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            text_at(vars, p)
                .ok_or_else(|| format!("{field}[{i}]: {} is missing or empty", quote(p)))
        })
        .collect()
}

/// The step's deep link, built with its app's pattern (a `url` link is the
/// value at the path itself, and needs no app).
fn link(app: Option<&App>, l: &LinkSpec, vars: &TemplateVars<'_>) -> Result<String, String> {
    let ty: LinkType = l.link_type.parse()?;
    let id = text_at(vars, &l.id)
        .ok_or_else(|| format!("link id {} is missing or empty", quote(&l.id)))?;
    match app {
        Some(app) => app.link(ty, &id),
        None if ty == LinkType::Url => no_app().link(ty, &id),
        None => Err(format!(
            "a {} link needs the step's app (whose pattern builds it)",
            ty.as_str()
        )),
    }
}

/// An app without patterns: what a `url` link is checked with.
fn no_app() -> App {
    App {
        app_id: String::new(),
        name: String::new(),
        platforms: Vec::new(),
        ios_bundle_id: String::new(),
        apns_environment: String::new(),
        deep_links: BTreeMap::new(),
        version: 0,
    }
}

/// The client data: the JSON object at the step's `data` path.
fn data(path: &str, vars: &TemplateVars<'_>) -> Result<String, String> {
    match lookup(vars, path) {
        Some(Found::Json(v @ Value::Object(_))) => Ok(v.to_string()),
        _ => Err(format!("data {} is not a JSON object", quote(path))),
    }
}

fn lookup<'v>(vars: &'v TemplateVars<'_>, path: &str) -> Option<Found<'v>> {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    vars.lookup(&parts)
}

/// A string or number at a path; empty counts as missing.
fn text_at(vars: &TemplateVars<'_>, path: &str) -> Option<String> {
    let s = match lookup(vars, path)? {
        Found::Str(s) => s.to_string(),
        Found::Json(Value::String(s)) => s.clone(),
        Found::Json(Value::Number(n)) => n.to_string(),
        Found::Json(_) => return None,
    };
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{render_send, SendInput};
    use super::*;
    use crate::flow::SendSpec;
    use crate::payload::SharedPayload;
    use crate::subscriber::Subscriber;
    use crate::template::{CompiledTemplate, Template};

    fn app() -> App {
        App::from_event(&pb::AppConfigured {
            app_id: "fieldapp".into(),
            platforms: vec!["ios".into(), "android".into()],
            ios_bundle_id: "com.acme.field".into(),
            apns_environment: "sandbox".into(),
            deep_links: [("job_card".to_string(), "fieldapp://jobs/{id}".to_string())].into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn template() -> CompiledTemplate {
        let variant = |locale: &str, subject: &str, body: &str| pb::TemplateVariant {
            locale: locale.into(),
            subject: subject.into(),
            body: body.into(),
        };
        Template::new(
            "job",
            1,
            "push",
            &[
                variant("default", "New job", "Job {{ payload.job_id }}"),
                variant("fr", "Nouveau travail", "Travail {{ payload.job_id }}"),
            ],
        )
        .unwrap()
        .compile()
    }

    fn target(id: &str) -> pb::PushTarget {
        pb::PushTarget {
            device_id: id.into(),
            platform: "ios".into(),
            provider: "apns".into(),
            token: Some(pb::SealedToken {
                sealed: vec![1],
                hash: vec![2; 32],
                hash_key_id: "k".into(),
                personal: String::new(),
            }),
            token_registered_at_ms: 5,
        }
    }

    fn push_spec() -> SendSpec {
        SendSpec {
            channel: "push".into(),
            template: "job".into(),
            app: Some("fieldapp".into()),
            link: Some(LinkSpec {
                link_type: "job_card".into(),
                id: "payload.job_id".into(),
            }),
            push: Some(PushSpec {
                ttl: Some("1h".into()),
                priority: Some("high".into()),
                badge: Some(3),
                body_loc_key: Some("JOB_BODY".into()),
                body_loc_args: vec!["payload.job_id".into(), "subscriber.id".into()],
                ..Default::default()
            }),
            data: Some("payload.extra".into()),
            ..Default::default()
        }
    }

    fn provider(c: Channel) -> String {
        match c {
            Channel::Push => "push".into(),
            _ => "inbox".into(),
        }
    }

    struct Case {
        sub: Subscriber,
        payload: SharedPayload,
        template: CompiledTemplate,
        app: App,
    }

    impl Case {
        fn new() -> Case {
            Case {
                sub: Subscriber {
                    subscriber_id: "tech-7".into(),
                    locale: "fr-CA".into(),
                    ..Default::default()
                },
                payload: SharedPayload::new(json!({"job_id": "J-42", "extra": {"k": "v"}})),
                template: template(),
                app: app(),
            }
        }

        fn render(
            &self,
            spec: &SendSpec,
            app: Option<&App>,
            targets: &[pb::PushTarget],
        ) -> Result<pb::DispatchRequested, String> {
            render_send(&SendInput {
                tenant: "acme",
                notification_id: "n1",
                workflow_id: "wf",
                workflow_version: 1,
                step: "push",
                step_index: 0,
                attempt_id: "a1",
                spec,
                subscriber: &self.sub,
                payload: &self.payload,
                template: Some(&self.template),
                default_provider: &provider,
                app,
                push_targets: targets,
                digest: None,
            })
            .map(|(_, d)| d)
        }
    }

    #[test]
    fn a_push_carries_its_devices_options_link_and_data() {
        let c = Case::new();
        let d = c
            .render(&push_spec(), Some(&c.app), &[target("d1"), target("d2")])
            .unwrap();
        assert_eq!(
            (d.provider.as_str(), d.to.as_str(), d.workflow_id.as_str()),
            ("push", "tech-7", "wf")
        );
        assert_eq!(
            (d.subject.as_str(), d.body.as_str()),
            ("Nouveau travail", "Travail J-42")
        );
        let ids: Vec<_> = d
            .push_targets
            .iter()
            .map(|t| t.device_id.as_str())
            .collect();
        assert_eq!(ids, ["d1", "d2"]);
        assert_eq!(d.link, "fieldapp://jobs/J-42");
        assert_eq!(d.data_json, r#"{"k":"v"}"#);
        let p = d.push.expect("push options");
        assert_eq!(
            (
                p.app_id.as_str(),
                p.apns_topic.as_str(),
                p.apns_environment.as_str()
            ),
            ("fieldapp", "com.acme.field", "sandbox")
        );
        assert_eq!(
            (p.push_type.as_str(), p.priority.as_str()),
            ("alert", "high")
        );
        assert_eq!((p.ttl_seconds, p.badge), (3600, Some(3)));
        assert_eq!(p.body_loc_key, "JOB_BODY");
        assert_eq!(p.body_loc_args, ["J-42", "tech-7"]);
    }

    #[test]
    fn a_push_that_cannot_go_is_a_reason() {
        let c = Case::new();
        let t = [target("d1")];
        let err = c.render(&push_spec(), Some(&c.app), &[]).unwrap_err();
        assert_eq!(err, "no active push device of app fieldapp");
        let err = c.render(&push_spec(), None, &t).unwrap_err();
        assert!(err.contains("unknown app \"fieldapp\""), "{err}");
        let mut spec = push_spec();
        spec.data = Some("payload.job_id".into());
        let err = c.render(&spec, Some(&c.app), &t).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let mut spec = push_spec();
        spec.link.as_mut().unwrap().id = "payload.nope".into();
        let err = c.render(&spec, Some(&c.app), &t).unwrap_err();
        assert!(err.contains("link id \"payload.nope\""), "{err}");
        let mut spec = push_spec();
        spec.push.as_mut().unwrap().ttl = Some("soon".into());
        let err = c.render(&spec, Some(&c.app), &t).unwrap_err();
        assert!(err.starts_with("push.ttl"), "{err}");
        let mut spec = push_spec();
        spec.push.as_mut().unwrap().body_loc_args = vec!["payload.missing".into()];
        let err = c.render(&spec, Some(&c.app), &t).unwrap_err();
        assert!(err.starts_with("push.body_loc_args[0]"), "{err}");
    }

    #[test]
    fn an_in_app_send_carries_link_category_and_data() {
        let c = Case::new();
        let spec = SendSpec {
            channel: "in_app".into(),
            template: "job".into(),
            link: Some(LinkSpec {
                link_type: "url".into(),
                id: "payload.url".into(),
            }),
            category: Some("jobs".into()),
            data: Some("payload.extra".into()),
            ..Default::default()
        };
        let mut c = c;
        c.payload = SharedPayload::new(
            json!({"job_id": 42, "url": "https://x.test/j/42", "extra": {"n": 1}}),
        );
        let d = c.render(&spec, None, &[]).unwrap();
        assert_eq!((d.provider.as_str(), d.to.as_str()), ("inbox", "tech-7"));
        assert_eq!(
            (d.link.as_str(), d.category.as_str()),
            ("https://x.test/j/42", "jobs")
        );
        assert_eq!(
            (d.data_json.as_str(), d.body.as_str()),
            (r#"{"n":1}"#, "Travail 42")
        );
        assert!(d.push.is_none() && d.push_targets.is_empty());
        // A typed link builds with the step's app; without it, it cannot.
        let spec = SendSpec {
            app: Some("fieldapp".into()),
            link: Some(LinkSpec {
                link_type: "job_card".into(),
                id: "payload.job_id".into(),
            }),
            ..spec
        };
        let d = c.render(&spec, Some(&c.app), &[]).unwrap();
        assert_eq!(d.link, "fieldapp://jobs/42");
        let spec = SendSpec { app: None, ..spec };
        assert!(c
            .render(&spec, None, &[])
            .unwrap_err()
            .contains("needs the step's app"));
    }
}
