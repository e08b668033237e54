//! `manifest.json`: what an export holds, signed (`manifest.sig`: the
//! base64 Ed25519 signature of manifest.json's exact bytes).

use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub export_id: String,
    pub tenant: String,
    pub requester: String,
    pub purpose: String,
    /// Range, subscriber, workflow and masking rules.
    pub scope: serde_json::Value,
    /// jsonl | parquet
    pub format: String,
    /// RFC 3339.
    pub created_at: String,
    /// The age recipient the files are encrypted to (`null`: plain files).
    pub encrypted_to: Option<String>,
    pub files: Vec<FileEntry>,
    /// Rows in all files.
    pub rows: u64,
    pub signing: SigningInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the export directory.
    pub name: String,
    /// Hex SHA-256 of the bytes on disk.
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigningInfo {
    pub algorithm: String,
    /// Base64 Ed25519 public key (`clarion export public-key --tenant T`).
    pub public_key: String,
    /// The master key the tenant's export key derives from.
    pub master_key_id: String,
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
