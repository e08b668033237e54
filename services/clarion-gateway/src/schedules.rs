//! Recurring reminders (docs/scheduling.md): what `ScheduleService` and the
//! `/v1/schedules` routes do, whatever the door.
//!
//! A schedule for a list of subscribers is one `ScheduleSet` per subscriber
//! (same schedule id) on the triggers topic under the subscriber's key: the
//! router keeps each subscriber's record (`Table::Schedules`, written only
//! by it) and fires the occurrences. A write returns once the router
//! applied it, so the answer shows the next occurrences.

use std::collections::BTreeSet;

use clarion_domain::error::quote;
use clarion_domain::ids::recipient_key;
use clarion_domain::schedule::{self, CatchUp};
use clarion_domain::subscriber::validate_subscriber_id;
use clarion_domain::time;
use clarion_domain::workflow::validate_id;
use clarion_domain::{Event, Id, Payload, TenantId, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::router::{schedule_key, ROUTER, SCHEDULES_PK};
use clarion_runtime::Topic;
use clarion_store::{Scan, Table};
use prost::Message;

use crate::config_read::cached_workflow_version;
use crate::error::ApiError;
use crate::pagination::{List, Page, PageParams};
use crate::preferences::Who;
use crate::state::GatewayState;

/// Most subscribers of one schedule.
pub const MAX_SUBSCRIBERS: usize = 1000;
/// Next occurrences shown per subscriber by default, and at most.
pub const DEFAULT_UPCOMING: u32 = 5;
pub const MAX_UPCOMING: u32 = 100;
/// Rows read for one page of the list.
const MAX_LIST_ROWS: usize = 10_000;

/// Checks a create request: the events it becomes, one per subscriber.
async fn events_of(
    s: &GatewayState,
    who: &Who,
    req: api::CreateScheduleRequest,
) -> Result<Vec<Event>, ApiError> {
    let now = s.clock.now_ms();
    let mut v = Violations::default();
    let schedule_id = if req.schedule_id.is_empty() {
        format!("sch-{}", Id(rand::random()).to_hex())
    } else {
        req.schedule_id
    };
    check_subscribers(&mut v, &req.subscriber_ids);
    let instant = |v: &mut Violations, field: &str, text: &str, default: i64| {
        if text.is_empty() {
            return default;
        }
        time::parse_instant(text).unwrap_or_else(|e| {
            v.push(field, e);
            default
        })
    };
    let start_at_ms = instant(&mut v, "start_at", &req.start_at, now);
    let end_at_ms = instant(&mut v, "end_at", &req.end_at, 0);
    let payload_json = if req.payload_json.is_empty() {
        "{}".to_string()
    } else {
        req.payload_json
    };
    check_payload(s, &mut v, &payload_json);
    let mut set = pb::ScheduleSet {
        schedule_id,
        subscriber_id: String::new(),
        workflow_id: req.workflow_id,
        rrule: req.rrule,
        cron: req.cron,
        timezone: req.timezone,
        start_at_ms,
        end_at_ms,
        payload_json,
        catch_up: CatchUp::parse(&req.catch_up)
            .map_or(req.catch_up.clone(), |c| c.as_str().to_string()),
        generation: 0,
        origin: Some(who.origin()),
    };
    validate_id(&mut v, "workflow_id", &set.workflow_id);
    // The rule is parsed in the schedule's zone (each subscriber's may
    // differ; the parse does not depend on it).
    let tz = time::zone(&set.timezone).unwrap_or(time::Tz::UTC);
    if let Err(more) = schedule::validate(&set, tz) {
        v.0.extend(more.0);
    }
    if v.0.iter().all(|f| f.field != "workflow_id")
        && cached_workflow_version(s, &who.tenant, &set.workflow_id)
            .await?
            .is_none()
    {
        v.push(
            "workflow_id",
            format!(
                "no workflow {} exists for tenant {:?}",
                quote(&set.workflow_id),
                who.tenant.as_str()
            ),
        );
    }
    v.into_result()?;
    let mut events = Vec::new();
    for sub in req.subscriber_ids {
        set.subscriber_id = sub;
        events.push(to_subscriber(
            s,
            who,
            &set.subscriber_id,
            Payload::ScheduleSet(set.clone()),
        ));
    }
    Ok(events)
}

fn check_subscribers(v: &mut Violations, ids: &[String]) {
    if ids.is_empty() || ids.len() > MAX_SUBSCRIBERS {
        v.push(
            "subscriber_ids",
            format!(
                "must list 1 to {MAX_SUBSCRIBERS} subscribers (has {})",
                ids.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let field = format!("subscriber_ids[{i}]");
        validate_subscriber_id(v, &field, id);
        if !seen.insert(id) {
            v.push(field, format!("{} is listed twice", quote(id)));
        }
    }
}

fn check_payload(s: &GatewayState, v: &mut Violations, json: &str) {
    if json.len() > s.limits.max_payload_bytes {
        v.push(
            "payload_json",
            format!("is larger than {} bytes", s.limits.max_payload_bytes),
        );
        return;
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => v.push("payload_json", "must be a JSON object"),
        Err(e) => v.push("payload_json", format!("is not JSON: {e}")),
    }
}

/// An event on the subscriber's stream.
fn to_subscriber(s: &GatewayState, who: &Who, subscriber: &str, payload: Payload) -> Event {
    Event {
        id: Id(rand::random()),
        tenant: who.tenant.clone(),
        partition_key: recipient_key(&who.tenant, subscriber),
        occurred_at_ms: s.clock.now_ms(),
        causation_id: None,
        correlation_id: None,
        actor: who.actor.clone(),
        payload,
    }
}

/// Appends the events and waits until the router applied each partition's
/// last one (the write is durable either way).
async fn append_and_wait(s: &GatewayState, events: &[Event]) -> Result<(), ApiError> {
    let at = s.append(Topic::Triggers, events).await?;
    let mut last: std::collections::BTreeMap<u32, clarion_log::Appended> = Default::default();
    for a in at {
        let e = last.entry(a.partition).or_insert(a);
        if a.offset > e.offset {
            *e = a;
        }
    }
    for a in last.into_values() {
        s.wait_applied(ROUTER, Topic::Triggers, a).await;
    }
    Ok(())
}

/// Creates (or replaces) a schedule; answers it as the router has it.
pub async fn create(
    s: &GatewayState,
    who: &Who,
    req: api::CreateScheduleRequest,
) -> Result<api::Schedule, ApiError> {
    let events = events_of(s, who, req).await?;
    let id = match &events[0].payload {
        Payload::ScheduleSet(set) => set.schedule_id.clone(),
        _ => unreachable!("create makes ScheduleSet events"),
    };
    append_and_wait(s, &events).await?;
    let mut view = get(s, &who.tenant, &id, DEFAULT_UPCOMING).await?;
    // A subscriber the router has not applied yet (the wait timed out).
    for e in &events {
        if let Payload::ScheduleSet(set) = &e.payload {
            if !view
                .subscribers
                .iter()
                .any(|x| x.subscriber_id == set.subscriber_id)
            {
                view.subscribers.push(api::ScheduleSubscriber {
                    subscriber_id: set.subscriber_id.clone(),
                    state: "pending".into(),
                    ..Default::default()
                });
            }
        }
    }
    Ok(view)
}

/// The rows of one schedule (one per subscriber).
async fn records(
    s: &GatewayState,
    tenant: &TenantId,
    id: &str,
) -> Result<Vec<pb::ScheduleRecord>, ApiError> {
    let mut v = Violations::default();
    validate_id(&mut v, "schedule_id", id);
    v.into_result()?;
    let from = schedule_key(tenant.as_str(), id, "").ck;
    let mut to = id.as_bytes().to_vec();
    to.push(1);
    let scan = Scan::partition(
        Table::Schedules,
        tenant.as_str(),
        SCHEDULES_PK,
        MAX_SUBSCRIBERS + 1,
    )
    .range(
        std::ops::Bound::Included(from),
        std::ops::Bound::Excluded(to),
    );
    let rows = s.store.scan(&scan).await?;
    rows.iter()
        .map(|(_, b)| {
            pb::ScheduleRecord::decode(&b[..])
                .map_err(|e| ApiError::Internal(format!("stored schedule: {e}")))
        })
        .collect()
}

fn not_found(tenant: &TenantId, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no schedule {} for tenant {:?}",
        quote(id),
        tenant.as_str()
    ))
}

/// One schedule with each subscriber's state and next `upcoming` occurrences.
pub async fn get(
    s: &GatewayState,
    tenant: &TenantId,
    id: &str,
    upcoming: u32,
) -> Result<api::Schedule, ApiError> {
    if upcoming > MAX_UPCOMING {
        return Err(Violations::single(
            "upcoming",
            format!("is {upcoming}: at most {MAX_UPCOMING}"),
        )
        .into());
    }
    let recs = records(s, tenant, id).await?;
    if recs.is_empty() {
        return Err(not_found(tenant, id));
    }
    Ok(view(&recs, s.clock.now_ms(), upcoming as usize))
}

/// The API form of a schedule's records.
fn view(recs: &[pb::ScheduleRecord], now_ms: i64, upcoming: usize) -> api::Schedule {
    let set = recs[0].set.clone().unwrap_or_default();
    let utc = |ms: i64| {
        if ms > 0 {
            time::format_instant(ms)
        } else {
            String::new()
        }
    };
    api::Schedule {
        schedule_id: set.schedule_id.clone(),
        workflow_id: set.workflow_id.clone(),
        rrule: set.rrule.clone(),
        cron: set.cron.clone(),
        timezone: set.timezone.clone(),
        start_at: utc(set.start_at_ms),
        end_at: utc(set.end_at_ms),
        payload_json: set.payload_json.clone(),
        catch_up: set.catch_up.clone(),
        subscribers: recs
            .iter()
            .map(|r| subscriber_view(r, now_ms, upcoming))
            .collect(),
    }
}

fn subscriber_view(
    r: &pb::ScheduleRecord,
    now_ms: i64,
    upcoming: usize,
) -> api::ScheduleSubscriber {
    let tz = time::recipient_zone(&[&r.resolved_timezone]);
    let at = |ms: i64| api::ScheduleOccurrence {
        at_ms: ms,
        at: time::format_local(ms, tz),
    };
    let next = if r.next_at_ms > 0 {
        time::format_local(r.next_at_ms, tz)
    } else {
        String::new()
    };
    // The pending occurrence first (it may be due already), then the ones after it.
    let after = if r.next_at_ms > 0 {
        r.next_at_ms
    } else {
        now_ms
    };
    let upcoming = schedule::upcoming(r, after, upcoming)
        .into_iter()
        .map(at)
        .collect();
    api::ScheduleSubscriber {
        subscriber_id: r
            .set
            .as_ref()
            .map(|s| s.subscriber_id.clone())
            .unwrap_or_default(),
        state: r.state.clone(),
        timezone: r.resolved_timezone.clone(),
        next_at_ms: r.next_at_ms,
        next_at: next,
        last_occurrence_at_ms: r.last_occurrence_at_ms,
        last_notification_id: r.last_notification_id.clone(),
        fired: r.fired,
        upcoming,
    }
}

/// A page of the tenant's schedules (by id), with the next page's cursor.
pub async fn list(
    s: &GatewayState,
    tenant: &TenantId,
    params: &PageParams,
) -> Result<(Vec<api::Schedule>, Option<String>), ApiError> {
    let bound = List {
        tenant: tenant.as_str(),
        name: "schedules",
    };
    let Page { limit, after } = bound.page(params)?;
    let from = match after {
        // Past every row of the last schedule given (ids hold no control bytes).
        Some(mut id) => {
            id.push(1);
            std::ops::Bound::Included(id)
        }
        None => std::ops::Bound::Unbounded,
    };
    let scan = Scan::partition(
        Table::Schedules,
        tenant.as_str(),
        SCHEDULES_PK,
        MAX_LIST_ROWS,
    )
    .range(from, std::ops::Bound::Unbounded);
    let rows = s.store.scan(&scan).await?;
    let full = rows.len() >= MAX_LIST_ROWS;
    let mut groups: Vec<Vec<pb::ScheduleRecord>> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (_, b) in rows {
        let r = pb::ScheduleRecord::decode(&b[..])
            .map_err(|e| ApiError::Internal(format!("stored schedule: {e}")))?;
        let id = r
            .set
            .as_ref()
            .map(|x| x.schedule_id.clone())
            .unwrap_or_default();
        if ids.last() != Some(&id) {
            ids.push(id);
            groups.push(Vec::new());
        }
        groups.last_mut().expect("pushed").push(r);
    }
    // A schedule cut by the row bound is left for the next page.
    if full && groups.len() > 1 {
        groups.pop();
        ids.pop();
    }
    let more = groups.len() > limit || full;
    groups.truncate(limit);
    ids.truncate(limit);
    let now = s.clock.now_ms();
    let next =
        (more && !ids.is_empty()).then(|| bound.cursor(ids.last().expect("not empty").as_bytes()));
    Ok((groups.iter().map(|g| view(g, now, 0)).collect(), next))
}

/// Pauses, resumes or deletes a schedule for all its subscribers.
pub async fn change_state(
    s: &GatewayState,
    who: &Who,
    id: &str,
    state: &str,
) -> Result<Option<api::Schedule>, ApiError> {
    let recs = records(s, &who.tenant, id).await?;
    if recs.is_empty() {
        return Err(not_found(&who.tenant, id));
    }
    let events: Vec<Event> = recs
        .iter()
        .filter_map(|r| r.set.as_ref())
        .map(|set| {
            let c = pb::ScheduleStateChanged {
                schedule_id: set.schedule_id.clone(),
                subscriber_id: set.subscriber_id.clone(),
                state: state.to_string(),
                origin: Some(who.origin()),
            };
            to_subscriber(s, who, &set.subscriber_id, Payload::ScheduleStateChanged(c))
        })
        .collect();
    append_and_wait(s, &events).await?;
    if state == schedule::DELETED {
        return Ok(None);
    }
    get(s, &who.tenant, id, DEFAULT_UPCOMING).await.map(Some)
}
