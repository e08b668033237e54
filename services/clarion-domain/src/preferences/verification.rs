//! Contact verification: an email or phone changed through the preference
//! APIs is unverified until its owner confirms a one-time code that Clarion
//! sent to it. Until then it receives only that message.
//!
//! Contacts set by the tenant's own back end (`SubscriberService.Upsert`)
//! are trusted, the tenant vouches for them: an upsert with another address
//! ends a pending verification. An upsert repeating the pending address
//! (a back end echoing what it read) leaves it unverified.

use clarion_proto::events as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Preferences;
use crate::channel::Channel;
use crate::subscriber::Subscriber;

/// Wrong codes accepted before a code stops working.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long a code works.
pub const CODE_TTL_MS: i64 = 15 * 60 * 1000;
/// Digits of a code.
pub const CODE_DIGITS: usize = 6;

/// A contact changed through the preference APIs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    pub value: String,
    pub verified: bool,
    /// SHA-256 of the pending code (bound to tenant, subscriber, channel and
    /// value); empty once verified.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code_sha256: String,
    #[serde(default)]
    pub expires_at_ms: i64,
    /// Wrong codes given so far.
    #[serde(default)]
    pub attempts: u32,
}

/// The channels whose contact can be changed and verified.
pub fn verifiable(channel: Channel) -> bool {
    matches!(channel, Channel::Email | Channel::Sms)
}

/// A code of [`CODE_DIGITS`] digits from random bytes (the caller's RNG).
pub fn code_from(random: [u8; 8]) -> String {
    let n = u64::from_le_bytes(random) % 10u64.pow(CODE_DIGITS as u32);
    format!("{n:0width$}", width = CODE_DIGITS)
}

