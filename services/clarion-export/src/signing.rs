//! The tenant's export keys, derived from the deployment's master keyring:
//! an Ed25519 signing key (signs `manifest.json`) and the key of the `hash`
//! mask. Nothing is stored: the same master key and tenant give the same
//! keys on every node, and another tenant's keys are unrelated.
//!
//! Derivation: the keyring's keyed hash (HMAC-SHA-256 under a key derived
//! from the active master key) of the tenant id under the purpose
//! `clarion-export/v1` is the HKDF-SHA-256 input key material; HKDF-expand
//! with `signing/<tenant>` gives the Ed25519 seed, `mask-hash/<tenant>` the
//! hash key. Rotating the active master key rotates the export keys: the
//! manifest names the master key id and carries the public key.

use base64::Engine;
use clarion_dispatch::secrets::Keyring;
use clarion_domain::TenantId;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::ExportError;

const PURPOSE: &str = "clarion-export/v1";
const SALT: &[u8] = b"clarion export keys v1";

/// One tenant's export keys.
pub struct TenantKeys {
    pub signing: SigningKey,
    pub hash_key: [u8; 32],
    /// The master key they derive from.
    pub key_id: String,
}

impl TenantKeys {
    /// The keys of `tenant` under the keyring's active master key.
    pub fn derive(keyring: &Keyring, tenant: &TenantId) -> Result<TenantKeys, ExportError> {
        let key_id = keyring.active_key_id().to_string();
        let ikm = keyring
            .lookup_hash(&key_id, PURPOSE, tenant.as_str().as_bytes())
            .ok_or_else(|| ExportError::Key(format!("no master key {key_id:?}")))?;
        let hk = Hkdf::<Sha256>::new(Some(SALT), &ikm);
        let mut seed = [0u8; 32];
        let mut hash_key = [0u8; 32];
        let info = |what: &str| format!("{what}/{}", tenant.as_str());
        hk.expand(info("signing").as_bytes(), &mut seed)
            .expect("32 bytes is a valid HKDF length");
        hk.expand(info("mask-hash").as_bytes(), &mut hash_key)
            .expect("32 bytes is a valid HKDF length");
        Ok(TenantKeys {
            signing: SigningKey::from_bytes(&seed),
            hash_key,
            key_id,
        })
    }

    /// The public key, base64 (what `clarion export public-key` prints).
    pub fn public_key_b64(&self) -> String {
        b64(self.signing.verifying_key().as_bytes())
    }

    /// The signature of `bytes`, base64.
    pub fn sign(&self, bytes: &[u8]) -> String {
        b64(&self.signing.sign(bytes).to_bytes())
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A base64 Ed25519 public key.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("public key is not base64: {e}"))?;
    let raw: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("public key must be 32 bytes, got {}", raw.len()))?;
    VerifyingKey::from_bytes(&raw).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Whether `sig_b64` is `key`'s signature of `bytes`.
pub fn verify(key: &VerifyingKey, bytes: &[u8], sig_b64: &str) -> Result<(), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let sig = Signature::from_slice(&raw).map_err(|e| format!("malformed signature: {e}"))?;
    key.verify(bytes, &sig)
        .map_err(|_| "the signature does not match (edited, or signed by another key)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(k: u8) -> Keyring {
        Keyring::new("k1", &[("k1", [k; 32])]).unwrap()
    }

    #[test]
    fn keys_are_per_tenant_and_per_master_key_and_stable() {
        let a = TenantId::parse("acme").unwrap();
        let g = TenantId::parse("globex").unwrap();
        let ka = TenantKeys::derive(&ring(1), &a).unwrap();
        assert_eq!(
            ka.public_key_b64(),
            TenantKeys::derive(&ring(1), &a).unwrap().public_key_b64()
        );
        assert_ne!(
            ka.public_key_b64(),
            TenantKeys::derive(&ring(1), &g).unwrap().public_key_b64()
        );
        assert_ne!(
            ka.public_key_b64(),
            TenantKeys::derive(&ring(2), &a).unwrap().public_key_b64()
        );
        let sig = ka.sign(b"manifest");
        let pk = parse_public_key(&ka.public_key_b64()).unwrap();
        verify(&pk, b"manifest", &sig).unwrap();
        assert!(verify(&pk, b"manifesT", &sig).is_err());
        let other =
            parse_public_key(&TenantKeys::derive(&ring(1), &g).unwrap().public_key_b64()).unwrap();
        assert!(verify(&other, b"manifest", &sig).is_err());
    }
}
