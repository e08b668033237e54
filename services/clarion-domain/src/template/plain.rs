//! Plain interpolation: templates that are literal text and `{{ a.b.c }}`
//! variable references, nothing else, rendered without minijinja.
//!
//! Most notification texts are exactly that ("Bonjour {{ subscriber.id }},
//! le technicien passe le {{ payload.date }}"), and minijinja spends most of
//! a render on the general machinery: converting the context into its values,
//! looking the template up, running the VM. That was about 7 % of the
//! server's time at full load (docs/benchmarks.md). A text recognized here is
//! rendered by copying its literal runs and the variables' values.
//!
//! It must print exactly what minijinja prints, so it is deliberately narrow:
//! it takes only what it can render identically, and declines the rest, at
//! parse time (any tag, comment, filter, whitespace control, subscript,
//! literal or reserved name) and at render time (a variable that is missing,
//! or whose value is not a string, an integer or a boolean). A declined text
//! or render goes to minijinja, which also produces every error. The tests
//! below compare both renderers on the same texts and variables.

use std::fmt::Write;

use serde_json::Value;

use super::{Found, Variables};
use crate::limits::MAX_RENDERED_BYTES;

/// Names minijinja reads as something other than a variable or attribute.
const RESERVED: [&str; 8] = [
    "true", "True", "false", "False", "none", "None", "loop", "self",
];

#[derive(Debug, PartialEq)]
enum Segment {
    Text(String),
    /// A dotted path, root first.
    Var(Vec<String>),
}

/// A text made of literal runs and variable references only.
#[derive(Debug, PartialEq)]
pub(super) struct Plain {
    segments: Vec<Segment>,
    /// Bytes of literal text, to size the output.
    literal_len: usize,
}

impl Plain {
    /// The text as plain interpolation, or `None` if it uses anything else.
    pub(super) fn parse(source: &str) -> Option<Plain> {
        // minijinja drops one trailing newline (`keep_trailing_newline` is
        // off by default), and a `\r` before it.
        let mut src = source.strip_suffix('\n').unwrap_or(source);
        src = src.strip_suffix('\r').unwrap_or(src);
        let mut segments = Vec::new();
        let mut literal_len = 0;
        let mut rest = src;
        loop {
            let Some(open) = find_delimiter(rest)? else {
                if !rest.is_empty() {
                    literal_len += rest.len();
                    segments.push(Segment::Text(rest.to_string()));
                }
                break;
            };
            if open > 0 {
                literal_len += open;
                segments.push(Segment::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}")?;
            segments.push(Segment::Var(path(&after[..close])?));
            rest = &after[close + 2..];
        }
        Some(Plain {
            segments,
            literal_len,
        })
    }

    /// Renders with `vars`, or returns `None` when a variable is not a value
    /// this renderer prints as minijinja does (the caller then uses
    /// minijinja, which also reports a missing variable).
    ///
    /// Bounded by construction: one pass over the segments, each copied
    /// once, no loops or calls a tenant controls; so its time is linear in
    /// its output, which stops at the output limit (past it, minijinja
    /// renders again and reports the limit).
    pub(super) fn render(&self, vars: &dyn Variables) -> Option<String> {
        let mut out = String::with_capacity(self.literal_len + 16 * self.segments.len());
        for s in &self.segments {
            if out.len() > MAX_RENDERED_BYTES {
                return None;
            }
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(p) => match vars.lookup(p)? {
                    Found::Str(s) => out.push_str(s),
                    Found::Json(Value::String(s)) => out.push_str(s),
                    // As minijinja prints them (Python's spelling).
                    Found::Json(Value::Bool(b)) => out.push_str(if *b { "True" } else { "False" }),
                    Found::Json(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                        let _ = write!(out, "{n}");
                    }
                    Found::Json(_) => return None,
                },
            }
        }
        (out.len() <= MAX_RENDERED_BYTES).then_some(out)
    }
}

/// Where the next `{{` starts (`Some(None)`: there is none), or `None` when
/// a tag or a comment comes first, which plain interpolation does not take.
fn find_delimiter(s: &str) -> Option<Option<usize>> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(k) = s[i..].find('{') {
        let at = i + k;
        match b.get(at + 1) {
            Some(b'{') => return Some(Some(at)),
            Some(b'%') | Some(b'#') => return None,
            _ => i = at + 1,
        }
    }
    Some(None)
}

