//! The counting half of the SLA role: dispatch requests an SLA is about
//! become pending rows; their outcomes count met or missed per minute.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::event::Payload;
use clarion_domain::{sla, Event};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store};

use super::rows::{self, Counts, Early, EarlyOutcome, Pending, Waiting};
use crate::processor::{Batch, Input, ProcessError, Processor};
use crate::provider_rows;

/// The processor's name (offsets, dedup).
pub const SLA: &str = "sla";

/// Counts each partition's sends into its SLA rows.
pub struct SlaCounter {
    dedup: bool,
    /// Per partition, the latest request time read since start: an outcome
    /// whose request is no later was read after its request, so with no
    /// pending row it is under no SLA (or settled already) and does not
    /// wait (see `early`).
    latest_request_ms: HashMap<u32, i64>,
}

impl SlaCounter {
    /// Drops repeated inputs through the dedup table (Kafka, or a log in
    /// another file than the store).
    pub fn new() -> SlaCounter {
        SlaCounter {
            dedup: true,
            latest_request_ms: HashMap::new(),
        }
    }

    /// With the log in the store's file: inputs are appended once.
    pub fn colocated() -> SlaCounter {
        SlaCounter {
            dedup: false,
            latest_request_ms: HashMap::new(),
        }
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
    /// Early rows read or written in this batch (`None`: deleted).
    early: HashMap<RowKey, Option<Early>>,
    /// Early rows known not to be stored (see `Work::read_early_rows`).
    no_early: HashSet<RowKey>,
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
        read_through(&self.pending, store, key).await
    }

    async fn early(
        &mut self,
        store: &dyn Store,
        key: &RowKey,
    ) -> Result<Option<Early>, ProcessError> {
        if self.no_early.contains(key) && !self.early.contains_key(key) {
            return Ok(None);
        }
        read_through(&self.early, store, key).await
    }

