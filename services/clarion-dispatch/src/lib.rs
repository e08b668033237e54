//! Dispatch: turning a `DispatchRequested` event into a message at a provider.
//!
//! The dispatcher is a partition processor over the dispatch topic. The sink
//! provider records its delivery inside the processor's commit (exactly once);
//! every other provider is an effect run after the commit (at least once), and
//! carries the attempt id as its idempotency key so a repeat after a crash is
//! recognisable downstream (same Message-ID, same idempotency header).
//!
//! Outbound requests to tenant-controlled URLs pass the SSRF guard
//! ([`ssrf`]); secrets Clarion keeps are sealed with the master keyring
//! ([`secrets`]); webhooks are signed per tenant ([`tenant_secrets`]).
//!
//! A channel may have several providers in priority order ([`failover`]):
//! a send passes over a provider whose circuit breaker ([`breaker`]) is
//! open or that fails on its side, under the same attempt id. Besides SMTP
//! and Twilio, email goes through SendGrid's v3 API ([`sendgrid`]) and SMS
//! through Vonage's ([`vonage`]).
//!
//! Push ([`push`]) fans one request out to the subscriber's devices through
//! APNs ([`apns`]) and FCM ([`fcm`]); its per-device outcomes and dead
//! tokens are events of their own ([`Report`]).

pub mod alert_sinks;
pub mod apns;
pub mod breaker;
pub mod device_token;
pub mod dispatcher;
pub mod failover;
pub mod fcm;
pub mod provider;
pub mod push;
pub use clarion_runtime::secrets;
pub mod sendgrid;
pub mod smtp;
pub mod ssrf;
pub mod tenant_providers;
pub mod tenant_secrets;
pub mod twilio;
pub mod vonage;
pub mod webhook;

pub use dispatcher::{DispatchEffects, Dispatcher, DISPATCHER};
pub use provider::{Provider, Report, SendError, SendOutcome};
