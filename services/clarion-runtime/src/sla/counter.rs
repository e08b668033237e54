//! The counting half of the SLA role: dispatch requests an SLA is about
//! become pending rows; their outcomes count met or missed per minute.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::event::Payload;
use clarion_domain::{sla, Event};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store};

use super::rows::{self, Counts, Pending, Waiting};
use crate::processor::{Batch, Input, ProcessError, Processor};
use crate::provider_rows;

/// The processor's name (offsets, dedup).
pub const SLA: &str = "sla";

/// Counts each partition's sends into its SLA rows.
pub struct SlaCounter {
    dedup: bool,
}

impl SlaCounter {
    /// Drops repeated inputs through the dedup table (Kafka, or a log in
    /// another file than the store).
    pub fn new() -> SlaCounter {
        SlaCounter { dedup: true }
    }

    /// With the log in the store's file: inputs are appended once.
    pub fn colocated() -> SlaCounter {
        SlaCounter { dedup: false }
    }
}

impl Default for SlaCounter {
    fn default() -> Self {
        SlaCounter::new()
    }
}

/// What one batch changes, applied to the store's rows at its end.
#[derive(Default)]
struct Work {
    /// Tenants' SLAs, read once per batch.
    slas: HashMap<String, Vec<pb::SlaSet>>,
    /// Pending rows read or written in this batch (`None`: deleted).
    pending: HashMap<RowKey, Option<Pending>>,
    counts: HashMap<RowKey, Counts>,
}

impl Work {
    async fn slas(
        &mut self,
        store: &dyn Store,
        tenant: &str,
    ) -> Result<&[pb::SlaSet], ProcessError> {
        if !self.slas.contains_key(tenant) {
            let all = provider_rows::slas(store, tenant).await?;
            self.slas.insert(tenant.to_string(), all);
        }
        Ok(&self.slas[tenant])
    }

    async fn pending(
        &mut self,
        store: &dyn Store,
        key: &RowKey,
    ) -> Result<Option<Pending>, ProcessError> {
        if let Some(p) = self.pending.get(key) {
            return Ok(p.clone());
        }
        Ok(store.get(key).await?.map(|b| rows::decode(&b)))
    }

    fn count(&mut self, e: &Event, sla_id: &str, partition: u32, provider: &str, met: bool) {
        let ck = rows::count_ck(rows::minute_of(e.occurred_at_ms), partition, provider);
        let c = self
            .counts
            .entry(rows::count_key(e.tenant.as_str(), sla_id, ck))
            .or_default();
        if met {
            c.met += 1;
        } else {
            c.missed += 1;
        }
    }
}

/// A dispatch request: pending for each SLA it matches.
async fn requested(
    work: &mut Work,
    store: &dyn Store,
    e: &Event,
    d: &pb::DispatchRequested,
) -> Result<(), ProcessError> {
    let waiting: Vec<Waiting> = work
        .slas(store, e.tenant.as_str())
        .await?
        .iter()
        .filter(|s| sla::matches(s, &d.channel, &d.workflow_id, &d.category))
        .map(|s| Waiting {
            sla_id: s.sla_id.clone(),
            milestone: s.milestone.clone(),
            threshold_ms: s.threshold_ms,
        })
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let p = Pending {
        requested_at_ms: e.occurred_at_ms,
        provider: d.provider.clone(),
        slas: waiting,
    };
    work.pending
        .insert(rows::pending_key(e.tenant.as_str(), &d.attempt_id), Some(p));
    Ok(())
}

/// An outcome: the SLAs waiting for it count it met or missed.
async fn outcome(
    work: &mut Work,
    store: &dyn Store,
    e: &Event,
    partition: u32,
) -> Result<(), ProcessError> {
    let (attempt, provider, reached) = match &e.payload {
        Payload::Sent(s) => (&s.attempt_id, &s.provider, Some("sent")),
        Payload::Delivered(d) => (&d.attempt_id, &d.provider, Some("delivered")),
        Payload::Failed(f) => (&f.attempt_id, &f.provider, None),
        _ => return Ok(()),
    };
    let key = rows::pending_key(e.tenant.as_str(), attempt);
    let Some(mut p) = work.pending(store, &key).await? else {
        return Ok(());
    };
    let latency = e.occurred_at_ms - p.requested_at_ms;
    let provider = if provider.is_empty() {
        &p.provider
    } else {
        provider
    }
    .clone();
    let mut left = Vec::new();
    for w in std::mem::take(&mut p.slas) {
        match reached {
            // A failure misses every SLA still waiting.
            None => work.count(e, &w.sla_id, partition, &provider, false),
            Some(m) if m == w.milestone || (m == "delivered" && w.milestone == "sent") => {
                let met = u64::try_from(latency).is_ok_and(|l| l <= w.threshold_ms);
                work.count(e, &w.sla_id, partition, &provider, met);
            }
            Some(_) => left.push(w),
        }
    }
    p.slas = left;
    work.pending.insert(key, (!p.slas.is_empty()).then_some(p));
    Ok(())
}

