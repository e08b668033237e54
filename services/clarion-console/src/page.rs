//! Rendering: the templates compiled into the binary, the layout every page
//! extends, and the error page (a clear message, never a stack trace).
//!
//! Templates are minijinja, auto-escaped (their names end in `.html`).
//! Each page module lists its own in a `TEMPLATES` constant, so adding a
//! page touches only its module and [`TEMPLATE_SETS`].

use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use clarion_gateway::error::ApiError;
use minijinja::{context, Environment, Value};

use crate::session::{Session, CSRF_FIELD};
use crate::Console;

/// Largest form body (a workflow's YAML is the largest thing posted).
pub const MAX_FORM_BYTES: usize = 512 * 1024;

/// The shared templates: the layout, sign-in, errors, home.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("sign_in.html", include_str!("../templates/sign_in.html")),
    ("home.html", include_str!("../templates/home.html")),
    ("tenant.html", include_str!("../templates/tenant.html")),
];

/// Every module's templates.
const TEMPLATE_SETS: &[&[(&str, &str)]] = &[
    TEMPLATES,
    crate::notifications::TEMPLATES,
    crate::dead_letters::TEMPLATES,
    crate::workflows::TEMPLATES,
    crate::subscribers::TEMPLATES,
    crate::live::TEMPLATES,
    crate::dashboards::TEMPLATES,
    crate::compliance::TEMPLATES,
];

/// The main navigation: (path under the console, label, what it is for).
#[derive(serde::Serialize)]
struct NavItem {
    href: &'static str,
    label: &'static str,
    about: &'static str,
    /// Shown only to sessions with the `admin` scope.
    admin: bool,
}

const NAV: &[NavItem] = &[
    NavItem {
        href: "",
        label: "Home",
        about: "",
        admin: false,
    },
    NavItem {
        href: "/notifications",
        label: "Notifications",
        about: "search notifications; each one's timeline, message and attempts",
        admin: false,
    },
    NavItem {
        href: "/dead-letters",
        label: "Dead letters",
        about: "notifications that stopped for good: retry or discard them",
        admin: false,
    },
    NavItem {
        href: "/workflows",
        label: "Workflows",
        about: "versions, YAML, diffs, applying a new version; templates and previews",
        admin: false,
    },
    NavItem {
        href: "/subscribers",
        label: "Subscribers",
        about: "profiles, contacts, preferences, devices, inbox, notifications received",
        admin: false,
    },
    NavItem {
        href: "/live",
        label: "Live",
        about: "triggers and sends per second, failures, dead letters, processor lag",
        admin: false,
    },
    NavItem {
        href: "/dashboards",
        label: "Dashboards",
        about: "delivery, open and click rates over time, latencies, provider health",
        admin: false,
    },
    NavItem {
        href: "/compliance",
        label: "Compliance",
        about: "legal holds, the retention policy, erasing a subscriber, recent exports",
        admin: true,
    },
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for set in TEMPLATE_SETS {
            for (name, source) in *set {
                env.add_template(name, source)
                    .unwrap_or_else(|e| panic!("console template {name}: {e:#}"));
            }
        }
        env.add_filter("time", format_time);
        // Marked safe: escaping would write every `/` as `&#x2f;`.
        env.add_global("base", Value::from_safe_string(crate::BASE.to_string()));
        let (css, js) = crate::assets::names();
        env.add_global("assets", context! { css, js });
        env.add_global("nav", Value::from_serialize(NAV));
        env
    })
}

/// `{{ ms | time }}`: milliseconds since the epoch as UTC, to the second
/// (`—` for 0).
fn format_time(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    clarion_domain::time::format_instant(ms)
}

/// What the layout needs of the session: shown in every page's header.
pub fn session_context(console: &Console, s: &Session) -> Value {
    context! {
        tenant => s.claims.tenant,
        operator => s.claims.operator,
        key_id => s.claims.key_id,
        csrf => s.csrf_token(console),
        csrf_field => CSRF_FIELD,
        path => s.path,
        expires_at_ms => s.claims.expires_at_ms,
        admin => s.caller_with(clarion_domain::tenant::Scope::Admin).is_ok(),
    }
}

