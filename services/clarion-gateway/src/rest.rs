//! The REST API (JSON over HTTP): the same auth (API key in
//! `authorization: Bearer` or `x-api-key`), the same code paths as gRPC;
//! errors are RFC 9457 `application/problem+json` (`crate::problem`). Its
//! OpenAPI 3.1 document is served at `GET /openapi.json` (`crate::openapi`).
//!
//! Conventions every route follows (docs/api.md): the scope of each route
//! in `access::REST_ROUTES`, checked with the rate limit (429 with
//! `Retry-After`; `RateLimit-Policy` and `RateLimit` on answers) by
//! `access::rest_guard`; `Idempotency-Key` on POSTs (`crate::idempotency`);
//! cursor pagination of lists (`crate::pagination`); bodies, queries and
//! paths read with `crate::extract`, whose errors name the field.

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;

use crate::rest_exports;
use crate::state::GatewayState;
use crate::{
    rest_analytics, rest_apps, rest_compliance, rest_dead_letters, rest_devices, rest_digests,
    rest_inbox, rest_notifications, rest_preferences, rest_providers, rest_schedules,
    rest_settings, rest_slas, rest_subscribers,
};

/// One REST module: its routes, and the OpenAPI document of their paths.
pub struct Module {
    pub routes: fn() -> Router<GatewayState>,
    pub openapi: fn() -> utoipa::openapi::OpenApi,
}

/// Every REST module. A new module adds its row here, and one row per
/// route in `access::REST_ROUTES` (a test checks that the document and
/// that table list the same routes).
pub const MODULES: &[Module] = &[
    Module {
        routes: rest_notifications::routes,
        openapi: <rest_notifications::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_dead_letters::routes,
        openapi: <rest_dead_letters::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_subscribers::routes,
        openapi: <rest_subscribers::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_preferences::routes,
        openapi: <rest_preferences::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_apps::routes,
        openapi: <rest_apps::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_devices::routes,
        openapi: <rest_devices::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_inbox::routes,
        openapi: <rest_inbox::Paths as OpenApi>::openapi,
    },
    // Issue #33 (p33-sched): schedules, quiet hours, calendar.
    Module {
        routes: rest_schedules::routes,
        openapi: <rest_schedules::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_settings::routes,
        openapi: <rest_settings::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_digests::routes,
        openapi: <rest_digests::Paths as OpenApi>::openapi,
    },
    // Issue #30: delivery analytics.
    Module {
        routes: rest_analytics::routes,
        openapi: <rest_analytics::Paths as OpenApi>::openapi,
    },
    // Issue #32: secure exports.
    Module {
        routes: rest_exports::routes,
        openapi: <rest_exports::Paths as OpenApi>::openapi,
    },
    // Issue #32: erasure, legal holds, retention.
    Module {
        routes: rest_compliance::routes,
        openapi: <rest_compliance::Paths as OpenApi>::openapi,
    },
    // Issue #31: tenant providers and SLAs.
    Module {
        routes: rest_providers::routes,
        openapi: <rest_providers::Paths as OpenApi>::openapi,
    },
    Module {
        routes: rest_slas::routes,
        openapi: <rest_slas::Paths as OpenApi>::openapi,
    },
];

/// Every REST route, guarded, and `/openapi.json` (public).
pub fn routes(state: GatewayState) -> Router {
    let api = MODULES
        .iter()
        .fold(Router::new(), |r, m| r.merge((m.routes)()))
        // Scope and rate limit of every route (crate::access::REST_ROUTES).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::rest_guard,
        ))
        .layer(DefaultBodyLimit::max(crate::extract::MAX_BODY_BYTES))
        .with_state(state);
    api.route("/openapi.json", get(crate::openapi::serve))
}
