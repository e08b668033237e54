//! Service-level agreements (issue #31, docs/slas.md): what a tenant
//! promises about a channel's sends, and how a window of sends is judged.
//!
//! Pure: the SLA processor counts sends into per-partition rows, the
//! evaluator sums them into a [`Window`] and asks [`judge`] whether the
//! SLA holds, is breached, or can no longer hold (a predicted breach).

use clarion_proto::events as pb;

use crate::channel::Channel;
use crate::error::Violations;
use crate::limits::check_len;

/// SLAs a tenant may define.
pub const MAX_SLAS: usize = 50;
/// The longest window (7 days): its counts are kept this long.
pub const MAX_WINDOW_MS: u64 = 7 * 24 * 3_600_000;
/// The shortest window: the evaluator judges about once a second.
pub const MIN_WINDOW_MS: u64 = 60_000;
/// The longest threshold (one day).
pub const MAX_THRESHOLD_MS: u64 = 24 * 3_600_000;
/// Milestones a send may be measured to.
pub const MILESTONES: [&str; 2] = ["delivered", "sent"];
const MAX_ID_BYTES: usize = 64;
const MAX_NAME_BYTES: usize = 200;

/// Checks an SLA definition; fills the defaults (`milestone` delivered,
/// `min_samples` 1). Violations name the field.
pub fn check(mut s: pb::SlaSet) -> Result<pb::SlaSet, Violations> {
    let mut v = Violations::default();
    if s.sla_id.is_empty() {
        v.push("sla_id", "is required");
    } else if check_len(&mut v, "sla_id", &s.sla_id, MAX_ID_BYTES)
        && !s
            .sla_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        v.push("sla_id", "may hold only letters, digits, '-', '_' and '.'");
    }
    check_len(&mut v, "name", &s.name, MAX_NAME_BYTES);
    check_len(&mut v, "workflow_id", &s.workflow_id, MAX_ID_BYTES * 2);
    check_len(&mut v, "topic", &s.topic, MAX_ID_BYTES * 2);
    if let Err(e) = s.channel.parse::<Channel>() {
        v.push("channel", e);
    }
    if !(s.target_ratio > 0.0 && s.target_ratio <= 1.0) {
        v.push(
            "target_ratio",
            "must be above 0 and at most 1 (0.99 for 99 %)",
        );
    }
    if s.threshold_ms == 0 || s.threshold_ms > MAX_THRESHOLD_MS {
        v.push(
            "threshold_ms",
            format!("must be between 1 and {MAX_THRESHOLD_MS} (one day)"),
        );
    }
    if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&s.window_ms) {
        v.push(
            "window_ms",
            format!("must be between {MIN_WINDOW_MS} (one minute) and {MAX_WINDOW_MS} (7 days)"),
        );
    } else if s.threshold_ms >= s.window_ms {
        v.push("threshold_ms", "must be shorter than window_ms");
    }
    if s.milestone.is_empty() {
        s.milestone = "delivered".into();
    } else if !MILESTONES.contains(&s.milestone.as_str()) {
        v.push("milestone", "must be \"delivered\" or \"sent\"");
    }
    if s.min_samples == 0 {
        s.min_samples = 1;
    } else if s.min_samples > 1_000_000 {
        v.push("min_samples", "must be at most 1000000");
    }
    s.removed = false;
    v.into_result().map(|()| s)
}

/// Whether a send of `channel` from `workflow_id` about `topic` is one
/// the SLA is about.
pub fn matches(s: &pb::SlaSet, channel: &str, workflow_id: &str, topic: &str) -> bool {
    s.channel == channel
        && (s.workflow_id.is_empty() || s.workflow_id == workflow_id)
        && (s.topic.is_empty() || s.topic == topic)
}

/// The sends of one SLA's window, summed over the partitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Reached the milestone within the threshold.
    pub met: u64,
    /// Reached it late, or failed.
    pub missed: u64,
    /// Still in flight and already past the threshold: missed, whatever
    /// comes later.
    pub overdue: u64,
    /// Still in flight and within the threshold.
    pub pending: u64,
}

