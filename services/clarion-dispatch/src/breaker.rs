//! A circuit breaker per provider: closed, open, half-open.
//!
//! Closed, every send goes through and its outcome lands in a sliding
//! window (ten buckets over `window-ms`). Once the window holds at least
//! `min-requests` outcomes and the share of failures (provider-side ones:
//! retryable errors and timeouts) or of slow calls (over `slow-call-ms`)
//! reaches its threshold, the breaker opens: sends skip the provider at
//! once, without spending a timeout on it, and go to the next provider of
//! the channel's route. After `open-ms` it is half-open: `half-open-probes`
//! sends are let through; all of them good closes it, any bad one opens it
//! again.
//!
//! Time is the dispatcher's clock (a manual one in tests). A breaker lives
//! in one dispatcher process: several processes each judge the provider
//! from their own sends.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// `providers.breaker`: thresholds shared by every provider's breaker.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Off: no breaker, sends still fail over on provider errors.
    pub enabled: bool,
    /// The sliding window the rates are taken over.
    pub window_ms: u64,
    /// Outcomes the window must hold before the breaker may open.
    pub min_requests: u32,
    /// Share of failed sends (0-1) that opens the breaker.
    pub failure_rate: f64,
    /// A send slower than this counts as slow.
    pub slow_call_ms: u64,
    /// Share of slow sends (0-1) that opens the breaker.
    pub slow_call_rate: f64,
    /// How long the breaker stays open before probing.
    pub open_ms: u64,
    /// Sends let through half-open; all good closes the breaker.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window_ms: 30_000,
            min_requests: 10,
            failure_rate: 0.5,
            slow_call_ms: 5_000,
            slow_call_rate: 0.8,
            open_ms: 30_000,
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let rate = |name: &str, r: f64| {
            if r > 0.0 && r <= 1.0 {
                Ok(())
            } else {
                Err(format!(
                    "providers.breaker.{name}: must be in (0, 1], not {r}"
                ))
            }
        };
        rate("failure-rate", self.failure_rate)?;
        rate("slow-call-rate", self.slow_call_rate)?;
        for (name, v) in [
            ("window-ms", self.window_ms),
            ("open-ms", self.open_ms),
            ("min-requests", u64::from(self.min_requests)),
            ("half-open-probes", u64::from(self.half_open_probes)),
        ] {
            if v == 0 {
                return Err(format!("providers.breaker.{name}: must be at least 1"));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The value of `clarion_provider_breaker_state`.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
}

/// A state change, for the event and the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub provider: String,
    pub from: State,
    pub to: State,
    pub reason: String,
    pub at_ms: i64,
}

/// Whether a send may go to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Send,
    /// A half-open probe: its outcome decides the state.
    Probe,
    /// Open: skip the provider.
    Skip,
}

/// One send's outcome as the breaker judges it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// A provider-side failure (a retryable error or a timeout). A message
    /// the provider refused for good is the provider working.
    pub failed: bool,
    pub latency_ms: u64,
}

const BUCKETS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which slice of time (`at / bucket_ms`) it counts.
    slot: i64,
    total: u32,
    failed: u32,
    slow: u32,
}

struct Inner {
    state: State,
    buckets: [Bucket; BUCKETS],
    opened_at: i64,
    probes_admitted: u32,
    probes_good: u32,
}

