//! What an APNs answer means for the token, the operator and the retry
//! policy. APNs answers errors with `{"reason": "...", "timestamp": ms}`
//! (the timestamp only with 410).

use serde::Deserialize;

/// The result of one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: APNs took the notification. `apns_id` is the id APNs echoes.
    Accepted { apns_id: String },
    /// 400 `BadDeviceToken`: the token is dead; the registry should drop it.
    BadDeviceToken,
    /// 410 (`Unregistered`, `ExpiredToken`): the app is gone from the device
    /// since `since_ms`. A token registered after that instant is a new
    /// registration and must be kept: see [`Outcome::revokes_token`].
    Unregistered {
        reason: String,
        since_ms: Option<i64>,
    },
    /// 403: our provider token or certificate is refused
    /// (`InvalidProviderToken`, `ExpiredProviderToken`, `MissingProviderToken`,
    /// `BadCertificate`, ...). An operator must act; device tokens are fine.
    CredentialRejected { reason: String },
    /// 429, 5xx or no answer at all: try again later (same `apns-id`).
    Retryable { status: Option<u16>, reason: String },
    /// Any other 4xx: our request is wrong (payload, topic, headers). Neither
    /// a retry nor dropping the token can help.
    Rejected { status: u16, reason: String },
}

impl Outcome {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }

    /// Whether a token registered at `registered_at_ms` should be removed.
    /// A 410 without a timestamp is taken as "gone now".
    pub fn revokes_token(&self, registered_at_ms: i64) -> bool {
        match self {
            Outcome::BadDeviceToken => true,
            Outcome::Unregistered { since_ms, .. } => {
                since_ms.is_none_or(|since| registered_at_ms < since)
            }
            _ => false,
        }
    }

    /// Whether an operator must be told (credentials, not devices, are wrong).
    pub fn needs_operator(&self) -> bool {
        matches!(self, Outcome::CredentialRejected { .. })
    }
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    timestamp: Option<i64>,
}

/// Maps a non-200 answer (status and body) to an [`Outcome`].
pub fn classify_error(status: u16, body: &[u8]) -> Outcome {
    let ErrorBody { reason, timestamp } = serde_json::from_slice(body).unwrap_or_default();
    let reason = if reason.is_empty() {
        format!("HTTP {status}")
    } else {
        // APNs reasons are short identifiers; a proxy's page is not.
        crate::ssrf::excerpt(&reason, 120)
    };
    match status {
        400 if reason == "BadDeviceToken" => Outcome::BadDeviceToken,
        410 => Outcome::Unregistered {
            reason,
            since_ms: timestamp,
        },
        403 => Outcome::CredentialRejected { reason },
        429 | 500..=599 => Outcome::Retryable {
            status: Some(status),
            reason,
        },
        _ => Outcome::Rejected { status, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_apple_documentation_are_classified() {
        assert_eq!(
            classify_error(400, br#"{"reason":"BadDeviceToken"}"#),
            Outcome::BadDeviceToken
        );
        assert_eq!(
            classify_error(
                410,
                br#"{"reason":"Unregistered","timestamp":1700000000000}"#
            ),
            Outcome::Unregistered {
                reason: "Unregistered".into(),
                since_ms: Some(1_700_000_000_000)
            }
        );
        assert!(classify_error(403, br#"{"reason":"ExpiredProviderToken"}"#).needs_operator());
        for s in [429, 500, 503] {
            assert!(classify_error(s, b"{}").is_retryable(), "{s}");
        }
        assert_eq!(
            classify_error(400, br#"{"reason":"BadCollapseId"}"#),
            Outcome::Rejected {
                status: 400,
                reason: "BadCollapseId".into()
            }
        );
        assert_eq!(
            classify_error(413, b"not json"),
            Outcome::Rejected {
                status: 413,
                reason: "HTTP 413".into()
            }
        );
    }

    #[test]
    fn unregistered_revokes_only_registrations_older_than_its_timestamp() {
        let gone = Outcome::Unregistered {
            reason: "Unregistered".into(),
            since_ms: Some(1_000),
        };
        assert!(gone.revokes_token(999));
        assert!(!gone.revokes_token(1_000));
        assert!(!gone.revokes_token(5_000));
        assert!(Outcome::BadDeviceToken.revokes_token(i64::MAX));
        let auth = Outcome::CredentialRejected {
            reason: "InvalidProviderToken".into(),
        };
        assert!(!auth.revokes_token(0));
        assert!(!Outcome::Rejected {
            status: 400,
            reason: "BadTopic".into()
        }
        .revokes_token(0));
    }
}
