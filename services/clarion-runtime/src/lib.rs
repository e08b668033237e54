//! The partition-processor runtime.
//!
//! A processor owns one partition of one topic. For each batch it reads, it
//! (1) drops events it already applied (dedup table), (2) runs pure domain
//! logic, (3) commits state rows, dedup ids, an outbox of output events and
//! effects, and the next input offset in one store write, and only then
//! (4) publishes the outbox and runs the effects, and deletes the outbox row.
//! On start it first finishes any outbox a crash left behind. Crash anywhere:
//! an input is applied exactly once; outputs are published at least once with
//! stable ids, so consumers deduplicate them; effects carry stable attempt ids.

pub mod alerts;
pub mod assignment;
pub mod clock;
pub mod colocated;
mod horizon;
pub mod inbox;
pub mod live;
pub mod metric_labels;
pub mod notification_index;
pub mod outbox;
pub mod overlay;
pub mod personal;
pub mod processor;
pub mod projector;
pub mod quarantine;
pub mod retention;
pub mod router;
pub mod runner;
pub mod secrets;
pub mod subscriber_index;
pub mod telemetry;
pub mod tenant_settings;
pub mod timers;
pub mod topics;

pub use clock::{Clock, ManualClock, SystemClock};
pub use processor::{Batch, Effects, Emit, Input, ProcessError, Processor};
pub use runner::{PartitionRunner, RunnerConfig};
pub use topics::{Topic, Topics};
