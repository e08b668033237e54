//! Console sessions: a signed cookie, checked again on every request.
//!
//! The cookie holds the session's claims (who signed in, which tenant, when
//! it ends) and an HMAC-SHA256 of them under the deployment's console key,
//! so any gateway can check it and nothing is kept per session. It is
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends
//! it) and scoped to `/console`, with `Max-Age` the session's lifetime.
//!
//! A session signed in with an API key keeps the key's hash, and every
//! request looks the key up again: a revoked or expired key ends its
//! sessions at once, and the scopes are the key's current ones. An
//! operator session keeps a digest of the admin token's hash: changing the
//! admin token ends every operator session.
//!
//! CSRF: every POST carries `_csrf`, an HMAC of the session's nonce
//! ([`Session::csrf_token`]); a POST without it, or with another session's,
//! is refused ([`Submitted`]), as is one whose `Origin` is another site.

use axum::async_trait;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clarion_domain::tenant::{KeyGrant, Scope, Scopes};
use clarion_domain::{Actor, TenantId};
use clarion_gateway::auth::Caller;
use clarion_store::{RowKey, Store, Table};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::page::PageError;
use crate::Console;

/// The session cookie.
pub const COOKIE: &str = "clarion_session";
/// The sign-in form's own CSRF cookie (before there is a session).
pub const SIGN_IN_COOKIE: &str = "clarion_sign_in";
/// The form field every POST carries.
pub const CSRF_FIELD: &str = "_csrf";

type HmacSha256 = Hmac<Sha256>;

/// The deployment's console key: generated once, kept in the store sealed
/// with the master keyring (as the tracking key), shared by every gateway.
pub async fn secret(
    store: &dyn Store,
    keyring: &clarion_dispatch::secrets::Keyring,
) -> Result<Vec<u8>, String> {
    let key = RowKey::new(
        Table::Settings,
        clarion_store::SYSTEM_TENANT,
        "console-secret",
        Vec::new(),
    );
    let fresh: [u8; 32] = rand::random();
    let sealed = keyring.seal(PURPOSE, &fresh);
    match store
        .insert_if_absent(&key, Bytes::from(sealed), None)
        .await
        .map_err(|e| e.to_string())?
    {
        None => Ok(fresh.to_vec()),
        Some(existing) => keyring.open(PURPOSE, &existing).map_err(|e| e.to_string()),
    }
}

/// The purpose the console key is sealed under.
const PURPOSE: &str = "console-session-key";

/// Signs and checks session cookies and CSRF tokens.
pub struct SessionKeys {
    key: Vec<u8>,
}

