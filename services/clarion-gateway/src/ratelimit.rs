//! The per-tenant request rate limit: a token bucket per tenant (GCRA, the
//! `governor` crate), checked after authentication on every tenant call of
//! gRPC and REST, so only tenants that exist get a bucket.
//!
//! The operator sets a default and per-tenant overrides in the config file
//! (`[rate-limit]`, docs/security.md): a tenant cannot raise its own limit.
//! Time is the gateway's [`Clock`], so tests drive it with the manual clock.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use clarion_runtime::Clock;
use governor::clock::Clock as GovernorClock;
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// One bucket's size: `per_second` tokens refill each second, at most
/// `burst` are saved up. `per_second = 0` turns the limit off.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_second);
        Some(Quota::per_second(per_second).allow_burst(burst))
    }

    /// The bucket's size (`burst`, or `per_second` when unset).
    fn bucket(self) -> u32 {
        if self.burst == 0 {
            self.per_second
        } else {
            self.burst
        }
    }
}

/// What a request left in its tenant's bucket: the IETF `RateLimit-Policy`
/// and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers).
///
/// The token bucket is described as a quota of `bucket` requests per
/// window of the time the bucket takes to refill from empty; `r` is the
/// tokens left now, `t` the seconds until the bucket is full again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// `default` (the operator's default rate) or `tenant` (an override).
    pub policy: &'static str,
    pub rate: Rate,
    /// Requests that can be made right now.
    pub remaining: u32,
}

impl Allowance {
    fn window_secs(&self) -> u64 {
        u64::from(self.rate.bucket())
            .div_ceil(u64::from(self.rate.per_second.max(1)))
            .max(1)
    }

    /// Whole seconds until the bucket is full again (0: it is).
    pub fn full_in_secs(&self) -> u64 {
        let missing = u64::from(self.rate.bucket().saturating_sub(self.remaining));
        missing.div_ceil(u64::from(self.rate.per_second.max(1)))
    }

    /// `RateLimit-Policy`, e.g. `"default";q=20000;w=2`.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.policy,
            self.rate.bucket(),
            self.window_secs()
        )
    }

    /// `RateLimit`, e.g. `"default";r=19999;t=1`.
    pub fn header(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.policy,
            self.remaining,
            self.full_in_secs()
        )
    }
}

/// The operator's limits: a default for every tenant, and overrides.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(flatten)]
    pub default: Rate,
    /// Tenant id → its own rate.
    #[serde(default)]
    pub tenants: HashMap<String, Rate>,
}

impl Default for RateLimitConfig {
    /// Generous: far above what one tenant's integration needs (a Trigger
    /// call carries up to 1,000 recipients), low enough that one tenant
    /// cannot take every append of a gateway.
    fn default() -> Self {
        RateLimitConfig {
            default: Rate {
                per_second: 10_000,
                burst: 20_000,
            },
            tenants: HashMap::new(),
        }
    }
}

/// The gateway [`Clock`] as governor reads it (milliseconds since the epoch).
#[derive(Clone)]
pub struct BucketClock(pub Arc<dyn Clock>);

impl GovernorClock for BucketClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms().max(0) as u64)
    }
}

type Snapshots = StateInformationMiddleware;
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, BucketClock, Snapshots>;
type Direct = RateLimiter<NotKeyed, InMemoryState, BucketClock, Snapshots>;

/// The buckets of every tenant.
pub struct TenantLimiter {
    clock: BucketClock,
    /// Tenants on the default rate (`None`: unlimited).
    default: Option<(Keyed, Rate)>,
    /// Tenants with their own rate (`None` inside: unlimited), fixed at start.
    overrides: HashMap<String, Option<(Direct, Rate)>>,
}

impl TenantLimiter {
    pub fn new(cfg: &RateLimitConfig, clock: Arc<dyn Clock>) -> TenantLimiter {
        let clock = BucketClock(clock);
        TenantLimiter {
            default: cfg.default.quota().map(|q| {
                let l = RateLimiter::dashmap_with_clock(q, clock.clone()).with_middleware();
                (l, cfg.default)
            }),
            overrides: cfg
                .tenants
                .iter()
                .map(|(t, r)| {
                    let limiter = r.quota().map(|q| {
                        let l = RateLimiter::direct_with_clock(q, clock.clone()).with_middleware();
                        (l, *r)
                    });
                    (t.clone(), limiter)
                })
                .collect(),
            clock,
        }
    }

    /// No limit at all.
    pub fn unlimited(clock: Arc<dyn Clock>) -> TenantLimiter {
        let off = Rate {
            per_second: 0,
            burst: 0,
        };
        TenantLimiter::new(
            &RateLimitConfig {
                default: off,
                tenants: HashMap::new(),
            },
            clock,
        )
    }

