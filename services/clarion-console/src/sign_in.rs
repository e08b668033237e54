//! Signing in and out, the home page, and the operator's tenant switch.
//!
//! Sign-in takes an API key (the session works in the key's tenant, with
//! its scopes) or the operator admin token (every scope; the operator
//! chooses the tenant and may switch). The sign-in form has its own CSRF
//! token, bound to a short-lived cookie, since there is no session yet.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clarion_domain::tenant::PresentedKey;
use clarion_store::{RowKey, Table};
use minijinja::context;
use serde::Deserialize;

use crate::page::{self, PageError};
use crate::session::{self, Claims, Session, Submitted, CSRF_FIELD, SIGN_IN_COOKIE};
use crate::{Console, BASE};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/tenant", get(tenant_page).post(switch_tenant))
}

/// How long the sign-in form stays valid.
const SIGN_IN_FORM_TTL_S: u64 = 30 * 60;

#[derive(Deserialize, Default)]
struct SignInQuery {
    next: Option<String>,
    expired: Option<String>,
}

/// Where to go after sign-in: a console path only (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with(BASE) && !n.starts_with("//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => BASE.to_string(),
    }
}

fn sign_in_form(
    console: &Console,
    next: &str,
    expired: bool,
    error: Option<String>,
) -> Result<Response, PageError> {
    let nonce = session::nonce();
    let csrf = console.sessions.csrf(&format!("sign-in:{nonce}"));
    let status = if error.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let html = page::render_plain(
        "sign_in.html",
        context! { next, expired, error, csrf, csrf_field => CSRF_FIELD, base => BASE },
    )?;
    Ok((
        status,
        [(
            header::SET_COOKIE,
            session::cookie(console, SIGN_IN_COOKIE, Some(&nonce), SIGN_IN_FORM_TTL_S),
        )],
        html,
    )
        .into_response())
}

async fn sign_in_page(
    State(console): State<Console>,
    Query(q): Query<SignInQuery>,
) -> Result<Response, PageError> {
    let next = safe_next(q.next.as_deref());
    sign_in_form(&console, &next, q.expired.is_some(), None)
}

#[derive(Deserialize)]
struct SignInForm {
    /// An API key (`ck_...`) or the operator admin token.
    credential: String,
    #[serde(default)]
    next: String,
}

