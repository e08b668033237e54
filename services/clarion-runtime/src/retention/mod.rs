//! Compliance in the runtime (issue #32, docs/compliance.md): the
//! `retention` role and the erasure both doors (gateway, retention job) run.
//!
//! * [`RetentionProcessor`], a partition processor on `config`: keeps each
//!   tenant's retention policy, legal holds in force and deferred erasures
//!   in [`Table::Compliance`](clarion_store::Table::Compliance) rows (a
//!   tenant's config events are on one partition: one writer per row), and
//!   schedules the tenant's retention tick as a timer, so the runtime's
//!   clock drives it (the manual clock in tests) and replay reproduces it;
//! * [`RetentionJob`], its effects: on a tick, or when a hold is released,
//!   it destroys the body keys that are due (skipping held days), shreds
//!   subscribers inactive past the policy, executes deferred erasures no
//!   hold covers any more, and appends `RetentionApplied` with counts;
//! * [`erasure::erase`]: destroys a subscriber's data key and appends
//!   `SubscriberErased` with the receipt.
//!
//! Keys are destroyed through [`Shredder`], which the crypto layer
//! (`clarion_runtime::personal`) implements.

pub mod erasure;
mod job;
mod processor;
pub mod rows;
mod shredder;

pub use erasure::{erase, subject_of, ErasureError, Receipt};
pub use job::RetentionJob;
pub use processor::{RetentionProcessor, RETENTION};
pub use shredder::{Shredder, ShredderError};
