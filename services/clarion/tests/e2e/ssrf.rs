//! The SSRF guard end to end: webhook URLs that lead to internal addresses
//! are refused with the guard as in production (no allow-list), redirects are
//! never followed, and the operator's allow-list opens what it names.

use crate::support;
use crate::webhook_support;

use std::time::Duration;

use support::*;
use webhook_support::*;

/// Waits for the notification to end; returns its status and failure reason.
async fn outcome(ch: &tonic::transport::Channel, key: &str, id: &str) -> (String, String) {
    let n = wait_until(ch, key, id, Duration::from_secs(20), ended).await;
    let reason = event_detail(&n, "clarion.notification.failed.v1")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (n.status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_internal_addresses_are_refused() {
    // A real server on loopback: without the guard, Clarion would POST to it.
    let inside = Receiver::start("").await;
    let port = inside.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    webhook_config(&mut cfg, false);
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "mallory").await;
    rotate_secret(&ch, &key, None).await;
    webhook_workflow(&ch, &key).await;
    let cases = [
        (
            format!("http://127.0.0.1:{port}/hook"),
            "a loopback address",
        ),
        (format!("http://[::1]:{port}/hook"), "a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "a cloud metadata address",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            "a loopback address",
        ),
        // A name is checked on the addresses it resolves to.
        (
            format!("http://localhost:{port}/hook"),
            "a loopback address",
        ),
        (format!("http://10.0.0.1:{port}/hook"), "a private address"),
    ];
    let mut ids = Vec::new();
    for (i, (url, _)) in cases.iter().enumerate() {
        ids.push(trigger_hook(&ch, &key, &format!("s{i}"), url, "J-1").await);
    }
    for ((url, why), id) in cases.iter().zip(&ids) {
        let (status, reason) = outcome(&ch, &key, id).await;
        assert_eq!(status, "dead_lettered", "{url}: {reason}");
        assert!(
            reason.starts_with("webhook refused: destination") && reason.contains(why),
            "{url}: {reason}"
        );
        assert!(
            reason.contains("outbound.allow"),
            "says how to allow: {reason}"
        );
    }
    // The failure is final: one attempt each, no retries.
    let n = wait_until(&ch, &key, &ids[0], Duration::from_secs(5), ended).await;
    let failed = n
        .events
        .iter()
        .filter(|e| e.event_type == "clarion.notification.failed.v1")
        .count();
    assert_eq!(failed, 1, "refusals are not retried");
    assert!(
        inside.hits().is_empty(),
        "nothing reached the internal server"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_the_allow_list_opens_loopback() {
    let target = Receiver::start("").await;
    // Allow-listed itself, it redirects to another loopback server and to
    // the metadata address.
    let to_loopback = Receiver::start(&target.url("/hook")).await;
    let to_metadata = Receiver::start("http://169.254.169.254/latest/meta-data/").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    webhook_config(&mut cfg, true);
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "initech").await;
    rotate_secret(&ch, &key, None).await;
    webhook_workflow(&ch, &key).await;

    let r1 = trigger_hook(&ch, &key, "a", &to_loopback.url("/redirect"), "J-1").await;
    let r2 = trigger_hook(&ch, &key, "b", &to_metadata.url("/redirect"), "J-2").await;
    let ok = trigger_hook(&ch, &key, "c", &target.url("/hook"), "J-3").await;
    for id in [&r1, &r2] {
        let (status, reason) = outcome(&ch, &key, id).await;
        assert_eq!(status, "dead_lettered", "{reason}");
        assert_eq!(
            reason,
            "webhook answered 302 Found: redirects are not followed"
        );
    }
    let n = wait_status(&ch, &key, &ok, "delivered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "delivered", "the allow-listed address is reached");
    assert_eq!(to_loopback.hits().len(), 1);
    assert_eq!(to_metadata.hits().len(), 1);
    let reached: Vec<String> = target
        .hits()
        .iter()
        .map(|h| h.json["notification_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reached, [ok], "only the direct send reached the target");
    node.stop().await;
}
