//! The `sla` role's configuration (`[sla]`) and how it starts: a counter
//! on every recipient partition (dispatch and deliveries), and the
//! evaluator with the alert sinks of `[alerts]` (docs/slas.md).

use std::sync::Arc;
use std::time::Duration;

use clarion_runtime::sla::{SlaCounter, SlaEvaluator, SlaEvaluatorConfig};
use clarion_runtime::{processor::NoEffects, Topic};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// `[sla]`: SLA tracking.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Run the role in `clarion serve`.
    pub enabled: bool,
    /// Whether this process judges SLAs. One process of a deployment
    /// should (the counters scale with partitions, the judge is one).
    pub evaluate: bool,
    /// How often the evaluator judges every SLA.
    pub tick_ms: u64,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            enabled: true,
            evaluate: true,
            tick_ms: 1_000,
        }
    }
}

impl SlaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ms == 0 {
            return Err("sla.tick-ms: must be at least 1".into());
        }
        Ok(())
    }
}

impl crate::roles::Node {
    /// The SLA role: counters per recipient partition and, unless
    /// `sla.evaluate` is off, the evaluator telling `[alerts]`' sinks.
    pub(crate) fn spawn_sla(
        &self,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        if !self.cfg.sla.enabled {
            tracing::info!("sla.enabled is false: no SLA tracking");
            return Ok(());
        }
        let colocated = self.colocated.is_some();
        self.spawn_partitions_pub(
            tasks,
            Topic::Dispatch,
            &[Topic::Deliveries],
            Arc::new(NoEffects),
            move || {
                if colocated {
                    SlaCounter::colocated()
                } else {
                    SlaCounter::new()
                }
            },
            shutdown,
        );
        if self.cfg.sla.evaluate {
            let evaluator = SlaEvaluator::new(
                self.store.clone(),
                self.log.clone(),
                self.topics.clone(),
                self.clock.clone(),
                SlaEvaluatorConfig {
                    tick: Duration::from_millis(self.cfg.sla.tick_ms),
                    runbook_base_url: self.cfg.alerts.runbook_base_url.clone(),
                },
                self.alert_sinks()?,
            );
            let sd = shutdown.clone();
            tasks.spawn(async move {
                evaluator.run(sd).await;
                Ok(())
            });
        }
        Ok(())
    }
}
