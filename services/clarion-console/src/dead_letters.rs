//! Dead letters: the tenant's queue with the CLI's filters (`clarion dlq
//! list`: workflow, channel, reason, older than), one dead letter with its
//! attempts, retry and discard with a note, and bulk retry of a filtered
//! set after a confirmation; with the queue's size and alert threshold.
//!
//! Reads and actions go through the gateway's `dead_letter` functions, as
//! gRPC and REST do, with the session's caller: listing needs the `read`
//! scope, retry and discard `admin`, and the actor in the `DlqRetried` /
//! `DlqDiscarded` event is the signed-in key (or the operator).

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use clarion_domain::tenant::Scope;
use clarion_domain::TenantId;
use clarion_gateway::dead_letter;
use clarion_gateway::error::ApiError;
use clarion_gateway::pagination::{List, Page, PageParams};
use clarion_proto::api;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use crate::page::{self, PageError};
use crate::session::{self, Session, Submitted};
use crate::{Console, BASE};

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "dead_letters/list.html",
        include_str!("../templates/dead_letters/list.html"),
    ),
    (
        "dead_letters/show.html",
        include_str!("../templates/dead_letters/show.html"),
    ),
    (
        "dead_letters/confirm_bulk.html",
        include_str!("../templates/dead_letters/confirm_bulk.html"),
    ),
    (
        "dead_letters/bulk_done.html",
        include_str!("../templates/dead_letters/bulk_done.html"),
    ),
];

/// Most dead letters one bulk retry takes (the first ones of the filtered
/// set, oldest notifications first); the rest wait for the next one.
pub const MAX_BULK: usize = 1_000;

/// The list's name in cursors (the REST list's: a cursor of one works in
/// the other).
const LIST: &str = "dead-letters";

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/dead-letters", get(list))
        .route(
            "/dead-letters/bulk-retry",
            get(back_to_list).post(confirm_bulk),
        )
        .route("/dead-letters/bulk-retry/confirm", post(bulk_retry))
        .route("/dead-letters/:id", get(show))
        .route("/dead-letters/:id/retry", post(retry))
        .route("/dead-letters/:id/discard", post(discard))
}

/// The list's query, and the bulk forms' filter fields: everything as
/// typed, checked by [`Filters::parse`] (so a bad value is named).
#[derive(Deserialize, Default)]
struct FilterFields {
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    reason: String,
    /// A duration: `30m`, `2h`, `1d` (as `clarion dlq list --older-than`).
    #[serde(default)]
    older_than: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: String,
    /// What the last action did (`discarded`), with its notification `id`.
    #[serde(default)]
    done: String,
    #[serde(default)]
    id: String,
}

/// The checked filters.
#[derive(Serialize, Default, Clone, Debug)]
struct Filters {
    #[serde(skip_serializing_if = "String::is_empty")]
    workflow_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    older_than: String,
    #[serde(skip)]
    older_than_ms: i64,
}

/// Longest filter value (ids and channels are short; a reason fragment too).
const MAX_FILTER_BYTES: usize = 256;

impl Filters {
    fn parse(f: &FilterFields) -> Result<Filters, PageError> {
        for (field, value) in [
            ("workflow_id", &f.workflow_id),
            ("channel", &f.channel),
            ("reason", &f.reason),
        ] {
            if value.len() > MAX_FILTER_BYTES {
                return Err(PageError::bad_request(
                    field,
                    format!("is {} bytes long: at most {MAX_FILTER_BYTES}", value.len()),
                ));
            }
        }
        let older_than = f.older_than.trim().to_string();
        let older_than_ms = if older_than.is_empty() {
            0
        } else {
            clarion_domain::flow::duration::parse_ms(&older_than)
                .map_err(|e| PageError::bad_request("older_than", e))?
                .min(i64::MAX as u64) as i64
        };
        Ok(Filters {
            workflow_id: f.workflow_id.trim().to_string(),
            channel: f.channel.trim().to_string(),
            reason: f.reason.trim().to_string(),
            older_than,
            older_than_ms,
        })
    }

