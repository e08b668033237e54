//! Dead-letter accounting: how many of a tenant's notifications are in the
//! dead-letter queue, and when that raises an alert.
//!
//! Each router partition keeps its own count per tenant (one writer each);
//! the tenant's total is the sum over partitions. The alert is raised when
//! a change moves the total from below the threshold to at or above it:
//! once per crossing, not for every dead letter while above it, and never
//! for the queue shrinking.

use std::collections::HashMap;

use clarion_proto::events as pb;
use serde_json::json;

use crate::flow::Terminal;

/// A change of this partition's count for a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// This partition's count before the change.
    pub own: i64,
    /// The other partitions' counts, summed.
    pub others: i64,
    /// +1 a dead letter in, -1 one out (retried or discarded).
    pub delta: i64,
    /// Dead letters that raise the alert; 0: never.
    pub threshold: u64,
}

/// What a change comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// This partition's count after the change (never below 0).
    pub own: i64,
    /// The tenant's total after the change.
    pub total: u64,
    pub alert: Option<Alert>,
}

/// The queue crossed its threshold upward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alert {
    pub total: u64,
    pub threshold: u64,
}

pub fn decide(c: Change) -> Decision {
    let own = (c.own + c.delta).max(0);
    let total = (c.others + own) as u64;
    let before = (c.others + c.own) as u64;
    let crossed = c.threshold > 0 && c.delta > 0 && before < c.threshold && total >= c.threshold;
    Decision {
        own,
        total,
        alert: crossed.then_some(Alert {
            total,
            threshold: c.threshold,
        }),
    }
}

/// Whether a run is in the queue after an input, and how that changes the
/// count: a run that was just dead-lettered is in it; one that is no longer
/// a dead letter (retried) is out; a dead letter stays where it was (in, or
/// discarded).
pub fn membership(
    was_in: bool,
    dead_lettered_now: bool,
    terminal: Option<Terminal>,
) -> (bool, i64) {
    let is_in = if dead_lettered_now {
        true
    } else if terminal != Some(Terminal::DeadLettered) {
        false
    } else {
        was_in
    };
    (is_in, i64::from(is_in) - i64::from(was_in))
}

/// The alert as a signed webhook send to `url`; `alert_id` (derived from
/// the event that crossed the threshold) is its attempt id.
pub fn alert_dispatch(
    tenant: &str,
    alert: Alert,
    url: &str,
    alert_id: String,
) -> pb::DispatchRequested {
    let body = json!({
        "alert": "dead_letter_queue_threshold",
        "tenant_id": tenant,
        "dead_letters": alert.total,
        "threshold": alert.threshold,
    })
    .to_string();
    pb::DispatchRequested {
        notification_id: format!("dlq-alert-{alert_id}"),
        attempt_id: alert_id,
        channel: "webhook".into(),
        provider: "webhook".into(),
        to: url.to_string(),
        subject: format!("Dead-letter queue of {tenant}: {} entries", alert.total),
        body,
        locale: String::new(),
        subscriber_id: String::new(),
        step: String::new(),
        context_in_outcomes: true,
        ..Default::default()
    }
}

/// This partition's count per tenant, once read from the store.
#[derive(Debug, Default)]
pub struct Counts {
    own: HashMap<String, i64>,
}

/// This partition's count of a tenant is now `own`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub tenant: String,
    pub own: i64,
}

impl Counts {
    /// This partition's count, if it was read or changed since start.
    pub fn own(&self, tenant: &str) -> Option<i64> {
        self.own.get(tenant).copied()
    }

    pub(super) fn evolve(&mut self, e: Counted) {
        self.own.insert(e.tenant, e.own);
    }
}
