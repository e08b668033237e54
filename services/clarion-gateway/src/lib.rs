//! The gateway: validates commands, turns them into events and appends them.
//!
//! Producers get an answer only once their events are durably in the log, so
//! an acknowledged trigger is never lost. Reads (notification status,
//! subscribers) come from the projections in the store. Configuration writes
//! (templates, workflows, keys) wait until the projector has applied them, so
//! a caller can use what it just created.

pub mod access;
pub mod analytics;
pub mod apps;
pub mod auth;
pub mod compliance;
pub mod compliance_grpc;
pub mod config_cache;
pub mod config_read;
pub mod dead_letter;
pub mod device_grpc;
pub mod devices;
pub mod digests;
pub mod error;
pub mod extract;
pub mod graphql;
pub mod http;
pub mod idempotency;
pub mod inbound;
pub mod inbox;
pub mod inbox_grpc;
pub mod keys;
pub mod notification;
pub mod notification_search;
pub mod openapi;
pub mod pagination;
pub mod preference_grpc;
pub mod preference_input;
pub mod preferences;
pub mod problem;
pub mod providers;
pub mod quarantine;
pub mod ratelimit;
pub mod rest;
pub mod rest_analytics;
pub mod rest_apps;
pub mod rest_compliance;
pub mod rest_dead_letters;
pub mod rest_devices;
pub mod rest_digests;
pub mod rest_exports;
pub mod rest_inbox;
pub mod rest_notifications;
pub mod rest_preferences;
pub mod rest_providers;
pub mod rest_schedules;
pub mod rest_settings;
pub mod rest_slas;
pub mod rest_subscribers;
pub mod schedule_grpc;
pub mod schedules;
pub mod settings;
pub mod settings_grpc;
pub mod slas;
pub mod state;
pub mod subscriber;
pub mod subscriber_token;
pub mod tenant;
pub mod topic_grpc;
pub mod tracking;
pub mod webhook_secret;
pub mod workflow;

use std::net::SocketAddr;

use clarion_proto::api;
pub use state::GatewayState;
use tokio::sync::watch;

/// Marks every service serving on the health endpoint (what load balancers
/// and `grpc_health_probe` ask per service).
async fn report_serving(health: &mut tonic_health::server::HealthReporter) {
    health
        .set_serving::<api::notification_service_server::NotificationServiceServer<notification::NotificationApi>>()
        .await;
    health
        .set_serving::<api::subscriber_service_server::SubscriberServiceServer<subscriber::SubscriberApi>>()
        .await;
    health
        .set_serving::<api::tenant_service_server::TenantServiceServer<tenant::TenantApi>>()
        .await;
    health
        .set_serving::<api::workflow_service_server::WorkflowServiceServer<workflow::WorkflowApi>>()
        .await;
    health
        .set_serving::<api::dead_letter_service_server::DeadLetterServiceServer<dead_letter::DeadLetterApi>>()
        .await;
    health
        .set_serving::<api::api_key_service_server::ApiKeyServiceServer<keys::ApiKeyApi>>()
        .await;
    health
        .set_serving::<api::quarantine_service_server::QuarantineServiceServer<quarantine::QuarantineApi>>()
        .await;
    health
        .set_serving::<api::preference_service_server::PreferenceServiceServer<preference_grpc::PreferenceApi>>()
        .await;
    health
        .set_serving::<api::topic_service_server::TopicServiceServer<topic_grpc::TopicApi>>()
        .await;
    health
        .set_serving::<api::device_service_server::DeviceServiceServer<device_grpc::DeviceApi>>()
        .await;
    health
        .set_serving::<api::inbox_service_server::InboxServiceServer<inbox_grpc::InboxApi>>()
        .await;
    // Issue #33 (p33-sched): schedules, quiet hours, calendar.
    health
        .set_serving::<api::schedule_service_server::ScheduleServiceServer<schedule_grpc::ScheduleApi>>()
        .await;
    health
        .set_serving::<api::quiet_hours_service_server::QuietHoursServiceServer<settings_grpc::QuietHoursApi>>()
        .await;
    health
        .set_serving::<api::calendar_service_server::CalendarServiceServer<settings_grpc::CalendarApi>>()
        .await;
    health
        .set_serving::<api::digest_service_server::DigestServiceServer<digests::DigestApi>>()
        .await;
    health
        .set_serving::<api::analytics_service_server::AnalyticsServiceServer<analytics::AnalyticsApi>>()
        .await;
}