    fn request(&self) -> api::ListDeadLettersRequest {
        api::ListDeadLettersRequest {
            workflow_id: self.workflow_id.clone(),
            channel: self.channel.clone(),
            reason_contains: self.reason.clone(),
            older_than_ms: self.older_than_ms,
            limit: 0,
        }
    }

    /// The filters as a query string (for the pager's links).
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

/// A dead letter as the pages show it.
#[derive(Serialize)]
struct Row {
    notification_id: String,
    /// The id as a path segment.
    href: String,
    workflow_id: String,
    workflow_version: u32,
    subscriber_id: String,
    step: String,
    reason: String,
    dead_lettered_at_ms: i64,
    age: String,
    channels: Vec<String>,
    attempts: Vec<Attempt>,
}

#[derive(Serialize)]
struct Attempt {
    attempt_id: String,
    step: String,
    channel: String,
    provider: String,
    at_ms: i64,
    error: String,
    retryable: bool,
}

impl Row {
    fn of(d: api::DeadLetter, now_ms: i64) -> Row {
        let mut channels: Vec<String> = d.attempts.iter().map(|a| a.channel.clone()).collect();
        channels.dedup();
        Row {
            age: age(now_ms - d.dead_lettered_at_ms),
            channels,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    attempt_id: a.attempt_id,
                    step: a.step,
                    channel: a.channel,
                    provider: a.provider,
                    at_ms: a.at_ms,
                    error: a.error,
                    retryable: a.retryable,
                })
                .collect(),
            href: page::path_segment(&d.notification_id),
            notification_id: d.notification_id,
            workflow_id: d.workflow_id,
            workflow_version: d.workflow_version,
            subscriber_id: d.subscriber_id,
            step: d.step,
            reason: d.reason,
            dead_lettered_at_ms: d.dead_lettered_at_ms,
        }
    }
}

/// A duration for a person: `45s`, `12m`, `3h 5m`, `2d 4h`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m", s / 60),
        3_600..=86_399 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

/// A tenant's dead-letter queue size and alert threshold (0: no alert):
/// the router's per-partition counts, and `dlq.alert-threshold` /
/// `dlq.tenant-thresholds`.
pub async fn queue_size(console: &Console, tenant: &TenantId) -> Result<(u64, u64), PageError> {
    let size = clarion_runtime::router::dlq_size(&*console.gw.store, tenant.as_str()).await?;
    Ok((size, console.dlq_alerts.threshold_for(tenant.as_str())))
}

fn parse_fields(raw: Option<&str>) -> Result<FilterFields, PageError> {
    session::parse_form(raw.unwrap_or_default().as_bytes())
}

async fn list(
    State(console): State<Console>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let fields = parse_fields(raw.as_deref())?;
    let filters = Filters::parse(&fields)?;
    let list = List {
        tenant: caller.tenant.as_str(),
        name: LIST,
    };
    let paging = page_params(&fields)?;
    let page = list.page(&paging)?;
    let (items, next) =
        dead_letter::page(&console.gw, &caller.tenant, &filters.request(), &page).await?;
    let now = console.gw.clock.now_ms();
    let rows: Vec<Row> = items.into_iter().map(|d| Row::of(d, now)).collect();
    let (size, threshold) = queue_size(&console, &caller.tenant).await?;
    let notice = match fields.done.as_str() {
        "discarded" => format!("Discarded {}: it left the queue.", fields.id),
        _ => String::new(),
    };
    page::render(
        &console,
        &session,
        "dead_letters/list.html",
        context! {
            rows,
            filters => Value::from_serialize(&filters),
            query => filters.query(),
            next_cursor => next.map(|p| list.cursor(&p)),
            paged => page.after.is_some(),
            size,
            threshold,
            over => threshold > 0 && size >= threshold,
            notice,
            can_act => session.grant.scopes.contains(Scope::Admin),
            max_bulk => MAX_BULK,
        },
    )
}

