//! The providers' wire tests in one test binary: each module runs a provider
//! against a local server speaking its real wire format.

mod apns;
mod fcm;
mod http_providers;
mod push_provider;
mod webhook_provider;
