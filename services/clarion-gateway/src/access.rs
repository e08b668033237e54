//! Who may call what: the table of every gRPC method and REST route with the
//! scope it requires, enforced in front of the handlers (a tower layer on
//! the gRPC server, a middleware on the REST router), then the tenant's
//! request rate limit.
//!
//! The tables fail closed: a `clarion.v1` method or a REST route missing
//! from them is refused, and a test compares the gRPC table with the
//! methods the proto descriptors declare, so a new method cannot ship
//! without a rule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clarion_domain::tenant::{Scope, Scopes};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::ApiError;
use crate::keys::KeyUsage;
use crate::problem::Problem;
use crate::ratelimit::{retry_after_secs, TenantLimiter};
use crate::state::GatewayState;
use crate::{auth, idempotency};

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// A tenant API key with this scope.
    Tenant(Scope),
    /// The operator admin token (checked by the handler).
    Operator,
}

use Needs::{Operator, Tenant};
use Scope::{Admin, Preferences, Read, Trigger};

/// Every gRPC method of `clarion.v1` and what it needs.
pub const GRPC_METHODS: &[(&str, Needs)] = &[
    ("/clarion.v1.NotificationService/Trigger", Tenant(Trigger)),
    (
        "/clarion.v1.NotificationService/GetNotification",
        Tenant(Read),
    ),
    (
        "/clarion.v1.NotificationService/Acknowledge",
        Tenant(Trigger),
    ),
    ("/clarion.v1.NotificationService/Cancel", Tenant(Trigger)),
    ("/clarion.v1.WorkflowService/Apply", Tenant(Admin)),
    ("/clarion.v1.WorkflowService/Get", Tenant(Read)),
    ("/clarion.v1.WorkflowService/List", Tenant(Read)),
    ("/clarion.v1.DeadLetterService/List", Tenant(Read)),
    ("/clarion.v1.DeadLetterService/Show", Tenant(Read)),
    ("/clarion.v1.DeadLetterService/Retry", Tenant(Admin)),
    ("/clarion.v1.DeadLetterService/Discard", Tenant(Admin)),
    ("/clarion.v1.SubscriberService/Upsert", Tenant(Preferences)),
    ("/clarion.v1.SubscriberService/Get", Tenant(Read)),
    // Issue #32: erasure, holds and retention are the tenant's compliance
    // officer's: admin.
    ("/clarion.v1.SubscriberService/Erase", Tenant(Admin)),
    ("/clarion.v1.ComplianceService/PlaceHold", Tenant(Admin)),
    ("/clarion.v1.ComplianceService/ListHolds", Tenant(Read)),
    ("/clarion.v1.ComplianceService/ExtendHold", Tenant(Admin)),
    ("/clarion.v1.ComplianceService/ReleaseHold", Tenant(Admin)),
    (
        "/clarion.v1.ComplianceService/SetRetentionPolicy",
        Tenant(Admin),
    ),
    (
        "/clarion.v1.ComplianceService/GetRetentionPolicy",
        Tenant(Read),
    ),
    // Exports carry personal data out: admin, like `POST /v1/exports`.
    ("/clarion.v1.ComplianceService/CreateExport", Tenant(Admin)),
    ("/clarion.v1.TenantService/CreateTenant", Operator),
    ("/clarion.v1.TenantService/CreateApiKey", Tenant(Admin)),
    ("/clarion.v1.TenantService/PutTemplate", Tenant(Admin)),
    ("/clarion.v1.TenantService/PutWorkflow", Tenant(Admin)),
    ("/clarion.v1.TenantService/PutLimits", Tenant(Admin)),
    ("/clarion.v1.TenantService/GetLimits", Tenant(Read)),
    (
        "/clarion.v1.TenantService/RotateWebhookSecret",
        Tenant(Admin),
    ),
    ("/clarion.v1.ApiKeyService/List", Tenant(Admin)),
    ("/clarion.v1.ApiKeyService/Revoke", Tenant(Admin)),
    ("/clarion.v1.QuarantineService/List", Operator),
    ("/clarion.v1.QuarantineService/Show", Operator),
    ("/clarion.v1.QuarantineService/Park", Operator),
    ("/clarion.v1.PreferenceService/GetPreferences", Tenant(Read)),
    (
        "/clarion.v1.PreferenceService/UpdatePreferences",
        Tenant(Preferences),
    ),
    // Explains what a send would do: a read, like GetPreferences.
    ("/clarion.v1.PreferenceService/Evaluate", Tenant(Read)),
    ("/clarion.v1.PreferenceService/History", Tenant(Read)),
    (
        "/clarion.v1.PreferenceService/ChangeContact",
        Tenant(Preferences),
    ),
    (
        "/clarion.v1.PreferenceService/VerifyContact",
        Tenant(Preferences),
    ),
    // A token is a credential: minting one is an admin act.
    (
        "/clarion.v1.PreferenceService/CreateSubscriberToken",
        Tenant(Admin),
    ),
    (
        "/clarion.v1.PreferenceService/RotateSubscriberTokenKey",
        Tenant(Admin),
    ),
    ("/clarion.v1.TopicService/Register", Tenant(Preferences)),
    ("/clarion.v1.TopicService/Get", Tenant(Read)),
    ("/clarion.v1.TopicService/List", Tenant(Read)),
    // Apps are tenant configuration; devices are subscriber data, managed
    // like profiles and preferences.
    ("/clarion.v1.DeviceService/ConfigureApp", Tenant(Admin)),
    ("/clarion.v1.DeviceService/GetApp", Tenant(Read)),
    ("/clarion.v1.DeviceService/ListApps", Tenant(Read)),
    (
        "/clarion.v1.DeviceService/RegisterDevice",
        Tenant(Preferences),
    ),
    ("/clarion.v1.DeviceService/ListDevices", Tenant(Read)),
    (
        "/clarion.v1.DeviceService/RotateDevice",
        Tenant(Preferences),
    ),
    (
        "/clarion.v1.DeviceService/RevokeDevice",
        Tenant(Preferences),
    ),
    ("/clarion.v1.InboxService/ListItems", Tenant(Read)),
    ("/clarion.v1.InboxService/GetCounts", Tenant(Read)),
    ("/clarion.v1.InboxService/MarkItems", Tenant(Preferences)),
    ("/clarion.v1.InboxService/Watch", Tenant(Read)),
    // Issue #33 (p33-sched). A schedule triggers workflows: the trigger
    // scope changes it. Tenant-wide settings are configuration (admin); a
    // subscriber's quiet hours are subscriber data, like preferences.
    ("/clarion.v1.ScheduleService/Create", Tenant(Trigger)),
    ("/clarion.v1.ScheduleService/Get", Tenant(Read)),
    ("/clarion.v1.ScheduleService/List", Tenant(Read)),
    ("/clarion.v1.ScheduleService/Pause", Tenant(Trigger)),
    ("/clarion.v1.ScheduleService/Resume", Tenant(Trigger)),
    ("/clarion.v1.ScheduleService/Delete", Tenant(Trigger)),
    ("/clarion.v1.QuietHoursService/SetTenant", Tenant(Admin)),
    ("/clarion.v1.QuietHoursService/GetTenant", Tenant(Read)),
    (
        "/clarion.v1.QuietHoursService/SetSubscriber",
        Tenant(Preferences),
    ),
    ("/clarion.v1.QuietHoursService/GetSubscriber", Tenant(Read)),
    ("/clarion.v1.CalendarService/Set", Tenant(Admin)),
    ("/clarion.v1.CalendarService/Get", Tenant(Read)),
    // Digests (issue #33): a flush makes the leader send now, like a trigger.
    ("/clarion.v1.DigestService/Flush", Tenant(Trigger)),
    // Delivery analytics (issue #30): reads of the tenant's own figures.
    ("/clarion.v1.AnalyticsService/GetReport", Tenant(Read)),
    (
        "/clarion.v1.AnalyticsService/GetProviderHealth",
        Tenant(Read),
    ),
];

