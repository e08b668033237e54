//! Shared by the webhook end-to-end tests: a real HTTP receiver (axum) that
//! records what Clarion POSTs, can redirect or hang, and gRPC helpers for a
//! webhook workflow and the tenant's signing secret.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use clarion_dispatch::webhook::{verify, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use clarion_proto::api;
use tonic::transport::Channel;

use crate::support::*;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub json: serde_json::Value,
    pub idempotency_key: String,
    pub signature: String,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    /// Whether the signature verifies with `secret` (now, 5 min tolerance).
    pub fn verifies_with(&self, secret: &str) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        verify(
            secret.as_bytes(),
            &self.signature,
            &self.body,
            now,
            Duration::from_secs(300),
        )
        .is_ok()
    }
}

/// A real HTTP server: `POST /hook` answers 200, `POST /redirect` answers
/// 302 to `redirect_to`, `POST /hang` never answers. Every request is
/// recorded (a hanging one when it arrives).
#[derive(Clone)]
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    pub async fn start(redirect_to: &str) -> Receiver {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let record = {
            let hits = hits.clone();
            move |path: &str, headers: &HeaderMap, body: Bytes| {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                hits.lock().unwrap().push(Hit {
                    path: path.to_string(),
                    json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    idempotency_key: h(IDEMPOTENCY_HEADER),
                    signature: h(SIGNATURE_HEADER),
                    body,
                    at: Instant::now(),
                });
            }
        };
        let (r1, r2, r3) = (record.clone(), record.clone(), record);
        let location = redirect_to.to_string();
        let app = axum::Router::new()
            .route(
                "/hook",
                post(move |headers: HeaderMap, body: Bytes| async move {
                    r1("/hook", &headers, body);
                    StatusCode::OK
                }),
            )
            .route(
                "/redirect",
                post(move |headers: HeaderMap, body: Bytes| async move {
                    r2("/redirect", &headers, body);
                    (StatusCode::FOUND, [(header::LOCATION, location)])
                }),
            )
            .route(
                "/hang",
                post(move |headers: HeaderMap, body: Bytes| async move {
                    r3("/hang", &headers, body);
                    std::future::pending::<()>().await;
                    StatusCode::OK
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Hits of one tenant.
    pub fn of(&self, tenant: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.json["tenant_id"] == tenant)
            .collect()
    }

    /// Waits until `pred` holds of the hits (or `within` passed); returns them.
    pub async fn wait_for(&self, within: Duration, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if pred(&hits) || Instant::now() >= deadline {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The operator's secret (signs dead-letter alerts) in these tests.
pub const OPERATOR_SECRET: &str = "whsec_operator_0123456789abcdef";

/// Webhook provider configured; loopback allow-listed (the receivers are
/// local) unless `guarded`, which keeps the production default (no allow-list).
pub fn webhook_config(cfg: &mut clarion::Config, allow_loopback: bool) {
    cfg.providers.webhook = Some(clarion_dispatch::webhook::WebhookConfig {
        signing_secret: OPERATOR_SECRET.into(),
        timeout_ms: 5_000,
        ..Default::default()
    });
    if allow_loopback {
        cfg.outbound.allow = vec!["127.0.0.1/32".into()];
    }
}

/// A webhook template and a one-step workflow `job-assigned` using it.
pub async fn webhook_workflow(ch: &Channel, key: &str) {
    let mut tenants = Tenants::new(ch.clone());
    tenants
        .put_template(authed(
            key,
            api::Template {
                template_id: "job-card".into(),
                channel: "webhook".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Job {{ payload.job }}".into(),
                    body: "Job {{ payload.job }} assigned to {{ subscriber.id }}".into(),
                }],
            },
        ))
        .await
        .unwrap();
    tenants
        .put_workflow(authed(
            key,
            api::Workflow {
                workflow_id: "job-assigned".into(),
                name: "Job assigned".into(),
                steps: vec![api::WorkflowStep {
                    channel: "webhook".into(),
                    template_id: "job-card".into(),
                    provider: "webhook".into(),
                }],
            },
        ))
        .await
        .unwrap();
}

/// Triggers `job-assigned` for one subscriber with a webhook URL.
pub async fn trigger_hook(
    ch: &Channel,
    key: &str,
    subscriber: &str,
    url: &str,
    job: &str,
) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: "job-assigned".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: subscriber.into(),
                    webhook_url: url.into(),
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"job":"{job}"}}"#),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids
        .remove(0)
}

/// Rotates the tenant's webhook secret; returns the new secret.
pub async fn rotate_secret(
    ch: &Channel,
    key: &str,
    overlap_seconds: Option<u32>,
) -> api::RotateWebhookSecretResponse {
    Tenants::new(ch.clone())
        .rotate_webhook_secret(authed(
            key,
            api::RotateWebhookSecretRequest { overlap_seconds },
        ))
        .await
        .expect("rotate webhook secret")
        .into_inner()
}