/// `limit` and `cursor` as the REST list takes them (a bad one is named).
fn page_params(f: &FilterFields) -> Result<PageParams, PageError> {
    let limit = match f.limit.trim() {
        "" => None,
        l => Some(l.parse::<u32>().map_err(|_| {
            PageError::bad_request(
                "limit",
                format!(
                    "{l:?} is not a number of items (1 to {})",
                    clarion_gateway::pagination::MAX_LIMIT
                ),
            )
        })?),
    };
    Ok(PageParams {
        limit,
        cursor: (!f.cursor.is_empty()).then(|| f.cursor.clone()),
    })
}

async fn show(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let d = dead_letter::show(&console.gw, &caller.tenant, &id).await?;
    let row = Row::of(d, console.gw.clock.now_ms());
    page::render(
        &console,
        &session,
        "dead_letters/show.html",
        context! {
            d => row,
            can_act => session.grant.scopes.contains(Scope::Admin),
        },
    )
}

/// Retry and discard: an optional note for the history.
#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    note: String,
}

/// Longest note (it is kept in the notification's history).
const MAX_NOTE_BYTES: usize = 2_000;

fn action(id: &str, note: &str) -> Result<api::DeadLetterAction, PageError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(PageError::bad_request(
            "note",
            format!("is {} bytes long: at most {MAX_NOTE_BYTES}", note.len()),
        ));
    }
    Ok(api::DeadLetterAction {
        notification_id: id.to_string(),
        note: note.trim().to_string(),
    })
}

async fn retry(
    State(console): State<Console>,
    Path(id): Path<String>,
    Submitted { session, form }: Submitted<ActionForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let action = action(&id, &form.note)?;
    dead_letter::act(&console.gw, &caller.tenant, caller.actor, &action, true).await?;
    Ok(page::see_other(&format!(
        "{BASE}/notifications/{}?done=retried",
        page::path_segment(&id)
    )))
}

async fn discard(
    State(console): State<Console>,
    Path(id): Path<String>,
    Submitted { session, form }: Submitted<ActionForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let action = action(&id, &form.note)?;
    dead_letter::act(&console.gw, &caller.tenant, caller.actor, &action, false).await?;
    Ok(page::see_other(&format!(
        "{BASE}/dead-letters?done=discarded&id={}",
        page::path_segment(&id)
    )))
}

async fn back_to_list(_signed_in: Session) -> Response {
    page::see_other(&format!("{BASE}/dead-letters"))
}

/// The first [`MAX_BULK`] dead letters matching `filters`, and whether
/// more match.
async fn bulk_set(
    console: &Console,
    tenant: &TenantId,
    filters: &Filters,
) -> Result<(Vec<api::DeadLetter>, bool), ApiError> {
    let page = Page {
        limit: MAX_BULK,
        after: None,
    };
    let (items, next) = dead_letter::page(&console.gw, tenant, &filters.request(), &page).await?;
    Ok((items, next.is_some()))
}

