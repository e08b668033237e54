//! A batch's observations grouped by what a send is counted under (tenant,
//! channel, provider, workflow, template) and minute, before they are
//! spread over the bucket rows. Spreading each observation at once cost
//! ten keyed map updates (five dimension values × two granularities), each
//! with freshly allocated strings; the sends of a batch share a handful of
//! dimension sets, so grouping first leaves one lookup per observation,
//! without allocating, and the spreading once per group.

use std::collections::HashMap;

use crate::attempt::{Observation, Outcome};
use crate::counts::Counts;
use crate::dimension::{Dimension, Dims};
use crate::rows::{Granularity, ProviderState};

/// (tenant, channel, provider, workflow, template, minute start).
type Key = (String, String, String, String, String, i64);

/// A [`Key`], borrowed: hashes as the tuple does.
#[derive(Hash)]
struct Borrowed<'a>(&'a str, &'a str, &'a str, &'a str, &'a str, i64);

impl hashbrown::Equivalent<Key> for Borrowed<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.5 == k.5
            && self.0 == k.0
            && self.1 == k.1
            && self.2 == k.2
            && self.3 == k.3
            && self.4 == k.4
    }
}

/// What one group adds up.
#[derive(Default)]
struct Group {
    counts: Counts,
    /// The latest observation's time.
    latest: i64,
    /// The provider's health as this group saw it, if it counted an
    /// outcome (latencies alone leave the health row alone).
    provider: Option<ProviderState>,
}

/// (tenant, granularity, dimension, value, bucket start).
pub type BucketKey = (String, Granularity, Dimension, String, i64);

/// The groups of one batch.
#[derive(Default)]
pub struct Sends {
    groups: hashbrown::HashMap<Key, Group, foldhash::fast::RandomState>,
}

/// What the groups spread into: the bucket additions, the latest time per
/// dimension value, and the providers' health.
#[derive(Default)]
pub struct Spread {
    pub buckets: HashMap<BucketKey, Counts>,
    pub values: HashMap<(String, Dimension, String), i64>,
    pub providers: HashMap<(String, String), ProviderState>,
}

impl Sends {
    /// Adds one observation of a send of `tenant` counted under `dims`.
    pub fn observe(&mut self, tenant: &str, dims: &Dims, obs: &Observation, reason: &str) {
        let at = match *obs {
            Observation::Count { at, .. } | Observation::Latency { at, .. } => at,
        };
        let minute = Granularity::Minute.start(at);
        let probe = Borrowed(
            tenant,
            &dims.channel,
            &dims.provider,
            &dims.workflow,
            &dims.template,
            minute,
        );
        let group = match self.groups.get_mut(&probe) {
            Some(g) => g,
            None => self
                .groups
                .entry((
                    tenant.to_string(),
                    dims.channel.clone(),
                    dims.provider.clone(),
                    dims.workflow.clone(),
                    dims.template.clone(),
                    minute,
                ))
                .or_default(),
        };
        add(&mut group.counts, obs);
        group.latest = group.latest.max(at);
        if let Observation::Count { outcome, at } = *obs {
            let p = group.provider.get_or_insert_with(ProviderState::default);
            match outcome {
                Outcome::Sent => p.last_success_ms = p.last_success_ms.max(at),
                Outcome::Failed if at >= p.last_failure_ms => {
                    p.last_failure_ms = at;
                    p.last_error = reason.to_string();
                }
                _ => {}
            }
        }
    }

