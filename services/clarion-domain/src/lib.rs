//! Clarion's pure core.
//!
//! Everything here is synchronous, deterministic and free of IO: time comes in
//! as `now_ms`, randomness as a seed, stored state as arguments. That is what
//! lets the runtime replay the log and get the same decisions, and what keeps
//! routing rules testable in microseconds.

pub mod anomaly;
pub mod channel;
pub mod compliance;
pub mod digest;
pub mod error;
pub mod event;
pub mod flow;
pub mod ids;
pub mod limits;
pub mod payload;
pub mod personal;
pub mod preferences;
pub mod push;
pub mod quiet;
pub mod recipient;
pub mod router;
pub mod schedule;
pub mod send;
pub mod sla;
pub mod subscriber;
pub mod template;
pub mod tenant;
pub mod time;
pub mod tracking;
pub mod trigger;
pub mod workflow;

pub use channel::Channel;
pub use error::{FieldViolation, Violations};
pub use event::{Actor, Event, EventDecodeError, Payload};
pub use ids::{Id, TenantId};
