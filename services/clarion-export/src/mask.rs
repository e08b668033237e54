//! Field-level masking: which field of a row is shown how.
//!
//! Targets: `email` (the address of email sends), `phone` (of SMS sends),
//! `address` (any other channel's address: push, in-app, webhook), `to`
//! (shorthand for the three), `subject`, `body`, `subscriber` (the
//! subscriber id). Kinds: `keep`, `email` (`a***@example.com`), `last4`
//! (`*******1234`), `redact` (`[masked]`), `hash` (HMAC-SHA-256 under the
//! tenant's export hash key: the same value hashes the same in every export
//! of the tenant, so rows can be joined without being read).
//!
//! Defaults: emails `email`, phones `last4`, everything else kept; rules
//! given later override earlier ones (`--mask to=redact --mask email=hash`).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ExportError;

/// What a masked value is replaced with by `redact`.
pub const MASKED: &str = "[masked]";
/// Most rules in one request.
pub const MAX_RULES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    Keep,
    Email,
    Last4,
    Redact,
    Hash,
}

impl std::str::FromStr for MaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<MaskKind, String> {
        Ok(match s {
            "keep" => MaskKind::Keep,
            "email" => MaskKind::Email,
            "last4" => MaskKind::Last4,
            "redact" => MaskKind::Redact,
            "hash" => MaskKind::Hash,
            _ => {
                return Err(format!(
                    "{s:?} is not a mask kind (keep, email, last4, redact, hash)"
                ))
            }
        })
    }
}

/// The fields a rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Email,
    Phone,
    Address,
    Subject,
    Body,
    Subscriber,
}

impl Target {
    fn parse(s: &str) -> Result<Vec<Target>, String> {
        Ok(match s {
            "to" => vec![Target::Email, Target::Phone, Target::Address],
            "email" => vec![Target::Email],
            "phone" => vec![Target::Phone],
            "address" => vec![Target::Address],
            "subject" => vec![Target::Subject],
            "body" => vec![Target::Body],
            "subscriber" | "subscriber_id" => vec![Target::Subscriber],
            _ => {
                return Err(format!(
                    "{s:?} is not a maskable field (to, email, phone, address, subject, body, subscriber)"
                ))
            }
        })
    }

    /// Which target a send's address is, by its channel.
    pub fn of_address(channel: &str, value: &str) -> Target {
        match channel {
            "email" => Target::Email,
            "sms" => Target::Phone,
            "" if value.contains('@') => Target::Email,
            _ => Target::Address,
        }
    }
}

/// The rules of one export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskRules {
    rules: BTreeMap<Target, MaskKind>,
}

impl Default for MaskRules {
    /// Emails `email`, phones `last4`, the rest kept.
    fn default() -> Self {
        let mut rules = BTreeMap::new();
        rules.insert(Target::Email, MaskKind::Email);
        rules.insert(Target::Phone, MaskKind::Last4);
        for t in [
            Target::Address,
            Target::Subject,
            Target::Body,
            Target::Subscriber,
        ] {
            rules.insert(t, MaskKind::Keep);
        }
        MaskRules { rules }
    }
}

impl MaskRules {
    /// The defaults with `field=kind` rules applied in order.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<MaskRules, ExportError> {
        if specs.len() > MAX_RULES {
            return Err(ExportError::invalid(
                "mask",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let mut out = MaskRules::default();
        for spec in specs {
            let spec = spec.as_ref();
            let (field, kind) = spec.split_once('=').ok_or_else(|| {
                ExportError::invalid("mask", format!("{spec:?} is not FIELD=KIND"))
            })?;
            out.set(field.trim(), kind.trim())?;
        }
        Ok(out)
    }

    /// Applies one `field=kind` rule.
    pub fn set(&mut self, field: &str, kind: &str) -> Result<(), ExportError> {
        let targets = Target::parse(field).map_err(|e| ExportError::invalid("mask", e))?;
        let kind: MaskKind = kind.parse().map_err(|e| ExportError::invalid("mask", e))?;
        for t in targets {
            self.rules.insert(t, kind);
        }
        Ok(())
    }

    pub fn kind(&self, t: Target) -> MaskKind {
        self.rules.get(&t).copied().unwrap_or(MaskKind::Keep)
    }

    /// `{"email": "email", "phone": "last4", ...}` (manifest, audit event).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.rules).expect("a map of enums serializes")
    }
}

/// Masks values by the rules, with the tenant's hash key.
pub struct Masker {
    pub rules: MaskRules,
    hash_key: [u8; 32],
}

impl Masker {
    pub fn new(rules: MaskRules, hash_key: [u8; 32]) -> Masker {
        Masker { rules, hash_key }
    }

