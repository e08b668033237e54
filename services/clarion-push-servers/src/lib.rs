//! Local servers that speak the push providers' wire formats, shared by the
//! dispatcher's tests, the end-to-end tests and the push benchmark (one copy):
//!
//! * [`apns::ApnsServer`]: HTTP/2 over TLS with a certificate made at start
//!   (rcgen); checks the ES256 provider token with the public half of the
//!   `.p8` key and the headers Apple requires; records requests; answers
//!   per token as scripted (e.g. 410 with a timestamp).
//! * [`fcm::FcmServer`]: Google's OAuth2 token endpoint (verifies the RS256
//!   assertion, issues its own access tokens) and `messages:send` (accepts
//!   only a token it issued); records messages; scripted errors per token or
//!   in order.
//!
//! * [`sendgrid::SendgridServer`]: SendGrid v3 `mail/send` (bearer key,
//!   JSON body, `202` with `X-Message-Id`); scripted outages.
//! * [`vonage::VonageServer`]: Vonage's SMS API `sms/json` (JSON or form,
//!   `messages[].status`); scripted outages.
//!
//! Not a mock of Clarion: these stand in for Apple's, Google's, SendGrid's
//! and Vonage's servers.

pub mod apns;
pub mod fcm;
mod script;
pub mod sendgrid;
pub mod vonage;

pub use script::Hook;
