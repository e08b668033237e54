//! Notification search: by id, subscriber, workflow, status and time range,
//! for the console's Notifications page and `GET /v1/notifications`.
//!
//! It reads the router's index ([`clarion_runtime::notification_index`]):
//! one row per notification in its tenant's UTC day, newest last. A search
//! by id is one read; by subscriber it walks that subscriber's list
//! ([`clarion_runtime::subscriber_index`]) and reads the index rows of a
//! chunk at a time; otherwise it walks the days from `to` back to `from`,
//! newest first, filtering in memory. The work of one request is bounded
//! ([`MAX_SCANNED`] rows, [`MAX_DAYS`] day partitions): a sparse filter over
//! a busy range answers with what it found, how far back it searched and a
//! cursor to go on, rather than reading millions of rows.

use std::ops::Bound;

use bytes::Bytes;
use clarion_domain::{Event, Id, Payload, Violations};
use clarion_runtime::notification_index::{self, day_of, Entry, Status, DAY_MS};
use clarion_runtime::projector::status_of;
use clarion_runtime::subscriber_index;
use clarion_store::RowKey;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{self, List};
use crate::state::GatewayState;

/// Most index rows one request reads.
pub const MAX_SCANNED: usize = 20_000;
/// Most day partitions one request walks.
pub const MAX_DAYS: usize = 400;
/// The longest time range one search may name.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Most rows read per store call. The first call reads a page and one
/// (all a search without filters needs); each next one twice as many.
const CHUNK: usize = 2_000;

/// The filters as written in a query string or the console's form. Every
/// value is text, and an empty one is no filter (a GET form sends every
/// field), so each is checked here with a message naming it.
#[derive(Debug, Default, Clone, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// Only this subscriber's notifications.
    pub subscriber: Option<String>,
    /// Only this workflow's.
    pub workflow: Option<String>,
    /// Only those whose run has this status: `scheduled`, `running`,
    /// `retrying`, `delivered`, `sent`, `failed`, `completed`,
    /// `dead_lettered`, `discarded`, `cancelled` or `suppressed`.
    pub status: Option<String>,
    /// Created at or after this instant (RFC 3339; default: 366 days before `to`).
    #[param(example = "2026-03-01T00:00:00Z")]
    pub from: Option<String>,
    /// Created at or before this instant (RFC 3339; default: now).
    #[param(example = "2026-03-08T23:59:59Z")]
    pub to: Option<String>,
    /// This notification (32 hex digits).
    pub id: Option<String>,
    /// `next_cursor` of the previous page (the same filters); absent for the first.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
    /// Notifications per page (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// Checked filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    pub subscriber: Option<String>,
    pub workflow: Option<String>,
    pub status: Option<Status>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub id: Option<Id>,
    pub cursor: Option<String>,
    pub limit: usize,
    /// The filters as given (the list a cursor is bound to).
    binding: String,
}

/// One notification found.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Summary {
    pub notification_id: String,
    pub workflow_id: String,
    pub subscriber_id: String,
    /// The run's status (see the `status` filter); `unknown` for a
    /// notification accepted before the index existed.
    pub status: String,
    /// When it was accepted (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// When its status last changed (0: unknown).
    pub updated_at_ms: i64,
}

/// A page of results, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Page {
    pub notifications: Vec<Summary>,
    /// Pass as `cursor` (with the same filters) to go on; absent once the
    /// whole range was searched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Notifications examined by this request (at most 20,000).
    pub scanned: usize,
    /// Whether the search reached `from` (nothing older is left to search).
    pub exhausted_range: bool,
    /// How far back this request searched: created at or after this (ms).
    pub searched_back_to_ms: i64,
}

fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filters {
    /// Checks every filter, naming each one at fault. `now_ms` is the
    /// default `to`.
    pub fn parse(q: &Query, now_ms: i64) -> Result<Filters, Violations> {
        let mut v = Violations::default();
        let mut id_text = |field: &str, value: Option<&str>, max: usize| {
            let value = value?;
            if value.len() > max {
                v.push(field, format!("is longer than {max} bytes"));
                return None;
            }
            Some(value.to_string())
        };
        let subscriber = id_text(
            "subscriber",
            text(&q.subscriber),
            clarion_domain::limits::MAX_SUBSCRIBER_ID_BYTES,
        );
        let workflow = id_text(
            "workflow",
            text(&q.workflow),
            clarion_domain::limits::MAX_ID_BYTES,
        );
        let status = text(&q.status).and_then(|s| {
            let parsed = Status::parse(s);
            if parsed.is_none() {
                let known: Vec<&str> = Status::ALL.iter().map(Status::as_str).collect();
                v.push(
                    "status",
                    format!("{s:?} is not a status: one of {}", known.join(", ")),
                );
            }
            parsed
        });
        let mut instant = |field: &str| {
            let raw = match field {
                "from" => text(&q.from),
                _ => text(&q.to),
            }?;
            clarion_domain::time::parse_instant(raw)
                .map_err(|e| v.push(field, e))
                .ok()
        };
        let (from, to) = (instant("from"), instant("to"));
        let id = text(&q.id).and_then(|s| {
            let parsed = (s.len() == 32).then(|| Id::parse_hex(s)).flatten();
            if parsed.is_none() {
                v.push("id", "is not a notification id (32 hex digits)");
            }
            parsed
        });
        let limit = match text(&q.limit) {
            None => pagination::DEFAULT_LIMIT as usize,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=pagination::MAX_LIMIT).contains(&n) => n as usize,
                _ => {
                    v.push(
                        "limit",
                        format!(
                            "is {s:?}: must be a number from 1 to {}",
                            pagination::MAX_LIMIT
                        ),
                    );
                    0
                }
            },
        };
        let to_ms = to.unwrap_or(now_ms);
        let from_ms = from.unwrap_or(to_ms.saturating_sub(MAX_RANGE_DAYS * DAY_MS));
        if from_ms > to_ms {
            v.push("from", "is after to");
        } else if to_ms - from_ms > MAX_RANGE_DAYS * DAY_MS {
            v.push(
                "from",
                format!("the range is longer than {MAX_RANGE_DAYS} days: narrow it"),
            );
        }
        v.into_result()?;
        let binding = format!(
            "notifications\0{}\0{}\0{}\0{}\0{}\0{}",
            subscriber.as_deref().unwrap_or_default(),
            workflow.as_deref().unwrap_or_default(),
            status.map(|s| s.as_str()).unwrap_or_default(),
            from.map(|t| t.to_string()).unwrap_or_default(),
            to.map(|t| t.to_string()).unwrap_or_default(),
            id.map(|i| i.to_hex()).unwrap_or_default(),
        );
        Ok(Filters {
            subscriber,
            workflow,
            status,
            from_ms,
            to_ms,
            id,
            cursor: text(&q.cursor).map(str::to_string),
            limit,
            binding,
        })
    }

    /// Whether an index entry passes the filters other than the time range.
    fn admits(&self, e: &Entry) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == e.workflow_id)
            && self
                .subscriber
                .as_ref()
                .is_none_or(|s| *s == e.subscriber_id)
            && self.status.is_none_or(|s| s.as_str() == e.status)
    }

    fn in_range(&self, id: &Id) -> bool {
        (self.from_ms..=self.to_ms).contains(&id.time_ms())
    }
}

