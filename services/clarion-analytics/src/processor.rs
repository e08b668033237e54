//! The analytics processor: turns send outcomes and engagement into the
//! counts of [`crate::rows`]. Every write is a function of the events
//! (bucket times are the events' times), so a store rebuilt from the log
//! holds the same figures.
//!
//! **Counted from the outcomes.** `NotificationSent`, `-Delivered` and
//! `-Failed` carry what the send was (`SendContext`: channel, provider,
//! workflow, template, the request's time; the trigger's time is the
//! notification id's), so an outcome is counted from its own event. The
//! requests that say so (`DispatchRequested.context_in_outcomes`) are
//! skipped: nothing is written for them.
//!
//! **One row per send, written when it first counts.** A send's row
//! ([`Attempt`], `s/<notification>` / attempt id) keeps what engagement
//! needs (the dimensions and the sent time: opens and clicks carry no
//! context) and the bits of what was counted. For a send reported by the
//! dispatcher it is written once, in the batch of its first outcome (sent
//! and delivered, reported together, are usually one batch), and again
//! only when a later fact counts something new (a status callback's
//! delivery, an open, a click).
//!
//! **Repeats count nothing, without the runner's dedup table.** A fact may
//! come twice: an outbox publishes at least once (the same event again), a
//! dispatcher's effect may run again after a crash (the same event ids,
//! possibly another outcome), a status callback reports a delivery the
//! dispatcher reported, a second pixel loads. The dedup table would catch
//! only the first kind and write a row per input event (kept a week) — more
//! than the row per send it would replace. Instead every fact goes through
//! its send's row: the row holds a bit per outcome and latency counted, and
//! a batch writes the row in the same store write as the counts it added.
//! So a repeat in the same batch finds the bit in memory, a later one finds
//! it in the stored row (the first one's batch committed both or neither),
//! and counts nothing. The row being written at the first outcome rather
//! than at the request loses nothing here: no count is made before it.
//!
//! **Logs from before.** A request without `context_in_outcomes` (logged
//! before the outcomes carried their context, or by an older router) is
//! joined as it always was: its row is written at the request, and its
//! outcomes (without context) count under the row's dimensions. Outcomes
//! and engagement with no context (status callbacks, engagement, old
//! events) whose send has no `s/` row yet look for the row an older
//! release wrote (`a/<attempt>`, and `n/<notification>` for engagement
//! naming no attempt), so the engagement of sends made before an upgrade
//! is still counted (for `analytics.attempt-retention-days`).
//!
//! A batch adds its observations up in memory first, then reads each
//! bucket row it touches once, adds, and writes it once: a busy minute of
//! one channel costs one row write per batch, not one per event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use clarion_domain::{send, Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_runtime::{Batch, Input, ProcessError, Processor};
use clarion_store::{RowKey, Scan, Store, Table};

use crate::attempt::{Attempt, Fact};
use crate::counts::Counts;
use crate::dimension::Dims;
use crate::rows::{self, Granularity, ProviderState};
use crate::sends::Sends;

pub const ANALYTICS: &str = "analytics";

/// How long each kind of row is kept (store TTLs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub minutes: Duration,
    pub hours: Duration,
    /// A send's row: engagement later than this is not counted.
    pub attempts: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minutes: Duration::from_secs(48 * 3600),
            hours: Duration::from_secs(90 * 86_400),
            attempts: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The analytics projection's processor. Stateless between batches.
#[derive(Clone, Debug, Default)]
pub struct AnalyticsProcessor {
    retention: Retention,
    /// The input partition this one runs on: the shard of the rows it
    /// shares with the other partitions' (see [`crate::rows`]).
    shard: u32,
}

impl AnalyticsProcessor {
    pub fn new(retention: Retention, partition: u32) -> AnalyticsProcessor {
        AnalyticsProcessor {
            retention,
            shard: partition,
        }
    }
}

/// A send's row: (tenant, notification id, attempt id). Ordered, so a
/// notification's sends are a range.
type SendKey = (String, String, String);

/// Most sends of one notification looked at for its latest.
const MAX_SENDS: usize = 100;

