//! Engagement tracking links: the open pixel and click redirects.
//!
//! A token names the tenant, subscriber, notification and attempt (and, for
//! clicks, the target URL) and carries an HMAC-SHA256 over all of it, so a
//! token cannot be forged or edited — in particular a click link cannot be
//! turned into an open redirect: it leads only to a URL that was in the
//! rendered message it was made for.
//!
//! Tokens expire (`expires_at_s`, unix seconds, inside the MAC; the
//! deployment's `tracking.token-ttl-days`, 90 by default). Tokens made
//! before expiries existed have five fields instead of six; they are still
//! accepted unless the operator turns `tracking.accept-legacy-tokens` off,
//! since they sit in mail already delivered and are as unforgeable as the
//! new ones (they only never expire).

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingRef {
    pub tenant: String,
    pub subscriber_id: String,
    pub notification_id: String,
    pub attempt_id: String,
    /// Click target; empty for the open pixel.
    pub url: String,
    /// When the link stops working (unix seconds); 0 for a legacy token,
    /// which has none.
    pub expires_at_s: i64,
}

/// Why a token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    #[error("malformed tracking token")]
    Malformed,
    #[error("tracking token signature does not match")]
    Forged,
    #[error("this link has expired")]
    Expired,
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(payload);
    m.finalize().into_bytes()[..16].to_vec()
}

impl TrackingRef {
    fn payload(&self) -> String {
        let mut fields = vec![
            self.tenant.clone(),
            self.subscriber_id.clone(),
            self.notification_id.clone(),
            self.attempt_id.clone(),
            self.url.clone(),
        ];
        if self.expires_at_s != 0 {
            fields.push(self.expires_at_s.to_string());
        }
        fields.join("\n")
    }

    /// The signed token: hex(payload) "." hex(mac).
    pub fn sign(&self, secret: &[u8]) -> String {
        let p = self.payload();
        format!(
            "{}.{}",
            hex::encode(&p),
            hex::encode(mac(secret, p.as_bytes()))
        )
    }

    /// Verifies and decodes a token (constant-time MAC check), refusing it
    /// once expired at `now_ms`, and legacy tokens (no expiry) unless
    /// `accept_legacy`.
    pub fn verify(
        secret: &[u8],
        token: &str,
        now_ms: i64,
        accept_legacy: bool,
    ) -> Result<TrackingRef, TrackingError> {
        use TrackingError::*;
        let token = token.strip_suffix(".gif").unwrap_or(token);
        let (p, m) = token.split_once('.').ok_or(Malformed)?;
        let payload = hex::decode(p).map_err(|_| Malformed)?;
        let given = hex::decode(m).map_err(|_| Malformed)?;
        let mut check = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        check.update(&payload);
        check.verify_truncated_left(&given).map_err(|_| Forged)?;
        if given.len() != 16 {
            return Err(Forged);
        }
        let text = String::from_utf8(payload).map_err(|_| Malformed)?;
        let parts: Vec<&str> = text.split('\n').collect();
        let (fields, expires_at_s) = match parts[..] {
            [a, b, c, d, e] if accept_legacy => ([a, b, c, d, e], 0),
            [_, _, _, _, _] => return Err(Expired),
            [a, b, c, d, e, x] => ([a, b, c, d, e], x.parse::<i64>().map_err(|_| Malformed)?),
            _ => return Err(Malformed),
        };
        if expires_at_s != 0 && now_ms.div_euclid(1000) >= expires_at_s {
            return Err(Expired);
        }
        let [tenant, subscriber_id, notification_id, attempt_id, url] = fields;
        Ok(TrackingRef {
            tenant: tenant.into(),
            subscriber_id: subscriber_id.into(),
            notification_id: notification_id.into(),
            attempt_id: attempt_id.into(),
            url: url.into(),
            expires_at_s,
        })
    }

    pub fn open_url(&self, base: &str, secret: &[u8]) -> String {
        format!(
            "{}/t/o/{}.gif",
            base.trim_end_matches('/'),
            self.sign(secret)
        )
    }

    pub fn click_url(&self, base: &str, secret: &[u8]) -> String {
        format!("{}/t/c/{}", base.trim_end_matches('/'), self.sign(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn r(url: &str) -> TrackingRef {
        TrackingRef {
            tenant: "acme".into(),
            subscriber_id: "ana".into(),
            notification_id: "n1".into(),
            attempt_id: "a1".into(),
            url: url.into(),
            expires_at_s: NOW_MS / 1000 + 90 * 86_400,
        }
    }

    #[test]
    fn tokens_verify_and_resist_tampering() {
        let k = b"tracking-secret-0123456789";
        let t = r("https://example.test/job/7").sign(k);
        assert_eq!(
            TrackingRef::verify(k, &t, NOW_MS, false).unwrap(),
            r("https://example.test/job/7")
        );
        assert_eq!(
            TrackingRef::verify(k, &format!("{t}.gif"), NOW_MS, false)
                .unwrap()
                .attempt_id,
            "a1"
        );
        assert_eq!(
            TrackingRef::verify(b"other-secret", &t, NOW_MS, true),
            Err(TrackingError::Forged)
        );
        let (_, m) = t.split_once('.').unwrap();
        let evil = format!("{}.{m}", hex::encode(r("https://evil.test").payload()));
        assert_eq!(
            TrackingRef::verify(k, &evil, NOW_MS, true),
            Err(TrackingError::Forged),
            "the click target is signed"
        );
        assert!(TrackingRef::verify(k, "nonsense", NOW_MS, true).is_err());
    }

    #[test]
    fn tokens_expire_and_the_expiry_cannot_be_extended() {
        let k = b"tracking-secret-0123456789";
        let link = r("https://example.test/a");
        let t = link.sign(k);
        let at_expiry = link.expires_at_s * 1000;
        assert!(TrackingRef::verify(k, &t, at_expiry - 1, false).is_ok());
        assert_eq!(
            TrackingRef::verify(k, &t, at_expiry, false),
            Err(TrackingError::Expired)
        );
        let (_, m) = t.split_once('.').unwrap();
        let later = TrackingRef {
            expires_at_s: link.expires_at_s + 86_400,
            ..link
        };
        let extended = format!("{}.{m}", hex::encode(later.payload()));
        assert_eq!(
            TrackingRef::verify(k, &extended, NOW_MS, true),
            Err(TrackingError::Forged)
        );
    }

    #[test]
    fn legacy_tokens_without_expiry_are_accepted_only_when_allowed() {
        let k = b"tracking-secret-0123456789";
        let legacy = TrackingRef {
            expires_at_s: 0,
            ..r("https://example.test/old")
        };
        let t = legacy.sign(k);
        assert_eq!(
            hex::decode(t.split_once('.').unwrap().0)
                .unwrap()
                .split(|b| *b == b'\n')
                .count(),
            5
        );
        assert_eq!(TrackingRef::verify(k, &t, NOW_MS, true), Ok(legacy));
        assert_eq!(
            TrackingRef::verify(k, &t, NOW_MS, false),
            Err(TrackingError::Expired)
        );
    }
}
