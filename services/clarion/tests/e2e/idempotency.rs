//! Idempotency keys hold on both backends and across restarts: the key, its
//! request hash and the original answer live in the store, so a repeat after a
//! restart is still a replay and a conflicting repeat is still refused.

use crate::support;

use std::time::Duration;

use clarion_proto::api;
use support::*;
use tonic::Code;

async fn scenario(kafka: bool) {
    if kafka && std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka scenario not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    if kafka {
        let brokers =
            std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        cfg.log.url = crate::support::kafka_url(&brokers);
        cfg.log.topic_prefix = format!("idem-{}.", uuid::Uuid::new_v4().simple());
        cfg.log.partitions = 2;
    }
    let req = |payload: &str| api::TriggerRequest {
        workflow_id: "appointment".into(),
        event: String::new(),
        recipients: vec![api::Recipient {
            subscriber_id: "r1".into(),
            email: "r1@example.test".into(),
            ..Default::default()
        }],
        payload_json: payload.into(),
        idempotency_key: "invoice-77-paid".into(),
        ..Default::default()
    };
    let node = start(cfg.clone(), kafka).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    let first = Notifications::new(ch.clone())
        .trigger(authed(&key, req(r#"{"day":"lundi"}"#)))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replay);
    let id = first.notification_ids[0].clone();
    let n = wait_status(&ch, &key, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "delivered");
    node.stop().await;

    // After a restart on the same data (and the same log)
    let node = start(cfg, kafka).await;
    let ch = channel(node.grpc).await;
    let again = Notifications::new(ch.clone())
        .trigger(authed(&key, req(r#"{"day":"lundi"}"#)))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replay, "still a replay after the restart");
    assert_eq!(again.notification_ids, first.notification_ids);
    let e = Notifications::new(ch.clone())
        .trigger(authed(&key, req(r#"{"day":"mardi"}"#)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A later trigger for r1 is behind the replay on the same partition; once
    // it is delivered the replay has been processed, and ran nothing.
    let mut later = req(r#"{"day":"jeudi"}"#);
    later.idempotency_key = String::new();
    let later = Notifications::new(ch.clone())
        .trigger(authed(&key, later))
        .await
        .unwrap()
        .into_inner()
        .notification_ids[0]
        .clone();
    assert_eq!(
        wait_status(&ch, &key, &later, "delivered", Duration::from_secs(20))
            .await
            .status,
        "delivered"
    );
    let sunk = clarion_dispatch::dispatcher::sink_deliveries(node.store(), "acme", &id)
        .await
        .unwrap();
    assert_eq!(
        sunk.len(),
        1,
        "the replay after restart did not deliver again"
    );
    let n = Notifications::new(ch.clone())
        .get_notification(authed(
            &key,
            api::GetNotificationRequest {
                notification_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        n.events
            .iter()
            .filter(|e| e.event_type == "clarion.notification.ended.v1")
            .count(),
        1,
        "one run"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_survives_restart_embedded() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_survives_restart_kafka() {
    scenario(true).await;
}