/// One batch's work: the sends it touched and what it adds up.
#[derive(Default)]
struct Work {
    /// Each send's state and whether the batch changed it.
    sends: BTreeMap<SendKey, (Attempt, bool)>,
    /// Notifications whose stored sends were all read (for the latest).
    scanned: HashSet<(String, String)>,
    observed: Sends,
}

/// Which send an event is about.
enum Target {
    Attempt(String),
    /// Engagement that names no attempt (an app's report): the
    /// notification's latest send.
    Latest,
}

/// What one event says of one send.
struct Found {
    notification: String,
    target: Target,
    /// What the send was, from the context of an outcome.
    context: Option<Fact>,
    fact: Fact,
}

impl Found {
    /// Whether a send without an `s/` row may have a legacy one: facts that
    /// say nothing of what the send was (engagement, status callbacks,
    /// outcomes logged before they carried their context).
    fn may_be_legacy(&self) -> bool {
        self.context.is_none() && !matches!(self.fact, Fact::Dispatched { .. })
    }
}

#[async_trait]
impl Processor for AnalyticsProcessor {
    fn name(&self) -> &'static str {
        ANALYTICS
    }

    /// Repeats are recognised per send (see the module docs).
    fn dedup(&self) -> bool {
        false
    }

    /// Counts are read minutes later: larger batches fold a send's
    /// outcomes into one row write.
    fn follows(&self) -> bool {
        true
    }

    /// Of the triggers stream only engagement: not every trigger's payload.
    fn accepted_types(&self) -> Option<&'static [&'static str]> {
        Some(&clarion_domain::event::SEND_FACTS)
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let found: Vec<(&str, Found)> = inputs
            .iter()
            .filter_map(|i| fact_of(&i.event).map(|f| (i.event.tenant.as_str(), f)))
            .collect();
        let mut work = Work::default();
        // One read of every send the batch names, not one per event.
        work.load(store, &found).await?;
        for (tenant, f) in found {
            work.apply(store, tenant, f).await?;
        }
        work.finish(store, batch, &self.retention, self.shard).await
    }
}

fn poison(what: &str, e: impl std::fmt::Display) -> ProcessError {
    ProcessError::Poison {
        offset: 0,
        reason: format!("stored analytics {what}: {e}"),
    }
}

fn decode(b: &[u8]) -> Result<Attempt, ProcessError> {
    Attempt::decode(b).map_err(|e| poison("send", e))
}

/// When the notification's trigger was accepted: its id's time (0 when
/// the id is not a time-ordered one).
fn trigger_ms(notification_id: &str) -> i64 {
    Id::parse_hex(notification_id).map_or(0, |i| i.time_ms())
}

/// What an event says, of which send; `None` for what is not counted: a
/// request whose outcomes carry its context, a failure before any send
/// (stage `route`: not a message), the operator's own sends.
fn fact_of(e: &Event) -> Option<Found> {
    let at = e.occurred_at_ms;
    match &e.payload {
        Payload::DispatchRequested(d) => {
            if d.context_in_outcomes || send::is_operators(d) || d.attempt_id.is_empty() {
                return None;
            }
            let fact = Fact::Dispatched {
                dims: Dims {
                    channel: d.channel.clone(),
                    provider: d.provider.clone(),
                    workflow: d.workflow_id.clone(),
                    template: d.template_id.clone(),
                },
                trigger_ms: trigger_ms(&d.notification_id),
                at,
            };
            let attempt = Target::Attempt(d.attempt_id.clone());
            Some(found(&d.notification_id, attempt, None, fact))
        }
        Payload::Sent(s) => outcome(
            &s.notification_id,
            &s.attempt_id,
            &s.context,
            Fact::Sent { at },
        ),
        Payload::Delivered(d) => outcome(
            &d.notification_id,
            &d.attempt_id,
            &d.context,
            Fact::Delivered { at },
        ),
        Payload::Failed(f) if f.stage != "route" => {
            let fact = Fact::Failed {
                at,
                permanent: !f.retryable,
                reason: f.reason.clone(),
            };
            outcome(&f.notification_id, &f.attempt_id, &f.context, fact)
        }
        Payload::Engaged(g) => engagement(g, at),
        _ => None,
    }
}