async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PageError> {
    session::same_origin(&headers)?;
    let nonce = session::cookie_value(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let token = session::form_field(&body, CSRF_FIELD).unwrap_or_default();
    if nonce.is_empty()
        || !console
            .sessions
            .csrf_ok(&format!("sign-in:{nonce}"), &token)
    {
        return Err(PageError::Csrf);
    }
    let form: SignInForm = session::parse_form(&body)?;
    let next = safe_next(Some(&form.next));
    let credential = form.credential.trim().to_string();
    if credential.is_empty() {
        return Err(PageError::bad_request(
            "credential",
            "enter an API key or the operator admin token",
        ));
    }
    let now = console.gw.clock.now_ms();
    let expires_at_ms = now + console.cfg.session_ttl_ms as i64;
    let claims = match credentials(&console, &credential).await {
        Ok(c) => Claims {
            issued_at_ms: now,
            expires_at_ms,
            nonce: session::nonce(),
            ..c
        },
        Err(message) => return sign_in_form(&console, &next, false, Some(message)),
    };
    tracing::info!(
        tenant = claims.tenant,
        key_id = claims.key_id,
        operator = claims.operator,
        "console sign-in"
    );
    let max_age = console.cfg.session_ttl_ms / 1000;
    let sealed = console.sessions.seal(&claims);
    // Appended: an array of headers would keep only the last `Set-Cookie`.
    Ok((
        axum::response::AppendHeaders([
            (
                header::SET_COOKIE,
                session::cookie(&console, session::COOKIE, Some(&sealed), max_age),
            ),
            (
                header::SET_COOKIE,
                session::cookie(&console, SIGN_IN_COOKIE, None, 0),
            ),
        ]),
        page::see_other(&next),
    )
        .into_response())
}

/// The claims of a credential (without times and nonce), or the message
/// the form shows. One message for every bad key, as the API.
async fn credentials(console: &Console, credential: &str) -> Result<Claims, String> {
    let blank = |tenant: String, operator: bool, key_id: String, check: String| Claims {
        tenant,
        operator,
        key_id,
        check,
        issued_at_ms: 0,
        expires_at_ms: 0,
        nonce: String::new(),
    };
    if let Some(key) = PresentedKey::parse(credential) {
        let caller = clarion_gateway::auth::by_credential(&console.gw, Some(credential.into()))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(blank(
            caller.tenant.to_string(),
            false,
            caller.grant.key_id,
            key.secret_sha256,
        ));
    }
    match clarion_gateway::auth::admin_by_credential(&console.gw, Some(credential.into())) {
        Ok(_) => {
            let hash = console.gw.admin_token_sha256.clone().unwrap_or_default();
            Ok(blank(
                String::new(),
                true,
                "admin".into(),
                session::operator_check(&hash),
            ))
        }
        Err(_) => {
            Err(clarion_gateway::auth::INVALID_KEY.to_string()
                + " (or the admin token is not valid)")
        }
    }
}

#[derive(Deserialize)]
struct Empty {}

async fn sign_out(State(console): State<Console>, Submitted { .. }: Submitted<Empty>) -> Response {
    (
        [(
            header::SET_COOKIE,
            session::cookie(&console, session::COOKIE, None, 0),
        )],
        page::see_other(&format!("{BASE}/sign-in")),
    )
        .into_response()
}

async fn home(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    if session.claims.tenant.is_empty() {
        return Ok(page::see_other(&format!("{BASE}/tenant")));
    }
    page::render(&console, &session, "home.html", context! { base => BASE })
}

async fn tenant_page(
    State(console): State<Console>,
    session: Session,
) -> Result<Response, PageError> {
    if !session.is_operator() {
        return Err(PageError::Forbidden(
            "only the operator can switch tenants; your API key belongs to one tenant".into(),
        ));
    }
    page::render(&console, &session, "tenant.html", context! { base => BASE })
}

#[derive(Deserialize)]
struct TenantForm {
    tenant: String,
    #[serde(default)]
    next: String,
}

/// The operator switches tenants: a new cookie with the tenant, the rest of
/// the session unchanged. The tenant must exist.
async fn switch_tenant(
    State(console): State<Console>,
    Submitted { session, form }: Submitted<TenantForm>,
) -> Result<Response, PageError> {
    if !session.is_operator() {
        return Err(PageError::Forbidden(
            "only the operator can switch tenants".into(),
        ));
    }
    let tenant = clarion_domain::TenantId::parse(form.tenant.trim())
        .map_err(|e| PageError::bad_request("tenant", e))?;
    let row = RowKey::new(Table::Tenants, tenant.as_str(), tenant.as_str(), Vec::new());
    if console.gw.store.get(&row).await?.is_none() {
        return Err(PageError::bad_request(
            "tenant",
            format!("there is no tenant {:?}", tenant.as_str()),
        ));
    }
    let claims = Claims {
        tenant: tenant.to_string(),
        ..session.claims
    };
    let remaining_s = ((claims.expires_at_ms - console.gw.clock.now_ms()).max(0) / 1000) as u64;
    let sealed = console.sessions.seal(&claims);
    let next = if form.next.is_empty() {
        BASE.to_string()
    } else {
        safe_next(Some(&form.next))
    };
    Ok((
        [(
            header::SET_COOKIE,
            session::cookie(&console, session::COOKIE, Some(&sealed), remaining_s),
        )],
        page::see_other(&next),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(
            safe_next(Some("/console/dead-letters")),
            "/console/dead-letters"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/console");
        assert_eq!(safe_next(Some("//evil.example/console")), "/console");
        assert_eq!(safe_next(None), "/console");
    }
}
