//! What one row counts: the outcomes of the sends in its bucket and their
//! latencies. Each outcome is counted in the bucket of its own time (a
//! message sent at 10:00 and opened at 11:30 is an open of 11:30).

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;

/// Counts of one dimension value over one time bucket (or a sum of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Attempts with an outcome: sent or failed (each attempt once).
    pub attempted: u64,
    /// Taken by the provider.
    pub sent: u64,
    /// Confirmed delivered (by the provider or a status callback).
    pub delivered: u64,
    /// Failed at dispatch (any reason).
    pub failed: u64,
    /// Of `failed`, refused for good (a non-retryable failure: a bad
    /// address, a rejected message).
    pub bounced: u64,
    /// Opened (once per attempt, however often).
    pub opened: u64,
    /// Clicked (once per attempt).
    pub clicked: u64,
    /// Trigger accepted → sent.
    pub trigger_to_sent: Histogram,
    /// Dispatch requested → sent: the provider's own latency.
    pub dispatch_to_sent: Histogram,
    /// Sent → delivered.
    pub sent_to_delivered: Histogram,
    /// Sent → opened.
    pub sent_to_opened: Histogram,
}

/// The four latencies a row keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    TriggerToSent,
    DispatchToSent,
    SentToDelivered,
    SentToOpened,
}

impl Latency {
    pub const ALL: [Latency; 4] = [
        Latency::TriggerToSent,
        Latency::DispatchToSent,
        Latency::SentToDelivered,
        Latency::SentToOpened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Latency::TriggerToSent => "trigger_to_sent",
            Latency::DispatchToSent => "dispatch_to_sent",
            Latency::SentToDelivered => "sent_to_delivered",
            Latency::SentToOpened => "sent_to_opened",
        }
    }
}

/// A ratio, `None` when the denominator is 0 (no traffic is not 0 %).
pub fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Counts {
    pub fn merge(&mut self, o: &Counts) {
        self.attempted += o.attempted;
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.bounced += o.bounced;
        self.opened += o.opened;
        self.clicked += o.clicked;
        self.trigger_to_sent.merge(&o.trigger_to_sent);
        self.dispatch_to_sent.merge(&o.dispatch_to_sent);
        self.sent_to_delivered.merge(&o.sent_to_delivered);
        self.sent_to_opened.merge(&o.sent_to_opened);
    }

    pub fn latency(&self, l: Latency) -> &Histogram {
        match l {
            Latency::TriggerToSent => &self.trigger_to_sent,
            Latency::DispatchToSent => &self.dispatch_to_sent,
            Latency::SentToDelivered => &self.sent_to_delivered,
            Latency::SentToOpened => &self.sent_to_opened,
        }
    }

    pub fn latency_mut(&mut self, l: Latency) -> &mut Histogram {
        match l {
            Latency::TriggerToSent => &mut self.trigger_to_sent,
            Latency::DispatchToSent => &mut self.dispatch_to_sent,
            Latency::SentToDelivered => &mut self.sent_to_delivered,
            Latency::SentToOpened => &mut self.sent_to_opened,
        }
    }

    /// Delivered of the attempts.
    pub fn delivery_rate(&self) -> Option<f64> {
        ratio(self.delivered, self.attempted)
    }

    /// Failed of the attempts (a provider's error rate).
    pub fn failure_rate(&self) -> Option<f64> {
        ratio(self.failed, self.attempted)
    }

    /// Opened of the delivered.
    pub fn open_rate(&self) -> Option<f64> {
        ratio(self.opened, self.delivered)
    }

    /// Clicked of the delivered.
    pub fn click_rate(&self) -> Option<f64> {
        ratio(self.clicked, self.delivered)
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("counts encode")
    }

    pub fn decode(b: &[u8]) -> Result<Counts, rmp_serde::decode::Error> {
        rmp_serde::from_slice(b)
    }
}
