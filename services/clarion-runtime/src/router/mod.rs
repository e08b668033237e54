//! The router processor: runs workflows.
//!
//! It reads the recipient streams of its partition — triggers and subscriber
//! upserts, delivery outcomes, engagement, and its own fired timers — and
//! drives each notification's [`Run`](clarion_domain::flow::Run). It owns the
//! subscriber and run state of its partition (one writer), and reads tenant
//! configuration (workflow versions, templates) from the projection, caching
//! it: published workflow versions are immutable, templates are re-read at
//! most every second.
//!
//! The rules are the domain's (`clarion_domain::recipient`: acceptance,
//! content dedup, throttling, dead-letter accounting; `flow::run`: the
//! workflow engine). This module is their adapter: [`Processor::process`]
//! loads what a batch needs, hands each input to the function for its kind,
//! and those turn the deciders' decisions into writes, emits and timers.
//! Caches (`cache`, `runs`) and metrics stay here, out of the rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::flow::run::{FailureStage, Purpose};
use clarion_domain::flow::{Engagement, Flow, Input as RunInput, RetryPolicy, TenantLimits};
use clarion_domain::payload::PayloadCache;
use clarion_domain::recipient::{self, Map as FastMap};
use clarion_domain::template::CompiledTemplate;
use clarion_domain::{Actor, Channel, Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};
use prost::Message;

use crate::horizon::Horizon;
use crate::processor::{Batch, Input, ProcessError, Processor};
use crate::topics::Topic;

mod apps;
mod cache;
mod devices;
mod digest;
mod dlq;
mod drive;
mod marks;
mod personal;
mod preference_check;
mod preferences;
mod record;
mod runs;
mod schedules;
mod sealed_contacts;
mod sealed_runs;
mod throttle;
mod timing;
mod trigger;

pub use devices::{device_key, device_token_key};
pub use dlq::dlq_size;
pub use preference_check::preferences_key;
pub use preferences::{history_key as preference_history_key, VERIFY_STEP};
pub use record::{
    dead_letter_key, decode_run, encode_run, encode_run_with, load_run, settled, ContactOverride,
    RunRecord,
};
pub use schedules::{schedule_key, SCHEDULES_PK};
pub use timing::{quiet_hours_key, DEFAULT_RELEASE_SPREAD_MS};

pub const ROUTER: &str = clarion_domain::router::ROUTER;

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

impl DlqAlerts {
    /// A tenant's alert threshold (0: no alert).
    pub fn threshold_for(&self, tenant: &str) -> u64 {
        self.per_tenant
            .get(tenant)
            .copied()
            .unwrap_or(self.threshold)
    }
}

type TemplateEntry = (Instant, Option<Arc<CompiledTemplate>>);
/// A tenant's topics by id.
type TenantTopics = FastMap<String, Arc<clarion_domain::preferences::topic::Topic>>;
/// A tenant's apps by id.
type TenantApps = FastMap<String, Arc<clarion_domain::push::App>>;

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
    /// The recipients' state as far as loaded (profiles, content marks,
    /// throttle windows, dead-letter counts): the domain's aggregate.
    recipients: recipient::State,
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
    /// The batch's last trigger payload: a request's recipients share it.
    payloads: PayloadCache,
    /// Opens sealed personal fields (`crate::personal`); `None`: none sealed.
    personal: Option<Arc<crate::personal::Personal>>,
    /// Tenant limits by tenant, with when they were read.
    tenant_limits: HashMap<String, (Instant, Option<Arc<TenantLimits>>)>,
    /// Topics by tenant, with when they were read.
    topics: FastMap<String, (Instant, Arc<TenantTopics>)>,
    /// Apps by tenant, with when they were read.
    apps: FastMap<String, (Instant, Arc<TenantApps>)>,
    /// Tenants whose subscribers may have stored preferences here.
    preference_marks: marks::Marks,
    /// Tenants whose subscribers may have devices here.
    device_marks: marks::Marks,
    /// A device not seen for this long gets no pushes.
    device_expiry_ms: i64,
    /// What a subscriber without stored preferences is checked against.
    no_preferences: clarion_domain::preferences::Preferences,
    /// Preference events applied in this batch (a repeat in the same batch
    /// is not in the store yet).
    applied_preference_events: Vec<clarion_domain::Id>,
    partitions: u32,
    dlq_alerts: DlqAlerts,
    template_refresh: Duration,
    /// Which triggers surely have no run yet (no lookup needed).
    horizon: Horizon,
    /// The digests this batch touched (`digest.rs`).
    digests: digest::Touched,
    /// Send windows and quiet hours: tenant settings, subscribers' quiet hours.
    timing: timing::Timing,
}

/// Cache bounds (entries per router partition).
const MAX_CACHED_RUNS: usize = 200_000;
const MAX_CACHED_SUBSCRIBERS: usize = 100_000;
const MAX_CACHED_THROTTLE_LOGS: usize = 100_000;
const MAX_CACHED_CONTENT_HASHES: usize = 100_000;

