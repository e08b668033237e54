//! Anomaly detection over delivery series (issue #30): pure, minute by minute.
//!
//! A *series* is a tenant's deliveries as a whole, or one provider's within
//! a tenant. Each minute it yields four *signals*: delivery rate (attempts
//! confirmed delivered), failure rate (attempts that failed), volume
//! (attempts) and latency (mean trigger → provider outcome). Each signal has
//! an EWMA baseline (mean and variance); a minute whose value is more than
//! `z_threshold` deviations from it in the signal's bad direction is an
//! anomaly. Three guards keep the pager quiet when it should be:
//!
//! * **minimum volume**: a rate over 3 attempts is noise, so rates and
//!   latency are judged (and learnt) only in minutes with at least
//!   `min_volume` attempts, and volume only when the baseline or the minute
//!   reaches it: a quiet tenant never pages anyone;
//! * **warm-up**: a baseline judges nothing before `warmup` minutes of it;
//! * **a deviation floor** per signal: a perfectly steady series (a variance
//!   of 0) would make any wobble infinitely many deviations away.
//!
//! Anomalous minutes are not learnt: an outage must not become the new
//! normal while it lasts. The **cool-down** lets one alert per series and
//! signal through per `cooldown_ms`; the minutes it suppresses are counted.
//! One outage trips several detectors at once (a provider's delivery rate
//! drops, its failure rate rises, and so do the tenant's): [`group`] folds
//! them into one alert per provider, so one drop pages once.

use serde::{Deserialize, Serialize};

/// What a series observed in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteCounts {
    /// Provider outcomes: sent plus failed.
    pub attempts: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Sum and count of trigger → outcome latencies, in ms.
    pub latency_sum_ms: u64,
    pub latency_n: u64,
}

impl MinuteCounts {
    pub fn add(&mut self, o: &MinuteCounts) {
        self.attempts += o.attempts;
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.latency_sum_ms += o.latency_sum_ms;
        self.latency_n += o.latency_n;
    }
}

/// The signals, in the order of a series' baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    DeliveryRate,
    FailureRate,
    Volume,
    Latency,
}

impl Signal {
    pub const ALL: [Signal; 4] = [
        Signal::DeliveryRate,
        Signal::FailureRate,
        Signal::Volume,
        Signal::Latency,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::DeliveryRate => "delivery_rate",
            Signal::FailureRate => "failure_rate",
            Signal::Volume => "volume",
            Signal::Latency => "latency",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The runbook's file in `docs/runbooks/`.
    pub fn runbook(self) -> &'static str {
        match self {
            Signal::DeliveryRate => "delivery-rate-drop.md",
            Signal::FailureRate => "failure-rate-spike.md",
            Signal::Volume => "volume-anomaly.md",
            Signal::Latency => "latency-anomaly.md",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The minute's value, or `None` when the minute says nothing about it.
    fn value(self, c: &MinuteCounts) -> Option<f64> {
        let attempts = c.attempts as f64;
        match self {
            Signal::DeliveryRate if c.attempts > 0 => Some(c.delivered as f64 / attempts),
            Signal::FailureRate if c.attempts > 0 => Some(c.failed as f64 / attempts),
            Signal::Volume => Some(attempts),
            Signal::Latency if c.latency_n > 0 => {
                Some(c.latency_sum_ms as f64 / c.latency_n as f64)
            }
            _ => None,
        }
    }

    /// Whether a deviation of `z` is bad news for this signal: a delivery
    /// rate that rises or a latency that falls pages no one.
    fn is_bad(self, z: f64, threshold: f64) -> bool {
        match self {
            Signal::DeliveryRate => z <= -threshold,
            Signal::FailureRate | Signal::Latency => z >= threshold,
            Signal::Volume => z.abs() >= threshold,
        }
    }

    /// The smallest deviation the z-score divides by: rates are fractions
    /// (2 points), volume counts (Poisson-like: the square root of the
    /// mean, at least 1), latency 10 % of the mean (at least 50 ms).
    fn floor(self, mean: f64) -> f64 {
        match self {
            Signal::DeliveryRate | Signal::FailureRate => 0.02,
            Signal::Volume => mean.abs().sqrt().max(1.0),
            Signal::Latency => (0.1 * mean.abs()).max(50.0),
        }
    }
}

/// The detector's settings (`[alerts]` configuration).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Deviations from the baseline that make an anomaly.
    pub z_threshold: f64,
    /// Attempts a minute needs before its rates mean anything.
    pub min_volume: u64,
    /// Minutes a baseline learns before it judges.
    pub warmup: u32,
    /// EWMA smoothing: the weight of the newest minute (0 < alpha <= 1).
    pub alpha: f64,
    /// One alert per series and signal per this long.
    pub cooldown_ms: i64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            z_threshold: 4.0,
            min_volume: 20,
            warmup: 30,
            // About a 60-minute memory (alpha = 2 / (span + 1)).
            alpha: 2.0 / 61.0,
            cooldown_ms: 30 * 60_000,
        }
    }
}

