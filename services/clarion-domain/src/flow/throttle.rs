//! Sliding-window send limits: the ones a workflow declares for its own
//! sends, and the tenant's limits that hold across all its workflows.
//!
//! A limit counts the sends that fall in its scope (and, when it names one,
//! on its channel) over the last `window`; a send that would exceed it is
//! dropped or deferred until the window has room. Counting happens where
//! the send is decided (the router), so this module holds only the rules,
//! their validation and the window arithmetic.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::Violations;
use crate::flow::duration::parse_bounded_ms;
use clarion_proto::events as pb;

/// What a limit counts: sends...
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// ...to one recipient.
    Recipient,
    /// ...to one recipient on the sending step's channel.
    Channel,
    /// ...of one workflow, to anyone (workflow limits only).
    Workflow,
    /// ...of every workflow of the tenant, to anyone (tenant limits only).
    Tenant,
}

impl ThrottleScope {
    pub fn as_str(&self) -> &'static str {
        match self {
            ThrottleScope::Recipient => "recipient",
            ThrottleScope::Channel => "channel",
            ThrottleScope::Workflow => "workflow",
            ThrottleScope::Tenant => "tenant",
        }
    }

    /// Whether the counter spans recipients, and so partitions. Such limits
    /// are enforced per partition with an equal share of the limit (rounded
    /// up), so the hot path needs no coordination between partitions.
    pub fn spans_partitions(&self) -> bool {
        matches!(self, ThrottleScope::Workflow | ThrottleScope::Tenant)
    }
}

/// What happens to a message over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Not sent; the run ends suppressed, with the reason.
    Drop,
    /// Sent as soon as the window has room.
    Defer,
}

/// A sliding-window limit on sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleDef {
    pub scope: ThrottleScope,
    /// Only sends on this channel count and are limited (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub limit: u32,
    pub window: String,
    #[serde(default = "default_on_exceed")]
    pub on_exceed: OnExceed,
}

fn default_on_exceed() -> OnExceed {
    OnExceed::Drop
}

impl ThrottleDef {
    /// Whether a send on `channel` is counted by this limit.
    pub fn covers(&self, channel: &str) -> bool {
        self.channel.as_deref().is_none_or(|c| c == channel)
    }

    /// Names this limit's counters independently of its position and of its
    /// `limit`, so reordering the rules or changing a limit keeps the counts.
    pub fn counter_name(&self, window_ms: u64) -> String {
        format!(
            "{}/{}/{window_ms}",
            self.scope.as_str(),
            self.channel.as_deref().unwrap_or("*")
        )
    }

    /// Why a send was held back by this limit, for the run's event;
    /// `source` says whose limit it is ("workflow x", "tenant limits v3").
    pub fn reason(&self, source: &str) -> String {
        let on = match &self.channel {
            Some(c) => format!(" {c}"),
            None => String::new(),
        };
        format!(
            "throttled: {}{on} limit of {} per {} reached ({source})",
            self.scope.as_str(),
            self.limit,
            self.window
        )
    }
}

/// Who declares a set of limits; each owner allows its own scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Workflow,
    Tenant,
}

