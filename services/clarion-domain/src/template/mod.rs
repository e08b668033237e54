//! Templates: per-locale variants rendered with minijinja.
//!
//! Locale fallback walks from the most specific tag to the least (`fr-CA` →
//! `fr` → `default`), so a tenant can ship one French text for every French
//! market and override only where a market differs. Every template must have a
//! `default` variant so the walk always ends somewhere.

mod plain;

use std::collections::BTreeMap;

use clarion_proto::events as pb;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::channel::Channel;
use crate::error::{excerpt, quote, Violations};
use crate::limits;
use plain::Plain;

pub const DEFAULT_LOCALE: &str = "default";

#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub subject: String,
    pub body: String,
}

/// A published, immutable template version.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub template_id: String,
    pub version: u32,
    pub channel: Channel,
    /// Keyed by lower-cased locale tag or `default`.
    pub variants: BTreeMap<String, Variant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The variant actually used.
    pub locale: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("template {template_id} v{version} ({locale}) failed to render: {message}")]
pub struct RenderError {
    pub template_id: String,
    pub version: u32,
    pub locale: String,
    pub message: String,
}

impl Template {
    /// Builds and validates a template for publication: known channel, a
    /// `default` variant, distinct locales, every text compiles, and sizes
    /// within [`limits`](crate::limits).
    pub fn new(
        template_id: &str,
        version: u32,
        channel: &str,
        variants: &[pb::TemplateVariant],
    ) -> Result<Template, Violations> {
        Template::build(template_id, version, channel, variants, true)
    }

    fn build(
        template_id: &str,
        version: u32,
        channel: &str,
        variants: &[pb::TemplateVariant],
        publishing: bool,
    ) -> Result<Template, Violations> {
        let mut v = Violations::default();
        crate::workflow::validate_id(&mut v, "template_id", template_id);
        let channel = match channel.parse::<Channel>() {
            Ok(c) => Some(c),
            Err(e) => {
                v.push("channel", e);
                None
            }
        };
        if publishing
            && !limits::check_count(
                &mut v,
                "variants",
                variants.len(),
                limits::MAX_TEMPLATE_VARIANTS,
            )
        {
            return Err(v);
        }
        let mut map = BTreeMap::new();
        if variants.is_empty() {
            v.push(
                "variants",
                "at least one variant (with locale 'default') is required",
            );
        }
        for (i, var) in variants.iter().enumerate() {
            // A text over the limits is not worth compiling.
            let sized = !publishing || variant_within_limits(&mut v, i, var);
            let locale = if var.locale.is_empty() {
                DEFAULT_LOCALE.to_string()
            } else {
                var.locale.to_ascii_lowercase()
            };
            if channel == Some(Channel::Email) && var.subject.trim().is_empty() {
                v.push(
                    format!("variants[{i}].subject"),
                    "is required for email templates",
                );
            }
            for (field, text) in [("subject", &var.subject), ("body", &var.body)] {
                if !sized {
                    break;
                }
                if let Err(e) = Environment::new().template_from_str(text) {
                    v.push(
                        format!("variants[{i}].{field}"),
                        format!("does not compile: {}", excerpt(&e.to_string(), 300)),
                    );
                }
            }
            if var.body.is_empty() {
                v.push(format!("variants[{i}].body"), "is required");
            }
            if map
                .insert(
                    locale.clone(),
                    Variant {
                        subject: var.subject.clone(),
                        body: var.body.clone(),
                    },
                )
                .is_some()
            {
                v.push(
                    format!("variants[{i}].locale"),
                    format!("duplicate locale {}", quote(&locale)),
                );
            }
        }
        if !variants.is_empty() && !map.contains_key(DEFAULT_LOCALE) {
            v.push(
                "variants",
                "a variant with locale 'default' (or empty) is required as the last fallback",
            );
        }
        v.into_result()?;
        Ok(Template {
            template_id: template_id.to_string(),
            version,
            channel: channel.expect("validated"),
            variants: map,
        })
    }

    /// Rebuilds a published template. Sizes are not checked again: a
    /// version accepted before a limit existed still renders (under the
    /// render budget, like every other).
    pub fn from_event(e: &pb::TemplatePublished) -> Result<Template, Violations> {
        Template::build(&e.template_id, e.version, &e.channel, &e.variants, false)
    }

