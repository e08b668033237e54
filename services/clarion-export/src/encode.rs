//! Rows to file bytes: JSON Lines (a watermark header line, then one
//! object per row) or Parquet (Snappy; the watermark in the key-value
//! metadata as well as in the column).

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::request::Format;
use crate::row::{ExportRow, COLUMNS};
use crate::watermark::{Watermark, METADATA_KEY};
use crate::ExportError;

/// The rows as one file of `format`.
pub fn encode(format: Format, rows: &[ExportRow], wm: &Watermark) -> Result<Vec<u8>, ExportError> {
    match format {
        Format::Jsonl => jsonl(rows, wm),
        Format::Parquet => parquet(rows, wm),
    }
}

fn jsonl(rows: &[ExportRow], wm: &Watermark) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::with_capacity(256 * (rows.len() + 1));
    let header = serde_json::json!({ METADATA_KEY: wm });
    serde_json::to_writer(&mut out, &header).map_err(|e| ExportError::Encode(e.to_string()))?;
    out.push(b'\n');
    for r in rows {
        serde_json::to_writer(&mut out, r).map_err(|e| ExportError::Encode(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

fn is_time(column: &str) -> bool {
    column.ends_with("_at")
}

/// The Parquet schema: strings, and UTC millisecond timestamps for `*_at`.
pub fn schema() -> Schema {
    Schema::new(
        COLUMNS
            .iter()
            .map(|c| {
                if is_time(c) {
                    Field::new(
                        *c,
                        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                        true,
                    )
                } else {
                    Field::new(*c, DataType::Utf8, false)
                }
            })
            .collect::<Vec<_>>(),
    )
}

fn string_column(rows: &[ExportRow], get: impl Fn(&ExportRow) -> &str) -> ArrayRef {
    let mut b = StringBuilder::new();
    for r in rows {
        b.append_value(get(r));
    }
    Arc::new(b.finish())
}

fn time_column(rows: &[ExportRow], get: impl Fn(&ExportRow) -> Option<i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for r in rows {
        b.append_option(get(r));
    }
    Arc::new(b.finish())
}

fn columns(rows: &[ExportRow]) -> Vec<ArrayRef> {
    vec![
        string_column(rows, |r| &r.watermark),
        string_column(rows, |r| &r.notification_id),
        string_column(rows, |r| &r.attempt_id),
        string_column(rows, |r| &r.workflow_id),
        string_column(rows, |r| &r.subscriber_id),
        string_column(rows, |r| &r.channel),
        string_column(rows, |r| &r.provider),
        string_column(rows, |r| &r.to),
        string_column(rows, |r| &r.subject),
        string_column(rows, |r| &r.body),
        string_column(rows, |r| &r.status),
        string_column(rows, |r| &r.notification_status),
        time_column(rows, |r| r.triggered_at),
        time_column(rows, |r| r.requested_at),
        time_column(rows, |r| r.sent_at),
        time_column(rows, |r| r.delivered_at),
        string_column(rows, |r| &r.failed_reason),
        string_column(rows, |r| &r.engagement),
    ]
}

fn parquet(rows: &[ExportRow], wm: &Watermark) -> Result<Vec<u8>, ExportError> {
    let err = |e: &dyn std::fmt::Display| ExportError::Encode(e.to_string());
    let schema = Arc::new(schema());
    let batch = RecordBatch::try_new(schema.clone(), columns(rows)).map_err(|e| err(&e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            METADATA_KEY.to_string(),
            wm.json(),
        )]))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(|e| err(&e))?;
    w.write(&batch).map_err(|e| err(&e))?;
    w.close().map_err(|e| err(&e))?;
    Ok(out)
}
