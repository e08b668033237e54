//! One send attempt's state: what the send was (the dimensions and
//! times), when each of its facts happened, and a bit per outcome and
//! latency counted. The facts of an attempt come from three topics read in
//! separate batches, so they arrive in any order; a fact seen before
//! anything said what the send was (its context or, in logs from before
//! the outcomes carried it, its request) waits in the row until that is
//! known. Each outcome and latency is counted once (a bit of `counted`),
//! so a fact seen twice (an outbox republishing it, a status callback
//! after the dispatcher's report, two open pixels) changes nothing: the
//! first time of each fact wins.

use serde::{Deserialize, Serialize};

use crate::counts::Latency;
use crate::dimension::Dims;

/// What an attempt's events say.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// What the send was: its request, or the context its outcome carries.
    Dispatched {
        dims: Dims,
        /// When the trigger was accepted (0: unknown).
        trigger_ms: i64,
        at: i64,
    },
    Sent {
        at: i64,
    },
    Delivered {
        at: i64,
    },
    Failed {
        at: i64,
        /// Not retryable: counted as a bounce too.
        permanent: bool,
        reason: String,
    },
    Opened {
        at: i64,
    },
    Clicked {
        at: i64,
    },
}

/// An outcome counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Attempted,
    Sent,
    Delivered,
    Failed,
    Bounced,
    Opened,
    Clicked,
}

/// Something to add to the counts of the attempt's dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    Count { outcome: Outcome, at: i64 },
    Latency { latency: Latency, at: i64, ms: i64 },
}

const ATTEMPTED: u16 = 1;
const SENT: u16 = 1 << 1;
const DELIVERED: u16 = 1 << 2;
const FAILED: u16 = 1 << 3;
const BOUNCED: u16 = 1 << 4;
const OPENED: u16 = 1 << 5;
const CLICKED: u16 = 1 << 6;
const L_TRIGGER_SENT: u16 = 1 << 7;
const L_DISPATCH_SENT: u16 = 1 << 8;
const L_SENT_DELIVERED: u16 = 1 << 9;
const L_SENT_OPENED: u16 = 1 << 10;

/// Longest kept failure reason (provider health shows the last one).
const MAX_REASON: usize = 200;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub dims: Option<Dims>,
    pub trigger_ms: i64,
    pub dispatch_ms: i64,
    pub sent_ms: i64,
    pub delivered_ms: i64,
    pub failed_ms: i64,
    pub permanent: bool,
    pub reason: String,
    pub opened_ms: i64,
    pub clicked_ms: i64,
    counted: u16,
}

fn first(slot: &mut i64, at: i64) -> bool {
    if *slot == 0 && at > 0 {
        *slot = at;
        true
    } else {
        false
    }
}

impl Attempt {
    /// Takes in a fact; whether the row changed.
    pub fn apply(&mut self, fact: Fact) -> bool {
        match fact {
            Fact::Dispatched {
                dims,
                trigger_ms,
                at,
            } => {
                if self.dims.is_some() {
                    return false;
                }
                self.dims = Some(dims);
                // A clock skewed between gateway and router must not make
                // a negative latency: an unknown one is better.
                self.trigger_ms = if trigger_ms > 0 && trigger_ms <= at {
                    trigger_ms
                } else {
                    0
                };
                self.dispatch_ms = at;
                true
            }
            Fact::Sent { at } => first(&mut self.sent_ms, at),
            Fact::Delivered { at } => first(&mut self.delivered_ms, at),
            Fact::Failed {
                at,
                permanent,
                mut reason,
            } => {
                if !first(&mut self.failed_ms, at) {
                    return false;
                }
                self.permanent = permanent;
                if reason.len() > MAX_REASON {
                    let mut cut = MAX_REASON;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                }
                self.reason = reason;
                true
            }
            Fact::Opened { at } => first(&mut self.opened_ms, at),
            // A click is an open too: a client that blocks the pixel
            // still followed the link.
            Fact::Clicked { at } => {
                let opened = first(&mut self.opened_ms, at);
                first(&mut self.clicked_ms, at) || opened
            }
        }
    }

