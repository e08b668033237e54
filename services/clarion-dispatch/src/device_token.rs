//! Device tokens at rest: sealed by the master keyring and found by a keyed
//! hash, so no log record, store row, log line or metric holds one in clear.
//! The gateway seals a token as it arrives; only the dispatcher opens it,
//! for the provider call.

use clarion_proto::events as pb;

use crate::secrets::{Keyring, KeyringError};

/// What a token is sealed and hashed for: bound to its tenant, so a sealed
/// token copied into another tenant's event does not open.
pub fn purpose(tenant: &str) -> String {
    format!("device-token/{tenant}")
}

/// Seals a token and hashes it under the active master key.
pub fn seal(keyring: &Keyring, tenant: &str, token: &str) -> pb::SealedToken {
    let purpose = purpose(tenant);
    let key_id = keyring.active_key_id().to_string();
    let hash = keyring
        .lookup_hash(&key_id, &purpose, token.as_bytes())
        .expect("the active key is in the ring");
    pb::SealedToken {
        sealed: keyring.seal(&purpose, token.as_bytes()),
        hash: hash.to_vec(),
        hash_key_id: key_id,
        personal: String::new(),
    }
}

/// The keyed hash of a token, without the token: the caller seals the
/// token itself under the subscriber's data key (`personal`), so erasing the
/// subscriber shreds it (issue #32). The hash stays for lookups; it reveals
/// nothing without the master key and the token.
pub fn hashed(keyring: &Keyring, tenant: &str, token: &str) -> pb::SealedToken {
    let key_id = keyring.active_key_id().to_string();
    let hash = keyring
        .lookup_hash(&key_id, &purpose(tenant), token.as_bytes())
        .expect("the active key is in the ring");
    pb::SealedToken {
        sealed: Vec::new(),
        hash: hash.to_vec(),
        hash_key_id: key_id,
        personal: String::new(),
    }
}

/// Why a token cannot be given to a provider.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the device token was erased with the subscriber's data")]
    Erased,
    #[error("the device token was not opened (no personal-data keys here)")]
    Sealed,
    #[error("the token does not open: {0}")]
    Keyring(#[from] KeyringError),
}

/// The token in clear for the provider call. A token in the personal-data
/// form was opened with the dispatch (`Personal::open_event`); one sealed
/// before #32 by the master keyring is opened here (migration on read).
pub fn clear(
    keyring: &Keyring,
    tenant: &str,
    token: &pb::SealedToken,
) -> Result<String, TokenError> {
    if token.personal.is_empty() {
        return Ok(open(keyring, tenant, token)?);
    }
    if token.personal == clarion_domain::personal::ERASED {
        return Err(TokenError::Erased);
    }
    if clarion_domain::personal::is_sealed(&token.personal) {
        return Err(TokenError::Sealed);
    }
    Ok(token.personal.clone())
}

/// Opens a token sealed by the master keyring (before #32).
pub fn open(
    keyring: &Keyring,
    tenant: &str,
    token: &pb::SealedToken,
) -> Result<String, KeyringError> {
    let plain = keyring.open(&purpose(tenant), &token.sealed)?;
    String::from_utf8(plain).map_err(|_| KeyringError::Malformed)
}

/// The token's keyed hashes under every master key (the active one first):
/// what a lookup compares with the stored `hash` of the same `hash_key_id`.
pub fn hashes(keyring: &Keyring, tenant: &str, token: &str) -> Vec<(String, [u8; 32])> {
    keyring.lookup_hashes(&purpose(tenant), token.as_bytes())
}

/// Whether `token` is the one `stored` holds (by hash, under the key it was
/// hashed with).
pub fn matches(keyring: &Keyring, tenant: &str, token: &str, stored: &pb::SealedToken) -> bool {
    keyring
        .lookup_hash(&stored.hash_key_id, &purpose(tenant), token.as_bytes())
        .is_some_and(|h| h[..] == stored.hash[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_for_its_tenant_only_and_is_found_by_hash_after_rotation() {
        let old = Keyring::new("k1", &[("k1", [1; 32])]).unwrap();
        let t = seal(&old, "acme", "apns-token-123");
        assert!(!t.sealed.windows(14).any(|w| w == b"apns-token-123"));
        assert_eq!(open(&old, "acme", &t).unwrap(), "apns-token-123");
        assert!(open(&old, "globex", &t).is_err());
        // A new active key: the old token still opens and still matches.
        let ring = Keyring::new("k2", &[("k1", [1; 32]), ("k2", [2; 32])]).unwrap();
        assert_eq!(open(&ring, "acme", &t).unwrap(), "apns-token-123");
        assert!(matches(&ring, "acme", "apns-token-123", &t));
        assert!(!matches(&ring, "acme", "apns-token-124", &t));
        assert!(!matches(&ring, "globex", "apns-token-123", &t));
        let hs = hashes(&ring, "acme", "apns-token-123");
        assert_eq!(hs[0].0, "k2");
        assert!(hs.iter().any(|(id, h)| id == "k1" && h[..] == t.hash[..]));
    }
}