fn found(notification: &str, target: Target, context: Option<Fact>, fact: Fact) -> Found {
    Found {
        notification: notification.to_string(),
        target,
        context,
        fact,
    }
}

/// An outcome, with what its context says the send was.
fn outcome(
    notification: &str,
    attempt: &str,
    context: &Option<pb::SendContext>,
    fact: Fact,
) -> Option<Found> {
    if attempt.is_empty() || context.as_ref().is_some_and(|c| c.operator) {
        return None;
    }
    let context = context.as_ref().map(|c| Fact::Dispatched {
        dims: Dims {
            channel: c.channel.clone(),
            provider: c.provider.clone(),
            workflow: c.workflow_id.clone(),
            template: c.template_id.clone(),
        },
        trigger_ms: trigger_ms(notification),
        at: c.requested_at_ms,
    });
    let target = Target::Attempt(attempt.to_string());
    Some(found(notification, target, context, fact))
}

/// Engagement names its attempt when the link, pixel or inbox item carried
/// it; an app's report may not: it is the notification's latest send.
fn engagement(g: &pb::EngagementRecorded, at: i64) -> Option<Found> {
    let fact = match g.kind.as_str() {
        "delivered" => Fact::Delivered { at },
        "opened" | "read" | "acknowledged" => Fact::Opened { at },
        "clicked" => Fact::Clicked { at },
        _ => return None,
    };
    let target = if g.attempt_id.is_empty() {
        Target::Latest
    } else {
        Target::Attempt(g.attempt_id.clone())
    };
    Some(found(&g.notification_id, target, None, fact))
}

/// Whether `k` is a send of `tenant`'s notification `nid`.
fn of(k: &SendKey, tenant: &str, nid: &str) -> bool {
    k.0 == tenant && k.1 == nid
}

impl Work {
    /// Reads the stored rows of the sends the batch names: `s/` rows in one
    /// read, then, for facts that may be about a send an older release
    /// counted, its legacy `a/` row.
    async fn load(
        &mut self,
        store: &dyn Store,
        found: &[(&str, Found)],
    ) -> Result<(), ProcessError> {
        let mut wanted: BTreeMap<SendKey, bool> = BTreeMap::new();
        for (tenant, f) in found {
            if let Target::Attempt(a) = &f.target {
                let key = (tenant.to_string(), f.notification.clone(), a.clone());
                *wanted.entry(key).or_default() |= f.may_be_legacy();
            }
        }
        let keys: Vec<RowKey> = wanted
            .keys()
            .map(|(t, n, a)| rows::send_key(t, n, a))
            .collect();
        let stored = store.get_many(&keys).await?;
        let mut legacy = Vec::new();
        for ((key, may_be_legacy), found) in wanted.into_iter().zip(stored) {
            match found {
                Some(b) => {
                    self.sends.insert(key, (decode(&b)?, false));
                }
                None if may_be_legacy => legacy.push(key),
                None => {
                    self.sends.insert(key, Default::default());
                }
            }
        }
        if legacy.is_empty() {
            return Ok(());
        }
        let keys: Vec<RowKey> = legacy
            .iter()
            .map(|(t, _, a)| rows::attempt_key(t, a))
            .collect();
        let stored = store.get_many(&keys).await?;
        for (key, found) in legacy.into_iter().zip(stored) {
            let a = found.map(|b| decode(&b)).transpose()?.unwrap_or_default();
            self.sends.insert(key, (a, false));
        }
        Ok(())
    }

