//! Anomaly alerts (issue #30): the `alerts` role.
//!
//! Two halves, because a tenant's deliveries are spread over every
//! partition of the deliveries topic (they are keyed by recipient) while a
//! series must be judged whole:
//!
//! * [`AlertCounter`], a partition processor on `deliveries`, adds each
//!   provider outcome to its minute's counts, in rows of its own partition
//!   (one writer per row, exactly once with the partition's position);
//! * [`Evaluator`], one task per deployment, judges each minute once it has
//!   closed (its end plus `grace` on the clock): it sums the partitions'
//!   rows per series, runs the pure detector
//!   ([`clarion_domain::anomaly`]), and commits the series' state, its
//!   cursor and an outbox of the anomalies in one store write; then it
//!   appends the `AnomalyDetected` events to the log and tells the sinks,
//!   deleting each outbox row when done (a crash repeats, never loses).
//!
//! Store layout (`Table::Alerts`): counts `(tenant, "m/<minute ms>",
//! series 0x00 partition)`, series state `(tenant, "series", series)`;
//! and, under the system tenant as every processor's bookkeeping, the
//! tenants seen `(_system, "tenants", tenant)`, the evaluator's cursor and
//! its outbox `(_system, "outbox", event id)`.

mod counter;
mod evaluator;
mod keys;

pub use counter::{decode_counts, AlertCounter, ALERTS};
pub use evaluator::{Alert, AlertSink, Evaluator, EvaluatorConfig};
pub use keys::{count_key, counts_pk, minute_of, MINUTE_MS};
