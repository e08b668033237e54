//! The web console under `/console`: server-rendered HTML pages for
//! operators, support staff and tenant admins, served by the gateway's HTTP
//! listener (no separate process, no Node.js at run time).
//!
//! Pages are minijinja templates compiled into the binary ([`page`]); each
//! works without JavaScript (links and forms, POST then redirect), and a few
//! lines of script only add what needs it (the live page's refresh, the
//! template preview). Every page reads and changes data through the same
//! gateway functions as gRPC and REST, with the signed-in caller, so scopes,
//! tenant isolation and the actor in each event are the API's own.
//!
//! Sign-in ([`sign_in`]) exchanges an API key or the operator admin token for
//! a signed session cookie ([`session`]); every change is a form POST
//! carrying the session's CSRF token.

pub mod assets;
pub mod chart;
pub mod compliance;
pub mod dashboards;
pub mod dead_letters;
pub mod live;
pub mod notifications;
pub mod page;
pub mod session;
pub mod sign_in;
pub mod subscribers;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clarion_gateway::GatewayState;
use serde::{Deserialize, Serialize};

/// Where the console is mounted.
pub const BASE: &str = "/console";

/// `console` in the configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console (on the gateway's HTTP listener).
    pub enabled: bool,
    /// How long a session lasts after sign-in (ms).
    pub session_ttl_ms: u64,
    /// Mark the session cookie `Secure` (set it when the console is reached
    /// over HTTPS, e.g. behind a TLS-terminating proxy).
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_ttl_ms: 8 * 3_600_000,
            secure_cookie: false,
        }
    }
}

/// What every console handler shares.
#[derive(Clone)]
pub struct Console {
    pub gw: GatewayState,
    pub sessions: Arc<session::SessionKeys>,
    pub cfg: Arc<ConsoleConfig>,
    /// The dead-letter alert thresholds (`dlq.*`), shown with the queue's size.
    pub dlq_alerts: Arc<clarion_runtime::router::DlqAlerts>,
}

impl Console {
    /// `secret`: the deployment's console key (32 random bytes kept sealed
    /// in the store, the same on every gateway: see [`session::secret`]).
    pub fn new(gw: GatewayState, secret: Vec<u8>, cfg: ConsoleConfig) -> Console {
        Console {
            gw,
            sessions: Arc::new(session::SessionKeys::new(secret)),
            cfg: Arc::new(cfg),
            dlq_alerts: Arc::default(),
        }
    }

    /// The deployment's dead-letter alerting (the thresholds the pages show).
    pub fn with_dlq_alerts(mut self, alerts: clarion_runtime::router::DlqAlerts) -> Console {
        self.dlq_alerts = Arc::new(alerts);
        self
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_millis(self.cfg.session_ttl_ms)
    }
}

/// Every console route, under [`BASE`].
pub fn routes(console: Console) -> Router {
    let pages = Router::new()
        .merge(sign_in::routes())
        .merge(assets::routes())
        .merge(notifications::routes())
        .merge(dead_letters::routes())
        .merge(workflows::routes())
        .merge(subscribers::routes())
        .merge(live::routes())
        .merge(dashboards::routes())
        .merge(compliance::routes())
        .fallback(page::not_found)
        .layer(axum::middleware::from_fn(page::security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(page::MAX_FORM_BYTES))
        .with_state(console);
    Router::new().nest(BASE, pages)
}
