//! The provider contract.

use async_trait::async_trait;
use clarion_domain::Payload;
use clarion_proto::events::DispatchRequested;
use clarion_runtime::Topic;

/// What a provider reports for an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    pub provider_message_id: String,
    /// The provider confirmed delivery synchronously (a webhook's 2xx); for
    /// email, acceptance by the SMTP server is only "sent".
    pub delivered: bool,
}

/// Why a send failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub retryable: bool,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> SendError {
        SendError {
            retryable: true,
            message: message.into(),
        }
    }

    pub fn terminal(message: impl Into<String>) -> SendError {
        SendError {
            retryable: false,
            message: message.into(),
        }
    }
}

/// A send's outcome and the events of its own a provider reports with it
/// (a push: one outcome per device, a dead token for the subscriber's
/// stream). The dispatcher emits `extra` after the outcome's events, in
/// order, with ids derived from the request and the position, so a repeat
/// of the send after a crash yields the same ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub result: Result<SendOutcome, SendError>,
    pub extra: Vec<(Topic, Payload)>,
}

impl From<Result<SendOutcome, SendError>> for Report {
    fn from(result: Result<SendOutcome, SendError>) -> Report {
        Report {
            result,
            extra: Vec::new(),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Sends one rendered message. `tenant` scopes provider-side state.
    /// `msg.attempt_id` is stable across retries of the same attempt and must
    /// be passed to the provider as its idempotency key.
    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError>;

    /// The send with the events it reports besides its outcome; what the
    /// dispatcher calls. Providers with such events override it.
    async fn send_reported(&self, tenant: &str, msg: &DispatchRequested) -> Report {
        self.send(tenant, msg).await.into()
    }
}