/// The list's bulk-retry form: what would be retried, to confirm.
async fn confirm_bulk(
    State(console): State<Console>,
    Submitted { session, form }: Submitted<FilterFields>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let filters = Filters::parse(&form)?;
    let (items, more) = bulk_set(&console, &caller.tenant, &filters).await?;
    let now = console.gw.clock.now_ms();
    let ids = items
        .iter()
        .map(|d| d.notification_id.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let rows: Vec<Row> = items.into_iter().map(|d| Row::of(d, now)).collect();
    page::render(
        &console,
        &session,
        "dead_letters/confirm_bulk.html",
        context! {
            count => rows.len(),
            rows,
            ids,
            more,
            max_bulk => MAX_BULK,
            filters => Value::from_serialize(&filters),
            query => filters.query(),
        },
    )
}

/// The confirmation: the ids it listed (not the filters again, so what is
/// retried is what the person saw), a note, and the filters to go back to.
#[derive(Deserialize)]
struct BulkForm {
    #[serde(default)]
    ids: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    query: String,
}

/// One dead letter a bulk retry could not retry, and why.
#[derive(Serialize)]
struct BulkFailure {
    notification_id: String,
    message: String,
}

async fn bulk_retry(
    State(console): State<Console>,
    Submitted { session, form }: Submitted<BulkForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let ids: Vec<&str> = form.ids.split_whitespace().collect();
    if ids.is_empty() {
        return Err(PageError::bad_request("ids", "there is nothing to retry"));
    }
    if ids.len() > MAX_BULK {
        return Err(PageError::bad_request(
            "ids",
            format!(
                "{} dead letters: one bulk retry takes at most {MAX_BULK}",
                ids.len()
            ),
        ));
    }
    let mut done = 0;
    let mut failed = Vec::new();
    for id in ids {
        let action = action(id, &form.note)?;
        match dead_letter::act(
            &console.gw,
            &caller.tenant,
            caller.actor.clone(),
            &action,
            true,
        )
        .await
        {
            Ok(()) => done += 1,
            Err(e) => failed.push(BulkFailure {
                notification_id: id.to_string(),
                message: failure_message(e),
            }),
        }
    }
    tracing::info!(
        tenant = caller.tenant.as_str(),
        done,
        failed = failed.len(),
        "console bulk retry"
    );
    page::render(
        &console,
        &session,
        "dead_letters/bulk_done.html",
        context! { done, failed, query => safe_query(&form.query) },
    )
}

/// Why one retry of a bulk failed, for a person (no internals).
fn failure_message(e: ApiError) -> String {
    match e {
        ApiError::Internal(detail) => {
            tracing::error!(detail, "console bulk retry: one retry failed");
            "something went wrong on our side; the details are in the server log".into()
        }
        ApiError::Unavailable(detail) => {
            tracing::warn!(detail, "console bulk retry: a backend is unavailable");
            "the service was unavailable: try again".into()
        }
        other => other.to_string(),
    }
}

/// The list's filters carried through the bulk forms, re-encoded (only the
/// filter fields, so the link back cannot be made to say anything else).
fn safe_query(query: &str) -> String {
    parse_fields(Some(query))
        .and_then(|f| Filters::parse(&f))
        .map(|f| f.query())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(q: &str) -> FilterFields {
        parse_fields(Some(q)).unwrap()
    }

    fn field_of(e: PageError) -> String {
        match e {
            PageError::BadRequest { field, .. } => field,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn filters_parse_as_the_cli_takes_them() {
        let f = Filters::parse(&fields(
            "workflow_id=job-sms&channel=sms&reason=21211&older_than=2h&_csrf=x",
        ))
        .unwrap();
        assert_eq!(f.older_than_ms, 7_200_000);
        let r = f.request();
        assert_eq!(
            (
                r.workflow_id.as_str(),
                r.channel.as_str(),
                r.reason_contains.as_str()
            ),
            ("job-sms", "sms", "21211")
        );
        assert_eq!(
            f.query(),
            "workflow_id=job-sms&channel=sms&reason=21211&older_than=2h"
        );
        assert_eq!(Filters::parse(&fields("")).unwrap().older_than_ms, 0);
    }

    #[test]
    fn bad_filters_name_their_field() {
        let e = Filters::parse(&fields("older_than=abc")).unwrap_err();
        assert_eq!(field_of(e), "older_than");
        let long = format!("channel={}", "x".repeat(MAX_FILTER_BYTES + 1));
        assert_eq!(
            field_of(Filters::parse(&fields(&long)).unwrap_err()),
            "channel"
        );
        assert_eq!(
            field_of(page_params(&fields("limit=ten")).unwrap_err()),
            "limit"
        );
        assert_eq!(
            field_of(action("n", &"x".repeat(MAX_NOTE_BYTES + 1)).unwrap_err()),
            "note"
        );
    }

    #[test]
    fn the_link_back_keeps_only_filters() {
        assert_eq!(
            safe_query("channel=sms&next=https://evil.example&cursor=abc"),
            "channel=sms"
        );
        assert_eq!(safe_query("older_than=nope"), "");
    }

    #[test]
    fn ages_read_as_a_person_would_say_them() {
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(12 * 60_000), "12m");
        assert_eq!(age(3 * 3_600_000 + 5 * 60_000), "3h 5m");
        assert_eq!(age(2 * 86_400_000 + 4 * 3_600_000), "2d 4h");
        assert_eq!(age(-5), "0s");
    }
}