/// Checks a list of limits (at `throttle[i]`) and returns their windows in
/// milliseconds, parallel to the list. `publishing`: a window over
/// [`MAX_THROTTLE_WINDOW_MS`](crate::limits::MAX_THROTTLE_WINDOW_MS) is
/// refused (otherwise, published before the bound, clamped to it).
pub(crate) fn validate_throttle(
    v: &mut Violations,
    rules: &[ThrottleDef],
    owner: Owner,
    publishing: bool,
) -> Vec<u64> {
    let mut windows = Vec::new();
    for (i, t) in rules.iter().enumerate() {
        let f = format!("throttle[{i}]");
        match (owner, t.scope) {
            (Owner::Workflow, ThrottleScope::Tenant) => v.push(
                format!("{f}.scope"),
                "tenant-wide limits belong in the tenant's limits (`clarion limits apply`), not in a workflow",
            ),
            (Owner::Tenant, ThrottleScope::Workflow) => v.push(
                format!("{f}.scope"),
                "workflow limits belong in the workflow's definition; the tenant's scopes are recipient, channel and tenant",
            ),
            _ => {}
        }
        if let Some(c) = &t.channel {
            if let Err(e) = c.parse::<Channel>() {
                v.push(format!("{f}.channel"), e);
            }
        }
        if t.limit == 0 {
            v.push(format!("{f}.limit"), "must be at least 1");
        }
        match parse_bounded_ms(&t.window, crate::limits::MAX_THROTTLE_WINDOW_MS, publishing) {
            Ok(ms) => windows.push(ms),
            Err(e) => {
                v.push(format!("{f}.window"), e);
                windows.push(0);
            }
        }
    }
    windows
}

/// A tenant's limits as written (YAML or JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsDef {
    #[serde(default)]
    pub throttle: Vec<ThrottleDef>,
}

/// A tenant's validated limits, which hold across all its workflows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantLimits {
    pub def: TenantLimitsDef,
    pub version: u32,
    /// Windows in milliseconds, parallel to `def.throttle`.
    pub windows_ms: Vec<u64>,
}

impl TenantLimits {
    /// Parses YAML or JSON and validates.
    pub fn parse(text: &str, version: u32) -> Result<TenantLimits, Violations> {
        TenantLimits::parse_as(text, version, true)
    }

    fn parse_as(text: &str, version: u32, publishing: bool) -> Result<TenantLimits, Violations> {
        let def: TenantLimitsDef =
            serde_norway::from_str(text).map_err(|e| crate::flow::def::parse_error(&e))?;
        TenantLimits::build(def, version, publishing)
    }

    pub fn new(def: TenantLimitsDef, version: u32) -> Result<TenantLimits, Violations> {
        TenantLimits::build(def, version, true)
    }

    fn build(
        def: TenantLimitsDef,
        version: u32,
        publishing: bool,
    ) -> Result<TenantLimits, Violations> {
        let mut v = Violations::default();
        let windows_ms = validate_throttle(&mut v, &def.throttle, Owner::Tenant, publishing);
        v.into_result()?;
        Ok(TenantLimits {
            def,
            version,
            windows_ms,
        })
    }

    /// Canonical JSON (what the log stores).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.def).expect("limits serialize")
    }
}

/// The log event for a version of a tenant's limits.
pub fn to_event(limits: &TenantLimits) -> pb::TenantLimitsSet {
    pb::TenantLimitsSet {
        version: limits.version,
        definition_json: limits.to_json(),
    }
}

/// Rebuilds limits from their log event.
pub fn from_event(e: &pb::TenantLimitsSet) -> Result<TenantLimits, Violations> {
    TenantLimits::parse_as(&e.definition_json, e.version, false)
}

/// Drops the sends that left the window ending at `now`.
pub fn slide(log: &mut VecDeque<i64>, now_ms: i64, window_ms: i64) {
    while log.front().is_some_and(|t| *t <= now_ms - window_ms) {
        log.pop_front();
    }
}

/// When a window holding `log` (already slid to now) has room for one more
/// send under `limit`: `None` when it has room now.
pub fn frees_at(log: &VecDeque<i64>, limit: u32, window_ms: i64) -> Option<i64> {
    (log.len() as u32 >= limit).then(|| {
        // The send that leaves first makes room; it is at least `limit`
        // sends back from the newest.
        log.get(log.len() - limit as usize).copied().unwrap_or(0) + window_ms
    })
}

/// A send held back: dropped, or deferred until a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    Drop(String),
    Defer(i64, String),
}