    /// Reads in one `get_many` the early rows the batch's requests under an
    /// SLA could have (a point read each otherwise, on every such send).
    async fn read_early_rows(
        &mut self,
        store: &dyn Store,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut keys = Vec::new();
        for input in inputs {
            let e = &input.event;
            let Payload::DispatchRequested(d) = &e.payload else {
                continue;
            };
            let tenant = e.tenant.as_str();
            let covered = self
                .slas(store, tenant)
                .await?
                .iter()
                .any(|s| sla::matches(s, &d.channel, &d.workflow_id, &d.category));
            if covered {
                keys.push(rows::early_key(tenant, &d.attempt_id));
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let stored = store.get_many(&keys).await?;
        for (key, row) in keys.into_iter().zip(stored) {
            match row {
                Some(b) => {
                    self.early.insert(key, Some(rows::decode(&b)));
                }
                None => {
                    self.no_early.insert(key);
                }
            }
        }
        Ok(())
    }

    /// Counts a send's outcome, reached at `at_ms`, met or missed for an SLA.
    fn count(
        &mut self,
        tenant: &str,
        at_ms: i64,
        sla_id: &str,
        partition: u32,
        provider: &str,
        met: bool,
    ) {
        let ck = rows::count_ck(rows::minute_of(at_ms), partition, provider);
        let c = self
            .counts
            .entry(rows::count_key(tenant, sla_id, ck))
            .or_default();
        if met {
            c.met += 1;
        } else {
            c.missed += 1;
        }
    }
}

/// A row as this batch left it, else as stored.
async fn read_through<T>(
    batch_rows: &HashMap<RowKey, Option<T>>,
    store: &dyn Store,
    key: &RowKey,
) -> Result<Option<T>, ProcessError>
where
    T: Clone + Default + for<'de> serde::Deserialize<'de>,
{
    if let Some(row) = batch_rows.get(key) {
        return Ok(row.clone());
    }
    Ok(store.get(key).await?.map(|b| rows::decode(&b)))
}

/// A dispatch request: pending for each SLA it matches.
async fn requested(
    work: &mut Work,
    store: &dyn Store,
    e: &Event,
    d: &pb::DispatchRequested,
    partition: u32,
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
    let mut p = Pending {
        requested_at_ms: e.occurred_at_ms,
        provider: d.provider.clone(),
        slas: waiting,
    };
    let tenant = e.tenant.as_str();
    let early_key = rows::early_key(tenant, &d.attempt_id);
    if let Some(early) = work.early(store, &early_key).await? {
        for o in &early.outcomes {
            let provider = if o.provider.is_empty() {
                p.provider.clone()
            } else {
                o.provider.clone()
            };
            apply(
                work,
                tenant,
                partition,
                &mut p,
                o.at_ms,
                &provider,
                o.reached.as_deref(),
            );
        }
        work.early.insert(early_key, None);
    }
    work.pending.insert(
        rows::pending_key(tenant, &d.attempt_id),
        (!p.slas.is_empty()).then_some(p),
    );
    Ok(())
}

/// An outcome: the SLAs waiting for it count it met or missed. One read
/// before its request waits in an early row, if the send may be under one
/// of the tenant's SLAs.
async fn outcome(
    work: &mut Work,
    store: &dyn Store,
    e: &Event,
    partition: u32,
    latest_request_ms: i64,
) -> Result<(), ProcessError> {
    let (attempt, provider, reached, context) = match &e.payload {
        Payload::Sent(s) => (&s.attempt_id, &s.provider, Some("sent"), &s.context),
        Payload::Delivered(d) => (&d.attempt_id, &d.provider, Some("delivered"), &d.context),
        Payload::Failed(f) => (&f.attempt_id, &f.provider, None, &f.context),
        _ => return Ok(()),
    };
    let tenant = e.tenant.as_str();
    let key = rows::pending_key(tenant, attempt);
    let Some(mut p) = work.pending(store, &key).await? else {
        return match context {
            // Its request is yet to be read.
            Some(c) if c.requested_at_ms > latest_request_ms => {
                early(work, store, e, attempt, provider, reached, c).await
            }
            // Under no SLA, settled already, or logged before outcomes
            // carried their context: nothing to count.
            _ => Ok(()),
        };
    };
    let provider = if provider.is_empty() {
        &p.provider
    } else {
        provider
    }
    .clone();
    apply(
        work,
        tenant,
        partition,
        &mut p,
        e.occurred_at_ms,
        &provider,
        reached,
    );
    work.pending.insert(key, (!p.slas.is_empty()).then_some(p));
    Ok(())
}

/// Counts an outcome reached at `at_ms` for the SLAs of `p` it settles,
/// leaving those that wait for a later milestone.
fn apply(
    work: &mut Work,
    tenant: &str,
    partition: u32,
    p: &mut Pending,
    at_ms: i64,
    provider: &str,
    reached: Option<&str>,
) {
    let latency = at_ms - p.requested_at_ms;
    let mut left = Vec::new();
    for w in std::mem::take(&mut p.slas) {
        match reached {
            // A failure misses every SLA still waiting.
            None => work.count(tenant, at_ms, &w.sla_id, partition, provider, false),
            Some(m) if m == w.milestone || (m == "delivered" && w.milestone == "sent") => {
                let met = u64::try_from(latency).is_ok_and(|l| l <= w.threshold_ms);
                work.count(tenant, at_ms, &w.sla_id, partition, provider, met);
            }
            Some(_) => left.push(w),
        }
    }
    p.slas = left;
}

/// An outcome with no pending row whose request was not read yet (it is
/// later than any request read since start). It waits in an early row when
/// the tenant has an SLA the send may be under, by the channel and workflow
/// its context names: a tenant without SLAs, or a channel none covers,
/// costs no write. (After a restart, until a request is read, an outcome of
/// a send already settled may wait too: its row is never used and expires.)
async fn early(
    work: &mut Work,
    store: &dyn Store,
    e: &Event,
    attempt: &str,
    provider: &str,
    reached: Option<&str>,
    context: &pb::SendContext,
) -> Result<(), ProcessError> {
    let tenant = e.tenant.as_str();
    let may_count = work
        .slas(store, tenant)
        .await?
        .iter()
        .any(|s| sla::matches(s, &context.channel, &context.workflow_id, &s.topic));
    if !may_count {
        return Ok(());
    }
    let key = rows::early_key(tenant, attempt);
    let mut row = work.early(store, &key).await?.unwrap_or_default();
    row.outcomes.push(EarlyOutcome {
        at_ms: e.occurred_at_ms,
        provider: provider.to_string(),
        reached: reached.map(str::to_string),
    });
    work.early.insert(key, Some(row));
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
        work.read_early_rows(store, inputs).await?;
        let latest = self.latest_request_ms.entry(batch.partition).or_default();
        for input in inputs {
            let e = &input.event;
            match &e.payload {
                Payload::DispatchRequested(d) => {
                    *latest = (*latest).max(e.occurred_at_ms);
                    requested(&mut work, store, e, d, batch.partition).await?
                }
                _ => outcome(&mut work, store, e, batch.partition, *latest).await?,
            }
        }
        for (key, early) in work.early {
            match early {
                Some(r) => {
                    batch
                        .writes
                        .put_ttl(key, Bytes::from(rows::encode(&r)), rows::PENDING_TTL)
                }
                None => batch.writes.delete(key),
            };
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
        run_with(&mut SlaCounter::new(), store, inputs).await
    }

    /// The same through `counter`, which keeps what it read before.
    async fn run_with(counter: &mut SlaCounter, store: &dyn Store, inputs: &[Input]) {
        let mut batch = Batch {
            partition: 2,
            ..Batch::default()
        };
        counter.process(store, &mut batch, inputs).await.unwrap();
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

    fn sent_sms(tenant: &str, n: u8, attempt: &str, at: i64) -> Input {
        let s = pb::NotificationSent {
            attempt_id: attempt.into(),
            provider: "vonage".into(),
            context: Some(pb::SendContext {
                channel: "sms".into(),
                requested_at_ms: T + 1_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        event(tenant, n, at, Payload::Sent(s))
    }

    async fn early_rows(store: &dyn Store, tenant: &str) -> usize {
        store
            .scan(&Scan::partition(Table::Alerts, tenant, rows::EARLY_PK, 100))
            .await
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn outcomes_read_before_their_requests_wait_and_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store: Arc<dyn Store> =
            Arc::new(clarion_store::embedded::SqliteStore::open(path.to_str().unwrap()).unwrap());
        let mut counter = SlaCounter::new();
        for t in ["acme", "globex"] {
            let def = event(t, 0, 0, Payload::SlaSet(sla()));
            let mut w = WriteBatch::new();
            assert!(provider_rows::project(&mut w, &def.event, &def.raw));
            store.write(w).await.unwrap();
        }
        // The outcomes' batch first: a1 met (sent 30 s after its request),
        // a2 late (90 s), globex's g1 met; an email outcome (no SMS SLA
        // covers it) and one of initech (no SLA at all) wait for nothing.
        let email = {
            let s = pb::NotificationSent {
                attempt_id: "e1".into(),
                context: Some(pb::SendContext {
                    channel: "email".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            event("acme", 5, 2_000, Payload::Sent(s))
        };
        run_with(
            &mut counter,
            &*store,
            &[
                sent_sms("acme", 1, "a1", 31_000),
                sent_sms("acme", 2, "a2", 91_000),
                sent_sms("globex", 3, "g1", 2_000),
                sent_sms("initech", 4, "i1", 2_000),
                email,
            ],
        )
        .await;
        assert_eq!(early_rows(&*store, "acme").await, 2, "a1 and a2 wait");
        assert_eq!(early_rows(&*store, "globex").await, 1);
        assert_eq!(early_rows(&*store, "initech").await, 0, "no SLA, no row");
        let s = sla();
        let st = status(&*store, "acme", &s, &[], None, T + 120_000)
            .await
            .unwrap();
        assert_eq!((st.window.met, st.window.missed), (0, 0), "not counted yet");

        // Then the requests: each send counted once, nothing left waiting.
        run_with(
            &mut counter,
            &*store,
            &[
                requested("acme", 6, "a1", "sms"),
                requested("acme", 7, "a2", "sms"),
                requested("globex", 8, "g1", "sms"),
            ],
        )
        .await;
        for t in ["acme", "globex"] {
            assert_eq!(early_rows(&*store, t).await, 0, "{t}: early rows used");
            assert!(
                pending(&*store, t).await.unwrap().is_empty(),
                "{t}: settled"
            );
        }
        let st = status(&*store, "acme", &s, &[], None, T + 120_000)
            .await
            .unwrap();
        assert_eq!((st.window.met, st.window.missed), (1, 1));
        let st = status(&*store, "globex", &s, &[], None, T + 120_000)
            .await
            .unwrap();
        assert_eq!((st.window.met, st.window.missed), (1, 0));
        // An outcome after its settled send's request (a delivery report
        // after the sent milestone counted) neither counts nor waits.
        run_with(&mut counter, &*store, &[sent_sms("acme", 9, "a1", 40_000)]).await;
        assert_eq!(early_rows(&*store, "acme").await, 0);
        let st = status(&*store, "acme", &s, &[], None, T + 120_000)
            .await
            .unwrap();
        assert_eq!((st.window.met, st.window.missed), (1, 1));
    }
}