/// Searches the caller's tenant.
pub async fn search(s: &GatewayState, caller: &Caller, f: &Filters) -> Result<Page, ApiError> {
    let tenant = caller.tenant.as_str();
    let list = List {
        tenant,
        name: &f.binding,
    };
    let after = match &f.cursor {
        None => None,
        Some(c) => Some(position(&list, c)?),
    };
    if let Some(id) = f.id {
        return by_id(s, tenant, f, id).await;
    }
    // Nothing at or after `to` + 1 ms: an id made at `to` sorts below this.
    let upper = time_prefix(f.to_ms.saturating_add(1));
    let start = after.map_or(upper, |a| a.min(upper));
    let walk = match &f.subscriber {
        Some(sub) => by_subscriber(s, tenant, sub, f, start).await?,
        None => by_day(s, tenant, f, start).await?,
    };
    Ok(walk.page(&list, f))
}

/// A cursor's position: the id the next page starts below.
fn position(list: &List<'_>, cursor: &str) -> Result<Id, ApiError> {
    let page = list.page(&pagination::PageParams {
        limit: None,
        cursor: Some(cursor.to_string()),
    })?;
    page.after
        .as_deref()
        .and_then(Id::from_slice)
        .ok_or_else(|| Violations::single("cursor", "is not a cursor this search gave").into())
}

/// The lowest id made at `ms`: every id made at or after it sorts at or
/// above it, every id made before it below (ids lead with their time).
fn time_prefix(ms: i64) -> Id {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&(ms.max(0) as u64).to_be_bytes()[2..]);
    Id(b)
}

/// What a walk found.
struct Walk {
    /// Up to `limit + 1` matches, newest first.
    found: Vec<Summary>,
    /// The exclusive upper bound of what is left to search.
    left_below: Id,
    scanned: usize,
    exhausted: bool,
    /// Rows the next store call reads.
    chunk: usize,
}

impl Walk {
    fn new(start: Id, f: &Filters) -> Walk {
        Walk {
            found: Vec::new(),
            left_below: start,
            scanned: 0,
            exhausted: false,
            chunk: f.limit + 1,
        }
    }

    /// Rows to read next (within the budget), growing call by call.
    fn next_chunk(&mut self) -> usize {
        let want = self.chunk.min(MAX_SCANNED - self.scanned);
        self.chunk = (self.chunk * 2).min(CHUNK);
        want
    }

    fn full(&self, f: &Filters) -> bool {
        self.found.len() > f.limit
    }

    fn over_budget(&self) -> bool {
        self.scanned >= MAX_SCANNED
    }

    fn page(mut self, list: &List<'_>, f: &Filters) -> Page {
        let back_to = if self.exhausted {
            f.from_ms
        } else {
            self.left_below.time_ms().max(f.from_ms)
        };
        let next = if self.full(f) {
            // One more than a page was found: go on below the last one given.
            self.found.truncate(f.limit);
            self.found
                .last()
                .and_then(|s| Id::parse_hex(&s.notification_id))
        } else if self.exhausted {
            None
        } else {
            Some(self.left_below)
        };
        Page {
            notifications: self.found,
            next_cursor: next.map(|id| list.cursor(&id.0)),
            scanned: self.scanned,
            exhausted_range: self.exhausted && next.is_none(),
            searched_back_to_ms: back_to,
        }
    }
}

/// Walks the tenant's days newest first from `start` (exclusive) down to `from`.
async fn by_day(s: &GatewayState, tenant: &str, f: &Filters, start: Id) -> Result<Walk, ApiError> {
    let mut w = Walk::new(start, f);
    let from_day = day_of(f.from_ms);
    let lowest = time_prefix(f.from_ms);
    let mut day = day_of(start.time_ms());
    let mut days = 0;
    while !w.full(f) {
        if day < from_day {
            w.exhausted = true;
            break;
        }
        if days >= MAX_DAYS || w.over_budget() {
            break;
        }
        let want = w.next_chunk();
        let below = w.left_below;
        let upper = if day_of(below.time_ms()) == day {
            Bound::Excluded(below.0.to_vec())
        } else {
            Bound::Unbounded
        };
        let scan = notification_index::day_newest_first(tenant, day, want)
            .range(Bound::Included(lowest.0.to_vec()), upper);
        let rows = s.store.scan(&scan).await?;
        w.scanned += rows.len();
        let exhausted_day = rows.len() < want;
        for (ck, value) in rows {
            let Some(id) = Id::from_slice(&ck) else {
                continue;
            };
            w.left_below = id;
            if let Some(entry) = Entry::decode(&value).filter(|e| f.admits(e)) {
                w.found.push(summary(id, entry));
                if w.full(f) {
                    break;
                }
            }
        }
        if exhausted_day && !w.full(f) {
            // Everything of `day` is behind: go on at the end of the day before.
            w.left_below = time_prefix(day * DAY_MS);
            day -= 1;
            days += 1;
        }
    }
    Ok(w)
}

