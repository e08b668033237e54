//! A local Vonage (Nexmo) SMS API: `POST /sms/json`.
//!
//! Takes the parameters as JSON or as a form, as Vonage does. Answers HTTP
//! 200 whatever the outcome, the outcome being `messages[].status`: `"0"`
//! with a `message-id` for an accepted message, `"2"` for a missing
//! parameter, `"4"` for bad credentials, and during a scripted outage
//! ([`VonageServer::fail_with`]) either `"5"` (internal error, still HTTP
//! 200) or the scripted HTTP status when it is not 200.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::{json, Value};

use crate::script::{Hook, Script};

pub const API_KEY: &str = "a1b2c3d4";
pub const API_SECRET: &str = "vonage-test-secret";

/// One accepted SMS.
#[derive(Clone, Debug)]
pub struct Sms {
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub text: String,
    /// `client-ref`: Clarion's attempt id.
    pub client_ref: String,
}

#[derive(Default)]
struct Inner {
    accepted: Mutex<Vec<Sms>>,
    requests: AtomicUsize,
    script: Script,
}

pub struct VonageServer {
    /// `http://127.0.0.1:PORT`: the `base-url` of the provider's config.
    pub base_url: String,
    inner: Arc<Inner>,
    serve: tokio::task::JoinHandle<()>,
}

impl Drop for VonageServer {
    fn drop(&mut self) {
        self.serve.abort();
    }
}

impl VonageServer {
    pub async fn start() -> VonageServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let base_url = format!("http://{}", l.local_addr().expect("bound"));
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .route("/sms/json", axum::routing::post(send))
            .with_state(inner.clone());
        let serve = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        VonageServer {
            base_url,
            inner,
            serve,
        }
    }

    /// An outage from now on: 200 answers status "5" (Vonage's internal
    /// error); any other status is the HTTP answer itself.
    pub fn fail_with(&self, status: u16) {
        self.inner.script.fail_with(status);
    }

    pub fn recover(&self) {
        self.inner.script.recover();
    }

    /// Runs `hook` on every request before answering.
    pub fn on_request(&self, hook: Hook) {
        self.inner.script.on_request(hook);
    }

    pub fn accepted(&self) -> Vec<Sms> {
        self.inner.accepted.lock().unwrap().clone()
    }

    /// Every request received, answered or failed.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` messages were accepted (polling, with a deadline).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Sms> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "Vonage accepted {} of {n} messages within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Vonage's answer for one message that was not sent.
fn rejected(status: &str, error_text: &str) -> Response {
    Json(json!({
        "message-count": "1",
        "messages": [{"status": status, "error-text": error_text}]
    }))
    .into_response()
}

/// The parameters, from a JSON body or a form.
async fn params(req: Request) -> Option<HashMap<String, String>> {
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let Json(v) = Json::<Value>::from_request(req, &()).await.ok()?;
        let obj = v.as_object()?;
        Some(
            obj.iter()
                .map(|(k, v)| {
                    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), s)
                })
                .collect(),
        )
    } else {
        let Form(f) = Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .ok()?;
        Some(f)
    }
}

async fn send(State(s): State<Arc<Inner>>, req: Request) -> Response {
    let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    s.script.run_hook();
    let Some(p) = params(req).await else {
        return rejected("2", "Missing api_key");
    };
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    if get("api_key").is_empty() || get("api_secret").is_empty() {
        return rejected("2", "Missing api_key");
    }
    if get("api_key") != API_KEY || get("api_secret") != API_SECRET {
        return rejected("4", "Bad Credentials");
    }
    match s.script.failing() {
        Some(200) => return rejected("5", "Internal Error"),
        Some(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, "upstream failure (scripted outage)").into_response();
        }
        None => {}
    }
    for field in ["from", "to", "text"] {
        if get(field).is_empty() {
            return rejected("2", &format!("Missing {field}"));
        }
    }
    if !get("to").chars().all(|c| c.is_ascii_digit()) {
        return rejected("3", "Invalid to address");
    }
    let message_id = format!("0A{n:014X}");
    let sms = Sms {
        message_id: message_id.clone(),
        from: get("from"),
        to: get("to"),
        text: get("text"),
        client_ref: get("client-ref"),
    };
    s.accepted.lock().unwrap().push(sms.clone());
    Json(json!({
        "message-count": "1",
        "messages": [{
            "to": sms.to,
            "message-id": message_id,
            "status": "0",
            "remaining-balance": "3.14159265",
            "message-price": "0.03330000",
            "network": "12345",
            "client-ref": sms.client_ref,
        }]
    }))
    .into_response()
}
