//! The warehouse exporter (issue #30): the log's notification, delivery and
//! engagement facts as Parquet tables (`notifications`, `messages`,
//! `engagement`) partitioned `tenant=<id>/date=<yyyy-mm-dd>/`, written
//! exactly once (see [`exporter`]). Columns: `schemas/warehouse/*.md`.

pub mod backfill;
pub mod destination;
pub mod encode;
pub mod exporter;
pub mod pii;
pub mod rows;
pub mod schema;
pub mod state;

pub use destination::Destination;
pub use exporter::{Exporter, ExporterConfig, INPUTS};
pub use schema::WarehouseTable;

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("store: {0}")]
    Store(#[from] clarion_store::StoreError),
    #[error("log: {0}")]
    Log(#[from] clarion_log::LogError),
    #[error("destination: {0}")]
    Destination(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("state: {0}")]
    State(#[from] serde_json::Error),
    #[error("{0}")]
    Config(String),
    /// Opening or hashing personal data failed (a key not readable): the
    /// exporter stops rather than write a clear value.
    #[error("personal data: {0}")]
    Personal(String),
    /// A record that does not decode: the exporter stops there.
    #[error("undecodable record: {0}")]
    Poison(String),
}