/// The dotted path inside `{{ }}`: ASCII identifiers joined by dots, with
/// whitespace around the whole but none inside, and no whitespace control.
fn path(expr: &str) -> Option<Vec<String>> {
    if expr.starts_with(['-', '+']) || expr.ends_with(['-', '+']) {
        return None;
    }
    let expr = expr.trim();
    let mut parts = Vec::new();
    for part in expr.split('.') {
        let mut chars = part.chars();
        let first = chars.next()?;
        if !(first.is_ascii_alphabetic() || first == '_')
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            || RESERVED.contains(&part)
        {
            return None;
        }
        parts.push(part.to_string());
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::{Environment, UndefinedBehavior};
    use serde_json::json;

    /// What minijinja prints for `text` with `ctx`, configured as templates are.
    fn minijinja(text: &str, ctx: &Value) -> Result<String, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template("fr/body", text)
            .map_err(|e| e.to_string())?;
        env.get_template("fr/body")
            .unwrap()
            .render(ctx)
            .map_err(|e| e.to_string())
    }

    fn ctx() -> Value {
        json!({
            "payload": {"date": "2026-12-01", "n": 42, "neg": -7, "big": u64::MAX,
                        "f": 1.5, "whole": 2.0, "ok": true, "no": false, "nil": null,
                        "list": [1, 2], "obj": {"a": "b"}, "empty": "",
                        "html": "<b>&amp;</b>", "unicode": "café ☕"},
            "subscriber": {"id": "lg-20", "attributes": {"tier": "gold"}},
            "tenant_id": "demo",
        })
    }

    #[test]
    fn plain_texts_render_as_minijinja_renders_them() {
        let texts = [
            "",
            "no variables at all",
            "Bonjour {{ subscriber.id }}, le {{payload.date}}.",
            "{{ payload.n }}{{ payload.neg }} {{ payload.big }}",
            "{{ payload.ok }}/{{ payload.no }}",
            "{{ payload.empty }}|{{ payload.html }}|{{ payload.unicode }}",
            "{{ subscriber.attributes.tier }}",
            "{{\n\ttenant_id \n}}",
            "lone { brace } and }} closers",
            "trailing newline\n",
            "trailing crlf\r\n",
            "two newlines\n\n",
            "\n",
            "{{ payload.date }}\n",
        ];
        for text in texts {
            let plain = Plain::parse(text).unwrap_or_else(|| panic!("{text:?} is plain"));
            let ours = plain.render(&ctx()).expect("renders");
            assert_eq!(Ok(ours), minijinja(text, &ctx()), "{text:?}");
        }
    }

    #[test]
    fn values_printed_differently_or_missing_go_to_minijinja() {
        for text in [
            "{{ payload.f }}",
            "{{ payload.whole }}",
            "{{ payload.nil }}",
            "{{ payload.list }}",
            "{{ payload.obj }}",
            "{{ payload.missing }}",
            "{{ payload.date.year }}",
            "{{ nowhere }}",
        ] {
            let plain = Plain::parse(text).expect("parses as plain");
            assert_eq!(plain.render(&ctx()), None, "{text:?}");
        }
        assert!(minijinja("{{ payload.missing }}", &ctx()).is_err());
    }

    #[test]
    fn anything_beyond_variables_is_left_to_minijinja() {
        for text in [
            "{% if payload.ok %}yes{% endif %}",
            "{# a comment #}",
            "{{ payload.date | upper }}",
            "{{ payload['date'] }}",
            "{{ payload.list.0 }}",
            "{{- payload.date }}",
            "{{ payload.date -}}",
            "{{+ payload.date }}",
            "{{ 'literal' }}",
            "{{ true }}",
            "{{ payload.none }}",
            "{{ loop }}",
            "{{ payload . date }}",
            "{{ payload.date }",
            "{{ payload.da te }}",
            "{{ café }}",
            "{{ }}",
        ] {
            assert_eq!(Plain::parse(text), None, "{text:?}");
        }
    }
}