fn actor() -> Actor {
    Actor::System(ROUTER.into())
}

impl Router {
    pub fn new(default_providers: HashMap<Channel, String>) -> Router {
        Router {
            default_providers,
            retry: RetryPolicies::default(),
            recipients: recipient::State::default(),
            flows: FastMap::default(),
            templates: FastMap::default(),
            runs: FastMap::default(),
            ended: Vec::new(),
            changed: Vec::new(),
            prefetched: FastMap::default(),
            cached_runs_delta: 0,
            runs_ended: Vec::new(),
            payloads: PayloadCache::default(),
            personal: None,
            tenant_limits: HashMap::new(),
            topics: FastMap::default(),
            apps: FastMap::default(),
            preference_marks: marks::Marks::of(Table::Preferences),
            device_marks: marks::Marks::of(Table::Devices),
            device_expiry_ms: recipient::devices::expiry_ms_of_days(
                clarion_domain::push::DEFAULT_DEVICE_EXPIRY_DAYS,
            ),
            no_preferences: Default::default(),
            applied_preference_events: Vec::new(),
            partitions: 1,
            dlq_alerts: DlqAlerts::default(),
            template_refresh: Duration::from_secs(1),
            horizon: Horizon::default(),
            digests: digest::Touched::default(),
            timing: timing::Timing::default(),
        }
    }

