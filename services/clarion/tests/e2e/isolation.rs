//! A hanging webhook destination does not stall other tenants' sends on the
//! same partition: the dispatcher hands effects to tasks of their own, and
//! the hanging send times out into the retry path.

use crate::support;
use crate::webhook_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clarion_domain::flow::RetryPolicy;
use support::*;
use webhook_support::*;

/// How long the hanging destination holds a send before it times out.
const HANG_TIMEOUT_MS: u64 = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_hold_other_tenants_sends() {
    let hang = Receiver::start("").await;
    let good = Receiver::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    webhook_config(&mut cfg, true);
    cfg.providers.webhook.as_mut().unwrap().timeout_ms = HANG_TIMEOUT_MS;
    // One partition: both tenants' sends go through the same dispatcher runner.
    cfg.log.partitions = 1;
    let quick_retry = RetryPolicy {
        max_attempts: 2,
        base_ms: 100,
        max_ms: 100,
        ..RetryPolicy::default()
    };
    cfg.retry.tenants.insert(
        "hangco".into(),
        [("webhook".to_string(), quick_retry)].into(),
    );
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key_a = create_tenant(&ch, "hangco").await;
    let key_b = create_tenant(&ch, "fastco").await;
    for k in [&key_a, &key_b] {
        rotate_secret(&ch, k, None).await;
        webhook_workflow(&ch, k).await;
    }

    let stuck = trigger_hook(&ch, &key_a, "ops", &hang.url("/hang"), "J-A").await;
    let in_flight = hang
        .wait_for(Duration::from_secs(20), |h| !h.is_empty())
        .await;
    assert_eq!(in_flight.len(), 1, "A's send reached the hanging server");
    let hung_at = Instant::now();

    let mut b_ids = Vec::new();
    for i in 0..5 {
        b_ids.push(
            trigger_hook(
                &ch,
                &key_b,
                &format!("tech-{i}"),
                &good.url("/hook"),
                &format!("J-B{i}"),
            )
            .await,
        );
    }
    let got = good
        .wait_for(Duration::from_secs(20), |h| h.len() >= 5)
        .await;
    let waited = hung_at.elapsed();
    assert_eq!(got.len(), 5, "{got:?}");
    // A stall bound, not a latency assertion: B's sends take milliseconds;
    // had they queued behind A's hanging send they would have waited for
    // its 6 s timeout. 4 s leaves a slow CI machine plenty of room.
    assert!(
        waited < Duration::from_secs(4),
        "tenant B's webhooks waited {waited:?} behind tenant A's hanging one"
    );
    assert_eq!(
        hang.hits().len(),
        1,
        "A's first send was still hanging while B's arrived"
    );

    // A's send times out, is retried once (its policy), then dead-lettered.
    let n = wait_until(&ch, &key_a, &stuck, Duration::from_secs(40), ended).await;
    assert_eq!(n.status, "dead_lettered", "{n:?}");
    let reasons: Vec<String> = n
        .events
        .iter()
        .filter(|e| e.event_type == "clarion.notification.failed.v1")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.detail_json).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r == &format!("webhook timed out after {HANG_TIMEOUT_MS} ms")),
        "{reasons:?}"
    );
    assert_eq!(hang.hits().len(), 2, "the retry went out");

    // Every one of B's webhooks arrived once, and each is delivered.
    for id in &b_ids {
        let n = wait_status(&ch, &key_b, id, "delivered", Duration::from_secs(20)).await;
        assert_eq!(n.status, "delivered");
    }
    let b_hits = good.of("fastco");
    let attempts: HashSet<&str> = b_hits.iter().map(|h| h.idempotency_key.as_str()).collect();
    assert_eq!(b_hits.len(), 5, "nothing sent twice to B");
    assert_eq!(attempts.len(), 5);
    node.stop().await;
}
