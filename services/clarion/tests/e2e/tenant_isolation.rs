//! Two tenants everywhere: for every gRPC method and every REST route
//! (GraphQL's `POST /graphql` among them),
//! tenant B's key on tenant A's ids gets not-found or permission-denied (or,
//! for calls that write into B's own namespace, a result with none of A's
//! data), and A's data is unchanged afterwards. The tables below must list
//! every method the proto declares and every REST route of the gateway, so
//! the test grows with the API.
//!
//! Also: scopes per method, minting bounded by the minter, revoked and
//! expired keys answered uniformly, and the per-tenant request rate limit.
//! Time is the manual clock (expiry and token refill move only when told).

// Calls answer with tonic's `Status` as they come, for the table to compare.
#![allow(clippy::result_large_err)]

use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_gateway::access::{GRPC_METHODS, REST_ROUTES};
use clarion_gateway::auth::INVALID_KEY;
use clarion_gateway::ratelimit::Rate;
use clarion_proto::api;
use clarion_runtime::ManualClock;
use support::*;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

type Workflows = api::workflow_service_client::WorkflowServiceClient<Channel>;
type DeadLetters = api::dead_letter_service_client::DeadLetterServiceClient<Channel>;
type Keys = api::api_key_service_client::ApiKeyServiceClient<Channel>;
type Quarantine = api::quarantine_service_client::QuarantineServiceClient<Channel>;
type Prefs = api::preference_service_client::PreferenceServiceClient<Channel>;
type Topics = api::topic_service_client::TopicServiceClient<Channel>;
type Devices = api::device_service_client::DeviceServiceClient<Channel>;
type Inbox = api::inbox_service_client::InboxServiceClient<Channel>;
type Schedules = api::schedule_service_client::ScheduleServiceClient<Channel>;
type Quiet = api::quiet_hours_service_client::QuietHoursServiceClient<Channel>;
type Calendar = api::calendar_service_client::CalendarServiceClient<Channel>;
type Digests = api::digest_service_client::DigestServiceClient<Channel>;
type Analytics = api::analytics_service_client::AnalyticsServiceClient<Channel>;

/// Every role in-process on the manual clock, with the REST routes served.
struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    clock: ManualClock,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    async fn start(cfg: Config) -> Running {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let clock = ManualClock::new(now);
        let node = Node::open(cfg.clone())
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // Analytics too: A's sends are counted, and B's reports must not
        // show them.
        for role in [
            Role::Projector,
            Role::Router,
            Role::Dispatcher,
            Role::Analytics,
        ] {
            node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
        }
        let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
        node.spawn_role(Role::Gateway, &mut tasks, admin, &rx)
            .await
            .unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let routes = node.tracking_routes().await.unwrap();
        let listener = tokio::net::TcpListener::bind(http).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(cfg.grpc.listen).is_err() {
            assert!(Instant::now() < deadline, "gRPC did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Running {
            grpc: cfg.grpc.listen,
            http,
            clock,
            shutdown,
            tasks,
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("role task panicked").expect("role failed");
        }
    }
}

/// An HTTP/1.1 request; returns the status, the headers and the body.
async fn rest(method: &str, url: &str, key: &str, body: &str) -> (u16, String, String) {
    http_call(method, url, key, body).await
}

/// What tenant A owns, and the strings only A's data contains.
struct TenantA {
    key: String,
    key_id: String,
    notification_id: String,
    /// A device of A's subscriber `A_ONLY_SUB`.
    device_id: String,
    markers: Vec<String>,
}

const A_EMAIL: &str = "secret-a@acme.test";
const A_PHONE: &str = "+15005550001";
const A_BODY: &str = "ACME-ONLY-TEMPLATE-BODY";
const A_FLOW_NAME: &str = "ACME-ONLY-WORKFLOW-NAME";
const A_TOPIC_TEXT: &str = "ACME-ONLY-TOPIC-DESCRIPTION";
/// A subscriber and topics only tenant A has.
const A_ONLY_SUB: &str = "acme-only-sub";
const A_ONLY_TOPIC: &str = "acme-only-topic";
/// Apps: A has both, B configures one of the same id in its own namespace.
const A_ONLY_APP: &str = "acme-only-app";
const A_APP_NAME: &str = "ACME-ONLY-APP-NAME";
/// Scheduling (issue #33): a schedule only A has (its payload a marker),
/// and A's quiet hours and calendar in a zone only A uses.
const A_ONLY_SCHEDULE: &str = "acme-only-schedule";
const A_SCHEDULE_TEXT: &str = "ACME-ONLY-SCHEDULE-PAYLOAD";
const A_ZONE: &str = "Pacific/Chatham";
/// Issue #31: A's own SendGrid key (never in any answer, to anyone) and
/// an SLA only A has.
const A_SG_KEY: &str = "SG.ACME-ONLY-SENDGRID-KEY";
const A_ONLY_SLA: &str = "acme-only-sla";

type ProviderApi = api::provider_service_client::ProviderServiceClient<Channel>;
type SlaApi = api::sla_service_client::SlaServiceClient<Channel>;

/// A's credentials, sms route and SLA (issue #31).
async fn provider_data(ch: &Channel, a_key: &str) {
    ProviderApi::new(ch.clone())
        .set_credentials(authed(
            a_key,
            api::SetProviderCredentialsRequest {
                provider: "sendgrid".into(),
                credentials: [("api_key".to_string(), A_SG_KEY.to_string())].into(),
            },
        ))
        .await
        .unwrap();
    ProviderApi::new(ch.clone())
        .set_route(authed(
            a_key,
            api::ProviderRoute {
                channel: "sms".into(),
                providers: vec!["twilio".into(), "vonage".into()],
                demoted: vec![],
            },
        ))
        .await
        .unwrap();
    SlaApi::new(ch.clone())
        .set_sla(authed(a_key, sla_of(A_ONLY_SLA)))
        .await
        .unwrap();
}

fn sla_of(id: &str) -> api::Sla {
    api::Sla {
        sla_id: id.into(),
        channel: "sms".into(),
        target_ratio: 0.99,
        threshold_ms: 60_000,
        window_ms: 3_600_000,
        ..Default::default()
    }
}