/// One signal's baseline: an exponentially weighted mean and variance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    pub var: f64,
    /// Minutes learnt.
    pub n: u32,
}

impl Baseline {
    /// Learns `x` (West's incremental EWMA variance).
    pub fn learn(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
    }

    /// How many deviations `x` is from the mean, with `floor` as the least
    /// deviation.
    pub fn z(&self, x: f64, floor: f64) -> f64 {
        (x - self.mean) / self.var.sqrt().max(floor)
    }
}

/// A series' detector state: a baseline and the last alert per signal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub baselines: [Baseline; 4],
    /// Start of the minute of the last alert per signal (cool-down).
    pub last_alert_ms: [Option<i64>; 4],
    /// Anomalous minutes the cool-down kept quiet, per signal.
    pub suppressed: [u64; 4],
}

/// An anomaly found in a minute.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub signal: Signal,
    pub observed: f64,
    pub baseline: f64,
    pub deviation: f64,
    pub z: f64,
    pub attempts: u64,
    /// Whether it is alerted: false when the cool-down keeps it quiet.
    pub alert: bool,
}

/// Judges and learns the minute starting at `minute_ms`; returns the
/// anomalies found (alerted or suppressed).
pub fn observe(
    state: &mut SeriesState,
    counts: &MinuteCounts,
    minute_ms: i64,
    cfg: &DetectorConfig,
) -> Vec<Detection> {
    let mut out = Vec::new();
    for signal in Signal::ALL {
        let Some(x) = signal.value(counts) else {
            continue;
        };
        let i = signal.index();
        let b = state.baselines[i];
        let volume_ok = match signal {
            Signal::Volume => b.mean.max(x) >= cfg.min_volume as f64,
            _ => counts.attempts >= cfg.min_volume,
        };
        if !volume_ok {
            // Volume still learns its quiet minutes (a tenant that grows
            // has a baseline when it gets loud); rates learn nothing.
            if signal == Signal::Volume {
                state.baselines[i].learn(x, cfg.alpha);
            }
            continue;
        }
        let deviation = b.var.sqrt().max(signal.floor(b.mean));
        let z = (x - b.mean) / deviation;
        if b.n >= cfg.warmup && signal.is_bad(z, cfg.z_threshold) {
            let alert = state.last_alert_ms[i].is_none_or(|t| minute_ms - t >= cfg.cooldown_ms);
            if alert {
                state.last_alert_ms[i] = Some(minute_ms);
            } else {
                state.suppressed[i] += 1;
            }
            out.push(Detection {
                signal,
                observed: x,
                baseline: b.mean,
                deviation,
                z,
                attempts: counts.attempts,
                alert,
            });
        } else {
            state.baselines[i].learn(x, cfg.alpha);
        }
    }
    out
}