/// The stored form of a code: a hash bound to where it is valid, so a code
/// for one contact never confirms another.
pub fn code_hash(tenant: &str, subscriber: &str, channel: &str, value: &str, code: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, subscriber, channel, value, code] {
        h.update((part.len() as u32).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Why a code was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no verification is pending for this {0} contact")]
    NothingPending(String),
    #[error("the code expired; change the contact again to get a new one")]
    Expired,
    #[error("too many wrong codes; change the contact again to get a new one")]
    TooManyAttempts,
    #[error("the code is not right")]
    Wrong,
}

/// Checks a code against the pending verification of `channel`.
pub fn check(
    prefs: &Preferences,
    tenant: &str,
    subscriber: &str,
    channel: Channel,
    code: &str,
    now_ms: i64,
) -> Result<String, Refused> {
    let pending = prefs
        .contacts
        .get(channel.as_str())
        .filter(|c| !c.verified && !c.code_sha256.is_empty())
        .ok_or_else(|| Refused::NothingPending(channel.to_string()))?;
    if pending.attempts >= MAX_ATTEMPTS {
        return Err(Refused::TooManyAttempts);
    }
    if now_ms > pending.expires_at_ms {
        return Err(Refused::Expired);
    }
    let given = code_hash(tenant, subscriber, channel.as_str(), &pending.value, code);
    // Both are hex SHA-256 of fixed length; comparing hashes leaks nothing
    // about the code itself.
    if given != pending.code_sha256 {
        return Err(Refused::Wrong);
    }
    Ok(pending.value.clone())
}

impl Preferences {
    /// A contact changed: pending verification with the code's hash.
    pub fn contact_changed(&mut self, tenant: &str, e: &pb::ContactChanged) {
        let hash = code_hash(tenant, &e.subscriber_id, &e.channel, &e.new_value, &e.code);
        self.contacts.insert(
            e.channel.clone(),
            ContactState {
                value: e.new_value.clone(),
                verified: false,
                code_sha256: hash,
                expires_at_ms: e.expires_at_ms,
                attempts: 0,
            },
        );
    }

    pub fn contact_verified(&mut self, e: &pb::ContactVerified) {
        if let Some(c) = self.contacts.get_mut(&e.channel) {
            if c.value == e.value {
                c.verified = true;
                c.code_sha256.clear();
                c.attempts = 0;
            }
        }
    }

    pub fn verification_failed(&mut self, e: &pb::ContactVerificationFailed) {
        if let Some(c) = self.contacts.get_mut(&e.channel) {
            c.attempts = c.attempts.saturating_add(1);
        }
    }

    /// The tenant's back end replaced the profile: a contact it set to
    /// another address than the pending one is trusted, so the pending
    /// verification ends. Returns whether anything changed.
    pub fn profile_upserted(&mut self, s: &Subscriber) -> bool {
        let before = self.contacts.len();
        self.contacts.retain(|channel, c| {
            let now = match channel.as_str() {
                "email" => &s.email,
                "sms" => &s.phone,
                _ => return true,
            };
            c.verified || *now == c.value
        });
        before != self.contacts.len()
    }
}

/// The profile after a contact change: the new address is the one sends
/// use (and hold back until verified).
pub fn apply_to_profile(s: &mut Subscriber, channel: &str, value: &str) {
    match channel {
        "email" => s.email = value.to_string(),
        "sms" => s.phone = value.to_string(),
        _ => {}
    }
}

/// The verification message (built in: it must work before a tenant wrote
/// any template): subject and body in the subscriber's language where we
/// have one, English otherwise.
pub fn message(locale: &str, code: &str) -> (String, String) {
    let lang = locale.split(['-', '_']).next().unwrap_or("");
    let (subject, body) = match lang {
        "fr" => (
            "Votre code de vérification",
            "Votre code de vérification est {code}. Il expire dans 15 minutes.",
        ),
        "de" => (
            "Ihr Bestätigungscode",
            "Ihr Bestätigungscode lautet {code}. Er läuft in 15 Minuten ab.",
        ),
        "es" => (
            "Su código de verificación",
            "Su código de verificación es {code}. Caduca en 15 minutos.",
        ),
        _ => (
            "Your verification code",
            "Your verification code is {code}. It expires in 15 minutes.",
        ),
    };
    (subject.to_string(), body.replace("{code}", code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(value: &str, code: &str) -> pb::ContactChanged {
        pb::ContactChanged {
            subscriber_id: "s1".into(),
            channel: "sms".into(),
            old_value: "+15550000000".into(),
            new_value: value.into(),
            code: code.into(),
            expires_at_ms: 1_000 + CODE_TTL_MS,
            ..Default::default()
        }
    }

    #[test]
    fn a_code_confirms_only_its_own_contact_within_its_time_and_tries() {
        let mut p = Preferences::default();
        p.contact_changed("t1", &changed("+15550000001", "123456"));
        let ok = check(&p, "t1", "s1", Channel::Sms, "123456", 2_000);
        assert_eq!(ok, Ok("+15550000001".to_string()));
        assert_eq!(
            check(&p, "t2", "s1", Channel::Sms, "123456", 2_000),
            Err(Refused::Wrong),
            "another tenant's subscriber of the same id"
        );
        assert_eq!(
            check(&p, "t1", "s1", Channel::Email, "123456", 2_000),
            Err(Refused::NothingPending("email".into()))
        );
        assert_eq!(
            check(&p, "t1", "s1", Channel::Sms, "123456", 2_000 + CODE_TTL_MS),
            Err(Refused::Expired)
        );
        for _ in 0..MAX_ATTEMPTS {
            assert_eq!(
                check(&p, "t1", "s1", Channel::Sms, "000000", 2_000),
                Err(Refused::Wrong)
            );
            p.verification_failed(&pb::ContactVerificationFailed {
                channel: "sms".into(),
                ..Default::default()
            });
        }
        assert_eq!(
            check(&p, "t1", "s1", Channel::Sms, "123456", 2_000),
            Err(Refused::TooManyAttempts)
        );
    }

    #[test]
    fn verified_contacts_stay_and_the_back_end_can_replace_pending_ones() {
        let mut p = Preferences::default();
        p.contact_changed("t1", &changed("+15550000001", "123456"));
        let mut s = Subscriber {
            phone: "+15550000001".into(),
            ..Subscriber::default()
        };
        assert!(!p.profile_upserted(&s), "an echo keeps it pending");
        s.phone = "+15550000009".into();
        assert!(
            p.profile_upserted(&s),
            "another number from the back end is trusted"
        );
        assert!(p.contacts.is_empty());

        p.contact_changed("t1", &changed("+15550000001", "123456"));
        p.contact_verified(&pb::ContactVerified {
            channel: "sms".into(),
            value: "+15550000001".into(),
            ..Default::default()
        });
        assert!(p.contacts["sms"].verified);
        assert!(!p.profile_upserted(&s), "a verified contact stays recorded");
    }

    #[test]
    fn codes_have_six_digits_and_messages_carry_them() {
        assert_eq!(code_from([0; 8]), "000000");
        assert_eq!(code_from(u64::MAX.to_le_bytes()).len(), CODE_DIGITS);
        let (subject, body) = message("fr-CA", "042042");
        assert!(subject.contains("code"));
        assert!(body.contains("042042"));
        assert!(message("", "1").1.starts_with("Your"));
    }
}
