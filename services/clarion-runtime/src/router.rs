//! The router processor: runs workflows.
//!
//! It reads the recipient streams of its partition — triggers and subscriber
//! upserts, delivery outcomes, engagement, and its own fired timers — and
//! drives each notification's [`Run`]. It owns the subscriber and run state of
//! its partition (one writer), and reads tenant configuration (workflow
//! versions, templates) from the projection, caching it: published workflow
//! versions are immutable, templates are re-read at most every second.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::flow::run::Purpose;
use clarion_domain::flow::throttle::{self, Hold, Owner};
use clarion_domain::flow::{Ctx, Engagement, Flow, Input as RunInput, Output, RetryPolicy, Run};
use clarion_domain::flow::{OnExceed, TenantLimits, ThrottleScope};
use clarion_domain::payload::{PayloadCache, SharedPayload};
use clarion_domain::router::{render_send, SendInput};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::{CompiledTemplate, Template};
use clarion_domain::{Actor, Channel, Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, Table};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::horizon::Horizon;
use crate::processor::{Batch, Emit, Input, ProcessError, Processor};
use crate::projector::{version_ck, TENANT_LIMITS_PK};
use crate::topics::Topic;

pub const ROUTER: &str = clarion_domain::router::ROUTER;

/// What the router keeps per notification (the `runs` table; see [`encode_run`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: Run,
    pub subscriber_id: String,
    /// Shared with the other runs of its Trigger request while in memory.
    pub payload: SharedPayload,
    /// Contact data given with the trigger (overrides the stored subscriber).
    pub contact: ContactOverride,
    /// Partition key of the recipient stream (for timers).
    pub key: String,
    /// In the dead-letter queue (dead-lettered, not yet retried or discarded).
    #[serde(default)]
    pub in_dlq: bool,
}

/// When a tenant's dead-letter queue grows past a threshold, an alert is
/// dispatched to a webhook (signed like every Clarion webhook).
#[derive(Clone, Debug, Default)]
pub struct DlqAlerts {
    /// Dead letters that raise the alert; 0 disables it.
    pub threshold: u64,
    pub per_tenant: HashMap<String, u64>,
    /// Where the alert is POSTed (needs the webhook provider).
    pub webhook_url: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactOverride {
    pub email: String,
    pub phone: String,
    pub locale: String,
    pub timezone: String,
    pub webhook_url: String,
}

impl ContactOverride {
    fn to_pb(&self) -> pb::RecipientOverride {
        pb::RecipientOverride {
            email: self.email.clone(),
            phone: self.phone.clone(),
            locale: self.locale.clone(),
            timezone: self.timezone.clone(),
            webhook_url: self.webhook_url.clone(),
        }
    }
}

type TemplateEntry = (Instant, Option<Arc<CompiledTemplate>>);

/// Retry policies: a default, per channel, and per tenant and channel.
#[derive(Clone, Debug, Default)]
pub struct RetryPolicies {
    pub default: RetryPolicy,
    pub channels: HashMap<String, RetryPolicy>,
    /// tenant → channel → policy
    pub tenants: HashMap<String, HashMap<String, RetryPolicy>>,
}

impl RetryPolicies {
    /// The most specific policy for a tenant's sends on a channel.
    pub fn for_send(&self, tenant: &str, channel: &str) -> &RetryPolicy {
        self.tenants
            .get(tenant)
            .and_then(|c| c.get(channel))
            .or_else(|| self.channels.get(channel))
            .unwrap_or(&self.default)
    }
}

pub struct Router {
    default_providers: HashMap<Channel, String>,
    retry: RetryPolicies,
    subscribers: FastMap<(String, String), Option<Subscriber>>,
    flows: FastMap<(String, String, u32), Arc<Flow>>,
    templates: FastMap<(String, String), TemplateEntry>,
    /// Boxed: a record is several hundred bytes, and inline it made every
    /// move in or out of the map a copy of it and the table too big for the
    /// CPU's caches (hash probes and `memcpy` showed in the profile).
    runs: FastMap<(String, String), Box<RunRecord>>,
    /// Runs that ended in the batch being processed. They leave the cache at
    /// the start of the next batch, not at once: a later input of the same
    /// batch (the sink's Delivered right behind its Sent) must see the ended
    /// run, and until the batch commits the store still holds the run as it
    /// was before.
    ended: Vec<(String, String)>,
    /// Runs this batch changed, written once each at its end: a send's
    /// `sent` and `delivered` arrive together, and encoding the record for
    /// each of them showed in the profile.
    changed: Vec<(String, String)>,
    /// Run records of this batch's notifications read from the store in one
    /// go before the batch (`None`: no run yet). The cache above wins: an
    /// entry here is only the state before the batch.
    prefetched: FastMap<(String, String), Option<Box<RunRecord>>>,
    /// Metric changes of the batch, reported once at its end (a metric
    /// lookup per notification showed in the profile).
    cached_runs_delta: i64,
    runs_ended: Vec<(&'static str, u64)>,
    content: FastMap<(String, String), Value>,
    /// The batch's last trigger payload: a request's recipients share it.
    payloads: PayloadCache,
    /// Sliding-window send logs by throttle key (timestamps, oldest first).
    throttle_logs: FastMap<(String, String), VecDeque<i64>>,
    /// Tenant limits by tenant, with when they were read.
    tenant_limits: HashMap<String, (Instant, Option<Arc<TenantLimits>>)>,
    partitions: u32,
    dlq_alerts: DlqAlerts,
    /// This partition's dead-letter count per tenant.
    dlq_counts: HashMap<String, i64>,
    template_refresh: Duration,
    /// Which triggers surely have no run yet (no lookup needed).
    horizon: Horizon,
}

/// The router's per-notification maps. Their keys are strings (tenant,
/// notification or subscriber id) hashed several times per input; SipHash
/// showed in the profile. foldhash is seeded per process, so keys chosen by
/// a tenant cannot be aimed at one bucket.
type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A `(tenant, id)` key of the router's maps, borrowed: it hashes and
/// compares as the owned `(String, String)`, so a lookup (several per
/// input) allocates nothing.
#[derive(Hash)]
struct Pair<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(String, String)> for Pair<'_> {
    fn equivalent(&self, k: &(String, String)) -> bool {
        self.0 == k.0 && self.1 == k.1
    }
}

/// A `(tenant, workflow, version)` key, borrowed (see [`Pair`]).
#[derive(Hash)]
struct Versioned<'a>(&'a str, &'a str, u32);

impl hashbrown::Equivalent<(String, String, u32)> for Versioned<'_> {
    fn equivalent(&self, k: &(String, String, u32)) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2
    }
}

