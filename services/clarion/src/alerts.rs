//! The `alerts` role's configuration (`[alerts]`) and how the role starts:
//! counters on every deliveries partition, the evaluator, the sinks
//! (docs/alerts.md).

use std::sync::Arc;
use std::time::Duration;

use clarion_dispatch::alert_sinks::{EmailSink, SlackSink, WebhookSink};
use clarion_domain::anomaly::DetectorConfig;
use clarion_runtime::alerts::{AlertSink, EvaluatorConfig};
use serde::{Deserialize, Serialize};

/// `[alerts]`: anomaly detection over delivery outcomes and where alerts go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Run the role in `clarion serve` (counting and judging).
    pub enabled: bool,
    /// Whether this process judges minutes. One process of a deployment
    /// should: with `clarion run alerts` on several, set it false on all
    /// but one (the counters scale with partitions, the judge is one).
    pub evaluate: bool,
    /// Deviations from the baseline that make an anomaly.
    pub z_threshold: f64,
    /// Provider outcomes a minute needs before its rates are judged (and a
    /// baseline before its volume is): below it nobody is paged.
    pub min_volume: u64,
    /// Minutes a baseline learns before it judges.
    pub warmup_minutes: u32,
    /// The baseline's memory: the EWMA span in minutes.
    pub baseline_minutes: u32,
    /// One alert per tenant, series and signal per this long.
    pub cooldown_ms: u64,
    /// How long after its end a minute is judged.
    pub grace_ms: u64,
    /// How often the evaluator looks for closed minutes and retries sinks.
    pub tick_ms: u64,
    /// Prefix of the runbook links in alerts (a URL ending in `/`).
    pub runbook_base_url: String,
    /// HMAC key of the webhook sink (at least 16 bytes; or
    /// `signing-secret-file`).
    pub signing_secret: String,
    /// The signed webhook sink's URL (empty: none).
    pub webhook_url: String,
    /// A Slack (or Slack-compatible) incoming-webhook URL (empty: none).
    pub slack_webhook_url: String,
    /// Addresses mailed through `providers.smtp` (empty: none).
    pub email_to: Vec<String>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let d = DetectorConfig::default();
        AlertsConfig {
            enabled: true,
            evaluate: true,
            z_threshold: d.z_threshold,
            min_volume: d.min_volume,
            warmup_minutes: d.warmup,
            baseline_minutes: 60,
            cooldown_ms: d.cooldown_ms as u64,
            grace_ms: 10_000,
            tick_ms: 1_000,
            // The runbooks' path in the repository: set a URL where your
            // copy of docs/runbooks is served to make alerts link to it.
            runbook_base_url: "docs/runbooks/".into(),
            signing_secret: String::new(),
            webhook_url: String::new(),
            slack_webhook_url: String::new(),
            email_to: Vec::new(),
        }
    }
}

fn http_url(field: &str, url: &str) -> Result<(), String> {
    match reqwest_url_scheme(url) {
        Some("http" | "https") => Ok(()),
        _ => Err(format!(
            "alerts.{field}: must be an http(s) URL, got {url:?}"
        )),
    }
}

fn reqwest_url_scheme(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    (!rest.is_empty()).then_some(scheme)
}

