//! Throttle decisions: which limits cover a send, and whether it goes, is
//! dropped or is deferred until the windows have room.
//!
//! The limits are the workflow's and the tenant's
//! ([`crate::flow::throttle`]: rules, validation, window arithmetic). Each
//! limit that covers a send counts in a window named by its owner, counter
//! and scope ([`counters`]); a window is a sliding log of send times
//! ([`Windows`]). Scopes that span recipients (workflow, tenant) are kept per
//! partition, each with an equal share of the limit, rounded up, so the hot
//! path needs no coordination between partitions.
//!
//! A send goes when every covering window has room, and then counts in all
//! of them; it is held when any is full: dropped if any full limit drops,
//! else deferred until the latest of their frees ([`Hold::and`]).

use std::collections::VecDeque;

use super::{Ctx, Map, Pair};
use crate::flow::throttle::{slide, Hold, Owner};
use crate::flow::{Flow, OnExceed, TenantLimits, ThrottleDef, ThrottleScope};

/// The limits a send is checked against.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    pub flow: &'a Flow,
    pub tenant: Option<&'a TenantLimits>,
}

/// One window a send counts in.
#[derive(Clone, Debug)]
pub struct Counter<'a> {
    pub owner: Owner,
    pub rule: &'a ThrottleDef,
    pub window_ms: u64,
    /// The limit for this partition (a share, for scopes spanning partitions).
    pub limit: u32,
    /// The window's name within the tenant (also its store partition).
    pub key: String,
}

/// The windows of every limit covering a send of `subscriber` on `channel`.
pub fn counters<'a>(
    limits: Limits<'a>,
    subscriber: &str,
    channel: &str,
    ctx: &Ctx,
) -> Vec<Counter<'a>> {
    let workflow_rules = limits
        .flow
        .def
        .throttle
        .iter()
        .zip(&limits.flow.throttle_windows_ms)
        .map(|(r, w)| (Owner::Workflow, r, *w));
    let tenant_rules = limits
        .tenant
        .iter()
        .flat_map(|l| l.def.throttle.iter().zip(&l.windows_ms))
        .map(|(r, w)| (Owner::Tenant, r, *w));
    workflow_rules
        .chain(tenant_rules)
        .filter(|(_, rule, _)| rule.covers(channel))
        .map(|(owner, rule, window_ms)| {
            let scope_key = match rule.scope {
                ThrottleScope::Recipient => format!("r/{subscriber}"),
                ThrottleScope::Channel => format!("c/{subscriber}/{channel}"),
                ThrottleScope::Workflow | ThrottleScope::Tenant => format!("p{}", ctx.partition),
            };
            let limit = if rule.scope.spans_partitions() {
                rule.limit.div_ceil(ctx.partitions.max(1))
            } else {
                rule.limit
            };
            let counter = rule.counter_name(window_ms);
            let key = match owner {
                Owner::Workflow => {
                    format!("throttle:w/{}/{counter}/{scope_key}", limits.flow.def.id)
                }
                Owner::Tenant => format!("throttle:t/{counter}/{scope_key}"),
            };
            Counter {
                owner,
                rule,
                window_ms,
                limit,
                key,
            }
        })
        .collect()
}

/// Whether a send may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It goes, and counts in every covering window (evolve with
    /// [`Counted`], and store a mark per window with the window as TTL).
    Go,
    Held(Hold),
}

/// Decides a send over the windows of its `counters`, as `windows` holds
/// them for `tenant` (every one loaded: a window not in memory is empty).
pub fn decide(
    limits: Limits<'_>,
    counters: &[Counter<'_>],
    windows: &Windows,
    tenant: &str,
    now_ms: i64,
) -> Decision {
    let mut held: Option<Hold> = None;
    for c in counters {
        let window = c.window_ms as i64;
        let Some(frees) = windows.frees_at(tenant, &c.key, c.limit, window, now_ms) else {
            continue;
        };
        let source = match c.owner {
            Owner::Workflow => format!("workflow {}", limits.flow.def.id),
            Owner::Tenant => format!(
                "tenant limits v{}",
                limits.tenant.map(|l| l.version).unwrap_or_default()
            ),
        };
        let hold = match c.rule.on_exceed {
            OnExceed::Drop => Hold::Drop(c.rule.reason(&source)),
            OnExceed::Defer => Hold::Defer(frees, c.rule.reason(&source)),
        };
        held = Some(match held {
            Some(h) => h.and(hold),
            None => hold,
        });
    }
    held.map_or(Decision::Go, Decision::Held)
}

/// Sliding send logs by `(tenant, window key)`: send times, oldest first.
#[derive(Debug, Default)]
pub struct Windows {
    logs: Map<(String, String), VecDeque<i64>>,
}

/// A send counted in its windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub tenant: String,
    /// The windows' keys and lengths in milliseconds.
    pub windows: Vec<(String, u64)>,
    pub at_ms: i64,
}

impl Windows {
    /// Whether a window is in memory.
    pub fn contains(&self, tenant: &str, key: &str) -> bool {
        self.logs.contains_key(&Pair(tenant, key))
    }

    /// Puts a window read from the store (its send times, oldest first).
    pub fn load(&mut self, tenant: &str, key: &str, log: VecDeque<i64>) {
        self.logs.insert((tenant.to_string(), key.to_string()), log);
    }

    /// When the window would have room for one more send at `now_ms`:
    /// `None` when it has room now.
    fn frees_at(
        &self,
        tenant: &str,
        key: &str,
        limit: u32,
        window_ms: i64,
        now_ms: i64,
    ) -> Option<i64> {
        let log = self.logs.get(&Pair(tenant, key))?;
        // The sends still in the window are the log's tail (sliding it is
        // the evolve's business); the one that leaves first makes room, at
        // least `limit` sends back from the newest.
        let gone = log.iter().take_while(|t| **t <= now_ms - window_ms).count();
        let live = log.len() - gone;
        (live as u32 >= limit)
            .then(|| log.get(log.len() - limit as usize).copied().unwrap_or(0) + window_ms)
    }

    pub(super) fn evolve(&mut self, e: Counted) {
        for (key, window_ms) in e.windows {
            let log = self.logs.entry((e.tenant.clone(), key)).or_default();
            slide(log, e.at_ms, window_ms as i64);
            log.push_back(e.at_ms);
        }
    }

    pub fn len(&self) -> usize {
        self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// Forgets every window (the store keeps their marks).
    pub fn clear(&mut self) {
        self.logs.clear();
    }
}
