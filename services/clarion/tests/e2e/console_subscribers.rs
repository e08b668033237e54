//! The console's subscriber pages over real HTTP (issue #29): the lookup,
//! and one subscriber's profile, contacts, notifications received,
//! preferences, devices and inbox, each read through the gateway function
//! its REST route calls; another tenant's subscriber is not found.

use crate::support;

use std::time::{Duration, Instant};

use clarion_proto::api;
use support::console::{ConsoleNode, Page};
use support::{
    apply_workflows, authed, ended, http_call, wait_until, Notifications, Subscribers, Tenants,
};

const HELLO: &str = "\
id: hello
trigger:
  event: user.joined
steps:
  - { id: inbox, type: send, channel: in_app, template: hello-inapp }
";

/// An APNs device token: the page must never show it.
const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn assert_has(p: &Page, needle: &str) {
    assert!(
        p.body.contains(needle),
        "{needle:?} missing in:\n{}",
        p.body
    );
}

async fn setup(node: &ConsoleNode) -> String {
    let key = &node.key_a;
    Tenants::new(node.ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: "hello-inapp".into(),
                channel: "in_app".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Welcome {{ payload.name }}".into(),
                    body: "Glad to have you.".into(),
                }],
            },
        ))
        .await
        .unwrap();
    apply_workflows(&node.ch, key, &[HELLO]).await;
    Subscribers::new(node.ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: "ana".into(),
                email: "ana@example.com".into(),
                phone: "+15145550123".into(),
                locale: "fr-CA".into(),
                timezone: "America/Toronto".into(),
                attributes_json: r#"{"plan":"gold"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let base = node.base();
    let (status, _, body) = http_call(
        "PATCH",
        &format!("{base}/v1/subscribers/ana/preferences"),
        key,
        r#"{"changes":[{"path":"channels.sms","value":"off"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http_call(
        "PUT",
        &format!("{base}/v1/apps/fieldapp"),
        key,
        r#"{"name":"Field","platforms":["ios"],"ios_bundle_id":"com.acme.field"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http_call(
        "POST",
        &format!("{base}/v1/subscribers/ana/devices"),
        key,
        &format!(r#"{{"app_id":"fieldapp","platform":"ios","token":"{TOKEN}"}}"#),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let id = Notifications::new(node.ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "hello".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "ana".into(),
                    ..Default::default()
                }],
                payload_json: r#"{"name":"Ana"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids[0]
        .clone();
    let n = wait_until(&node.ch, key, &id, Duration::from_secs(20), ended).await;
    assert!(ended(&n), "{n:?}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_page_and_tenant_isolation() {
    let node = ConsoleNode::start(|_| {}).await;
    let notification = setup(&node).await;
    Subscribers::new(node.ch.clone())
        .upsert(authed(
            &node.key_b,
            api::Subscriber {
                subscriber_id: "bob".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let mut a = node.signed_in(&node.key_a).await;

    // The lookup says why there is no list, and goes to the page.
    let p = a.get("/console/subscribers").await;
    assert_eq!(p.status, 200);
    assert_has(&p, "there is no list");
    let p = a.get("/console/subscribers?id=ana").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location(), Some("/console/subscribers/ana"));
    let p = a.get("/console/subscribers?id=a%20b").await;
    assert_eq!(p.status, 400);
    assert_has(&p, "<strong id=\"error-field\">id</strong>");

    // The page, once the inbox projector has written the item.
    let deadline = Instant::now() + Duration::from_secs(20);
    let p = loop {
        let p = a.get("/console/subscribers/ana").await;
        assert_eq!(p.status, 200, "{}", p.body);
        if p.body.contains("data-item=") || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Profile and contacts with their verification state.
    assert_has(&p, "<dd id=\"profile-locale\">fr-CA</dd>");
    assert_has(&p, "America&#x2f;Toronto");
    assert_has(&p, "<tr data-contact=\"email\">");
    assert_has(&p, "<td>ana@example.com</td>");
    assert_has(&p, "<td>+15145550123</td>");
    assert_has(&p, "data-state=\"trusted\"");
    assert_has(&p, "&quot;plan&quot;: &quot;gold&quot;");
    // The notification received, linked to its page.
    assert_has(&p, &format!("<tr data-notification=\"{notification}\">"));
    assert_has(
        &p,
        &format!("href=\"/console/notifications/{notification}\""),
    );
    // Preferences, devices (never the token), inbox with its counts.
    assert_has(&p, "sms: <strong>off</strong>");
    assert_has(&p, "<tr data-device=");
    assert_has(&p, "fieldapp");
    assert!(!p.body.contains(TOKEN), "the token is shown");
    assert_has(&p, "<th scope=\"row\">Welcome Ana</th>");
    assert_has(&p, "<span id=\"inbox-unread\">1</span>");
    assert_has(&p, "<span id=\"inbox-total\">1</span>");

    // Unknown, malformed, and another tenant's ids.
    let p = a.get("/console/subscribers/nobody").await;
    assert_eq!(p.status, 404);
    assert_has(&p, "not found");
    let p = a.get("/console/subscribers/bob").await;
    assert_eq!(p.status, 404, "B's subscriber from A: {}", p.body);
    let p = a.get("/console/subscribers/ana?cursor=forged").await;
    assert_eq!(p.status, 400);
    assert_has(&p, "<strong id=\"error-field\">cursor</strong>");
    let mut b = node.signed_in(&node.key_b).await;
    let p = b.get("/console/subscribers/ana").await;
    assert_eq!(p.status, 404, "A's subscriber from B: {}", p.body);
    assert!(!p.body.contains("ana@example.com"));
    let p = b.get("/console/subscribers/bob").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_has(&p, "id=\"no-notifications\"");
    assert_has(&p, "id=\"no-devices\"");
    assert_has(&p, "id=\"no-inbox\"");

    node.stop().await;
}
