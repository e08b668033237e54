//! Workflows: the tenant's list, a version's YAML, the diff between two
//! versions, applying a new version (validation errors shown against the
//! lines they name), and the templates the steps use with a live preview.
//!
//! Reads and the apply go through the gateway's `workflow` functions, the
//! ones `WorkflowService` calls, with the session's caller: the same
//! validation, version numbering and actor in the `WorkflowPublished` event.
//!
//! The published event keeps the definition as JSON, not the text that was
//! applied: a version's YAML is the definition written back as YAML (the
//! same fields and values; the author's comments and layout are not kept).

mod apply;
mod diff;
pub mod lines;
mod templates;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use clarion_domain::flow::Flow;
use clarion_domain::tenant::Scope;
use clarion_gateway::auth::Caller;
use clarion_gateway::workflow;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::page::{self, PageError};
use crate::session::Session;
use crate::Console;

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "workflows/list.html",
        include_str!("../templates/workflows/list.html"),
    ),
    (
        "workflows/view.html",
        include_str!("../templates/workflows/view.html"),
    ),
    (
        "workflows/diff.html",
        include_str!("../templates/workflows/diff.html"),
    ),
    (
        "workflows/apply.html",
        include_str!("../templates/workflows/apply.html"),
    ),
    (
        "workflows/template.html",
        include_str!("../templates/workflows/template.html"),
    ),
    (
        "workflows/preview.html",
        include_str!("../templates/workflows/preview.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/workflows", get(list))
        .route("/workflows/apply", get(apply::form).post(apply::submit))
        .route("/workflows/:id", get(view))
        .route("/workflows/:id/diff", get(diff::page))
        .route(
            "/workflows/:id/templates/:template_id",
            get(templates::page),
        )
        .route(
            "/workflows/:id/templates/:template_id/preview",
            post(templates::preview),
        )
}

/// The path of a workflow's page. The id `apply` would be taken for the
/// apply form's path: its first letter is percent-encoded (the router
/// matches the raw path, the id is decoded after).
pub fn href(id: &str) -> String {
    match id.strip_prefix('a') {
        Some("pply") => format!("{}/workflows/%61pply", crate::BASE),
        _ => format!("{}/workflows/{id}", crate::BASE),
    }
}

/// A path for a template's `href`: marked safe when it holds only
/// characters that need no escaping (escaping would write every `/` as
/// `&#x2f;`), as the ids and percent-encoded parts in console paths do.
pub fn link(path: String) -> minijinja::Value {
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '~' | '%'));
    if plain {
        minijinja::Value::from_safe_string(path)
    } else {
        minijinja::Value::from(path)
    }
}

/// A workflow as the list shows it.
#[derive(Serialize)]
struct Row {
    id: String,
    href: minijinja::Value,
    name: String,
    version: u32,
    trigger_event: String,
    steps: usize,
}

fn row(f: &Flow) -> Row {
    Row {
        id: f.def.id.clone(),
        href: link(href(&f.def.id)),
        name: f.def.name.clone(),
        version: f.version,
        trigger_event: f.def.trigger.event.clone(),
        steps: f.def.steps.len(),
    }
}

async fn list(State(c): State<Console>, session: Session) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let mut flows = workflow::list(&c.gw, &caller).await?;
    flows.sort_by(|a, b| a.def.id.cmp(&b.def.id));
    let rows: Vec<Row> = flows.iter().map(row).collect();
    page::render(
        &c,
        &session,
        "workflows/list.html",
        context! { workflows => rows },
    )
}

/// `?version=N` (absent: the latest); `done` is the notice of an apply.
#[derive(Deserialize)]
struct ViewQuery {
    version: Option<String>,
    done: Option<String>,
}

/// A version number given in a form or a link: 1 or more.
pub fn parse_version(field: &str, raw: &str) -> Result<u32, PageError> {
    match raw.trim().parse::<u32>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(PageError::bad_request(
            field,
            format!(
                "must be a version number from 1 to {}, got {}",
                u32::MAX,
                clarion_domain::error::quote(raw)
            ),
        )),
    }
}

/// A workflow's version (`0`: the latest), or the page saying there is none.
pub async fn flow(c: &Console, caller: &Caller, id: &str, version: u32) -> Result<Flow, PageError> {
    let mut v = clarion_domain::Violations::default();
    clarion_domain::workflow::validate_id(&mut v, "workflow", id);
    if let Some(f) = v.0.first() {
        return Err(PageError::bad_request(&f.field, f.description.clone()));
    }
    workflow::get(&c.gw, caller, id, version)
        .await?
        .ok_or_else(|| {
            PageError::NotFound(match version {
                0 => format!("no workflow {id:?} in this tenant"),
                n => format!("no version {n} of workflow {id:?} in this tenant"),
            })
        })
}

/// The definition as YAML (see the module's note on what is kept).
pub fn yaml_of(f: &Flow) -> Result<String, PageError> {
    serde_norway::to_string(&f.def)
        .map_err(|e| PageError::Internal(format!("workflow {} as YAML: {e}", f.def.id)))
}

async fn view(
    State(c): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<ViewQuery>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let latest = flow(&c, &caller, &id, 0).await?;
    let older = match q.version.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => Some(flow(&c, &caller, &id, parse_version("version", raw)?).await?),
    };
    let shown = older.as_ref().unwrap_or(&latest);
    let used = templates::used_by(&c, &caller, shown).await?;
    let done = (q.done.as_deref() == Some("applied"))
        .then(|| format!("Version {} applied.", shown.version));
    page::render(
        &c,
        &session,
        "workflows/view.html",
        context! {
            workflow => row(shown),
            latest => latest.version,
            previous => shown.version.saturating_sub(1),
            next => (shown.version < latest.version).then_some(shown.version + 1),
            yaml => yaml_of(shown)?,
            templates => used,
            done,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_safe_only_when_nothing_needs_escaping() {
        let mut env = minijinja::Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        let show = |path: &str| {
            env.render_str("{{ v }}", context! { v => link(path.to_string()) })
                .unwrap()
        };
        assert_eq!(show(&href("visit")), "/console/workflows/visit");
        assert_eq!(href("apply"), "/console/workflows/%61pply");
        assert_eq!(show("/x/<b>"), "&#x2f;x&#x2f;&lt;b&gt;");
        assert_eq!(show("/x?a=1&b=2"), "&#x2f;x?a=1&amp;b=2");
    }
}