/// The gRPC methods a subscriber token may call (its own preferences and
/// contacts, and the topics a preference page lists). Everything else
/// refuses it, whatever the method's scope.
pub const SUBSCRIBER_GRPC: &[&str] = &[
    "/clarion.v1.PreferenceService/GetPreferences",
    "/clarion.v1.PreferenceService/UpdatePreferences",
    "/clarion.v1.PreferenceService/History",
    "/clarion.v1.PreferenceService/ChangeContact",
    "/clarion.v1.PreferenceService/VerifyContact",
    "/clarion.v1.TopicService/Get",
    "/clarion.v1.TopicService/List",
    "/clarion.v1.DeviceService/RegisterDevice",
    "/clarion.v1.DeviceService/ListDevices",
    "/clarion.v1.DeviceService/RotateDevice",
    "/clarion.v1.DeviceService/RevokeDevice",
    "/clarion.v1.InboxService/ListItems",
    "/clarion.v1.InboxService/GetCounts",
    "/clarion.v1.InboxService/MarkItems",
    "/clarion.v1.InboxService/Watch",
];

/// Routes of [`REST_ROUTES`] that `/openapi.json` does not describe:
/// GraphQL has its own schema (introspection) and GraphQL-shaped answers.
pub const OUTSIDE_OPENAPI: &[&str] = &["/graphql"];