    /// The notification's latest send: the latest sent one, else the
    /// latest requested (as the router picks it for such engagement). Its
    /// rows are the stored ones and the batch's; without any, the legacy
    /// `n/` row names it.
    async fn latest(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        nid: &str,
    ) -> Result<Option<String>, ProcessError> {
        let id = (tenant.to_string(), nid.to_string());
        if !self.scanned.contains(&id) {
            let scan = Scan::partition(Table::Analytics, tenant, &rows::sends_pk(nid), MAX_SENDS);
            for (ck, v) in store.scan(&scan).await? {
                let key = (
                    id.0.clone(),
                    id.1.clone(),
                    String::from_utf8_lossy(&ck).into_owned(),
                );
                // The batch's own state of a send is newer than the store's.
                if let std::collections::btree_map::Entry::Vacant(e) = self.sends.entry(key) {
                    e.insert((decode(&v)?, false));
                }
            }
            self.scanned.insert(id.clone());
        }
        let from = (id.0.clone(), id.1.clone(), String::new());
        let best = self
            .sends
            .range(from..)
            .take_while(|(k, _)| of(k, tenant, nid))
            .max_by_key(|(k, (a, _))| (a.sent_ms > 0, a.dispatch_ms, k.2.as_str()))
            .map(|(k, _)| k.2.clone());
        if best.is_some() {
            return Ok(best);
        }
        let Some(b) = store.get(&rows::notification_key(tenant, nid)).await? else {
            return Ok(None);
        };
        let attempt = String::from_utf8_lossy(&b).into_owned();
        // Its row expires with the pointer: without it there is nothing to
        // count the engagement under.
        let Some(row) = store.get(&rows::attempt_key(tenant, &attempt)).await? else {
            return Ok(None);
        };
        let key = (id.0, id.1, attempt.clone());
        self.sends.insert(key, (decode(&row)?, false));
        Ok(Some(attempt))
    }

    async fn apply(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        f: Found,
    ) -> Result<(), ProcessError> {
        let attempt = match f.target {
            Target::Attempt(a) => a,
            Target::Latest => match self.latest(store, tenant, &f.notification).await? {
                Some(a) => a,
                None => return Ok(()),
            },
        };
        let key = (tenant.to_string(), f.notification, attempt);
        let (row, dirty) = self.sends.entry(key).or_default();
        let mut changed = false;
        if let Some(context) = f.context {
            changed |= row.apply(context);
        }
        changed |= row.apply(f.fact);
        if !changed {
            return Ok(());
        }
        *dirty = true;
        let observations = row.settle();
        let Some(dims) = &row.dims else {
            return Ok(());
        };
        for obs in &observations {
            crate::metrics::record(tenant, dims, obs);
            self.observed.observe(tenant, dims, obs, &row.reason);
        }
        Ok(())
    }

    /// Writes what the batch changed: the send rows, and each touched
    /// bucket row read once, merged and written once.
    async fn finish(
        self,
        store: &dyn Store,
        batch: &mut Batch,
        retention: &Retention,
        shard: u32,
    ) -> Result<(), ProcessError> {
        let w = &mut batch.writes;
        for ((tenant, nid, attempt), (a, dirty)) in self.sends {
            if dirty {
                w.put_ttl(
                    rows::send_key(&tenant, &nid, &attempt),
                    a.encode(),
                    retention.attempts,
                );
            }
        }
        let spread = self.observed.spread();
        let (keys, adds): (Vec<RowKey>, Vec<(Granularity, Counts)>) = spread
            .buckets
            .into_iter()
            .map(|((t, g, d, v, start), c)| (rows::bucket_key(&t, g, d, &v, start, shard), (g, c)))
            .unzip();
        let stored = store.get_many(&keys).await?;
        for ((key, (g, add)), old) in keys.into_iter().zip(adds).zip(stored) {
            let mut counts = match old {
                Some(b) => Counts::decode(&b).map_err(|e| poison("counts", e))?,
                None => Counts::default(),
            };
            counts.merge(&add);
            let ttl = match g {
                Granularity::Minute => retention.minutes,
                Granularity::Hour => retention.hours,
            };
            w.put_ttl(key, counts.encode(), ttl);
        }
        for ((tenant, d, value), at) in spread.values {
            w.put_ttl(
                rows::value_key(&tenant, d, &value, shard),
                rows::time_ck(at),
                retention.hours,
            );
        }
        providers(store, w, spread.providers, shard).await
    }
}

/// Merges the batch's provider outcomes into the stored health rows.
async fn providers(
    store: &dyn Store,
    w: &mut clarion_store::WriteBatch,
    touched: HashMap<(String, String), ProviderState>,
    shard: u32,
) -> Result<(), ProcessError> {
    for ((tenant, provider), new) in touched {
        let key = rows::provider_key(&tenant, &provider, shard);
        let mut state = match store.get(&key).await? {
            Some(b) => ProviderState::decode(&b).map_err(|e| poison("provider", e))?,
            None => ProviderState::default(),
        };
        state.last_success_ms = state.last_success_ms.max(new.last_success_ms);
        if new.last_failure_ms >= state.last_failure_ms && new.last_failure_ms > 0 {
            state.last_failure_ms = new.last_failure_ms;
            state.last_error = new.last_error;
        }
        w.put(key, state.encode());
    }
    Ok(())
}

