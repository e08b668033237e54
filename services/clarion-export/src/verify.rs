//! `clarion export verify DIR`: the signature of manifest.json, then every
//! file's SHA-256 and size; the first failure is named.

use std::path::Path;

use crate::manifest::{sha256_hex, Manifest, MANIFEST, SIGNATURE};
use crate::signing;

/// A verified export.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    /// Whether the signature was checked against a key given by the caller
    /// (otherwise against the key the manifest names: integrity only).
    pub key_pinned: bool,
}

/// Why an export does not verify: the file at fault and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct VerifyError {
    pub file: String,
    pub problem: String,
}

fn bad(file: &str, problem: impl Into<String>) -> VerifyError {
    VerifyError {
        file: file.to_string(),
        problem: problem.into(),
    }
}

/// Checks the export in `dir`; `public_key` (base64) pins the signer.
pub fn verify_dir(dir: &Path, public_key: Option<&str>) -> Result<Verified, VerifyError> {
    let raw = std::fs::read(dir.join(MANIFEST)).map_err(|e| bad(MANIFEST, e.to_string()))?;
    let sig =
        std::fs::read_to_string(dir.join(SIGNATURE)).map_err(|e| bad(SIGNATURE, e.to_string()))?;
    let manifest: Manifest =
        serde_json::from_slice(&raw).map_err(|e| bad(MANIFEST, format!("not a manifest: {e}")))?;
    let key_text = match public_key {
        Some(k) => {
            if k.trim() != manifest.signing.public_key {
                return Err(bad(
                    MANIFEST,
                    format!(
                        "signed by {}, not by the expected key {}",
                        manifest.signing.public_key,
                        k.trim()
                    ),
                ));
            }
            k
        }
        None => manifest.signing.public_key.as_str(),
    };
    let key = signing::parse_public_key(key_text).map_err(|e| bad(MANIFEST, e))?;
    signing::verify(&key, &raw, &sig).map_err(|e| bad(SIGNATURE, e))?;
    for f in &manifest.files {
        check_file(dir, &f.name, &f.sha256, f.bytes)?;
    }
    Ok(Verified {
        manifest,
        key_pinned: public_key.is_some(),
    })
}

fn check_file(dir: &Path, name: &str, sha256: &str, bytes: u64) -> Result<(), VerifyError> {
    // Names come from a signed manifest, yet stay inside the directory.
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(bad(name, "a file name outside the export directory"));
    }
    let data = std::fs::read(dir.join(name)).map_err(|e| bad(name, e.to_string()))?;
    if data.len() as u64 != bytes {
        return Err(bad(
            name,
            format!("{} bytes, the manifest says {bytes}", data.len()),
        ));
    }
    let got = sha256_hex(&data);
    if got != sha256 {
        return Err(bad(
            name,
            format!("SHA-256 {got}, the manifest says {sha256}"),
        ));
    }
    Ok(())
}
