//! The projector: builds the read models the APIs serve from the log.
//!
//! Every write is a put keyed by something the event fixes (its id, the
//! template version, ...), so applying an event twice changes nothing and the
//! projector needs no dedup table. Notification status is not stored as a
//! mutable row (several topics' projectors would race on it); it is derived on
//! read from the notification's history, see [`status_of`].

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::{Event, Payload};
use clarion_log::EventLog;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};
use prost::Message;

use crate::processor::{Batch, Input, ProcessError, Processor};
use crate::topics::{Topic, Topics};

pub const PROJECTOR: &str = "projector";

/// Builds the read models. Notification history rows are written only
/// when the log keeps no index of its own ([`EventLog::read_indexed`]):
/// the embedded log finds a notification's events by their
/// [`history_index`], and its projector does not read the recipient
/// topics at all.
#[derive(Default)]
pub struct Projector;

/// The secondary key under which a log that keeps an index finds every
/// event of one notification: the tenant, a 0 byte, then the notification
/// id's 16 bytes (ids are time-ordered, so appends land at the right edge
/// of the index). An id that is not hex, which Clarion never makes, is
/// kept as text after a 1 byte.
pub fn history_index(tenant: &str, notification_id: &str) -> Bytes {
    let mut k = Vec::with_capacity(tenant.len() + 17);
    k.extend_from_slice(tenant.as_bytes());
    match clarion_domain::Id::parse_hex(notification_id) {
        Some(id) => {
            k.push(0);
            k.extend_from_slice(&id.0);
        }
        None => {
            k.push(1);
            k.extend_from_slice(notification_id.as_bytes());
        }
    }
    Bytes::from(k)
}

/// The [`history_index`] of a notification's event; `None` for other
/// events (configuration, subscribers).
pub fn event_history_index(e: &Event) -> Option<Bytes> {
    e.payload
        .notification_id()
        .map(|nid| history_index(e.tenant.as_str(), nid))
}

/// Where a history row's event is in the log: the value of the history
/// rows that releases before the log's index wrote on the embedded default
/// (still read, see [`history`]). 14 bytes, where the event
/// itself is about 330: history was nearly half of the bytes the embedded
/// default wrote per notification (docs/benchmarks.md). Its first byte is 0,
/// which no encoded event starts with (protobuf field numbers start at 1),
/// so a reader tells the two kinds of row apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRef {
    pub topic: Topic,
    pub partition: u32,
    pub offset: u64,
}

impl HistoryRef {
    const LEN: usize = 14;

    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(Self::LEN);
        b.push(0);
        b.push(self.topic.code());
        b.extend_from_slice(&self.partition.to_be_bytes());
        b.extend_from_slice(&self.offset.to_be_bytes());
        Bytes::from(b)
    }

    /// `None` if `value` is not a reference (an event's own bytes).
    pub fn decode(value: &[u8]) -> Option<HistoryRef> {
        if value.len() != Self::LEN || value[0] != 0 {
            return None;
        }
        Some(HistoryRef {
            topic: Topic::from_code(value[1])?,
            partition: u32::from_be_bytes(value[2..6].try_into().ok()?),
            offset: u64::from_be_bytes(value[6..14].try_into().ok()?),
        })
    }
}

/// The event a history row holds or points at.
pub async fn history_event(
    log: &dyn EventLog,
    topics: &Topics,
    value: &Bytes,
) -> Result<Event, ProcessError> {
    let poison = |reason: String| ProcessError::Poison { offset: 0, reason };
    let bytes = match HistoryRef::decode(value) {
        None => value.clone(),
        Some(r) => {
            log.read(&topics.name(r.topic), r.partition, r.offset, 1)
                .await?
                .into_iter()
                .find(|rec| rec.offset == r.offset)
                .ok_or_else(|| poison(format!("history points at a missing record: {r:?}")))?
                .value
        }
    };
    Event::decode_bytes(bytes).map_err(|e| poison(e.to_string()))
}