    /// Takes one token from `tenant`'s bucket: what is left (`None`: the
    /// tenant is not limited), or `Err(wait)` when it is empty, with how
    /// long until the next token.
    pub fn check(&self, tenant: &str) -> Result<Option<Allowance>, Duration> {
        let (outcome, policy, rate) = match self.overrides.get(tenant) {
            Some(Some((l, rate))) => (l.check(), "tenant", *rate),
            Some(None) => return Ok(None),
            None => match &self.default {
                Some((l, rate)) => (l.check_key(&tenant.to_string()), "default", *rate),
                None => return Ok(None),
            },
        };
        match outcome {
            Ok(snapshot) => Ok(Some(Allowance {
                policy,
                rate,
                remaining: StateSnapshot::remaining_burst_capacity(&snapshot),
            })),
            Err(e) => Err(NotUntil::wait_time_from(&e, self.clock.now())),
        }
    }

    /// The tenant's policy with an empty bucket (for a 429); `None`: the
    /// tenant is not limited.
    pub fn policy(&self, tenant: &str) -> Option<Allowance> {
        let (policy, rate) = match self.overrides.get(tenant) {
            Some(Some((_, rate))) => ("tenant", *rate),
            Some(None) => return None,
            None => ("default", self.default.as_ref()?.1),
        };
        Some(Allowance {
            policy,
            rate,
            remaining: 0,
        })
    }

    /// Forgets buckets that are full again (call now and then: bounds memory
    /// to the tenants active recently).
    pub fn shrink(&self) {
        if let Some((l, _)) = &self.default {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Whole seconds to wait, rounded up (the HTTP `Retry-After` form; at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_runtime::clock::ManualClock;

    const T0: i64 = 1_700_000_000_000;

    fn limiter(clock: &ManualClock) -> TenantLimiter {
        let mut tenants = HashMap::new();
        tenants.insert(
            "big".to_string(),
            Rate {
                per_second: 100,
                burst: 100,
            },
        );
        tenants.insert(
            "free".to_string(),
            Rate {
                per_second: 0,
                burst: 0,
            },
        );
        let cfg = RateLimitConfig {
            default: Rate {
                per_second: 2,
                burst: 3,
            },
            tenants,
        };
        TenantLimiter::new(&cfg, Arc::new(clock.clone()))
    }

    #[test]
    fn a_tenant_over_its_burst_waits_while_others_go_on() {
        let clock = ManualClock::new(T0);
        let l = limiter(&clock);
        for _ in 0..3 {
            l.check("acme").unwrap();
        }
        let wait = l.check("acme").unwrap_err();
        // 2 per second: the next token comes within half a second.
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(retry_after_secs(wait), 1);
        // Another tenant on the default rate has its own bucket.
        for _ in 0..3 {
            l.check("globex").unwrap();
        }
        // Refilled after the wait, on the manual clock.
        clock.advance(wait);
        l.check("acme").unwrap();
        assert!(l.check("acme").is_err());
    }

    #[test]
    fn overrides_replace_the_default_per_tenant() {
        let clock = ManualClock::new(T0);
        let l = limiter(&clock);
        for _ in 0..100 {
            l.check("big").unwrap();
        }
        assert!(l.check("big").is_err());
        for _ in 0..10_000 {
            l.check("free").unwrap();
        }
        let off = TenantLimiter::unlimited(Arc::new(clock));
        for _ in 0..10_000 {
            off.check("acme").unwrap();
        }
    }

    #[test]
    fn allowances_say_what_is_left_and_when_the_bucket_is_full_again() {
        let clock = ManualClock::new(T0);
        let l = limiter(&clock);
        // Default: 2 per second, a bucket of 3.
        let a = l.check("acme").unwrap().expect("limited");
        assert_eq!(a.remaining, 2);
        assert_eq!(a.policy_header(), "\"default\";q=3;w=2");
        assert_eq!(a.header(), "\"default\";r=2;t=1");
        l.check("acme").unwrap();
        let a = l.check("acme").unwrap().unwrap();
        assert_eq!(a.header(), "\"default\";r=0;t=2");
        clock.advance(Duration::from_secs(2));
        assert_eq!(l.check("acme").unwrap().unwrap().remaining, 2);
        // An override is its own policy; an unlimited tenant has none.
        let big = l.check("big").unwrap().unwrap();
        assert_eq!(big.policy_header(), "\"tenant\";q=100;w=1");
        assert_eq!(big.remaining, 99);
        assert_eq!(l.check("free").unwrap(), None);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