/// Serves every gRPC service (plus health and reflection) on `incoming`
/// (bound to `addr` by [`bind_grpc`]) until `shutdown` turns true.
pub async fn serve_grpc(
    state: GatewayState,
    incoming: tonic::transport::server::TcpIncoming,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let (mut health, health_service) = tonic_health::server::health_reporter();
    report_serving(&mut health).await;
    let reflection = (state.security.reflection != access::ReflectionAccess::Off).then(|| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("descriptor sets are generated at build time")
    });
    // Last-used times of API keys, written in the background.
    tokio::spawn(access::maintain(state.clone(), shutdown.clone()));
    tracing::info!(%addr, "gRPC listening");
    tonic::transport::Server::builder()
        // Scope of every method and the tenant's rate limit (access.rs).
        .layer(access::AccessLayer(state.clone()))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(api::api_key_service_server::ApiKeyServiceServer::new(
            keys::ApiKeyApi(state.clone()),
        ))
        .add_service(
            api::notification_service_server::NotificationServiceServer::new(
                notification::NotificationApi(state.clone()),
            ),
        )
        .add_service(
            api::subscriber_service_server::SubscriberServiceServer::new(
                subscriber::SubscriberApi(state.clone()),
            ),
        )
        .add_service(api::workflow_service_server::WorkflowServiceServer::new(
            workflow::WorkflowApi(state.clone()),
        ))
        .add_service(
            api::dead_letter_service_server::DeadLetterServiceServer::new(
                dead_letter::DeadLetterApi(state.clone()),
            ),
        )
        .add_service(api::tenant_service_server::TenantServiceServer::new(
            tenant::TenantApi(state.clone()),
        ))
        .add_service(
            api::preference_service_server::PreferenceServiceServer::new(
                preference_grpc::PreferenceApi(state.clone()),
            ),
        )
        .add_service(api::topic_service_server::TopicServiceServer::new(
            topic_grpc::TopicApi(state.clone()),
        ))
        .add_service(api::device_service_server::DeviceServiceServer::new(
            device_grpc::DeviceApi(state.clone()),
        ))
        .add_service(api::inbox_service_server::InboxServiceServer::new(
            inbox_grpc::InboxApi(state.clone()),
        ))
        // Issue #33 (p33-sched): schedules, quiet hours, calendar.
        .add_service(api::schedule_service_server::ScheduleServiceServer::new(
            schedule_grpc::ScheduleApi(state.clone()),
        ))
        .add_service(
            api::quiet_hours_service_server::QuietHoursServiceServer::new(
                settings_grpc::QuietHoursApi(state.clone()),
            ),
        )
        .add_service(api::calendar_service_server::CalendarServiceServer::new(
            settings_grpc::CalendarApi(state.clone()),
        ))
        .add_service(api::digest_service_server::DigestServiceServer::new(
            digests::DigestApi(state.clone()),
        ))
        .add_service(api::analytics_service_server::AnalyticsServiceServer::new(
            analytics::AnalyticsApi(state.clone()),
        ))
        // Issue #32: legal holds and retention.
        .add_service(
            api::compliance_service_server::ComplianceServiceServer::new(
                compliance_grpc::ComplianceApi(state.clone()),
            ),
        )
        // Issue #31: tenant providers and SLAs.
        .add_service(api::provider_service_server::ProviderServiceServer::new(
            providers::ProviderApi(state.clone()),
        ))
        .add_service(api::sla_service_server::SlaServiceServer::new(
            slas::SlaApi(state.clone()),
        ))
        .add_service(
            api::quarantine_service_server::QuarantineServiceServer::new(
                quarantine::QuarantineApi(state),
            ),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// Binds the gRPC listener (with `TCP_NODELAY` on accepted connections).
/// Bound before the server is spawned, so that once the process reports it
/// is running, connections are accepted, and a port in use fails the start.
pub fn bind_grpc(
    addr: SocketAddr,
) -> Result<tonic::transport::server::TcpIncoming, Box<dyn std::error::Error + Send + Sync>> {
    tonic::transport::server::TcpIncoming::new(addr, true, None)
}