/// Walks one subscriber's notifications newest first from `start`
/// (exclusive) down to `from`, reading their index rows a chunk at a time.
async fn by_subscriber(
    s: &GatewayState,
    tenant: &str,
    subscriber: &str,
    f: &Filters,
    start: Id,
) -> Result<Walk, ApiError> {
    let mut w = Walk::new(start, f);
    let lowest = time_prefix(f.from_ms).to_hex().into_bytes();
    while !w.full(f) && !w.over_budget() {
        let want = w.next_chunk();
        let scan = subscriber_index::newest_first(tenant, subscriber, want).range(
            Bound::Included(lowest.clone()),
            Bound::Excluded(w.left_below.to_hex().into_bytes()),
        );
        let rows = s.store.scan(&scan).await?;
        w.scanned += rows.len();
        let exhausted = rows.len() < want;
        let listed: Vec<(Id, Bytes)> = rows
            .into_iter()
            .filter_map(|(ck, v)| {
                let id = std::str::from_utf8(&ck).ok().and_then(Id::parse_hex)?;
                Some((id, v))
            })
            .collect();
        let keys: Vec<RowKey> = listed
            .iter()
            .filter_map(|(id, _)| notification_index::row(tenant, &id.to_hex()))
            .collect();
        let entries = s.store.get_many(&keys).await?;
        for ((id, value), entry) in listed.into_iter().zip(entries) {
            w.left_below = id;
            let entry = entry
                .and_then(|b| Entry::decode(&b))
                .unwrap_or_else(|| unindexed(subscriber, &value));
            if f.admits(&entry) {
                w.found.push(summary(id, entry));
                if w.full(f) {
                    break;
                }
            }
        }
        if exhausted && !w.full(f) {
            w.exhausted = true;
            break;
        }
    }
    Ok(w)
}

/// The entry of a notification listed under its subscriber but accepted
/// before the index existed: its status is unknown.
fn unindexed(subscriber: &str, listed: &Bytes) -> Entry {
    Entry {
        workflow_id: subscriber_index::Entry::decode(listed)
            .map(|e| e.workflow_id)
            .unwrap_or_default(),
        subscriber_id: subscriber.to_string(),
        status: "unknown".into(),
        updated_at_ms: 0,
    }
}

/// One notification by id: its index row, else (accepted before the
/// index existed) its history.
async fn by_id(s: &GatewayState, tenant: &str, f: &Filters, id: Id) -> Result<Page, ApiError> {
    let hex = id.to_hex();
    let key = notification_index::row(tenant, &hex).expect("a parsed id is hex");
    let entry = match s.store.get(&key).await? {
        Some(b) => Entry::decode(&b),
        None => match crate::notification::history_in(s, tenant, &hex).await {
            Ok(events) => Some(entry_of_history(&events)),
            Err(ApiError::NotFound(_)) => None,
            Err(e) => return Err(e),
        },
    };
    let found = entry
        .filter(|e| f.admits(e) && f.in_range(&id))
        .map(|e| summary(id, e));
    Ok(Page {
        notifications: found.into_iter().collect(),
        next_cursor: None,
        scanned: 1,
        exhausted_range: true,
        searched_back_to_ms: f.from_ms,
    })
}

