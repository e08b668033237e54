//! Tenants and their API keys.
//!
//! An API key reads `ck_<tenant>_<secret>`: the tenant part lets the gateway
//! look the key up inside its tenant's partition (no cross-tenant index), and
//! only the SHA-256 of the secret is ever stored. Secrets are 192 random bits,
//! so a fast hash is the right tool here (a slow password hash buys nothing).

use sha2::{Digest, Sha256};

use crate::ids::TenantId;

pub const API_KEY_PREFIX: &str = "ck_";

/// A parsed, not yet verified, API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedKey {
    pub tenant: TenantId,
    pub secret_sha256: String,
}

impl PresentedKey {
    /// Parses `ck_<tenant>_<secret>`; `None` for anything else.
    pub fn parse(key: &str) -> Option<PresentedKey> {
        let rest = key.strip_prefix(API_KEY_PREFIX)?;
        let (tenant, secret) = rest.rsplit_once('_')?;
        if secret.len() < 32 || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(PresentedKey {
            tenant: TenantId::parse(tenant).ok()?,
            secret_sha256: sha256_hex(secret.as_bytes()),
        })
    }

    /// Public id of the key: a prefix of its hash, safe to log and to name as actor.
    pub fn key_id(&self) -> String {
        key_id_of(&self.secret_sha256)
    }
}

/// A freshly issued key: the plaintext (shown once) and what gets stored.
pub struct IssuedKey {
    pub plaintext: String,
    pub key_id: String,
    pub secret_sha256: String,
}

/// Issues a key from 24 random bytes supplied by the caller (the domain draws no randomness).
pub fn issue_api_key(tenant: &TenantId, random: [u8; 24]) -> IssuedKey {
    let secret = hex::encode(random);
    let secret_sha256 = sha256_hex(secret.as_bytes());
    IssuedKey {
        plaintext: format!("{API_KEY_PREFIX}{tenant}_{secret}"),
        key_id: key_id_of(&secret_sha256),
        secret_sha256,
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn key_id_of(secret_sha256: &str) -> String {
    format!("key_{}", &secret_sha256[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_back_to_their_hash() {
        let t = TenantId::parse("acme-co").unwrap();
        let k = issue_api_key(&t, [7; 24]);
        let p = PresentedKey::parse(&k.plaintext).unwrap();
        assert_eq!(p.tenant, t);
        assert_eq!(p.secret_sha256, k.secret_sha256);
        assert_eq!(p.key_id(), k.key_id);
        assert!(!k.secret_sha256.contains(&k.plaintext[10..]));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for k in [
            "",
            "ck_",
            "ck_acme_short",
            "xx_acme_0123456789abcdef0123456789abcdef",
            "ck_Bad_0123456789abcdef0123456789abcdef",
        ] {
            assert!(PresentedKey::parse(k).is_none(), "{k}");
        }
    }
}
