//! SLA tracking (issue #31, docs/slas.md): the `sla` role.
//!
//! Two halves, as the alerts role: a tenant's sends are spread over every
//! recipient partition, while an SLA is judged whole.
//!
//! * [`SlaCounter`], a partition processor over `dispatch` and
//!   `deliveries`, notes each dispatch request an SLA is about (a pending
//!   row per attempt) and, at its outcome, counts it met or missed into
//!   minute rows of its own partition (one writer per row);
//! * [`SlaEvaluator`], one task per deployment, sums a window's rows per
//!   SLA, adds the sends still in flight (late ones count as missed at
//!   once: a predicted breach), judges them ([`clarion_domain::sla`]) and,
//!   when an SLA breaks, appends `SlaBreached` (which demotes the provider
//!   with the most misses in the tenant's route) and tells the alert sinks;
//!   `SlaRecovered` when it holds again.
//!
//! Store layout (`Table::Alerts`, beside the anomaly rows): per tenant
//! `sla-pending` (ck attempt id), `sla-c/<sla id>` (ck minute, partition,
//! provider), `sla-state` (ck sla id); the evaluator's outbox under the
//! system tenant (`sla-outbox`).

mod counter;
mod evaluator;
pub mod rows;

pub use counter::{SlaCounter, SLA};
pub use evaluator::{pending, status, SlaEvaluator, SlaEvaluatorConfig, SlaStatus, RUNBOOK};
