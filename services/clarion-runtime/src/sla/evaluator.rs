//! The judging half of the SLA role: each tick, every tenant's SLAs over
//! their trailing window; breaches and recoveries to the log and the sinks.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use clarion_domain::event::{Actor, Payload};
use clarion_domain::ids::{tenant_key, Id, TenantId};
use clarion_domain::sla::{self, Judgement, Window};
use clarion_domain::Event;
use clarion_log::EventLog;
use clarion_proto::events as pb;
use clarion_store::{Scan, Store, WriteBatch, SYSTEM_TENANT};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::rows::{self, Counts, Pending, State};
use crate::alerts::{Alert, AlertSink};
use crate::processor::{Emit, ProcessError};
use crate::{provider_rows, Clock, Topic, Topics};

/// The runbook SLA alerts link to.
pub const RUNBOOK: &str = "docs/runbooks/sla-breach.md";
const ACTOR: &str = "sla";
const SCAN_LIMIT: usize = 100_000;

#[derive(Clone, Debug)]
pub struct SlaEvaluatorConfig {
    pub tick: Duration,
    /// Prefix of runbook links (a URL or a path ending in `/`).
    pub runbook_base_url: String,
}

impl Default for SlaEvaluatorConfig {
    fn default() -> Self {
        SlaEvaluatorConfig {
            tick: Duration::from_secs(1),
            runbook_base_url: "docs/runbooks/".into(),
        }
    }
}

/// An SLA's compliance now (`GET /v1/slas/{id}/status`).
#[derive(Clone, Debug, PartialEq)]
pub struct SlaStatus {
    pub sla: pb::SlaSet,
    pub window: Window,
    pub judgement: Judgement,
    pub window_start_ms: i64,
    /// Missed (and overdue) sends per provider in the window.
    pub missed_by_provider: Vec<(String, u64)>,
    /// In force: the breach and the provider it demoted.
    pub breach: Option<pb::SlaBreached>,
}

/// Sums the SLA's window at `now_ms` and judges it.
pub async fn status(
    store: &dyn Store,
    tenant: &str,
    s: &pb::SlaSet,
    pending: &[Pending],
    breach: Option<pb::SlaBreached>,
    now_ms: i64,
) -> Result<SlaStatus, ProcessError> {
    let start = now_ms - s.window_ms as i64;
    let scan = Scan::partition(
        clarion_store::Table::Alerts,
        tenant,
        &rows::counts_pk(&s.sla_id),
        SCAN_LIMIT,
    )
    .range(
        // Clustering keys are big-endian: a negative time would sort last.
        Bound::Included(rows::minute_of(start.max(0)).to_be_bytes().to_vec()),
        Bound::Unbounded,
    );
    let mut w = Window::default();
    let mut by_provider: HashMap<String, u64> = HashMap::new();
    for (ck, v) in store.scan(&scan).await? {
        let c: Counts = rows::decode(&v);
        w.met += c.met;
        w.missed += c.missed;
        *by_provider
            .entry(rows::provider_of(&ck).to_string())
            .or_default() += c.missed;
    }
    for p in pending.iter().filter(|p| p.requested_at_ms >= start) {
        let Some(wait) = p.slas.iter().find(|x| x.sla_id == s.sla_id) else {
            continue;
        };
        if now_ms - p.requested_at_ms > wait.threshold_ms as i64 {
            w.overdue += 1;
            *by_provider.entry(p.provider.clone()).or_default() += 1;
        } else {
            w.pending += 1;
        }
    }
    let mut missed_by_provider: Vec<(String, u64)> =
        by_provider.into_iter().filter(|(_, n)| *n > 0).collect();
    missed_by_provider.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(SlaStatus {
        judgement: sla::judge(s, &w),
        sla: s.clone(),
        window: w,
        window_start_ms: start,
        missed_by_provider,
        breach,
    })
}

/// The tenant's sends still in flight.
pub async fn pending(store: &dyn Store, tenant: &str) -> Result<Vec<Pending>, ProcessError> {
    let rows = store
        .scan(&Scan::partition(
            clarion_store::Table::Alerts,
            tenant,
            rows::PENDING_PK,
            SCAN_LIMIT,
        ))
        .await?;
    Ok(rows.into_iter().map(|(_, v)| rows::decode(&v)).collect())
}

/// A breach or recovery between its commit and the sinks.
#[derive(Serialize, Deserialize, Default)]
struct Outbox {
    event: Vec<u8>,
    appended: bool,
    sinks: Vec<String>,
}

/// Judges every SLA each tick (one per deployment: docs/slas.md).
pub struct SlaEvaluator {
    store: Arc<dyn Store>,
    log: Arc<dyn EventLog>,
    topics: Topics,
    clock: Arc<dyn Clock>,
    cfg: SlaEvaluatorConfig,
    sinks: Vec<Arc<dyn AlertSink>>,
}