impl SessionKeys {
    pub fn new(key: Vec<u8>) -> SessionKeys {
        SessionKeys { key }
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(purpose);
        m.update(&[0]);
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    fn verify(&self, purpose: &[u8], data: &[u8], tag: &[u8]) -> bool {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(purpose);
        m.update(&[0]);
        m.update(data);
        m.verify_slice(tag).is_ok()
    }

    /// The cookie value of `claims`.
    pub fn seal(&self, claims: &Claims) -> String {
        let body = serde_json::to_vec(claims).expect("serializable");
        let tag = self.mac(b"session", &body);
        format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The claims of a cookie value this deployment signed (not yet
    /// checked for expiry or revocation).
    pub fn open(&self, value: &str) -> Option<Claims> {
        let mut parts = value.split('.');
        let (Some("v1"), Some(body), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let body = URL_SAFE_NO_PAD.decode(body).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !self.verify(b"session", &body, &tag) {
            return None;
        }
        serde_json::from_slice(&body).ok()
    }

    /// The CSRF token bound to a nonce.
    pub fn csrf(&self, nonce: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(b"csrf", nonce.as_bytes()))
    }

    /// Whether `token` is the CSRF token of `nonce` (constant time).
    pub fn csrf_ok(&self, nonce: &str, token: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|t| self.verify(b"csrf", nonce.as_bytes(), &t))
    }
}

/// What a session cookie says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The tenant the session works in ("" for an operator who has not
    /// chosen one yet).
    pub tenant: String,
    /// Signed in with the operator admin token (may switch tenants).
    pub operator: bool,
    /// The API key's id (for an operator: "admin").
    pub key_id: String,
    /// The API key's secret hash (looked up on every request); for an
    /// operator, a digest of the admin token's hash.
    pub check: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    /// Random, per session: the CSRF token is its HMAC.
    pub nonce: String,
}

/// A random nonce (hex).
pub fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The operator's check value: a digest of the admin token's hash.
pub fn operator_check(admin_token_sha256: &str) -> String {
    clarion_domain::tenant::sha256_hex(format!("console:{admin_token_sha256}").as_bytes())
}

/// The `Set-Cookie` value of a session (or of its removal, `None`).
pub fn cookie(console: &Console, name: &str, value: Option<&str>, max_age_s: u64) -> String {
    let secure = if console.cfg.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    match value {
        Some(v) => format!(
            "{name}={v}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}",
            crate::BASE
        ),
        None => format!(
            "{name}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            crate::BASE
        ),
    }
}

/// A cookie's value in the request headers.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A signed-in request: the checked claims and the caller they stand for.
#[derive(Clone, Debug)]
pub struct Session {
    pub claims: Claims,
    /// The key's current grant (all scopes for the operator).
    pub grant: KeyGrant,
    /// The request's path (the layout marks the current page).
    pub path: String,
}

impl Session {
    /// The caller every gateway function takes: the session's tenant, the
    /// signed-in actor (the API key, or the operator), its scopes. An
    /// operator who has not chosen a tenant gets [`PageError::NoTenant`].
    pub fn caller(&self) -> Result<Caller, PageError> {
        if self.claims.tenant.is_empty() {
            return Err(PageError::NoTenant);
        }
        Ok(Caller {
            tenant: TenantId::parse(&self.claims.tenant)
                .map_err(|e| PageError::bad_request("tenant", e))?,
            actor: self.actor(),
            grant: self.grant.clone(),
            subscriber: None,
        })
    }

    /// [`Session::caller`], refused without `scope`.
    pub fn caller_with(&self, scope: Scope) -> Result<Caller, PageError> {
        let caller = self.caller()?;
        if !caller.grant.scopes.contains(scope) {
            return Err(PageError::Forbidden(format!(
                "your API key does not have the {:?} scope this page needs",
                scope.as_str()
            )));
        }
        Ok(caller)
    }

    /// Who the events this session causes name.
    pub fn actor(&self) -> Actor {
        if self.claims.operator {
            Actor::Operator("admin".into())
        } else {
            Actor::ApiKey(self.claims.key_id.clone())
        }
    }

    pub fn csrf_token(&self, console: &Console) -> String {
        console.sessions.csrf(&self.claims.nonce)
    }

    pub fn is_operator(&self) -> bool {
        self.claims.operator
    }
}

/// Why a request has no session.
enum NoSession {
    Missing,
    Expired,
}

impl NoSession {
    /// GETs go to the sign-in page (and come back after); other methods get
    /// 401 with a page saying to sign in again (a redirect would lose the
    /// submitted form anyway).
    fn respond(self, method: &Method, path_and_query: &str) -> Response {
        let why = match self {
            NoSession::Missing => "",
            NoSession::Expired => "&expired=1",
        };
        if method == Method::GET || method == Method::HEAD {
            let next =
                form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect::<String>();
            return Redirect::to(&format!("{}/sign-in?next={next}{why}", crate::BASE))
                .into_response();
        }
        PageError::Unauthenticated.into_response()
    }
}

/// Checks the request's session cookie: signature, expiry, and that the key
/// (or the admin token) still stands.
pub async fn check(console: &Console, headers: &HeaderMap) -> Result<(Claims, KeyGrant), ()> {
    let claims = cookie_value(headers, COOKIE)
        .and_then(|v| console.sessions.open(v))
        .ok_or(())?;
    let now = console.gw.clock.now_ms();
    if now >= claims.expires_at_ms {
        return Err(());
    }
    if claims.operator {
        let current = console.gw.admin_token_sha256.as_deref().ok_or(())?;
        if operator_check(current) != claims.check {
            return Err(());
        }
        let grant = KeyGrant {
            key_id: "admin".into(),
            scopes: Scopes::ALL,
            expires_at_ms: None,
        };
        return Ok((claims, grant));
    }
    let grant = clarion_gateway::auth::grant_by_hash(&console.gw, &claims.tenant, &claims.check)
        .await
        .map_err(|_| ())?
        .filter(|g| !g.expired_at(now) && g.key_id == claims.key_id)
        .ok_or(())?;
    Ok((claims, grant))
}

#[async_trait]
impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        // The full URI: inside the console's nested router, `parts.uri`
        // has lost the `/console` prefix.
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map(|o| o.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let had_cookie = cookie_value(&parts.headers, COOKIE).is_some_and(|v| !v.is_empty());
        match check(console, &parts.headers).await {
            Ok((claims, grant)) => Ok(Session {
                claims,
                grant,
                path: uri.path().to_string(),
            }),
            Err(()) => {
                let why = if had_cookie {
                    NoSession::Expired
                } else {
                    NoSession::Missing
                };
                Err(why.respond(&parts.method, &path_and_query))
            }
        }
    }
}