/// Partition (in the tenants table) of a tenant's limit versions. Tenant
/// ids cannot contain `/`, so it never meets a tenant record.
pub const TENANT_LIMITS_PK: &str = "limits/";

/// Partitions (in the API keys table) listing a tenant's keys by key id:
/// their creation events, and the revocations. Hash partitions are 64 hex
/// digits, so neither meets one.
pub const API_KEY_INDEX_PK: &str = "index/";
pub const API_KEY_REVOKED_PK: &str = "revoked/";
/// Partition of the keys' last-used times (written by the gateways, at most
/// once a minute per key and gateway; not derived from events).
pub const API_KEY_LAST_USED_PK: &str = "last-used/";

/// A row of one of the key-id partitions above.
pub fn api_key_index(tenant: &str, pk: &str, key_id: &str) -> RowKey {
    RowKey::new(Table::ApiKeys, tenant, pk, key_id.as_bytes().to_vec())
}
/// Partition (in the tenants table) of a tenant's latest webhook secret
/// rotation (`clarion_dispatch::tenant_secrets` reads it).
pub const WEBHOOK_SECRET_PK: &str = "webhook-secret/";

/// Clustering key of a template or workflow version: big-endian, so a reverse
/// scan finds the latest first.
pub fn version_ck(version: u32) -> Vec<u8> {
    version.to_be_bytes().to_vec()
}

#[async_trait]
impl Processor for Projector {
    fn name(&self) -> &'static str {
        PROJECTOR
    }

    fn dedup(&self) -> bool {
        false
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut latest = LatestVersions::default();
        for input in inputs {
            let tenant = input.event.tenant.as_str();
            match &input.event.payload {
                Payload::TopicRegistered(t) => {
                    let key = topic_key(tenant, &t.topic_id);
                    let bytes = Bytes::from(t.encode_to_vec());
                    latest
                        .keep(store, batch, key, t.version, bytes, |b| {
                            pb::TopicRegistered::decode(b).ok().map(|s| s.version)
                        })
                        .await?
                }
                Payload::AppConfigured(a) => {
                    let key = app_key(tenant, &a.app_id);
                    let bytes = Bytes::from(a.encode_to_vec());
                    latest
                        .keep(store, batch, key, a.version, bytes, |b| {
                            pb::AppConfigured::decode(b).ok().map(|s| s.version)
                        })
                        .await?
                }
                // Issue #33: the tenant's calendar and default quiet hours.
                Payload::TenantCalendarSet(_) | Payload::QuietHoursSet(_) => {
                    crate::tenant_settings::project(batch, &input.event, &input.raw)
                }
                // Issue #31: tenant providers and SLAs.
                _ if crate::provider_rows::project(&mut batch.writes, &input.event, &input.raw) => {
                }
                _ => project(batch, &input.event, &input.raw),
            }
        }
        Ok(())
    }
}

/// Partition (in the topics table) of a tenant's topics, by topic id.
pub const TOPICS_PK: &str = "topics";

/// The row of a tenant's topic: its latest `TopicRegistered`, prost-encoded
/// (not the envelope).
pub fn topic_key(tenant: &str, topic_id: &str) -> RowKey {
    RowKey::new(
        Table::Topics,
        tenant,
        TOPICS_PK,
        topic_id.as_bytes().to_vec(),
    )
}

/// Partition (in the apps table) of a tenant's apps, by app id.
pub const APPS_PK: &str = "apps";

/// The row of a tenant's app: its latest `AppConfigured`, prost-encoded
/// (not the envelope), as topics.
pub fn app_key(tenant: &str, app_id: &str) -> RowKey {
    RowKey::new(Table::Apps, tenant, APPS_PK, app_id.as_bytes().to_vec())
}

/// The versions of versioned configuration rows (topics, apps) a batch
/// wrote: a later event of the same row in the batch compares with them,
/// since the store has them only after the commit.
#[derive(Default)]
struct LatestVersions(std::collections::HashMap<RowKey, u32>);

