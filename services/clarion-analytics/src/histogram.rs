//! Latency histograms with fixed, log-spaced bucket bounds. Fixed bounds
//! make histograms of any two rows mergeable by adding counts (a query
//! sums minutes into a range; an hour row is the sum of its minutes), and
//! a row holds ~20 small integers. The price is resolution: a quantile is
//! reported as the upper bound of the bucket it falls in.

use serde::{Deserialize, Serialize};

/// Upper bounds (inclusive, milliseconds) of the buckets; a last bucket
/// holds everything slower. From 5 ms (an in-process send) to a day (an
/// email opened the next day).
pub const BOUNDS_MS: [i64; 18] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
    3_600_000, 21_600_000, 86_400_000,
];

/// Counts per bucket of [`BOUNDS_MS`] (and one over), with their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Empty until the first sample; then `BOUNDS_MS.len() + 1` long.
    buckets: Vec<u64>,
    sum_ms: u64,
}

impl Histogram {
    /// Adds one sample (negative ones, from skewed clocks, count as 0).
    pub fn record(&mut self, ms: i64) {
        let ms = ms.max(0);
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        if self.buckets.is_empty() {
            self.buckets = vec![0; BOUNDS_MS.len() + 1];
        }
        self.buckets[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms as u64);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; BOUNDS_MS.len() + 1];
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ms = self.sum_ms.saturating_add(other.sum_ms);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The mean in ms (`None` without samples).
    pub fn mean_ms(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_ms as f64 / n as f64)
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in ms;
    /// the largest bound for samples over it. `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<i64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BOUNDS_MS[i.min(BOUNDS_MS.len() - 1)]);
            }
        }
        Some(BOUNDS_MS[BOUNDS_MS.len() - 1])
    }

    /// (upper bound in ms, count) per bucket, the last bound `None` (over).
    pub fn buckets(&self) -> Vec<(Option<i64>, u64)> {
        if self.buckets.is_empty() {
            return Vec::new();
        }
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, c)| (BOUNDS_MS.get(i).copied(), *c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_bounds_and_merges_add() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.95), None);
        for ms in [3, 7, 7, 40, 900, 1_000, 2_000, 100_000_000] {
            h.record(ms);
        }
        assert_eq!(h.count(), 8);
        assert_eq!(h.quantile_ms(0.5), Some(50));
        assert_eq!(h.quantile_ms(0.75), Some(1_000));
        // The slowest is over the last bound: reported as that bound.
        assert_eq!(h.quantile_ms(1.0), Some(86_400_000));
        let mut other = Histogram::default();
        other.record(-5);
        h.merge(&other);
        assert_eq!(h.count(), 9);
        assert_eq!(h.quantile_ms(0.0), Some(5));
        assert_eq!(h.buckets()[0], (Some(5), 2));
        assert_eq!(h.buckets().last(), Some(&(None, 1)));
    }
}
