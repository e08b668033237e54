//! Live rates for the console's Live page: per tenant, what this process
//! counted in the last minute — triggers accepted, sends and failures per
//! channel — in per-second buckets, and the processors' lag.
//!
//! The counters are in-process (a global, [`counters`]): in a distributed
//! deployment a gateway's Live page shows the rates of the roles running in
//! its own process (the whole pipeline with `clarion serve`); the rest is
//! in each process's `/metrics`. They are cheap on the hot path: one lock
//! of an uncontended mutex and no allocation once a (tenant, kind, channel)
//! has been seen, and callers that loop add a batch's counts at once.
//! Memory is bounded by the active series: a series idle for a full window
//! is dropped.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use clarion_log::EventLog;
use clarion_store::Store;

use crate::processor::ProcessError;
use crate::topics::{Topic, Topics};

/// Seconds kept per series.
pub const WINDOW_S: usize = 60;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A notification accepted by the trigger API (no channel).
    Trigger = 0,
    /// A message a provider took.
    Sent = 1,
    /// A send a provider refused or that failed.
    Failed = 2,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Trigger, Kind::Sent, Kind::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Trigger => "trigger",
            Kind::Sent => "sent",
            Kind::Failed => "failed",
        }
    }
}

/// One series: counts of the last [`WINDOW_S`] seconds, bucket `s % 60`
/// holding second `s` (a bucket whose second is older is stale).
#[derive(Clone, Debug)]
struct Ring {
    seconds: [u32; WINDOW_S],
    counts: [u32; WINDOW_S],
    last: u32,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            seconds: [0; WINDOW_S],
            counts: [0; WINDOW_S],
            last: 0,
        }
    }

    fn add(&mut self, second: u32, n: u32) {
        let i = second as usize % WINDOW_S;
        if self.seconds[i] != second {
            self.seconds[i] = second;
            self.counts[i] = 0;
        }
        self.counts[i] = self.counts[i].saturating_add(n);
        self.last = self.last.max(second);
    }

    /// The count of the `window_s` seconds ending with `now` (included).
    fn sum(&self, now: u32, window_s: u32) -> u64 {
        let from = now.saturating_sub(window_s.saturating_sub(1));
        self.seconds
            .iter()
            .zip(&self.counts)
            .filter(|(s, _)| (from..=now).contains(*s))
            .map(|(_, c)| u64::from(*c))
            .sum()
    }
}

/// A tenant's series: per kind, per channel.
type TenantSeries = [HashMap<String, Ring>; 3];

#[derive(Default)]
struct Inner {
    tenants: HashMap<String, TenantSeries>,
    last_sweep: u32,
}

/// Per-second counters of one process.
#[derive(Default)]
pub struct LiveCounters {
    inner: Mutex<Inner>,
}

/// One series' totals over the windows the page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    pub kind: Kind,
    /// Empty for triggers.
    pub channel: String,
    /// Count of the last 10 seconds (the current one included).
    pub last_10s: u64,
    /// Count of the last 60 seconds.
    pub last_60s: u64,
}

impl Rate {
    /// Per second, over the last 10 seconds.
    pub fn per_s(&self) -> f64 {
        self.last_10s as f64 / 10.0
    }
}

