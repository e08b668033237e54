//! Apple Push Notification service: HTTP/2 over TLS to
//! `{base}/3/device/{token}`, authenticated with an ES256 provider token
//! ([`signer`]), answers classified for the token registry, the operator and
//! the retry policy ([`outcome`]).
//!
//! One [`ApnsClient`] per app and environment holds one multiplexed HTTP/2
//! connection; concurrent sends are concurrent streams on it (Apple asks
//! providers to keep connections open rather than reconnect per push).
//! The `push` provider ([`crate::push`]) holds one client per tenant, app
//! and environment.

mod client;
mod outcome;
mod signer;

pub use client::{apns_id_for_attempt, ApnsClient, ApnsRequest, Priority, PushType};
pub use outcome::{classify_error, Outcome};
pub use signer::{SignerError, TokenSigner, MIN_REUSE, REFRESH_AFTER};

use serde::{Deserialize, Serialize};

/// Which APNs the app's tokens belong to: a sandbox token is
/// `BadDeviceToken` in production and vice versa.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Environment {
    Sandbox,
    #[default]
    Production,
}

impl Environment {
    pub fn default_base_url(self) -> &'static str {
        match self {
            Environment::Sandbox => "https://api.sandbox.push.apple.com",
            Environment::Production => "https://api.push.apple.com",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApnsConfig {
    #[serde(default)]
    pub environment: Environment,
    /// Overrides the environment's Apple host (a relay, or a test server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The Apple developer team id: the JWT's `iss`.
    pub team_id: String,
    /// The id of the signing key: the JWT's `kid`.
    pub key_id: String,
    /// The `.p8` file's contents (PKCS#8 PEM, P-256).
    pub key_pem: String,
    /// The app's bundle id: `apns-topic` (variants such as `.voip` are set
    /// per request).
    pub topic: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl ApnsConfig {
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or_else(|| self.environment.default_base_url())
            .trim_end_matches('/')
    }
}
