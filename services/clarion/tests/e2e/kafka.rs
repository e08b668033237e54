//! The spine scenario on the Kafka backend: a real Kafka-protocol broker
//! (tansu, started by `scripts/kafka-up.sh`; address in CLARION_KAFKA_BROKERS,
//! default 127.0.0.1:9092), each role with its own log client and store handle
//! as separate processes would have. Fails (does not skip) when the broker is
//! missing, unless CLARION_SKIP_KAFKA=1 is set explicitly.

use crate::support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_sends_a_localized_email_over_kafka() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka end-to-end not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("e2e-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 3;
    cfg.providers.smtp = Some(clarion_dispatch::smtp::SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port,
        from: "Clarion <noreply@clarion.test>".into(),
        message_id_domain: "clarion.test".into(),
        starttls: false,
        pool_size: 2,
    });
    let node = start(cfg, true).await;
    email_scenario(&node, &smtp, "globex").await;
    node.stop().await;
}
