//! The judging half of the alerts role: each closed minute, every series
//! through the detector, anomalies to the log and to the sinks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::anomaly::{self, DetectorConfig, MinuteCounts, SeriesState};
use clarion_domain::event::{Actor, Payload};
use clarion_domain::ids::{tenant_key, Id, TenantId};
use clarion_domain::Event;
use clarion_log::EventLog;
use clarion_proto::events as pb;
use clarion_store::{Scan, Store, WriteBatch, SYSTEM_TENANT};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::counter::decode_counts;
use super::keys::{self, MINUTE_MS, OUTBOX_PK, SERIES_PK, TENANTS_PK};
use crate::processor::{Emit, ProcessError};
use crate::{Clock, Topic, Topics};

/// An alert as the sinks get it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub tenant: String,
    /// The detection that leads the alert.
    pub anomaly: pb::AnomalyDetected,
    /// Detections of the same outage told with it (e.g. the failure rate
    /// with the delivery rate, the tenant's with its provider's).
    pub related: Vec<pb::AnomalyDetected>,
    /// Where the runbook is: `runbook-base-url` and the runbook's file.
    pub runbook_url: String,
}

/// Somewhere alerts go (a signed webhook, a Slack channel, a mailbox).
#[async_trait]
pub trait AlertSink: Send + Sync + 'static {
    /// Stable: names the sink's rows in the outbox.
    fn name(&self) -> &str;
    /// Delivers one alert; an error is retried on the next tick. The alert
    /// id is the idempotency key a receiver can deduplicate by.
    async fn send(&self, alert: &Alert) -> Result<(), String>;
}

#[derive(Clone, Debug)]
pub struct EvaluatorConfig {
    pub detector: DetectorConfig,
    /// How long after its end a minute is judged: outcomes counted later
    /// than this are not in its judgement.
    pub grace_ms: i64,
    /// How often the evaluator looks for closed minutes and retries sinks.
    pub tick: Duration,
    /// Prefix of runbook links (a URL or a path ending in `/`).
    pub runbook_base_url: String,
    /// An alert a sink could not take for this long is dropped (reported).
    pub give_up_ms: i64,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            detector: DetectorConfig::default(),
            grace_ms: 10_000,
            tick: Duration::from_secs(1),
            runbook_base_url: "docs/runbooks/".into(),
            give_up_ms: 3_600_000,
        }
    }
}

/// An outbox row: the event, the detections told with it (prost-encoded
/// `AnomalyDetected`s), whether it is in the log, the sinks still to tell.
#[derive(Serialize, Deserialize)]
struct Pending {
    tenant: String,
    event: Vec<u8>,
    related: Vec<Vec<u8>>,
    appended: bool,
    sinks: Vec<String>,
}

/// A detection as the event's payload. Its id is fixed by the tenant,
/// series, signal and minute: judging a minute again after a crash makes
/// the same event, which consumers and sinks deduplicate.
fn anomaly_of(
    tenant: &str,
    series: &str,
    minute: i64,
    det: &anomaly::Detection,
) -> pb::AnomalyDetected {
    let signal = det.signal.as_str();
    let alert_id = Id::derive(&[
        b"anomaly",
        tenant.as_bytes(),
        series.as_bytes(),
        signal.as_bytes(),
        &minute.to_be_bytes(),
    ]);
    pb::AnomalyDetected {
        alert_id: alert_id.to_hex(),
        series: series.to_string(),
        provider: series.strip_prefix("provider:").unwrap_or("").to_string(),
        signal: signal.to_string(),
        minute_start_ms: minute,
        observed: det.observed,
        baseline: det.baseline,
        deviation: det.deviation,
        z_score: det.z,
        attempts: det.attempts,
        alerted: det.alert,
        runbook: format!("docs/runbooks/{}", det.signal.runbook()),
        grouped_into: String::new(),
    }
}

/// Judges closed minutes (one per deployment: see `docs/alerts.md`).
pub struct Evaluator {
    store: Arc<dyn Store>,
    log: Arc<dyn EventLog>,
    topics: Topics,
    clock: Arc<dyn Clock>,
    cfg: EvaluatorConfig,
    sinks: Vec<Arc<dyn AlertSink>>,
}

const ACTOR: &str = "alerts";
/// Tenants read per evaluation of a minute, and rows per series scan.
const SCAN_LIMIT: usize = 100_000;

impl Evaluator {
    pub fn new(
        store: Arc<dyn Store>,
        log: Arc<dyn EventLog>,
        topics: Topics,
        clock: Arc<dyn Clock>,
        cfg: EvaluatorConfig,
        sinks: Vec<Arc<dyn AlertSink>>,
    ) -> Evaluator {
        Evaluator {
            store,
            log,
            topics,
            clock,
            cfg,
            sinks,
        }
    }

