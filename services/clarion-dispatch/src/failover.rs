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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clarion_proto::events as pb;
use clarion_runtime::Clock;

use crate::breaker::{Admission, Breaker, BreakerConfig, Change, Outcome};
use crate::provider::{Provider, Report, SendError};
use crate::tenant_providers::TenantView;

/// The providers of a dispatcher, the routes over them and their breakers.
pub struct Providers {
    providers: HashMap<String, Arc<dyn Provider>>,
    routes: HashMap<String, Vec<String>>,
    breakers: HashMap<String, Arc<Breaker>>,
    /// The breakers' thresholds; `None` when breakers are off.
    breaker_cfg: Option<BreakerConfig>,
    /// Breakers of tenants' own provider accounts, by tenant and provider,
    /// made at their first send: one tenant's account failing says
    /// nothing about the operator's or another tenant's.
    tenant_breakers: Mutex<HashMap<(String, String), Arc<Breaker>>>,
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
            breaker_cfg: None,
            tenant_breakers: Mutex::default(),
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
                .map(|name| (name.clone(), Arc::new(Breaker::new(name, breaker))))
                .collect()
        } else {
            HashMap::new()
        };
        self.breaker_cfg = breaker.enabled.then(|| breaker.clone());
        self
    }

    /// The clock sends are timed by (outcomes are stamped with it).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// A provider's breaker, if it has one.
    pub fn breaker(&self, provider: &str) -> Option<&Breaker> {
        self.breakers.get(provider).map(|b| &**b)
    }

    /// The breaker a send through `name` answers to: the tenant account's
    /// own when the tenant brought credentials, else the operator's.
    fn breaker_for(&self, tenant: &str, name: &str, own: bool) -> Option<Arc<Breaker>> {
        if !own {
            return self.breakers.get(name).cloned();
        }
        let cfg = self.breaker_cfg.as_ref()?;
        let mut all = self.tenant_breakers.lock().expect("not poisoned");
        let b = all
            .entry((tenant.to_string(), name.to_string()))
            // Named apart from the operator's in metrics, without the
            // tenant id (metric labels may not carry it).
            .or_insert_with(|| Arc::new(Breaker::new(&format!("{name} (tenant account)"), cfg)));
        Some(b.clone())
    }

    /// Whether `name` can send for a tenant with `view`.
    fn available(&self, name: &str, view: Option<&TenantView>) -> bool {
        self.providers.contains_key(name) || view.is_some_and(|v| v.providers.contains_key(name))
    }

    /// The providers to try for `d`, in order. A tenant's own route for
    /// the channel wins over the operator's when the request's provider is
    /// in either (a step naming a provider outside both sends through it
    /// alone); providers neither the tenant nor the operator configured are
    /// left out of a tenant route; providers demoted by a breached SLA go
    /// last.
    fn candidates<'a>(
        &'a self,
        d: &'a pb::DispatchRequested,
        view: Option<&'a TenantView>,
    ) -> Vec<&'a str> {
        let operator = self.routes.get(&d.channel);
        let own = view.and_then(|v| v.routes.get(&d.channel));
        let routed = |r: Option<&Vec<String>>| r.is_some_and(|r| r.contains(&d.provider));
        let mut out: Vec<&str> = match own {
            Some(route) if routed(own) || routed(operator) => route
                .iter()
                .map(String::as_str)
                .filter(|p| self.available(p, view))
                .collect(),
            _ => {
                let mut out = vec![d.provider.as_str()];
                if let Some(route) = operator.filter(|r| r.contains(&d.provider)) {
                    out.extend(
                        route
                            .iter()
                            .map(String::as_str)
                            .filter(|p| *p != d.provider),
                    );
                }
                out
            }
        };
        if out.is_empty() {
            out.push(d.provider.as_str());
        }
        if let Some(v) = view.filter(|v| !v.demoted.is_empty()) {
            // Stable: the others keep their order, the demoted follow.
            out.sort_by_key(|p| v.is_demoted(&d.channel, p));
        }
        out
    }

    /// Sends `d` through the first provider of its route that takes it.
    pub async fn send(&self, tenant: &str, d: &pb::DispatchRequested) -> Routed {
        self.send_with(tenant, d, None).await
    }

    /// [`Providers::send`] with the tenant's own providers, route and
    /// demotions.
    pub async fn send_with(
        &self,
        tenant: &str,
        d: &pb::DispatchRequested,
        view: Option<&TenantView>,
    ) -> Routed {
        let candidates = self.candidates(d, view);
        let mut skipped = Vec::new();
        let mut changes = Vec::new();
        for (i, name) in candidates.iter().enumerate() {
            let more = i + 1 < candidates.len();
            let own = view.and_then(|v| v.providers.get(*name));
            let breaker = self.breaker_for(tenant, name, own.is_some());
            let breaker = breaker.as_deref();
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
            let report = self.send_one(name, own, tenant, d).await;
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
    async fn send_one(
        &self,
        name: &str,
        own: Option<&Arc<dyn Provider>>,
        tenant: &str,
        d: &pb::DispatchRequested,
    ) -> Report {
        let Some(p) = own.or_else(|| self.providers.get(name)) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::SendOutcome;
    use crate::tenant_providers::TenantView;

    /// A provider answering with its name and whose account it is.
    struct Fake(&'static str, &'static str);

    #[async_trait::async_trait]
    impl Provider for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn send(&self, _: &str, _: &pb::DispatchRequested) -> Result<SendOutcome, SendError> {
            Ok(SendOutcome {
                provider_message_id: format!("{}@{}", self.0, self.1),
                delivered: false,
            })
        }
    }

    fn providers() -> Providers {
        Providers::new(
            vec![
                Arc::new(Fake("vonage", "operator")),
                Arc::new(Fake("twilio", "operator")),
            ],
            Arc::new(clarion_runtime::ManualClock::new(0)),
            Duration::from_secs(1),
        )
        .with_routes(
            HashMap::from([("sms".into(), vec!["vonage".into(), "twilio".into()])]),
            &BreakerConfig::default(),
        )
    }

    fn sms(provider: &str) -> pb::DispatchRequested {
        pb::DispatchRequested {
            channel: "sms".into(),
            provider: provider.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_tenant_route_and_demotions_order_the_candidates() {
        let p = providers();
        let d = sms("vonage");
        assert_eq!(p.candidates(&d, None), ["vonage", "twilio"]);
        let mut v = TenantView::default();
        v.demoted.push(("sms".into(), "vonage".into()));
        assert_eq!(
            p.candidates(&d, Some(&v)),
            ["twilio", "vonage"],
            "demoted last"
        );
        v.demoted.push(("email".into(), "twilio".into()));
        assert_eq!(
            p.candidates(&d, Some(&v)),
            ["twilio", "vonage"],
            "per channel"
        );
        let mut v = TenantView::default();
        v.routes
            .insert("sms".into(), vec!["twilio".into(), "vonage".into()]);
        assert_eq!(
            p.candidates(&d, Some(&v)),
            ["twilio", "vonage"],
            "the tenant's order"
        );
        // A step naming a provider outside both routes sends through it alone.
        assert_eq!(p.candidates(&sms("webhook"), Some(&v)), ["webhook"]);
        // Nobody configured smtp here: left out of the tenant's route.
        v.routes
            .insert("sms".into(), vec!["smtp".into(), "twilio".into()]);
        assert_eq!(p.candidates(&d, Some(&v)), ["twilio"]);
    }

    #[tokio::test]
    async fn a_tenant_account_sends_instead_of_the_operators() {
        let p = providers();
        let mut v = TenantView::default();
        v.providers
            .insert("vonage".into(), Arc::new(Fake("vonage", "acme")));
        let own = p.send_with("acme", &sms("vonage"), Some(&v)).await;
        assert_eq!(
            own.report.result.unwrap().provider_message_id,
            "vonage@acme"
        );
        let op = p.send_with("globex", &sms("vonage"), None).await;
        assert_eq!(
            op.report.result.unwrap().provider_message_id,
            "vonage@operator"
        );
    }
}
