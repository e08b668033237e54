//! Compliance (issue #32, docs/compliance.md): legal holds and retention
//! policies, pure.
//!
//! * [`holds`]: what a legal hold covers, the in-force holds evolved from
//!   their events, and the checks of a new hold, an extension, a release;
//! * [`retention`]: a tenant's policy (rules per channel × country, the most
//!   specific one wins) and which body keys are due for destruction at a
//!   time, given the holds in force.
//!
//! The runtime's `retention` role and the gateway's erasure door feed these
//! with stored state and the clock's time; nothing here does IO.

pub mod holds;
pub mod retention;

pub use holds::{Hold, HoldBook, HoldError, HoldScope, Subject};
pub use retention::{due_body_keys, BodyKey, DueKeys, Policy, Rule};

/// Most bytes of a reason given for a hold, an extension, a release or an
/// erasure.
pub const MAX_REASON_BYTES: usize = 1000;
/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
