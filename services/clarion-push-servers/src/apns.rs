//! A local APNs: HTTP/2 only, over TLS with a self-signed certificate for
//! 127.0.0.1 made at start ([`ApnsServer::ca_pem`] is what a client must
//! trust). It checks what Apple checks before taking a push: the ES256
//! provider token's signature (with the public half of the `.p8` key), its
//! `kid` and `iss`, `apns-topic`, `apns-push-type`, a UUID `apns-id`, the
//! priority, the collapse id's length and the payload's size; then answers
//! 200 with the `apns-id` echoed, or what a test scripted for the token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Barrier;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::{rustls, TlsAcceptor};

/// The team and key ids the server expects by default.
pub const TEAM_ID: &str = "TEAM123456";
pub const KEY_ID: &str = "KEY7654321";

/// Apple's limit on a push payload.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// A provider signing key as Apple issues it: the `.p8` PEM (PKCS#8, P-256)
/// for the client, the raw public key for the server.
#[derive(Clone, Debug)]
pub struct ProviderKey {
    pub pem: String,
    pub public: Vec<u8>,
}

impl ProviderKey {
    pub fn generate() -> ProviderKey {
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key pair");
        ProviderKey {
            pem: key.serialize_pem(),
            public: key.public_key_raw().to_vec(),
        }
    }
}

