//! The provider contract.

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;

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

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Sends one rendered message. `tenant` scopes provider-side state.
    /// `msg.attempt_id` is stable across retries of the same attempt and must
    /// be passed to the provider as its idempotency key.
    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError>;
}