impl LatestVersions {
    /// Keeps a row at its latest version: an event older than the stored
    /// one (a replay, or events out of order) never rolls it back. The same
    /// version is written again (a repeat changes nothing). `version_of`
    /// reads the version of a stored row.
    async fn keep(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        key: RowKey,
        version: u32,
        bytes: Bytes,
        version_of: fn(&[u8]) -> Option<u32>,
    ) -> Result<(), ProcessError> {
        let stored = match self.0.get(&key) {
            Some(v) => Some(*v),
            None => store.get(&key).await?.and_then(|b| version_of(&b)),
        };
        if stored.is_some_and(|v| version < v) {
            return Ok(());
        }
        batch.writes.put(key.clone(), bytes);
        self.0.insert(key, version);
        Ok(())
    }
}

/// Records `e` (whose log bytes are `raw`) in the read models.
fn project(batch: &mut Batch, e: &Event, raw: &Bytes) {
    let tenant = e.tenant.as_str();
    let bytes = || raw.clone();
    let w = &mut batch.writes;
    match &e.payload {
        Payload::TenantCreated(t) => {
            w.put(
                RowKey::new(Table::Tenants, tenant, &t.tenant_id, Vec::new()),
                bytes(),
            );
        }
        Payload::ApiKeyCreated(k) => {
            w.put(
                RowKey::new(Table::ApiKeys, tenant, &k.secret_sha256, Vec::new()),
                bytes(),
            );
            w.put(api_key_index(tenant, API_KEY_INDEX_PK, &k.key_id), bytes());
        }
        Payload::ApiKeyRevoked(k) => {
            // The gateway finds keys by hash only: without the row, the key
            // is unknown (and answered like any invalid key).
            w.delete(RowKey::new(
                Table::ApiKeys,
                tenant,
                &k.secret_sha256,
                Vec::new(),
            ));
            w.put(
                api_key_index(tenant, API_KEY_REVOKED_PK, &k.key_id),
                bytes(),
            );
        }
        Payload::TemplatePublished(t) => {
            w.put(
                RowKey::new(
                    Table::Templates,
                    tenant,
                    &t.template_id,
                    version_ck(t.version),
                ),
                bytes(),
            );
        }
        Payload::TenantLimitsSet(l) => {
            w.put(
                RowKey::new(
                    Table::Tenants,
                    tenant,
                    TENANT_LIMITS_PK,
                    version_ck(l.version),
                ),
                bytes(),
            );
        }
        Payload::WorkflowPublished(wf) => {
            w.put(
                RowKey::new(
                    Table::Workflows,
                    tenant,
                    &wf.workflow_id,
                    version_ck(wf.version),
                ),
                bytes(),
            );
            // Config is one partition per tenant, applied in order: the last
            // write is the latest version.
            let id = wf.workflow_id.as_bytes().to_vec();
            w.put(
                RowKey::new(Table::WorkflowIndex, tenant, "all", id.clone()),
                bytes(),
            );
            if !wf.trigger_event.is_empty() {
                let pk = format!("event/{}", wf.trigger_event);
                w.put(RowKey::new(Table::WorkflowIndex, tenant, &pk, id), bytes());
            }
        }
        // The latest rotation is the one in force (config is one partition
        // per tenant, applied in order). Its secrets are sealed in the event,
        // and stay sealed in the row.
        Payload::WebhookSecretRotated(_) => {
            w.put(
                RowKey::new(Table::Tenants, tenant, WEBHOOK_SECRET_PK, Vec::new()),
                bytes(),
            );
        }
        // Subscriber state is the router's (it must see upserts in order with
        // triggers); it writes the subscribers table itself.
        Payload::SubscriberUpserted(_) => {}
        p => {
            let Some(nid) = p.notification_id() else {
                return;
            };
            // The dead-letter queue is the router's (it writes the rows in
            // the commit that moves a run in or out of the queue).
            w.put(
                RowKey::new(Table::NotificationEvents, tenant, nid, e.id.0.to_vec()),
                bytes(),
            );
        }
    }
}