/// Which alert each of a tenant's alerted detections of one minute is
/// folded into: `None` for the alert itself (or a detection not alerted),
/// `Some(i)` for one told as part of detection `i`. One alert per provider
/// series, the first of its signals in [`Signal::ALL`] order leading; the
/// tenant series' detections fold into the first provider alert, since a
/// provider's outage explains its tenant's; alone, they make one alert.
/// `series` names are `"tenant"` or `"provider:<name>"`.
pub fn group(dets: &[(&str, &Detection)]) -> Vec<Option<usize>> {
    let mut lead: Vec<(&str, usize)> = Vec::new();
    let mut out = vec![None; dets.len()];
    let mut order: Vec<usize> = (0..dets.len()).filter(|i| dets[*i].1.alert).collect();
    // Providers first, then the tenant; within a series by signal.
    order.sort_by_key(|i| (dets[*i].0 == "tenant", dets[*i].0, dets[*i].1.signal));
    for i in order {
        let series = dets[i].0;
        let leader = lead
            .iter()
            .find(|(s, _)| *s == series)
            .or_else(|| lead.first().filter(|_| series == "tenant"))
            .map(|(_, j)| *j);
        match leader {
            Some(j) => out[i] = Some(j),
            None => lead.push((series, i)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn minute(attempts: u64, delivered: u64, failed: u64, latency_ms: u64) -> MinuteCounts {
        MinuteCounts {
            attempts,
            delivered,
            failed,
            latency_sum_ms: latency_ms * attempts,
            latency_n: attempts,
        }
    }

    /// A steady provider: 100 attempts a minute, 97–99 delivered, ~200 ms.
    fn steady(state: &mut SeriesState, cfg: &DetectorConfig, minutes: i64) -> Vec<Detection> {
        let mut out = Vec::new();
        for m in 0..minutes {
            let d = 97 + (m % 3) as u64;
            out.extend(observe(
                state,
                &minute(100, d, 100 - d, 190 + (m % 5) as u64 * 5),
                m * MIN,
                cfg,
            ));
        }
        out
    }

    #[test]
    fn a_steady_series_raises_nothing() {
        let (mut s, cfg) = (SeriesState::default(), DetectorConfig::default());
        assert!(steady(&mut s, &cfg, 600).is_empty());
        let b = s.baselines[Signal::DeliveryRate as usize];
        assert!((b.mean - 0.98).abs() < 0.01, "{b:?}");
        assert_eq!(b.n, 600);
    }

    #[test]
    fn a_delivery_rate_drop_alerts_once_then_cools_down() {
        let (mut s, cfg) = (SeriesState::default(), DetectorConfig::default());
        steady(&mut s, &cfg, 60);
        // The provider starts failing 40 % of its sends, for 10 minutes.
        let mut alerts = Vec::new();
        for m in 60..70 {
            let found = observe(&mut s, &minute(100, 60, 40, 200), m * MIN, &cfg);
            alerts.extend(found.into_iter().filter(|d| d.alert));
        }
        let signals: Vec<_> = alerts.iter().map(|d| d.signal).collect();
        assert_eq!(signals, [Signal::DeliveryRate, Signal::FailureRate]);
        assert!(alerts[0].z < -4.0 && (alerts[0].observed - 0.6).abs() < 1e-9);
        // The 9 minutes after the first were suppressed, and not learnt.
        assert_eq!(s.suppressed[Signal::DeliveryRate as usize], 9);
        assert!(s.baselines[Signal::DeliveryRate as usize].mean > 0.95);
        // Past the cool-down a still-failing provider alerts again.
        let later = observe(
            &mut s,
            &minute(100, 60, 40, 200),
            60 * MIN + cfg.cooldown_ms,
            &cfg,
        );
        assert!(later
            .iter()
            .any(|d| d.alert && d.signal == Signal::DeliveryRate));
    }

    #[test]
    fn a_quiet_tenant_never_pages() {
        let (mut s, cfg) = (SeriesState::default(), DetectorConfig::default());
        // 3 attempts a minute, all delivered, for two hours; then all fail
        // and the tenant goes silent.
        let mut found = Vec::new();
        for m in 0..120 {
            found.extend(observe(&mut s, &minute(3, 3, 0, 200), m * MIN, &cfg));
        }
        for m in 120..130 {
            found.extend(observe(&mut s, &minute(3, 0, 3, 9_000), m * MIN, &cfg));
        }
        for m in 130..140 {
            found.extend(observe(&mut s, &MinuteCounts::default(), m * MIN, &cfg));
        }
        assert!(found.is_empty(), "{found:?}");
        // Rates learnt nothing from minutes under the minimum volume.
        assert_eq!(s.baselines[Signal::DeliveryRate as usize].n, 0);
    }

    #[test]
    fn nothing_is_judged_during_warm_up() {
        let (mut s, cfg) = (SeriesState::default(), DetectorConfig::default());
        steady(&mut s, &cfg, 5);
        assert!(observe(&mut s, &minute(100, 10, 90, 200), 5 * MIN, &cfg).is_empty());
    }

    #[test]
    fn volume_drops_and_spikes_and_latency_rises_are_anomalies() {
        let cfg = DetectorConfig::default();
        let mut s = SeriesState::default();
        steady(&mut s, &cfg, 60);
        let silent = observe(&mut s, &MinuteCounts::default(), 60 * MIN, &cfg);
        assert_eq!(silent.len(), 1);
        assert_eq!(silent[0].signal, Signal::Volume);
        assert!(silent[0].alert && silent[0].z < 0.0);

        let mut s = SeriesState::default();
        steady(&mut s, &cfg, 60);
        let slow = observe(&mut s, &minute(100, 98, 2, 2_000), 60 * MIN, &cfg);
        assert_eq!(
            slow.iter().map(|d| d.signal).collect::<Vec<_>>(),
            [Signal::Latency]
        );
        // Faster than usual is good news.
        assert!(observe(&mut s, &minute(100, 98, 2, 20), 61 * MIN, &cfg).is_empty());
    }

    #[test]
    fn baselines_follow_the_ewma_recurrence() {
        let mut b = Baseline::default();
        for x in [1.0, 3.0, 2.0] {
            b.learn(x, 0.5);
        }
        // mean: 1 → 2 → 2; var: 0 → 0.5·(0+2·1)=1 → 0.5·(1+0)=0.5
        assert_eq!((b.mean, b.var, b.n), (2.0, 0.5, 3));
        assert_eq!(b.z(3.0, 0.1), 1.0 / 0.5f64.sqrt());
        assert_eq!(b.z(3.0, 2.0), 0.5);
    }

    fn det(signal: Signal, alert: bool) -> Detection {
        Detection {
            signal,
            observed: 0.0,
            baseline: 0.0,
            deviation: 1.0,
            z: -9.0,
            attempts: 100,
            alert,
        }
    }

    #[test]
    fn one_outage_groups_into_one_alert_per_provider() {
        let (dr, fr, vol) = (
            det(Signal::DeliveryRate, true),
            det(Signal::FailureRate, true),
            det(Signal::Volume, true),
        );
        let quiet = det(Signal::Latency, false);
        // The tenant's detections come first here: grouping does not care.
        let dets = [
            ("tenant", &fr),
            ("tenant", &dr),
            ("provider:smtp", &fr),
            ("provider:smtp", &dr),
            ("provider:sms", &vol),
            ("provider:sms", &quiet),
        ];
        assert_eq!(
            group(&dets),
            // sms sorts before smtp: its volume alert leads, the tenant's
            // fold into it; smtp's delivery rate leads its failure rate.
            [Some(4), Some(4), Some(3), None, None, None]
        );
        // The tenant alone: one alert, its delivery rate leading.
        assert_eq!(group(&[("tenant", &fr), ("tenant", &dr)]), [Some(1), None]);
        assert_eq!(group(&[("tenant", &quiet)]), [None]);
    }

    #[test]
    fn signals_round_trip_their_names() {
        for s in Signal::ALL {
            assert_eq!(Signal::parse(s.as_str()), Some(s));
            assert!(s.runbook().ends_with(".md"));
        }
        assert_eq!(Signal::parse("nope"), None);
    }
}