/// Cache bounds (entries per router partition).
const MAX_CACHED_RUNS: usize = 200_000;
const MAX_CACHED_SUBSCRIBERS: usize = 100_000;
const MAX_CACHED_THROTTLE_LOGS: usize = 100_000;
const MAX_CACHED_CONTENT_HASHES: usize = 100_000;

fn actor() -> Actor {
    Actor::System(ROUTER.into())
}

/// First byte of a MessagePack run record (positional fields, version 1).
/// Records written before it are JSON objects and start with `{`.
const RUN_RECORD_V1: u8 = 1;

/// The dead-letter queue's row of a notification (its value: the `Ended`
/// event that put it there).
pub fn dead_letter_key(tenant: &str, notification_id: &str) -> RowKey {
    RowKey::new(
        Table::DeadLetters,
        tenant,
        "dlq",
        notification_id.as_bytes().to_vec(),
    )
}

/// A run record as stored. Rewritten on every change of the run, it is the
/// router's biggest write: MessagePack with positional fields is about 35 %
/// smaller than JSON (no field names) and cheaper to produce. Fields are
/// only ever appended (with `#[serde(default)]`), or the version byte bumps.
///
/// A run that ended for good (anything but a dead letter, which an operator
/// may retry) is stored without the trigger's payload and contact data:
/// nothing renders for it again, and the ended record is what the table
/// keeps for every notification (a repeated trigger must find it), so at
/// about a third of its size it is cheaper to write, to checkpoint and to
/// search past (docs/architecture.md, "Ended runs are stored slim").
pub fn encode_run(rec: &RunRecord) -> Bytes {
    /// [`RunRecord`]'s fields in its order, borrowed: the same MessagePack.
    #[derive(Serialize)]
    struct Stored<'a> {
        run: &'a Run,
        subscriber_id: &'a str,
        payload: &'a Value,
        contact: &'a ContactOverride,
        key: &'a str,
        in_dlq: bool,
    }
    let settled = rec
        .run
        .terminal
        .is_some_and(|t| t != clarion_domain::flow::Terminal::DeadLettered)
        && !rec.in_dlq;
    let no_contact = ContactOverride::default();
    let stored = Stored {
        run: &rec.run,
        subscriber_id: &rec.subscriber_id,
        payload: if settled {
            &Value::Null
        } else {
            rec.payload.json()
        },
        contact: if settled { &no_contact } else { &rec.contact },
        key: &rec.key,
        in_dlq: rec.in_dlq,
    };
    // Room for a typical record (the trigger's payload is most of it): grown
    // from one byte, the buffer was reallocated and copied several times.
    let mut out = Vec::with_capacity(if settled { 256 } else { 512 });
    out.push(RUN_RECORD_V1);
    rmp_serde::encode::write(&mut out, &stored).expect("run records serialize");
    Bytes::from(out)
}

