//! Legal holds: a hold suspends retention and erasure for what it covers —
//! the whole tenant, a subscriber, a workflow's notifications or a time
//! range of the data (several set: their intersection). Placing, extending
//! and releasing are config events with actor and reason; [`HoldBook`] is
//! the holds not yet released, evolved from them.
//!
//! What a hold blocks:
//! * an **erasure** (or a shredding for inactivity) of subscriber S when it
//!   names S, or names no subscriber and covers the tenant or one of S's
//!   notifications (by workflow and/or creation time): destroying S's key
//!   would make those notifications' personal fields unreadable;
//! * the **redaction of a day's bodies** when its time range overlaps that
//!   day (no range: every day). A day's body key is shared by all the
//!   tenant's subscribers, so a hold on one subscriber or one workflow keeps
//!   the whole day: over-retention is the lawful side while a hold is in
//!   force (docs/compliance.md).

use std::collections::BTreeMap;

use clarion_proto::events as pb;

use super::{DAY_MS, MAX_REASON_BYTES};
use crate::error::Violations;
use crate::limits::check_len;
use crate::subscriber::validate_subscriber_id;

/// Most holds not yet released per tenant.
pub const MAX_HOLDS: usize = 1000;
/// Longest workflow id in a scope.
const MAX_WORKFLOW_ID: usize = 128;

/// What a hold covers; all `None`: the whole tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HoldScope {
    pub subscriber: Option<String>,
    pub workflow: Option<String>,
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn non_zero(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

impl HoldScope {
    pub fn from_pb(s: Option<&pb::HoldScope>) -> HoldScope {
        let Some(s) = s else {
            return HoldScope::default();
        };
        HoldScope {
            subscriber: non_empty(&s.subscriber_id),
            workflow: non_empty(&s.workflow_id),
            from_ms: non_zero(s.from_ms),
            until_ms: non_zero(s.until_ms),
        }
    }

    pub fn to_pb(&self) -> pb::HoldScope {
        pb::HoldScope {
            subscriber_id: self.subscriber.clone().unwrap_or_default(),
            workflow_id: self.workflow.clone().unwrap_or_default(),
            from_ms: self.from_ms.unwrap_or(0),
            until_ms: self.until_ms.unwrap_or(0),
        }
    }

    pub fn is_whole_tenant(&self) -> bool {
        *self == HoldScope::default()
    }

    /// Whether `[from, until)` meets `[start, end)`.
    fn overlaps(&self, start: i64, end: i64) -> bool {
        self.from_ms.is_none_or(|f| f < end) && self.until_ms.is_none_or(|u| u > start)
    }

    /// Whether a notification (its workflow, its creation time) is in scope,
    /// the subscriber aside.
    fn covers_notification(&self, workflow: &str, created_ms: i64) -> bool {
        self.workflow.as_deref().is_none_or(|w| w == workflow)
            && self.overlaps(created_ms, created_ms + 1)
    }

    /// Checks a scope given by a caller (`scope.subscriber_id`, ...).
    pub fn check(&self, v: &mut Violations) {
        if let Some(s) = &self.subscriber {
            validate_subscriber_id(v, "scope.subscriber_id", s);
        }
        if let Some(w) = &self.workflow {
            check_len(v, "scope.workflow_id", w, MAX_WORKFLOW_ID);
        }
        for (field, ms) in [
            ("scope.from_ms", self.from_ms),
            ("scope.until_ms", self.until_ms),
        ] {
            if ms.is_some_and(|ms| ms < 0) {
                v.push(field, "must be a time after 1970 (ms since the epoch)");
            }
        }
        if let (Some(f), Some(u)) = (self.from_ms, self.until_ms) {
            if f >= u {
                v.push("scope.until_ms", "must be after scope.from_ms");
            }
        }
    }
}

/// A hold in the book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub scope: HoldScope,
    pub reason: String,
    /// Who placed it (the envelope's actor, e.g. `api_key:k1`).
    pub actor: String,
    pub placed_at_ms: i64,
    /// `None`: until released.
    pub expires_at_ms: Option<i64>,
}

/// Who an erasure (or a shredding) would make unreadable: the subscriber
/// and their notifications as (workflow, creation time), newest first.
#[derive(Clone, Debug, Default)]
pub struct Subject<'a> {
    pub subscriber: &'a str,
    pub notifications: &'a [(String, i64)],
    /// The list was cut short: a hold naming a workflow or a time range is
    /// then assumed to cover the subscriber (the safe side).
    pub truncated: bool,
}