    /// Held sends are released within this long after quiet hours end
    /// (`scheduling.release-spread`), spread by attempt id.
    pub fn with_release_spread(mut self, spread: Duration) -> Router {
        self.timing.spread_ms = i64::try_from(spread.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Partition count of the router's input: workflow-wide throttle limits
    /// are shared equally among partitions.
    pub fn with_partitions(mut self, partitions: u32) -> Router {
        self.partitions = partitions.max(1);
        self
    }

    pub fn with_dlq_alerts(mut self, alerts: DlqAlerts) -> Router {
        self.dlq_alerts = alerts;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicies) -> Router {
        self.retry = retry;
        self
    }

    /// How long a device may go unseen before pushes skip it (default
    /// `push::DEFAULT_DEVICE_EXPIRY_DAYS`).
    /// Opens sealed personal fields of inputs to decide (issue #32).
    pub fn with_personal(mut self, personal: Arc<crate::personal::Personal>) -> Router {
        self.personal = Some(personal);
        self
    }

    pub fn with_device_expiry(mut self, expiry: Duration) -> Router {
        self.device_expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Runs held in memory (in flight, or ended in the last batch).
    pub fn cached_runs(&self) -> usize {
        self.runs.len()
    }

    /// What the recipient deciders see besides the state.
    fn ctx(&self, batch: &Batch) -> recipient::Ctx {
        recipient::Ctx {
            now_ms: batch.now_ms,
            partition: batch.partition,
            partitions: self.partitions,
        }
    }

    /// One input, by kind.
    async fn route(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
    ) -> Result<(), ProcessError> {
        let mut idx = 0u32;
        match &e.payload {
            Payload::SubscriberUpserted(s) => {
                let open = self.opened(e).await?;
                let Payload::SubscriberUpserted(opened) = &open.payload else {
                    unreachable!("opening keeps the payload's type")
                };
                let profile = clarion_domain::subscriber::Subscriber::from_event(opened);
                self.on_subscriber(store, batch, e, s, profile).await?
            }
            Payload::Triggered(_) => {
                let open = self.opened(e).await?;
                let Payload::Triggered(t) = &open.payload else {
                    unreachable!("opening keeps the payload's type")
                };
                self.on_triggered(store, batch, e, t).await?
            }
            Payload::CancelRequested(c) => self.on_cancel(store, batch, e, c).await?,
            Payload::SubscriberErased(x) => self.on_erased(e.tenant.as_str(), &x.subscriber_id),
            Payload::DlqDiscarded(d) => self.on_discarded(store, batch, e, d).await?,
            Payload::PreferencesChanged(_)
            | Payload::ContactChanged(_)
            | Payload::ContactVerified(_)
            | Payload::ContactVerificationFailed(_) => {
                let open = self.opened(e).await?;
                self.on_preference_event(store, batch, e, &open).await?
            }
            Payload::QuietHoursSet(q) if !q.subscriber_id.is_empty() => {
                self.on_quiet_hours(batch, e, q)
            }
            Payload::DeviceRegistered(_)
            | Payload::DeviceTokenRotated(_)
            | Payload::DeviceRevoked(_)
            | Payload::DeviceSeen(_)
            | Payload::PushRejected(_) => self.on_device_event(store, batch, e).await?,
            Payload::ScheduleSet(_)
            | Payload::ScheduleStateChanged(_)
            | Payload::ScheduleDue(_) => self.on_schedule_event(store, batch, e).await?,
            Payload::TimerFired(t) if t.purpose == Purpose::Digest.as_str() => {
                self.on_digest_timer(store, batch, e, t).await?
            }
            Payload::DigestFlushRequested(f) => self.on_digest_flush(store, batch, e, f).await?,
            other => {
                // Facts about an existing run; other events on these topics
                // are not the router's business.
                if let Some((nid, fact)) = Fact::of(other) {
                    self.feed(store, batch, e, nid, |rec| fact.input(rec), &mut idx)
                        .await?;
                }
            }
        }
        // A run that joined a digest and filled it: the leader sends now.
        self.close_filled_digests(store, batch, e).await
    }

    /// A subscriber's profile, replaced whole: stored, and known from now
    /// on. A contact it sets ends a pending verification of another one.
    async fn on_subscriber(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        s: &pb::SubscriberUpserted,
        profile: clarion_domain::subscriber::Subscriber,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        self.profile_replaced(store, batch, tenant, &profile)
            .await?;
        self.store_profile(batch, tenant, s, profile);
        Ok(())
    }

    /// Writes a subscriber's profile row (`s`, whose domain form is
    /// `profile`) and keeps it for the sends that follow.
    fn store_profile(
        &mut self,
        batch: &mut Batch,
        tenant: &str,
        s: &pb::SubscriberUpserted,
        profile: clarion_domain::subscriber::Subscriber,
    ) {
        batch.writes.put(
            RowKey::new(Table::Subscribers, tenant, &s.subscriber_id, Vec::new()),
            Bytes::from(s.encode_to_vec()),
        );
        self.recipients.evolve(recipient::Event::ProfileUpserted(
            recipient::profile::Upserted {
                tenant: tenant.to_string(),
                subscriber: profile,
            },
        ));
    }

    /// The provider of a channel when a step names none: the configured
    /// default, else the built-in one (push: the dispatcher's `push`
    /// provider, which fans out to APNs and FCM; in_app: the inbox; others:
    /// the sink).
    fn default_provider(&self, channel: Channel) -> String {
        if let Some(p) = self.default_providers.get(&channel) {
            return p.clone();
        }
        match channel {
            Channel::Push => "push",
            Channel::InApp => "inbox",
            _ => "sink",
        }
        .to_string()
    }
}

/// A fact about an existing run, as its input.
enum Fact {
    Input(RunInput),
    /// Engagement, credited to the latest sent attempt when it names none.
    Engaged {
        attempt_id: String,
        kind: Engagement,
    },
}

impl Fact {
    /// The notification a payload is about, and the fact for its run.
    fn of(payload: &Payload) -> Option<(&str, Fact)> {
        match payload {
            Payload::Sent(s) => input(
                &s.notification_id,
                RunInput::Sent {
                    attempt_id: s.attempt_id.clone(),
                    provider: s.provider.clone(),
                },
            ),
            Payload::Failed(f) if f.stage == FailureStage::Dispatch.as_str() => input(
                &f.notification_id,
                RunInput::Failed {
                    attempt_id: f.attempt_id.clone(),
                    retryable: f.retryable,
                    reason: f.reason.clone(),
                },
            ),
            Payload::Delivered(d) => input(
                &d.notification_id,
                RunInput::Engaged {
                    attempt_id: d.attempt_id.clone(),
                    kind: Engagement::Delivered,
                },
            ),
            Payload::Engaged(g) => Engagement::parse(&g.kind).map(|kind| {
                let attempt_id = g.attempt_id.clone();
                (
                    g.notification_id.as_str(),
                    Fact::Engaged { attempt_id, kind },
                )
            }),
            Payload::DlqRetried(r) => input(&r.notification_id, RunInput::Retry),
            Payload::TimerFired(t) => input(&t.notification_id, RunInput::Timer { seq: t.seq }),
            _ => None,
        }
    }

    fn input(self, rec: &RunRecord) -> Option<RunInput> {
        match self {
            Fact::Input(i) => Some(i),
            Fact::Engaged { attempt_id, kind } => attempt_for(rec, &attempt_id)
                .map(|attempt_id| RunInput::Engaged { attempt_id, kind }),
        }
    }
}

/// A plain input for the run of `nid`.
fn input(nid: &str, i: RunInput) -> Option<(&str, Fact)> {
    Some((nid, Fact::Input(i)))
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
        self.preference_marks.read_once(store).await?;
        self.device_marks.read_once(store).await?;
        self.timing.start_batch(store).await?;
        self.prefetch_runs(store, inputs).await?;
        self.prefetch_preferences(store, inputs).await?;
        for input in inputs {
            self.route(store, batch, &input.event).await?;
        }
        self.write_changed_runs(batch).await?;
        self.seal_preference_rows(batch).await?;
        self.horizon.write(batch);
        self.report_metrics();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::cache::Versioned;
    use super::*;
    use clarion_domain::recipient::Pair;

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
}
