//! The in-app inbox's operations, whatever the door: gRPC (`InboxService`)
//! and REST (with Server-Sent Events) call these, so validation, tenant
//! and subscriber scoping, read-your-writes and the live stream are the
//! same everywhere (docs/inbox.md).
//!
//! Reads come from the rows of the inbox projection
//! (`clarion_runtime::inbox`). A mark is an `InboxItemsMarked` event on the
//! subscriber's key of the deliveries topic; its answer waits until the
//! projection applied it, so the counts it returns include it. A read or an
//! acknowledgement is also engagement for the workflow run that sent the
//! item (`EngagementRecorded` on the subscriber's stream, where the router
//! feeds it to a run waiting for `read`).

use std::time::Duration;

use clarion_domain::ids::recipient_key;
use clarion_domain::subscriber::validate_subscriber_id;
use clarion_domain::{Event, Id, Payload, TenantId, Violations};
use clarion_proto::events as pb;
use clarion_runtime::inbox::rows::{self, Filter, Status};
use clarion_runtime::inbox::{Mark, INBOX_PROJECTOR};
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::pagination::{List, PageParams};
use crate::preferences::Who;
use crate::state::GatewayState;

/// Most item ids one mark names.
pub const MAX_MARK_ITEMS: usize = 1000;
/// Longest item id or category.
const MAX_ID_BYTES: usize = 256;
/// Most engagement facts one "mark all read" reports (the newest unread
/// items'): a run waits on one notification, a feed holds up to 10,000.
pub const MAX_ENGAGEMENT_PER_MARK: usize = 1000;
/// Most items a resuming stream sends at once; a client further behind
/// reloads the list.
pub const MAX_RESUME_ITEMS: usize = 100;
/// How often a stream polls the counts row when no projector in this
/// process wakes it (`clarion run gateway`), and, as a safety net, when one does.
pub const POLL_DETACHED: Duration = Duration::from_millis(250);
pub const POLL_ATTACHED: Duration = Duration::from_secs(5);

/// The names an operation gives the fields it checks: the doors call the
/// subscriber, the page size and the page token differently.
#[derive(Clone, Copy)]
pub struct Fields {
    pub subscriber: &'static str,
    pub limit: &'static str,
    pub cursor: &'static str,
}

pub const GRPC_FIELDS: Fields = Fields {
    subscriber: "subscriber_id",
    limit: "page_size",
    cursor: "page_token",
};
pub const REST_FIELDS: Fields = Fields {
    subscriber: "id",
    limit: "limit",
    cursor: "cursor",
};

fn rename(e: ApiError, from: &str, to: &str) -> ApiError {
    match e {
        ApiError::Invalid(mut v) => {
            for f in &mut v.0 {
                if f.field == from {
                    f.field = to.to_string();
                }
            }
            ApiError::Invalid(v)
        }
        other => other,
    }
}

fn store_error(e: rows::ReadError) -> ApiError {
    match e {
        rows::ReadError::Store(e) => e.into(),
        rows::ReadError::Corrupt(m) => ApiError::Internal(m),
    }
}

/// Checks that `who` may reach subscriber `id`'s feed and that it exists
/// (a stored profile, or a feed written before the profile was).
async fn reach(s: &GatewayState, who: &Who, field: &str, id: &str) -> Result<(), ApiError> {
    who.reach(field, id)?;
    let tenant = who.tenant.as_str();
    let profile = RowKey::new(Table::Subscribers, tenant, id, Vec::new());
    if s.store.get(&profile).await?.is_some()
        || s.store.get(&rows::counts_key(tenant, id)).await?.is_some()
    {
        return Ok(());
    }
    Err(ApiError::NotFound(format!(
        "no subscriber {} for tenant {:?}",
        clarion_domain::error::quote(id),
        tenant
    )))
}

/// What a list asks for, as the doors receive it.
pub struct ListRequest {
    /// `all` (or empty), `unread` or `read`.
    pub status: String,
    pub archived: bool,
    pub category: String,
    pub paging: PageParams,
}

