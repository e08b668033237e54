//! What each device's provider answered, and what the push as a whole
//! became: delivered when one device accepted it; otherwise failed,
//! retryably when some device's answer may change on a retry. Every device
//! gets a `PushDeviceOutcome` (the history shows each one); a dead token
//! also a `PushRejected` for the subscriber's stream, where the router
//! decides the revocation.

use clarion_domain::Payload;
use clarion_proto::events as pb;
use clarion_runtime::Topic;

use crate::provider::{Report, SendError, SendOutcome};
use crate::{apns, fcm};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Accepted,
    /// The provider says the token is dead (the device should go).
    RejectedToken,
    /// Busy, down, throttled or unreachable: a retry may work.
    Retryable,
    /// Our request is wrong, or the device cannot be sent to: no retry helps.
    Failed,
    /// Our credentials are refused: an operator must act (retried, since
    /// fixed credentials make the retry work).
    Credentials,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Accepted => "accepted",
            Class::RejectedToken => "rejected_token",
            Class::Retryable => "retryable",
            Class::Failed => "failed",
            Class::Credentials => "credentials",
        }
    }

    fn retryable(self) -> bool {
        matches!(self, Class::Retryable | Class::Credentials)
    }
}

/// One device's result. `detail` is the provider's answer without the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceResult {
    pub class: Class,
    /// apns | fcm
    pub provider: &'static str,
    pub message_id: String,
    pub detail: String,
    /// A dead token: the provider's reason and APNs' 410 timestamp (0: none).
    pub rejected: Option<(String, i64)>,
}

impl DeviceResult {
    pub fn failed(provider: &'static str, detail: impl Into<String>) -> DeviceResult {
        DeviceResult {
            class: Class::Failed,
            provider,
            message_id: String::new(),
            detail: detail.into(),
            rejected: None,
        }
    }

    fn new(class: Class, provider: &'static str, detail: String, token: &str) -> DeviceResult {
        DeviceResult {
            class,
            provider,
            message_id: String::new(),
            detail: scrub(&detail, token),
            rejected: None,
        }
    }

    pub fn from_apns(outcome: apns::Outcome, token: &str) -> DeviceResult {
        use apns::Outcome as O;
        let status = |s: Option<u16>| s.map_or(String::new(), |s| format!("HTTP {s}: "));
        match outcome {
            O::Accepted { apns_id } => DeviceResult {
                message_id: apns_id,
                ..DeviceResult::new(Class::Accepted, "apns", "HTTP 200".into(), token)
            },
            O::BadDeviceToken => DeviceResult {
                rejected: Some(("BadDeviceToken".into(), 0)),
                ..DeviceResult::new(
                    Class::RejectedToken,
                    "apns",
                    "HTTP 400: BadDeviceToken".into(),
                    token,
                )
            },
            O::Unregistered { reason, since_ms } => {
                let since = since_ms.map_or(String::new(), |t| format!(" (timestamp {t})"));
                DeviceResult {
                    rejected: Some((reason.clone(), since_ms.unwrap_or(0))),
                    ..DeviceResult::new(
                        Class::RejectedToken,
                        "apns",
                        format!("HTTP 410: {reason}{since}"),
                        token,
                    )
                }
            }
            O::CredentialRejected { reason } => {
                DeviceResult::new(Class::Credentials, "apns", reason, token)
            }
            O::Retryable { status: s, reason } => DeviceResult::new(
                Class::Retryable,
                "apns",
                format!("{}{reason}", status(s)),
                token,
            ),
            O::Rejected { status: s, reason } => DeviceResult::new(
                Class::Failed,
                "apns",
                format!("{}{reason}", status(Some(s))),
                token,
            ),
        }
    }

    pub fn from_fcm(outcome: fcm::Outcome, token: &str) -> DeviceResult {
        use fcm::Outcome as O;
        match outcome {
            O::Accepted { name } => DeviceResult {
                message_id: name,
                ..DeviceResult::new(Class::Accepted, "fcm", "HTTP 200".into(), token)
            },
            O::DeadToken { reason } => {
                // "UNREGISTERED: Requested entity was not found." → the code.
                let code = reason
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                DeviceResult {
                    rejected: Some((code, 0)),
                    ..DeviceResult::new(Class::RejectedToken, "fcm", reason, token)
                }
            }
            O::CredentialRejected { reason } => {
                DeviceResult::new(Class::Credentials, "fcm", reason, token)
            }
            O::Retryable {
                status,
                reason,
                retry_after,
            } => {
                let mut detail = status.map_or(reason.clone(), |s| format!("HTTP {s}: {reason}"));
                if let Some(ra) = retry_after {
                    detail.push_str(&format!(" (retry after {} s)", ra.as_secs()));
                }
                DeviceResult::new(Class::Retryable, "fcm", detail, token)
            }
            O::Rejected { status, reason } => DeviceResult::new(
                Class::Failed,
                "fcm",
                format!("HTTP {status}: {reason}"),
                token,
            ),
        }
    }
}