/// Lifecycle order, for sorting a history and deriving the status.
fn rank(p: &Payload) -> u8 {
    match p {
        Payload::Triggered(_) => 1,
        Payload::Routed(_) => 2,
        Payload::DispatchRequested(_) => 3,
        Payload::Sent(_) => 4,
        Payload::Delivered(_) => 5,
        Payload::Failed(_) | Payload::Engaged(_) | Payload::TimerFired(_) => 6,
        Payload::DlqRetried(_) | Payload::DlqDiscarded(_) => 7,
        Payload::Noted(_) => 7,
        Payload::Ended(_) => 8,
        _ => 0,
    }
}

/// A notification's history in the order it happened.
pub fn sort_history(events: &mut [Event]) {
    events.sort_by_key(|e| (e.occurred_at_ms, rank(&e.payload), e.id));
}

/// Status derived from a history: the furthest lifecycle point reached.
/// `failed` wins only if nothing was delivered afterwards (a later retry can succeed).
pub fn status_of(events: &[Event]) -> &'static str {
    // A run that ended without delivering says why (the latest end wins:
    // a dead letter retried to success is no longer dead).
    let last_end = events.iter().rev().find_map(|e| match &e.payload {
        Payload::Ended(end) => Some(end.outcome.as_str()),
        // Retried by an operator after its last end: running again.
        Payload::DlqRetried(_) => Some("retrying"),
        _ => None,
    });
    match last_end {
        Some("dead_lettered") => return "dead_lettered",
        Some("cancelled") => return "cancelled",
        Some("suppressed") => return "suppressed",
        _ => {}
    }
    let reached = |f: fn(&Payload) -> bool| events.iter().any(|e| f(&e.payload));
    let delivery_failed = reached(|p| matches!(p, Payload::Failed(f) if f.stage == "delivery"));
    if reached(|p| matches!(p, Payload::Delivered(_))) {
        "delivered"
    } else if delivery_failed {
        // The provider accepted it, then reported it undeliverable.
        "failed"
    } else if reached(|p| matches!(p, Payload::Sent(_))) {
        "sent"
    } else if reached(|p| matches!(p, Payload::Failed(_))) {
        "failed"
    } else if reached(|p| matches!(p, Payload::DispatchRequested(_))) {
        "dispatching"
    } else if reached(|p| matches!(p, Payload::Routed(_))) {
        "routed"
    } else {
        "triggered"
    }
}

/// Reads a notification's history (sorted); empty if unknown. The log's
/// index answers where the log keeps one; the projection's rows hold what
/// it does not (a Kafka log, or events appended before the index existed).
pub async fn history(
    store: &dyn Store,
    log: &dyn EventLog,
    topics: &Topics,
    tenant: &str,
    notification_id: &str,
) -> Result<Vec<Event>, ProcessError> {
    let poison = |reason: String| ProcessError::Poison { offset: 0, reason };
    let mut out = Vec::new();
    if let Some(records) = log
        .read_indexed(&history_index(tenant, notification_id))
        .await?
    {
        for (_, r) in records {
            let e = Event::decode_bytes(r.value).map_err(|e| poison(e.to_string()))?;
            // The key names the tenant and the notification; checked again
            // on the event itself, so no other tenant's event can answer.
            if e.tenant.as_str() == tenant && e.payload.notification_id() == Some(notification_id) {
                out.push(e);
            }
        }
    }
    let rows = store
        .scan(&clarion_store::Scan::partition(
            Table::NotificationEvents,
            tenant,
            notification_id,
            10_000,
        ))
        .await?;
    // Rows are keyed by event id: skip what the index already gave.
    let seen: std::collections::HashSet<[u8; 16]> = out.iter().map(|e| e.id.0).collect();
    for (ck, v) in rows {
        if <[u8; 16]>::try_from(&ck[..]).is_ok_and(|id| seen.contains(&id)) {
            continue;
        }
        out.push(history_event(log, topics, &v).await?);
    }
    sort_history(&mut out);
    Ok(out)
}