/// A page of a feed, newest first, and the feed's counts.
pub struct ListPage {
    pub items: Vec<pb::InboxItemRecord>,
    pub next_cursor: Option<String>,
    pub counts: pb::InboxCountsRecord,
}

/// A page of subscriber `id`'s feed.
pub async fn list(
    s: &GatewayState,
    who: &Who,
    fields: Fields,
    id: &str,
    req: &ListRequest,
) -> Result<ListPage, ApiError> {
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, fields.subscriber, id);
    let status = Status::parse(&req.status);
    if status.is_none() {
        v.push(
            "status",
            format!(
                "must be all, unread or read, got {}",
                clarion_domain::error::quote(&req.status)
            ),
        );
    }
    if req.category.len() > MAX_ID_BYTES {
        v.push("category", format!("is over {MAX_ID_BYTES} bytes"));
    }
    v.into_result()?;
    reach(s, who, fields.subscriber, id).await?;
    let tenant = who.tenant.as_str();
    let name = format!("inbox/{id}");
    let list = List {
        tenant,
        name: &name,
    };
    let page = list
        .page(&req.paging)
        .map_err(|e| rename(rename(e, "limit", fields.limit), "cursor", fields.cursor))?;
    let filter = Filter {
        status: status.expect("checked"),
        archived: req.archived,
        category: (!req.category.is_empty()).then(|| req.category.clone()),
    };
    // Counts first: the page then holds at least what they count.
    let counts = rows::counts(&*s.store, tenant, id)
        .await
        .map_err(store_error)?;
    let got = rows::list(&*s.store, tenant, id, &filter, page.after, page.limit)
        .await
        .map_err(store_error)?;
    let next_cursor = got
        .more
        .then(|| got.items.last().map(|(ck, _)| list.cursor(ck)))
        .flatten();
    let mut items: Vec<pb::InboxItemRecord> = got.items.into_iter().map(|(_, r)| r).collect();
    for item in &mut items {
        s.open_inbox_item(&who.tenant, id, item).await?;
    }
    Ok(ListPage {
        items,
        next_cursor,
        counts,
    })
}

/// Subscriber `id`'s counts.
pub async fn counts(
    s: &GatewayState,
    who: &Who,
    field: &str,
    id: &str,
) -> Result<pb::InboxCountsRecord, ApiError> {
    reach(s, who, field, id).await?;
    rows::counts(&*s.store, who.tenant.as_str(), id)
        .await
        .map_err(store_error)
}

/// What a mark asks for, as the doors receive it.
pub struct MarkRequest {
    pub item_ids: Vec<String>,
    pub all: bool,
    pub category: String,
    pub mark: String,
}

fn check_mark(r: &MarkRequest) -> Result<Mark, Violations> {
    let mut v = Violations::default();
    let mark = Mark::parse(&r.mark);
    if mark.is_none() {
        v.push(
            "mark",
            format!(
                "must be one of {}, got {}",
                Mark::NAMES,
                clarion_domain::error::quote(&r.mark)
            ),
        );
    }
    match (r.all, r.item_ids.is_empty()) {
        (true, false) => v.push("all", "give item_ids or all, not both"),
        (false, true) => v.push("item_ids", "is required (or set all)"),
        _ => {}
    }
    if !r.category.is_empty() && !r.all {
        v.push("category", "applies to all only: item_ids name their items");
    }
    if r.category.len() > MAX_ID_BYTES {
        v.push("category", format!("is over {MAX_ID_BYTES} bytes"));
    }
    if r.item_ids.len() > MAX_MARK_ITEMS {
        v.push(
            "item_ids",
            format!(
                "names {} items, over the limit of {MAX_MARK_ITEMS}",
                r.item_ids.len()
            ),
        );
    } else {
        for (i, id) in r.item_ids.iter().enumerate() {
            if id.is_empty() || id.len() > MAX_ID_BYTES {
                v.push(
                    format!("item_ids[{i}]"),
                    format!("must be 1 to {MAX_ID_BYTES} bytes"),
                );
            }
        }
    }
    v.into_result()?;
    Ok(mark.expect("checked"))
}

