//! The end-to-end suite in one test binary: every scenario starts real
//! Clarion nodes in-process (or as processes) against real SMTP, HTTP,
//! Kafka (tansu) and Chromium. One binary instead of one per file: the
//! workspace links Clarion once for all of them (48 links filled the CI
//! runner's disk). Run one scenario with `cargo test -p clarion --test e2e <module>::`.
//! `e2e_tracing` (installs the process-wide tracer) and `helm_chart`
//! (changes the environment) stay binaries of their own.

mod support;
mod webhook_support;

mod alerts;
mod analytics;
mod audit;
mod budgets;
mod compliance;
mod console_browser;
mod console_compliance;
mod console_dashboards;
mod console_dead_letters;
mod console_notifications;
mod console_session;
mod console_subscribers;
mod console_workflows;
mod crash_safety;
mod devices;
mod digest_crash;
mod digests;
mod dlq;
mod embedded;
mod export;
mod failover;
mod graphql;
mod idempotency;
mod inbox;
mod isolation;
mod kafka;
mod kafka_group;
mod notification_search;
mod openapi;
mod personal;
mod preference_center;
mod preferences;
mod push;
mod push_providers;
mod quarantine;
mod schedules;
mod scheduling;
mod serve_smoke;
mod sla;
mod ssrf;
mod tenant_isolation;
mod tenant_providers;
mod warehouse;
mod warehouse_s3;
mod webhook;
mod workflow;