/// Renders `name` with `ctx` and the session (`session` in the template).
pub fn render(
    console: &Console,
    session: &Session,
    name: &str,
    ctx: Value,
) -> Result<Response, PageError> {
    let full = context! { session => session_context(console, session), ..ctx };
    render_plain(name, full).map(IntoResponse::into_response)
}

/// Renders a template without a session (sign-in, errors).
pub fn render_plain(name: &str, ctx: Value) -> Result<Html<String>, PageError> {
    let template = env()
        .get_template(name)
        .map_err(|e| PageError::Internal(format!("template {name}: {e}")))?;
    template
        .render(ctx)
        .map(Html)
        .map_err(|e| PageError::Internal(format!("rendering {name}: {e:#}")))
}

/// Why a page could not be shown. Each renders as the error page with its
/// status and a message for a person; internal details go to the log only.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A form or filter value is wrong: the field and what is wrong.
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("your session has ended: sign in again")]
    Unauthenticated,
    #[error(
        "this form has expired or did not come from this console: reload the page and try again"
    )]
    Csrf,
    #[error("the form is over the limit of {MAX_FORM_BYTES} bytes")]
    TooLarge,
    /// An operator has not chosen the tenant to work in.
    #[error("choose a tenant to work in")]
    NoTenant,
    #[error("the service is unavailable, try again: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl PageError {
    pub fn bad_request(field: &str, message: impl Into<String>) -> PageError {
        PageError::BadRequest {
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Forbidden(_) | PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::Unauthenticated => StatusCode::UNAUTHORIZED,
            PageError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::NoTenant => StatusCode::CONFLICT,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(v) => {
                let first = v.0.first();
                PageError::BadRequest {
                    field: first.map(|f| f.field.clone()).unwrap_or_default(),
                    message: v
                        .0
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.description))
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
            ApiError::Unauthenticated(_) => PageError::Unauthenticated,
            ApiError::PermissionDenied(m) => PageError::Forbidden(m),
            ApiError::NotFound(m) => PageError::NotFound(m),
            ApiError::AlreadyExists(m) => PageError::bad_request("id", m),
            ApiError::FailedPrecondition(m) => PageError::bad_request("", m),
            ApiError::Unavailable(m) => PageError::Unavailable(m),
            ApiError::Internal(m) => PageError::Internal(m),
        }
    }
}

impl From<clarion_store::StoreError> for PageError {
    fn from(e: clarion_store::StoreError) -> Self {
        PageError::Unavailable(format!("store: {e}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.status();
        // The person sees what they can act on; the details are logged.
        let message = match &self {
            PageError::Internal(detail) => {
                tracing::error!(detail, "console page failed");
                "something went wrong on our side; the details are in the server log".to_string()
            }
            PageError::Unavailable(detail) => {
                tracing::warn!(detail, "console page: a backend is unavailable");
                "the service is unavailable for a moment: try again".to_string()
            }
            other => other.to_string(),
        };
        let field = match &self {
            PageError::BadRequest { field, .. } => field.clone(),
            _ => String::new(),
        };
        let body = render_plain(
            "error.html",
            context! {
                status => status.as_u16(),
                title => status.canonical_reason().unwrap_or("Error"),
                message,
                field,
                no_tenant => matches!(self, PageError::NoTenant),
                sign_in => matches!(self, PageError::Unauthenticated),
                base => crate::BASE,
            },
        )
        .map(IntoResponse::into_response)
        .unwrap_or_else(|_| (status, "error").into_response());
        (status, body).into_response()
    }
}

/// Unknown console paths: the error page, not the API's problem+json;
/// without a session, sign-in (which pages exist is no one else's business).
pub async fn not_found(_signed_in: Session) -> PageError {
    PageError::NotFound("no console page at this address".into())
}

/// Headers on every console answer: no framing by other sites, no script
/// but ours, no caching of pages that show tenant data.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A POST's answer: see the result at `to` (303, so a reload does not post again).
pub fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

/// An id as one percent-encoded path segment of a console link.
pub fn path_segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