/// Reads a stored run record (MessagePack, or JSON from before it).
pub fn decode_run(b: &[u8]) -> Option<RunRecord> {
    match b.first() {
        Some(&RUN_RECORD_V1) => rmp_serde::from_slice(&b[1..]).ok(),
        Some(b'{') => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

/// Reads a stored run.
pub async fn load_run(
    store: &dyn Store,
    tenant: &str,
    notification_id: &str,
) -> Result<Option<RunRecord>, ProcessError> {
    Ok(store
        .get(&RowKey::new(
            Table::Runs,
            tenant,
            notification_id,
            Vec::new(),
        ))
        .await?
        .and_then(|b| decode_run(&b)))
}

impl Router {
    pub fn new(default_providers: HashMap<Channel, String>) -> Router {
        Router {
            default_providers,
            retry: RetryPolicies::default(),
            subscribers: FastMap::default(),
            flows: FastMap::default(),
            templates: FastMap::default(),
            runs: FastMap::default(),
            ended: Vec::new(),
            changed: Vec::new(),
            prefetched: FastMap::default(),
            cached_runs_delta: 0,
            runs_ended: Vec::new(),
            content: FastMap::default(),
            payloads: PayloadCache::default(),
            throttle_logs: FastMap::default(),
            tenant_limits: HashMap::new(),
            partitions: 1,
            dlq_alerts: DlqAlerts::default(),
            dlq_counts: HashMap::new(),
            template_refresh: Duration::from_secs(1),
            horizon: Horizon::default(),
        }
    }

    /// Partition count of the router's input: workflow-wide throttle limits
    /// are shared equally among partitions.
    pub fn with_partitions(mut self, partitions: u32) -> Router {
        self.partitions = partitions.max(1);
        self
    }

    /// The tenant's limits across its workflows, re-read at most every
    /// `template_refresh` (like templates: config changes apply within it).
    async fn tenant_limits(
        &mut self,
        store: &dyn Store,
        tenant: &str,
    ) -> Result<Option<Arc<TenantLimits>>, ProcessError> {
        if let Some((at, l)) = self.tenant_limits.get(tenant) {
            if at.elapsed() < self.template_refresh {
                return Ok(l.clone());
            }
        }
        let l = store
            .scan(&Scan::partition(Table::Tenants, tenant, TENANT_LIMITS_PK, 1).reversed())
            .await?
            .into_iter()
            .next()
            .and_then(|(_, b)| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::TenantLimitsSet(p) => throttle::from_event(&p).ok(),
                _ => None,
            })
            .filter(|l| !l.def.throttle.is_empty())
            .map(Arc::new);
        self.tenant_limits
            .insert(tenant.to_string(), (Instant::now(), l.clone()));
        Ok(l)
    }

    /// Checks a send against the workflow's limits and the tenant's. `Ok(None)`:
    /// it may go, and is counted by every limit that covers it. `Ok(Some(hold))`:
    /// it is held back (and counted nowhere).
    #[allow(clippy::too_many_arguments)]
    async fn throttle(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        flow: &Flow,
        tenant: &str,
        subscriber: &str,
        channel: &str,
        attempt_id: &str,
    ) -> Result<Option<Hold>, ProcessError> {
        let limits = self.tenant_limits(store, tenant).await?;
        let workflow_rules = flow
            .def
            .throttle
            .iter()
            .zip(&flow.throttle_windows_ms)
            .map(|(r, w)| (Owner::Workflow, r, *w));
        let tenant_rules = limits
            .iter()
            .flat_map(|l| l.def.throttle.iter().zip(&l.windows_ms))
            .map(|(r, w)| (Owner::Tenant, r, *w));
        let now = batch.now_ms;
        let mut keys = Vec::new();
        let mut held: Option<Hold> = None;
        for (owner, rule, window) in workflow_rules.chain(tenant_rules) {
            if !rule.covers(channel) {
                continue;
            }
            let window = window as i64;
            let scope_key = match rule.scope {
                ThrottleScope::Recipient => format!("r/{subscriber}"),
                ThrottleScope::Channel => format!("c/{subscriber}/{channel}"),
                ThrottleScope::Workflow | ThrottleScope::Tenant => format!("p{}", batch.partition),
            };
            let limit = if rule.scope.spans_partitions() {
                rule.limit.div_ceil(self.partitions)
            } else {
                rule.limit
            };
            let counter = rule.counter_name(window as u64);
            let key = match owner {
                Owner::Workflow => format!("throttle:w/{}/{counter}/{scope_key}", flow.def.id),
                Owner::Tenant => format!("throttle:t/{counter}/{scope_key}"),
            };
            let log_key = (tenant.to_string(), key.clone());
            if !self.throttle_logs.contains_key(&log_key) {
                let rows = store
                    .scan(&Scan::partition(Table::Runs, tenant, &key, 100_000))
                    .await?;
                let log: VecDeque<i64> = rows
                    .iter()
                    .filter_map(|(ck, _)| ck.get(..8))
                    .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                self.throttle_logs.insert(log_key.clone(), log);
            }
            let log = self.throttle_logs.get_mut(&log_key).expect("just loaded");
            throttle::slide(log, now, window);
            if let Some(frees_at) = throttle::frees_at(log, limit, window) {
                let source = match owner {
                    Owner::Workflow => format!("workflow {}", flow.def.id),
                    Owner::Tenant => format!(
                        "tenant limits v{}",
                        limits.as_ref().map(|l| l.version).unwrap_or_default()
                    ),
                };
                let hold = match rule.on_exceed {
                    OnExceed::Drop => Hold::Drop(rule.reason(&source)),
                    OnExceed::Defer => Hold::Defer(frees_at, rule.reason(&source)),
                };
                held = Some(match held {
                    Some(h) => h.and(hold),
                    None => hold,
                });
            }
            keys.push((log_key, window));
        }
        if held.is_some() {
            return Ok(held);
        }
        for ((tenant, key), window) in keys {
            let mut ck = now.to_be_bytes().to_vec();
            ck.extend_from_slice(attempt_id.as_bytes());
            batch.writes.put_ttl(
                RowKey::new(Table::Runs, &tenant, &key, ck),
                Bytes::new(),
                Duration::from_millis(window as u64),
            );
            self.throttle_logs
                .get_mut(&(tenant, key))
                .expect("loaded above")
                .push_back(now);
        }
        Ok(None)
    }

    pub fn with_dlq_alerts(mut self, alerts: DlqAlerts) -> Router {
        self.dlq_alerts = alerts;
        self
    }

    /// Applies a change of this partition's dead-letter count for a tenant:
    /// keeps the per-partition row (one writer each), exports the tenant's
    /// total as a gauge and, on crossing the threshold upward, dispatches the
    /// alert.
    async fn dlq_changed(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        tenant: &str,
        delta: i64,
    ) -> Result<(), ProcessError> {
        let own_ck = batch.partition.to_be_bytes().to_vec();
        let rows = store
            .scan(&Scan::partition(Table::Runs, tenant, "dlq-count", 10_000))
            .await?;
        let parse = |b: &[u8]| <[u8; 8]>::try_from(b).map(i64::from_be_bytes).unwrap_or(0);
        let stored_own = rows
            .iter()
            .find(|(ck, _)| *ck == own_ck)
            .map(|(_, v)| parse(v))
            .unwrap_or(0);
        let own = *self
            .dlq_counts
            .entry(tenant.to_string())
            .or_insert(stored_own);
        let new_own = (own + delta).max(0);
        self.dlq_counts.insert(tenant.to_string(), new_own);
        batch.writes.put(
            RowKey::new(Table::Runs, tenant, "dlq-count", own_ck.clone()),
            Bytes::copy_from_slice(&new_own.to_be_bytes()),
        );
        let others: i64 = rows
            .iter()
            .filter(|(ck, _)| *ck != own_ck)
            .map(|(_, v)| parse(v))
            .sum();
        let total = (others + new_own) as u64;
        metrics::gauge!("clarion_dlq_size", "tenant" => tenant.to_string()).set(total as f64);
        let threshold = self
            .dlq_alerts
            .per_tenant
            .get(tenant)
            .copied()
            .unwrap_or(self.dlq_alerts.threshold);
        let before = (others + own) as u64;
        if threshold > 0 && delta > 0 && before < threshold && total >= threshold {
            metrics::counter!("clarion_dlq_alerts_total", "tenant" => tenant.to_string())
                .increment(1);
            tracing::warn!(
                tenant,
                total,
                threshold,
                "dead-letter queue over its alert threshold"
            );
            if let Some(url) = &self.dlq_alerts.webhook_url {
                let alert_id = cause.id.child("dlq-alert", 0).to_hex();
                let body = json!({
                    "alert": "dead_letter_queue_threshold",
                    "tenant_id": tenant,
                    "dead_letters": total,
                    "threshold": threshold,
                })
                .to_string();
                let ev = Event {
                    id: cause.id.child("dlq-alert", 1),
                    tenant: cause.tenant.clone(),
                    partition_key: cause.partition_key.clone(),
                    occurred_at_ms: batch.now_ms,
                    causation_id: Some(cause.id),
                    correlation_id: None,
                    actor: actor(),
                    payload: Payload::DispatchRequested(pb::DispatchRequested {
                        notification_id: format!("dlq-alert-{alert_id}"),
                        attempt_id: alert_id,
                        channel: "webhook".into(),
                        provider: "webhook".into(),
                        to: url.clone(),
                        subject: format!("Dead-letter queue of {tenant}: {total} entries"),
                        body,
                        locale: String::new(),
                        subscriber_id: String::new(),
                        step: String::new(),
                    }),
                };
                batch.emit(Topic::Dispatch, ev);
            }
        }
        Ok(())
    }

    pub fn with_retry(mut self, retry: RetryPolicies) -> Router {
        self.retry = retry;
        self
    }

    async fn subscriber(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Subscriber>, ProcessError> {
        if let Some(s) = self.subscribers.get(&Pair(tenant, id)) {
            return Ok(s.clone());
        }
        let s = store
            .get(&RowKey::new(Table::Subscribers, tenant, id, Vec::new()))
            .await?
            .and_then(|b| clarion_domain::event::decode_subscriber(&b));
        self.subscribers
            .insert((tenant.to_string(), id.to_string()), s.clone());
        Ok(s)
    }

    async fn flow(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<Option<Arc<Flow>>, ProcessError> {
        if let Some(f) = self.flows.get(&Versioned(tenant, id, version)) {
            return Ok(Some(f.clone()));
        }
        let f = store
            .get(&RowKey::new(
                Table::Workflows,
                tenant,
                id,
                version_ck(version),
            ))
            .await?
            .and_then(|b| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::WorkflowPublished(p) => clarion_domain::workflow::from_published(&p)
                    .ok()
                    .map(Arc::new),
                _ => None,
            });
        // Only hits are cached: a miss may be a version not projected yet.
        if let Some(f) = &f {
            self.flows
                .insert((tenant.to_string(), id.to_string(), version), f.clone());
        }
        Ok(f)
    }

    async fn template(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Arc<CompiledTemplate>>, ProcessError> {
        if let Some((at, t)) = self.templates.get(&Pair(tenant, id)) {
            if at.elapsed() < self.template_refresh {
                return Ok(t.clone());
            }
        }
        let t = store
            .scan(&Scan::partition(Table::Templates, tenant, id, 1).reversed())
            .await?
            .into_iter()
            .next()
            .and_then(|(_, b)| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::TemplatePublished(p) => {
                    Template::from_event(&p).ok().map(|t| Arc::new(t.compile()))
                }
                _ => None,
            });
        self.templates.insert(
            (tenant.to_string(), id.to_string()),
            (Instant::now(), t.clone()),
        );
        Ok(t)
    }

    /// Whether the notification has a run (without copying its record).
    async fn has_run(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        nid: &str,
    ) -> Result<bool, ProcessError> {
        let k = Pair(tenant, nid);
        if self.runs.contains_key(&k) {
            return Ok(true);
        }
        if let Some(r) = self.prefetched.get(&k) {
            return Ok(r.is_some());
        }
        if self.horizon.surely_new(nid) {
            return Ok(false);
        }
        Ok(load_run(store, tenant, nid).await?.is_some())
    }

    /// The run record of a notification, moved out of memory rather than
    /// copied (a copy per input showed in the profile): whoever takes it
    /// puts it back with [`Router::remember`]. Should that not happen (an
    /// error in between), the next input reads the run from the store,
    /// which holds it as it was before this uncommitted batch.
    async fn take_run_record(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        nid: &str,
    ) -> Result<Option<Box<RunRecord>>, ProcessError> {
        let k = Pair(tenant, nid);
        let before = self.runs.len();
        if let Some(r) = self.runs.remove(&k) {
            self.count_cached_runs(before);
            return Ok(Some(r));
        }
        if let Some(r) = self.prefetched.remove(&k) {
            return Ok(r);
        }
        Ok(load_run(store, tenant, nid).await?.map(Box::new))
    }

    /// Reads the run records of the batch's notifications that are not in
    /// memory (new triggers, late engagement) with one store read, not one
    /// read per input.
    async fn prefetch_runs(
        &mut self,
        store: &dyn Store,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        self.prefetched.clear();
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        for input in inputs {
            let e = &input.event;
            let Some(nid) = e.payload.notification_id() else {
                continue;
            };
            if matches!(e.payload, Payload::Triggered(_)) && self.horizon.surely_new(nid) {
                continue;
            }
            let tenant = e.tenant.as_str();
            let probe = Pair(tenant, nid);
            if self.runs.contains_key(&probe) || self.prefetched.contains_key(&probe) {
                continue;
            }
            let k = (tenant.to_string(), nid.to_string());
            keys.push(RowKey::new(Table::Runs, &k.0, &k.1, Vec::new()));
            self.prefetched.insert(k.clone(), None);
            ids.push(k);
        }
        if keys.is_empty() {
            return Ok(());
        }
        let rows = store.get_many(&keys).await?;
        for (k, row) in ids.into_iter().zip(rows) {
            self.prefetched
                .insert(k, row.and_then(|b| decode_run(&b)).map(Box::new));
        }
        Ok(())
    }

    /// Keeps a run in memory for its next input. Ended runs leave the cache
    /// with the next batch (a late engagement reloads them from the store), so
    /// memory holds the runs in flight, not every run ever started; the bound
    /// is a guard against a flood of long waits.
    /// `changed`: the record differs from the stored one, and is written
    /// when the batch ends ([`Router::write_changed_runs`]).
    fn remember(&mut self, tenant: &str, nid: String, rec: Box<RunRecord>, changed: bool) {
        let key = (tenant.to_string(), nid);
        self.prefetched.remove(&key);
        // A send's `sent` and `delivered` come one after the other: most
        // repeats are the last key, and need not wait for the dedup below.
        if changed && self.changed.last() != Some(&key) {
            self.changed.push(key.clone());
        }
        let before = self.runs.len();
        if rec.run.terminal.is_some() && !rec.in_dlq {
            self.ended.push(key.clone());
        }
        self.runs.insert(key, rec);
        self.count_cached_runs(before);
    }

    /// Writes each run the batch changed once, as it is at the batch's end.
    /// They are all in memory: a changed run is remembered, and runs leave
    /// memory only when the next batch starts.
    fn write_changed_runs(&mut self, batch: &mut Batch) {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        for key in changed {
            let rec = self
                .runs
                .get(&key)
                .expect("a run changed in this batch is in memory until it ends");
            batch.writes.put(
                RowKey::new(Table::Runs, &key.0, &key.1, Vec::new()),
                encode_run(rec),
            );
        }
    }

    /// Between batches, when everything this router decided is committed:
    /// starts full caches over and drops the runs that ended. Only here: an
    /// entry changed earlier in a batch must stay in memory for the rest of
    /// it, since the store has the change only once the batch commits.
    /// Every cached fact is also a store row (throttle marks and content
    /// hashes with their window as TTL), so what is forgotten is reloaded
    /// when next needed.
    fn start_batch(&mut self) {
        if self.throttle_logs.len() >= MAX_CACHED_THROTTLE_LOGS {
            // Recipient-scoped windows pile up, one per recipient.
            self.throttle_logs.clear();
        }
        if self.subscribers.len() >= MAX_CACHED_SUBSCRIBERS {
            self.subscribers.clear();
        }
        if self.content.len() >= MAX_CACHED_CONTENT_HASHES {
            self.content.clear();
        }
        self.payloads.clear();
        self.forget_ended_runs();
    }

    /// Drops the runs that ended in the previous batch and have not come
    /// back to life since (a dead letter retried); starts over when full.
    fn forget_ended_runs(&mut self) {
        let before = self.runs.len();
        if self.runs.len() >= MAX_CACHED_RUNS {
            self.runs.clear();
            self.ended.clear();
        }
        for key in std::mem::take(&mut self.ended) {
            // One probe per run (`entry`, with the key owned already).
            if let hashbrown::hash_map::Entry::Occupied(e) = self.runs.entry(key) {
                if e.get().run.terminal.is_some() && !e.get().in_dlq {
                    e.remove();
                }
            }
        }
        self.count_cached_runs(before);
    }

    fn count_cached_runs(&mut self, before: usize) {
        self.cached_runs_delta += self.runs.len() as i64 - before as i64;
    }

    fn count_run_ended(&mut self, outcome: &'static str) {
        match self.runs_ended.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => self.runs_ended.push((outcome, 1)),
        }
    }

    /// Reports the batch's metric changes: runs ended by outcome, and the
    /// gauge (summed over the partitions' routers) of runs held in memory.
    fn report_metrics(&mut self) {
        if self.cached_runs_delta != 0 {
            metrics::gauge!("clarion_router_cached_runs").increment(self.cached_runs_delta as f64);
            self.cached_runs_delta = 0;
        }
        for (outcome, n) in self.runs_ended.drain(..) {
            metrics::counter!("clarion_runs_ended_total", "outcome" => outcome).increment(n);
        }
    }

    /// Runs held in memory (in flight, or ended in the last batch).
    pub fn cached_runs(&self) -> usize {
        self.runs.len()
    }

    /// Applies `first` to a run and carries out everything it asks for,
    /// feeding render failures back as failed attempts.
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        flow: &Flow,
        mut rec: Box<RunRecord>,
        first: RunInput,
        out_index: &mut u32,
    ) -> Result<(), ProcessError> {
        let tenant = cause.tenant.as_str();
        let nid = rec.run.notification_id.clone();
        let was_in_dlq = rec.in_dlq;
        // A new run is written anyway, and so is one given the outcome it
        // waits for (the common case: a send's `sent`) or an engagement that
        // raises its status (the `delivered` behind it); only other inputs,
        // which often change nothing, need the state before to compare with.
        let fresh = matches!(first, RunInput::Start);
        let run_before = (!fresh && !rec.run.surely_changes(&first)).then(|| rec.run.clone());
        let mut dead_lettered_now = false;
        // The `Ended` of a dead letter: the dead-letter queue's row.
        let mut dead_letter: Option<Event> = None;
        // The subscriber (with the trigger's contact data) is built when a
        // send needs it or a condition reads it: most inputs (a send's
        // `sent`, `delivered`) only advance the run.
        let mut subscriber = None;
        let (sub_json, tenant_json) = if flow.has_branch_conditions() {
            let s = self.recipient(store, tenant, &rec).await?;
            (s.template_context(), json!({"id": tenant}))
        } else {
            (Value::Null, Value::Null)
        };
        let mut queue = VecDeque::from([first]);
        let mut emit = |batch: &mut Batch, topic: Topic, payload: Payload| {
            let ev = cause.caused(*out_index, batch.now_ms, actor(), payload);
            *out_index += 1;
            batch.emit(topic, ev);
        };
        while let Some(input) = queue.pop_front() {
            // Failures are retried by the policy of the channel being sent on.
            let channel = rec.run.attempts.last().map_or("", |a| a.channel.as_str());
            let retry = self.retry.for_send(tenant, channel).clone();
            let ctx = Ctx {
                now_ms: batch.now_ms,
                payload: &rec.payload,
                subscriber: &sub_json,
                tenant: &tenant_json,
                retry: &retry,
            };
            let outputs = rec.run.apply(flow, input, &ctx);
            for o in outputs {
                match o {
                    Output::Send {
                        step,
                        attempt_id,
                        spec,
                    } => {
                        if let Some(hold) = self
                            .throttle(
                                store,
                                batch,
                                flow,
                                tenant,
                                &rec.subscriber_id,
                                &spec.channel,
                                &attempt_id,
                            )
                            .await?
                        {
                            let (defer_until, reason) = match hold {
                                Hold::Drop(reason) => (None, reason),
                                Hold::Defer(at, reason) => (Some(at), reason),
                            };
                            if let Some(at) = defer_until {
                                emit(
                                    batch,
                                    Topic::Notifications,
                                    Payload::Noted(pb::RunNoted {
                                        notification_id: nid.clone(),
                                        message: format!("{reason}; step {step} deferred to {at}"),
                                    }),
                                );
                            }
                            queue.push_back(RunInput::Throttled {
                                attempt_id,
                                defer_until,
                                reason,
                            });
                            continue;
                        }
                        let template = self.template(store, tenant, &spec.template).await?;
                        let subscriber = match &mut subscriber {
                            Some(s) => s,
                            None => subscriber.insert(self.recipient(store, tenant, &rec).await?),
                        };
                        let defaults = &self.default_providers;
                        let default_provider = |c: Channel| {
                            defaults
                                .get(&c)
                                .cloned()
                                .unwrap_or_else(|| "sink".to_string())
                        };
                        let rendered = render_send(&SendInput {
                            tenant,
                            notification_id: &nid,
                            workflow_id: &rec.run.workflow_id,
                            workflow_version: rec.run.workflow_version,
                            step: &step,
                            step_index: flow.step_index(&step).unwrap_or(0) as u32,
                            attempt_id: &attempt_id,
                            spec: &spec,
                            subscriber,
                            payload: &rec.payload,
                            template: template.as_deref(),
                            default_provider: &default_provider,
                        });
                        match rendered {
                            Ok((routed, dispatch)) => {
                                emit(batch, Topic::Notifications, Payload::Routed(routed));
                                emit(batch, Topic::Dispatch, Payload::DispatchRequested(dispatch));
                            }
                            Err(reason) => {
                                emit(
                                    batch,
                                    Topic::Notifications,
                                    Payload::Failed(pb::NotificationFailed {
                                        notification_id: nid.clone(),
                                        attempt_id: attempt_id.clone(),
                                        provider: String::new(),
                                        reason: reason.clone(),
                                        retryable: false,
                                        stage: "route".into(),
                                    }),
                                );
                                queue.push_back(RunInput::Failed {
                                    attempt_id,
                                    retryable: false,
                                    reason,
                                });
                            }
                        }
                    }
                    Output::Timer {
                        seq,
                        due_ms,
                        purpose,
                    } => {
                        let fired = Event {
                            id: Id::derive(&[
                                b"timer",
                                tenant.as_bytes(),
                                nid.as_bytes(),
                                &seq.to_le_bytes(),
                            ]),
                            tenant: cause.tenant.clone(),
                            partition_key: rec.key.clone(),
                            occurred_at_ms: due_ms,
                            causation_id: Some(cause.id),
                            correlation_id: cause.correlation_id,
                            actor: actor(),
                            payload: Payload::TimerFired(pb::TimerFired {
                                notification_id: nid.clone(),
                                seq,
                                purpose: purpose_str(purpose).into(),
                            }),
                        };
                        batch.timers.push((
                            due_ms,
                            Emit {
                                topic: Topic::Triggers,
                                event: fired,
                            },
                        ));
                    }
                    Output::Note(message) => emit(
                        batch,
                        Topic::Notifications,
                        Payload::Noted(pb::RunNoted {
                            notification_id: nid.clone(),
                            message,
                        }),
                    ),
                    Output::End { terminal, reason } => {
                        let dead = terminal == clarion_domain::flow::Terminal::DeadLettered;
                        dead_lettered_now |= dead;
                        self.count_run_ended(terminal.as_str());
                        emit(
                            batch,
                            Topic::Notifications,
                            Payload::Ended(pb::RunEnded {
                                notification_id: nid.clone(),
                                outcome: terminal.as_str().into(),
                                reason,
                                workflow_id: rec.run.workflow_id.clone(),
                                workflow_version: rec.run.workflow_version,
                                step: rec
                                    .run
                                    .attempts
                                    .last()
                                    .map(|a| a.step.clone())
                                    .unwrap_or_default(),
                                attempts: rec
                                    .run
                                    .attempts
                                    .iter()
                                    .map(|a| pb::AttemptRecord {
                                        attempt_id: a.attempt_id.clone(),
                                        step: a.step.clone(),
                                        channel: a.channel.clone(),
                                        provider: a.provider.clone(),
                                        at_ms: a.at_ms,
                                        error: a.error.clone().unwrap_or_default(),
                                        retryable: a.retryable,
                                        sent: a.sent,
                                    })
                                    .collect(),
                                subscriber_id: rec.subscriber_id.clone(),
                            }),
                        );
                        if dead {
                            dead_letter = batch.emits.last().map(|e| e.event.clone());
                        }
                    }
                }
            }
        }
        // In the queue while dead-lettered; a retry takes it out (and a retry
        // that fails again puts it back).
        if dead_lettered_now {
            rec.in_dlq = true;
        } else if rec.run.terminal != Some(clarion_domain::flow::Terminal::DeadLettered) {
            rec.in_dlq = false;
        }
        let delta = i64::from(rec.in_dlq) - i64::from(was_in_dlq);
        // The queue's rows are the router's to write, in the commit that
        // moves the run in or out: a listing never disagrees with the runs.
        match dead_letter {
            Some(ended) => batch
                .writes
                .put(dead_letter_key(tenant, &nid), ended.encode()),
            None if delta < 0 => batch.writes.delete(dead_letter_key(tenant, &nid)),
            None => &mut batch.writes,
        };
        // Late engagement, stale timers and repeats often change nothing: the
        // run record is the biggest row per notification, so skip the rewrite.
        let changed = run_before.is_none_or(|before| before != rec.run) || delta != 0;
        self.remember(tenant, nid, rec, changed);
        if delta != 0 {
            self.dlq_changed(store, batch, cause, tenant, delta).await?;
        }
        Ok(())
    }

    /// The run's recipient: the stored subscriber with the contact data
    /// given with the trigger over it.
    async fn recipient(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        rec: &RunRecord,
    ) -> Result<Subscriber, ProcessError> {
        let stored = self.subscriber(store, tenant, &rec.subscriber_id).await?;
        Ok(stored
            .unwrap_or_else(|| Subscriber {
                subscriber_id: rec.subscriber_id.clone(),
                ..Default::default()
            })
            .with_override(&rec.contact.to_pb()))
    }

    /// Feeds a fact about an existing run into it.
    async fn feed(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        nid: &str,
        input: impl FnOnce(&RunRecord) -> Option<RunInput>,
        out_index: &mut u32,
    ) -> Result<(), ProcessError> {
        let tenant = cause.tenant.as_str();
        let Some(rec) = self.take_run_record(store, tenant, nid).await? else {
            return Ok(()); // not a workflow run of ours (or already purged)
        };
        let Some(input) = input(&rec) else {
            self.remember(tenant, nid.to_string(), rec, false);
            return Ok(());
        };
        let flow = self
            .flow(
                store,
                tenant,
                &rec.run.workflow_id,
                rec.run.workflow_version,
            )
            .await;
        let Ok(Some(flow)) = flow else {
            self.remember(tenant, nid.to_string(), rec, false);
            return flow.map(|_| ());
        };
        self.drive(store, batch, cause, &flow, rec, input, out_index)
            .await
    }
}

