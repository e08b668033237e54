//! Identifiers. Event, notification and attempt ids are 16 bytes derived by
//! hashing their cause, so a retried command or a replayed input produces the
//! same ids and every consumer can deduplicate on them. Notification ids also
//! lead with their creation time, so storage keyed by them stays in time order.

use sha2::{Digest, Sha256};
use std::fmt;

use crate::error::Violations;

/// A 16-byte identifier, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 16]);

impl Id {
    /// Hash of the given parts (length-prefixed, so `("ab","c") != ("a","bc")`).
    pub fn derive(parts: &[&[u8]]) -> Id {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Id(out)
    }

    /// A hash of `parts` behind a 48-bit big-endian millisecond timestamp
    /// (like UUIDv7): ids made later sort later, so the rows keyed by them
    /// (runs, histories, deliveries) are appended at the end of their
    /// B-trees instead of scattered over them, which keeps the pages a
    /// commit dirties few. Still deterministic given the same time.
    pub fn time_ordered(at_ms: i64, parts: &[&[u8]]) -> Id {
        let mut out = Id::derive(parts).0;
        out[..6].copy_from_slice(&(at_ms.max(0) as u64).to_be_bytes()[2..]);
        Id(out)
    }

    /// The millisecond timestamp of a [`Id::time_ordered`] id.
    pub fn time_ms(&self) -> i64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(b) as i64
    }

    /// The id of the `index`-th output caused by `self` under `label`.
    pub fn child(&self, label: &str, index: u32) -> Id {
        Id::derive(&[&self.0, label.as_bytes(), &index.to_le_bytes()])
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        <[u8; 16]>::try_from(b).ok().map(Id)
    }

    pub fn parse_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }

    /// Lowercase hex. Written into a buffer: `hex::encode` pushes one
    /// `char` at a time, which showed in the profile (every notification id,
    /// attempt id and event id of the hot path is made here).
    pub fn to_hex(&self) -> String {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).expect("32 bytes for 16");
        std::str::from_utf8(&buf)
            .expect("hex digits are ASCII")
            .to_owned()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.to_hex())
    }
}

/// A tenant id: 1-63 characters of `a-z`, `0-9` and `-`, not starting with `-`.
/// The restricted alphabet lets it be embedded in keys and API keys unambiguously.
/// Shared text: every event carries its tenant, and each event a processor
/// emits copies its cause's, so a copy is a reference count, not an
/// allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TenantId(std::sync::Arc<str>);

impl TenantId {
    pub fn parse(s: &str) -> Result<TenantId, String> {
        if s.is_empty() || s.len() > 63 {
            return Err("must be 1 to 63 characters long".into());
        }
        if s.starts_with('-') {
            return Err("must not start with '-'".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!(
                "character {c:?} is not allowed (use a-z, 0-9 and '-')"
            ));
        }
        Ok(TenantId(s.into()))
    }

    /// Like `parse`, reporting a problem against `field`.
    pub fn parse_field(s: &str, field: &str) -> Result<TenantId, Violations> {
        TenantId::parse(s).map_err(|e| Violations::single(field, e))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Partition key of a recipient's stream: everything about one subscriber of one
/// tenant lands on one partition, in order.
pub fn recipient_key(tenant: &TenantId, subscriber_id: &str) -> String {
    format!("{tenant}/{subscriber_id}")
}

/// Partition key of a tenant's configuration stream.
pub fn tenant_key(tenant: &TenantId) -> String {
    tenant.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_is_deterministic_and_length_prefixed() {
        assert_eq!(Id::derive(&[b"a", b"bc"]), Id::derive(&[b"a", b"bc"]));
        assert_ne!(Id::derive(&[b"ab", b"c"]), Id::derive(&[b"a", b"bc"]));
        let p = Id::derive(&[b"x"]);
        assert_ne!(p.child("out", 0), p.child("out", 1));
        assert_eq!(Id::parse_hex(&p.to_hex()), Some(p));
    }

    #[test]
    fn hex_is_lowercase_and_fixed_width() {
        let id = Id([
            0x01, 0xa2, 0x3e, 0x8f, 0x00, 0xff, 0x10, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0x7f,
        ]);
        assert_eq!(id.to_hex(), "01a23e8f00ff100b000000000000007f");
        assert_eq!(id.to_string(), id.to_hex());
    }

    #[test]
    fn tenant_ids_are_restricted() {
        assert!(TenantId::parse("acme-42").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("-x").is_err());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("a_b").is_err());
        assert!(TenantId::parse(&"a".repeat(64)).is_err());
    }
}
