//! Several providers per channel, in priority order, each behind its
//! circuit breaker.
//!
//! A route (`providers.routes.email = ["sendgrid", "smtp"]`) applies to a
//! request whose provider is one of the route's: that provider is tried
//! first, then the others in the route's order. A provider is passed over
//! at once when its breaker is open, and after a provider-side failure (a
//! retryable error or a timeout); a message refused for good (a bad
//! address) is not sent elsewhere, since any provider would refuse it.
//! Every provider gets the same attempt id, so the attempt's outcome, its
//! `NotificationSent`, names the provider that won.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clarion_proto::events as pb;
use clarion_runtime::Clock;

use crate::breaker::{Admission, Breaker, BreakerConfig, Change, Outcome};
use crate::provider::{Provider, Report, SendError};

/// The providers of a dispatcher, the routes over them and their breakers.
pub struct Providers {
    providers: HashMap<String, Arc<dyn Provider>>,
    routes: HashMap<String, Vec<String>>,
    breakers: HashMap<String, Breaker>,
    clock: Arc<dyn Clock>,
    send_timeout: Duration,
}

/// What one send through the route came to.
pub struct Routed {
    pub report: Report,
    /// The provider of the outcome (the last one tried).
    pub provider: String,
    /// Providers passed over before it, with why.
    pub skipped: Vec<pb::ProviderSkipped>,
    pub changes: Vec<Change>,
}

impl Providers {
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        clock: Arc<dyn Clock>,
        send_timeout: Duration,
    ) -> Providers {
        Providers {
            providers: providers
                .into_iter()
                .map(|p| (p.name().to_string(), p))
                .collect(),
            routes: HashMap::new(),
            breakers: HashMap::new(),
            clock,
            send_timeout,
        }
    }

    /// Routes (channel → providers in priority order) and a breaker per
    /// provider (none when `breaker.enabled` is off).
    pub fn with_routes(
        mut self,
        routes: HashMap<String, Vec<String>>,
        breaker: &BreakerConfig,
    ) -> Providers {
        self.routes = routes;
        self.breakers = if breaker.enabled {
            self.providers
                .keys()
                .map(|name| (name.clone(), Breaker::new(name, breaker)))
                .collect()
        } else {
            HashMap::new()
        };
        self
    }

    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// A provider's breaker, if it has one.
    pub fn breaker(&self, provider: &str) -> Option<&Breaker> {
        self.breakers.get(provider)
    }

    /// The providers to try for `d`, in order.
    fn candidates<'a>(&'a self, d: &'a pb::DispatchRequested) -> Vec<&'a str> {
        let mut out = vec![d.provider.as_str()];
        if let Some(route) = self.routes.get(&d.channel) {
            if route.contains(&d.provider) {
                out.extend(
                    route
                        .iter()
                        .map(String::as_str)
                        .filter(|p| *p != d.provider),
                );
            }
        }
        out
    }

    /// Sends `d` through the first provider of its route that takes it.
    pub async fn send(&self, tenant: &str, d: &pb::DispatchRequested) -> Routed {
        let candidates = self.candidates(d);
        let mut skipped = Vec::new();
        let mut changes = Vec::new();
        for (i, name) in candidates.iter().enumerate() {
            let more = i + 1 < candidates.len();
            let breaker = self.breakers.get(*name);
            let admission = match breaker {
                Some(b) => {
                    let (a, change) = b.admit(self.clock.now_ms());
                    changes.extend(change);
                    a
                }
                None => Admission::Send,
            };
            if admission == Admission::Skip {
                skipped.push(skip(name, "circuit open"));
                continue;
            }
            let started = self.clock.now_ms();
            let report = self.send_one(name, tenant, d).await;
            let failed = matches!(&report.result, Err(e) if e.retryable);
            if let Some(b) = breaker {
                let now = self.clock.now_ms();
                let latency_ms = u64::try_from(now - started).unwrap_or(0);
                changes.extend(b.record(now, admission, Outcome { failed, latency_ms }));
            }
            if failed && more {
                let reason = report.result.as_ref().err().map_or("", |e| &e.message);
                skipped.push(skip(name, reason));
                metrics::counter!("clarion_provider_failover_total", "from" => name.to_string())
                    .increment(1);
                continue;
            }
            return Routed {
                report,
                provider: name.to_string(),
                skipped,
                changes,
            };
        }
        // Every provider was passed over (open breakers, the ones before
        // failing). Retryable: the router backs off and tries again, by
        // when a breaker may be probing.
        let why = skipped
            .iter()
            .map(|s| format!("{}: {}", s.provider, s.reason))
            .collect::<Vec<_>>()
            .join("; ");
        let err = SendError::retryable(format!("no provider took the send ({why})"));
        Routed {
            report: Err(err).into(),
            provider: d.provider.clone(),
            skipped,
            changes,
        }
    }

    /// One provider's send, bounded by the send timeout.
    async fn send_one(&self, name: &str, tenant: &str, d: &pb::DispatchRequested) -> Report {
        let Some(p) = self.providers.get(name) else {
            return Err(SendError::terminal(format!(
                "provider {name:?} is not configured on this dispatcher"
            )))
            .into();
        };
        tokio::time::timeout(self.send_timeout, p.send_reported(tenant, d))
            .await
            .unwrap_or_else(|_| {
                Err(SendError::retryable(format!(
                    "{name}: send did not finish within {} ms",
                    self.send_timeout.as_millis()
                )))
                .into()
            })
    }
}

fn skip(provider: &str, reason: &str) -> pb::ProviderSkipped {
    pb::ProviderSkipped {
        provider: provider.to_string(),
        reason: reason.to_string(),
    }
}
