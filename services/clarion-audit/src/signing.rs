//! The notary's Ed25519 key and the checkpoint statement it signs.
//!
//! The key is `audit.signing-key` (`file:PATH`, `env:VAR` or the base64 of
//! a 32-byte seed), or, when unset, a key generated once in the data
//! directory (`audit.key`, like the development master key). An auditor
//! verifies with the public key alone (`clarion audit public-key`), which
//! should be taken out of band and kept apart from the data it checks.

use std::path::Path;

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::chain::Hash;
use crate::{AuditError, Result};

/// The generated key's file in the data directory.
pub const KEY_FILE: &str = "audit.key";

/// `[audit]` of the configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The notary's signing key: `file:PATH`, `env:VAR` or base64 of a
    /// 32-byte Ed25519 seed. Empty: generated in `<data-dir>/audit.key`.
    pub signing_key: String,
    /// A tenant's chain on a partition gets a signed checkpoint after this
    /// many records ...
    pub checkpoint_every: u64,
    /// ... or this long (ms) after its first unsigned record.
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key: String::new(),
            checkpoint_every: 10_000,
            checkpoint_interval_ms: 60_000,
        }
    }
}

impl AuditConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.checkpoint_every == 0 {
            return Err("audit.checkpoint-every must be at least 1".into());
        }
        if self.checkpoint_interval_ms == 0 {
            return Err("audit.checkpoint-interval-ms must be at least 1".into());
        }
        Ok(())
    }
}

/// The notary's signing key.
pub struct AuditKey {
    key: SigningKey,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl AuditKey {
    /// The configured key, or the one generated in `data_dir`.
    pub fn load(cfg: &AuditConfig, data_dir: &Path) -> Result<AuditKey> {
        let text = if cfg.signing_key.is_empty() {
            generated(data_dir)?
        } else if let Some(path) = cfg.signing_key.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .map_err(|e| AuditError::Key(format!("reading {path}: {e}")))?
        } else if let Some(var) = cfg.signing_key.strip_prefix("env:") {
            std::env::var(var)
                .map_err(|e| AuditError::Key(format!("environment variable {var}: {e}")))?
        } else {
            cfg.signing_key.clone()
        };
        Self::from_base64(&text)
    }

    /// A key from the base64 of its 32-byte seed.
    pub fn from_base64(text: &str) -> Result<AuditKey> {
        let bytes = b64()
            .decode(text.trim())
            .map_err(|e| AuditError::Key(format!("not base64: {e}")))?;
        let seed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            AuditError::Key(format!("must be 32 bytes (base64), got {}", bytes.len()))
        })?;
        Ok(AuditKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A fresh random key (tests).
    pub fn generate() -> AuditKey {
        AuditKey {
            key: SigningKey::from_bytes(&rand::random()),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    pub fn sign(&self, statement: &Statement<'_>) -> [u8; 64] {
        self.key.sign(&statement.bytes()).to_bytes()
    }
}

/// A verifying key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses the base64 form `clarion audit public-key` prints.
    pub fn from_base64(text: &str) -> Result<PublicKey> {
        let bad = |r: String| AuditError::input("--public-key", r);
        let bytes = b64()
            .decode(text.trim())
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let raw = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| bad(format!("must be 32 bytes (base64), got {}", bytes.len())))?;
        VerifyingKey::from_bytes(&raw)
            .map(PublicKey)
            .map_err(|e| bad(format!("not an Ed25519 public key: {e}")))
    }

    pub fn to_base64(&self) -> String {
        b64().encode(self.0.as_bytes())
    }

    pub fn verify(&self, statement: &Statement<'_>, signature: &[u8; 64]) -> bool {
        self.0
            .verify(&statement.bytes(), &Signature::from_bytes(signature))
            .is_ok()
    }
}

/// What a checkpoint signs: the tenant's chain of `topic`/`partition` had
/// `head` at `offset`, at `at_ms`.
pub struct Statement<'a> {
    pub tenant: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub head: &'a Hash,
    pub at_ms: i64,
}

impl Statement<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(96 + self.tenant.len() + self.topic.len());
        m.extend_from_slice(b"clarion.audit.checkpoint.v1\0");
        m.extend_from_slice(self.tenant.as_bytes());
        m.push(0);
        m.extend_from_slice(self.topic.as_bytes());
        m.push(0);
        m.extend_from_slice(&self.partition.to_be_bytes());
        m.extend_from_slice(&self.offset.to_be_bytes());
        m.extend_from_slice(self.head);
        m.extend_from_slice(&self.at_ms.to_be_bytes());
        m
    }
}

/// The generated key of `data_dir` (made on first use, mode 0600).
fn generated(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(KEY_FILE);
    let err = |e: std::io::Error| AuditError::Key(format!("{}: {e}", path.display()));
    if path.exists() {
        return std::fs::read_to_string(&path).map_err(err);
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let seed: [u8; 32] = rand::random();
    let text = b64().encode(seed);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(text.as_bytes()).map_err(err)?;
            tracing::warn!(path = %path.display(), "no audit.signing-key configured: generated the notary's signing key in the data directory");
            Ok(text)
        }
        // Another process of this data directory made it meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(&path).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(head: &Hash) -> Statement<'_> {
        Statement {
            tenant: "acme",
            topic: "triggers",
            partition: 2,
            offset: 41,
            head,
            at_ms: 5,
        }
    }

    #[test]
    fn a_signature_checks_only_with_its_key_and_statement() {
        let key = AuditKey::generate();
        let head = [9u8; 32];
        let sig = key.sign(&statement(&head));
        let public = PublicKey::from_base64(&key.public().to_base64()).unwrap();
        assert!(public.verify(&statement(&head), &sig));
        assert!(!public.verify(&statement(&[8u8; 32]), &sig));
        assert!(!AuditKey::generate()
            .public()
            .verify(&statement(&head), &sig));
    }

    #[test]
    fn the_generated_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AuditConfig::default();
        let a = AuditKey::load(&cfg, dir.path()).unwrap().public();
        let b = AuditKey::load(&cfg, dir.path()).unwrap().public();
        assert_eq!(a, b);
        let bad = AuditConfig {
            signing_key: "bm90IDMyIGJ5dGVz".into(),
            ..cfg
        };
        let e = AuditKey::load(&bad, dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("audit.signing-key") && e.contains("32 bytes"),
            "{e}"
        );
        assert!(PublicKey::from_base64("!!").is_err());
    }
}