/// Every REST route (method, axum path) and the scope it requires.
pub const REST_ROUTES: &[(&str, &str, Scope)] = &[
    // GraphQL: one route for queries and mutations, so not behind
    // `rest_guard`: `graphql_admit` lets in a key with any scope a root
    // field accepts (`read` or `preferences`), then each field is checked
    // against GRAPHQL_FIELDS. `read` is what every query accepts.
    ("POST", "/graphql", Read),
    ("POST", "/v1/notifications", Trigger),
    // Issue #32: a tenant's history leaves with an export: an admin act.
    ("POST", "/v1/exports", Admin),
    // Search (the console's Notifications page reads the same function).
    ("GET", "/v1/notifications", Read),
    ("GET", "/v1/notifications/:id", Read),
    ("POST", "/v1/notifications/:id/engagement", Trigger),
    ("GET", "/v1/dead-letters", Read),
    ("GET", "/v1/dead-letters/:id", Read),
    ("POST", "/v1/dead-letters/:id/retry", Admin),
    ("POST", "/v1/dead-letters/:id/discard", Admin),
    ("GET", "/v1/subscribers/:id/preferences", Read),
    ("PATCH", "/v1/subscribers/:id/preferences", Preferences),
    ("GET", "/v1/subscribers/:id/preferences/history", Read),
    ("POST", "/v1/preferences/evaluate", Read),
    ("POST", "/v1/subscribers/:id/contacts/:channel", Preferences),
    (
        "POST",
        "/v1/subscribers/:id/contacts/:channel/verify",
        Preferences,
    ),
    ("POST", "/v1/subscribers/:id/token", Admin),
    ("GET", "/v1/topics", Read),
    ("GET", "/v1/topics/:id", Read),
    ("PUT", "/v1/topics/:id", Preferences),
    ("PUT", "/v1/subscribers/:id", Preferences),
    ("GET", "/v1/subscribers/:id", Read),
    ("GET", "/v1/subscribers/:id/notifications", Read),
    // Apps are tenant configuration; devices are subscriber data.
    ("PUT", "/v1/apps/:id", Admin),
    ("GET", "/v1/apps", Read),
    ("GET", "/v1/apps/:id", Read),
    ("POST", "/v1/subscribers/:id/devices", Preferences),
    ("GET", "/v1/subscribers/:id/devices", Read),
    (
        "POST",
        "/v1/subscribers/:id/devices/:device_id/rotate",
        Preferences,
    ),
    (
        "DELETE",
        "/v1/subscribers/:id/devices/:device_id",
        Preferences,
    ),
    // The in-app inbox (docs/inbox.md): marking is a change of subscriber
    // data, like preferences; the stream is a read.
    ("GET", "/v1/subscribers/:id/inbox", Read),
    ("GET", "/v1/subscribers/:id/inbox/counts", Read),
    ("POST", "/v1/subscribers/:id/inbox/mark", Preferences),
    ("GET", "/v1/subscribers/:id/inbox/stream", Read),
    // Issue #33 (p33-sched): as the gRPC rows above.
    ("POST", "/v1/schedules", Trigger),
    ("GET", "/v1/schedules", Read),
    ("GET", "/v1/schedules/:id", Read),
    ("DELETE", "/v1/schedules/:id", Trigger),
    ("POST", "/v1/schedules/:id/pause", Trigger),
    ("POST", "/v1/schedules/:id/resume", Trigger),
    ("GET", "/v1/quiet-hours", Read),
    ("PUT", "/v1/quiet-hours", Admin),
    ("GET", "/v1/subscribers/:id/quiet-hours", Read),
    ("PUT", "/v1/subscribers/:id/quiet-hours", Preferences),
    ("GET", "/v1/calendar", Read),
    ("PUT", "/v1/calendar", Admin),
    // Digests (issue #33).
    ("POST", "/v1/subscribers/:id/digests/flush", Trigger),
    // Delivery analytics (issue #30).
    ("GET", "/v1/analytics/report", Read),
    ("GET", "/v1/analytics/providers", Read),
    // Compliance (issue #32).
    ("DELETE", "/v1/subscribers/:id", Admin),
    ("POST", "/v1/legal-holds", Admin),
    ("GET", "/v1/legal-holds", Read),
    ("POST", "/v1/legal-holds/:id/extend", Admin),
    ("POST", "/v1/legal-holds/:id/release", Admin),
    ("GET", "/v1/retention-policy", Read),
    ("PUT", "/v1/retention-policy", Admin),
];