/// What a window comes to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// met / (met + missed + overdue); 1 with nothing judged.
    pub compliance: f64,
    pub judged: u64,
    /// Below the target (with enough samples), even if every pending send
    /// made it in time.
    pub breached: bool,
    /// Breached only because sends still in flight are late already.
    pub predicted: bool,
}

/// Judges a window against the SLA's target.
pub fn judge(s: &pb::SlaSet, w: &Window) -> Judgement {
    let judged = w.met + w.missed + w.overdue;
    let compliance = if judged == 0 {
        1.0
    } else {
        w.met as f64 / judged as f64
    };
    // The best the window can still come to: every pending send in time.
    let all = judged + w.pending;
    let best = if all == 0 {
        1.0
    } else {
        (w.met + w.pending) as f64 / all as f64
    };
    let breached = all >= u64::from(s.min_samples.max(1)) && best < s.target_ratio;
    // Without the late in-flight sends, would it hold?
    let settled = w.met + w.missed + w.pending;
    let without_overdue = if settled == 0 {
        1.0
    } else {
        (w.met + w.pending) as f64 / settled as f64
    };
    Judgement {
        compliance,
        judged,
        breached,
        predicted: breached && w.overdue > 0 && without_overdue >= s.target_ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sla() -> pb::SlaSet {
        pb::SlaSet {
            sla_id: "critical-sms".into(),
            channel: "sms".into(),
            target_ratio: 0.99,
            threshold_ms: 60_000,
            window_ms: 3_600_000,
            min_samples: 10,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_definition_gets_its_defaults() {
        let s = check(sla()).unwrap();
        assert_eq!(s.milestone, "delivered");
        assert_eq!(s.min_samples, 10);
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let fields = |s: pb::SlaSet| -> Vec<String> {
            check(s)
                .unwrap_err()
                .0
                .into_iter()
                .map(|f| f.field)
                .collect()
        };
        let mut s = sla();
        s.channel = "fax".into();
        s.target_ratio = 1.5;
        assert_eq!(fields(s), ["channel", "target_ratio"]);
        let mut s = sla();
        s.threshold_ms = 3_600_000;
        assert_eq!(fields(s), ["threshold_ms"]);
        let mut s = sla();
        s.window_ms = 10;
        s.milestone = "opened".into();
        s.sla_id = "a/b".into();
        assert_eq!(fields(s), ["sla_id", "window_ms", "milestone"]);
    }

    #[test]
    fn filters_match_channel_workflow_and_topic() {
        let mut s = sla();
        assert!(matches(&s, "sms", "visit", "jobs"));
        assert!(!matches(&s, "email", "visit", "jobs"));
        s.workflow_id = "visit".into();
        s.topic = "jobs".into();
        assert!(matches(&s, "sms", "visit", "jobs"));
        assert!(!matches(&s, "sms", "other", "jobs"));
        assert!(!matches(&s, "sms", "visit", "news"));
    }

    #[test]
    fn a_window_below_target_is_breached_and_late_in_flight_sends_predict_it() {
        let s = sla();
        let ok = judge(
            &s,
            &Window {
                met: 99,
                missed: 1,
                ..Default::default()
            },
        );
        assert!(!ok.breached && (ok.compliance - 0.99).abs() < 1e-9);
        let bad = judge(
            &s,
            &Window {
                met: 98,
                missed: 2,
                ..Default::default()
            },
        );
        assert!(bad.breached && !bad.predicted);
        // Too few samples: nobody is paged.
        let few = judge(
            &s,
            &Window {
                met: 1,
                missed: 2,
                ..Default::default()
            },
        );
        assert!(!few.breached);
        // Two sends in flight are late already: the target is out of reach
        // before their outcome comes.
        let w = Window {
            met: 98,
            missed: 0,
            overdue: 2,
            pending: 0,
        };
        let p = judge(&s, &w);
        assert!(p.breached && p.predicted, "{p:?}");
        // Pending sends in time could still save it.
        let w = Window {
            met: 98,
            missed: 1,
            overdue: 0,
            pending: 100,
        };
        assert!(!judge(&s, &w).breached);
        assert_eq!(judge(&s, &Window::default()).compliance, 1.0);
    }
}