/// An index entry made from a history (its status as the history says).
fn entry_of_history(events: &[Event]) -> Entry {
    let t = events.iter().find_map(|e| match &e.payload {
        Payload::Triggered(t) => Some(t),
        _ => None,
    });
    Entry {
        workflow_id: t.map(|t| t.workflow_id.clone()).unwrap_or_default(),
        subscriber_id: t.map(|t| t.subscriber_id.clone()).unwrap_or_default(),
        status: status_of(events).to_string(),
        updated_at_ms: events.last().map_or(0, |e| e.occurred_at_ms),
    }
}

fn summary(id: Id, e: Entry) -> Summary {
    Summary {
        notification_id: id.to_hex(),
        workflow_id: e.workflow_id,
        subscriber_id: e.subscriber_id,
        status: e.status,
        created_at_ms: id.time_ms(),
        updated_at_ms: e.updated_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        let text = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        serde_urlencoded::from_str(&text).expect("a query")
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<String> {
        match Filters::parse(&q(pairs), NOW) {
            Ok(f) => panic!("accepted: {f:?}"),
            Err(v) => v.0.into_iter().map(|f| f.field).collect(),
        }
    }

    const NOW: i64 = 1_772_000_000_000;

    #[test]
    fn empty_values_are_no_filter_and_defaults_apply() {
        let f = Filters::parse(
            &q(&[
                ("subscriber", ""),
                ("status", ""),
                ("from", ""),
                ("limit", ""),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!((f.subscriber, f.status, f.limit), (None, None, 50));
        assert_eq!(f.to_ms, NOW);
        assert_eq!(f.from_ms, NOW - MAX_RANGE_DAYS * DAY_MS);
        let f = Filters::parse(
            &q(&[
                ("status", "dead_lettered"),
                ("from", "2026-02-01T00:00:00Z"),
                ("to", "2026-02-02T00:00:00%2B01:00"),
                ("id", "0193AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("limit", "200"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(f.status, Some(Status::DeadLettered));
        assert_eq!(f.to_ms - f.from_ms, DAY_MS - 3_600_000);
        assert!(f.id.is_some());
    }

    #[test]
    fn bad_filters_name_their_field() {
        assert_eq!(fields(&[("status", "lost")]), ["status"]);
        assert_eq!(fields(&[("from", "yesterday")]), ["from"]);
        assert_eq!(fields(&[("to", "2026-13-01T00:00:00Z")]), ["to"]);
        assert_eq!(fields(&[("id", "xyz")]), ["id"]);
        assert_eq!(
            fields(&[("id", "0193aaaaaaaaaaaaaaaaaaaaaaaaaaaaff")]),
            ["id"]
        );
        assert_eq!(fields(&[("limit", "0")]), ["limit"]);
        assert_eq!(fields(&[("limit", "99999999999999999999")]), ["limit"]);
        assert_eq!(fields(&[("subscriber", &"s".repeat(200))]), ["subscriber"]);
        assert_eq!(
            fields(&[
                ("from", "2026-02-02T00:00:00Z"),
                ("to", "2026-02-01T00:00:00Z")
            ]),
            ["from"]
        );
        assert_eq!(
            fields(&[
                ("from", "2024-01-01T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z")
            ]),
            ["from"]
        );
        // Several at once, each named.
        assert_eq!(
            fields(&[("status", "x"), ("limit", "-1"), ("id", "1")]),
            ["status", "id", "limit"]
        );
        assert!(serde_urlencoded::from_str::<Query>("page=2").is_err());
    }

    #[test]
    fn time_prefixes_bound_the_ids_of_their_instant() {
        let at = 1_772_000_000_123;
        let id = Id::time_ordered(at, &[b"x"]);
        assert!(time_prefix(at) <= id && id < time_prefix(at + 1));
        assert_eq!(time_prefix(at).time_ms(), at);
    }
}
