//! The warehouse tables: their columns, as Arrow schemas. The same columns
//! are documented in `schemas/warehouse/<table>.md`; a test holds the two
//! together. `tenant` and `date` are not in the files: they are the
//! partition directories (`tenant=<id>/date=<yyyy-mm-dd>/`), as Hive-style
//! readers (DuckDB, Spark, Trino) expect.

use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// One of the exported tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarehouseTable {
    /// One row per notification, when its workflow run ends.
    Notifications,
    /// One row per outcome of a send attempt (sent, delivered, failed).
    Messages,
    /// One row per engagement (opened, clicked, read, acknowledged, ...).
    Engagement,
}

impl WarehouseTable {
    pub const ALL: [WarehouseTable; 3] = [
        WarehouseTable::Notifications,
        WarehouseTable::Messages,
        WarehouseTable::Engagement,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WarehouseTable::Notifications => "notifications",
            WarehouseTable::Messages => "messages",
            WarehouseTable::Engagement => "engagement",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            WarehouseTable::Notifications => NOTIFICATIONS,
            WarehouseTable::Messages => MESSAGES,
            WarehouseTable::Engagement => ENGAGEMENT,
        }
    }

    /// The Arrow schema of the table's files.
    pub fn schema(self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns()
                .iter()
                .map(|c| Field::new(c.name, c.kind.data_type(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }
}

impl fmt::Display for WarehouseTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A column's type, named as in `schemas/warehouse/*.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    Int32,
    Int64,
    Bool,
    /// Milliseconds since the Unix epoch, UTC.
    TimestampMs,
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::String => DataType::Utf8,
            Kind::Int32 => DataType::Int32,
            Kind::Int64 => DataType::Int64,
            Kind::Bool => DataType::Boolean,
            Kind::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        }
    }

    /// The name the docs use.
    pub fn doc_name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Int32 => "int32",
            Kind::Int64 => "int64",
            Kind::Bool => "bool",
            Kind::TimestampMs => "timestamp_ms_utc",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
    }
}

const NOTIFICATIONS: &[Column] = &[
    col("notification_id", Kind::String),
    col("workflow_id", Kind::String),
    col("workflow_version", Kind::Int32),
    col("subscriber_id", Kind::String),
    col("status", Kind::String),
    col("outcome", Kind::String),
    col("reason", Kind::String),
    col("last_step", Kind::String),
    col("channel_path", Kind::String),
    col("attempts", Kind::Int32),
    col("sent_attempts", Kind::Int32),
    opt("first_attempt_at", Kind::TimestampMs),
    opt("last_attempt_at", Kind::TimestampMs),
    col("ended_at", Kind::TimestampMs),
];

const MESSAGES: &[Column] = &[
    col("notification_id", Kind::String),
    col("attempt_id", Kind::String),
    col("workflow_id", Kind::String),
    col("step", Kind::String),
    col("subscriber_id", Kind::String),
    col("channel", Kind::String),
    col("provider", Kind::String),
    col("locale", Kind::String),
    col("outcome", Kind::String),
    opt("error_class", Kind::String),
    opt("error", Kind::String),
    col("requested_at", Kind::TimestampMs),
    col("outcome_at", Kind::TimestampMs),
    col("latency_ms", Kind::Int64),
    // Added with the S3 and personal-data work (at the end, as the docs
    // promise readers).
    col("template_id", Kind::String),
    col("template_version", Kind::Int32),
    opt("recipient", Kind::String),
];

const ENGAGEMENT: &[Column] = &[
    col("notification_id", Kind::String),
    col("attempt_id", Kind::String),
    col("kind", Kind::String),
    col("source", Kind::String),
    col("occurred_at", Kind::TimestampMs),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `schemas/warehouse/<table>.md` documents each column in a row
    /// `| name | type | nullable | description |`, in file order.
    fn documented(table: WarehouseTable) -> Vec<(String, String, String)> {
        let path = format!(
            "{}/../../schemas/warehouse/{}.md",
            env!("CARGO_MANIFEST_DIR"),
            table.name()
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_string(),
                    cells[2].trim_matches('`').to_string(),
                    cells[3].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn the_docs_list_every_column_with_its_type() {
        for table in WarehouseTable::ALL {
            let want: Vec<(String, String, String)> = table
                .columns()
                .iter()
                .map(|c| {
                    let null = if c.nullable { "yes" } else { "no" };
                    (c.name.into(), c.kind.doc_name().into(), null.into())
                })
                .collect();
            assert_eq!(documented(table), want, "schemas/warehouse/{table}.md");
        }
    }
}
