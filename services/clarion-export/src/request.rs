//! What an export is asked for, and its validation (every bound named by
//! field: the CLI and the API share it).

use clarion_domain::{Actor, TenantId};
use serde::{Deserialize, Serialize};

use crate::mask::MaskRules;
use crate::ExportError;

/// Longest purpose accepted (it is repeated in every row's watermark).
pub const MAX_PURPOSE: usize = 500;
/// Longest requester, subscriber or workflow id.
pub const MAX_ID: usize = 256;
/// Longest time range one export covers: a year and a day.
pub const MAX_RANGE_MS: i64 = 366 * 24 * 3600 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Parquet,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    /// The data files' extension (before `.age`).
    pub fn extension(&self) -> &'static str {
        self.as_str()
    }
}

impl std::str::FromStr for Format {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Format, ExportError> {
        match s {
            "jsonl" | "json-lines" | "ndjson" => Ok(Format::Jsonl),
            "parquet" => Ok(Format::Parquet),
            _ => Err(ExportError::invalid(
                "format",
                format!("{s:?} is not jsonl or parquet"),
            )),
        }
    }
}

/// One export: the tenant's notifications triggered in `[from_ms,
/// until_ms)`, optionally of one subscriber and/or one workflow.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub tenant: TenantId,
    pub from_ms: i64,
    pub until_ms: i64,
    pub subscriber: Option<String>,
    pub workflow: Option<String>,
    pub format: Format,
    /// Who asked: the audit event's actor.
    pub actor: Actor,
    /// Its display name in the manifest and watermark (`operator:alice`).
    pub requester: String,
    pub purpose: String,
    pub masks: MaskRules,
    /// An age X25519 recipient (`age1...`): the files are encrypted to it.
    pub encrypt_to: Option<String>,
    /// Rows per data file (a new file past it).
    pub max_rows_per_file: usize,
}

impl ExportRequest {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<(), ExportError> {
        if self.from_ms >= self.until_ms {
            return Err(ExportError::invalid(
                "until",
                "must be after from (the range is [from, until))",
            ));
        }
        if self.until_ms - self.from_ms > MAX_RANGE_MS {
            return Err(ExportError::invalid(
                "until",
                "the range is longer than 366 days: split the export",
            ));
        }
        let purpose = self.purpose.trim();
        if purpose.is_empty() {
            return Err(ExportError::invalid(
                "purpose",
                "required: why the data is exported (it is in every file's watermark)",
            ));
        }
        if purpose.chars().count() > MAX_PURPOSE {
            return Err(ExportError::invalid(
                "purpose",
                format!("longer than {MAX_PURPOSE} characters"),
            ));
        }
        check_id("requester", &self.requester, true)?;
        if let Some(s) = &self.subscriber {
            check_id("subscriber", s, true)?;
        }
        if let Some(w) = &self.workflow {
            check_id("workflow", w, true)?;
        }
        if let Some(r) = &self.encrypt_to {
            crate::encrypt::parse_recipient(r)?;
        }
        if self.max_rows_per_file == 0 {
            return Err(ExportError::invalid("max_rows_per_file", "must be > 0"));
        }
        Ok(())
    }

    /// The scope as JSON (manifest and audit event).
    pub fn scope_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tenant": self.tenant.as_str(),
            "from": crate::watermark::rfc3339(self.from_ms),
            "until": crate::watermark::rfc3339(self.until_ms),
            "from_ms": self.from_ms,
            "until_ms": self.until_ms,
            "subscriber_id": self.subscriber,
            "workflow_id": self.workflow,
            "masks": self.masks.to_json(),
        })
    }
}

fn check_id(field: &str, v: &str, required: bool) -> Result<(), ExportError> {
    if required && v.trim().is_empty() {
        return Err(ExportError::invalid(field, "must not be empty"));
    }
    if v.len() > MAX_ID {
        return Err(ExportError::invalid(
            field,
            format!("longer than {MAX_ID} bytes"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ExportError::invalid(field, "holds a control character"));
    }
    Ok(())
}

/// A time given as RFC 3339 or a date (midnight UTC), in ms.
pub fn parse_time(field: &str, s: &str) -> Result<i64, ExportError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        return Ok(t.timestamp_millis());
    }
    Err(ExportError::invalid(
        field,
        format!("{s:?} is not a time (RFC 3339, e.g. 2026-12-07T00:00:00Z, or a date 2026-12-07)"),
    ))
}
