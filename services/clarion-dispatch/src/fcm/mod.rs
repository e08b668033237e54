//! Firebase Cloud Messaging, HTTP v1: `POST {base}/v1/projects/{project}/messages:send`
//! with an OAuth2 access token ([`auth`]) obtained from a Google service
//! account; the message JSON ([`message`]); answers classified for the token
//! registry, the operator and the retry policy ([`outcome`]).
//!
//! The `push` provider ([`crate::push`]) holds one client per tenant and app.

mod auth;
mod client;
mod message;
mod outcome;

pub use auth::{AuthError, ServiceAccount, TokenSource, REFRESH_MARGIN, SCOPE};
pub use client::FcmClient;
pub use message::{
    data_from_json, AndroidConfig, AndroidNotification, AndroidPriority, ApnsOverride, DataError,
    FcmMessage, Notification, WebpushConfig,
};
pub use outcome::{classify_error, Outcome};

use serde::{Deserialize, Serialize};

pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FcmConfig {
    /// The service account's JSON key file, as downloaded from the Google
    /// Cloud console (`client_email`, `private_key`, `token_uri`, `project_id`).
    pub service_account_json: String,
    /// Overrides the key file's `project_id` (a key of another project
    /// allowed to send for this one).
    #[serde(default)]
    pub project_id: Option<String>,
    /// Overrides `https://fcm.googleapis.com` (a relay, or a test server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Overrides the key file's `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl FcmConfig {
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
    }
}