/// A form POST from a signed-in session: its CSRF token checked, its
/// `Origin` (when sent) this site, its body parsed as `T`
/// (`application/x-www-form-urlencoded`). Errors name the field.
pub struct Submitted<T> {
    pub session: Session,
    pub form: T,
}

/// Refuses a request whose `Origin` names another site than its `Host`.
pub fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(PageError::Forbidden(
            "this form was sent from another site".into(),
        ))
    }
}

/// The value of one field of a url-encoded body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Parses a url-encoded form body, naming the field at fault.
pub fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(body).map_err(|e| {
        let msg = e.to_string();
        let field = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| msg.split_once(p))
            .and_then(|(_, rest)| rest.split('`').next())
            .unwrap_or("form")
            .to_string();
        PageError::bad_request(&field, msg)
    })
}

#[async_trait]
impl<T: DeserializeOwned + Send> FromRequest<Console> for Submitted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, console).await?;
        same_origin(&parts.headers).map_err(IntoResponse::into_response)?;
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, console).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                PageError::TooLarge.into_response()
            } else {
                PageError::bad_request("form", r.body_text()).into_response()
            }
        })?;
        let token = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
        if !console.sessions.csrf_ok(&session.claims.nonce, &token) {
            return Err(PageError::Csrf.into_response());
        }
        let form = parse_form(&bytes).map_err(IntoResponse::into_response)?;
        Ok(Submitted { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            tenant: "acme".into(),
            operator: false,
            key_id: "k1".into(),
            check: "ab".into(),
            issued_at_ms: 1,
            expires_at_ms: 2,
            nonce: "n".into(),
        }
    }

    #[test]
    fn a_cookie_opens_only_as_signed() {
        let keys = SessionKeys::new(vec![7; 32]);
        let sealed = keys.seal(&claims());
        assert_eq!(keys.open(&sealed), Some(claims()));
        // Another deployment's key, or one changed byte of the claims.
        assert_eq!(SessionKeys::new(vec![8; 32]).open(&sealed), None);
        let mut parts: Vec<String> = sealed.split('.').map(String::from).collect();
        let mut body = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        body[5] ^= 1;
        parts[1] = URL_SAFE_NO_PAD.encode(body);
        assert_eq!(keys.open(&parts.join(".")), None);
    }

    #[test]
    fn a_csrf_token_is_bound_to_its_session() {
        let keys = SessionKeys::new(vec![7; 32]);
        let t = keys.csrf("nonce-a");
        assert!(keys.csrf_ok("nonce-a", &t));
        assert!(!keys.csrf_ok("nonce-b", &t));
        assert!(!keys.csrf_ok("nonce-a", ""));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; clarion_session=v1.x.y".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("v1.x.y"));
        assert_eq!(cookie_value(&h, "b"), None);
    }
}