fn purpose_str(p: Purpose) -> &'static str {
    match p {
        Purpose::Delay => "delay",
        Purpose::Retry => "retry",
        Purpose::WaitTimeout => "wait_timeout",
        Purpose::AckTimeout => "ack_timeout",
    }
}

/// Engagement without an attempt id is credited to the latest sent attempt.
fn attempt_for(rec: &RunRecord, attempt_id: &str) -> Option<String> {
    if !attempt_id.is_empty() {
        return Some(attempt_id.to_string());
    }
    rec.run
        .attempts
        .iter()
        .rev()
        .find(|a| a.sent)
        .or(rec.run.attempts.last())
        .map(|a| a.attempt_id.clone())
}

#[async_trait]
impl Processor for Router {
    fn name(&self) -> &'static str {
        ROUTER
    }

    fn uses_timers(&self) -> bool {
        true
    }

    /// Every router input is idempotent against the run state it keeps: a
    /// repeated trigger finds its run, a repeated outcome or timer finds the
    /// run no longer waiting for it, upserts and engagement are overwrites.
    /// So the dedup table (a read and a write per input) is not needed.
    fn dedup(&self) -> bool {
        false
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        self.start_batch();
        if let (Some(Topic::Triggers), Some(first)) = (batch.topic, inputs.first()) {
            self.horizon
                .read_once(store, batch.partition, first.offset)
                .await?;
        }
        self.prefetch_runs(store, inputs).await?;
        for input in inputs {
            let e = &input.event;
            let tenant = e.tenant.as_str();
            let mut idx = 0u32;
            match &e.payload {
                Payload::SubscriberUpserted(s) => {
                    batch.writes.put(
                        RowKey::new(Table::Subscribers, tenant, &s.subscriber_id, Vec::new()),
                        Bytes::from(s.encode_to_vec()),
                    );
                    self.subscribers.insert(
                        (tenant.to_string(), s.subscriber_id.clone()),
                        Some(Subscriber::from_event(s)),
                    );
                }
                Payload::Triggered(t) => {
                    if self.has_run(store, tenant, &t.notification_id).await? {
                        continue; // a retried trigger with the same idempotency key
                    }
                    self.horizon.note(&t.notification_id);
                    let payload = self.payloads.get(&t.payload_json);
                    let c = t.recipient.clone().unwrap_or_default();
                    let rec_contact = ContactOverride {
                        email: c.email,
                        phone: c.phone,
                        locale: c.locale,
                        timezone: c.timezone,
                        webhook_url: c.webhook_url,
                    };
                    let Some(flow) = self
                        .flow(store, tenant, &t.workflow_id, t.workflow_version)
                        .await?
                    else {
                        let end = Payload::Ended(pb::RunEnded {
                            notification_id: t.notification_id.clone(),
                            outcome: "suppressed".into(),
                            reason: format!(
                                "workflow {:?} version {} does not exist",
                                t.workflow_id, t.workflow_version
                            ),
                            workflow_id: t.workflow_id.clone(),
                            workflow_version: t.workflow_version,
                            subscriber_id: t.subscriber_id.clone(),
                            ..Default::default()
                        });
                        batch.emit(
                            Topic::Notifications,
                            e.caused(0, batch.now_ms, actor(), end),
                        );
                        continue;
                    };
                    if let Some(window) = flow.dedup_window_ms {
                        let hash = clarion_domain::tenant::sha256_hex(
                            format!(
                                "{tenant}\n{}\n{}\n{}",
                                t.workflow_id,
                                t.subscriber_id,
                                payload.json()
                            )
                            .as_bytes(),
                        );
                        let key = RowKey::new(Table::ContentDedup, tenant, &hash, Vec::new());
                        // Recent hashes of this partition are also kept in memory:
                        // a duplicate in the same batch is not in the store yet.
                        let seen = match self.content.get(&(tenant.to_string(), hash.clone())) {
                            Some(v) => Some(v.clone()),
                            None => store
                                .get(&key)
                                .await?
                                .and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
                        };
                        let now = batch.now_ms;
                        if let Some(prev) =
                            seen.filter(|p| now - p["at"].as_i64().unwrap_or(0) < window as i64)
                        {
                            let end = Payload::Ended(pb::RunEnded {
                                notification_id: t.notification_id.clone(),
                                outcome: "suppressed".into(),
                                reason: format!(
                                    "same content as notification {} within the {} dedup window",
                                    prev["notification_id"].as_str().unwrap_or("?"),
                                    flow.def.dedup_window.clone().unwrap_or_default()
                                ),
                                workflow_id: flow.def.id.clone(),
                                workflow_version: flow.version,
                                subscriber_id: t.subscriber_id.clone(),
                                ..Default::default()
                            });
                            batch.emit(Topic::Notifications, e.caused(0, now, actor(), end));
                            continue;
                        }
                        let mark = json!({"at": now, "notification_id": t.notification_id});
                        batch.writes.put_ttl(
                            key,
                            Bytes::from(mark.to_string()),
                            Duration::from_millis(window),
                        );
                        self.content.insert((tenant.to_string(), hash), mark);
                    }
                    let rec = Box::new(RunRecord {
                        run: Run::new(&t.notification_id, &flow),
                        subscriber_id: t.subscriber_id.clone(),
                        payload,
                        contact: rec_contact,
                        key: e.partition_key.clone(),
                        in_dlq: false,
                    });
                    // The trigger condition decides whether the run starts at
                    // all; the subscriber's variables are built only for one.
                    let matched = if flow.has_trigger_condition() {
                        let sub_json = self
                            .recipient(store, tenant, &rec)
                            .await?
                            .template_context();
                        flow.matches(&rec.payload, &sub_json, &json!({"id": tenant}))
                    } else {
                        Ok(true)
                    };
                    match matched {
                        Ok(true) => {
                            // Index the run by its cancellation key, if the workflow has one.
                            if let Some(value) = flow.def.cancel_key.as_deref().and_then(|field| {
                                clarion_domain::router::resolve_path(&rec.payload, field)
                            }) {
                                batch.writes.put(
                                    RowKey::new(
                                        Table::Runs,
                                        tenant,
                                        &cancel_pk(&value),
                                        t.notification_id.as_bytes().to_vec(),
                                    ),
                                    Bytes::new(),
                                );
                            }
                            self.drive(store, batch, e, &flow, rec, RunInput::Start, &mut idx)
                                .await?;
                        }
                        outcome => {
                            let reason = match outcome {
                                Err(err) => {
                                    format!("trigger condition could not be evaluated: {err}")
                                }
                                _ => "trigger condition is false".to_string(),
                            };
                            let mut rec = rec;
                            let ctx = Ctx {
                                now_ms: batch.now_ms,
                                payload: &Value::Null,
                                subscriber: &Value::Null,
                                tenant: &Value::Null,
                                retry: &self.retry.default,
                            };
                            // Recorded as a run that ended suppressed, so the
                            // notification still reaches a terminal state.
                            let _ = rec.run.apply(
                                &flow,
                                RunInput::Cancel {
                                    reason: reason.clone(),
                                },
                                &ctx,
                            );
                            rec.run.terminal = Some(clarion_domain::flow::Terminal::Suppressed);
                            let end = Payload::Ended(pb::RunEnded {
                                notification_id: t.notification_id.clone(),
                                outcome: "suppressed".into(),
                                reason,
                                workflow_id: flow.def.id.clone(),
                                workflow_version: flow.version,
                                subscriber_id: t.subscriber_id.clone(),
                                ..Default::default()
                            });
                            batch.emit(
                                Topic::Notifications,
                                e.caused(0, batch.now_ms, actor(), end),
                            );
                            self.remember(tenant, t.notification_id.clone(), rec, true);
                        }
                    }
                }
                Payload::Sent(s) => {
                    let a = s.attempt_id.clone();
                    self.feed(
                        store,
                        batch,
                        e,
                        &s.notification_id,
                        |_| Some(RunInput::Sent { attempt_id: a }),
                        &mut idx,
                    )
                    .await?;
                }
                Payload::Failed(f) if f.stage == "dispatch" => {
                    let input = RunInput::Failed {
                        attempt_id: f.attempt_id.clone(),
                        retryable: f.retryable,
                        reason: f.reason.clone(),
                    };
                    self.feed(
                        store,
                        batch,
                        e,
                        &f.notification_id,
                        |_| Some(input),
                        &mut idx,
                    )
                    .await?;
                }
                Payload::Delivered(d) => {
                    let a = d.attempt_id.clone();
                    self.feed(
                        store,
                        batch,
                        e,
                        &d.notification_id,
                        |_| {
                            Some(RunInput::Engaged {
                                attempt_id: a,
                                kind: Engagement::Delivered,
                            })
                        },
                        &mut idx,
                    )
                    .await?;
                }
                Payload::Engaged(g) => {
                    let Some(kind) = Engagement::parse(&g.kind) else {
                        continue;
                    };
                    let given = g.attempt_id.clone();
                    self.feed(
                        store,
                        batch,
                        e,
                        &g.notification_id,
                        |rec| {
                            attempt_for(rec, &given)
                                .map(|attempt_id| RunInput::Engaged { attempt_id, kind })
                        },
                        &mut idx,
                    )
                    .await?;
                }
                Payload::CancelRequested(c) => {
                    let rows = store
                        .scan(&Scan::partition(
                            Table::Runs,
                            tenant,
                            &cancel_pk(&c.cancel_key),
                            100_000,
                        ))
                        .await?;
                    for (nid, _) in rows {
                        let nid = String::from_utf8_lossy(&nid).into_owned();
                        let reason = if c.reason.is_empty() {
                            format!("cancelled by key {:?}", c.cancel_key)
                        } else {
                            c.reason.clone()
                        };
                        self.feed(
                            store,
                            batch,
                            e,
                            &nid,
                            |_| Some(RunInput::Cancel { reason }),
                            &mut idx,
                        )
                        .await?;
                    }
                }
                Payload::DlqDiscarded(d) => {
                    if let Some(mut rec) = self
                        .take_run_record(store, tenant, &d.notification_id)
                        .await?
                    {
                        let discarded = rec.in_dlq;
                        if discarded {
                            rec.in_dlq = false;
                            batch
                                .writes
                                .delete(dead_letter_key(tenant, &d.notification_id));
                        }
                        self.remember(tenant, d.notification_id.clone(), rec, discarded);
                        if discarded {
                            self.dlq_changed(store, batch, e, tenant, -1).await?;
                        }
                    }
                }
                Payload::DlqRetried(r) => {
                    self.feed(
                        store,
                        batch,
                        e,
                        &r.notification_id,
                        |_| Some(RunInput::Retry),
                        &mut idx,
                    )
                    .await?;
                }
                Payload::TimerFired(t) => {
                    let seq = t.seq;
                    self.feed(
                        store,
                        batch,
                        e,
                        &t.notification_id,
                        |_| Some(RunInput::Timer { seq }),
                        &mut idx,
                    )
                    .await?;
                }
                // Other events on these topics are not the router's business.
                _ => {}
            }
        }
        self.write_changed_runs(batch);
        self.horizon.write(batch);
        self.report_metrics();
        Ok(())
    }
}

