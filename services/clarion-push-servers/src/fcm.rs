//! A local FCM: both Google endpoints a sender talks to, on one HTTP port.
//!
//! * `POST /token`: the OAuth2 token endpoint (RFC 7523 `jwt-bearer`
//!   grant). It verifies the RS256 assertion with the public half of the
//!   service account's key (its `iss`, `aud`, `scope`, one-hour `exp`) and
//!   issues its own access tokens (`ya29.test-N`).
//! * `POST /v1/projects/{project}/messages:send`: accepts only a bearer
//!   token it issued and a v1 body (`{"message": {"token": ...}}`); records
//!   the message; answers with `projects/{project}/messages/{n}` or with an
//!   error scripted for the registration token, or the next error scripted
//!   in order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

pub const CLIENT_EMAIL: &str = "clarion@demo-project.iam.gserviceaccount.com";
pub const PROJECT: &str = "demo-project";
/// The only scope FCM HTTP v1 needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// A fresh 2048-bit RSA key (PKCS#8 PEM), as in a service-account key file.
/// Made by the `openssl` command (ring cannot generate RSA keys).
pub fn rsa_key_pem() -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed to make test keys");
    assert!(status.success(), "openssl genpkey failed");
    std::fs::read_to_string(path).expect("the generated key")
}

fn public_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .expect("a PKCS#8 PEM key");
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("an RSA key");
    pair.public().as_ref().to_vec()
}

/// One `messages:send` as received.
#[derive(Clone, Debug)]
pub struct Sent {
    pub project: String,
    /// The access token it came with.
    pub bearer: String,
    /// The whole body (`{"message": {...}}`).
    pub body: Value,
}

impl Sent {
    /// The message's registration token.
    pub fn token(&self) -> &str {
        self.body["message"]["token"].as_str().unwrap_or_default()
    }

    pub fn message(&self) -> &Value {
        &self.body["message"]
    }
}

/// A scripted error: status, `Retry-After`, body.
pub type Scripted = (u16, Option<String>, Value);

#[derive(Default)]
struct Google {
    public_der: Vec<u8>,
    token_url: String,
    expires_in: i64,
    issued: Mutex<Vec<String>>,
    assertion_iats: Mutex<Vec<i64>>,
    in_order: Mutex<VecDeque<Scripted>>,
    per_token: Mutex<HashMap<String, Scripted>>,
    received: Mutex<Vec<Sent>>,
    accepted: AtomicUsize,
}

pub struct FcmServer {
    /// `http://127.0.0.1:PORT`: the `base-url` of the FCM config.
    pub base_url: String,
    /// `{base}/token`: the `token-url` (and the key file's `token_uri`).
    pub token_url: String,
    /// The service account's private key (PKCS#8 PEM).
    pub key_pem: String,
    google: Arc<Google>,
    serve: tokio::task::JoinHandle<()>,
}

impl Drop for FcmServer {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

impl FcmServer {
    /// A server trusting a fresh service-account key; access tokens live
    /// `expires_in` seconds.
    pub async fn start(expires_in: i64) -> FcmServer {
        FcmServer::start_with_key(rsa_key_pem(), expires_in).await
    }

    pub async fn start_with_key(key_pem: String, expires_in: i64) -> FcmServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let base_url = format!("http://{}", l.local_addr().expect("bound"));
        let token_url = format!("{base_url}/token");
        let google = Arc::new(Google {
            public_der: public_der(&key_pem),
            token_url: token_url.clone(),
            expires_in,
            ..Google::default()
        });
        let app = axum::Router::new()
            .route("/token", post(token))
            .fallback(send)
            .with_state(google.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        FcmServer {
            base_url,
            token_url,
            key_pem,
            google,
            serve,
        }
    }

    /// The service-account key file (JSON) for this server's key.
    pub fn service_account_json(&self) -> String {
        service_account_json(&self.key_pem, &self.token_url)
    }

    /// Answers every message to `token` with this error from now on.
    pub fn answer(&self, token: &str, status: u16, body: Value) {
        self.google
            .per_token
            .lock()
            .unwrap()
            .insert(token.to_string(), (status, None, body));
    }

