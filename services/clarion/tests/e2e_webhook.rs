//! The webhook channel end to end: Clarion POSTs the rendered message to a
//! real HTTP server, signed with HMAC-SHA256; the receiver verifies the
//! signature with the same code a tenant would use.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clarion_dispatch::webhook::{verify, WebhookConfig, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
use clarion_proto::api;
use support::*;

const SECRET: &str = "whsec_test_0123456789abcdef";

/// One request as the receiver saw it: body, idempotency key, signature check.
type Hit = (serde_json::Value, String, Result<(), String>);

#[derive(Default, Clone)]
struct Received(Arc<Mutex<Vec<Hit>>>);

async fn receiver() -> (std::net::SocketAddr, Received) {
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let g = g.clone();
            async move {
                let sig = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let checked = verify(SECRET.as_bytes(), sig, &body, now, Duration::from_secs(300))
                    .map_err(|e| e.to_string());
                let status = if checked.is_ok() {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let key = headers
                    .get(IDEMPOTENCY_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                g.0.lock().unwrap().push((json, key, checked));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_signed_and_verifiable() {
    let (hook_addr, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.providers.webhook = Some(WebhookConfig {
        signing_secret: SECRET.into(),
        timeout_ms: 5_000,
    });
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "initech").await;
    let mut tenants = Tenants::new(ch.clone());
    tenants
        .put_template(authed(
            &key,
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
            &key,
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
    let ids = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: "job-assigned".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "fsm-system".into(),
                    webhook_url: format!("http://{hook_addr}/hook"),
                    ..Default::default()
                }],
                payload_json: r#"{"job":"J-981"}"#.into(),
                idempotency_key: "job-981-assigned".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids;

    let n = wait_status(&ch, &key, &ids[0], "delivered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "delivered", "{n:?}");
    let got = received.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let (json, idem, checked) = &got[0];
    assert_eq!(checked, &Ok(()), "signature verified by the receiver");
    assert_eq!(json["body"], "Job J-981 assigned to fsm-system");
    assert_eq!(json["tenant_id"], "initech");
    assert_eq!(json["notification_id"], ids[0].as_str());
    assert_eq!(idem, json["attempt_id"].as_str().unwrap());

    // A retried trigger with the same idempotency key is the same notification, not a second POST.
    let again = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: "job-assigned".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "fsm-system".into(),
                    webhook_url: format!("http://{hook_addr}/hook"),
                    ..Default::default()
                }],
                payload_json: r#"{"job":"J-981"}"#.into(),
                idempotency_key: "job-981-assigned".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids;
    assert_eq!(again, ids);
    // A later trigger for the same subscriber is on the same partition, behind
    // the retry: once it is delivered, the retry has been processed.
    let sentinel = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: "job-assigned".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "fsm-system".into(),
                    webhook_url: format!("http://{hook_addr}/hook"),
                    ..Default::default()
                }],
                payload_json: r#"{"job":"J-982"}"#.into(),
                idempotency_key: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids;
    let n = wait_status(
        &ch,
        &key,
        &sentinel[0],
        "delivered",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n.status, "delivered");
    let bodies: Vec<String> = received
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(j, _, _)| j["body"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        bodies,
        [
            "Job J-981 assigned to fsm-system",
            "Job J-982 assigned to fsm-system"
        ],
        "the retry did not POST again"
    );
    node.stop().await;
}
