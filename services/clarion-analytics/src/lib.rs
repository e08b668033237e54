//! Delivery analytics (issue #30): a projection of every send's outcome,
//! engagement and latencies, per tenant, dimension (all, channel,
//! provider, workflow, template) and time bucket (minute and hour), with
//! provider health; the reads the gateway and console serve from it; and
//! the Prometheus series (bounded labels) the processor records.
//!
//! The processor ([`AnalyticsProcessor`], role `analytics`) reads the
//! recipient streams: `deliveries` (sent, delivered, failed: each carries
//! what the send was, so it is counted from its own event), `triggers`
//! (engagement, status callbacks) and `dispatch` (requests, joined with
//! outcomes logged before those carried their context). One recipient's
//! events are on one partition number of each, so one runner owns a
//! send's row, written at its first outcome; the topics are read in
//! separate batches, so the row accepts the facts of a send in any order
//! and counts each once (see [`attempt`] and [`processor`]).
//! docs/analytics.md describes the model.

pub mod attempt;
pub mod counts;
pub mod dimension;
pub mod histogram;
pub mod metrics;
pub mod processor;
pub mod query;
pub mod rows;
pub mod sends;

pub use counts::Counts;
pub use dimension::Dimension;
pub use histogram::Histogram;
pub use processor::{AnalyticsProcessor, Retention, ANALYTICS};
pub use query::{Granularity, Group, Point, ProviderHealth, Report, ReportQuery};