/// Runs-table partition listing the runs with a given cancellation key value
/// (notification ids are hex, so the prefix cannot collide with one).
fn cancel_pk(value: &str) -> String {
    format!("cancel:{value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::flow::run::{Attempt, Waiting};
    use clarion_domain::flow::Terminal;

    fn record(waiting: Waiting, terminal: Option<Terminal>, in_dlq: bool) -> RunRecord {
        let mut run = Run {
            notification_id: "0190aa00ffee".into(),
            workflow_id: "visit".into(),
            workflow_version: 3,
            pc: terminal.is_none().then_some(2),
            chain: 1,
            failures: 2,
            generation: 1,
            waiting,
            timer_seq: 5,
            step_status: Default::default(),
            attempts: Vec::new(),
            terminal,
            reason: "provider refused".into(),
        };
        run.step_status.insert("mail".into(), "failed".into());
        run.attempts.push(Attempt {
            attempt_id: "a1".into(),
            step: "mail".into(),
            channel: "email".into(),
            provider: "smtp".into(),
            at_ms: 1_700_000_000_123,
            error: Some("550 mailbox unavailable".into()),
            retryable: false,
            sent: false,
        });
        RunRecord {
            run,
            subscriber_id: "tech-7".into(),
            payload: json!({"day": "Friday", "n": 3, "nested": {"ok": true, "x": [1.5, null]}})
                .into(),
            contact: ContactOverride {
                email: "t@example.test".into(),
                locale: "fr-CA".into(),
                ..Default::default()
            },
            key: "acme/tech-7".into(),
            in_dlq,
        }
    }

    #[test]
    fn run_records_round_trip_and_are_smaller_than_json() {
        for rec in [
            record(Waiting::Nothing, None, false),
            record(
                Waiting::Outcome {
                    attempt_id: "a1".into(),
                },
                None,
                false,
            ),
            record(
                Waiting::Timer {
                    seq: 4,
                    purpose: Purpose::WaitTimeout,
                },
                None,
                false,
            ),
            record(Waiting::Nothing, Some(Terminal::DeadLettered), true),
        ] {
            let bytes = encode_run(&rec);
            assert_eq!(decode_run(&bytes).as_ref(), Some(&rec));
            let json = serde_json::to_vec(&rec).unwrap();
            assert!(
                bytes.len() * 4 < json.len() * 3,
                "{} vs {}",
                bytes.len(),
                json.len()
            );
            // Records written before the binary format still read.
            assert_eq!(decode_run(&json).as_ref(), Some(&rec));
        }
        assert_eq!(decode_run(b"\x07garbage"), None);
    }

    #[test]
    fn borrowed_keys_find_what_owned_keys_stored() {
        let mut m: FastMap<(String, String), u32> = FastMap::default();
        let mut v: FastMap<(String, String, u32), u32> = FastMap::default();
        for i in 0..200u32 {
            m.insert((format!("t{}", i % 3), format!("n{i}")), i);
            v.insert((format!("t{}", i % 3), format!("w{i}"), i % 5), i);
        }
        for i in 0..200u32 {
            let (t, n, w) = (format!("t{}", i % 3), format!("n{i}"), format!("w{i}"));
            assert_eq!(m.get(&Pair(&t, &n)), Some(&i));
            assert_eq!(v.get(&Versioned(&t, &w, i % 5)), Some(&i));
            // The same strings split differently are another key.
            assert_eq!(m.get(&Pair(&format!("{t}n"), &format!("{i}"))), None);
            assert_eq!(v.get(&Versioned(&t, &w, i % 5 + 1)), None);
        }
        assert_eq!(m.remove(&Pair("t1", "n1")), Some(1));
        assert!(!m.contains_key(&Pair("t1", "n1")));
    }

    #[test]
    fn ended_runs_are_stored_without_payload_and_contact() {
        for terminal in [
            Terminal::Completed,
            Terminal::Cancelled,
            Terminal::Suppressed,
        ] {
            let rec = record(Waiting::Nothing, Some(terminal), false);
            let full = encode_run(&record(Waiting::Nothing, None, false));
            let bytes = encode_run(&rec);
            let back = decode_run(&bytes).expect("decodes");
            assert_eq!(back.run, rec.run, "{terminal:?}: the run itself is kept");
            assert_eq!(back.subscriber_id, rec.subscriber_id);
            assert_eq!(back.key, rec.key);
            assert_eq!(*back.payload.json(), Value::Null, "{terminal:?}");
            assert_eq!(back.contact, ContactOverride::default(), "{terminal:?}");
            assert!(
                bytes.len() < full.len(),
                "{} vs {}",
                bytes.len(),
                full.len()
            );
        }
        // A dead letter may be retried: it keeps everything, in or out of
        // the queue (discarded ones are dead letters too).
        for in_dlq in [true, false] {
            let rec = record(Waiting::Nothing, Some(Terminal::DeadLettered), in_dlq);
            assert_eq!(decode_run(&encode_run(&rec)).as_ref(), Some(&rec));
        }
    }
}