/// The items a mark names, as they are now: each named item must exist;
/// for `all`, only what a read or an acknowledgement needs (the newest
/// unread items, at most [`MAX_ENGAGEMENT_PER_MARK`]).
async fn named_items(
    s: &GatewayState,
    tenant: &str,
    id: &str,
    r: &MarkRequest,
    mark: Mark,
) -> Result<Vec<pb::InboxItemRecord>, ApiError> {
    if !r.all {
        let mut v = Violations::default();
        let mut items = Vec::new();
        for (i, item) in r.item_ids.iter().enumerate() {
            match rows::item(&*s.store, tenant, id, item)
                .await
                .map_err(store_error)?
            {
                Some((_, rec)) => items.push(rec),
                None => v.push(format!("item_ids[{i}]"), "no such item in this feed"),
            }
        }
        v.into_result()?;
        return Ok(items);
    }
    if !matches!(mark, Mark::Read | Mark::Acknowledged) {
        return Ok(Vec::new());
    }
    let filter = Filter {
        status: Status::Unread,
        archived: false,
        category: (!r.category.is_empty()).then(|| r.category.clone()),
    };
    let page = rows::list(
        &*s.store,
        tenant,
        id,
        &filter,
        None,
        MAX_ENGAGEMENT_PER_MARK,
    )
    .await
    .map_err(store_error)?;
    Ok(page.items.into_iter().map(|(_, r)| r).collect())
}

/// What the workflow runs hear of a mark: a read of each unread item, an
/// acknowledgement of each acknowledged one.
fn engagement(
    items: Vec<pb::InboxItemRecord>,
    mark: Mark,
) -> Vec<(pb::InboxItemRecord, &'static str)> {
    let mut out = Vec::new();
    if !matches!(mark, Mark::Read | Mark::Acknowledged) {
        return out;
    }
    for rec in items {
        if rec.notification_id.is_empty() {
            continue;
        }
        if mark == Mark::Acknowledged {
            out.push((rec.clone(), "acknowledged"));
        }
        if rec.read_at_ms == 0 {
            out.push((rec, "read"));
        }
    }
    out
}

/// Marks items of subscriber `id`'s feed; answers the counts once the
/// projection applied the mark (bounded by the gateway's projection wait).
pub async fn mark(
    s: &GatewayState,
    who: &Who,
    field: &str,
    id: &str,
    r: &MarkRequest,
) -> Result<pb::InboxCountsRecord, ApiError> {
    let mark = check_mark(r)?;
    reach(s, who, field, id).await?;
    let tenant = who.tenant.as_str();
    let engaged = engagement(named_items(s, tenant, id, r, mark).await?, mark);
    let key = recipient_key(&who.tenant, id);
    let event = |payload| Event {
        id: Id(rand::random()),
        tenant: who.tenant.clone(),
        partition_key: key.clone(),
        occurred_at_ms: s.clock.now_ms(),
        causation_id: None,
        correlation_id: None,
        actor: who.actor.clone(),
        payload,
    };
    // Engagement first: should the mark then fail, the client's retry
    // reports it again (a repeat is harmless to a run), where the other
    // order could leave a read item whose run never heard of it.
    let facts: Vec<Event> = engaged
        .iter()
        .map(|(rec, kind)| {
            event(Payload::Engaged(pb::EngagementRecorded {
                notification_id: rec.notification_id.clone(),
                attempt_id: rec.item_id.clone(),
                kind: kind.to_string(),
                source: "inbox".into(),
            }))
        })
        .collect();
    if !facts.is_empty() {
        s.append(Topic::Triggers, &facts).await?;
        for (_, kind) in &engaged {
            metrics::counter!("clarion_engagement_total", "kind" => *kind, "source" => "inbox")
                .increment(1);
        }
    }
    let marked = event(Payload::InboxItemsMarked(pb::InboxItemsMarked {
        subscriber_id: id.to_string(),
        item_ids: r.item_ids.clone(),
        all: r.all,
        category: r.category.clone(),
        mark: r.mark.clone(),
        origin: Some(who.origin()),
    }));
    let at = s.append(Topic::Deliveries, &[marked]).await?;
    s.wait_applied(INBOX_PROJECTOR, Topic::Deliveries, at[0])
        .await;
    rows::counts(&*s.store, tenant, id)
        .await
        .map_err(store_error)
}