/// A's schedule, tenant quiet hours, subscriber quiet hours and calendar.
async fn scheduling_data(ch: &Channel, a_key: &str) {
    Schedules::new(ch.clone())
        .create(authed(
            a_key,
            api::CreateScheduleRequest {
                schedule_id: A_ONLY_SCHEDULE.into(),
                workflow_id: "acme-private".into(),
                subscriber_ids: vec![A_ONLY_SUB.into()],
                cron: "0 9 * * *".into(),
                timezone: A_ZONE.into(),
                payload_json: format!(r#"{{"note":"{A_SCHEDULE_TEXT}"}}"#),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let quiet = api::QuietHoursSettings {
        enabled: true,
        timezone: A_ZONE.into(),
        rules: vec![api::QuietHoursRule {
            start: "22:00".into(),
            end: "07:00".into(),
            policy: "hold".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Quiet::new(ch.clone())
        .set_tenant(authed(a_key, quiet.clone()))
        .await
        .unwrap();
    Quiet::new(ch.clone())
        .set_subscriber(authed(
            a_key,
            api::QuietHoursSettings {
                subscriber_id: A_ONLY_SUB.into(),
                ..quiet
            },
        ))
        .await
        .unwrap();
    Calendar::new(ch.clone())
        .set(authed(
            a_key,
            api::TenantCalendar {
                default_timezone: A_ZONE.into(),
                holidays: vec!["2031-07-14".into()],
                version: 0,
            },
        ))
        .await
        .unwrap();
}

/// A's apps (`acme-app`, [`A_ONLY_APP`]) and a device of `A_ONLY_SUB`;
/// returns the device id.
async fn device_data(ch: &Channel, a_key: &str) -> String {
    for id in ["acme-app", A_ONLY_APP] {
        Devices::new(ch.clone())
            .configure_app(authed(
                a_key,
                api::App {
                    app_id: id.into(),
                    name: A_APP_NAME.into(),
                    platforms: vec!["android".into()],
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    Devices::new(ch.clone())
        .register_device(authed(
            a_key,
            api::RegisterDeviceRequest {
                subscriber_id: A_ONLY_SUB.into(),
                app_id: A_ONLY_APP.into(),
                platform: "android".into(),
                token: "acme-fcm-token".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .device_id
}

fn sms_flow(name: &str) -> String {
    sms_flow_id("job-sms", name)
}

fn sms_flow_id(id: &str, name: &str) -> String {
    format!(
        "id: {id}\nname: {name}\ncancel_key: job\nsteps:\n  - {{ id: text, type: send, channel: sms, template: job-sms, provider: twilio }}\n"
    )
}

/// A template, a workflow, a subscriber, a notification that ended in the
/// dead-letter queue (the provider refuses A's number), and limits.
async fn tenant_data(
    ch: &Channel,
    tenant: &str,
    email: &str,
    phone: &str,
    body: &str,
    name: &str,
) -> (String, String) {
    let key = create_tenant(ch, tenant).await;
    Tenants::new(ch.clone())
        .put_template(authed(
            &key,
            api::Template {
                template_id: "job-sms".into(),
                channel: "sms".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: String::new(),
                    body: body.into(),
                }],
            },
        ))
        .await
        .unwrap();
    apply_workflows(ch, &key, &[&sms_flow(name)]).await;
    Subscribers::new(ch.clone())
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: "sub-1".into(),
                email: email.into(),
                phone: phone.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let id = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                workflow_id: "job-sms".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "sub-1".into(),
                    ..Default::default()
                }],
                payload_json: r#"{"job":"J-1"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids[0]
        .clone();
    (key, id)
}

async fn setup_two_tenants(ch: &Channel) -> (TenantA, String) {
    let (a_key, a_id) = tenant_data(ch, "acme", A_EMAIL, A_PHONE, A_BODY, A_FLOW_NAME).await;
    // B's subscriber gets a number the provider accepts: B has a sent
    // notification, A a dead letter.
    let (b_key, _) = tenant_data(
        ch,
        "globex",
        "b@globex.test",
        "+15145550199",
        "globex body",
        "Globex flow",
    )
    .await;
    // A workflow id only A has.
    apply_workflows(ch, &a_key, &[&sms_flow_id("acme-private", A_FLOW_NAME)]).await;
    // A subscriber and a topic only A has.
    Subscribers::new(ch.clone())
        .upsert(authed(
            &a_key,
            api::Subscriber {
                subscriber_id: A_ONLY_SUB.into(),
                email: A_EMAIL.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    for id in ["acme-topic", A_ONLY_TOPIC] {
        Topics::new(ch.clone())
            .register(authed(
                &a_key,
                api::Topic {
                    topic_id: id.into(),
                    description: A_TOPIC_TEXT.into(),
                    default_opt_in: true,
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    let n = wait_status(ch, &a_key, &a_id, "dead_lettered", Duration::from_secs(30)).await;
    assert_eq!(n.status, "dead_lettered", "{n:?}");
    let a_keys = Keys::new(ch.clone())
        .list(authed(&a_key, api::ListApiKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let key_id = a_keys[0].key_id.clone();
    let device_id = device_data(ch, &a_key).await;
    scheduling_data(ch, &a_key).await;
    provider_data(ch, &a_key).await;
    // Content first, then ids (see `check`).
    let markers = vec![
        A_EMAIL.to_string(),
        A_PHONE.to_string(),
        A_BODY.to_string(),
        A_FLOW_NAME.to_string(),
        A_TOPIC_TEXT.to_string(),
        a_id.clone(),
        key_id.clone(),
        device_id.clone(),
        A_APP_NAME.to_string(),
        A_SCHEDULE_TEXT.to_string(),
        A_ZONE.to_string(),
        "2031-07-14".to_string(),
        A_SG_KEY.to_string(),
    ];
    (
        TenantA {
            key: a_key,
            key_id,
            notification_id: a_id,
            device_id,
            markers,
        },
        b_key,
    )
}

/// What B may get when it names A's ids.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Not found or permission denied.
    Denied,
    /// Refused with this code (e.g. an unknown workflow is a field error).
    Refused(Code),
    /// The call acts in B's own namespace: any answer, with none of A's data.
    OwnOnly,
}

type Call =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, tonic::Status>> + Send>>;

fn ok<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
) -> Result<String, tonic::Status> {
    r.map(|r| format!("{:?}", r.into_inner()))
}

/// Every gRPC method with B's key on A's ids. Reads come before B's
/// writes (B's upsert of A's subscriber id makes B its own subscriber).
type Compliance = api::compliance_service_client::ComplianceServiceClient<Channel>;

fn grpc_table(ch: &Channel, b: &str, a: &TenantA) -> Vec<(&'static str, Expect, Call)> {
    let (ch, b, nid, kid) = (
        ch.clone(),
        b.to_string(),
        a.notification_id.clone(),
        a.key_id.clone(),
    );
    let mut t: Vec<(&'static str, Expect, Call)> = Vec::new();
    macro_rules! row {
        ($path:literal, $expect:expr, |$c:ident, $k:ident| $body:expr) => {{
            let ($c, $k) = (ch.clone(), b.clone());
            let fut: Call = Box::pin(async move { $body });
            t.push(($path, $expect, fut));
        }};
    }
    let nid2 = nid.clone();
    row!(
        "/clarion.v1.NotificationService/GetNotification",
        Expect::Denied,
        |c, k| ok(Notifications::new(c)
            .get_notification(authed(
                &k,
                api::GetNotificationRequest {
                    notification_id: nid2
                }
            ))
            .await)
    );
    let nid2 = nid.clone();
    row!(
        "/clarion.v1.NotificationService/Acknowledge",
        Expect::Denied,
        |c, k| ok(Notifications::new(c)
            .acknowledge(authed(
                &k,
                api::AcknowledgeRequest {
                    notification_id: nid2,
                    kind: "acknowledged".into(),
                    attempt_id: String::new()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.WorkflowService/Get",
        Expect::Denied,
        |c, k| ok(Workflows::new(c)
            .get(authed(
                &k,
                api::GetWorkflowRequest {
                    workflow_id: "acme-private".into(),
                    version: 0
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.WorkflowService/List",
        Expect::OwnOnly,
        |c, k| ok(Workflows::new(c)
            .list(authed(&k, api::ListWorkflowsRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.DeadLetterService/List",
        Expect::OwnOnly,
        |c, k| ok(DeadLetters::new(c)
            .list(authed(&k, api::ListDeadLettersRequest::default()))
            .await)
    );
    let nid2 = nid.clone();
    row!(
        "/clarion.v1.DeadLetterService/Show",
        Expect::Denied,
        |c, k| ok(DeadLetters::new(c)
            .show(authed(
                &k,
                api::DeadLetterRef {
                    notification_id: nid2
                }
            ))
            .await)
    );
    let nid2 = nid.clone();
    row!(
        "/clarion.v1.DeadLetterService/Retry",
        Expect::Denied,
        |c, k| ok(DeadLetters::new(c)
            .retry(authed(
                &k,
                api::DeadLetterAction {
                    notification_id: nid2,
                    note: "b".into()
                }
            ))
            .await)
    );
    let nid2 = nid.clone();
    row!(
        "/clarion.v1.DeadLetterService/Discard",
        Expect::Denied,
        |c, k| ok(DeadLetters::new(c)
            .discard(authed(
                &k,
                api::DeadLetterAction {
                    notification_id: nid2,
                    note: "b".into()
                }
            ))
            .await)
    );
    // Compliance (issue #32): B acts on its own tenant; A's ids are unknown to it.
    row!(
        "/clarion.v1.SubscriberService/Erase",
        Expect::Denied,
        |c, k| ok(Subscribers::new(c)
            .erase(authed(
                &k,
                api::EraseSubscriberRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    reason: "isolation".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/ListHolds",
        Expect::OwnOnly,
        |c, k| ok(Compliance::new(c)
            .list_holds(authed(&k, api::ListHoldsRequest::default()))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/ExtendHold",
        Expect::Denied,
        |c, k| ok(Compliance::new(c)
            .extend_hold(authed(
                &k,
                api::ExtendHoldRequest {
                    hold_id: "hold-of-acme".into(),
                    reason: "isolation".into(),
                    expires_at_ms: 0
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/ReleaseHold",
        Expect::Denied,
        |c, k| ok(Compliance::new(c)
            .release_hold(authed(
                &k,
                api::ReleaseHoldRequest {
                    hold_id: "hold-of-acme".into(),
                    reason: "isolation".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/GetRetentionPolicy",
        Expect::OwnOnly,
        |c, k| ok(Compliance::new(c)
            .get_retention_policy(authed(&k, api::GetRetentionPolicyRequest::default()))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/PlaceHold",
        Expect::OwnOnly,
        |c, k| ok(Compliance::new(c)
            .place_hold(authed(
                &k,
                api::PlaceHoldRequest {
                    scope: None,
                    reason: "isolation".into(),
                    expires_at_ms: 0
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/CreateExport",
        Expect::OwnOnly,
        |c, k| ok(Compliance::new(c)
            .create_export(authed(
                &k,
                api::CreateExportRequest {
                    from: "2026-01-01".into(),
                    until: "2026-12-31".into(),
                    purpose: "isolation".into(),
                    subscriber_id: A_ONLY_SUB.into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ComplianceService/SetRetentionPolicy",
        Expect::OwnOnly,
        |c, k| ok(Compliance::new(c)
            .set_retention_policy(authed(
                &k,
                api::RetentionPolicy {
                    rules: vec![api::RetentionRule {
                        channel: "*".into(),
                        country: "*".into(),
                        redact_bodies_after_days: 30,
                        shred_subscriber_after_days: 0
                    }],
                    ..Default::default()
                }
            ))
            .await)
    );
    // Tenant providers and SLAs (issue #31): A's are unknown to B; B's
    // writes land in its own namespace (after its reads).
    row!(
        "/clarion.v1.ProviderService/GetCredentials",
        Expect::Denied,
        |c, k| ok(ProviderApi::new(c)
            .get_credentials(authed(
                &k,
                api::GetProviderCredentialsRequest {
                    provider: "sendgrid".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ProviderService/ListCredentials",
        Expect::OwnOnly,
        |c, k| ok(ProviderApi::new(c)
            .list_credentials(authed(&k, api::ListProviderCredentialsRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.ProviderService/DeleteCredentials",
        Expect::Denied,
        |c, k| ok(ProviderApi::new(c)
            .delete_credentials(authed(
                &k,
                api::DeleteProviderCredentialsRequest {
                    provider: "sendgrid".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ProviderService/GetRoute",
        Expect::Denied,
        |c, k| ok(ProviderApi::new(c)
            .get_route(authed(
                &k,
                api::GetProviderRouteRequest {
                    channel: "sms".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ProviderService/DeleteRoute",
        Expect::Denied,
        |c, k| ok(ProviderApi::new(c)
            .delete_route(authed(
                &k,
                api::DeleteProviderRouteRequest {
                    channel: "sms".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ProviderService/SetCredentials",
        Expect::OwnOnly,
        |c, k| ok(ProviderApi::new(c)
            .set_credentials(authed(
                &k,
                api::SetProviderCredentialsRequest {
                    provider: "vonage".into(),
                    credentials: [
                        ("api_key".to_string(), "globex-key".to_string()),
                        ("api_secret".to_string(), "globex-secret".to_string())
                    ]
                    .into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ProviderService/SetRoute",
        Expect::OwnOnly,
        |c, k| ok(ProviderApi::new(c)
            .set_route(authed(
                &k,
                api::ProviderRoute {
                    channel: "email".into(),
                    providers: vec!["smtp".into()],
                    demoted: vec![]
                }
            ))
            .await)
    );
    row!("/clarion.v1.SlaService/GetSla", Expect::Denied, |c, k| ok(
        SlaApi::new(c)
            .get_sla(authed(
                &k,
                api::GetSlaRequest {
                    sla_id: A_ONLY_SLA.into()
                }
            ))
            .await
    ));
    row!(
        "/clarion.v1.SlaService/GetSlaStatus",
        Expect::Denied,
        |c, k| ok(SlaApi::new(c)
            .get_sla_status(authed(
                &k,
                api::GetSlaRequest {
                    sla_id: A_ONLY_SLA.into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.SlaService/DeleteSla",
        Expect::Denied,
        |c, k| ok(SlaApi::new(c)
            .delete_sla(authed(
                &k,
                api::DeleteSlaRequest {
                    sla_id: A_ONLY_SLA.into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.SlaService/ListSlas",
        Expect::OwnOnly,
        |c, k| ok(SlaApi::new(c)
            .list_slas(authed(&k, api::ListSlasRequest {}))
            .await)
    );
    row!("/clarion.v1.SlaService/SetSla", Expect::OwnOnly, |c, k| ok(
        SlaApi::new(c)
            .set_sla(authed(&k, sla_of("globex-sla")))
            .await
    ));
    row!(
        "/clarion.v1.SubscriberService/Get",
        Expect::OwnOnly,
        |c, k| ok(
            // B has its own sub-1: it must get its own, never A's.
            Subscribers::new(c)
                .get(authed(
                    &k,
                    api::GetSubscriberRequest {
                        subscriber_id: "sub-1".into()
                    }
                ))
                .await
        )
    );
    row!(
        "/clarion.v1.TenantService/GetLimits",
        Expect::OwnOnly,
        |c, k| ok(Tenants::new(c)
            .get_limits(authed(&k, api::GetLimitsRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.ApiKeyService/List",
        Expect::OwnOnly,
        |c, k| ok(Keys::new(c)
            .list(authed(&k, api::ListApiKeysRequest {}))
            .await)
    );
    let kid2 = kid.clone();
    row!(
        "/clarion.v1.ApiKeyService/Revoke",
        Expect::Denied,
        |c, k| ok(Keys::new(c)
            .revoke(authed(&k, api::RevokeApiKeyRequest { key_id: kid2 }))
            .await)
    );
    row!(
        "/clarion.v1.TenantService/CreateTenant",
        Expect::Denied,
        |c, k| ok(
            // A tenant key is not the operator's token, whatever tenant it names.
            Tenants::new(c)
                .create_tenant(authed(
                    &k,
                    api::CreateTenantRequest {
                        tenant_id: "acme".into(),
                        name: String::new()
                    }
                ))
                .await
        )
    );
    row!(
        "/clarion.v1.TenantService/RotateWebhookSecret",
        // B rotates its own secret: the answer is B's new secret, nothing of A's.
        Expect::OwnOnly,
        |c, k| ok(Tenants::new(c)
            .rotate_webhook_secret(authed(
                &k,
                api::RotateWebhookSecretRequest {
                    overlap_seconds: Some(0)
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.QuarantineService/List",
        // Operator only: a tenant key is not the admin token.
        Expect::Denied,
        |c, k| ok(Quarantine::new(c)
            .list(authed(&k, api::ListQuarantineRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.QuarantineService/Show",
        Expect::Denied,
        |c, k| ok(Quarantine::new(c)
            .show(authed(
                &k,
                api::LogRecordRef {
                    topic: "clarion.triggers".into(),
                    partition: 0,
                    offset: 0
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.QuarantineService/Park",
        Expect::Denied,
        |c, k| ok(Quarantine::new(c)
            .park(authed(
                &k,
                api::ParkRecordRequest {
                    processor: "router".into(),
                    topic: "clarion.triggers".into(),
                    partition: 0,
                    offset: 0,
                    note: "b".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/GetPreferences",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .get_preferences(authed(
                &k,
                api::GetPreferencesRequest {
                    subscriber_id: A_ONLY_SUB.into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/Evaluate",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .evaluate(authed(
                &k,
                api::EvaluateRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    workflow_id: "acme-private".into(),
                    channel: "sms".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/History",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .history(authed(
                &k,
                api::PreferenceHistoryRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!("/clarion.v1.TopicService/Get", Expect::Denied, |c, k| ok(
        Topics::new(c)
            .get(authed(
                &k,
                api::GetTopicRequest {
                    topic_id: A_ONLY_TOPIC.into()
                }
            ))
            .await
    ));
    row!("/clarion.v1.TopicService/List", Expect::OwnOnly, |c, k| ok(
        Topics::new(c)
            .list(authed(&k, api::ListTopicsRequest {}))
            .await
    ));
    // DeviceService: A's app and A's subscriber's device by their ids;
    // B's ConfigureApp of A's app id makes an app of B's own.
    let dev = a.device_id.clone();
    row!(
        "/clarion.v1.DeviceService/GetApp",
        Expect::Denied,
        |c, k| ok(Devices::new(c)
            .get_app(authed(
                &k,
                api::GetAppRequest {
                    app_id: A_ONLY_APP.into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.DeviceService/ListApps",
        Expect::OwnOnly,
        |c, k| ok(Devices::new(c)
            .list_apps(authed(&k, api::ListAppsRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.DeviceService/ListDevices",
        Expect::Denied,
        |c, k| ok(Devices::new(c)
            .list_devices(authed(
                &k,
                api::ListDevicesRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    include_inactive: true
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.DeviceService/RegisterDevice",
        Expect::Denied,
        |c, k| ok(Devices::new(c)
            .register_device(authed(
                &k,
                api::RegisterDeviceRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    app_id: A_ONLY_APP.into(),
                    platform: "android".into(),
                    token: "b-token".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    let dev2 = dev.clone();
    row!(
        "/clarion.v1.DeviceService/RotateDevice",
        Expect::Denied,
        |c, k| ok(Devices::new(c)
            .rotate_device(authed(
                &k,
                api::RotateDeviceRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    device_id: dev2,
                    new_token: "b-token".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.DeviceService/RevokeDevice",
        Expect::Denied,
        |c, k| ok(Devices::new(c)
            .revoke_device(authed(
                &k,
                api::RevokeDeviceRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    device_id: dev
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.DeviceService/ConfigureApp",
        Expect::OwnOnly,
        |c, k| ok(Devices::new(c)
            .configure_app(authed(
                &k,
                api::App {
                    app_id: "acme-app".into(),
                    name: "B's own".into(),
                    platforms: vec!["ios".into()],
                    ios_bundle_id: "com.globex".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/UpdatePreferences",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .update_preferences(authed(
                &k,
                api::UpdatePreferencesRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    changes: vec![api::PreferenceSetting {
                        path: "channels.sms".into(),
                        value: "off".into()
                    }]
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/ChangeContact",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .change_contact(authed(
                &k,
                api::ChangeContactRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    channel: "email".into(),
                    value: "b-takes-over@globex.test".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/VerifyContact",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .verify_contact(authed(
                &k,
                api::VerifyContactRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    channel: "email".into(),
                    code: "123456".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/CreateSubscriberToken",
        Expect::Denied,
        |c, k| ok(Prefs::new(c)
            .create_subscriber_token(authed(
                &k,
                api::CreateSubscriberTokenRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    ttl_seconds: 0
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.PreferenceService/RotateSubscriberTokenKey",
        // B rotates its own key: the answer is B's new key id.
        Expect::OwnOnly,
        |c, k| ok(Prefs::new(c)
            .rotate_subscriber_token_key(authed(&k, api::RotateSubscriberTokenKeyRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.TopicService/Register",
        // B registers a topic of A's id in its own namespace.
        Expect::OwnOnly,
        |c, k| ok(Topics::new(c)
            .register(authed(
                &k,
                api::Topic {
                    topic_id: "acme-topic".into(),
                    description: "B's own".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.NotificationService/Trigger",
        Expect::Refused(Code::InvalidArgument),
        |c, k| ok(Notifications::new(c)
            .trigger(authed(
                &k,
                api::TriggerRequest {
                    workflow_id: "acme-only".into(),
                    recipients: vec![api::Recipient {
                        subscriber_id: "sub-1".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.NotificationService/Cancel",
        Expect::OwnOnly,
        |c, k| ok(Notifications::new(c)
            .cancel(authed(
                &k,
                api::CancelRequest {
                    cancel_key: "J-1".into(),
                    reason: "b".into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.WorkflowService/Apply",
        Expect::OwnOnly,
        |c, k| ok(Workflows::new(c)
            .apply(authed(
                &k,
                api::ApplyWorkflowRequest {
                    definition: sms_flow_id("acme-private", "B overwrites?")
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.SubscriberService/Upsert",
        Expect::OwnOnly,
        |c, k| ok(Subscribers::new(c)
            .upsert(authed(
                &k,
                api::Subscriber {
                    subscriber_id: "sub-1".into(),
                    email: "b2@globex.test".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.TenantService/CreateApiKey",
        Expect::OwnOnly,
        |c, k| ok(Tenants::new(c)
            .create_api_key(authed(
                &k,
                api::CreateApiKeyRequest {
                    name: "b".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.TenantService/PutTemplate",
        Expect::OwnOnly,
        |c, k| ok(Tenants::new(c)
            .put_template(authed(
                &k,
                api::Template {
                    template_id: "job-sms".into(),
                    channel: "sms".into(),
                    variants: vec![api::TemplateVariant {
                        locale: "default".into(),
                        subject: String::new(),
                        body: "B body".into()
                    }],
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.TenantService/PutWorkflow",
        Expect::OwnOnly,
        |c, k| ok(Tenants::new(c)
            .put_workflow(authed(
                &k,
                api::Workflow {
                    workflow_id: "acme-private".into(),
                    name: "B".into(),
                    steps: vec![api::WorkflowStep {
                        channel: "sms".into(),
                        template_id: "job-sms".into(),
                        provider: "twilio".into()
                    }],
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.TenantService/PutLimits",
        Expect::OwnOnly,
        |c, k| ok(Tenants::new(c)
            .put_limits(authed(
                &k,
                api::PutLimitsRequest {
                    definition: "throttle: []".into()
                }
            ))
            .await)
    );
    // The in-app inbox: B has no subscriber of A's id, so A's feed does
    // not exist for B.
    row!(
        "/clarion.v1.InboxService/ListItems",
        Expect::Denied,
        |c, k| ok(Inbox::new(c)
            .list_items(authed(
                &k,
                api::ListInboxItemsRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.InboxService/GetCounts",
        Expect::Denied,
        |c, k| ok(Inbox::new(c)
            .get_counts(authed(
                &k,
                api::GetInboxCountsRequest {
                    subscriber_id: A_ONLY_SUB.into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.InboxService/MarkItems",
        Expect::Denied,
        |c, k| ok(Inbox::new(c)
            .mark_items(authed(
                &k,
                api::MarkInboxItemsRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    all: true,
                    mark: "read".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!("/clarion.v1.InboxService/Watch", Expect::Denied, |c, k| {
        Inbox::new(c)
            .watch(authed(
                &k,
                api::WatchInboxRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    after_version: 0,
                },
            ))
            .await
            .map(|_| "a stream".to_string())
    });
    // Scheduling (issue #33): A's schedule is not found for B; B's
    // settings are its own (A's quiet hours and calendar never show).
    let sref = || api::ScheduleRef {
        schedule_id: A_ONLY_SCHEDULE.into(),
    };
    row!(
        "/clarion.v1.ScheduleService/Get",
        Expect::Denied,
        |c, k| ok(Schedules::new(c)
            .get(authed(
                &k,
                api::GetScheduleRequest {
                    schedule_id: A_ONLY_SCHEDULE.into(),
                    upcoming: 3
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.ScheduleService/List",
        Expect::OwnOnly,
        |c, k| ok(Schedules::new(c)
            .list(authed(&k, api::ListSchedulesRequest::default()))
            .await)
    );
    row!(
        "/clarion.v1.ScheduleService/Pause",
        Expect::Denied,
        |c, k| ok(Schedules::new(c).pause(authed(&k, sref())).await)
    );
    row!(
        "/clarion.v1.ScheduleService/Resume",
        Expect::Denied,
        |c, k| ok(Schedules::new(c).resume(authed(&k, sref())).await)
    );
    row!(
        "/clarion.v1.ScheduleService/Delete",
        Expect::Denied,
        |c, k| ok(Schedules::new(c).delete(authed(&k, sref())).await)
    );
    // B's own workflow of A's id (made by the PutWorkflow row), for a
    // subscriber id only A has: a schedule in B's namespace.
    row!(
        "/clarion.v1.ScheduleService/Create",
        Expect::OwnOnly,
        |c, k| ok(Schedules::new(c)
            .create(authed(
                &k,
                api::CreateScheduleRequest {
                    schedule_id: "b-schedule".into(),
                    workflow_id: "acme-private".into(),
                    subscriber_ids: vec![A_ONLY_SUB.into()],
                    cron: "0 9 * * *".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.QuietHoursService/GetTenant",
        Expect::OwnOnly,
        |c, k| ok(Quiet::new(c)
            .get_tenant(authed(&k, api::GetTenantQuietHoursRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.QuietHoursService/GetSubscriber",
        Expect::Denied,
        |c, k| ok(Quiet::new(c)
            .get_subscriber(authed(
                &k,
                api::GetSubscriberQuietHoursRequest {
                    subscriber_id: A_ONLY_SUB.into()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.QuietHoursService/SetSubscriber",
        Expect::Denied,
        |c, k| ok(Quiet::new(c)
            .set_subscriber(authed(
                &k,
                api::QuietHoursSettings {
                    subscriber_id: A_ONLY_SUB.into(),
                    enabled: false,
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.QuietHoursService/SetTenant",
        Expect::OwnOnly,
        |c, k| ok(Quiet::new(c)
            .set_tenant(authed(&k, api::QuietHoursSettings::default()))
            .await)
    );
    row!(
        "/clarion.v1.CalendarService/Get",
        Expect::OwnOnly,
        |c, k| ok(Calendar::new(c)
            .get(authed(&k, api::GetCalendarRequest {}))
            .await)
    );
    row!(
        "/clarion.v1.CalendarService/Set",
        Expect::OwnOnly,
        |c, k| ok(Calendar::new(c)
            .set(authed(
                &k,
                api::TenantCalendar {
                    default_timezone: "Europe/Paris".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    // Digests (issue #33): A's subscriber is not B's to flush.
    row!(
        "/clarion.v1.DigestService/Flush",
        Expect::Denied,
        |c, k| ok(Digests::new(c)
            .flush(authed(
                &k,
                api::FlushDigestRequest {
                    subscriber_id: A_ONLY_SUB.into(),
                    workflow_id: "visit".into(),
                    digest_key: String::new(),
                }
            ))
            .await)
    );
    // Analytics (issue #30): B reads its own figures, none of A's
    // workflows, templates or counts.
    row!(
        "/clarion.v1.AnalyticsService/GetReport",
        Expect::OwnOnly,
        |c, k| ok(Analytics::new(c)
            .get_report(authed(
                &k,
                api::AnalyticsReportRequest {
                    dimension: "workflow".into(),
                    ..Default::default()
                }
            ))
            .await)
    );
    row!(
        "/clarion.v1.AnalyticsService/GetProviderHealth",
        Expect::OwnOnly,
        |c, k| ok(Analytics::new(c)
            .get_provider_health(authed(&k, api::ProviderHealthRequest::default()))
            .await)
    );
    t
}

/// Every `clarion.v1` method the generated descriptors declare.
fn declared_methods() -> BTreeSet<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(api::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = BTreeSet::new();
    for f in set.file {
        for s in &f.service {
            for m in &s.method {
                out.insert(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
            }
        }
    }
    out
}

/// `markers`: A's content, never in any answer to B; A's ids (which B
/// named itself, so an error may quote them) never in a successful answer.
fn check(what: &str, expect: Expect, got: &Result<String, tonic::Status>, a: &TenantA) {
    let (text, markers) = match got {
        Ok(body) => (body.clone(), &a.markers[..]),
        Err(s) => (format!("{:?} {}", s.code(), s.message()), &a.markers[..5]),
    };
    for m in markers {
        assert!(
            !text.contains(m.as_str()),
            "{what} leaked A's {m:?}: {text}"
        );
    }
    match (expect, got) {
        (Expect::Denied, Err(s)) => assert!(
            matches!(s.code(), Code::NotFound | Code::PermissionDenied),
            "{what}: {s:?}"
        ),
        (Expect::Refused(code), Err(s)) => assert_eq!(s.code(), code, "{what}: {s:?}"),
        (Expect::OwnOnly, Ok(_)) => {}
        (e, other) => panic!("{what}: expected {e:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_b_on_tenant_a_ids_never_gets_a_data_by_any_method_or_route() {
    let twilio = TwilioDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.providers.twilio = Some(twilio.config());
    let run = Running::start(cfg).await;
    let ch = channel(run.grpc).await;
    let (a, b) = setup_two_tenants(&ch).await;

    // The table covers every declared method, and the gateway's access
    // table names exactly those methods.
    let table = grpc_table(&ch, &b, &a);
    let covered: BTreeSet<String> = table.iter().map(|(p, _, _)| p.to_string()).collect();
    assert_eq!(covered.len(), table.len(), "a method is listed twice");
    assert_eq!(
        covered,
        declared_methods(),
        "the isolation table must list every method"
    );
    let access: BTreeSet<String> = GRPC_METHODS.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(access, covered);
    for (path, expect, call) in table {
        check(path, expect, &call.await, &a);
    }

    // REST: every route, B's key on A's notification id.
    let base = format!("http://{}", run.http);
    let nid = &a.notification_id;
    // GraphQL: one route, A's ids in one query (after B's writes, B has
    // its own `sub-1` and its own workflows of A's ids): A's notification
    // is NOT_FOUND (checked below), the rest is B's own, none of it A's.
    let graphql = serde_json::json!({"query": format!(
        "{{ notification(id: \"{nid}\") {{ id subscriberId events {{ detail }} }}
           subscriber(id: \"sub-1\") {{ preferences {{ contacts {{ value }} }} }}
           preferenceHistory(subscriberId: \"sub-1\") {{ entries {{ actor }} }} }}"
    )})
    .to_string();
    let rest_table: Vec<(&str, &str, String, &str, u16)> = vec![
        ("POST", "/graphql", format!("{base}/graphql"), &graphql, 200),
        (
            // B's key on A's workflow id: B has no such workflow.
            "POST",
            "/v1/notifications",
            format!("{base}/v1/notifications"),
            r#"{"workflow_id":"acme-only","recipients":[{"subscriber_id":"sub-1"}]}"#,
            400,
        ),
        (
            // B's search lists B's own notifications, none of A's, even by A's id.
            "GET",
            "/v1/notifications",
            format!("{base}/v1/notifications?id={nid}"),
            "",
            200,
        ),
        (
            "GET",
            "/v1/notifications/:id",
            format!("{base}/v1/notifications/{nid}"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/notifications/:id/engagement",
            format!("{base}/v1/notifications/{nid}/engagement"),
            r#"{"kind":"acknowledged"}"#,
            404,
        ),
        (
            "GET",
            "/v1/dead-letters",
            format!("{base}/v1/dead-letters"),
            "",
            200,
        ),
        (
            "GET",
            "/v1/dead-letters/:id",
            format!("{base}/v1/dead-letters/{nid}"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/dead-letters/:id/retry",
            format!("{base}/v1/dead-letters/{nid}/retry"),
            "{}",
            404,
        ),
        (
            "POST",
            "/v1/dead-letters/:id/discard",
            format!("{base}/v1/dead-letters/{nid}/discard"),
            "{}",
            404,
        ),
        (
            "GET",
            "/v1/subscribers/:id/preferences",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/preferences"),
            "",
            404,
        ),
        (
            "PATCH",
            "/v1/subscribers/:id/preferences",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/preferences"),
            r#"{"changes":[{"path":"channels.sms","value":"off"}]}"#,
            404,
        ),
        (
            "GET",
            "/v1/subscribers/:id/preferences/history",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/preferences/history"),
            "",
            404,
        ),
        (
            // A's subscriber and A's workflow: B has neither.
            "POST",
            "/v1/preferences/evaluate",
            format!("{base}/v1/preferences/evaluate"),
            r#"{"subscriber_id":"acme-only-sub","workflow_id":"acme-private","channel":"sms"}"#,
            404,
        ),
        (
            "POST",
            "/v1/subscribers/:id/contacts/:channel",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/contacts/email"),
            r#"{"value":"b-takes-over@globex.test"}"#,
            404,
        ),
        (
            "POST",
            "/v1/subscribers/:id/contacts/:channel/verify",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/contacts/email/verify"),
            r#"{"code":"123456"}"#,
            404,
        ),
        (
            "POST",
            "/v1/subscribers/:id/token",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/token"),
            "",
            404,
        ),
        ("GET", "/v1/topics", format!("{base}/v1/topics"), "", 200),
        (
            "GET",
            "/v1/topics/:id",
            format!("{base}/v1/topics/{A_ONLY_TOPIC}"),
            "",
            404,
        ),
        (
            // B defines a topic of A's id in its own namespace.
            "PUT",
            "/v1/topics/:id",
            format!("{base}/v1/topics/{A_ONLY_TOPIC}"),
            r#"{"description":"B's own"}"#,
            200,
        ),
        // B has its own sub-1: it reads and writes its own, never A's.
        (
            "GET",
            "/v1/subscribers/:id",
            format!("{base}/v1/subscribers/sub-1"),
            "",
            200,
        ),
        (
            "PUT",
            "/v1/subscribers/:id",
            format!("{base}/v1/subscribers/sub-1"),
            r#"{"email":"b3@globex.test"}"#,
            200,
        ),
        (
            // B's sub-1 has notifications of its own; none of A's is listed.
            "GET",
            "/v1/subscribers/:id/notifications",
            format!("{base}/v1/subscribers/sub-1/notifications"),
            "",
            200,
        ),
        // Apps and devices: A's app and A's subscriber's device by id.
        ("GET", "/v1/apps", format!("{base}/v1/apps"), "", 200),
        (
            "GET",
            "/v1/apps/:id",
            format!("{base}/v1/apps/{A_ONLY_APP}"),
            "",
            404,
        ),
        (
            // B's own app of A's id (made by the gRPC row): replaced in B's namespace.
            "PUT",
            "/v1/apps/:id",
            format!("{base}/v1/apps/acme-app"),
            r#"{"name":"B again","platforms":["android"]}"#,
            200,
        ),
        (
            "GET",
            "/v1/subscribers/:id/devices",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/devices?include_inactive=true"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/subscribers/:id/devices",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/devices"),
            r#"{"app_id":"acme-app","platform":"android","token":"b-token"}"#,
            404,
        ),
        (
            "POST",
            "/v1/subscribers/:id/devices/:device_id/rotate",
            format!(
                "{base}/v1/subscribers/{A_ONLY_SUB}/devices/{}/rotate",
                a.device_id
            ),
            r#"{"new_token":"b-token"}"#,
            404,
        ),
        (
            "DELETE",
            "/v1/subscribers/:id/devices/:device_id",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/devices/{}", a.device_id),
            "",
            404,
        ),
        // The in-app inbox of a subscriber only A has: none for B.
        (
            "GET",
            "/v1/subscribers/:id/inbox",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/inbox"),
            "",
            404,
        ),
        (
            "GET",
            "/v1/subscribers/:id/inbox/counts",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/inbox/counts"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/subscribers/:id/inbox/mark",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/inbox/mark"),
            r#"{"all":true,"mark":"read"}"#,
            404,
        ),
        (
            "GET",
            "/v1/subscribers/:id/inbox/stream",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/inbox/stream"),
            "",
            404,
        ),
        // Scheduling (issue #33): as the gRPC rows.
        (
            "GET",
            "/v1/schedules",
            format!("{base}/v1/schedules"),
            "",
            200,
        ),
        (
            "POST",
            "/v1/schedules",
            format!("{base}/v1/schedules"),
            r#"{"workflow_id":"acme-private","subscriber_ids":["sub-1"],"cron":"0 9 * * *"}"#,
            201,
        ),
        (
            "GET",
            "/v1/schedules/:id",
            format!("{base}/v1/schedules/{A_ONLY_SCHEDULE}"),
            "",
            404,
        ),
        (
            "DELETE",
            "/v1/schedules/:id",
            format!("{base}/v1/schedules/{A_ONLY_SCHEDULE}"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/schedules/:id/pause",
            format!("{base}/v1/schedules/{A_ONLY_SCHEDULE}/pause"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/schedules/:id/resume",
            format!("{base}/v1/schedules/{A_ONLY_SCHEDULE}/resume"),
            "",
            404,
        ),
        (
            "GET",
            "/v1/quiet-hours",
            format!("{base}/v1/quiet-hours"),
            "",
            200,
        ),
        (
            "PUT",
            "/v1/quiet-hours",
            format!("{base}/v1/quiet-hours"),
            r#"{"enabled":false}"#,
            200,
        ),
        (
            "GET",
            "/v1/subscribers/:id/quiet-hours",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/quiet-hours"),
            "",
            404,
        ),
        (
            "PUT",
            "/v1/subscribers/:id/quiet-hours",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/quiet-hours"),
            r#"{"enabled":false}"#,
            404,
        ),
        (
            "GET",
            "/v1/calendar",
            format!("{base}/v1/calendar"),
            "",
            200,
        ),
        (
            "PUT",
            "/v1/calendar",
            format!("{base}/v1/calendar"),
            r#"{"default_timezone":"Europe/Paris"}"#,
            200,
        ),
        // Digests (issue #33).
        (
            "POST",
            "/v1/subscribers/:id/digests/flush",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}/digests/flush"),
            r#"{"workflow_id":"visit"}"#,
            404,
        ),
        // Compliance and exports (issue #32): B's own tenant only.
        (
            "DELETE",
            "/v1/subscribers/:id",
            format!("{base}/v1/subscribers/{A_ONLY_SUB}"),
            "",
            404,
        ),
        (
            "POST",
            "/v1/legal-holds",
            format!("{base}/v1/legal-holds"),
            r#"{"reason":"isolation"}"#,
            201,
        ),
        (
            "GET",
            "/v1/legal-holds",
            format!("{base}/v1/legal-holds"),
            "",
            200,
        ),
        (
            "POST",
            "/v1/legal-holds/:id/extend",
            format!("{base}/v1/legal-holds/hold-of-acme/extend"),
            r#"{"reason":"isolation"}"#,
            404,
        ),
        (
            "POST",
            "/v1/legal-holds/:id/release",
            format!("{base}/v1/legal-holds/hold-of-acme/release"),
            r#"{"reason":"isolation"}"#,
            404,
        ),
        (
            "GET",
            "/v1/retention-policy",
            format!("{base}/v1/retention-policy"),
            "",
            200,
        ),
        (
            "PUT",
            "/v1/retention-policy",
            format!("{base}/v1/retention-policy"),
            r#"{"rules":[{"channel":"*","country":"*","redact_bodies_after_days":30}]}"#,
            200,
        ),
        (
            "POST",
            "/v1/exports",
            format!("{base}/v1/exports"),
            r#"{"from":"2026-01-01","until":"2026-12-31","purpose":"isolation"}"#,
            201,
        ),
        // Tenant providers and SLAs (issue #31).
        (
            "GET",
            "/v1/providers",
            format!("{base}/v1/providers"),
            "",
            200,
        ),
        (
            "GET",
            "/v1/providers/:provider/credentials",
            format!("{base}/v1/providers/sendgrid/credentials"),
            "",
            404,
        ),
        (
            "DELETE",
            "/v1/providers/:provider/credentials",
            format!("{base}/v1/providers/sendgrid/credentials"),
            "",
            404,
        ),
        (
            "PUT",
            "/v1/providers/:provider/credentials",
            format!("{base}/v1/providers/twilio/credentials"),
            r#"{"credentials":{"account_sid":"ACglobex","auth_token":"t"}}"#,
            200,
        ),
        (
            "GET",
            "/v1/provider-routes/:channel",
            format!("{base}/v1/provider-routes/sms"),
            "",
            404,
        ),
        (
            "DELETE",
            "/v1/provider-routes/:channel",
            format!("{base}/v1/provider-routes/sms"),
            "",
            404,
        ),
        (
            "PUT",
            "/v1/provider-routes/:channel",
            format!("{base}/v1/provider-routes/email"),
            r#"{"providers":["sendgrid","smtp"]}"#,
            200,
        ),
        ("GET", "/v1/slas", format!("{base}/v1/slas"), "", 200),
        (
            "GET",
            "/v1/slas/:id",
            format!("{base}/v1/slas/{A_ONLY_SLA}"),
            "",
            404,
        ),
        (
            "GET",
            "/v1/slas/:id/status",
            format!("{base}/v1/slas/{A_ONLY_SLA}/status"),
            "",
            404,
        ),
        (
            "DELETE",
            "/v1/slas/:id",
            format!("{base}/v1/slas/{A_ONLY_SLA}"),
            "",
            404,
        ),
        (
            "PUT",
            "/v1/slas/:id",
            format!("{base}/v1/slas/globex-sla-2"),
            r#"{"channel":"email","target_ratio":0.9,"threshold_ms":1000,"window_ms":60000}"#,
            200,
        ),
        // Analytics (issue #30): B's own figures only.
        (
            "GET",
            "/v1/analytics/report",
            format!("{base}/v1/analytics/report?dimension=workflow"),
            "",
            200,
        ),
        (
            "GET",
            "/v1/analytics/providers",
            format!("{base}/v1/analytics/providers"),
            "",
            200,
        ),
    ];
    let routes: BTreeSet<(String, String)> = REST_ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let tested: BTreeSet<(String, String)> = rest_table
        .iter()
        .map(|(m, p, ..)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        tested, routes,
        "the isolation table must list every REST route"
    );
    for (method, route, url, body, want) in &rest_table {
        let (status, _, text) = rest(method, url, &b, body).await;
        assert_eq!(status, *want, "{method} {route}: {text}");
        // A GraphQL answer is a 200 whose errors quote the ids B named.
        let markers = if status < 300 && *route != "/graphql" {
            &a.markers[..]
        } else {
            &a.markers[..5]
        };
        for m in markers {
            assert!(
                !text.contains(m.as_str()),
                "{method} {route} leaked {m:?}: {text}"
            );
        }
    }

    let (_, _, text) = rest("POST", &format!("{base}/graphql"), &b, &graphql).await;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut codes: Vec<(String, String)> = answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|e| {
            (
                e["path"][0].to_string(),
                e["extensions"]["code"].to_string(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [("\"notification\"".into(), "\"NOT_FOUND\"".into())],
        "B's GraphQL on A's ids: {answer}"
    );

    // A's data is unchanged: still dead-lettered, same workflow, same
    // subscriber, same key working.
    let mut dlq = DeadLetters::new(ch.clone());
    let listed = dlq
        .list(authed(&a.key, api::ListDeadLettersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].notification_id, a.notification_id);
    let wf = Workflows::new(ch.clone())
        .get(authed(
            &a.key,
            api::GetWorkflowRequest {
                workflow_id: "acme-private".into(),
                version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((wf.version, wf.name.as_str()), (1, A_FLOW_NAME));
    let sub = Subscribers::new(ch.clone())
        .get(authed(
            &a.key,
            api::GetSubscriberRequest {
                subscriber_id: "sub-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sub.email, A_EMAIL);
    let keys = Keys::new(ch.clone())
        .list(authed(&a.key, api::ListApiKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "B's minted key must not be A's: {keys:?}");
    assert_eq!(keys[0].revoked_at_ms, 0);
    // A's providers and SLA (issue #31) are as A set them.
    let creds = ProviderApi::new(ch.clone())
        .list_credentials(authed(&a.key, api::ListProviderCredentialsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert_eq!(
        (creds[0].provider.as_str(), creds[0].version),
        ("sendgrid", 1)
    );
    let route = ProviderApi::new(ch.clone())
        .get_route(authed(
            &a.key,
            api::GetProviderRouteRequest {
                channel: "sms".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.providers, ["twilio", "vonage"]);
    let slas = SlaApi::new(ch.clone())
        .list_slas(authed(&a.key, api::ListSlasRequest {}))
        .await
        .unwrap()
        .into_inner()
        .slas;
    let ids: Vec<&str> = slas.iter().map(|s| s.sla_id.as_str()).collect();
    assert_eq!(ids, [A_ONLY_SLA]);
    // A's subscriber kept its settings: B's change never reached it.
    let prefs = Prefs::new(ch.clone())
        .get_preferences(authed(
            &a.key,
            api::GetPreferencesRequest {
                subscriber_id: A_ONLY_SUB.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(prefs.channels.is_empty(), "{prefs:?}");
    assert!(prefs.contacts.is_empty(), "{prefs:?}");
    // A's app of the id B configured for itself is A's still.
    let app = Devices::new(ch.clone())
        .get_app(authed(
            &a.key,
            api::GetAppRequest {
                app_id: "acme-app".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((app.name.as_str(), app.version), (A_APP_NAME, 1));
    run.stop().await;
}

fn field_of(s: &tonic::Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

async fn mint(
    ch: &Channel,
    key: &str,
    scopes: &[&str],
    expires_at_ms: i64,
) -> Result<api::CreateApiKeyResponse, tonic::Status> {
    Tenants::new(ch.clone())
        .create_api_key(authed(
            key,
            api::CreateApiKeyRequest {
                name: scopes.join("+"),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                expires_at_ms,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_hold_on_every_door_and_keys_mint_only_what_they_have() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(test_config(dir.path())).await;
    let ch = channel(run.grpc).await;
    let root = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &root, "visit", "sink").await;
    let read = mint(&ch, &root, &["read"], 0).await.unwrap().api_key;
    let trigger = mint(&ch, &root, &["trigger"], 0).await.unwrap().api_key;
    let admin_only = mint(&ch, &root, &["admin"], 0).await.unwrap().api_key;
    let fire = |key: String| {
        let ch = ch.clone();
        async move {
            Notifications::new(ch)
                .trigger(authed(
                    &key,
                    api::TriggerRequest {
                        workflow_id: "visit".into(),
                        recipients: vec![api::Recipient {
                            subscriber_id: "u1".into(),
                            email: "u1@example.test".into(),
                            ..Default::default()
                        }],
                        payload_json: r#"{"day":"Monday"}"#.into(),
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    // A read key reads, and cannot trigger or change anything.
    let e = fire(read.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("\"trigger\""), "{}", e.message());
    let id = fire(trigger.clone())
        .await
        .unwrap()
        .into_inner()
        .notification_ids[0]
        .clone();
    Notifications::new(ch.clone())
        .get_notification(authed(
            &read,
            api::GetNotificationRequest {
                notification_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    let e = Subscribers::new(ch.clone())
        .upsert(authed(
            &read,
            api::Subscriber {
                subscriber_id: "u2".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = Workflows::new(ch.clone())
        .apply(authed(
            &read,
            api::ApplyWorkflowRequest {
                definition: sms_flow("x"),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A trigger key cannot list or mint keys, nor read.
    let e = Keys::new(ch.clone())
        .list(authed(&trigger, api::ListApiKeysRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        mint(&ch, &trigger, &["trigger"], 0)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let e = Notifications::new(ch.clone())
        .get_notification(authed(
            &trigger,
            api::GetNotificationRequest {
                notification_id: id,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // REST: the same rule at the other door.
    let (status, _, body) = rest(
        "GET",
        &format!("http://{}/v1/dead-letters", run.http),
        &trigger,
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = rest(
        "GET",
        &format!("http://{}/v1/dead-letters", run.http),
        &read,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = rest(
        "POST",
        &format!("http://{}/v1/dead-letters/x/retry", run.http),
        &read,
        "{}",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // GraphQL: a read key queries, its mutations are refused field by field.
    let graphql = format!("http://{}/graphql", run.http);
    let (status, _, body) = rest(
        "POST",
        &graphql,
        &read,
        r#"{"query":"mutation { registerTopic(input: {id: \"t\"}) { id } }"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"PERMISSION_DENIED\""), "{body}");
    assert!(!body.contains("\"version\""), "{body}");
    let (status, _, body) = rest("POST", &graphql, &read, r#"{"query":"{ topics { id } }"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"topics\":[]"), "{body}");
    let (status, _, body) = rest(
        "POST",
        &graphql,
        &trigger,
        r#"{"query":"{ topics { id } }"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Minting: only scopes the minter has; an unknown scope is a field error.
    let e = mint(&ch, &admin_only, &["admin", "read"], 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(field_of(&e), ["scopes[1]"]);
    let e = mint(&ch, &root, &["root"], 0).await.unwrap_err();
    assert_eq!(field_of(&e), ["scopes[0]"]);
    let sub = mint(&ch, &admin_only, &[], 0).await.unwrap();
    let listed = Keys::new(ch.clone())
        .list(authed(&root, api::ListApiKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let scopes_of = |id: &str| {
        listed
            .iter()
            .find(|k| k.key_id == id)
            .map(|k| k.scopes.clone())
            .unwrap()
    };
    assert_eq!(
        scopes_of(&sub.key_id),
        ["admin"],
        "an empty request inherits the minter's scopes"
    );
    let initial = listed.iter().find(|k| k.name == "initial").unwrap();
    assert_eq!(
        initial.scopes,
        ["admin", "trigger", "read", "preferences"],
        "the first key has every scope"
    );
    assert_eq!(listed.len(), 5);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_expired_and_unknown_keys_get_one_answer_and_keys_are_listed_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.security.key_last_used_flush_ms = 20;
    let run = Running::start(cfg).await;
    let ch = channel(run.grpc).await;
    let root = create_tenant(&ch, "acme").await;
    create_tenant(&ch, "globex").await;
    let now = clarion_runtime::Clock::now_ms(&run.clock);
    let short = mint(&ch, &root, &["read"], now + 60_000).await.unwrap();
    let doomed = mint(&ch, &root, &["read"], 0).await.unwrap();
    let limits = |key: String| {
        let ch = ch.clone();
        async move {
            Tenants::new(ch)
                .get_limits(authed(&key, api::GetLimitsRequest {}))
                .await
        }
    };
    limits(short.api_key.clone()).await.unwrap();
    limits(doomed.api_key.clone()).await.unwrap();
    // A minted key never outlives its minter.
    let e = mint(&ch, &short.api_key, &[], now + 120_000)
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a read key cannot mint at all: {e:?}"
    );

    // Revoked: refused at once on this gateway, with the uniform answer.
    Keys::new(ch.clone())
        .revoke(authed(
            &root,
            api::RevokeApiKeyRequest {
                key_id: doomed.key_id.clone(),
            },
        ))
        .await
        .unwrap();
    let answers = |e: tonic::Status| (e.code(), e.message().to_string());
    let uniform = (Code::Unauthenticated, INVALID_KEY.to_string());
    assert_eq!(
        answers(limits(doomed.api_key.clone()).await.unwrap_err()),
        uniform
    );
    // Expired: refused once the (manual) clock passes its expiry.
    run.clock.advance(Duration::from_millis(59_000));
    limits(short.api_key.clone()).await.unwrap();
    run.clock.advance(Duration::from_millis(1_000));
    assert_eq!(
        answers(limits(short.api_key.clone()).await.unwrap_err()),
        uniform
    );
    // Unknown tenant, and a wrong secret for a tenant that exists: the same.
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    for k in [
        format!("ck_nosuchtenant_{secret}"),
        format!("ck_globex_{secret}"),
    ] {
        assert_eq!(answers(limits(k).await.unwrap_err()), uniform);
    }
    // REST gives the same answer.
    let (status, _, body) = rest(
        "GET",
        &format!("http://{}/v1/dead-letters", run.http),
        &doomed.api_key,
        "",
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains(INVALID_KEY), "{body}");

    // The list: every key, revoked and expired ones marked, last use noted
    // (written in the background), never a secret or its hash.
    let deadline = Instant::now() + Duration::from_secs(20); // a stall detector, not a timing claim
    let keys = loop {
        let keys = Keys::new(ch.clone())
            .list(authed(&root, api::ListApiKeysRequest {}))
            .await
            .unwrap()
            .into_inner()
            .keys;
        let short_used = keys
            .iter()
            .find(|k| k.key_id == short.key_id)
            .map(|k| k.last_used_at_ms);
        if short_used == Some(now + 59_000) || Instant::now() > deadline {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let by_id = |id: &str| keys.iter().find(|k| k.key_id == id).unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert_eq!(by_id(&short.key_id).expires_at_ms, now + 60_000);
    assert_eq!(by_id(&short.key_id).last_used_at_ms, now + 59_000);
    assert!(by_id(&doomed.key_id).revoked_at_ms >= now);
    assert_eq!(by_id(&short.key_id).revoked_at_ms, 0);
    let text = format!("{keys:?}");
    for k in [&short.api_key, &doomed.api_key] {
        let secret = k.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "a secret is listed: {text}");
        let hash = clarion_domain::tenant::sha256_hex(secret.as_bytes());
        assert!(!text.contains(&hash), "a key hash is listed: {text}");
    }
    // The CLI shows the same list.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args([
            "keys",
            "list",
            "--endpoint",
            &format!("http://{}", run.grpc),
            "--api-key",
            &root,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&short.key_id) && listing.contains(&doomed.key_id),
        "{listing}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_is_told_when_to_retry_while_another_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    // Each tenant may make 4 calls at once, then 1 per second; the manual
    // clock does not move, so nothing refills until the test says so.
    cfg.rate_limit.default = Rate {
        per_second: 1,
        burst: 4,
    };
    let run = Running::start(cfg).await;
    let ch = channel(run.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    let limits = |key: String| {
        let ch = ch.clone();
        async move {
            Tenants::new(ch)
                .get_limits(authed(&key, api::GetLimitsRequest {}))
                .await
        }
    };
    for _ in 0..4 {
        limits(acme.clone()).await.unwrap();
    }
    let e = limits(acme.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    let wait = e
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    // REST shares the bucket: 429 with Retry-After.
    let (status, head, body) = rest(
        "GET",
        &format!("http://{}/v1/dead-letters", run.http),
        &acme,
        "",
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // Empty, and whole again in 4 s at 1 per second.
    assert!(head.contains("ratelimit: \"default\";r=0;t=4"), "{head}");
    assert!(body.contains("rate limit"), "{body}");
    // The other tenant has its own bucket, and REST answers say what is left.
    let (status, head, _) = rest(
        "GET",
        &format!("http://{}/v1/dead-letters", run.http),
        &globex,
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        head.contains("ratelimit-policy: \"default\";q=4;w=4"),
        "{head}"
    );
    assert!(head.contains("ratelimit: \"default\";r=3;t=1"), "{head}");
    for _ in 0..3 {
        limits(globex.clone()).await.unwrap();
    }
    // Once the wait has passed, acme goes on.
    run.clock.advance(wait);
    limits(acme.clone()).await.unwrap();
    assert_eq!(
        limits(acme.clone()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    run.stop().await;
}

/// A subscriber token's claims, re-encoded (base64url, no padding): what a
/// forger would send.
fn forged(token: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    )
}

async fn upsert(ch: &Channel, key: &str, id: &str) {
    Subscribers::new(ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: id.into(),
                email: format!("{id}@example.test"),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

async fn token_for(ch: &Channel, key: &str, id: &str, ttl: u32) -> Result<String, tonic::Status> {
    Prefs::new(ch.clone())
        .create_subscriber_token(authed(
            key,
            api::CreateSubscriberTokenRequest {
                subscriber_id: id.into(),
                ttl_seconds: ttl,
            },
        ))
        .await
        .map(|r| r.into_inner().token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_token_reaches_its_own_subscriber_and_no_other_route() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(test_config(dir.path())).await;
    let ch = channel(run.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    for id in ["s1", "s2"] {
        upsert(&ch, &acme, id).await;
    }
    upsert(&ch, &globex, "s1").await;
    let base = format!("http://{}", run.http);

    // Minting: an admin key, an existing subscriber, at most 30 days.
    let token = token_for(&ch, &acme, "s1", 600).await.unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let e = token_for(&ch, &acme, "nobody", 0).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = token_for(&ch, &acme, "s1", 31 * 24 * 3600)
        .await
        .unwrap_err();
    assert_eq!(field_of(&e), ["ttl_seconds"]);
    let read = mint(&ch, &acme, &["read"], 0).await.unwrap().api_key;
    let e = token_for(&ch, &read, "s1", 0).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "minting is admin: {e:?}");
    let (status, _, body) = rest(
        "POST",
        &format!("{base}/v1/subscribers/s1/token"),
        &acme,
        "",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let rest_token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Its own subscriber, on both doors and with either token.
    for t in [&token, &rest_token] {
        let (status, _, body) = rest(
            "GET",
            &format!("{base}/v1/subscribers/s1/preferences"),
            t,
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""subscriber_id":"s1""#), "{body}");
    }
    let (status, _, body) = rest(
        "PATCH",
        &format!("{base}/v1/subscribers/s1/preferences"),
        &token,
        r#"{"changes":[{"path":"channels.sms","value":"off"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    Prefs::new(ch.clone())
        .get_preferences(authed(
            &token,
            api::GetPreferencesRequest {
                subscriber_id: "s1".into(),
            },
        ))
        .await
        .unwrap();
    // Another subscriber of its tenant does not exist for it.
    for (method, path, body) in [
        ("GET", "/v1/subscribers/s2/preferences", ""),
        (
            "PATCH",
            "/v1/subscribers/s2/preferences",
            r#"{"changes":[{"path":"channels.sms","value":"off"}]}"#,
        ),
        ("GET", "/v1/subscribers/s2/preferences/history", ""),
        (
            "POST",
            "/v1/subscribers/s2/contacts/email",
            r#"{"value":"mine@example.test"}"#,
        ),
    ] {
        let (status, _, text) = rest(method, &format!("{base}{path}"), &token, body).await;
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(!text.contains("s2@example.test"), "{text}");
    }
    let e = Prefs::new(ch.clone())
        .get_preferences(authed(
            &token,
            api::GetPreferencesRequest {
                subscriber_id: "s2".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // No other route, whatever its scope.
    for (method, path, body) in [
        (
            "POST",
            "/v1/notifications",
            r#"{"workflow_id":"w","recipients":[{"subscriber_id":"s1"}]}"#,
        ),
        ("GET", "/v1/dead-letters", ""),
        ("POST", "/v1/subscribers/s1/token", ""),
        (
            "POST",
            "/v1/preferences/evaluate",
            r#"{"subscriber_id":"s1","workflow_id":"w","channel":"sms"}"#,
        ),
        ("PUT", "/v1/topics/news", "{}"),
    ] {
        let (status, _, text) = rest(method, &format!("{base}{path}"), &token, body).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
    }
    let refused = |r: Result<String, tonic::Status>| match r {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{s:?}"),
        Ok(v) => panic!("a subscriber token got {v}"),
    };
    refused(ok(Subscribers::new(ch.clone())
        .get(authed(
            &token,
            api::GetSubscriberRequest {
                subscriber_id: "s1".into(),
            },
        ))
        .await));
    refused(token_for(&ch, &token, "s1", 0).await);
    refused(ok(Topics::new(ch.clone())
        .register(authed(
            &token,
            api::Topic {
                topic_id: "news".into(),
                ..Default::default()
            },
        ))
        .await));
    refused(ok(Keys::new(ch.clone())
        .list(authed(&token, api::ListApiKeysRequest {}))
        .await));

    // A forged tenant or subscriber breaks the signature; globex's s1 stays out of reach.
    let invalid = clarion_gateway::subscriber_token::INVALID_TOKEN;
    for f in [
        forged(&token, |c| c["ten"] = "globex".into()),
        forged(&token, |c| c["sub"] = "s2".into()),
    ] {
        let (status, _, text) = rest(
            "GET",
            &format!("{base}/v1/subscribers/s1/preferences"),
            &f,
            "",
        )
        .await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains(invalid), "{text}");
    }

    // Expiry on the gateway's clock.
    run.clock.advance(Duration::from_secs(601));
    let (status, _, text) = rest(
        "GET",
        &format!("{base}/v1/subscribers/s1/preferences"),
        &token,
        "",
    )
    .await;
    assert_eq!(status, 401, "{text}");
    // Rotation revokes every token of the tenant, and only of that tenant.
    let fresh = token_for(&ch, &acme, "s1", 0).await.unwrap();
    let globex_token = token_for(&ch, &globex, "s1", 0).await.unwrap();
    Prefs::new(ch.clone())
        .rotate_subscriber_token_key(authed(&acme, api::RotateSubscriberTokenKeyRequest {}))
        .await
        .unwrap();
    let get = |t: String| {
        let base = base.clone();
        async move {
            rest(
                "GET",
                &format!("{base}/v1/subscribers/s1/preferences"),
                &t,
                "",
            )
            .await
            .0
        }
    };
    assert_eq!(get(fresh).await, 401);
    assert_eq!(get(globex_token).await, 200);
    assert_eq!(
        get(token_for(&ch, &acme, "s1", 0).await.unwrap()).await,
        200
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_key_reads_preferences_and_cannot_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(test_config(dir.path())).await;
    let ch = channel(run.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    create_tenant(&ch, "globex").await;
    upsert(&ch, &acme, "s1").await;
    let read = mint(&ch, &acme, &["read"], 0).await.unwrap().api_key;
    let base = format!("http://{}", run.http);
    let (status, _, body) = rest(
        "GET",
        &format!("{base}/v1/subscribers/s1/preferences"),
        &read,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in [
        (
            "PATCH",
            "/v1/subscribers/s1/preferences",
            r#"{"changes":[{"path":"channels.sms","value":"off"}]}"#,
        ),
        (
            "POST",
            "/v1/subscribers/s1/contacts/email",
            r#"{"value":"x@example.test"}"#,
        ),
        ("PUT", "/v1/topics/news", "{}"),
    ] {
        let (status, _, text) = rest(method, &format!("{base}{path}"), &read, body).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.contains("preferences"), "{text}");
    }
    let e = Prefs::new(ch.clone())
        .update_preferences(authed(
            &read,
            api::UpdatePreferencesRequest {
                subscriber_id: "s1".into(),
                changes: vec![api::PreferenceSetting {
                    path: "channels.sms".into(),
                    value: "off".into(),
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    run.stop().await;
}
