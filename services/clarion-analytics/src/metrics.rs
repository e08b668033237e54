//! The Prometheus series of the analytics processor. Labels are bounded:
//! the channel is one of five (else `other`), the provider one of the
//! built-in providers (else `other`: a workflow step may name any string),
//! the tenant is `_` unless the operator turned tenant labels on
//! (`security.metrics-tenant-labels`), and workflows and templates, which
//! tenants create at will, are never labels (the REST API has them).
//!
//! Series:
//! - `clarion_analytics_outcomes_total{tenant,channel,provider,outcome}`
//! - `clarion_analytics_latency_seconds{channel,provider,stage}` (histogram)
//! - `clarion_analytics_provider_last_success_seconds{provider}` (gauge)

use clarion_domain::Channel;
use clarion_runtime::metric_labels;

use crate::attempt::{Observation, Outcome};
use crate::dimension::Dims;

/// The label value written for anything outside the known values.
pub const OTHER: &str = "other";

/// Bucket bounds (seconds) of `clarion_analytics_latency_seconds`: those
/// of the projection's histograms ([`crate::histogram::BOUNDS_MS`]).
pub fn latency_buckets_s() -> Vec<f64> {
    crate::histogram::BOUNDS_MS
        .iter()
        .map(|ms| *ms as f64 / 1000.0)
        .collect()
}

pub fn channel_label(c: &str) -> &'static str {
    c.parse::<Channel>().map_or(OTHER, |c| c.as_str())
}

pub fn provider_label(p: &str) -> &'static str {
    clarion_domain::workflow::KNOWN_PROVIDERS
        .iter()
        .find(|k| **k == p)
        .copied()
        .unwrap_or(OTHER)
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Attempted => "attempted",
        Outcome::Sent => "sent",
        Outcome::Delivered => "delivered",
        Outcome::Failed => "failed",
        Outcome::Bounced => "bounced",
        Outcome::Opened => "opened",
        Outcome::Clicked => "clicked",
    }
}

/// Records one observation of a send with dimensions `dims`.
pub fn record(tenant: &str, dims: &Dims, obs: &Observation) {
    let channel = channel_label(&dims.channel);
    let provider = provider_label(&dims.provider);
    match *obs {
        Observation::Count { outcome, at } => {
            metrics::counter!(
                "clarion_analytics_outcomes_total",
                "tenant" => metric_labels::tenant(tenant),
                "channel" => channel,
                "provider" => provider,
                "outcome" => outcome_label(outcome),
            )
            .increment(1);
            if outcome == Outcome::Sent {
                metrics::gauge!(
                    "clarion_analytics_provider_last_success_seconds",
                    "provider" => provider,
                )
                .set(at as f64 / 1000.0);
            }
        }
        Observation::Latency { latency, ms, .. } => {
            metrics::histogram!(
                "clarion_analytics_latency_seconds",
                "channel" => channel,
                "provider" => provider,
                "stage" => latency.as_str(),
            )
            .record(ms.max(0) as f64 / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_outside_the_known_values_read_other() {
        assert_eq!(channel_label("in_app"), "in_app");
        assert_eq!(channel_label("carrier-pigeon"), OTHER);
        assert_eq!(provider_label("smtp"), "smtp");
        assert_eq!(provider_label("acme-tenant-provider-123"), OTHER);
    }

    /// The series this module records (a histogram's as Prometheus names them).
    const SERIES: &[&str] = &[
        "clarion_analytics_outcomes_total",
        "clarion_analytics_latency_seconds_bucket",
        "clarion_analytics_provider_last_success_seconds",
    ];

    #[test]
    fn the_grafana_dashboard_charts_only_series_recorded_here() {
        let json = include_str!("../../../dashboards/grafana/clarion-delivery.json");
        let mut used = Vec::new();
        let mut rest = json;
        while let Some(at) = rest.find("clarion_analytics_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.push(name);
        }
        assert!(!used.is_empty());
        for name in &used {
            assert!(SERIES.contains(&name.as_str()), "{name} is not recorded");
        }
        for name in SERIES {
            assert!(used.contains(&name.to_string()), "{name} is not charted");
        }
    }
}
