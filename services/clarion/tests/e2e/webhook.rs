//! The webhook channel end to end: Clarion POSTs the rendered message to a
//! real HTTP server, signed with HMAC-SHA256 under the tenant's own secret;
//! the receiver verifies the signature with the same code a tenant would use.

use crate::support;
use crate::webhook_support;

use std::time::Duration;

use support::*;
use webhook_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_signed_and_verifiable() {
    let hook = Receiver::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    webhook_config(&mut cfg, true);
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "initech").await;
    let secret = rotate_secret(&ch, &key, None).await.secret;
    webhook_workflow(&ch, &key).await;
    let url = hook.url("/hook");
    let trigger = |job: &str, idem: &str| {
        let (ch, key, url) = (ch.clone(), key.clone(), url.clone());
        let (job, idem) = (job.to_string(), idem.to_string());
        async move {
            Notifications::new(ch)
                .trigger(authed(
                    &key,
                    clarion_proto::api::TriggerRequest {
                        event: String::new(),
                        workflow_id: "job-assigned".into(),
                        recipients: vec![clarion_proto::api::Recipient {
                            subscriber_id: "fsm-system".into(),
                            webhook_url: url,
                            ..Default::default()
                        }],
                        payload_json: format!(r#"{{"job":"{job}"}}"#),
                        idempotency_key: idem,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .notification_ids
        }
    };
    let ids = trigger("J-981", "job-981-assigned").await;

    let n = wait_status(&ch, &key, &ids[0], "delivered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "delivered", "{n:?}");
    let got = hook.hits();
    assert_eq!(got.len(), 1, "{got:?}");
    let h = &got[0];
    assert!(
        h.verifies_with(&secret),
        "signature verified by the receiver"
    );
    assert!(
        !h.verifies_with(OPERATOR_SECRET),
        "tenant webhooks are not signed with the operator's secret"
    );
    assert_eq!(h.json["body"], "Job J-981 assigned to fsm-system");
    assert_eq!(h.json["tenant_id"], "initech");
    assert_eq!(h.json["notification_id"], ids[0].as_str());
    assert_eq!(h.idempotency_key, h.json["attempt_id"].as_str().unwrap());

    // A retried trigger with the same idempotency key is the same notification, not a second POST.
    let again = trigger("J-981", "job-981-assigned").await;
    assert_eq!(again, ids);
    // A later trigger for the same subscriber is on the same partition, behind
    // the retry: once it is delivered, the retry has been processed.
    let sentinel = trigger("J-982", "").await;
    let n = wait_status(
        &ch,
        &key,
        &sentinel[0],
        "delivered",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n.status, "delivered");
    let bodies: Vec<String> = hook
        .hits()
        .iter()
        .map(|h| h.json["body"].as_str().unwrap_or_default().to_string())
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

/// With one deployment-wide secret any tenant could forge another's
/// webhooks; each tenant's now verify with its secret only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_signs_with_its_own_secret_and_rotation_overlaps() {
    let hook = Receiver::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    webhook_config(&mut cfg, true);
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key_a = create_tenant(&ch, "acme").await;
    let key_b = create_tenant(&ch, "globex").await;
    for k in [&key_a, &key_b] {
        webhook_workflow(&ch, k).await;
    }

    // Before a secret exists, nothing unsigned goes out.
    let early = trigger_hook(&ch, &key_a, "ops", &hook.url("/hook"), "J-0").await;
    let n = wait_until(&ch, &key_a, &early, Duration::from_secs(20), ended).await;
    assert_eq!(n.status, "dead_lettered", "{n:?}");
    assert!(
        event_detail(&n, "clarion.notification.failed.v1")["reason"]
            .as_str()
            .unwrap()
            .contains("no webhook signing secret"),
        "{n:?}"
    );
    assert!(hook.hits().is_empty());

    let a1 = rotate_secret(&ch, &key_a, None).await;
    assert_eq!(
        a1.previous_valid_until_ms, 0,
        "no previous secret to overlap"
    );
    let b1 = rotate_secret(&ch, &key_b, None).await;
    assert_ne!(a1.secret, b1.secret);
    let ia = trigger_hook(&ch, &key_a, "ops", &hook.url("/hook"), "J-1").await;
    let ib = trigger_hook(&ch, &key_b, "ops", &hook.url("/hook"), "J-2").await;
    wait_status(&ch, &key_a, &ia, "delivered", Duration::from_secs(20)).await;
    wait_status(&ch, &key_b, &ib, "delivered", Duration::from_secs(20)).await;
    let (ha, hb) = (&hook.of("acme")[0], &hook.of("globex")[0]);
    assert!(ha.verifies_with(&a1.secret) && !ha.verifies_with(&b1.secret));
    assert!(hb.verifies_with(&b1.secret) && !hb.verifies_with(&a1.secret));

    // Rotation with an overlap: both secrets verify while it lasts.
    let a2 = rotate_secret(&ch, &key_a, Some(3600)).await;
    assert!(a2.previous_valid_until_ms > 0);
    // The dispatcher's cache of secrets lives a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ia2 = trigger_hook(&ch, &key_a, "ops", &hook.url("/hook"), "J-3").await;
    wait_status(&ch, &key_a, &ia2, "delivered", Duration::from_secs(20)).await;
    let h = hook.of("acme").pop().unwrap();
    assert_eq!(h.json["notification_id"], ia2.as_str());
    assert!(h.verifies_with(&a2.secret), "new secret verifies");
    assert!(
        h.verifies_with(&a1.secret),
        "old secret verifies during the overlap"
    );
    assert!(!h.verifies_with(&b1.secret));

    // Rotation without overlap: only the newest verifies.
    let a3 = rotate_secret(&ch, &key_a, Some(0)).await;
    assert_eq!(a3.previous_valid_until_ms, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ia3 = trigger_hook(&ch, &key_a, "ops", &hook.url("/hook"), "J-4").await;
    wait_status(&ch, &key_a, &ia3, "delivered", Duration::from_secs(20)).await;
    let h = hook.of("acme").pop().unwrap();
    assert_eq!(h.json["notification_id"], ia3.as_str());
    assert!(h.verifies_with(&a3.secret));
    assert!(!h.verifies_with(&a2.secret) && !h.verifies_with(&a1.secret));

    // Bad input names the field.
    let err = Tenants::new(ch.clone())
        .rotate_webhook_secret(authed(
            &key_a,
            clarion_proto::api::RotateWebhookSecretRequest {
                overlap_seconds: Some(40 * 86_400),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("overlap_seconds"), "{err:?}");
    // The tracking key (made on first use, as a gateway's tracking routes do).
    let tracking = clarion_gateway::tracking::secret(&*node.nodes[0].store, &node.nodes[0].keyring)
        .await
        .unwrap();
    assert_eq!(tracking.len(), 32);
    node.stop().await;

    // At rest: neither the secrets nor the tracking key are in the file.
    let file = std::fs::read(dir.path().join("clarion.db")).unwrap();
    let mut wal = dir.path().join("clarion.db").into_os_string();
    wal.push("-wal");
    let wal = std::fs::read(wal).unwrap_or_default();
    for secret in [&a1.secret, &a2.secret, &a3.secret, &b1.secret] {
        for bytes in [&file, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a webhook secret is stored in clear"
            );
        }
    }
    for bytes in [&file, &wal] {
        assert!(
            !bytes.windows(32).any(|w| w == tracking.as_slice()),
            "the tracking key is stored in clear"
        );
    }
}