/// One message of a live stream.
#[derive(Debug, Clone)]
pub enum Update {
    /// An item written since the client's version.
    Item(Box<pb::InboxItemRecord>),
    /// The counts at a version newer than the client's.
    Counts(pb::InboxCountsRecord),
}

/// Opens a live stream of subscriber `id`'s feed. `after`: the version the
/// client has (`None`: a fresh client, which gets the current counts
/// first); the stream first catches up from it (the counts if newer, and
/// the items written since, at most [`MAX_RESUME_ITEMS`]), then follows
/// the feed. Ends when the receiver is dropped.
pub async fn watch(
    s: &GatewayState,
    who: &Who,
    field: &str,
    id: &str,
    after: Option<u64>,
) -> Result<mpsc::Receiver<Update>, ApiError> {
    reach(s, who, field, id).await?;
    let sub = s
        .inbox_hub
        .subscribe(who.tenant.as_str(), id)
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel(2 * MAX_RESUME_ITEMS);
    let (s, tenant, id) = (s.clone(), who.tenant.clone(), id.to_string());
    tokio::spawn(async move {
        if let Err(e) = follow(&s, &tenant, &id, after, sub, &tx).await {
            tracing::warn!(tenant = tenant.as_str(), error = %e, "inbox stream ended");
        }
    });
    Ok(rx)
}

/// Sends what changed since `after`, then waits for the next change: a
/// wake-up from the hub, or the poll interval.
async fn follow(
    s: &GatewayState,
    tenant: &TenantId,
    id: &str,
    after: Option<u64>,
    mut sub: clarion_runtime::inbox::hub::Subscription,
    tx: &mpsc::Sender<Update>,
) -> Result<(), ApiError> {
    let t = tenant.as_str();
    let mut closing = s.inbox_hub.closing();
    let mut fresh = after.is_none();
    let mut last = after.unwrap_or(0);
    let mut first = true;
    loop {
        let counts = rows::counts(&*s.store, t, id).await.map_err(store_error)?;
        // A client ahead of the feed (a version this feed never had) starts
        // afresh rather than wait for the feed to pass it.
        fresh |= first && last > counts.version;
        first = false;
        if counts.version > last || fresh {
            if !fresh {
                let items =
                    rows::written_after(&*s.store, t, id, last, counts.version, MAX_RESUME_ITEMS)
                        .await
                        .map_err(store_error)?;
                for mut item in items {
                    s.open_inbox_item(tenant, id, &mut item).await?;
                    if tx.send(Update::Item(Box::new(item))).await.is_err() {
                        return Ok(());
                    }
                }
            }
            last = counts.version;
            fresh = false;
            if tx.send(Update::Counts(counts)).await.is_err() {
                return Ok(());
            }
        }
        let poll = if s.inbox_hub.attached() {
            POLL_ATTACHED
        } else {
            POLL_DETACHED
        };
        tokio::select! {
            woke = sub.rx.changed() => if woke.is_err() { return Ok(()) },
            _ = tokio::time::sleep(poll) => {}
            _ = tx.closed() => return Ok(()),
            _ = closing.wait_for(|c| *c) => return Ok(()),
        }
    }
}