    pub fn to_event(&self) -> pb::TemplatePublished {
        pb::TemplatePublished {
            template_id: self.template_id.clone(),
            version: self.version,
            channel: self.channel.to_string(),
            variants: self
                .variants
                .iter()
                .map(|(l, v)| pb::TemplateVariant {
                    locale: l.clone(),
                    subject: v.subject.clone(),
                    body: v.body.clone(),
                })
                .collect(),
        }
    }

    /// The fallback chain for `locale`: `fr-CA` → [`fr-ca`, `fr`, `default`].
    pub fn fallback_chain(locale: &str) -> Vec<String> {
        let lower = locale.to_ascii_lowercase();
        let mut chain: Vec<String> = tags(&lower).map(str::to_string).collect();
        chain.push(DEFAULT_LOCALE.to_string());
        chain
    }

    /// The variant used for `locale`, after fallback (the walk of
    /// [`Template::fallback_chain`], without making the chain).
    pub fn select(&self, locale: &str) -> (&str, &Variant) {
        let lower = locale.to_ascii_lowercase();
        let (k, v) = tags(&lower)
            .chain([DEFAULT_LOCALE])
            .find_map(|tag| self.variants.get_key_value(tag))
            .expect("a validated template has a default variant");
        (k.as_str(), v)
    }

    /// Compiles every variant once, for repeated rendering.
    pub fn compile(&self) -> CompiledTemplate {
        let mut env = Environment::new();
        let mut plain = BTreeMap::new();
        // A typo in a variable name must fail the render rather than send a
        // message with a hole in it.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates are tenant code running in a shared partition: every
        // render gets the same instruction budget and a shallower recursion
        // than minijinja's default, so a runaway loop fails its own send in
        // milliseconds instead of holding the partition.
        env.set_fuel(Some(limits::RENDER_FUEL));
        env.set_recursion_limit(limits::RENDER_RECURSION);
        for (locale, v) in &self.variants {
            // Validated in `new`, so adding cannot fail.
            let _ = env.add_template_owned(format!("{locale}/subject"), v.subject.clone());
            let _ = env.add_template_owned(format!("{locale}/body"), v.body.clone());
            plain.insert(
                locale.clone(),
                [Plain::parse(&v.subject), Plain::parse(&v.body)],
            );
        }
        CompiledTemplate {
            template: self.clone(),
            env,
            plain,
        }
    }
}

/// A lower-cased tag and each shorter prefix of it, most specific first:
/// `fr-ca`, `fr`; nothing for an empty tag.
fn tags(lower: &str) -> impl Iterator<Item = &str> {
    std::iter::successors((!lower.is_empty()).then_some(lower), |t| {
        t.rfind('-').map(|i| &t[..i])
    })
}

/// Size checks of one variant at publication; `false` when it is over a
/// limit (and so not worth compiling).
fn variant_within_limits(v: &mut Violations, i: usize, var: &pb::TemplateVariant) -> bool {
    let f = |part: &str| format!("variants[{i}].{part}");
    let mut ok = limits::check_len(v, &f("locale"), &var.locale, limits::MAX_LOCALE_BYTES);
    ok &= limits::check_len(v, &f("subject"), &var.subject, limits::MAX_SUBJECT_BYTES);
    ok &= limits::check_len(v, &f("body"), &var.body, limits::MAX_BODY_BYTES);
    ok
}

/// A template ready to render many times.
pub struct CompiledTemplate {
    pub template: Template,
    env: Environment<'static>,
    /// Per locale, subject and body as plain interpolation where they are
    /// (see [`plain`]): rendered without minijinja.
    plain: BTreeMap<String, [Option<Plain>; 2]>,
}

/// A template's variables, as both renderers read them.
pub trait Variables {
    /// The value at a dotted path (`["payload", "date"]`), if there is one.
    fn lookup(&self, path: &[String]) -> Option<Found<'_>>;
    /// Every variable, as one minijinja value.
    fn value(&self) -> minijinja::Value;
}

