//! The watermark: who exported, when and why, in every file (JSON Lines:
//! a header line; Parquet: key-value metadata) and in every row's visible
//! `watermark` column, so a copied row or file still says where it came from.

use serde::{Deserialize, Serialize};

/// The Parquet key-value metadata key (and the JSON Lines header's key).
pub const METADATA_KEY: &str = "clarion.export.watermark";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub export_id: String,
    pub tenant: String,
    pub requester: String,
    pub purpose: String,
    /// RFC 3339 (UTC).
    pub created_at: String,
}

impl Watermark {
    /// The visible column's text.
    pub fn text(&self) -> String {
        format!(
            "Clarion export {} of tenant {} for {} at {}: {}",
            self.export_id, self.tenant, self.requester, self.created_at, self.purpose
        )
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }
}

/// A time in ms as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
