//! Engagement tracking links: the open pixel and click redirects.
//!
//! A token names the tenant, subscriber, notification and attempt (and, for
//! clicks, the target URL) and carries an HMAC-SHA256 over all of it, so a
//! token cannot be forged or edited — in particular a click link cannot be
//! turned into an open redirect.

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
}

fn mac(secret: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(payload);
    m.finalize().into_bytes()[..16].to_vec()
}

impl TrackingRef {
    fn payload(&self) -> String {
        [
            self.tenant.as_str(),
            &self.subscriber_id,
            &self.notification_id,
            &self.attempt_id,
            &self.url,
        ]
        .join("\n")
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

    /// Verifies and decodes a token (constant-time MAC check).
    pub fn verify(secret: &[u8], token: &str) -> Result<TrackingRef, &'static str> {
        let token = token.strip_suffix(".gif").unwrap_or(token);
        let (p, m) = token.split_once('.').ok_or("malformed tracking token")?;
        let payload = hex::decode(p).map_err(|_| "malformed tracking token")?;
        let given = hex::decode(m).map_err(|_| "malformed tracking token")?;
        let mut check = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        check.update(&payload);
        check
            .verify_truncated_left(&given)
            .map_err(|_| "tracking token signature does not match")?;
        if given.len() != 16 {
            return Err("tracking token signature does not match");
        }
        let text = String::from_utf8(payload).map_err(|_| "malformed tracking token")?;
        let parts: Vec<&str> = text.split('\n').collect();
        let [tenant, subscriber_id, notification_id, attempt_id, url] = parts[..] else {
            return Err("malformed tracking token");
        };
        Ok(TrackingRef {
            tenant: tenant.into(),
            subscriber_id: subscriber_id.into(),
            notification_id: notification_id.into(),
            attempt_id: attempt_id.into(),
            url: url.into(),
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

    fn r(url: &str) -> TrackingRef {
        TrackingRef {
            tenant: "acme".into(),
            subscriber_id: "ana".into(),
            notification_id: "n1".into(),
            attempt_id: "a1".into(),
            url: url.into(),
        }
    }

    #[test]
    fn tokens_verify_and_resist_tampering() {
        let k = b"tracking-secret-0123456789";
        let t = r("https://example.test/job/7").sign(k);
        assert_eq!(
            TrackingRef::verify(k, &t).unwrap(),
            r("https://example.test/job/7")
        );
        assert_eq!(
            TrackingRef::verify(k, &format!("{t}.gif"))
                .unwrap()
                .attempt_id,
            "a1"
        );
        assert!(TrackingRef::verify(b"other-secret", &t).is_err());
        let (_, m) = t.split_once('.').unwrap();
        let evil = format!("{}.{m}", hex::encode(r("https://evil.test").payload()));
        assert!(
            TrackingRef::verify(k, &evil).is_err(),
            "the click target is signed"
        );
        assert!(TrackingRef::verify(k, "nonsense").is_err());
    }
}