fn second_of(now_ms: i64) -> u32 {
    (now_ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
}

impl LiveCounters {
    pub fn new() -> LiveCounters {
        LiveCounters::default()
    }

    /// Adds `n` to the (tenant, kind, channel) series at `now_ms`.
    pub fn record(&self, tenant: &str, kind: Kind, channel: &str, n: u64, now_ms: i64) {
        if n == 0 {
            return;
        }
        let second = second_of(now_ms);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if second >= inner.last_sweep.saturating_add(WINDOW_S as u32) {
            inner.sweep(second);
        }
        // Allocates only for a series not seen yet.
        let series = match inner.tenants.get_mut(tenant) {
            Some(s) => s,
            None => inner.tenants.entry(tenant.to_string()).or_default(),
        };
        let by_channel = &mut series[kind as usize];
        match by_channel.get_mut(channel) {
            Some(ring) => ring.add(second, n),
            None => {
                let mut ring = Ring::new();
                ring.add(second, n);
                by_channel.insert(channel.to_string(), ring);
            }
        }
    }

    /// A tenant's series (`None`: every tenant's, added up per kind and
    /// channel), sorted by kind then channel. Series with nothing in the
    /// last minute are left out.
    pub fn rates(&self, tenant: Option<&str>, now_ms: i64) -> Vec<Rate> {
        let now = second_of(now_ms);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut sums: HashMap<(Kind, &str), (u64, u64)> = HashMap::new();
        let tenants = inner
            .tenants
            .iter()
            .filter(|(t, _)| tenant.is_none_or(|want| want == t.as_str()));
        for (_, series) in tenants {
            for kind in Kind::ALL {
                for (channel, ring) in &series[kind as usize] {
                    let e = sums.entry((kind, channel.as_str())).or_default();
                    e.0 += ring.sum(now, 10);
                    e.1 += ring.sum(now, WINDOW_S as u32);
                }
            }
        }
        let mut out: Vec<Rate> = sums
            .into_iter()
            .filter(|(_, (_, minute))| *minute > 0)
            .map(|((kind, channel), (last_10s, last_60s))| Rate {
                kind,
                channel: channel.to_string(),
                last_10s,
                last_60s,
            })
            .collect();
        out.sort_by(|a, b| (a.kind as u8, &a.channel).cmp(&(b.kind as u8, &b.channel)));
        out
    }
}

impl Inner {
    /// Drops series idle for a whole window (and tenants left empty).
    fn sweep(&mut self, now: u32) {
        let horizon = now.saturating_sub(WINDOW_S as u32);
        self.tenants.retain(|_, series| {
            for by_channel in series.iter_mut() {
                by_channel.retain(|_, ring| ring.last > horizon);
            }
            series.iter().any(|m| !m.is_empty())
        });
        self.last_sweep = now;
    }
}

/// This process's counters.
pub fn counters() -> &'static LiveCounters {
    static COUNTERS: OnceLock<LiveCounters> = OnceLock::new();
    COUNTERS.get_or_init(LiveCounters::new)
}

/// Adds to this process's counters (see [`LiveCounters::record`]).
pub fn record(tenant: &str, kind: Kind, channel: &str, n: u64, now_ms: i64) {
    counters().record(tenant, kind, channel, n, now_ms);
}

