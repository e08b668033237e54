//! The analytics processor: turns dispatches, outcomes and engagement into
//! the counts of [`crate::rows`]. Every write is a function of the events
//! (bucket times are the events' times), so a store rebuilt from the log
//! holds the same figures, and a repeat of an event changes nothing (the
//! attempt row remembers what it counted): the runner's dedup table is not
//! needed.
//!
//! A batch adds its observations up in memory first, then reads each
//! bucket row it touches once, adds, and writes it once: a busy minute of
//! one channel costs one row write per batch, not one per event.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::{Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_runtime::{Batch, Input, ProcessError, Processor};
use clarion_store::{RowKey, Store};

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
    /// An attempt's join row: engagement later than this is not counted.
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

/// One batch's work: the attempts it touched and what it adds up.
#[derive(Default)]
struct Work {
    attempts: HashMap<(String, String), (Attempt, bool)>,
    latest: HashMap<(String, String), String>,
    sends: Sends,
}

#[async_trait]
impl Processor for AnalyticsProcessor {
    fn name(&self) -> &'static str {
        ANALYTICS
    }

    /// Repeats are recognised per attempt (see the module docs).
    fn dedup(&self) -> bool {
        false
    }

    /// Counts are read minutes later: larger batches fold an attempt's
    /// dispatch, send and delivery into one row write.
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
        let mut work = Work::default();
        let mut facts = Vec::with_capacity(inputs.len());
        for input in inputs {
            let e = &input.event;
            if let Some((attempt_id, fact)) = work.fact_of(store, e).await? {
                facts.push((e.tenant.as_str(), attempt_id, fact));
            }
        }
        // One read of every attempt the batch touches, not one per event.
        work.load_attempts(store, facts.iter().map(|(t, a, _)| (*t, a.as_str())))
            .await?;
        for (tenant, attempt_id, fact) in facts {
            work.apply(store, tenant, &attempt_id, fact).await?;
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

/// The dimensions a dispatch is counted under; `None` for sends that are
/// the operator's, not a tenant's message (dead-letter alerts name no
/// workflow and no subscriber).
fn dims_of(d: &pb::DispatchRequested) -> Option<Dims> {
    if d.workflow_id.is_empty() && d.subscriber_id.is_empty() {
        return None;
    }
    Some(Dims {
        channel: d.channel.clone(),
        provider: d.provider.clone(),
        workflow: d.workflow_id.clone(),
        template: d.template_id.clone(),
    })
}

impl Work {
    /// The attempt an event is about and what it says of it.
    async fn fact_of(
        &mut self,
        store: &dyn Store,
        e: &Event,
    ) -> Result<Option<(String, Fact)>, ProcessError> {
        let at = e.occurred_at_ms;
        let found = match &e.payload {
            Payload::DispatchRequested(d) => dims_of(d).map(|dims| {
                let tenant = e.tenant.as_str().to_string();
                self.latest
                    .insert((tenant, d.notification_id.clone()), d.attempt_id.clone());
                let trigger_ms = Id::parse_hex(&d.notification_id).map_or(0, |i| i.time_ms());
                let fact = Fact::Dispatched {
                    dims,
                    trigger_ms,
                    at,
                };
                (d.attempt_id.clone(), fact)
            }),
            Payload::Sent(s) => Some((s.attempt_id.clone(), Fact::Sent { at })),
            Payload::Delivered(d) => Some((d.attempt_id.clone(), Fact::Delivered { at })),
            // A failure before any send (stage `route`) is not a message.
            Payload::Failed(f) if f.stage != "route" => {
                let fact = Fact::Failed {
                    at,
                    permanent: !f.retryable,
                    reason: f.reason.clone(),
                };
                Some((f.attempt_id.clone(), fact))
            }
            Payload::Engaged(g) => return self.engagement(store, e, g).await,
            _ => None,
        };
        Ok(found.filter(|(attempt, _)| !attempt.is_empty()))
    }

    /// Engagement names its attempt when the link or pixel carried it;
    /// an app's report may not: it is the notification's latest attempt.
    async fn engagement(
        &mut self,
        store: &dyn Store,
        e: &Event,
        g: &pb::EngagementRecorded,
    ) -> Result<Option<(String, Fact)>, ProcessError> {
        let at = e.occurred_at_ms;
        let fact = match g.kind.as_str() {
            "delivered" => Fact::Delivered { at },
            "opened" | "read" | "acknowledged" => Fact::Opened { at },
            "clicked" => Fact::Clicked { at },
            _ => return Ok(None),
        };
        if !g.attempt_id.is_empty() {
            return Ok(Some((g.attempt_id.clone(), fact)));
        }
        let tenant = e.tenant.as_str();
        let key = (tenant.to_string(), g.notification_id.clone());
        if let Some(a) = self.latest.get(&key) {
            return Ok(Some((a.clone(), fact)));
        }
        let stored = store
            .get(&rows::notification_key(tenant, &g.notification_id))
            .await?;
        Ok(stored
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map(|a| (a, fact)))
    }

    /// Reads the stored state of the attempts not yet in the batch's work.
    async fn load_attempts<'a>(
        &mut self,
        store: &dyn Store,
        ids: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ProcessError> {
        let mut wanted: Vec<(String, String)> = ids
            .filter(|(t, a)| !self.attempts.contains_key(&(t.to_string(), a.to_string())))
            .map(|(t, a)| (t.to_string(), a.to_string()))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let keys: Vec<RowKey> = wanted
            .iter()
            .map(|(t, a)| rows::attempt_key(t, a))
            .collect();
        let stored = store.get_many(&keys).await?;
        for (id, found) in wanted.into_iter().zip(stored) {
            let a = match found {
                Some(b) => Attempt::decode(&b).map_err(|e| poison("attempt", e))?,
                None => Attempt::default(),
            };
            self.attempts.insert(id, (a, false));
        }
        Ok(())
    }

    async fn attempt(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<&mut (Attempt, bool), ProcessError> {
        let key = (tenant.to_string(), id.to_string());
        if !self.attempts.contains_key(&key) {
            let a = match store.get(&rows::attempt_key(tenant, id)).await? {
                Some(b) => Attempt::decode(&b).map_err(|e| poison("attempt", e))?,
                None => Attempt::default(),
            };
            self.attempts.insert(key.clone(), (a, false));
        }
        Ok(self.attempts.get_mut(&key).expect("inserted"))
    }

    async fn apply(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
        fact: Fact,
    ) -> Result<(), ProcessError> {
        let entry = self.attempt(store, tenant, id).await?;
        if !entry.0.apply(fact) {
            return Ok(());
        }
        entry.1 = true;
        let observations = entry.0.settle();
        let Some(dims) = entry.0.dims.clone() else {
            return Ok(());
        };
        let reason = entry.0.reason.clone();
        for obs in &observations {
            crate::metrics::record(tenant, &dims, obs);
            self.sends.observe(tenant, &dims, obs, &reason);
        }
        Ok(())
    }

    /// Writes what the batch added up: each touched row read once,
    /// merged and written once.
    async fn finish(
        self,
        store: &dyn Store,
        batch: &mut Batch,
        retention: &Retention,
        shard: u32,
    ) -> Result<(), ProcessError> {
        let w = &mut batch.writes;
        for ((tenant, id), (a, dirty)) in self.attempts {
            if dirty {
                w.put_ttl(
                    rows::attempt_key(&tenant, &id),
                    a.encode(),
                    retention.attempts,
                );
            }
        }
        for ((tenant, nid), attempt) in self.latest {
            w.put_ttl(
                rows::notification_key(&tenant, &nid),
                Bytes::from(attempt.into_bytes()),
                retention.attempts,
            );
        }
        let spread = self.sends.spread();
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
