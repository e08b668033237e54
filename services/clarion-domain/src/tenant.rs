//! Tenants and their API keys.
//!
//! An API key reads `ck_<tenant>_<secret>`: the tenant part lets the gateway
//! look the key up inside its tenant's partition (no cross-tenant index), and
//! only the SHA-256 of the secret is ever stored. Secrets are 192 random bits,
//! so a fast hash is the right tool here (a slow password hash buys nothing).

use clarion_proto::events as pb;
use sha2::{Digest, Sha256};

use crate::error::Violations;
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

/// What a key may do. Each API method requires exactly one scope (the
/// gateway's method table); scopes do not imply one another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Configuration: templates, workflows, limits, API keys, dead-letter actions.
    Admin,
    /// Trigger, cancel and report engagement.
    Trigger,
    /// Read notifications, workflows, subscribers, limits, dead letters.
    Read,
    /// Write subscriber contact data and preferences.
    Preferences,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Admin,
        Scope::Trigger,
        Scope::Read,
        Scope::Preferences,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Trigger => "trigger",
            Scope::Read => "read",
            Scope::Preferences => "preferences",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b1111);

    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names, in [`Scope::ALL`] order.
    pub fn names(self) -> Vec<String> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(|s| s.as_str().to_string())
            .collect()
    }

    /// The scopes of a stored key. A key created before scopes existed has
    /// none recorded and keeps every scope, so existing integrations go on
    /// working; a name this build does not know grants nothing.
    pub fn from_stored(names: &[String]) -> Scopes {
        if names.is_empty() {
            return Scopes::ALL;
        }
        Scopes::of(
            &names
                .iter()
                .filter_map(|n| Scope::parse(n))
                .collect::<Vec<_>>(),
        )
    }
}

/// What a stored key grants, as the gateway checks it on every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: String,
    pub scopes: Scopes,
    /// Unix ms; `None`: never expires.
    pub expires_at_ms: Option<i64>,
}

impl KeyGrant {
    pub fn from_event(k: &pb::ApiKeyCreated) -> KeyGrant {
        KeyGrant {
            key_id: k.key_id.clone(),
            scopes: Scopes::from_stored(&k.scopes),
            expires_at_ms: (k.expires_at_ms > 0).then_some(k.expires_at_ms),
        }
    }

    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// Longest lifetime a key can be given: a bound on tenant input, not a policy.
pub const MAX_KEY_LIFETIME_MS: i64 = 10 * 366 * 24 * 3600 * 1000;
/// Longest key name.
pub const MAX_KEY_NAME_BYTES: usize = 128;

/// A new key's scopes and expiry, checked against the key that mints it: a
/// key grants only scopes it has, and never outlives itself. Empty
/// `requested` scopes and a zero expiry inherit the minting key's.
pub fn mint_grant(
    minter: &KeyGrant,
    name: &str,
    requested: &[String],
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<(Scopes, Option<i64>), Violations> {
    let mut v = Violations::default();
    if name.len() > MAX_KEY_NAME_BYTES {
        v.push(
            "name",
            format!("must be at most {MAX_KEY_NAME_BYTES} bytes"),
        );
    }
    let mut scopes = Scopes::default();
    for (i, n) in requested.iter().enumerate() {
        match Scope::parse(n) {
            Some(s) if minter.scopes.contains(s) => scopes = Scopes(scopes.0 | s.bit()),
            Some(s) => v.push(
                format!("scopes[{i}]"),
                format!(
                    "the calling key does not have scope {:?}; a key mints only scopes it has",
                    s.as_str()
                ),
            ),
            None => v.push(
                format!("scopes[{i}]"),
                "must be one of admin, trigger, read, preferences",
            ),
        }
    }
    if requested.is_empty() {
        scopes = minter.scopes;
    }
    let expires = match (expires_at_ms, minter.expires_at_ms) {
        (0, inherited) => inherited,
        (at, _) if at <= now_ms => {
            v.push("expires_at_ms", "must be in the future");
            None
        }
        (at, _) if at - now_ms > MAX_KEY_LIFETIME_MS => {
            v.push("expires_at_ms", "must be at most 10 years ahead");
            None
        }
        (at, Some(own)) if at > own => {
            v.push(
                "expires_at_ms",
                "must not be later than the calling key's own expiry",
            );
            None
        }
        (at, _) => Some(at),
    };
    v.into_result()?;
    Ok((scopes, expires))
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

    fn grant(scopes: &[Scope], expires_at_ms: Option<i64>) -> KeyGrant {
        KeyGrant {
            key_id: "key_x".into(),
            scopes: Scopes::of(scopes),
            expires_at_ms,
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn keys_without_recorded_scopes_keep_every_scope() {
        assert_eq!(Scopes::from_stored(&[]), Scopes::ALL);
        let read = Scopes::from_stored(&["read".into()]);
        assert!(read.contains(Scope::Read) && !read.contains(Scope::Trigger));
        // An unknown name grants nothing (not everything).
        assert!(Scopes::from_stored(&["superuser".into()]).is_empty());
        assert_eq!(
            Scopes::ALL.names(),
            ["admin", "trigger", "read", "preferences"]
        );
    }

    #[test]
    fn a_key_mints_only_scopes_it_has() {
        let admin_read = grant(&[Scope::Admin, Scope::Read], None);
        let (s, e) = mint_grant(&admin_read, "ci", &["read".into()], 0, NOW).unwrap();
        assert_eq!((s, e), (Scopes::of(&[Scope::Read]), None));
        // Nothing requested: the minter's own scopes.
        let (s, _) = mint_grant(&admin_read, "ci", &[], 0, NOW).unwrap();
        assert_eq!(s, admin_read.scopes);
        let err = mint_grant(
            &admin_read,
            "ci",
            &["read".into(), "trigger".into(), "root".into()],
            0,
            NOW,
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["scopes[1]", "scopes[2]"]);
    }

    #[test]
    fn a_minted_key_never_outlives_its_minter() {
        let mortal = grant(&[Scope::Admin], Some(NOW + 1000));
        assert_eq!(
            mint_grant(&mortal, "", &[], 0, NOW).unwrap().1,
            Some(NOW + 1000)
        );
        assert_eq!(
            mint_grant(&mortal, "", &[], NOW + 10, NOW).unwrap().1,
            Some(NOW + 10)
        );
        for bad in [NOW + 1001, NOW - 1, NOW] {
            let e = mint_grant(&mortal, "", &[], bad, NOW).unwrap_err();
            assert_eq!(e.0[0].field, "expires_at_ms", "{bad}");
        }
        let immortal = grant(&[Scope::Admin], None);
        let e = mint_grant(&immortal, "", &[], NOW + MAX_KEY_LIFETIME_MS + 1, NOW).unwrap_err();
        assert_eq!(e.0[0].field, "expires_at_ms");
        assert!(grant(&[], Some(NOW)).expired_at(NOW));
        assert!(!grant(&[], Some(NOW + 1)).expired_at(NOW));
        assert!(!grant(&[], None).expired_at(i64::MAX));
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
