//! The console in real headless Chromium (issue #29), as a person uses it:
//! signing in through the form; finding a dead-lettered notification,
//! retrying it with a note and seeing it delivered in its timeline;
//! applying an invalid workflow and seeing the error next to its line; a
//! tenant's user opening another tenant's notification by URL; the Live
//! page updating without a reload. Every page visited is saved as a
//! screenshot under `target/console-screenshots/` (CI artifacts).
//!
//! Needs Debian's chromium and chromium-driver (`scripts/test-deps.sh`).

use crate::support;
use crate::webhook_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion_proto::api;
use support::browser::{Browser, WAIT};
use support::console::{ConsoleNode, TENANT_A};
use support::*;

/// A webhook receiver that refuses (410, for good) until told to accept.
struct FlakyReceiver {
    url: String,
    accept: Arc<AtomicBool>,
}

impl FlakyReceiver {
    async fn start() -> FlakyReceiver {
        let accept = Arc::new(AtomicBool::new(false));
        let flag = accept.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let ok = flag.load(Ordering::SeqCst);
                async move {
                    if ok {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::GONE
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FlakyReceiver {
            url: format!("http://{addr}/hook"),
            accept,
        }
    }
}

const HOOK_FLOW: &str = r#"
id: job-hook
steps:
  - { id: hook, type: send, channel: webhook, template: job-card, provider: webhook }
"#;

/// A node with the webhook provider (loopback allowed: the receiver is local).
async fn webhook_node() -> ConsoleNode {
    ConsoleNode::start(|cfg| {
        cfg.providers.webhook = Some(clarion_dispatch::webhook::WebhookConfig {
            signing_secret: "whsec_operator_0123456789abcdef".into(),
            timeout_ms: 5_000,
            ..Default::default()
        });
        cfg.outbound.allow = vec!["127.0.0.1/32".into()];
        cfg.dlq.alert_threshold = 10;
    })
    .await
}

/// Tenant A's webhook workflow, and one notification to `url` once it is
/// dead-lettered.
async fn dead_lettered_hook(node: &ConsoleNode, url: &str) -> String {
    webhook_support::rotate_secret(&node.ch, &node.key_a, None).await;
    Tenants::new(node.ch.clone())
        .put_template(authed(
            &node.key_a,
            api::Template {
                template_id: "job-card".into(),
                channel: "webhook".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Job {{ payload.job }}".into(),
                    body: "Job {{ payload.job }} for {{ subscriber.id }}".into(),
                }],
            },
        ))
        .await
        .unwrap();
    apply_workflows(&node.ch, &node.key_a, &[HOOK_FLOW]).await;
    let id = Notifications::new(node.ch.clone())
        .trigger(authed(
            &node.key_a,
            api::TriggerRequest {
                workflow_id: "job-hook".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "dispatch-desk".into(),
                    webhook_url: url.into(),
                    ..Default::default()
                }],
                payload_json: r#"{"job":"J-42"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids[0]
        .clone();
    let n = wait_status(&node.ch, &node.key_a, &id, "dead_lettered", WAIT).await;
    assert_eq!(n.status, "dead_lettered", "{n:?}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_the_form() {
    let node = ConsoleNode::start(|_| {}).await;
    let b = Browser::start(&node.base()).await;

    // Any page sends an unsigned-in person to the form first.
    b.open("/console/dead-letters").await;
    b.wait_path("/console/sign-in").await;
    b.find("#credential").await;
    b.screenshot("sign-in").await;
    b.fill("#credential", "ck_acme_not-a-key").await;
    b.click("#sign-in").await;
    assert!(b.text("#sign-in-error").await.contains("invalid API key"));

    b.fill("#credential", &node.key_a).await;
    b.click("#sign-in").await;
    b.wait_path("/console/dead-letters").await;
    assert_eq!(b.text("#current-tenant").await, TENANT_A);
    b.open("/console").await;
    b.screenshot("home").await;
    b.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_retried_from_the_browser_and_seen_delivered() {
    let hook = FlakyReceiver::start().await;
    let node = webhook_node().await;
    let id = dead_lettered_hook(&node, &hook.url).await;
    let b = Browser::start(&node.base()).await;
    b.sign_in(&node.key_a).await;

    // In the dead letters, with the queue's size and threshold.
    b.open("/console/dead-letters").await;
    assert_eq!(b.text("#dlq-size").await, "1");
    assert_eq!(b.text("#dlq-threshold").await, "10");
    b.screenshot("dead-letters").await;
    b.click(&format!("tr[data-notification=\"{id}\"] a")).await;
    b.wait_path(&format!("/console/dead-letters/{id}")).await;
    assert!(b.text("#reason").await.contains("410"));
    b.screenshot("dead-letter").await;

    // The receiver is fixed; retry with a note.
    hook.accept.store(true, Ordering::SeqCst);
    // Later than the dead-lettering (the timeline is in time order).
    node.clock.advance(Duration::from_secs(1));
    b.fill("#note", "receiver back up").await;
    b.click("#retry").await;
    b.wait_path(&format!("/console/notifications/{id}?done=retried"))
        .await;

    // Its timeline: the retry, then the delivery (reload until it is there).
    let deadline = Instant::now() + WAIT;
    loop {
        b.find("#timeline").await;
        if b.has("#status.status-delivered").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: status {}",
            b.text("#status").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.open(&format!("/console/notifications/{id}")).await;
    }
    for event in [
        "clarion.notification.dlq_retried.v1",
        "clarion.notification.delivered.v1",
    ] {
        b.find(&format!("#timeline li[data-event=\"{event}\"]"))
            .await;
    }
    b.screenshot("notification-detail").await;

    // The search finds it by id, delivered now.
    b.open(&format!("/console/notifications?id={id}")).await;
    b.find(&format!("#results tr[data-notification=\"{id}\"]"))
        .await;
    b.screenshot("notifications-search").await;
    b.close().await;
    node.stop().await;
}

/// Line 5 names an unknown channel.
const INVALID_FLOW: &str = "id: bad-flow\nsteps:\n  - id: text\n    type: send\n    channel: fax\n    template: job-card\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_workflow_shows_its_error_next_to_the_line() {
    let node = ConsoleNode::start(|_| {}).await;
    let b = Browser::start(&node.base()).await;
    b.sign_in(&node.key_a).await;
    b.open("/console/workflows").await;
    b.find("main#main h1").await;
    assert!(!b.has("#error-message").await, "the workflows page");
    b.screenshot("workflows").await;

    b.open("/console/workflows/apply").await;
    b.fill("#yaml", INVALID_FLOW).await;
    b.click("#apply").await;
    let error = b.text(".line-error[data-line=\"5\"]").await;
    assert!(error.contains("channel"), "{error}");
    assert!(b.has("#line-5.bad").await);
    assert!(!b.has(".line-error[data-line=\"1\"]").await);
    // The text is there to fix.
    let kept = b.find("textarea#yaml").await.prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some(INVALID_FLOW));
    b.screenshot("workflow-apply-errors").await;
    b.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_notification_is_not_found_by_url() {
    let hook = FlakyReceiver::start().await;
    let node = webhook_node().await;
    let id = dead_lettered_hook(&node, &hook.url).await;
    let b = Browser::start(&node.base()).await;
    b.sign_in(&node.key_b).await;
    for path in [
        format!("/console/dead-letters/{id}"),
        format!("/console/notifications/{id}"),
    ] {
        b.open(&path).await;
        let message = b.text("#error-message").await;
        assert!(message.contains("not found"), "{path}: {message}");
        // Not the missing-page answer: the page exists, the id is not B's.
        assert!(!message.contains("no console page"), "{path}: {message}");
        let source = b.client.source().await.unwrap();
        assert!(!source.contains("dispatch-desk"), "no data of A: {source}");
    }
    b.screenshot("not-found").await;
    b.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_updates_without_a_reload() {
    let node = ConsoleNode::start(|_| {}).await;
    // A tenant of this test alone: the rates are the process's.
    let key = create_tenant(&node.ch, "live-co").await;
    appointment_workflow(&node.ch, &key, "visit", "sink").await;
    let b = Browser::start(&node.base()).await;
    b.sign_in(&key).await;
    b.open("/console/live").await;
    let live = b.find("#live").await;
    assert_eq!(
        live.attr("aria-live").await.unwrap().as_deref(),
        Some("polite")
    );
    assert_eq!(b.text("#triggers-per-s").await, "0.0");

    for i in 0..3 {
        trigger_one(
            &node.ch,
            &key,
            "visit",
            &format!("s{i}"),
            "s@example.test",
            r#"{"day":"Mon"}"#,
        )
        .await;
    }
    // The region refreshes itself: 3 triggers in 10 s, 0.3/s.
    let deadline = Instant::now() + WAIT;
    while b.text("#triggers-per-s").await != "0.3" {
        assert!(
            Instant::now() < deadline,
            "the live figures did not refresh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.text("#sends-per-s").await, "0.3");
    b.find("#channels tr[data-channel=\"email\"]").await;
    assert!(live.attr("data-refreshed-at").await.unwrap().is_some());
    assert_eq!(b.path().await, "/console/live", "no navigation");
    b.screenshot("live").await;
    b.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscribers_page_renders() {
    let node = ConsoleNode::start(|_| {}).await;
    let b = Browser::start(&node.base()).await;
    b.sign_in(&node.key_a).await;
    b.open("/console/subscribers").await;
    b.find("main#main h1").await;
    assert!(!b.has("#error-message").await, "the subscribers page");
    b.screenshot("subscribers").await;
    b.close().await;
    node.stop().await;
}