    /// Ticks until `shutdown`. A failed tick (store or log unavailable) is
    /// logged and retried on the next: the evaluator never stops the process.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "alerts evaluator: tick failed; retrying");
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.cfg.tick) => {}
            }
        }
    }

    /// Finishes the outbox, then judges every minute that closed since the
    /// last tick. Returns the minutes judged.
    pub async fn tick(&self) -> Result<u32, ProcessError> {
        self.flush_outbox().await?;
        let now = self.clock.now_ms();
        // The first minute not yet closed: the cursor's end.
        let open = keys::minute_of(now - self.cfg.grace_ms - MINUTE_MS) + MINUTE_MS;
        let mut cursor = match self.store.get(&keys::cursor_key()).await? {
            Some(b) if b.len() == 8 => i64::from_be_bytes(b[..].try_into().expect("8 bytes")),
            // A first start judges from now on, not the whole past.
            _ => {
                let mut w = WriteBatch::new();
                w.put(
                    keys::cursor_key(),
                    Bytes::copy_from_slice(&open.to_be_bytes()),
                );
                self.store.write(w).await?;
                open
            }
        };
        // After a long stop, only the last day (the counts' lifetime).
        cursor = cursor.max(open - keys::COUNT_TTL.as_millis() as i64);
        let mut judged = 0;
        while cursor < open {
            self.judge(cursor).await?;
            self.flush_outbox().await?;
            cursor += MINUTE_MS;
            judged += 1;
        }
        Ok(judged)
    }

    /// Judges the minute starting at `minute`, committing the series'
    /// states, the next cursor and the anomalies' outbox together.
    async fn judge(&self, minute: i64) -> Result<(), ProcessError> {
        let mut w = WriteBatch::new();
        let tenants = self
            .store
            .scan(&Scan::partition(
                clarion_store::Table::Alerts,
                SYSTEM_TENANT,
                TENANTS_PK,
                SCAN_LIMIT,
            ))
            .await?;
        let now = self.clock.now_ms();
        for (tenant, _) in tenants {
            let Ok(tenant) = String::from_utf8(tenant) else {
                continue;
            };
            let dets = self.judge_tenant(&mut w, &tenant, minute).await?;
            self.record(&mut w, &tenant, minute, &dets, now);
        }
        w.put(
            keys::cursor_key(),
            Bytes::copy_from_slice(&(minute + MINUTE_MS).to_be_bytes()),
        );
        self.store.write(w).await?;
        Ok(())
    }

    /// Runs each of `tenant`'s series through the detector for `minute`;
    /// the series' new states go to `w`.
    async fn judge_tenant(
        &self,
        w: &mut WriteBatch,
        tenant: &str,
        minute: i64,
    ) -> Result<Vec<(String, anomaly::Detection)>, ProcessError> {
        let scan = |pk: &str| Scan::partition(clarion_store::Table::Alerts, tenant, pk, SCAN_LIMIT);
        let mut counts: BTreeMap<String, MinuteCounts> = BTreeMap::new();
        for (ck, v) in self.store.scan(&scan(&keys::counts_pk(minute))).await? {
            if let (Some(series), Some(c)) = (keys::series_of_count(&ck), decode_counts(&v)) {
                counts.entry(series.to_string()).or_default().add(&c);
            }
        }
        let mut states: BTreeMap<String, SeriesState> = BTreeMap::new();
        for (ck, v) in self.store.scan(&scan(SERIES_PK)).await? {
            if let (Ok(s), Ok(state)) = (
                String::from_utf8(ck),
                rmp_serde::from_slice::<SeriesState>(&v),
            ) {
                states.insert(s, state);
            }
        }
        // A known series silent this minute is judged too: a volume that
        // fell to nothing is the loudest anomaly of all.
        for series in counts.keys() {
            states.entry(series.clone()).or_default();
        }
        let mut out = Vec::new();
        for (series, mut state) in states {
            let c = counts.get(&series).copied().unwrap_or_default();
            for det in anomaly::observe(&mut state, &c, minute, &self.cfg.detector) {
                out.push((series.clone(), det));
            }
            let bytes = rmp_serde::to_vec(&state).expect("state encodes");
            w.put(keys::series_key(tenant, &series), bytes);
        }
        Ok(out)
    }

    /// A tenant's detections of a minute as events in the outbox, grouped
    /// into alerts ([`anomaly::group`]): each alert's lead goes to the
    /// sinks with the detections folded into it.
    fn record(
        &self,
        w: &mut WriteBatch,
        tenant: &str,
        minute: i64,
        dets: &[(String, anomaly::Detection)],
        now: i64,
    ) {
        let Ok(tid) = TenantId::parse(tenant) else {
            return;
        };
        let refs: Vec<(&str, &anomaly::Detection)> =
            dets.iter().map(|(s, d)| (s.as_str(), d)).collect();
        let groups = anomaly::group(&refs);
        let mut found: Vec<pb::AnomalyDetected> = dets
            .iter()
            .map(|(series, d)| anomaly_of(tenant, series, minute, d))
            .collect();
        for (i, g) in groups.iter().enumerate() {
            if let Some(lead) = g {
                found[i].alerted = false;
                found[i].grouped_into = found[*lead].alert_id.clone();
            }
        }
        for (i, a) in found.iter().enumerate() {
            tracing::warn!(
                tenant, series = %a.series, signal = %a.signal, observed = a.observed,
                baseline = a.baseline, z = a.z_score, alerted = a.alerted, "delivery anomaly"
            );
            let state = match (a.alerted, groups[i].is_some()) {
                (true, _) => "alerted",
                (false, true) => "grouped",
                (false, false) => "cooling_down",
            };
            metrics::counter!("clarion_alerts_anomalies_total",
                "signal" => dets[i].1.signal.as_str(), "state" => state)
            .increment(1);
            let related = found
                .iter()
                .zip(&groups)
                .filter(|(_, g)| **g == Some(i))
                .map(|(r, _)| r.encode_to_vec())
                .collect();
            let event = Event {
                id: Id::parse_hex(&a.alert_id).expect("hex id"),
                partition_key: tenant_key(&tid),
                tenant: tid.clone(),
                occurred_at_ms: now,
                causation_id: None,
                correlation_id: None,
                actor: Actor::System(ACTOR.into()),
                payload: Payload::AnomalyDetected(a.clone()),
            };
            let sinks = match a.alerted {
                true => self.sinks.iter().map(|s| s.name().to_string()).collect(),
                false => Vec::new(),
            };
            let pending = Pending {
                tenant: tenant.to_string(),
                event: event.encode(),
                related,
                appended: false,
                sinks,
            };
            w.put(
                keys::outbox_key(&event.id.0),
                rmp_serde::to_vec(&pending).expect("outbox encodes"),
            );
        }
    }

    /// Appends the outbox's events and tells the sinks still to be told.
    /// A row goes when everything is done; a sink that fails keeps its
    /// place until it succeeds or `give_up_ms` passed.
    async fn flush_outbox(&self) -> Result<(), ProcessError> {
        let rows = self
            .store
            .scan(&Scan::partition(
                clarion_store::Table::Alerts,
                SYSTEM_TENANT,
                OUTBOX_PK,
                SCAN_LIMIT,
            ))
            .await?;
        for (ck, v) in rows {
            let key = keys::outbox_key(&ck);
            let Ok(mut p) = rmp_serde::from_slice::<Pending>(&v) else {
                let mut w = WriteBatch::new();
                w.delete(key);
                self.store.write(w).await?;
                continue;
            };
            let event = Event::decode(&p.event).map_err(|e| ProcessError::Poison {
                offset: 0,
                reason: format!("alerts outbox: {e}"),
            })?;
            if !p.appended {
                let emit = Emit {
                    topic: Topic::Notifications,
                    event: event.clone(),
                };
                crate::runner::publish(&*self.log, &self.topics, &[emit]).await?;
                p.appended = true;
            }
            if let Payload::AnomalyDetected(a) = &event.payload {
                let related = p
                    .related
                    .iter()
                    .filter_map(|b| pb::AnomalyDetected::decode(&b[..]).ok())
                    .collect();
                let sinks = std::mem::take(&mut p.sinks);
                p.sinks = self.tell_sinks(&p.tenant, a, related, sinks).await;
            }
            let mut w = WriteBatch::new();
            if p.sinks.is_empty() {
                w.delete(key);
            } else {
                w.put(key, rmp_serde::to_vec(&p).expect("outbox encodes"));
            }
            self.store.write(w).await?;
        }
        Ok(())
    }

    /// Sends `anomaly` to each of `pending` sinks; returns those that must
    /// try again.
    async fn tell_sinks(
        &self,
        tenant: &str,
        anomaly: &pb::AnomalyDetected,
        related: Vec<pb::AnomalyDetected>,
        pending: Vec<String>,
    ) -> Vec<String> {
        let alert = Alert {
            tenant: tenant.to_string(),
            anomaly: anomaly.clone(),
            related,
            runbook_url: format!(
                "{}{}",
                self.cfg.runbook_base_url,
                anomaly.runbook.rsplit('/').next().unwrap_or_default()
            ),
        };
        let expired = self.clock.now_ms() - anomaly.minute_start_ms > self.cfg.give_up_ms;
        let mut again = Vec::new();
        for name in pending {
            let Some(sink) = self.sinks.iter().find(|s| s.name() == name) else {
                continue; // no longer configured
            };
            match sink.send(&alert).await {
                Ok(()) => {
                    metrics::counter!("clarion_alerts_sent_total", "sink" => name).increment(1)
                }
                Err(e) => {
                    metrics::counter!("clarion_alerts_sink_errors_total", "sink" => name.clone())
                        .increment(1);
                    tracing::warn!(sink = %name, alert = %anomaly.alert_id, error = %e,
                        gave_up = expired, "alert sink failed");
                    if !expired {
                        again.push(name);
                    }
                }
            }
        }
        again
    }
}
