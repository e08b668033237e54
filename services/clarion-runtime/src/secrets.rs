//! Secrets at rest: AES-256-GCM under the deployment's master keyring.
//!
//! What Clarion stores of a secret (a tenant's webhook signing secret, the
//! tracking key) is sealed: `"clk1" | len(key id) | key id | nonce (12) |
//! ciphertext and tag`. The key id names the master key that sealed it, so
//! the operator can add a new master key, make it active, and keep the old
//! one in the ring until every sealed value was re-sealed (the tracking key
//! is re-sealed at start; webhook secrets at their next rotation). The
//! associated data binds a sealed value to its purpose (`webhook-secret/
//! <tenant>`, `tracking-key`), so a value cannot be moved to another tenant's
//! row and still open.
//!
//! Master keys come from configuration (`secrets.keys`: id → base64 of 32
//! bytes, `file:PATH` or `env:VAR`). With none configured, `clarion serve`
//! generates a development key in the data directory (and says so loudly);
//! a deployment of several processes must configure one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"clk1";
/// File in the data directory holding the generated development key.
pub const DEV_KEY_FILE: &str = "master.key";
const DEV_KEY_ID: &str = "dev";

/// `secrets` configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Master key that seals new values (default: the only key, or the
    /// greatest id).
    pub active_key_id: String,
    /// Master keys by id: base64 of 32 bytes, `file:PATH` (the file holds the
    /// base64) or `env:VAR`. Empty: a generated development key in the data
    /// directory.
    pub keys: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("secrets.keys.{id}: {reason}")]
    BadKey { id: String, reason: String },
    #[error("secrets.active-key-id {0:?} is not one of secrets.keys")]
    NoActive(String),
    #[error("development master key {path}: {reason}")]
    DevKey { path: String, reason: String },
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed with master key {0:?}, which is not in the keyring (secrets.keys)")]
    UnknownKey(String),
    #[error("sealed value does not open (wrong master key, wrong purpose or tampered)")]
    Tampered,
}

/// The master keys. Cheap to share (`Arc`).
pub struct Keyring {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
    /// Per master key, the key of its lookup hashes (derived, so a lookup
    /// hash never reveals the master key and the two uses never mix).
    hash_keys: HashMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn decode_key(id: &str, text: &str) -> Result<[u8; 32], KeyringError> {
    let bad = |reason: String| KeyringError::BadKey {
        id: id.to_string(),
        reason,
    };
    let material = if let Some(path) = text.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|e| bad(format!("reading {path}: {e}")))?
    } else if let Some(var) = text.strip_prefix("env:") {
        std::env::var(var).map_err(|e| bad(format!("environment variable {var}: {e}")))?
    } else {
        text.to_string()
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(material.trim())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| bad(format!("must be 32 bytes (base64), got {}", bytes.len())))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl Keyring {
    /// A keyring of the given keys; `active` seals.
    pub fn new(active: &str, keys: &[(&str, [u8; 32])]) -> Result<Keyring, KeyringError> {
        let hash_keys = keys
            .iter()
            .map(|(id, k)| {
                (
                    id.to_string(),
                    hmac_sha256(k, &[b"clarion lookup-hash key v1"]),
                )
            })
            .collect();
        let keys: HashMap<String, Aes256Gcm> = keys
            .iter()
            .map(|(id, k)| (id.to_string(), Aes256Gcm::new(k.into())))
            .collect();
        if !keys.contains_key(active) {
            return Err(KeyringError::NoActive(active.to_string()));
        }
        Ok(Keyring {
            active: active.to_string(),
            keys,
            hash_keys,
        })
    }

    /// The configured keyring, or the development key kept in `data_dir`
    /// (generated on first use) when none is configured.
    pub fn load(cfg: &SecretsConfig, data_dir: &Path) -> Result<Keyring, KeyringError> {
        if cfg.keys.is_empty() {
            let key = dev_key(data_dir)?;
            return Keyring::new(DEV_KEY_ID, &[(DEV_KEY_ID, key)]);
        }
        let mut keys = Vec::with_capacity(cfg.keys.len());
        for (id, text) in &cfg.keys {
            if id.is_empty() || id.len() > 64 {
                return Err(KeyringError::BadKey {
                    id: id.clone(),
                    reason: "key ids are 1-64 bytes".into(),
                });
            }
            keys.push((id.as_str(), decode_key(id, text)?));
        }
        let active = if cfg.active_key_id.is_empty() {
            cfg.keys.keys().next_back().cloned().unwrap_or_default()
        } else {
            cfg.active_key_id.clone()
        };
        Keyring::new(&active, &keys)
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    fn aad(key_id: &str, purpose: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(8 + key_id.len() + purpose.len());
        aad.extend_from_slice(MAGIC);
        aad.extend_from_slice(key_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(purpose.as_bytes());
        aad
    }

    /// Seals `plaintext` for `purpose` under the active key (fresh nonce).
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let cipher = &self.keys[&self.active];
        let nonce: [u8; 12] = rand::random();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &Keyring::aad(&self.active, purpose),
                },
            )
            .expect("AES-GCM encrypts any length a secret has");
        let mut out = Vec::with_capacity(5 + self.active.len() + 12 + ct.len());
        out.extend_from_slice(MAGIC);
        out.push(self.active.len() as u8);
        out.extend_from_slice(self.active.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// A keyed hash of `data` for `purpose` under master key `key_id`
    /// (HMAC-SHA256 with a key derived from it): lets a store find a value
    /// it keeps only sealed (a device token) without holding it in clear.
    /// `None` when the ring has no such key.
    pub fn lookup_hash(&self, key_id: &str, purpose: &str, data: &[u8]) -> Option<[u8; 32]> {
        let k = self.hash_keys.get(key_id)?;
        Some(hmac_sha256(k, &[purpose.as_bytes(), &[0], data]))
    }

    /// `data`'s lookup hash under every key of the ring, the active key's
    /// first: a value hashed before a key rotation is still found.
    pub fn lookup_hashes(&self, purpose: &str, data: &[u8]) -> Vec<(String, [u8; 32])> {
        let mut ids: Vec<&String> = self.hash_keys.keys().collect();
        ids.sort_by_key(|id| (id.as_str() != self.active, id.as_str()));
        ids.into_iter()
            .filter_map(|id| Some((id.clone(), self.lookup_hash(id, purpose, data)?)))
            .collect()
    }

    /// The master key id a sealed value names, if it is one.
    pub fn sealed_key_id(sealed: &[u8]) -> Option<&str> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let (&n, rest) = rest.split_first()?;
        std::str::from_utf8(rest.get(..n as usize)?).ok()
    }

    /// Opens a value sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let id = Keyring::sealed_key_id(sealed).ok_or(KeyringError::Malformed)?;
        let body = &sealed[MAGIC.len() + 1 + id.len()..];
        if body.len() < 12 + 16 {
            return Err(KeyringError::Malformed);
        }
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| KeyringError::UnknownKey(id.to_string()))?;
        let (nonce, ct) = body.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &Keyring::aad(id, purpose),
                },
            )
            .map_err(|_| KeyringError::Tampered)
    }
}