pub struct Breaker {
    provider: String,
    cfg: BreakerConfig,
    bucket_ms: i64,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(provider: &str, cfg: &BreakerConfig) -> Breaker {
        metrics::gauge!("clarion_provider_breaker_state", "provider" => provider.to_string())
            .set(State::Closed.gauge());
        Breaker {
            provider: provider.to_string(),
            cfg: cfg.clone(),
            bucket_ms: (cfg.window_ms as i64 / BUCKETS as i64).max(1),
            inner: Mutex::new(Inner {
                state: State::Closed,
                buckets: [Bucket::default(); BUCKETS],
                opened_at: 0,
                probes_admitted: 0,
                probes_good: 0,
            }),
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("breaker lock").state
    }

    /// Whether a send at `now_ms` may go to the provider; an open breaker
    /// whose time is up turns half-open here (the change is returned).
    pub fn admit(&self, now_ms: i64) -> (Admission, Option<Change>) {
        let mut g = self.inner.lock().expect("breaker lock");
        let mut change = None;
        if g.state == State::Open && now_ms - g.opened_at >= self.cfg.open_ms as i64 {
            g.probes_admitted = 0;
            g.probes_good = 0;
            change = Some(self.set(
                &mut g,
                State::HalfOpen,
                "open time over: probing".into(),
                now_ms,
            ));
        }
        let admission = match g.state {
            State::Closed => Admission::Send,
            State::Open => Admission::Skip,
            State::HalfOpen if g.probes_admitted < self.cfg.half_open_probes => {
                g.probes_admitted += 1;
                Admission::Probe
            }
            State::HalfOpen => Admission::Skip,
        };
        (admission, change)
    }

    /// Records the outcome of an admitted send.
    pub fn record(&self, now_ms: i64, admission: Admission, o: Outcome) -> Option<Change> {
        let slow = o.latency_ms >= self.cfg.slow_call_ms;
        let bad = o.failed || slow;
        let mut g = self.inner.lock().expect("breaker lock");
        match (g.state, admission) {
            (State::HalfOpen, Admission::Probe) if bad => {
                let why = if o.failed {
                    "a probe failed"
                } else {
                    "a probe was slow"
                };
                Some(self.open(&mut g, why.into(), now_ms))
            }
            (State::HalfOpen, Admission::Probe) => {
                g.probes_good += 1;
                if g.probes_good < self.cfg.half_open_probes {
                    return None;
                }
                g.buckets = [Bucket::default(); BUCKETS];
                let why = format!("{} probes succeeded", g.probes_good);
                Some(self.set(&mut g, State::Closed, why, now_ms))
            }
            // A send admitted before the breaker opened, finishing after:
            // the state was decided without it.
            (State::Open | State::HalfOpen, _)
            | (State::Closed, Admission::Probe | Admission::Skip) => None,
            (State::Closed, Admission::Send) => {
                let b = self.bucket(&mut g, now_ms);
                b.total += 1;
                b.failed += u32::from(o.failed);
                b.slow += u32::from(slow);
                self.trip(&mut g, now_ms)
            }
        }
    }

    /// The bucket of `now_ms`, reset if it held an older slice of time.
    fn bucket<'a>(&self, g: &'a mut Inner, now_ms: i64) -> &'a mut Bucket {
        let slot = now_ms.div_euclid(self.bucket_ms);
        let b = &mut g.buckets[slot.rem_euclid(BUCKETS as i64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        b
    }

    /// Opens the breaker if the window's rates say so.
    fn trip(&self, g: &mut Inner, now_ms: i64) -> Option<Change> {
        let oldest = now_ms.div_euclid(self.bucket_ms) - BUCKETS as i64 + 1;
        let (mut total, mut failed, mut slow) = (0u32, 0u32, 0u32);
        for b in g.buckets.iter().filter(|b| b.slot >= oldest) {
            total += b.total;
            failed += b.failed;
            slow += b.slow;
        }
        if total < self.cfg.min_requests {
            return None;
        }
        let rate = |n: u32| f64::from(n) / f64::from(total);
        let window = self.cfg.window_ms;
        if rate(failed) >= self.cfg.failure_rate {
            let why = format!("{failed} of {total} sends failed in {window} ms");
            Some(self.open(g, why, now_ms))
        } else if rate(slow) >= self.cfg.slow_call_rate {
            let ms = self.cfg.slow_call_ms;
            let why = format!("{slow} of {total} sends took over {ms} ms in {window} ms");
            Some(self.open(g, why, now_ms))
        } else {
            None
        }
    }

    fn open(&self, g: &mut Inner, reason: String, now_ms: i64) -> Change {
        g.opened_at = now_ms;
        self.set(g, State::Open, reason, now_ms)
    }

    fn set(&self, g: &mut Inner, to: State, reason: String, now_ms: i64) -> Change {
        let from = g.state;
        g.state = to;
        metrics::gauge!("clarion_provider_breaker_state", "provider" => self.provider.clone())
            .set(to.gauge());
        metrics::counter!(
            "clarion_provider_breaker_transitions_total",
            "provider" => self.provider.clone(),
            "to" => to.as_str()
        )
        .increment(1);
        tracing::warn!(provider = %self.provider, from = from.as_str(), to = to.as_str(), %reason, "provider circuit breaker");
        Change {
            provider: self.provider.clone(),
            from,
            to,
            reason,
            at_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window_ms: 10_000,
            min_requests: 4,
            failure_rate: 0.5,
            slow_call_ms: 1_000,
            slow_call_rate: 0.5,
            open_ms: 5_000,
            half_open_probes: 2,
            ..BreakerConfig::default()
        }
    }

    const OK: Outcome = Outcome {
        failed: false,
        latency_ms: 10,
    };
    const FAIL: Outcome = Outcome {
        failed: true,
        latency_ms: 10,
    };
    const SLOW: Outcome = Outcome {
        failed: false,
        latency_ms: 1_500,
    };

    fn send(b: &Breaker, at: i64, o: Outcome) -> Option<Change> {
        let (a, _) = b.admit(at);
        assert_ne!(a, Admission::Skip, "admitted at {at}");
        b.record(at, a, o)
    }

    #[test]
    fn opens_on_the_failure_rate_once_the_window_holds_enough() {
        let b = Breaker::new("p", &cfg());
        assert!(send(&b, 0, FAIL).is_none());
        assert!(send(&b, 1, FAIL).is_none());
        assert!(send(&b, 2, OK).is_none(), "3 outcomes: below min-requests");
        let c = send(&b, 3, FAIL).expect("3 of 4 failed: opens");
        assert_eq!((c.from, c.to), (State::Closed, State::Open));
        assert!(c.reason.contains("3 of 4 sends failed"), "{}", c.reason);
        assert_eq!(b.admit(4).0, Admission::Skip);
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let b = Breaker::new("p", &cfg());
        for at in 0..3 {
            send(&b, at, FAIL);
        }
        // 10 s later the three failures are out of the window.
        for at in 10_500..10_503 {
            assert!(send(&b, at, OK).is_none());
        }
        assert!(send(&b, 10_504, FAIL).is_none(), "1 of 4 in the window");
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn opens_on_slow_calls() {
        let b = Breaker::new("p", &cfg());
        send(&b, 0, SLOW);
        send(&b, 1, OK);
        send(&b, 2, SLOW);
        let c = send(&b, 3, OK).expect("2 of 4 slow: opens");
        assert!(c.reason.contains("took over 1000 ms"), "{}", c.reason);
    }

    #[test]
    fn half_open_lets_probes_through_and_closes_when_they_succeed() {
        let b = Breaker::new("p", &cfg());
        for at in 0..4 {
            send(&b, at, FAIL);
        }
        assert_eq!(b.admit(4_999).0, Admission::Skip, "open for 5 s");
        let (a1, c) = b.admit(5_003);
        assert_eq!(a1, Admission::Probe);
        assert_eq!(c.unwrap().to, State::HalfOpen);
        let (a2, _) = b.admit(5_004);
        assert_eq!(a2, Admission::Probe);
        assert_eq!(b.admit(5_005).0, Admission::Skip, "two probes only");
        assert!(b.record(5_006, a1, OK).is_none());
        let c = b.record(5_007, a2, OK).expect("closes");
        assert_eq!((c.from, c.to), (State::HalfOpen, State::Closed));
        // A fresh window: one failure does not reopen it.
        assert!(send(&b, 5_008, FAIL).is_none());
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_another_open_time() {
        let b = Breaker::new("p", &cfg());
        for at in 0..4 {
            send(&b, at, FAIL);
        }
        let (a, _) = b.admit(6_000);
        let c = b.record(6_001, a, FAIL).expect("reopens");
        assert_eq!((c.from, c.to), (State::HalfOpen, State::Open));
        assert_eq!(b.admit(11_000).0, Admission::Skip);
        assert_eq!(b.admit(11_001).0, Admission::Probe);
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = cfg();
        c.failure_rate = 0.0;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("providers.breaker.failure-rate"));
        let mut c = cfg();
        c.half_open_probes = 0;
        assert!(c.validate().unwrap_err().contains("half-open-probes"));
    }
}
