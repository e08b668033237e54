//! Secure exports (issue #32): a tenant's notification history for a time
//! range and scope, read from the log (embedded or Kafka), with personal
//! fields opened and then masked by rules, a watermark (requester, time,
//! purpose) in every file and in a visible column, a manifest signed with
//! the tenant's Ed25519 export key, and optional age encryption.
//!
//! One row per send attempt (a notification that never reached a send has
//! one row with empty attempt columns): the address, subject and body are
//! per attempt, and an auditor asks "what was sent to whom", which is an
//! attempt. See docs/export.md.

pub mod audit;
pub mod collect;
pub mod encode;
pub mod encrypt;
pub mod export;
pub mod manifest;
pub mod mask;
pub mod opener;
pub mod request;
pub mod row;
pub mod signing;
pub mod verify;
pub mod watermark;

pub use export::{run_export, ExportContext, ExportOutcome};
pub use manifest::Manifest;
pub use mask::{MaskKind, MaskRules};
pub use opener::OpenPersonal;
pub use request::{ExportRequest, Format};
pub use verify::{verify_dir, Verified};

/// What can go wrong making or checking an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The request is wrong; the message names the field.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("event log: {0}")]
    Log(#[from] clarion_log::LogError),
    #[error("log record {0} does not decode")]
    Poison(String),
    #[error("opening personal data: {0}")]
    Personal(String),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("encoding: {0}")]
    Encode(String),
    #[error("keyring: {0}")]
    Key(String),
}

impl ExportError {
    pub fn invalid(field: &str, problem: impl Into<String>) -> ExportError {
        ExportError::Invalid {
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the caller's input is at fault (a 4xx).
    pub fn is_user_error(&self) -> bool {
        matches!(self, ExportError::Invalid { .. })
    }
}