/// How far each `(processor, topic)` is behind: the records appended but
/// not yet applied, summed over the topic's partitions (the log's end
/// offset minus the processor's stored position). Each topic's end offsets
/// are read once.
pub async fn processor_lag(
    log: &dyn EventLog,
    store: &dyn Store,
    topics: &Topics,
    of: &[(&str, Topic)],
) -> Result<Vec<u64>, ProcessError> {
    let mut ends: HashMap<Topic, Vec<u64>> = HashMap::new();
    let mut out = Vec::with_capacity(of.len());
    for (processor, topic) in of {
        let name = topics.name(*topic);
        if !ends.contains_key(topic) {
            let mut v = Vec::new();
            for partition in 0..topics.partitions_of(*topic) {
                v.push(log.end_offset(&name, partition).await?);
            }
            ends.insert(*topic, v);
        }
        let mut lag = 0;
        for (partition, end) in ends[topic].iter().enumerate() {
            let at =
                crate::runner::stored_offset(store, processor, &name, partition as u32).await?;
            lag += end.saturating_sub(at);
        }
        out.push(lag);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn rate(c: &LiveCounters, tenant: Option<&str>, kind: Kind, ch: &str, now: i64) -> (u64, u64) {
        c.rates(tenant, now)
            .into_iter()
            .find(|r| r.kind == kind && r.channel == ch)
            .map(|r| (r.last_10s, r.last_60s))
            .unwrap_or((0, 0))
    }

    #[test]
    fn counts_fall_out_of_the_windows_as_the_clock_moves() {
        let clock = ManualClock::new(1_700_000_000_500);
        let c = LiveCounters::new();
        c.record("acme", Kind::Sent, "email", 3, clock.now_ms());
        c.record("acme", Kind::Sent, "email", 2, clock.now_ms());
        c.record("acme", Kind::Sent, "sms", 1, clock.now_ms());
        assert_eq!(
            rate(&c, Some("acme"), Kind::Sent, "email", clock.now_ms()),
            (5, 5)
        );
        // 9 s later the first second is still in the 10-second window...
        clock.advance(Duration::from_secs(9));
        c.record("acme", Kind::Sent, "email", 4, clock.now_ms());
        assert_eq!(
            rate(&c, Some("acme"), Kind::Sent, "email", clock.now_ms()),
            (9, 9)
        );
        // ...one more and it is only in the minute's.
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            rate(&c, Some("acme"), Kind::Sent, "email", clock.now_ms()),
            (4, 9)
        );
        let per_s = c.rates(Some("acme"), clock.now_ms())[0].per_s();
        assert!((per_s - 0.4).abs() < 1e-9, "{per_s}");
        // 60 s after the first second it left the minute too.
        clock.advance(Duration::from_secs(50));
        assert_eq!(
            rate(&c, Some("acme"), Kind::Sent, "email", clock.now_ms()),
            (0, 4)
        );
        clock.advance(Duration::from_secs(9));
        assert_eq!(
            rate(&c, Some("acme"), Kind::Sent, "email", clock.now_ms()),
            (0, 0)
        );
        assert!(c.rates(Some("acme"), clock.now_ms()).is_empty());
    }

    #[test]
    fn a_bucket_reused_after_a_minute_starts_from_zero() {
        let clock = ManualClock::new(2_000_000);
        let c = LiveCounters::new();
        c.record("acme", Kind::Trigger, "", 7, clock.now_ms());
        // Same bucket (s % 60), a minute later: the old count is gone.
        clock.advance(Duration::from_secs(60));
        c.record("acme", Kind::Trigger, "", 1, clock.now_ms());
        assert_eq!(
            rate(&c, Some("acme"), Kind::Trigger, "", clock.now_ms()),
            (1, 1)
        );
    }

    #[test]
    fn tenants_are_apart_and_add_up_for_the_operator() {
        let now = 5_000_000;
        let c = LiveCounters::new();
        c.record("acme", Kind::Failed, "sms", 2, now);
        c.record("globex", Kind::Failed, "sms", 3, now);
        c.record("globex", Kind::Trigger, "", 1, now);
        assert_eq!(rate(&c, Some("acme"), Kind::Failed, "sms", now), (2, 2));
        assert_eq!(rate(&c, Some("acme"), Kind::Trigger, "", now), (0, 0));
        assert_eq!(rate(&c, Some("globex"), Kind::Failed, "sms", now), (3, 3));
        assert_eq!(rate(&c, None, Kind::Failed, "sms", now), (5, 5));
        let kinds: Vec<Kind> = c.rates(None, now).iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Kind::Trigger, Kind::Failed]);
    }

    #[tokio::test]
    async fn lag_is_what_the_log_has_past_the_stored_position() {
        use bytes::Bytes;
        use clarion_log::Record;
        use clarion_store::WriteBatch;

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("clarion.db");
        let colocated = crate::colocated::Colocated::open(db.to_str().unwrap()).unwrap();
        let (log, store) = (colocated.log(), colocated.store());
        let mut topics = Topics::new("t.", 2);
        topics.ensure(&*log).await.unwrap();
        let name = topics.name(Topic::Dispatch);
        let rec = |key: &str| Record {
            key: key.into(),
            value: Bytes::from_static(b"x"),
            index: None,
        };
        // Five records over the two partitions, whatever the keys' spread.
        log.append(&name, (0..5).map(|i| rec(&format!("k{i}"))).collect())
            .await
            .unwrap();
        let of = [("dispatcher", Topic::Dispatch), ("other", Topic::Dispatch)];
        let lag = processor_lag(&*log, &*store, &topics, &of).await.unwrap();
        assert_eq!(lag, [5, 5]);
        // The dispatcher applied everything on both partitions.
        let mut w = WriteBatch::default();
        for p in 0..2 {
            let end = log.end_offset(&name, p).await.unwrap();
            w.put(
                crate::runner::offset_key("dispatcher", &name, p),
                Bytes::copy_from_slice(&end.to_be_bytes()),
            );
        }
        store.write(w).await.unwrap();
        let lag = processor_lag(&*log, &*store, &topics, &of).await.unwrap();
        assert_eq!(lag, [0, 5]);
    }

    #[test]
    fn idle_series_are_dropped() {
        let clock = ManualClock::new(9_000_000);
        let c = LiveCounters::new();
        c.record("old", Kind::Sent, "email", 1, clock.now_ms());
        clock.advance(Duration::from_secs(61));
        c.record("new", Kind::Sent, "email", 1, clock.now_ms());
        let inner = c.inner.lock().unwrap();
        assert!(!inner.tenants.contains_key("old"));
        assert!(inner.tenants.contains_key("new"));
    }
}
