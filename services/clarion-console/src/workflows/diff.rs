//! `GET /workflows/{id}/diff?from=N&to=M`: the line diff between two
//! versions' YAML, in groups of changes with three lines of context.
//! Added and removed lines are `<ins>` and `<del>` with a visually hidden
//! "added" / "removed" (screen readers do not all announce the elements).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use clarion_domain::tenant::Scope;
use minijinja::context;
use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

use super::{flow, href, link, parse_version, yaml_of};
use crate::page::{self, PageError};
use crate::session::Session;
use crate::Console;

/// Lines of unchanged text shown around each change.
const CONTEXT_LINES: usize = 3;
/// A diff of two definitions within the size limit takes milliseconds;
/// past this the diff is coarser rather than slower.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
pub(super) struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// One line of the diff.
#[derive(Serialize, Debug, PartialEq)]
pub struct Line {
    /// `added`, `removed` or `same`.
    pub change: &'static str,
    /// The line's number in the older text (not for added lines).
    pub old: Option<usize>,
    /// The line's number in the newer text (not for removed lines).
    pub new: Option<usize>,
    pub text: String,
}

/// The changes between two texts, in groups with context.
#[derive(Serialize, Debug, Default)]
pub struct Diff {
    pub groups: Vec<Vec<Line>>,
    pub added: usize,
    pub removed: usize,
}

/// The line diff of `old` and `new`.
pub fn lines(old: &str, new: &str) -> Diff {
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new);
    let mut out = Diff::default();
    for ops in diff.grouped_ops(CONTEXT_LINES) {
        let mut group = Vec::new();
        for op in &ops {
            for c in diff.iter_changes(op) {
                let change = match c.tag() {
                    ChangeTag::Insert => {
                        out.added += 1;
                        "added"
                    }
                    ChangeTag::Delete => {
                        out.removed += 1;
                        "removed"
                    }
                    ChangeTag::Equal => "same",
                };
                group.push(Line {
                    change,
                    old: c.old_index().map(|i| i + 1),
                    new: c.new_index().map(|i| i + 1),
                    text: c.value().trim_end_matches(['\n', '\r']).to_string(),
                });
            }
        }
        out.groups.push(group);
    }
    out
}

/// A version named in the query: `raw`, or `default` when absent.
fn version_or(field: &str, raw: Option<&str>, default: u32) -> Result<u32, PageError> {
    match raw.filter(|r| !r.is_empty()) {
        Some(r) => parse_version(field, r),
        None => Ok(default),
    }
}

pub(super) async fn page(
    State(c): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let latest = flow(&c, &caller, &id, 0).await?;
    // By default: the latest version against the one before it.
    let to = version_or("to", q.to.as_deref(), latest.version)?;
    let from = version_or("from", q.from.as_deref(), to.saturating_sub(1).max(1))?;
    let old = flow(&c, &caller, &id, from).await?;
    let new = flow(&c, &caller, &id, to).await?;
    let diff = lines(&yaml_of(&old)?, &yaml_of(&new)?);
    page::render(
        &c,
        &session,
        "workflows/diff.html",
        context! {
            id => id,
            href => link(href(&id)),
            from => from,
            to => to,
            latest => latest.version,
            diff => diff,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_are_marked_with_their_numbers() {
        let old = "id: w\nname: A\nsteps: []\n";
        let new = "id: w\nname: B\nsteps: []\ncritical: true\n";
        let d = lines(old, new);
        assert_eq!((d.added, d.removed), (2, 1));
        let all: Vec<&Line> = d.groups.iter().flatten().collect();
        let removed = all.iter().find(|l| l.change == "removed").unwrap();
        assert_eq!((removed.old, removed.new), (Some(2), None));
        assert_eq!(removed.text, "name: A");
        let added: Vec<_> = all.iter().filter(|l| l.change == "added").collect();
        assert_eq!(added[0].text, "name: B");
        assert_eq!(added[1].new, Some(4));
    }

    #[test]
    fn far_apart_changes_are_separate_groups_and_equal_texts_have_none() {
        let old: String = (1..=30).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l2\n", "x\n").replace("l28\n", "y\n");
        let d = lines(&old, &new);
        assert_eq!(d.groups.len(), 2);
        assert!(d.groups[0].len() <= 2 * CONTEXT_LINES + 2);
        assert!(lines(&old, &old).groups.is_empty());
    }
}
