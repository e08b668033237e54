//! Rows to Arrow record batches to Parquet bytes, one file per table,
//! tenant and UTC date.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::rows::{Row, Values};
use crate::schema::{Kind, WarehouseTable};

/// Where a group of rows goes: `<table>/tenant=<t>/date=<yyyy-mm-dd>/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Group {
    pub table: WarehouseTable,
    pub tenant: String,
    pub date: String,
}

impl Group {
    pub fn of(row: &Row) -> Group {
        Group {
            table: row.table(),
            tenant: row.tenant.clone(),
            date: utc_date(row.at_ms),
        }
    }

    /// The directory of the group's files, relative to the warehouse root.
    pub fn dir(&self) -> String {
        format!(
            "{}/tenant={}/date={}",
            self.table,
            encode_segment(&self.tenant),
            self.date
        )
    }
}

/// `yyyy-mm-dd` of a time in ms (UTC).
pub fn utc_date(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// A tenant id as one path segment: ids are plain already, but a character
/// that would change the layout (`/`, `=`, `%`, a leading `.`) is escaped.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Splits rows into their groups, keeping their order within each.
pub fn group(rows: Vec<Row>) -> BTreeMap<Group, Vec<Row>> {
    let mut out: BTreeMap<Group, Vec<Row>> = BTreeMap::new();
    for r in rows {
        out.entry(Group::of(&r)).or_default().push(r);
    }
    out
}

/// One group's rows as a Parquet file (Snappy-compressed).
pub fn parquet_bytes(
    table: WarehouseTable,
    rows: &[Row],
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let batch = record_batch(table, rows)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by("clarion warehouse exporter".into())
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

/// A column being built.
enum Builder {
    Str(StringBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

/// A value of a row for one column.
enum Cell<'a> {
    Str(Option<&'a str>),
    I32(i32),
    I64(Option<i64>),
}

impl Builder {
    fn new(kind: Kind, n: usize) -> Builder {
        match kind {
            Kind::String => Builder::Str(StringBuilder::with_capacity(n, n * 16)),
            Kind::Int32 => Builder::I32(Int32Builder::with_capacity(n)),
            Kind::Int64 => Builder::I64(Int64Builder::with_capacity(n)),
            Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(n)),
            Kind::TimestampMs => {
                Builder::Ts(TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"))
            }
        }
    }

    fn push(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Builder::Str(b), Cell::Str(v)) => b.append_option(v),
            (Builder::I32(b), Cell::I32(v)) => b.append_value(v),
            (Builder::I64(b), Cell::I64(v)) => b.append_option(v),
            (Builder::Ts(b), Cell::I64(v)) => b.append_option(v),
            _ => unreachable!("cells follow the schema (a test holds them to it)"),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::I32(mut b) => Arc::new(b.finish()),
            Builder::I64(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Ts(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The row's values in the table's column order.
fn cells(row: &Row) -> Vec<Cell<'_>> {
    fn s(v: &str) -> Cell<'_> {
        Cell::Str(Some(v))
    }
    let t = |v: i64| Cell::I64(Some(v));
    match &row.values {
        Values::Notification(n) => vec![
            s(&n.notification_id),
            s(&n.workflow_id),
            Cell::I32(n.workflow_version),
            s(&n.subscriber_id),
            s(&n.status),
            s(&n.outcome),
            s(&n.reason),
            s(&n.last_step),
            s(&n.channel_path),
            Cell::I32(n.attempts),
            Cell::I32(n.sent_attempts),
            Cell::I64(n.first_attempt_at),
            Cell::I64(n.last_attempt_at),
            t(n.ended_at),
        ],
        Values::Message(m) => vec![
            s(&m.notification_id),
            s(&m.attempt_id),
            s(&m.workflow_id),
            s(&m.step),
            s(&m.subscriber_id),
            s(&m.channel),
            s(&m.provider),
            s(&m.locale),
            s(&m.outcome),
            Cell::Str(m.error_class.as_deref()),
            Cell::Str(m.error.as_deref()),
            t(m.requested_at),
            t(m.outcome_at),
            t(m.latency_ms),
            s(&m.template_id),
            Cell::I32(m.template_version),
            Cell::Str(m.recipient.as_deref()),
        ],
        Values::Engagement(e) => vec![
            s(&e.notification_id),
            s(&e.attempt_id),
            s(&e.kind),
            s(&e.source),
            t(e.occurred_at),
        ],
    }
}

/// The rows (all of `table`) as one record batch of the table's schema.
pub fn record_batch(
    table: WarehouseTable,
    rows: &[Row],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let columns = table.columns();
    let mut builders: Vec<Builder> = columns
        .iter()
        .map(|c| Builder::new(c.kind, rows.len()))
        .collect();
    for row in rows {
        debug_assert_eq!(row.table(), table);
        for (b, cell) in builders.iter_mut().zip(cells(row)) {
            b.push(cell);
        }
    }
    RecordBatch::try_new(
        table.schema(),
        builders.into_iter().map(Builder::finish).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::EngagementRow;

    #[test]
    fn paths_partition_by_table_tenant_and_utc_date() {
        let row = Row {
            tenant: "acme".into(),
            // 2026-12-07T23:59:59.999Z
            at_ms: 1_796_687_999_999,
            values: Values::Engagement(EngagementRow {
                notification_id: "n".into(),
                attempt_id: "a".into(),
                kind: "opened".into(),
                source: "pixel".into(),
                occurred_at: 1_796_687_999_999,
            }),
        };
        assert_eq!(
            Group::of(&row).dir(),
            "engagement/tenant=acme/date=2026-12-07"
        );
        assert_eq!(encode_segment("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(encode_segment(".x"), "%2Ex");
    }

    #[test]
    fn every_table_encodes_its_schema() {
        let row = Row {
            tenant: "t".into(),
            at_ms: 0,
            values: Values::Engagement(EngagementRow {
                notification_id: "n".into(),
                attempt_id: "a".into(),
                kind: "clicked".into(),
                source: "click".into(),
                occurred_at: 5,
            }),
        };
        let bytes = parquet_bytes(WarehouseTable::Engagement, &[row]).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .unwrap();
        assert_eq!(
            reader.schema().fields().len(),
            WarehouseTable::Engagement.columns().len()
        );
        let batches: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
        assert_eq!(batches[0].num_rows(), 1);
        assert_eq!(batches[0].schema(), WarehouseTable::Engagement.schema());
    }
}
