//! `GET /workflows/apply` (`?from=<id>` starts from that workflow's latest
//! YAML) and `POST /workflows/apply`: a new version through the gateway's
//! `workflow::apply`, the function `WorkflowService.Apply` calls, with the
//! session's caller (scope `Admin`, as the gRPC method). A refused
//! definition is answered 400 with the text again, each error under the
//! line it names ([`super::lines`]).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clarion_domain::tenant::Scope;
use clarion_domain::Violations;
use clarion_gateway::error::ApiError;
use clarion_gateway::workflow;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::lines::Located;
use super::{flow, href, link, yaml_of};
use crate::page::{self, PageError};
use crate::session::{Session, Submitted};
use crate::Console;

/// What the form starts with when it starts from nothing.
const EXAMPLE: &str = "\
id: my-workflow
name: My workflow
trigger:
  event: something.happened
steps:
  - { id: email, type: send, channel: email, template: my-template }
";

#[derive(Deserialize)]
pub(super) struct FormQuery {
    from: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ApplyForm {
    yaml: String,
}

/// One line of a refused text, with the errors that name it.
#[derive(Serialize, Debug, PartialEq)]
pub struct Line {
    pub number: usize,
    pub text: String,
    pub errors: Vec<String>,
}

/// Every line of `text` with the violations placed on theirs, in the order
/// reported; each violation lands on exactly one line.
pub fn annotate(text: &str, violations: &Violations) -> Vec<Line> {
    // Text over the size limit is refused before anything reads it: its
    // one error goes on line 1 without parsing it again.
    let located =
        (text.len() <= clarion_domain::limits::MAX_DEFINITION_BYTES).then(|| Located::parse(text));
    let mut on: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for f in &violations.0 {
        let line = located.as_ref().map_or(1, |l| l.line_of(&f.field));
        on.entry(line)
            .or_default()
            .push(format!("{}: {}", f.field, f.description));
    }
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        lines.push("");
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, t)| Line {
            number: i + 1,
            text: t.to_string(),
            errors: on.remove(&(i + 1)).unwrap_or_default(),
        })
        .collect()
}

pub(super) async fn form(
    State(c): State<Console>,
    session: Session,
    Query(q): Query<FormQuery>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let (yaml, from) = match q.from.as_deref().filter(|f| !f.is_empty()) {
        Some(id) => (yaml_of(&flow(&c, &caller, id, 0).await?)?, Some(id)),
        None => (EXAMPLE.to_string(), None),
    };
    page::render(
        &c,
        &session,
        "workflows/apply.html",
        context! { yaml, from, from_href => from.map(|f| link(href(f))) },
    )
}

pub(super) async fn submit(
    State(c): State<Console>,
    Submitted { session, form }: Submitted<ApplyForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    match workflow::apply(&c.gw, &caller, &form.yaml).await {
        Ok(applied) => Ok(page::see_other(&format!(
            "{}?version={}&done=applied",
            href(&applied.workflow_id),
            applied.version
        ))),
        Err(ApiError::Invalid(violations)) => {
            let lines = annotate(&form.yaml, &violations);
            let errors: Vec<_> = lines
                .iter()
                .flat_map(|l| l.errors.iter().map(move |e| (l.number, e)))
                .collect();
            let page = page::render(
                &c,
                &session,
                "workflows/apply.html",
                context! { yaml => form.yaml, lines, errors },
            )?;
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_lands_on_one_line() {
        let text = "id: w\ntrigger:\n  event: e\nsteps:\n  - { id: a, type: send, channel: fax, template: t }\n";
        let mut v = Violations::default();
        v.push("steps[0].channel", "unknown channel fax");
        v.push("steps[0].template", "no such template");
        v.push("goal", "unknown");
        let lines = annotate(text, &v);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[4].errors.len(), 2);
        assert_eq!(lines[4].errors[0], "steps[0].channel: unknown channel fax");
        assert_eq!(lines[0].errors, ["goal: unknown"]);
        let total: usize = lines.iter().map(|l| l.errors.len()).sum();
        assert_eq!(total, 3);
    }

    #[test]
    fn an_empty_text_still_has_a_line_for_its_error() {
        let v = Violations::single("id", "is required");
        let lines = annotate("", &v);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].errors, ["id: is required"]);
    }
}