/// The detail without the token: a transport error names the URL, and an
/// APNs URL holds the token (perhaps cut short by an excerpt).
fn scrub(detail: &str, token: &str) -> String {
    let mut out = if token.is_empty() {
        detail.to_string()
    } else {
        detail.replace(token, "<token>")
    };
    const PATH: &str = "/3/device/";
    let mut from = 0;
    while let Some(at) = out[from..].find(PATH).map(|i| from + i + PATH.len()) {
        let end = out[at..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .map_or(out.len(), |i| at + i);
        if end > at {
            out.replace_range(at..end, "<token>");
        }
        from = at;
    }
    out
}

/// The push's outcome and its per-device events. `results` are in the
/// order of `msg.push_targets`.
pub fn report(msg: &pb::DispatchRequested, results: &[DeviceResult]) -> Report {
    let mut extra = Vec::new();
    for (target, r) in msg.push_targets.iter().zip(results) {
        extra.push((
            Topic::Deliveries,
            Payload::PushDeviceOutcome(pb::PushDeviceOutcome {
                notification_id: msg.notification_id.clone(),
                attempt_id: msg.attempt_id.clone(),
                device_id: target.device_id.clone(),
                platform: target.platform.clone(),
                provider: r.provider.into(),
                outcome: r.class.as_str().into(),
                provider_message_id: r.message_id.clone(),
                detail: r.detail.clone(),
            }),
        ));
        if let Some((reason, unregistered_at_ms)) = &r.rejected {
            // To the subscriber's stream (the request's partition key).
            extra.push((
                Topic::Triggers,
                Payload::PushRejected(pb::PushRejected {
                    subscriber_id: msg.subscriber_id.clone(),
                    device_id: target.device_id.clone(),
                    token_hash: target
                        .token
                        .as_ref()
                        .map(|t| t.hash.clone())
                        .unwrap_or_default(),
                    provider: r.provider.into(),
                    reason: reason.clone(),
                    detail: r.detail.clone(),
                    unregistered_at_ms: *unregistered_at_ms,
                    notification_id: msg.notification_id.clone(),
                    attempt_id: msg.attempt_id.clone(),
                }),
            ));
        }
    }
    Report {
        result: result(msg, results),
        extra,
    }
}

/// At most this many devices are described in a failure's reason.
const MAX_DESCRIBED: usize = 5;

fn result(msg: &pb::DispatchRequested, results: &[DeviceResult]) -> Result<SendOutcome, SendError> {
    if let Some(first) = results.iter().find(|r| r.class == Class::Accepted) {
        return Ok(SendOutcome {
            provider_message_id: first.message_id.clone(),
            delivered: true,
        });
    }
    let mut reason = String::from("no device accepted the push: ");
    for (i, (target, r)) in msg.push_targets.iter().zip(results).enumerate() {
        if i == MAX_DESCRIBED {
            reason.push_str(&format!("; and {} more", results.len() - i));
            break;
        }
        if i > 0 {
            reason.push_str("; ");
        }
        reason.push_str(&format!(
            "{} device {} ({}): {}: {}",
            target.platform,
            target.device_id,
            r.provider,
            r.class.as_str(),
            r.detail
        ));
    }
    Err(SendError {
        retryable: results.iter().any(|r| r.class.retryable()),
        message: reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_a_transport_error_is_scrubbed_even_when_cut_short() {
        let tok = "a1b2c3d4e5f6";
        let d = "apns: error sending request for url (https://api.push.apple.com/3/device/a1b2c3d4e5f6)";
        assert_eq!(
            scrub(d, tok),
            "apns: error sending request for url (https://api.push.apple.com/3/device/<token>)"
        );
        assert_eq!(scrub("x /3/device/a1b2c3", tok), "x /3/device/<token>");
        assert_eq!(
            scrub("fcm token tok-1 refused", "tok-1"),
            "fcm token <token> refused"
        );
    }

    #[test]
    fn the_410_timestamp_and_the_fcm_code_are_kept_for_the_router() {
        let r = DeviceResult::from_apns(
            apns::Outcome::Unregistered {
                reason: "Unregistered".into(),
                since_ms: Some(1_700_000_000_000),
            },
            "aa",
        );
        assert_eq!(r.class, Class::RejectedToken);
        assert_eq!(r.rejected, Some(("Unregistered".into(), 1_700_000_000_000)));
        let r = DeviceResult::from_fcm(
            fcm::Outcome::DeadToken {
                reason: "UNREGISTERED: Requested entity was not found.".into(),
            },
            "t",
        );
        assert_eq!(r.rejected, Some(("UNREGISTERED".into(), 0)));
        let r = DeviceResult::from_fcm(
            fcm::Outcome::CredentialRejected {
                reason: "THIRD_PARTY_AUTH_ERROR".into(),
            },
            "t",
        );
        assert!(r.class.retryable() && r.rejected.is_none());
    }
}
