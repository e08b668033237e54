//! The Clarion binary's library: configuration, roles and bootstrap, shared by
//! `main.rs` and the end-to-end tests (which run roles in-process as tasks).

pub mod alerts;
pub mod audit_cli;
pub mod bootstrap;
pub mod client;
pub mod client_compliance;
pub mod client_devices;
pub mod client_providers;
pub mod client_schedules;
pub mod config;
pub mod export_cli;
pub mod roles;
pub mod secrets;
pub mod sla;
pub mod telemetry;
pub mod warehouse_cli;

pub use config::Config;
pub use roles::{Node, Role};
