//! A local SendGrid v3 `POST /v3/mail/send`.
//!
//! Checks what SendGrid checks first: the bearer API key (401 with
//! SendGrid's error body otherwise) and the body's required parts
//! (`personalizations[].to[].email`, `from.email`, `subject`,
//! `content[].type`/`value`: 400 naming the field). Accepted mail is
//! recorded and answered `202 Accepted`, no body, with an `X-Message-Id`.
//! Outages are scripted: every request answered with a status from now on
//! ([`SendgridServer::fail_with`]) until [`SendgridServer::recover`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::script::{Hook, Script};

/// The API key the server accepts.
pub const API_KEY: &str = "SG.test-key.local";

/// One accepted mail.
#[derive(Clone, Debug)]
pub struct Mail {
    pub message_id: String,
    pub to: String,
    pub from: String,
    pub subject: String,
    pub text: String,
    /// `custom_args` as sent.
    pub custom_args: Value,
    /// The `Idempotency-Key` header (not SendGrid's; what Clarion adds).
    pub idempotency_key: String,
    /// The bearer API key it came with (which account sent it).
    pub api_key: String,
}

#[derive(Default)]
struct Inner {
    accepted: Mutex<Vec<Mail>>,
    requests: AtomicUsize,
    script: Script,
    /// Keys accepted besides [`API_KEY`] (other accounts).
    keys: Mutex<Vec<String>>,
}

pub struct SendgridServer {
    /// `http://127.0.0.1:PORT`: the `base-url` of the provider's config.
    pub base_url: String,
    inner: Arc<Inner>,
    serve: tokio::task::JoinHandle<()>,
}

impl Drop for SendgridServer {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

impl SendgridServer {
    pub async fn start() -> SendgridServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let base_url = format!("http://{}", l.local_addr().expect("bound"));
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .route("/v3/mail/send", axum::routing::post(send))
            .with_state(inner.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        SendgridServer {
            base_url,
            inner,
            serve,
        }
    }

    /// Answers every request with `status` (and SendGrid's error body)
    /// from now on: an outage.
    pub fn fail_with(&self, status: u16) {
        self.inner.script.fail_with(status);
    }

    /// Ends the outage.
    pub fn recover(&self) {
        self.inner.script.recover();
    }

    /// Runs `hook` on every request before answering (e.g. to move a
    /// manual clock: a slow provider without sleeping).
    pub fn on_request(&self, hook: Hook) {
        self.inner.script.on_request(hook);
    }

    /// Accepts `key` too, as another account's (a tenant's own key).
    pub fn accept_key(&self, key: &str) {
        self.inner.keys.lock().unwrap().push(key.to_string());
    }

    pub fn accepted(&self) -> Vec<Mail> {
        self.inner.accepted.lock().unwrap().clone()
    }

    /// Every request received, answered or failed.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` mails were accepted (polling, with a deadline).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "SendGrid accepted {} of {n} mails within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// SendGrid's error body.
fn errors(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = json!({"errors": [{"message": message, "field": field, "help": null}]});
    (status, Json(body)).into_response()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The body's first missing required part, as SendGrid names it.
fn missing(body: &Value) -> Option<(&'static str, &'static str)> {
    let to = &body["personalizations"][0]["to"][0]["email"];
    if text(to).is_empty() {
        return Some((
            "personalizations.0.to.0.email",
            "The to email does not contain a valid address.",
        ));
    }
    if text(&body["from"]["email"]).is_empty() {
        return Some((
            "from.email",
            "The from email does not contain a valid address.",
        ));
    }
    if text(&body["subject"]).is_empty() {
        return Some(("subject", "The subject is required."));
    }
    let content = &body["content"][0];
    if text(&content["type"]).is_empty() || text(&content["value"]).is_empty() {
        return Some((
            "content.0.value",
            "The content value must be a string at least one character in length.",
        ));
    }
    None
}

async fn send(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Json<Value>) -> Response {
    let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    s.script.run_hook();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = bearer == Some(API_KEY)
        || bearer.is_some_and(|b| s.keys.lock().unwrap().iter().any(|k| k == b));
    if !known {
        return errors(
            StatusCode::UNAUTHORIZED,
            "The provided authorization grant is invalid, expired, or revoked",
            None,
        );
    }
    if let Some(status) = s.script.failing() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return errors(status, "Internal server error (scripted outage)", None);
    }
    if let Some((field, message)) = missing(&body.0) {
        return errors(StatusCode::BAD_REQUEST, message, Some(field));
    }
    let b = &body.0;
    let message_id = format!("sg-{n:08}.filter0001p1");
    s.accepted.lock().unwrap().push(Mail {
        message_id: message_id.clone(),
        to: text(&b["personalizations"][0]["to"][0]["email"]).to_string(),
        from: text(&b["from"]["email"]).to_string(),
        subject: text(&b["subject"]).to_string(),
        text: text(&b["content"][0]["value"]).to_string(),
        custom_args: b["custom_args"].clone(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        api_key: bearer.unwrap_or_default().to_string(),
    });
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert("x-message-id", message_id.parse().expect("ascii"));
    resp
}