    /// What is now countable and was not counted yet (nothing until the
    /// dispatch is known), marking it counted.
    pub fn settle(&mut self) -> Vec<Observation> {
        let mut out = Vec::new();
        if self.dims.is_none() {
            return out;
        }
        let counted = &mut self.counted;
        let mut count = |bit: u16, outcome: Outcome, at: i64| {
            if at > 0 && *counted & bit == 0 {
                *counted |= bit;
                out.push(Observation::Count { outcome, at });
            }
        };
        let attempted_at = match (self.sent_ms, self.failed_ms) {
            (0, f) => f,
            (s, 0) => s,
            (s, f) => s.min(f),
        };
        count(ATTEMPTED, Outcome::Attempted, attempted_at);
        count(SENT, Outcome::Sent, self.sent_ms);
        count(FAILED, Outcome::Failed, self.failed_ms);
        if self.permanent {
            count(BOUNCED, Outcome::Bounced, self.failed_ms);
        }
        count(DELIVERED, Outcome::Delivered, self.delivered_ms);
        count(OPENED, Outcome::Opened, self.opened_ms);
        count(CLICKED, Outcome::Clicked, self.clicked_ms);
        let sent = self.sent_ms;
        let pairs = [
            (
                L_TRIGGER_SENT,
                Latency::TriggerToSent,
                self.trigger_ms,
                sent,
            ),
            (
                L_DISPATCH_SENT,
                Latency::DispatchToSent,
                self.dispatch_ms,
                sent,
            ),
            (
                L_SENT_DELIVERED,
                Latency::SentToDelivered,
                sent,
                self.delivered_ms,
            ),
            (L_SENT_OPENED, Latency::SentToOpened, sent, self.opened_ms),
        ];
        for (bit, latency, from, to) in pairs {
            if from > 0 && to > 0 && self.counted & bit == 0 {
                self.counted |= bit;
                out.push(Observation::Latency {
                    latency,
                    at: to,
                    ms: to - from,
                });
            }
        }
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("attempt encode")
    }

    pub fn decode(b: &[u8]) -> Result<Attempt, rmp_serde::decode::Error> {
        rmp_serde::from_slice(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatched(at: i64) -> Fact {
        Fact::Dispatched {
            dims: Dims {
                channel: "email".into(),
                ..Default::default()
            },
            trigger_ms: at - 100,
            at,
        }
    }

    fn outcomes(obs: &[Observation]) -> Vec<Outcome> {
        obs.iter()
            .filter_map(|o| match o {
                Observation::Count { outcome, .. } => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn outcomes_before_the_dispatch_wait_then_count_once() {
        let mut a = Attempt::default();
        assert!(a.apply(Fact::Opened { at: 1_500 }));
        assert!(a.apply(Fact::Sent { at: 1_200 }));
        assert!(a.settle().is_empty(), "no dimensions yet");
        assert!(a.apply(dispatched(1_000)));
        let obs = a.settle();
        assert_eq!(
            outcomes(&obs),
            [Outcome::Attempted, Outcome::Sent, Outcome::Opened]
        );
        assert!(obs.contains(&Observation::Latency {
            latency: Latency::TriggerToSent,
            at: 1_200,
            ms: 300
        }));
        assert!(obs.contains(&Observation::Latency {
            latency: Latency::SentToOpened,
            at: 1_500,
            ms: 300
        }));
        // Repeats (a republished event, a second pixel) change nothing.
        assert!(!a.apply(Fact::Opened { at: 1_900 }));
        assert!(!a.apply(dispatched(1_000)));
        assert!(a.settle().is_empty());
        // A click is new; it was opened already.
        assert!(a.apply(Fact::Clicked { at: 2_000 }));
        assert_eq!(outcomes(&a.settle()), [Outcome::Clicked]);
    }

    #[test]
    fn a_permanent_failure_is_a_bounce_and_a_click_alone_is_an_open() {
        let mut a = Attempt::default();
        a.apply(dispatched(1_000));
        a.apply(Fact::Failed {
            at: 1_100,
            permanent: true,
            reason: "x".repeat(500),
        });
        assert_eq!(a.reason.len(), MAX_REASON);
        assert_eq!(
            outcomes(&a.settle()),
            [Outcome::Attempted, Outcome::Failed, Outcome::Bounced]
        );
        let mut b = Attempt::default();
        b.apply(dispatched(1_000));
        b.apply(Fact::Clicked { at: 1_300 });
        assert_eq!(outcomes(&b.settle()), [Outcome::Opened, Outcome::Clicked]);
    }
}