impl SlaEvaluator {
    pub fn new(
        store: Arc<dyn Store>,
        log: Arc<dyn EventLog>,
        topics: Topics,
        clock: Arc<dyn Clock>,
        cfg: SlaEvaluatorConfig,
        sinks: Vec<Arc<dyn AlertSink>>,
    ) -> SlaEvaluator {
        SlaEvaluator {
            store,
            log,
            topics,
            clock,
            cfg,
            sinks,
        }
    }

    /// Ticks until `shutdown`; a failed tick is logged and retried.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "SLA evaluator: tick failed; retrying");
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.cfg.tick) => {}
            }
        }
    }

    /// Finishes the outbox, then judges every tenant's SLAs.
    pub async fn tick(&self) -> Result<(), ProcessError> {
        self.flush_outbox().await?;
        for tenant in provider_rows::sla_tenants(&*self.store).await? {
            self.judge_tenant(&tenant).await?;
        }
        self.flush_outbox().await
    }

    async fn judge_tenant(&self, tenant: &str) -> Result<(), ProcessError> {
        let store = &*self.store;
        let slas = provider_rows::slas(store, tenant).await?;
        if slas.is_empty() {
            return Ok(());
        }
        let pending = pending(store, tenant).await?;
        let now = self.clock.now_ms();
        let label = crate::metric_labels::tenant(tenant);
        for s in &slas {
            let st = status(store, tenant, s, &pending, None, now).await?;
            let j = st.judgement;
            metrics::gauge!("clarion_sla_compliance_ratio", "tenant" => label.clone(), "sla" => s.sla_id.clone())
                .set(j.compliance);
            metrics::gauge!("clarion_sla_breached", "tenant" => label.clone(), "sla" => s.sla_id.clone())
                .set(if j.breached { 1.0 } else { 0.0 });
            let key = rows::state_key(tenant, &s.sla_id);
            let state: State = store
                .get(&key)
                .await?
                .map(|b| rows::decode(&b))
                .unwrap_or_default();
            if j.breached && !state.breached {
                self.breach(tenant, s, &st, state).await?;
            } else if state.breached && !j.breached && j.compliance >= s.target_ratio {
                self.recover(tenant, s, &st, state).await?;
            }
        }
        Ok(())
    }

    /// The event of `payload` for the tenant, named by the SLA and count.
    fn event(
        &self,
        tenant: &str,
        kind: &str,
        sla_id: &str,
        n: u32,
        payload: Payload,
    ) -> Result<Event, ProcessError> {
        let t = TenantId::parse(tenant).map_err(|e| ProcessError::Poison {
            offset: 0,
            reason: format!("SLA evaluator: tenant {tenant:?}: {e}"),
        })?;
        Ok(Event {
            id: Id::derive(&[
                b"sla",
                kind.as_bytes(),
                tenant.as_bytes(),
                sla_id.as_bytes(),
                &n.to_be_bytes(),
            ]),
            partition_key: tenant_key(&t),
            tenant: t,
            occurred_at_ms: self.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::System(ACTOR.into()),
            payload,
        })
    }

    async fn breach(
        &self,
        tenant: &str,
        s: &pb::SlaSet,
        st: &SlaStatus,
        mut state: State,
    ) -> Result<(), ProcessError> {
        // The provider that missed most is the one to move past.
        let demoted = st
            .missed_by_provider
            .first()
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        state.breaches += 1;
        let id = Id::derive(&[
            b"sla-alert",
            tenant.as_bytes(),
            s.sla_id.as_bytes(),
            &state.breaches.to_be_bytes(),
        ]);
        let b = pb::SlaBreached {
            sla_id: s.sla_id.clone(),
            channel: s.channel.clone(),
            demoted_provider: demoted.clone(),
            compliance: st.judgement.compliance,
            target_ratio: s.target_ratio,
            met: st.window.met,
            judged: st.judgement.judged,
            pending: st.window.pending,
            predicted: st.judgement.predicted,
            window_start_ms: st.window_start_ms,
            runbook: RUNBOOK.into(),
            alert_id: id.to_hex(),
        };
        tracing::warn!(tenant, sla = %s.sla_id, compliance = b.compliance, demoted = %demoted,
            predicted = b.predicted, "SLA breached");
        metrics::counter!("clarion_sla_breaches_total", "tenant" => crate::metric_labels::tenant(tenant), "sla" => s.sla_id.clone())
            .increment(1);
        let ev = self.event(
            tenant,
            "breached",
            &s.sla_id,
            state.breaches,
            Payload::SlaBreached(b),
        )?;
        state.breached = true;
        state.demoted_provider = demoted;
        self.commit(tenant, &s.sla_id, &state, ev, true).await
    }

    async fn recover(
        &self,
        tenant: &str,
        s: &pb::SlaSet,
        st: &SlaStatus,
        mut state: State,
    ) -> Result<(), ProcessError> {
        let r = pb::SlaRecovered {
            sla_id: s.sla_id.clone(),
            channel: s.channel.clone(),
            restored_provider: state.demoted_provider.clone(),
            compliance: st.judgement.compliance,
        };
        tracing::info!(tenant, sla = %s.sla_id, compliance = r.compliance, "SLA recovered");
        let ev = self.event(
            tenant,
            "recovered",
            &s.sla_id,
            state.breaches,
            Payload::SlaRecovered(r),
        )?;
        state.breached = false;
        state.demoted_provider.clear();
        self.commit(tenant, &s.sla_id, &state, ev, false).await
    }

    /// The new state and the event's outbox row in one write; the outbox
    /// is flushed after (a crash repeats the append and the alert, under
    /// the same ids, never loses them).
    async fn commit(
        &self,
        tenant: &str,
        sla_id: &str,
        state: &State,
        ev: Event,
        alert: bool,
    ) -> Result<(), ProcessError> {
        let sinks = if alert {
            self.sinks.iter().map(|s| s.name().to_string()).collect()
        } else {
            Vec::new()
        };
        let row = Outbox {
            event: ev.encode().to_vec(),
            appended: false,
            sinks,
        };
        let mut w = WriteBatch::new();
        w.put(rows::state_key(tenant, sla_id), rows::encode(state));
        w.put(rows::outbox_key(&ev.id.0), rows::encode(&row));
        self.store.write(w).await?;
        Ok(())
    }

    async fn flush_outbox(&self) -> Result<(), ProcessError> {
        let rows = self
            .store
            .scan(&Scan::partition(
                clarion_store::Table::Alerts,
                SYSTEM_TENANT,
                rows::OUTBOX_PK,
                SCAN_LIMIT,
            ))
            .await?;
        for (ck, v) in rows {
            let key = rows::outbox_key(&ck);
            let mut row: Outbox = rows::decode(&v);
            let mut w = WriteBatch::new();
            let Ok(ev) = Event::decode(&row.event) else {
                w.delete(key);
                self.store.write(w).await?;
                continue;
            };
            if !row.appended {
                let emit = Emit {
                    topic: Topic::Config,
                    event: ev.clone(),
                };
                crate::runner::publish(&*self.log, &self.topics, &[emit]).await?;
                row.appended = true;
            }
            if let Payload::SlaBreached(b) = &ev.payload {
                let sinks = std::mem::take(&mut row.sinks);
                row.sinks = self
                    .tell_sinks(ev.tenant.as_str(), b, ev.occurred_at_ms, sinks)
                    .await;
            }
            if row.sinks.is_empty() {
                w.delete(key);
            } else {
                w.put(key, rows::encode(&row));
            }
            self.store.write(w).await?;
        }
        Ok(())
    }

    /// Tells `pending` sinks of the breach; returns those to try again
    /// (for an hour).
    async fn tell_sinks(
        &self,
        tenant: &str,
        b: &pb::SlaBreached,
        at_ms: i64,
        pending: Vec<String>,
    ) -> Vec<String> {
        let alert = Alert {
            tenant: tenant.to_string(),
            anomaly: alert_of(b, at_ms),
            related: Vec::new(),
            runbook_url: format!("{}sla-breach.md", self.cfg.runbook_base_url),
        };
        let expired = self.clock.now_ms() - at_ms > 3_600_000;
        let mut again = Vec::new();
        for name in pending {
            let Some(sink) = self.sinks.iter().find(|s| s.name() == name) else {
                continue;
            };
            match sink.send(&alert).await {
                Ok(()) => {
                    metrics::counter!("clarion_alerts_sent_total", "sink" => name).increment(1)
                }
                Err(e) => {
                    tracing::warn!(sink = %name, alert = %b.alert_id, error = %e, "SLA alert sink failed");
                    if !expired {
                        again.push(name);
                    }
                }
            }
        }
        again
    }
}

/// A breach in the shape the alert sinks take (signal `sla_breach`:
/// observed is the compliance, baseline the target).
pub fn alert_of(b: &pb::SlaBreached, at_ms: i64) -> pb::AnomalyDetected {
    pb::AnomalyDetected {
        alert_id: b.alert_id.clone(),
        series: format!("sla:{}", b.sla_id),
        provider: b.demoted_provider.clone(),
        signal: "sla_breach".into(),
        minute_start_ms: rows::minute_of(at_ms),
        observed: b.compliance,
        baseline: b.target_ratio,
        deviation: b.compliance - b.target_ratio,
        z_score: 0.0,
        attempts: b.judged + b.pending,
        alerted: true,
        runbook: RUNBOOK.into(),
        grouped_into: String::new(),
    }
}