/// One push as the server received it (after its checks passed).
#[derive(Clone, Debug)]
pub struct Seen {
    pub token: String,
    pub jwt: String,
    /// The provider token's `iat` (Unix seconds).
    pub iat: i64,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

impl Seen {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct Options {
    pub public_key: Vec<u8>,
    pub team_id: String,
    pub key_id: String,
    /// Holds each request until this many are in flight together.
    pub barrier: Option<Arc<Barrier>>,
    /// Keep every request (tests); a benchmark counts only.
    pub record: bool,
}

impl Options {
    pub fn new(public_key: Vec<u8>) -> Options {
        Options {
            public_key,
            team_id: TEAM_ID.into(),
            key_id: KEY_ID.into(),
            barrier: None,
            record: true,
        }
    }
}

struct Shared {
    key: DecodingKey,
    team_id: String,
    key_id: String,
    barrier: Option<Arc<Barrier>>,
    record: bool,
    answers: Mutex<HashMap<String, (u16, String)>>,
    received: Mutex<Vec<Seen>>,
    accepted: AtomicUsize,
    connections: AtomicUsize,
    // A provider token is the same string for up to an hour: its signature
    // is checked once (as a real server would cache it per connection).
    verified: Mutex<HashMap<String, i64>>,
}

pub struct ApnsServer {
    pub base_url: String,
    /// The server certificate (self-signed): the root a client must trust.
    pub ca_pem: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for ApnsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl ApnsServer {
    /// A server expecting tokens of [`TEAM_ID`]/[`KEY_ID`] signed by the key
    /// whose public half is `public_key`.
    pub async fn start(public_key: Vec<u8>) -> ApnsServer {
        ApnsServer::start_with(Options::new(public_key)).await
    }

    pub async fn start_with(options: Options) -> ApnsServer {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("a test certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let mut tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("a TLS configuration");
        // APNs speaks HTTP/2 only.
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let port = listener.local_addr().expect("bound").port();
        let shared = Arc::new(Shared {
            key: DecodingKey::from_ec_der(&options.public_key),
            team_id: options.team_id,
            key_id: options.key_id,
            barrier: options.barrier,
            record: options.record,
            answers: Mutex::default(),
            received: Mutex::default(),
            accepted: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            verified: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        ApnsServer {
            base_url: format!("https://127.0.0.1:{port}"),
            ca_pem: cert.cert.pem(),
            shared,
            accept,
        }
    }

    /// Answers pushes to `token` with `status` and `body` from now on
    /// (e.g. `410, {"reason":"Unregistered","timestamp":...}`).
    pub fn answer(&self, token: &str, status: u16, body: &str) {
        self.shared
            .answers
            .lock()
            .unwrap()
            .insert(token.to_string(), (status, body.to_string()));
    }

    /// Back to accepting pushes to `token`.
    pub fn clear_answer(&self, token: &str) {
        self.shared.answers.lock().unwrap().remove(token);
    }

    /// Every push received so far (with `record` on).
    pub fn received(&self) -> Vec<Seen> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Pushes answered 200.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits until `n` pushes were received (polling, with a deadline).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "APNs received {} of {n} pushes within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, state: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, req).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(1000)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn reply(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response")
}

fn refuse(status: u16, reason: &str) -> Response<Full<Bytes>> {
    reply(status, &serde_json::json!({ "reason": reason }).to_string())
}

/// The provider token's `iat` when it is valid for this server.
fn verify(state: &Shared, jwt: &str) -> Option<i64> {
    if let Some(iat) = state.verified.lock().unwrap().get(jwt) {
        return Some(*iat);
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &state.key, &validation).ok()?;
    if data.header.kid.as_deref() != Some(state.key_id.as_str())
        || data.claims["iss"] != state.team_id.as_str()
    {
        return None;
    }
    let iat = data.claims["iat"].as_i64()?;
    state.verified.lock().unwrap().insert(jwt.to_string(), iat);
    Some(iat)
}

/// Apple's header checks: the reason of the first failure.
fn check_headers(parts: &http::request::Parts) -> Result<(), &'static str> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header("apns-topic").is_none_or(str::is_empty) {
        return Err("MissingTopic");
    }
    const TYPES: &[&str] = &[
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "location",
        "liveactivity",
        "pushtotalk",
    ];
    if header("apns-push-type").is_none_or(|t| !TYPES.contains(&t)) {
        return Err("InvalidPushType");
    }
    if header("apns-id").is_none_or(|id| uuid::Uuid::parse_str(id).is_err()) {
        return Err("BadMessageId");
    }
    if header("apns-priority").is_some_and(|p| !["10", "5", "1"].contains(&p)) {
        return Err("BadPriority");
    }
    if header("apns-collapse-id").is_some_and(|c| c.len() > 64) {
        return Err("BadCollapseId");
    }
    if header("apns-expiration").is_some_and(|e| e.parse::<i64>().is_err()) {
        return Err("BadExpirationDate");
    }
    Ok(())
}

async fn answer(state: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    if parts.version != http::Version::HTTP_2 {
        return refuse(400, "BadProtocol");
    }
    if parts.method != http::Method::POST {
        return refuse(405, "MethodNotAllowed");
    }
    let Some(token) = parts.uri.path().strip_prefix("/3/device/") else {
        return refuse(404, "BadPath");
    };
    let token = token.to_string();
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let Some(jwt) = auth.and_then(|a| a.strip_prefix("bearer ")) else {
        return refuse(403, "MissingProviderToken");
    };
    let Some(iat) = verify(state, jwt) else {
        return refuse(403, "InvalidProviderToken");
    };
    if let Err(reason) = check_headers(&parts) {
        return refuse(400, reason);
    }
    let Ok(bytes) = body.collect().await.map(|b| b.to_bytes()) else {
        return refuse(400, "PayloadEmpty");
    };
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return refuse(413, "PayloadTooLarge");
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return refuse(400, "PayloadEmpty");
    };
    if !body.get("aps").is_some_and(serde_json::Value::is_object) {
        return refuse(400, "PayloadEmpty");
    }
    let apns_id = parts.headers["apns-id"].clone();
    if state.record {
        state.received.lock().unwrap().push(Seen {
            token: token.clone(),
            jwt: jwt.to_string(),
            iat,
            headers: parts.headers,
            body,
        });
    }
    if let Some(b) = &state.barrier {
        b.wait().await;
    }
    let scripted = state.answers.lock().unwrap().get(&token).cloned();
    if let Some((status, body)) = scripted {
        return reply(status, &body);
    }
    state.accepted.fetch_add(1, Ordering::SeqCst);
    let mut ok = reply(200, "");
    ok.headers_mut().insert("apns-id", apns_id);
    ok
}