#[cfg(test)]
mod outcome_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{self, ReportQuery};
    use crate::Dimension;
    use clarion_domain::{Actor, TenantId};
    use clarion_store::embedded::SqliteStore;

    const T0: i64 = 1_772_445_600_000;

    fn input(tenant: &TenantId, n: u8, payload: Payload) -> Input {
        let e = Event {
            id: Id::derive(&[&[n]]),
            tenant: tenant.clone(),
            partition_key: format!("{}/sub-{n}", tenant.as_str()),
            occurred_at_ms: T0 + 1_000,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload,
        };
        Input {
            offset: n.into(),
            raw: e.encode().into(),
            event: e,
        }
    }

    fn dispatch(n: u8, provider: &str) -> Payload {
        Payload::DispatchRequested(pb::DispatchRequested {
            notification_id: Id::time_ordered(T0, &[&[n]]).to_hex(),
            attempt_id: format!("attempt-{n}"),
            channel: "email".into(),
            provider: provider.into(),
            workflow_id: "welcome".into(),
            subscriber_id: format!("sub-{n}"),
            ..Default::default()
        })
    }

    /// Two partitions' runners count one tenant's minute at the same
    /// time, each from what it read before the other wrote: with one
    /// shared row, one would overwrite the other (a lost update). Each
    /// writes its own shard, and the report adds them up — per tenant.
    #[tokio::test]
    async fn partitions_counting_one_bucket_at_once_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        let (acme, globex) = (
            TenantId::parse("acme").unwrap(),
            TenantId::parse("globex").unwrap(),
        );
        let mut shards = [
            AnalyticsProcessor::new(Retention::default(), 0),
            AnalyticsProcessor::new(Retention::default(), 1),
        ];
        // Counted once an outcome is known: each dispatch is sent.
        let sent = |t: &TenantId, n: u8, provider: &str| {
            let d = dispatch(n, provider);
            let Payload::DispatchRequested(r) = &d else {
                unreachable!()
            };
            let s = Payload::Sent(pb::NotificationSent {
                notification_id: r.notification_id.clone(),
                attempt_id: r.attempt_id.clone(),
                ..Default::default()
            });
            [input(t, n, d), input(t, n + 100, s)]
        };
        let inputs: [Vec<Input>; 2] = [
            [sent(&acme, 1, "smtp"), sent(&acme, 2, "smtp")].concat(),
            [sent(&acme, 3, "smtp"), sent(&globex, 4, "ses")].concat(),
        ];
        // Both decide before either commits.
        let mut batches = Vec::new();
        for (p, inputs) in shards.iter_mut().zip(&inputs) {
            let mut batch = Batch::default();
            p.process(&store, &mut batch, inputs).await.unwrap();
            batches.push(batch);
        }
        for b in batches {
            store.write(b.writes).await.unwrap();
        }
        let q = |d| ReportQuery {
            dimension: d,
            value: None,
            from_ms: T0,
            to_ms: T0 + 3_600_000,
            granularity: Granularity::Minute,
        };
        let all = query::report(&store, "acme", &q(Dimension::All))
            .await
            .unwrap();
        assert_eq!(all.groups.len(), 1);
        assert_eq!(all.groups[0].totals.attempted, 3);
        assert_eq!(all.groups[0].series.len(), 1, "one minute, shards added");
        let providers = query::report(&store, "acme", &q(Dimension::Provider))
            .await
            .unwrap();
        let names: Vec<&str> = providers.groups.iter().map(|g| g.value.as_str()).collect();
        assert_eq!(names, ["smtp"], "each value once, whatever wrote it");
        let other = query::report(&store, "globex", &q(Dimension::All))
            .await
            .unwrap();
        assert_eq!(other.groups[0].totals.attempted, 1);
    }
}
