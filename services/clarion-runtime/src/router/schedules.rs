//! Recurring reminders on the subscriber's stream (`clarion_domain::schedule`
//! decides): a `ScheduleSet` or `ScheduleStateChanged` rewrites the
//! schedule's row for the subscriber and sets the timer of its next
//! occurrence; the timer appends `ScheduleDue` (a fixed id) to the same
//! stream, and at it the router emits `ScheduleOccurred` and the
//! occurrence's `NotificationTriggered` (a fixed notification id), which
//! comes back to the router as any trigger does. A stale timer (the
//! schedule paused, deleted or redefined since) changes nothing; a repeated
//! one finds the occurrence fired (the record moved on).

use bytes::Bytes;
use clarion_domain::ids::recipient_key;
use clarion_domain::schedule::{self, Due};
use clarion_domain::{Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_store::{Op, RowKey, Scan, Store, Table};
use prost::Message;

use super::{actor, Router};
use crate::processor::{Batch, Emit, ProcessError};
use crate::topics::Topic;

/// Partition of the schedules table holding a tenant's schedules.
pub const SCHEDULES_PK: &str = "schedules";

/// A schedule's row for one subscriber (ck: schedule id, 0x00, subscriber).
pub fn schedule_key(tenant: &str, schedule_id: &str, subscriber: &str) -> RowKey {
    let mut ck = Vec::with_capacity(schedule_id.len() + 1 + subscriber.len());
    ck.extend_from_slice(schedule_id.as_bytes());
    ck.push(0);
    ck.extend_from_slice(subscriber.as_bytes());
    RowKey::new(Table::Schedules, tenant, SCHEDULES_PK, ck)
}

impl Router {
    /// One schedule event (any other payload is ignored).
    pub(super) async fn on_schedule_event(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
    ) -> Result<(), ProcessError> {
        match &e.payload {
            Payload::ScheduleSet(s) => self.on_schedule_set(store, batch, e, s).await,
            Payload::ScheduleStateChanged(c) => {
                let key = schedule_key(e.tenant.as_str(), &c.schedule_id, &c.subscriber_id);
                let Some(rec) = load_record(store, batch, &key).await? else {
                    return Ok(()); // nothing to pause, resume or delete
                };
                match schedule::change_state(&rec, &c.state, batch.now_ms) {
                    Some(rec) => keep(batch, e, key, &rec),
                    None => {
                        batch.writes.delete(key);
                    }
                }
                Ok(())
            }
            Payload::ScheduleDue(d) => on_due(store, batch, e, d).await,
            _ => Ok(()),
        }
    }

    /// A schedule created or replaced: read in the schedule's zone, else the
    /// subscriber's, else the tenant's default.
    async fn on_schedule_set(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        s: &pb::ScheduleSet,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        let subscriber_tz = self
            .subscriber(store, tenant, &s.subscriber_id)
            .await?
            .map(|p| p.timezone)
            .unwrap_or_default();
        let tenant_tz = crate::tenant_settings::calendar(store, tenant)
            .await?
            .map(|c| c.default_timezone)
            .unwrap_or_default();
        let tz = schedule::zone_for(s, &subscriber_tz, &tenant_tz);
        let key = schedule_key(tenant, &s.schedule_id, &s.subscriber_id);
        let prev = load_record(store, batch, &key).await?;
        let rec = schedule::set(prev.as_ref(), s, tz, batch.now_ms);
        keep(batch, e, key, &rec);
        Ok(())
    }
}

/// A due occurrence: fires it (or, after downtime, what the catch-up policy
/// says), and sets the timer of the next one.
async fn on_due(
    store: &dyn Store,
    batch: &mut Batch,
    e: &Event,
    d: &pb::ScheduleDue,
) -> Result<(), ProcessError> {
    let tenant = e.tenant.as_str();
    let key = schedule_key(tenant, &d.schedule_id, &d.subscriber_id);
    let prev = load_record(store, batch, &key).await?;
    let (occurrence, late_by_ms, missed, rec) =
        match schedule::on_due(prev.as_ref(), d, batch.now_ms) {
            Due::Stale(why) => {
                tracing::debug!(
                    tenant,
                    schedule = d.schedule_id.as_str(),
                    subscriber = d.subscriber_id.as_str(),
                    why,
                    "schedule timer is stale"
                );
                return Ok(());
            }
            Due::Fire {
                occurrence_at_ms,
                late_by_ms,
                missed,
                record,
            } => (occurrence_at_ms, late_by_ms, missed, *record),
        };
    let set = rec.set.clone().unwrap_or_default();
    let nid = occurrence
        .map(|at| schedule::notification_id(tenant, &set.schedule_id, &set.subscriber_id, at));
    let occurred = pb::ScheduleOccurred {
        schedule_id: set.schedule_id.clone(),
        subscriber_id: set.subscriber_id.clone(),
        occurrence_at_ms: occurrence.unwrap_or(d.occurrence_at_ms),
        notification_id: nid.map(|n| n.to_hex()).unwrap_or_default(),
        late_by_ms,
        missed,
        next_at_ms: rec.next_at_ms,
    };
    let ev = e.caused(
        0,
        batch.now_ms,
        actor(),
        Payload::ScheduleOccurred(occurred),
    );
    batch.emit(Topic::Triggers, ev);
    if let (Some(nid), Some(at)) = (nid, occurrence) {
        let (version, personal) = latest_workflow_version(store, tenant, &set.workflow_id).await?;
        let mut ev = triggered(e, batch.now_ms, &set, nid, at, version);
        if let Payload::Triggered(t) = &mut ev.payload {
            // Sealed by the runner on emit, like a trigger at the gateway.
            t.personal_paths = personal;
        }
        batch.emit(Topic::Triggers, ev);
    }
    let mut rec = rec;
    rec.last_notification_id = nid.map(|n| n.to_hex()).unwrap_or(rec.last_notification_id);
    keep(batch, e, key, &rec);
    Ok(())
}

/// The trigger of an occurrence: like an API trigger of the workflow's
/// latest version for the subscriber, with the schedule's payload.
fn triggered(
    cause: &Event,
    now_ms: i64,
    set: &pb::ScheduleSet,
    nid: Id,
    occurrence_at_ms: i64,
    workflow_version: u32,
) -> Event {
    let payload_json = if set.payload_json.is_empty() {
        "{}".to_string()
    } else {
        set.payload_json.clone()
    };
    Event {
        id: nid.child("triggered", 0),
        tenant: cause.tenant.clone(),
        partition_key: recipient_key(&cause.tenant, &set.subscriber_id),
        occurred_at_ms: now_ms,
        causation_id: Some(cause.id),
        correlation_id: Some(nid),
        actor: actor(),
        payload: Payload::Triggered(pb::NotificationTriggered {
            notification_id: nid.to_hex(),
            workflow_id: set.workflow_id.clone(),
            subscriber_id: set.subscriber_id.clone(),
            payload_json,
            workflow_version,
            schedule_id: set.schedule_id.clone(),
            occurrence_at_ms,
            ..Default::default()
        }),
    }
}

/// The latest published version of a workflow (0: none; the run then ends
/// as an unknown version, visibly) and the payload paths it marks personal.
async fn latest_workflow_version(
    store: &dyn Store,
    tenant: &str,
    workflow_id: &str,
) -> Result<(u32, Vec<String>), ProcessError> {
    let rows = store
        .scan(&Scan::partition(Table::Workflows, tenant, workflow_id, 1).reversed())
        .await?;
    let Some((ck, value)) = rows.first() else {
        return Ok((0, Vec::new()));
    };
    let version = <[u8; 4]>::try_from(&ck[..]).map_or(0, u32::from_be_bytes);
    let personal = match Event::decode(value) {
        Ok(Event {
            payload: Payload::WorkflowPublished(p),
            ..
        }) => p.personal,
        _ => Vec::new(),
    };
    Ok((version, personal))
}

/// Writes the record and, when it waits for an occurrence, sets its timer.
fn keep(batch: &mut Batch, cause: &Event, key: RowKey, rec: &pb::ScheduleRecord) {
    // A delete and a put of one row in one commit: only the put (stores
    // that order a batch by timestamp let a delete win).
    batch
        .writes
        .ops
        .retain(|op| !matches!(op, Op::Delete { key: k } if *k == key));
    batch.writes.put(key, Bytes::from(rec.encode_to_vec()));
    let Some(set) = rec.set.as_ref() else { return };
    if rec.state != schedule::ACTIVE || rec.next_at_ms <= 0 {
        return;
    }
    let tenant = cause.tenant.as_str();
    let due = pb::ScheduleDue {
        schedule_id: set.schedule_id.clone(),
        subscriber_id: set.subscriber_id.clone(),
        generation: set.generation,
        occurrence_at_ms: rec.next_at_ms,
    };
    let event = Event {
        id: schedule::due_event_id(
            tenant,
            &set.schedule_id,
            &set.subscriber_id,
            set.generation,
            rec.next_at_ms,
        ),
        tenant: cause.tenant.clone(),
        partition_key: recipient_key(&cause.tenant, &set.subscriber_id),
        occurred_at_ms: rec.next_at_ms,
        causation_id: Some(cause.id),
        correlation_id: cause.correlation_id,
        actor: actor(),
        payload: Payload::ScheduleDue(due),
    };
    let emit = Emit {
        topic: Topic::Triggers,
        event,
    };
    batch.timers.push((rec.next_at_ms, emit));
}

/// A schedule's record as it will be when the batch commits (this batch's
/// writes, else the store).
async fn load_record(
    store: &dyn Store,
    batch: &Batch,
    key: &RowKey,
) -> Result<Option<pb::ScheduleRecord>, ProcessError> {
    let pending = batch.writes.ops.iter().rev().find_map(|op| match op {
        Op::Put { key: k, value, .. } if k == key => Some(Some(value.clone())),
        Op::Delete { key: k } if k == key => Some(None),
        _ => None,
    });
    let row = match pending {
        Some(row) => row,
        None => store.get(key).await?,
    };
    Ok(row.and_then(|b| pb::ScheduleRecord::decode(&b[..]).ok()))
}