    /// Answers the next message (whatever its token) with this error.
    pub fn answer_next(&self, status: u16, retry_after: Option<&str>, body: Value) {
        self.google.in_order.lock().unwrap().push_back((
            status,
            retry_after.map(str::to_string),
            body,
        ));
    }

    pub fn received(&self) -> Vec<Sent> {
        self.google.received.lock().unwrap().clone()
    }

    /// Messages answered 200.
    pub fn accepted(&self) -> usize {
        self.google.accepted.load(Ordering::SeqCst)
    }

    /// Access tokens issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.google.issued.lock().unwrap().clone()
    }

    /// Forgets an issued token (FCM revoked it): sends with it get 401.
    pub fn revoke(&self, index: usize) {
        self.google.issued.lock().unwrap()[index] = "revoked".into();
    }

    /// The `iat` of every assertion exchanged.
    pub fn assertion_iats(&self) -> Vec<i64> {
        self.google.assertion_iats.lock().unwrap().clone()
    }

    /// Waits until `n` messages were received (polling, with a deadline).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Sent> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "FCM received {} of {n} messages within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A service-account key file as the Google Cloud console gives it.
pub fn service_account_json(key_pem: &str, token_url: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "k1",
        "private_key": key_pem,
        "client_email": CLIENT_EMAIL,
        "token_uri": token_url,
    })
    .to_string()
}

/// An FCM error body (`google.rpc.Status`).
pub fn error(code: u16, status: &str, message: &str, details: Value) -> Value {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

/// The `FcmError` detail carrying FCM's own error code.
pub fn fcm_detail(error_code: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
}

/// FCM's answer for a token that is no longer registered.
pub fn unregistered() -> Value {
    error(
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
        json!([fcm_detail("UNREGISTERED")]),
    )
}

/// FCM's answer for a payload field it refuses (our bug, not the token's).
pub fn field_violation(field: &str) -> Value {
    error(
        400,
        "INVALID_ARGUMENT",
        &format!("Invalid value at '{field}'"),
        json!([
            fcm_detail("INVALID_ARGUMENT"),
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": field, "description": "Invalid value"}]}
        ]),
    )
}

fn bad_request(error: &str, description: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(State(g): State<Arc<Google>>, Form(f): Form<HashMap<String, String>>) -> Response {
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return bad_request("unsupported_grant_type", String::new());
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[&g.token_url]);
    v.set_issuer(&[CLIENT_EMAIL]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let key = DecodingKey::from_rsa_der(&g.public_der);
    let assertion = f.get("assertion").map(String::as_str).unwrap_or_default();
    let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return bad_request("invalid_grant", e.to_string()),
    };
    let iat = claims["iat"].as_i64().unwrap_or_default();
    if claims["scope"] != SCOPE || claims["exp"].as_i64() != Some(iat + 3600) {
        return bad_request("invalid_scope", String::new());
    }
    g.assertion_iats.lock().unwrap().push(iat);
    let mut issued = g.issued.lock().unwrap();
    let t = format!("ya29.test-{}", issued.len() + 1);
    issued.push(t.clone());
    Json(json!({"access_token": t, "expires_in": g.expires_in, "token_type": "Bearer"}))
        .into_response()
}

fn scripted((status, retry_after, body): Scripted) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(body)).into_response();
    if let Some(ra) = retry_after.and_then(|ra| ra.parse().ok()) {
        resp.headers_mut().insert("retry-after", ra);
    }
    resp
}

async fn send(
    State(g): State<Arc<Google>>,
    uri: Uri,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if !g.issued.lock().unwrap().contains(&bearer) {
        let e = error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        );
        return (StatusCode::UNAUTHORIZED, Json(e)).into_response();
    }
    let Some(project) = uri
        .path()
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/messages:send"))
    else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let project = project.to_string();
    let Some(token) = body.0["message"]["token"].as_str().map(str::to_string) else {
        return scripted((400, None, field_violation("message.token")));
    };
    g.received.lock().unwrap().push(Sent {
        project: project.clone(),
        bearer,
        body: body.0,
    });
    if let Some(s) = g.in_order.lock().unwrap().pop_front() {
        return scripted(s);
    }
    if let Some(s) = g.per_token.lock().unwrap().get(&token).cloned() {
        return scripted(s);
    }
    let n = g.accepted.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response()
}