/// The REST routes a subscriber token may use (as [`SUBSCRIBER_GRPC`]).
pub const SUBSCRIBER_REST: &[(&str, &str)] = &[
    ("GET", "/v1/subscribers/:id/preferences"),
    ("PATCH", "/v1/subscribers/:id/preferences"),
    ("GET", "/v1/subscribers/:id/preferences/history"),
    ("POST", "/v1/subscribers/:id/contacts/:channel"),
    ("POST", "/v1/subscribers/:id/contacts/:channel/verify"),
    ("GET", "/v1/topics"),
    ("GET", "/v1/topics/:id"),
    ("GET", "/v1/subscribers/:id/notifications"),
    ("POST", "/v1/subscribers/:id/devices"),
    ("GET", "/v1/subscribers/:id/devices"),
    ("POST", "/v1/subscribers/:id/devices/:device_id/rotate"),
    ("DELETE", "/v1/subscribers/:id/devices/:device_id"),
    ("GET", "/v1/subscribers/:id/inbox"),
    ("GET", "/v1/subscribers/:id/inbox/counts"),
    ("POST", "/v1/subscribers/:id/inbox/mark"),
    ("GET", "/v1/subscribers/:id/inbox/stream"),
];

/// Whether `caller` may make a call of `scope`: a key needs the scope, a
/// subscriber token needs the call on its list (`allowed`).
fn permit(caller: &auth::Caller, scope: Scope, allowed: bool) -> Result<(), ApiError> {
    match caller.subscriber {
        Some(_) if allowed => Ok(()),
        Some(_) => Err(ApiError::PermissionDenied(auth::SUBSCRIBER_REFUSED.into())),
        None => auth::require(caller, scope),
    }
}

