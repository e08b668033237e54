//! Tamper evidence and auditor replay (issue #32, docs/audit.md).
//!
//! - [`chain`]: each tenant's records of a log partition are chained,
//!   `h_i = SHA-256(h_{i-1} || offset || record bytes)`, in offset order.
//! - [`notary`]: the one chainer per partition (the log has many
//!   producers, none of which can know the previous hash). It stores the
//!   links beside the log in the store's `audit_chain` table ([`rows`]) and
//!   signs a checkpoint (head hash, offset) every N records or T seconds
//!   ([`signing`]).
//! - [`verify`]: walks the log, recomputes every chain, compares it with
//!   the stored links and checkpoint signatures, and names the first break.
//! - [`replay`]: rebuilds from the log alone what was known at a time: a
//!   subscriber's preferences, workflow versions, every notification's
//!   status.

pub mod chain;
pub mod envelope;
pub mod notary;
pub mod replay;
pub mod rows;
pub mod signing;
pub mod verify;
pub mod walk;

pub use notary::{Notary, NotaryConfig};
pub use signing::{AuditConfig, AuditKey};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Log(#[from] clarion_log::LogError),
    #[error(transparent)]
    Store(#[from] clarion_store::StoreError),
    /// The signing key could not be read or made (names the setting).
    #[error("audit.signing-key: {0}")]
    Key(String),
    /// A stored row of the chain does not parse.
    #[error("damaged audit_chain row {what}: {reason}")]
    Row { what: String, reason: String },
    /// Bad input of a command (names the argument).
    #[error("{field}: {reason}")]
    Input { field: &'static str, reason: String },
    /// The log did not deliver up to its end offset in time.
    #[error("reading {topic} partition {partition}: {reason}")]
    Walk {
        topic: String,
        partition: u32,
        reason: String,
    },
}

impl AuditError {
    pub fn input(field: &'static str, reason: impl Into<String>) -> AuditError {
        AuditError::Input {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = AuditError> = std::result::Result<T, E>;