    /// Spreads every group over the buckets of each of its dimension
    /// values and both granularities.
    pub fn spread(self) -> Spread {
        let mut out = Spread::default();
        for ((tenant, channel, provider, workflow, template), minute, g) in self
            .groups
            .into_iter()
            .map(|((t, c, p, w, tp, m), g)| ((t, c, p, w, tp), m, g))
        {
            let dims = Dims {
                channel,
                provider,
                workflow,
                template,
            };
            for (d, value) in dims.pairs() {
                for gran in Granularity::ALL {
                    let key = (
                        tenant.clone(),
                        gran,
                        d,
                        value.to_string(),
                        gran.start(minute),
                    );
                    out.buckets.entry(key).or_default().merge(&g.counts);
                }
                let last = out
                    .values
                    .entry((tenant.clone(), d, value.to_string()))
                    .or_default();
                *last = (*last).max(g.latest);
            }
            let Some(seen) = g.provider else { continue };
            let p = (tenant, dims.pairs()[2].1.to_string());
            let state = out.providers.entry(p).or_default();
            state.last_success_ms = state.last_success_ms.max(seen.last_success_ms);
            if seen.last_failure_ms >= state.last_failure_ms && seen.last_failure_ms > 0 {
                state.last_failure_ms = seen.last_failure_ms;
                state.last_error = seen.last_error;
            }
        }
        out
    }
}

/// Adds one observation to a bucket's counts.
fn add(c: &mut Counts, obs: &Observation) {
    match *obs {
        Observation::Count { outcome, .. } => {
            let n = match outcome {
                Outcome::Attempted => &mut c.attempted,
                Outcome::Sent => &mut c.sent,
                Outcome::Delivered => &mut c.delivered,
                Outcome::Failed => &mut c.failed,
                Outcome::Bounced => &mut c.bounced,
                Outcome::Opened => &mut c.opened,
                Outcome::Clicked => &mut c.clicked,
            };
            *n += 1;
        }
        Observation::Latency { latency, ms, .. } => c.latency_mut(latency).record(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counts::Latency;

    fn dims(template: &str) -> Dims {
        Dims {
            channel: "email".into(),
            provider: "smtp".into(),
            workflow: "welcome".into(),
            template: template.into(),
        }
    }

    fn sent(at: i64) -> Observation {
        Observation::Count {
            outcome: Outcome::Sent,
            at,
        }
    }

    #[test]
    fn groups_spread_over_every_dimension_value_and_granularity() {
        let mut s = Sends::default();
        // Two minutes of one hour, two templates, two tenants.
        s.observe("acme", &dims("a"), &sent(60_000), "");
        s.observe("acme", &dims("a"), &sent(61_000), "");
        s.observe("acme", &dims("b"), &sent(125_000), "");
        s.observe("globex", &dims("a"), &sent(60_500), "");
        let latency = Observation::Latency {
            latency: Latency::SentToDelivered,
            at: 62_000,
            ms: 40,
        };
        s.observe("acme", &dims("a"), &latency, "");
        let failed = Observation::Count {
            outcome: Outcome::Failed,
            at: 126_000,
        };
        s.observe("acme", &dims("b"), &failed, "timeout");
        let out = s.spread();
        let sent_in = |t: &str, g, d, v: &str, start| {
            out.buckets
                .get(&(t.to_string(), g, d, v.to_string(), start))
                .map_or(0, |c: &Counts| c.sent)
        };
        use Dimension::*;
        use Granularity::*;
        assert_eq!(sent_in("acme", Minute, All, "all", 60_000), 2);
        assert_eq!(sent_in("acme", Minute, All, "all", 120_000), 1);
        assert_eq!(sent_in("acme", Hour, All, "all", 0), 3);
        assert_eq!(sent_in("acme", Hour, Template, "a", 0), 2);
        assert_eq!(sent_in("acme", Hour, Template, "b", 0), 1);
        assert_eq!(sent_in("acme", Hour, Channel, "email", 0), 3);
        assert_eq!(sent_in("globex", Hour, Provider, "smtp", 0), 1);
        assert_eq!(sent_in("globex", Hour, Template, "b", 0), 0);
        let hour = &out.buckets[&("acme".into(), Hour, All, "all".into(), 0)];
        assert_eq!(hour.failed, 1);
        assert_eq!(hour.latency(Latency::SentToDelivered).count(), 1);
        assert_eq!(out.values[&("acme".into(), Template, "b".into())], 126_000);
        let health = &out.providers[&("acme".into(), "smtp".into())];
        assert_eq!(health.last_success_ms, 125_000);
        assert_eq!(
            (health.last_failure_ms, health.last_error.as_str()),
            (126_000, "timeout")
        );
        assert_eq!(out.providers.len(), 2);
    }
}