/// The development key in `data_dir`, created (mode 0600) if missing.
fn dev_key(data_dir: &Path) -> Result<[u8; 32], KeyringError> {
    let path = data_dir.join(DEV_KEY_FILE);
    let err = |reason: String| KeyringError::DevKey {
        path: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
        let key: [u8; 32] = rand::random();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(&path) {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(
                    base64::engine::general_purpose::STANDARD
                        .encode(key)
                        .as_bytes(),
                )
                .map_err(|e| err(e.to_string()))?;
                tracing::warn!(
                    path = %path.display(),
                    "NO MASTER KEY CONFIGURED (secrets.keys): generated a development master key \
                     in the data directory. Secrets at rest are sealed with it, and anyone who can \
                     read the data directory can open them. Configure secrets.keys for production."
                );
                return Ok(key);
            }
            // Another process of this data directory created it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e.to_string())),
        }
    } else {
        tracing::warn!(
            path = %path.display(),
            "no master key configured (secrets.keys): using the development master key of the \
             data directory; configure secrets.keys for production"
        );
    }
    decode_key(
        DEV_KEY_ID,
        &std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?,
    )
    .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_purpose() {
        let ring = Keyring::new("k1", &[("k1", [7; 32])]).unwrap();
        let sealed = ring.seal("webhook-secret/acme", b"whsec_abc");
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "not in clear"
        );
        assert_eq!(
            ring.open("webhook-secret/acme", &sealed).unwrap(),
            b"whsec_abc"
        );
        assert!(matches!(
            ring.open("webhook-secret/globex", &sealed),
            Err(KeyringError::Tampered)
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(ring.open("webhook-secret/acme", &bad).is_err());
        assert_ne!(
            sealed,
            ring.seal("webhook-secret/acme", b"whsec_abc"),
            "fresh nonce"
        );
        let other = Keyring::new("k1", &[("k1", [8; 32])]).unwrap();
        assert!(other.open("webhook-secret/acme", &sealed).is_err());
    }

    #[test]
    fn the_master_key_rotates_with_old_values_still_opening() {
        let old = Keyring::new("k1", &[("k1", [1; 32])]).unwrap();
        let sealed = old.seal("tracking-key", b"t");
        let both = Keyring::new("k2", &[("k1", [1; 32]), ("k2", [2; 32])]).unwrap();
        assert_eq!(both.open("tracking-key", &sealed).unwrap(), b"t");
        let resealed = both.seal("tracking-key", b"t");
        assert_eq!(Keyring::sealed_key_id(&resealed), Some("k2"));
        assert!(matches!(
            old.open("tracking-key", &resealed),
            Err(KeyringError::UnknownKey(k)) if k == "k2"
        ));
    }

    #[test]
    fn keys_load_from_config_or_a_persisted_dev_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keyring::load(&SecretsConfig::default(), dir.path()).unwrap();
        let b = Keyring::load(&SecretsConfig::default(), dir.path()).unwrap();
        let sealed = a.seal("p", b"x");
        assert_eq!(b.open("p", &sealed).unwrap(), b"x", "the dev key persists");
        let f = dir.path().join("k");
        std::fs::write(
            &f,
            base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
        )
        .unwrap();
        let cfg = SecretsConfig {
            active_key_id: String::new(),
            keys: [
                (
                    "a".to_string(),
                    base64::engine::general_purpose::STANDARD.encode([4u8; 32]),
                ),
                ("b".to_string(), format!("file:{}", f.display())),
            ]
            .into(),
        };
        assert_eq!(
            Keyring::load(&cfg, dir.path()).unwrap().active_key_id(),
            "b"
        );
        let short = SecretsConfig {
            keys: [("a".to_string(), "AAAA".to_string())].into(),
            ..SecretsConfig::default()
        };
        let e = Keyring::load(&short, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("secrets.keys.a") && e.contains("32 bytes"),
            "{e}"
        );
    }
}