const API_PREFIX: &str = "/clarion.v1.";
const REFLECTION_PREFIX: &str = "/grpc.reflection.";

/// What a gRPC path needs; `None` for a `clarion.v1` method without a rule.
pub fn grpc_needs(path: &str) -> Option<Needs> {
    GRPC_METHODS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, n)| *n)
}

/// Every field of the GraphQL schema that needs a scope, and the scopes
/// that admit it (any one). Every root field (`Query.*`, `Mutation.*`) must
/// have a row: the field guard refuses one without (fails closed), and a
/// test compares the rows with the schema. Nested fields need a row only
/// when they need more than their root field (a subscriber's
/// notifications, reachable from `Query.subscriber`, need `read`, as
/// reading a notification does at every door).
pub const GRAPHQL_FIELDS: &[(&str, &[Scope])] = &[
    ("Query.subscriber", &[Read, Preferences]),
    ("Query.preferenceHistory", &[Read, Preferences]),
    ("Query.topics", &[Read, Preferences]),
    ("Query.topic", &[Read, Preferences]),
    ("Query.evaluate", &[Read, Preferences]),
    ("Query.notification", &[Read]),
    ("Query.notifications", &[Read]),
    ("Subscriber.notifications", &[Read]),
    ("Mutation.updatePreferences", &[Preferences]),
    ("Mutation.registerTopic", &[Preferences]),
    ("Mutation.changeContact", &[Preferences]),
    ("Mutation.verifyContact", &[Preferences]),
];

/// The GraphQL fields a subscriber token may use (its own subscriber's
/// preferences, their history, contacts, and the topics to choose from),
/// as `SUBSCRIBER_GRPC`/`SUBSCRIBER_REST` are for the other doors; any
/// other field is refused to it, whatever GRAPHQL_FIELDS says.
pub const GRAPHQL_SUBSCRIBER_FIELDS: &[&str] = &[
    "Query.subscriber",
    "Query.preferenceHistory",
    "Query.topics",
    "Query.topic",
    "Mutation.updatePreferences",
    "Mutation.changeContact",
    "Mutation.verifyContact",
];

/// The scopes that admit a GraphQL field (`Type.field`); `None` without a row.
pub fn graphql_scopes(field: &str) -> Option<&'static [Scope]> {
    GRAPHQL_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, s)| *s)
}

/// Refuses a key holding none of `scopes`.
pub fn require_any(held: Scopes, scopes: &[Scope]) -> Result<(), ApiError> {
    if scopes.iter().any(|s| held.contains(*s)) {
        return Ok(());
    }
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    Err(ApiError::PermissionDenied(format!(
        "this API key has none of the scopes this field accepts: {}",
        names.join(", ")
    )))
}

/// The scopes some GraphQL field accepts.
pub fn graphql_any_scope() -> Vec<Scope> {
    Scope::ALL
        .into_iter()
        .filter(|s| GRAPHQL_FIELDS.iter().any(|(_, ss)| ss.contains(s)))
        .collect()
}

/// Admission to `POST /graphql`: a tenant key holding a scope some field
/// accepts (or a subscriber token), within the tenant's request rate. `Err` is the answer to send
/// (GraphQL-shaped).
pub async fn graphql_admit(
    state: &GatewayState,
    headers: &http::HeaderMap,
) -> Result<auth::Caller, Response> {
    let caller = auth::by_credential(state, auth::credential_in(headers))
        .await
        .map_err(crate::graphql::refused)?;
    crate::graphql::admits(&caller).map_err(crate::graphql::refused)?;
    if let Err(wait) = state.security.limiter.check(caller.tenant.as_str()) {
        count_limited(caller.tenant.as_str(), "graphql");
        let secs = retry_after_secs(wait);
        let mut resp = crate::graphql::refusal(
            StatusCode::TOO_MANY_REQUESTS,
            crate::graphql::CODE_RATE_LIMITED,
            &format!("request rate limit of this tenant exceeded: retry in {secs} s"),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Err(resp);
    }
    Ok(caller)
}

/// Who may use gRPC server reflection.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReflectionAccess {
    /// Anyone who reaches the gRPC port (handy in development).
    #[default]
    Public,
    /// Callers presenting the operator admin token.
    AdminToken,
    /// Not served.
    Off,
}