#[async_trait]
impl Processor for SlaCounter {
    fn name(&self) -> &'static str {
        SLA
    }

    fn dedup(&self) -> bool {
        self.dedup
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut work = Work::default();
        for input in inputs {
            let e = &input.event;
            match &e.payload {
                Payload::DispatchRequested(d) => requested(&mut work, store, e, d).await?,
                _ => outcome(&mut work, store, e, batch.partition).await?,
            }
        }
        for (key, p) in work.pending {
            match p {
                Some(p) => {
                    batch
                        .writes
                        .put_ttl(key, Bytes::from(rows::encode(&p)), rows::PENDING_TTL)
                }
                None => batch.writes.delete(key),
            };
        }
        if work.counts.is_empty() {
            return Ok(());
        }
        let keys: Vec<RowKey> = work.counts.keys().cloned().collect();
        let stored = store.get_many(&keys).await?;
        for (key, old) in keys.into_iter().zip(stored) {
            let add = work.counts[&key];
            let mut c: Counts = old.map(|b| rows::decode(&b)).unwrap_or_default();
            c.met += add.met;
            c.missed += add.missed;
            batch
                .writes
                .put_ttl(key, Bytes::from(rows::encode(&c)), rows::COUNT_TTL);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clarion_domain::event::Actor;
    use clarion_domain::ids::{Id, TenantId};
    use clarion_store::{Scan, Table, WriteBatch};

    use super::*;
    use crate::sla::{pending, status};

    /// A whole minute: counts are per minute.
    const T: i64 = 1_700_000_040_000;

    fn event(tenant: &str, n: u8, at: i64, payload: Payload) -> Input {
        let e = Event {
            id: Id([n; 16]),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: format!("{tenant}/s"),
            occurred_at_ms: T + at,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload,
        };
        Input {
            offset: u64::from(n),
            raw: Bytes::from(e.encode()),
            event: e,
        }
    }

    fn requested(tenant: &str, n: u8, attempt: &str, channel: &str) -> Input {
        let d = pb::DispatchRequested {
            attempt_id: attempt.into(),
            channel: channel.into(),
            provider: "vonage".into(),
            ..Default::default()
        };
        event(tenant, n, 1_000, Payload::DispatchRequested(d))
    }

    fn sent(tenant: &str, n: u8, attempt: &str, at: i64) -> Input {
        let s = pb::NotificationSent {
            attempt_id: attempt.into(),
            provider: "vonage".into(),
            ..Default::default()
        };
        event(tenant, n, at, Payload::Sent(s))
    }

    fn sla() -> pb::SlaSet {
        pb::SlaSet {
            sla_id: "fast".into(),
            channel: "sms".into(),
            target_ratio: 0.9,
            threshold_ms: 60_000,
            window_ms: 3_600_000,
            milestone: "sent".into(),
            min_samples: 1,
            ..Default::default()
        }
    }

    /// Runs `inputs` through a counter of partition 2 and commits.
    async fn run(store: &dyn Store, inputs: &[Input]) {
        let mut batch = Batch {
            partition: 2,
            ..Batch::default()
        };
        SlaCounter::new()
            .process(store, &mut batch, inputs)
            .await
            .unwrap();
        store
            .write(std::mem::take(&mut batch.writes))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn sends_count_met_missed_or_pending_for_their_tenants_sla_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store: Arc<dyn Store> =
            Arc::new(clarion_store::embedded::SqliteStore::open(path.to_str().unwrap()).unwrap());
        // acme has the SLA; globex has none.
        let def = event("acme", 0, 0, Payload::SlaSet(sla()));
        let mut w = WriteBatch::new();
        assert!(provider_rows::project(&mut w, &def.event, &def.raw));
        store.write(w).await.unwrap();

        run(
            &*store,
            &[
                requested("acme", 1, "a1", "sms"),
                requested("acme", 2, "a2", "sms"),
                requested("acme", 3, "a3", "sms"),
                requested("acme", 4, "e1", "email"),
                requested("globex", 5, "g1", "sms"),
                sent("acme", 6, "a1", 31_000),
            ],
        )
        .await;
        // In a later batch: a2 late, a3 still in flight.
        run(
            &*store,
            &[
                sent("acme", 7, "a2", 91_000),
                sent("globex", 8, "g1", 2_000),
            ],
        )
        .await;

        let s = sla();
        let p = pending(&*store, "acme").await.unwrap();
        assert_eq!(p.len(), 1, "a3 only: {p:?}");
        let st = status(&*store, "acme", &s, &p, None, T + 50_000)
            .await
            .unwrap();
        assert_eq!((st.window.met, st.window.missed), (1, 1));
        assert_eq!((st.window.overdue, st.window.pending), (0, 1));
        // Later, a3 is late already: overdue, and counted against vonage.
        let st = status(&*store, "acme", &s, &p, None, T + 120_000)
            .await
            .unwrap();
        assert_eq!((st.window.overdue, st.window.pending), (1, 0));
        assert_eq!(st.missed_by_provider, [("vonage".to_string(), 2)]);
        assert!(st.judgement.breached);
        // The rows are acme's, of partition 2; globex has none.
        let rows = store
            .scan(&Scan::partition(Table::Alerts, "acme", "sla-c/fast", 10))
            .await
            .unwrap();
        assert!(rows.iter().all(|(ck, _)| ck[8..12] == 2u32.to_be_bytes()));
        assert!(pending(&*store, "globex").await.unwrap().is_empty());
        let none = store
            .scan(&Scan::partition(Table::Alerts, "globex", "sla-c/fast", 10))
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