impl Hold {
    /// Combines the verdicts of two limits: a drop wins; otherwise the send
    /// waits for the later of the two.
    pub fn and(self, other: Hold) -> Hold {
        match (self, other) {
            (d @ Hold::Drop(_), _) | (_, d @ Hold::Drop(_)) => d,
            (Hold::Defer(a, ra), Hold::Defer(b, rb)) => {
                if b > a {
                    Hold::Defer(b, rb)
                } else {
                    Hold::Defer(a, ra)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(scope: &str, extra: &str) -> String {
        format!("throttle:\n  - {{scope: {scope}, limit: 2, window: 1h{extra}}}\n")
    }

    #[test]
    fn tenant_limits_accept_their_scopes_and_a_channel_filter() {
        let l = TenantLimits::parse(
            "throttle:\n  - {scope: recipient, limit: 5, window: 1d}\n  - {scope: tenant, channel: sms, limit: 1000, window: 1h, on_exceed: defer}\n",
            3,
        )
        .unwrap();
        assert_eq!(l.version, 3);
        assert_eq!(l.windows_ms, vec![86_400_000, 3_600_000]);
        assert!(l.def.throttle[1].covers("sms"));
        assert!(!l.def.throttle[1].covers("email"));
        assert!(l.def.throttle[0].covers("email"));
        assert_eq!(
            l.def.throttle[1].counter_name(l.windows_ms[1]),
            "tenant/sms/3600000"
        );
        let again = TenantLimits::parse(&l.to_json(), 3).unwrap();
        assert_eq!(again, l);
    }

    #[test]
    fn tenant_limits_reject_bad_rules_with_the_path() {
        let err = TenantLimits::parse(&rule("workflow", ""), 1).unwrap_err();
        assert_eq!(err.0[0].field, "throttle[0].scope");
        let err = TenantLimits::parse(&rule("tenant", ", channel: pigeon"), 1).unwrap_err();
        assert_eq!(err.0[0].field, "throttle[0].channel");
        assert!(err.0[0].description.contains("pigeon"));
        let err = TenantLimits::parse(
            "throttle:\n  - {scope: tenant, limit: 0, window: soon}\n",
            1,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["throttle[0].limit", "throttle[0].window"]);
        let err = TenantLimits::parse(
            "throttle:\n  - {scope: tenant, limit: 1, window: 1h, burst: 3}\n",
            1,
        )
        .unwrap_err();
        assert!(err.0[0].description.contains("burst"), "{err}");
    }

    #[test]
    fn a_workflow_cannot_declare_a_tenant_wide_limit() {
        let err = crate::flow::Flow::parse(
            "id: w\nthrottle: [ { scope: tenant, limit: 1, window: 1h } ]\nsteps: [ { id: s, type: stop } ]\n",
            1,
            |_| None,
        )
        .unwrap_err();
        assert_eq!(err.0[0].field, "throttle[0].scope");
        assert!(
            err.0[0].description.contains("clarion limits apply"),
            "{err}"
        );
    }

    #[test]
    fn windows_slide_and_say_when_they_free() {
        let mut log: VecDeque<i64> = [100, 200, 300].into_iter().collect();
        slide(&mut log, 1100, 1000);
        assert_eq!(log, [200, 300]);
        assert_eq!(frees_at(&log, 3, 1000), None);
        assert_eq!(frees_at(&log, 2, 1000), Some(1200));
        // A limit lowered below what the window holds waits for enough to leave.
        assert_eq!(frees_at(&log, 1, 1000), Some(1300));
    }

    #[test]
    fn a_drop_beats_a_defer_and_defers_wait_for_the_later() {
        let d = |t| Hold::Defer(t, format!("d{t}"));
        assert_eq!(d(5).and(d(9)), d(9));
        assert_eq!(d(9).and(d(5)), d(9));
        assert_eq!(d(9).and(Hold::Drop("x".into())), Hold::Drop("x".into()));
        assert_eq!(Hold::Drop("y".into()).and(d(1)), Hold::Drop("y".into()));
    }
}