    /// `value` as the rule for `t` shows it. Empty values and the markers
    /// of erased or redacted data stay as they are: they hold nothing.
    pub fn apply(&self, t: Target, value: &str) -> String {
        if value.is_empty() || value.starts_with("[erased]") || value.starts_with("[redacted]") {
            return value.to_string();
        }
        match self.rules.kind(t) {
            MaskKind::Keep => value.to_string(),
            MaskKind::Email => mask_email(value),
            MaskKind::Last4 => last4(value),
            MaskKind::Redact => MASKED.to_string(),
            MaskKind::Hash => self.hash(value),
        }
    }

    fn hash(&self, value: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key).expect("HMAC takes any key");
        mac.update(value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// `alice@example.com` → `a***@example.com`; without `@`: `a***`.
pub fn mask_email(v: &str) -> String {
    let (local, domain) = match v.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (v, None),
    };
    let first: String = local.chars().take(1).collect();
    match domain {
        Some(d) => format!("{first}***@{d}"),
        None => format!("{first}***"),
    }
}

/// Every character but the last four as `*` (all of them when four or fewer).
pub fn last4(v: &str) -> String {
    let n = v.chars().count();
    let keep = if n > 4 { 4 } else { 0 };
    v.chars()
        .enumerate()
        .map(|(i, c)| if i + keep < n { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_mask_as_documented() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("bob"), "b***");
        assert_eq!(last4("+15550001234"), "********1234");
        assert_eq!(last4("123"), "***");
        let m = Masker::new(MaskRules::default(), [7; 32]);
        assert_eq!(
            m.apply(Target::Email, "alice@example.com"),
            "a***@example.com"
        );
        assert_eq!(m.apply(Target::Phone, "+15550001234"), "********1234");
        assert_eq!(m.apply(Target::Body, "hello"), "hello");
        assert_eq!(m.apply(Target::Email, "[erased]"), "[erased]");
    }

    #[test]
    fn rules_override_in_order_and_name_bad_input() {
        let r = MaskRules::parse(&["to=redact", "email=hash", "body=redact"]).unwrap();
        assert_eq!(r.kind(Target::Phone), MaskKind::Redact);
        assert_eq!(r.kind(Target::Address), MaskKind::Redact);
        assert_eq!(r.kind(Target::Email), MaskKind::Hash);
        assert_eq!(r.kind(Target::Body), MaskKind::Redact);
        let m = Masker::new(r.clone(), [1; 32]);
        let h = m.apply(Target::Email, "a@b.c");
        assert!(h.starts_with("hmac-sha256:") && h.len() == 12 + 64, "{h}");
        assert_eq!(h, m.apply(Target::Email, "a@b.c"));
        assert_ne!(h, Masker::new(r, [2; 32]).apply(Target::Email, "a@b.c"));
        let e = MaskRules::parse(&["pin=redact"]).unwrap_err().to_string();
        assert!(e.starts_with("mask: ") && e.contains("pin"), "{e}");
        let e = MaskRules::parse(&["body=scramble"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("scramble"), "{e}");
        assert!(MaskRules::parse(&["body"]).is_err());
    }
}