impl Hold {
    /// In force at `now`: not expired (a released hold is not in the book).
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|e| now_ms < e)
    }

    /// Whether the hold forbids destroying the subject's data key.
    pub fn covers_subscriber(&self, s: &Subject, now_ms: i64) -> bool {
        if !self.in_force(now_ms) {
            return false;
        }
        match &self.scope.subscriber {
            Some(named) => named == s.subscriber,
            None if self.scope.is_whole_tenant() => true,
            None => {
                s.truncated
                    || s.notifications
                        .iter()
                        .any(|(w, at)| self.scope.covers_notification(w, *at))
            }
        }
    }

    /// Whether the hold forbids destroying the body keys of `day` (days
    /// since the epoch, UTC).
    pub fn covers_day(&self, day: i64, now_ms: i64) -> bool {
        self.in_force(now_ms) && self.scope.overlaps(day * DAY_MS, (day + 1) * DAY_MS)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HoldError {
    #[error(transparent)]
    Invalid(#[from] Violations),
    #[error("no legal hold {0:?} in force for this tenant")]
    Unknown(String),
}

/// A tenant's holds not yet released, by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HoldBook {
    pub holds: BTreeMap<String, Hold>,
}

fn check_reason(v: &mut Violations, reason: &str) {
    if reason.trim().is_empty() {
        v.push(
            "reason",
            "is required: say why (it is kept with the hold's events)",
        );
    }
    check_len(v, "reason", reason, MAX_REASON_BYTES);
}

fn check_expiry(v: &mut Violations, expires_at_ms: i64, now_ms: i64) {
    if expires_at_ms != 0 && expires_at_ms <= now_ms {
        v.push(
            "expires_at_ms",
            "must be in the future (or 0: until released)",
        );
    }
}

impl HoldBook {
    /// The first hold in force that covers the subject, if any.
    pub fn blocking_erasure(&self, s: &Subject, now_ms: i64) -> Option<&Hold> {
        self.holds.values().find(|h| h.covers_subscriber(s, now_ms))
    }

    /// Whether a hold in force keeps `day`'s bodies.
    pub fn blocks_day(&self, day: i64, now_ms: i64) -> bool {
        self.holds.values().any(|h| h.covers_day(day, now_ms))
    }

    /// Checks a new hold; its event on success.
    pub fn place(
        &self,
        id: &str,
        scope: &HoldScope,
        reason: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<pb::LegalHoldPlaced, HoldError> {
        let mut v = Violations::default();
        scope.check(&mut v);
        check_reason(&mut v, reason);
        check_expiry(&mut v, expires_at_ms, now_ms);
        if self.holds.len() >= MAX_HOLDS {
            v.push(
                "hold_id",
                format!("at most {MAX_HOLDS} holds in force per tenant: release one"),
            );
        }
        v.into_result()?;
        Ok(pb::LegalHoldPlaced {
            hold_id: id.to_string(),
            scope: Some(scope.to_pb()),
            reason: reason.to_string(),
            expires_at_ms,
        })
    }

    /// Checks an extension of hold `id` to a new expiry (0: until released).
    pub fn extend(
        &self,
        id: &str,
        reason: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<pb::LegalHoldExtended, HoldError> {
        let hold = self
            .holds
            .get(id)
            .ok_or_else(|| HoldError::Unknown(id.into()))?;
        let mut v = Violations::default();
        check_reason(&mut v, reason);
        check_expiry(&mut v, expires_at_ms, now_ms);
        if let (Some(old), true) = (hold.expires_at_ms, expires_at_ms != 0) {
            if expires_at_ms < old {
                v.push(
                    "expires_at_ms",
                    "an extension cannot shorten a hold (release it instead)",
                );
            }
        }
        v.into_result()?;
        Ok(pb::LegalHoldExtended {
            hold_id: id.to_string(),
            reason: reason.to_string(),
            expires_at_ms,
        })
    }

    /// Checks the release of hold `id`.
    pub fn release(&self, id: &str, reason: &str) -> Result<pb::LegalHoldReleased, HoldError> {
        if !self.holds.contains_key(id) {
            return Err(HoldError::Unknown(id.into()));
        }
        let mut v = Violations::default();
        check_reason(&mut v, reason);
        v.into_result()?;
        Ok(pb::LegalHoldReleased {
            hold_id: id.to_string(),
            reason: reason.to_string(),
        })
    }

    /// Applies a placed hold (its actor and time from the envelope).
    pub fn placed(&mut self, e: &pb::LegalHoldPlaced, actor: &str, at_ms: i64) {
        self.holds.insert(
            e.hold_id.clone(),
            Hold {
                id: e.hold_id.clone(),
                scope: HoldScope::from_pb(e.scope.as_ref()),
                reason: e.reason.clone(),
                actor: actor.to_string(),
                placed_at_ms: at_ms,
                expires_at_ms: non_zero(e.expires_at_ms),
            },
        );
    }

    pub fn extended(&mut self, e: &pb::LegalHoldExtended) {
        if let Some(h) = self.holds.get_mut(&e.hold_id) {
            h.expires_at_ms = non_zero(e.expires_at_ms);
        }
    }

    pub fn released(&mut self, e: &pb::LegalHoldReleased) {
        self.holds.remove(&e.hold_id);
    }
}

#[cfg(test)]
mod tests;