/// A value found by [`Variables::lookup`].
pub enum Found<'a> {
    Str(&'a str),
    Json(&'a Value),
}

/// Follows `path` down a JSON tree's objects.
pub fn walk<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for p in path {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// A JSON object's keys are the variables.
impl Variables for Value {
    fn lookup(&self, path: &[String]) -> Option<Found<'_>> {
        walk(self, path).map(Found::Json)
    }

    fn value(&self) -> minijinja::Value {
        minijinja::Value::from_serialize(self)
    }
}

impl CompiledTemplate {
    /// Renders the variant for `locale` (after fallback) with `vars`.
    ///
    /// The plain path is bounded by construction: it copies literal runs
    /// and variable values once each, with no loops or calls, and stops at
    /// the output limit. Everything else runs in minijinja under
    /// [`limits::RENDER_FUEL`] and [`limits::MAX_RENDERED_BYTES`].
    pub fn render(&self, locale: &str, vars: &dyn Variables) -> Result<Rendered, RenderError> {
        let (used, _) = self.template.select(locale);
        let plain = self.plain.get(used);
        // Made at most once, for both parts, and only if minijinja renders.
        let mut ctx: Option<minijinja::Value> = None;
        let mut render = |i: usize, part: &str| -> Result<String, RenderError> {
            if let Some(text) = plain.and_then(|p| p[i].as_ref()?.render(vars)) {
                return Ok(text);
            }
            let err = |message: String| RenderError {
                template_id: self.template.template_id.clone(),
                version: self.template.version,
                locale: used.to_string(),
                message,
            };
            let t = self
                .env
                .get_template(&format!("{used}/{part}"))
                .map_err(|e| err(e.to_string()))?;
            let ctx = ctx.get_or_insert_with(|| vars.value());
            let mut out = Bounded::default();
            match t.render_captured_to(&*ctx, &mut out) {
                Ok(_) => String::from_utf8(out.buf)
                    .map_err(|_| err(format!("{part}: rendered text is not UTF-8"))),
                Err(_) if out.over => Err(err(format!(
                    "{part}: rendered output over {} KiB",
                    limits::MAX_RENDERED_BYTES / 1024
                ))),
                Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(err(format!(
                    "{part}: exceeded its render budget (fuel {})",
                    limits::RENDER_FUEL
                ))),
                Err(e) => Err(err(format!("{part}: {}", excerpt(&e.to_string(), 300)))),
            }
        };
        Ok(Rendered {
            subject: render(0, "subject")?,
            body: render(1, "body")?,
            locale: used.to_string(),
        })
    }
}

/// A render's output, refused past [`limits::MAX_RENDERED_BYTES`]: the
/// render stops at the first write over it, not after building it all.
#[derive(Default)]
struct Bounded {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > limits::MAX_RENDERED_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered output over the limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn variant(locale: &str, subject: &str, body: &str) -> pb::TemplateVariant {
        pb::TemplateVariant {
            locale: locale.into(),
            subject: subject.into(),
            body: body.into(),
        }
    }

    fn sample() -> Template {
        Template::new(
            "appt",
            1,
            "email",
            &[
                variant(
                    "default",
                    "Appointment",
                    "Hello {{ subscriber.id }}, see you at {{ payload.time }}",
                ),
                variant(
                    "fr",
                    "Rendez-vous",
                    "Bonjour {{ subscriber.id }}, à {{ payload.time }}",
                ),
                variant(
                    "fr-CA",
                    "Rendez-vous (QC)",
                    "Allô {{ subscriber.id }}, à {{ payload.time }}",
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn fallback_chain_goes_from_specific_to_default() {
        assert_eq!(
            Template::fallback_chain("fr-CA"),
            ["fr-ca", "fr", "default"]
        );
        assert_eq!(Template::fallback_chain(""), ["default"]);
    }

    #[test]
    fn renders_the_most_specific_variant() {
        let c = sample().compile();
        let ctx = json!({"subscriber": {"id": "ana"}, "payload": {"time": "10:00"}});
        assert_eq!(c.render("fr-CA", &ctx).unwrap().body, "Allô ana, à 10:00");
        let fr_be = c.render("fr-BE", &ctx).unwrap();
        assert_eq!(
            (fr_be.locale.as_str(), fr_be.subject.as_str()),
            ("fr", "Rendez-vous")
        );
        assert_eq!(
            c.render("de", &ctx).unwrap().body,
            "Hello ana, see you at 10:00"
        );
    }

    #[test]
    fn undefined_variables_fail_the_render() {
        let c = sample().compile();
        let err = c
            .render("en", &json!({"subscriber": {"id": "x"}}))
            .unwrap_err();
        assert!(err.message.contains("body"), "{err}");
    }

    fn body_only(body: &str) -> CompiledTemplate {
        Template::new("t", 1, "webhook", &[variant("", "", body)])
            .unwrap()
            .compile()
    }

    #[test]
    fn a_runaway_loop_fails_its_render_with_the_budget() {
        let c = body_only(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        );
        let started = std::time::Instant::now();
        let err = c.render("", &json!({})).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "exceeded its render budget (fuel {})",
                limits::RENDER_FUEL
            )),
            "{err}"
        );
        // A stall detector, not a timing assertion: without fuel this loop
        // runs 10¹⁰ iterations.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // A loop well inside the budget renders.
        let ok = body_only("{% for i in range(200) %}{{ i }},{% endfor %}");
        assert!(ok.render("", &json!({})).unwrap().body.ends_with("199,"));
    }

    #[test]
    fn output_over_the_limit_fails_on_both_renderers() {
        let big = json!({"payload": {"s": "y".repeat(10 * 1024)}});
        // minijinja: a loop writing 1 MiB.
        let err = body_only("{% for i in range(100) %}{{ payload.s }}{% endfor %}")
            .render("", &big)
            .unwrap_err();
        let want = format!(
            "rendered output over {} KiB",
            limits::MAX_RENDERED_BYTES / 1024
        );
        assert!(err.to_string().contains(&want), "{err}");
        // Plain interpolation repeating a variable past the limit.
        let err = body_only(&"{{ payload.s }}".repeat(60))
            .render("", &big)
            .unwrap_err();
        assert!(err.to_string().contains(&want), "{err}");
        // Under the limit, plain interpolation renders it.
        let ok = body_only(&"{{ payload.s }}".repeat(40)).render("", &big);
        assert_eq!(ok.unwrap().body.len(), 40 * 10 * 1024);
    }

    #[test]
    fn deep_nesting_hits_the_recursion_limit() {
        let depth = limits::RENDER_RECURSION + 10;
        let text = format!(
            "{}x{}",
            "{% for a in [1] %}".repeat(depth),
            "{% endfor %}".repeat(depth)
        );
        let err = body_only(&text).render("", &json!({})).unwrap_err();
        assert!(err.message.contains("recursion"), "{err}");
        let shallow = 10;
        let text = format!(
            "{}x{}",
            "{% for a in [1] %}".repeat(shallow),
            "{% endfor %}".repeat(shallow)
        );
        assert_eq!(body_only(&text).render("", &json!({})).unwrap().body, "x");
    }

    #[test]
    fn sources_over_the_limits_are_refused_at_publish_only() {
        let body = "b".repeat(limits::MAX_BODY_BYTES + 1);
        let subject = "s".repeat(limits::MAX_SUBJECT_BYTES + 1);
        let err = Template::new("t", 1, "email", &[variant("", &subject, &body)]).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["variants[0].subject", "variants[0].body"], "{err}");
        assert!(err.0[1]
            .description
            .contains("over the limit of 65536 bytes"));
        let many: Vec<_> = (0..=limits::MAX_TEMPLATE_VARIANTS)
            .map(|i| variant(&format!("l{i}"), "s", "b"))
            .collect();
        let err = Template::new("t", 1, "email", &many).unwrap_err();
        assert_eq!(err.0[0].field, "variants");
        // A version published before the limits existed still loads.
        let published = pb::TemplatePublished {
            template_id: "t".into(),
            version: 1,
            channel: "email".into(),
            variants: vec![variant("", &subject, &body)],
        };
        assert!(Template::from_event(&published).is_ok());
    }

    #[test]
    fn invalid_templates_name_the_field() {
        let err = Template::new("t", 1, "pigeon", &[variant("fr", "", "{{ oops")]).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"channel"), "{err}");
        assert!(fields.contains(&"variants[0].body"), "{err}");
        assert!(fields.contains(&"variants"), "{err}");
    }
}
