//! The console's Compliance page (issue #32), over real HTTP and in real
//! headless Chromium: a compliance officer (an admin key) places a legal
//! hold on a subscriber, sees the erasure refused naming it, releases it
//! with a reason (the queued erasure runs), erases another subscriber after
//! typing the id again and reads the receipt; the retention policy and the recent exports are
//! listed. A read-only key neither sees the page in the menu nor opens it;
//! the other tenant sees none of it; bad input names the field.
//!
//! The browser part needs Debian's chromium and chromium-driver
//! (`scripts/test-deps.sh`).

use crate::support;

use clarion_proto::api;
use serde_json::{json, Value};
use support::browser::Browser;
use support::console::ConsoleNode;
use support::*;

/// Polls `GET /v1/subscribers/{id}` until its email is `want`.
async fn wait_email(node: &ConsoleNode, key: &str, id: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, s) = rest(
            node,
            "GET",
            &format!("/v1/subscribers/{id}"),
            key,
            Value::Null,
        )
        .await;
        if s["email"] == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "email never {want}: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

/// A subscriber `id` with an email, in the tenant of `key`.
async fn subscriber(node: &ConsoleNode, key: &str, id: &str, email: &str) {
    Subscribers::new(node.ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: id.into(),
                email: email.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

async fn rest(
    node: &ConsoleNode,
    method: &str,
    path: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, _, text) = http_call(method, &format!("{}{path}", node.base()), key, &body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tenants_and_bad_input_on_the_compliance_page() {
    let node = ConsoleNode::start(|_| {}).await;
    let (status, p) = rest(
        &node,
        "PUT",
        "/v1/retention-policy",
        &node.key_a,
        json!({"rules": [{"channel": "email", "country": "*", "redact_bodies_after_days": 30}]}),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    let mut a = node.signed_in(&node.key_a).await;
    let home = a.get("/console").await;
    assert!(
        home.body.contains(">Compliance</a>"),
        "admins see it in the menu: {} {}",
        home.status,
        home.body
    );
    let page = a.get("/console/compliance").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"retention-policy\""),
        "{}",
        page.body
    );
    let placed = a
        .post(
            "/console/compliance/holds",
            &[("subscriber_id", "ann"), ("reason", "case A-1")],
        )
        .await;
    assert_eq!(placed.status, 303, "{}", placed.body);
    let page = a.get("/console/compliance").await;
    assert!(page.body.contains("case A-1"), "{}", page.body);

    // Bad input names the field.
    let bad = a
        .post("/console/compliance/holds", &[("reason", " ")])
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("reason"), "{}", bad.body);
    a.get("/console/compliance/erase?subscriber_id=ann").await;
    let bad = a
        .post(
            "/console/compliance/erase",
            &[
                ("subscriber_id", "ann"),
                ("confirm", "bob"),
                ("reason", "gdpr"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("confirm"), "{}", bad.body);

    // The other tenant sees none of A's holds or policy.
    let mut b = node.signed_in(&node.key_b).await;
    let page = b.get("/console/compliance").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("case A-1"), "{}", page.body);
    assert!(page.body.contains("id=\"no-holds\""));
    assert!(page.body.contains("id=\"no-policy\""));

    // A read-only key: no menu entry, no page, no action.
    let read = Tenants::new(node.ch.clone())
        .create_api_key(authed(
            &node.key_a,
            api::CreateApiKeyRequest {
                name: "support".into(),
                scopes: vec!["read".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let mut r = node.signed_in(&read).await;
    let home = r.get("/console").await;
    assert_eq!(home.status, 200);
    assert!(!home.body.contains(">Compliance</a>"), "{}", home.body);
    assert_eq!(r.get("/console/compliance").await.status, 403);
    let denied = r
        .post("/console/compliance/holds", &[("reason", "sneaky")])
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliance_officer_holds_releases_and_erases_in_the_browser() {
    let node = ConsoleNode::start(|_| {}).await;
    subscriber(&node, &node.key_a, "ann", "ann.acme@example.com").await;
    subscriber(&node, &node.key_a, "bob", "bob.acme@example.com").await;
    subscriber(&node, &node.key_b, "ann", "ann.globex@example.com").await;
    let (status, x) = rest(
        &node,
        "POST",
        "/v1/exports",
        &node.key_a,
        json!({"from": "2020-01-01", "until": "2020-06-01", "purpose": "DSAR 77"}),
    )
    .await;
    assert_eq!(status, 201, "{x}");
    let export_id = x["export_id"].as_str().unwrap().to_string();

    let b = Browser::start(&node.base()).await;
    b.sign_in(&node.key_a).await;
    b.click("a[href=\"/console/compliance\"]").await;
    b.wait_path("/console/compliance").await;
    assert!(b.has("#no-holds").await);
    assert!(
        b.has(&format!("tr[data-export=\"{export_id}\"]")).await,
        "the export is listed"
    );
    b.screenshot("compliance").await;

    // A hold on ann.
    b.fill("#hold-subscriber", "ann").await;
    b.fill("#hold-reason", "case 2026-17").await;
    b.click("#place-hold").await;
    b.wait_path("/console/compliance?done=placed").await;
    let row = b.text("#holds tbody tr").await;
    assert!(
        row.contains("subscriber ann") && row.contains("case 2026-17"),
        "{row}"
    );
    let hold_id = b
        .find("#holds tbody tr")
        .await
        .attr("data-hold")
        .await
        .unwrap()
        .unwrap();

    // Erasing ann is refused, naming the hold.
    b.fill("#erase-subscriber", "ann").await;
    b.click("#erase-next").await;
    b.wait_path("/console/compliance/erase").await;
    b.fill("#erase-reason", "GDPR art. 17").await;
    b.fill("#erase-confirm", "ann").await;
    b.click("#erase-confirm-button").await;
    let refused = b.text("#error-message").await;
    assert!(refused.contains(&hold_id), "{refused}");
    b.screenshot("compliance-erasure-refused").await;

    // Released with a reason: the queued erasure of ann runs.
    b.open("/console/compliance").await;
    b.fill("#release-reason-1", "case closed").await;
    b.click(".release-form button").await;
    b.wait_path("/console/compliance?done=released").await;
    assert!(b.has("#no-holds").await);
    wait_email(&node, &node.key_a, "ann", "[erased]").await;

    // bob, under no hold, is erased after the confirmation; the receipt.
    b.fill("#erase-subscriber", "bob").await;
    b.click("#erase-next").await;
    assert_eq!(b.text("#erase-id").await, "bob");
    b.screenshot("compliance-erase-confirm").await;
    b.fill("#erase-reason", "GDPR art. 17").await;
    b.fill("#erase-confirm", "bob").await;
    b.click("#erase-confirm-button").await;
    assert_eq!(b.text("#receipt-subscriber").await, "bob");
    assert_eq!(b.text("#receipt-reason").await, "GDPR art. 17");
    assert_eq!(b.text("#receipt-generations").await, "1");
    b.screenshot("compliance-receipt").await;
    b.close().await;

    // acme's bob is erased; globex's ann is not.
    let (_, a) = rest(
        &node,
        "GET",
        "/v1/subscribers/bob",
        &node.key_a,
        Value::Null,
    )
    .await;
    assert_eq!(a["email"], "[erased]", "{a}");
    let (_, g) = rest(
        &node,
        "GET",
        "/v1/subscribers/ann",
        &node.key_b,
        Value::Null,
    )
    .await;
    assert_eq!(g["email"], "ann.globex@example.com", "{g}");
    node.stop().await;
}