impl AlertsConfig {
    /// What serde cannot check; `smtp` says whether `providers.smtp` is set.
    pub fn validate(&self, smtp: bool) -> Result<(), String> {
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            return Err("alerts.z-threshold: must be a positive number".into());
        }
        if self.baseline_minutes == 0 {
            return Err("alerts.baseline-minutes: must be at least 1".into());
        }
        if self.tick_ms == 0 {
            return Err("alerts.tick-ms: must be at least 1".into());
        }
        if !self.webhook_url.is_empty() {
            http_url("webhook-url", &self.webhook_url)?;
            if self.signing_secret.len() < 16 {
                return Err(
                    "alerts.signing-secret: the webhook sink needs a secret of at least 16 bytes"
                        .into(),
                );
            }
        }
        if !self.slack_webhook_url.is_empty() {
            http_url("slack-webhook-url", &self.slack_webhook_url)?;
        }
        if let Some((i, bad)) = self
            .email_to
            .iter()
            .enumerate()
            .find(|(_, a)| !a.contains('@'))
        {
            return Err(format!("alerts.email-to[{i}]: {bad:?} is not an address"));
        }
        if !self.email_to.is_empty() && !smtp {
            return Err("alerts.email-to: needs [providers.smtp] to send through".into());
        }
        Ok(())
    }

    pub fn evaluator(&self) -> EvaluatorConfig {
        EvaluatorConfig {
            detector: DetectorConfig {
                z_threshold: self.z_threshold,
                min_volume: self.min_volume,
                warmup: self.warmup_minutes,
                alpha: 2.0 / (f64::from(self.baseline_minutes) + 1.0),
                cooldown_ms: self.cooldown_ms as i64,
            },
            grace_ms: self.grace_ms as i64,
            tick: Duration::from_millis(self.tick_ms),
            runbook_base_url: self.runbook_base_url.clone(),
            ..EvaluatorConfig::default()
        }
    }
}

impl crate::roles::Node {
    /// The configured sinks, in the order they are told.
    pub fn alert_sinks(&self) -> anyhow::Result<Vec<Arc<dyn AlertSink>>> {
        let a = &self.cfg.alerts;
        let outbound = self.cfg.outbound.guard();
        let mut out: Vec<Arc<dyn AlertSink>> = Vec::new();
        if !a.webhook_url.is_empty() {
            out.push(Arc::new(
                WebhookSink::new(
                    &a.webhook_url,
                    &a.signing_secret,
                    &outbound,
                    self.clock.clone(),
                )
                .map_err(anyhow::Error::msg)?,
            ));
        }
        if !a.slack_webhook_url.is_empty() {
            out.push(Arc::new(
                SlackSink::new(&a.slack_webhook_url, &outbound).map_err(anyhow::Error::msg)?,
            ));
        }
        if let (false, Some(smtp)) = (a.email_to.is_empty(), &self.cfg.providers.smtp) {
            out.push(Arc::new(
                EmailSink::new(smtp, a.email_to.clone()).map_err(anyhow::Error::msg)?,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_name_their_key() {
        let ok = AlertsConfig::default();
        ok.validate(false).unwrap();
        fn check(f: fn(&mut AlertsConfig), smtp: bool) -> String {
            let mut c = AlertsConfig::default();
            f(&mut c);
            c.validate(smtp).unwrap_err()
        }
        assert!(check(|c| c.z_threshold = 0.0, false).starts_with("alerts.z-threshold"));
        assert!(
            check(|c| c.webhook_url = "ftp://x".into(), false).starts_with("alerts.webhook-url")
        );
        assert!(check(|c| c.webhook_url = "https://x.test/h".into(), false)
            .starts_with("alerts.signing-secret"));
        assert!(check(|c| c.email_to = vec!["ops".into()], true).starts_with("alerts.email-to[0]"));
        assert!(check(|c| c.email_to = vec!["ops@x.test".into()], false).contains("providers.smtp"));
        let e = ok.evaluator();
        assert!((e.detector.alpha - 2.0 / 61.0).abs() < 1e-12);
    }

    #[test]
    fn the_alerts_section_loads_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clarion.toml");
        std::fs::write(
            &file,
            "[alerts]\nwebhook-url = \"https://hooks.test/a\"\nsigning-secret = \"0123456789abcdef\"\nmin-volume = 5\n",
        )
        .unwrap();
        let c = crate::Config::load(Some(&file)).unwrap();
        assert_eq!(c.alerts.webhook_url, "https://hooks.test/a");
        assert_eq!(c.alerts.min_volume, 5);
        assert_eq!(c.alerts.z_threshold, 4.0, "defaults fill the rest");
        c.validate().unwrap();
    }
}
