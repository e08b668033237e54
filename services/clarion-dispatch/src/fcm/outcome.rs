//! What an FCM answer means for the token, the operator and the retry
//! policy. Errors are `google.rpc.Status` JSON: `{"error": {"code",
//! "message", "status", "details": [...]}}`; the FCM-specific code is in the
//! `FcmError` detail's `errorCode`, and a bad token shows as a
//! `BadRequest` field violation on `message.token`.

use std::time::Duration;

use serde::Deserialize;

const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

/// The result of one send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: FCM took the message; `name` is `projects/*/messages/{id}`.
    Accepted { name: String },
    /// `UNREGISTERED`, `NOT_FOUND`, `SENDER_ID_MISMATCH`, or an
    /// `INVALID_ARGUMENT` about the token itself: the registry should drop
    /// the token (for this sender).
    DeadToken { reason: String },
    /// 401/403 or `THIRD_PARTY_AUTH_ERROR` (FCM's APNs/web-push credentials),
    /// or a refused token exchange: an operator must act; tokens are fine.
    CredentialRejected { reason: String },
    /// `QUOTA_EXCEEDED`, `UNAVAILABLE`, `INTERNAL`, 429, 5xx or no answer:
    /// try again, not before `retry_after` when FCM said so.
    Retryable {
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other error (an `INVALID_ARGUMENT` about the payload): our bug.
    /// Neither a retry nor dropping the token can help.
    Rejected { status: u16, reason: String },
}

impl Outcome {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }

    pub fn revokes_token(&self) -> bool {
        matches!(self, Outcome::DeadToken { .. })
    }

    pub fn needs_operator(&self) -> bool {
        matches!(self, Outcome::CredentialRejected { .. })
    }
}

#[derive(Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    error: Status,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Deserialize, Default)]
struct Detail {
    #[serde(rename = "@type", default)]
    type_url: String,
    #[serde(rename = "errorCode", default)]
    error_code: String,
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize, Default)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

/// Maps a non-200 answer to an [`Outcome`]. `retry_after` is the parsed
/// `Retry-After` header, if any.
pub fn classify_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    let Envelope { error } = serde_json::from_slice(body).unwrap_or_default();
    let fcm_code = error
        .details
        .iter()
        .find(|d| d.type_url == FCM_ERROR && !d.error_code.is_empty())
        .map(|d| d.error_code.as_str());
    // The FCM-specific code is the precise one; the RPC status is the fallback.
    let code = fcm_code.unwrap_or(error.status.as_str());
    let reason = match (code.is_empty(), error.message.is_empty()) {
        (true, _) => format!("HTTP {status}"),
        (false, true) => code.to_string(),
        (false, false) => format!("{code}: {}", crate::ssrf::excerpt(&error.message, 160)),
    };
    let retryable = |reason| Outcome::Retryable {
        status: Some(status),
        reason,
        retry_after,
    };
    match code {
        "UNREGISTERED" | "NOT_FOUND" | "SENDER_ID_MISMATCH" => Outcome::DeadToken { reason },
        "INVALID_ARGUMENT" if names_the_token(&error) => Outcome::DeadToken { reason },
        "THIRD_PARTY_AUTH_ERROR" | "UNAUTHENTICATED" | "PERMISSION_DENIED" => {
            Outcome::CredentialRejected { reason }
        }
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" | "RESOURCE_EXHAUSTED" => retryable(reason),
        _ => match status {
            401 | 403 => Outcome::CredentialRejected { reason },
            429 | 500..=599 => retryable(reason),
            _ => Outcome::Rejected { status, reason },
        },
    }
}

/// Whether an `INVALID_ARGUMENT` is about the registration token (dead)
/// rather than the payload (ours to fix).
fn names_the_token(error: &Status) -> bool {
    let on_token = error.details.iter().any(|d| {
        d.type_url == BAD_REQUEST
            && d.field_violations
                .iter()
                .any(|v| v.field == "message.token")
    });
    on_token
        || error
            .message
            .to_ascii_lowercase()
            .contains("not a valid fcm registration token")
}

/// `Retry-After` as delta-seconds (what Google sends); an HTTP date is
/// ignored rather than trusted to a clock we do not share.
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_message_alone_marks_an_invalid_argument_dead() {
        let body = br#"{"error":{"code":400,"status":"INVALID_ARGUMENT",
            "message":"The registration token is not a valid FCM registration token"}}"#;
        assert!(classify_error(400, None, body).revokes_token());
        let body = br#"{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"Invalid JSON payload"}}"#;
        assert!(matches!(
            classify_error(400, None, body),
            Outcome::Rejected { status: 400, .. }
        ));
        assert_eq!(
            parse_retry_after(Some(" 12 ")),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }
}