/// The gateway's credentials-and-exposure state, shared by every handler.
pub struct Security {
    pub limiter: TenantLimiter,
    pub key_usage: KeyUsage,
    pub reflection: ReflectionAccess,
    /// How often last-used times are written.
    pub last_used_flush: Duration,
}

/// Until `shutdown`: writes the keys' last-used times every
/// `last_used_flush` (and once more at the end), and drops rate-limit
/// buckets that are full again.
pub async fn maintain(state: GatewayState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let sec = &state.security;
    let mut tick = tokio::time::interval(sec.last_used_flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if let Err(e) = sec.key_usage.flush(&*state.store).await {
            tracing::warn!(error = %e, "writing API keys' last-used times");
        }
        sec.limiter.shrink();
    }
    let _ = sec.key_usage.flush(&*state.store).await;
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo` detail and `retry-after` metadata.
pub fn rate_limited(wait: Duration) -> Status {
    let secs = retry_after_secs(wait);
    let mut status = Status::with_error_details(
        Code::ResourceExhausted,
        format!("request rate limit of this tenant exceeded: retry in {secs} s"),
        ErrorDetails::with_retry_info(Some(wait)),
    );
    status
        .metadata_mut()
        .insert("retry-after", MetadataValue::from(secs));
    status
}

fn count_limited(tenant: &str, door: &'static str) {
    metrics::counter!(
        "clarion_rate_limited_total",
        "tenant" => clarion_runtime::metric_labels::tenant(tenant),
        "door" => door
    )
    .increment(1);
}

/// Checks one gRPC call; `Err` is the answer to send instead of running it.
pub async fn check_grpc(
    state: &GatewayState,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<(), Status> {
    if path.starts_with(REFLECTION_PREFIX) {
        return match state.security.reflection {
            ReflectionAccess::Public => Ok(()),
            ReflectionAccess::AdminToken => {
                auth::admin_by_credential(state, auth::credential_in(headers))?;
                Ok(())
            }
            ReflectionAccess::Off => Err(Status::unimplemented("reflection is not served")),
        };
    }
    if !path.starts_with(API_PREFIX) {
        return Ok(());
    }
    match grpc_needs(path) {
        None => Err(Status::permission_denied(format!(
            "{path} has no access rule on this gateway"
        ))),
        Some(Operator) => Ok(()),
        Some(Tenant(scope)) => {
            let caller = auth::by_credential(state, auth::credential_in(headers)).await?;
            permit(&caller, scope, SUBSCRIBER_GRPC.contains(&path))?;
            state
                .security
                .limiter
                .check(caller.tenant.as_str())
                .map(|_| ())
                .map_err(|wait| {
                    count_limited(caller.tenant.as_str(), "grpc");
                    rate_limited(wait)
                })
        }
    }
}

/// The tower layer that runs [`check_grpc`] in front of every gRPC service.
#[derive(Clone)]
pub struct AccessLayer(pub GatewayState);

impl<S> tower_layer::Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> AccessService<S> {
        AccessService {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    state: GatewayState,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for AccessService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::BoxBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone is the one that is ready (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            match check_grpc(&state, req.uri().path(), req.headers()).await {
                Ok(()) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// REST middleware: the route's scope, then the rate limit (HTTP 429 with
/// `Retry-After`), then `Idempotency-Key` on POSTs ([`crate::idempotency`]).
/// Answers carry the `RateLimit-Policy` and `RateLimit` headers. Handlers
/// authenticate again (a cache hit) for the caller.
pub async fn rest_guard(State(state): State<GatewayState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    // HEAD is served by the GET handler.
    let method = match req.method().as_str() {
        "HEAD" => "GET".to_string(),
        m => m.to_string(),
    };
    let Some(scope) = rest_scope(&method, &route) else {
        return no_rule(&method, &route);
    };
    // A browser's EventSource cannot send headers: the inbox stream also
    // takes a subscriber token as `?token=` (crate::rest_inbox).
    let credential = match route.as_str() {
        crate::rest_inbox::STREAM_ROUTE => {
            auth::credential_in(req.headers()).or_else(|| crate::rest_inbox::query_token(req.uri()))
        }
        _ => auth::credential_in(req.headers()),
    };
    let caller = match auth::by_credential(&state, credential).await {
        Ok(c) => c,
        Err(e) => return Problem::from(e).into_response(),
    };
    let for_subscribers = SUBSCRIBER_REST
        .iter()
        .any(|(m, p)| *m == method && *p == route);
    if let Err(e) = permit(&caller, scope, for_subscribers) {
        return Problem::from(e).into_response();
    }
    let allowance = match state.security.limiter.check(caller.tenant.as_str()) {
        Ok(a) => a,
        Err(wait) => {
            count_limited(caller.tenant.as_str(), "rest");
            return too_many_requests(&state, caller.tenant.as_str(), wait);
        }
    };
    let mut resp = match idempotency::key_of(&req) {
        Err(p) => p.into_response(),
        Ok(Some(key)) if idempotency::applies(&method, &route) => {
            idempotency::run(&state, caller.tenant.as_str(), &key, req, next).await
        }
        Ok(_) => next.run(req).await,
    };
    if let Some(a) = allowance {
        set_rate_headers(resp.headers_mut(), &a.policy_header(), &a.header());
    }
    resp
}

/// The scope a REST route needs; `None` for a route without a rule.
pub fn rest_scope(method: &str, route: &str) -> Option<Scope> {
    REST_ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == route)
        .map(|(_, _, s)| *s)
}

/// A route served with other methods is 405 (with `Allow`); a route
/// without any rule is refused (the table fails closed).
fn no_rule(method: &str, route: &str) -> Response {
    let allowed: Vec<&str> = REST_ROUTES
        .iter()
        .filter(|(_, p, _)| *p == route)
        .map(|(m, _, _)| *m)
        .collect();
    if allowed.is_empty() {
        return Problem::from(ApiError::PermissionDenied(format!(
            "{method} {route} has no access rule on this gateway"
        )))
        .into_response();
    }
    let mut resp = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not served on this route: see the Allow header"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

fn too_many_requests(state: &GatewayState, tenant: &str, wait: Duration) -> Response {
    let secs = retry_after_secs(wait);
    let mut resp = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("request rate limit of this tenant exceeded: retry in {secs} s"),
    )
    .into_response();
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    if let Some(a) = state.security.limiter.policy(tenant) {
        set_rate_headers(h, &a.policy_header(), &a.header());
    }
    resp
}

fn set_rate_headers(h: &mut http::HeaderMap, policy: &str, now: &str) {
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, now)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
}

pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::BTreeSet;

    /// Every method the proto declares, from the generated descriptor set.
    fn declared_methods() -> BTreeSet<String> {
        let set = prost_types::FileDescriptorSet::decode(clarion_proto::api::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut out = BTreeSet::new();
        for file in set.file {
            let package = file.package().to_string();
            for service in &file.service {
                for m in &service.method {
                    out.insert(format!("/{package}.{}/{}", service.name(), m.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_declared_method_has_exactly_one_rule() {
        let declared = declared_methods();
        assert!(
            declared.len() >= 20,
            "descriptor set looks empty: {declared:?}"
        );
        let table: BTreeSet<String> = GRPC_METHODS.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(table.len(), GRPC_METHODS.len(), "a method is listed twice");
        let missing: Vec<_> = declared.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "methods without an access rule: {missing:?}"
        );
        let stale: Vec<_> = table.difference(&declared).collect();
        assert!(
            stale.is_empty(),
            "rules for methods that do not exist: {stale:?}"
        );
    }

    #[test]
    fn reading_keys_cannot_change_or_trigger_anything() {
        for (path, needs) in GRPC_METHODS {
            let name = path.rsplit('/').next().unwrap_or_default();
            let reads = [
                "Get",
                "List",
                "Show",
                "GetNotification",
                "GetLimits",
                "GetPreferences",
                "History",
                "Evaluate",
                // DeviceService
                "GetApp",
                "ListApps",
                "ListDevices",
                // InboxService
                "ListItems",
                "GetCounts",
                "Watch",
                // QuietHoursService (issue #33)
                "GetTenant",
                "GetSubscriber",
                // AnalyticsService (issue #30)
                "GetReport",
                "GetProviderHealth",
                // ComplianceService (issue #32)
                "ListHolds",
                "GetRetentionPolicy",
            ]
            .contains(&name);
            // Key listings and the quarantine are admin and operator surfaces.
            if reads && !path.contains("ApiKeyService") && !path.contains("QuarantineService") {
                assert_eq!(*needs, Tenant(Read), "{path}");
            } else {
                assert_ne!(*needs, Tenant(Read), "{path} changes something");
            }
        }
        assert_eq!(
            grpc_needs("/clarion.v1.ApiKeyService/List"),
            Some(Tenant(Admin))
        );
        assert_eq!(grpc_needs("/clarion.v1.NotificationService/Nope"), None);
    }

    #[test]
    fn subscriber_tokens_reach_listed_preference_calls_only() {
        for path in SUBSCRIBER_GRPC {
            assert!(
                path.starts_with("/clarion.v1.PreferenceService/")
                    || path.starts_with("/clarion.v1.TopicService/")
                    || path.starts_with("/clarion.v1.DeviceService/")
                    || path.starts_with("/clarion.v1.InboxService/"),
                "{path}"
            );
            let needs = grpc_needs(path).expect("a listed method has a rule");
            assert!(
                matches!(needs, Tenant(Read) | Tenant(Preferences)),
                "{path}: {needs:?}"
            );
        }
        for (m, p) in SUBSCRIBER_REST {
            let rule = REST_ROUTES.iter().find(|(rm, rp, _)| rm == m && rp == p);
            assert!(
                matches!(rule, Some((_, _, Read | Preferences))),
                "{m} {p}: {rule:?}"
            );
        }
        for never in [
            "/clarion.v1.PreferenceService/CreateSubscriberToken",
            "/clarion.v1.PreferenceService/Evaluate",
            "/clarion.v1.TopicService/Register",
            "/clarion.v1.SubscriberService/Get",
            "/clarion.v1.DeviceService/ConfigureApp",
            "/clarion.v1.DeviceService/ListApps",
        ] {
            assert!(!SUBSCRIBER_GRPC.contains(&never), "{never}");
        }
        let token = auth::Caller {
            tenant: clarion_domain::TenantId::parse("t1").unwrap(),
            actor: clarion_domain::Actor::System("subscriber:s1".into()),
            grant: clarion_domain::tenant::KeyGrant {
                key_id: "subscriber-token:k".into(),
                scopes: Default::default(),
                expires_at_ms: None,
            },
            subscriber: Some("s1".into()),
        };
        assert!(permit(&token, Read, true).is_ok());
        assert!(matches!(
            permit(&token, Read, false),
            Err(ApiError::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_rate_limited_status_carries_retry_info_and_retry_after() {
        let s = rate_limited(Duration::from_millis(1500));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.metadata().get("retry-after").unwrap(), "2");
        let info = s.get_details_retry_info().expect("RetryInfo detail");
        assert_eq!(info.retry_delay, Some(Duration::from_millis(1500)));
    }
}
