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
