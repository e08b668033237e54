//! Issue #3's end-to-end scenario — email, wait 2 s for the open, else SMS —
//! on the embedded backend and on Kafka (tansu), once with the tracking pixel
//! fetched and once without. Real SMTP server, real HTTP Twilio-style API.

use crate::support;

use support::*;

/// The 2 s wait is real time: the scenarios run one at a time so that, on a
/// loaded 2-core machine, fetching the pixel is not starved past the window.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(kafka: bool, open_it: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    if kafka && std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka scenario not run");
        return;
    }
    let smtp = SmtpServer::start();
    let twilio = TwilioDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let tracking_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.tracking.base_url = format!("http://{tracking_addr}");
    cfg.providers.smtp = Some(clarion_dispatch::smtp::SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port,
        from: "Clarion <noreply@clarion.test>".into(),
        message_id_domain: "clarion.test".into(),
        starttls: false,
        pool_size: 2,
    });
    cfg.providers.twilio = Some(twilio.config());
    if kafka {
        let brokers =
            std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        cfg.log.url = crate::support::kafka_url(&brokers);
        cfg.log.topic_prefix = format!("wf-{}.", uuid::Uuid::new_v4().simple());
        cfg.log.partitions = 2;
    }
    let node = start(cfg, kafka).await;
    serve_tracking(&node, tracking_addr).await;
    wait_then_sms_scenario(&node, &smtp, &twilio, "globex", open_it).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_email_opened_in_time_sends_no_sms() {
    run(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_email_not_opened_sends_sms_after_2s() {
    run(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_email_opened_in_time_sends_no_sms() {
    run(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_email_not_opened_sends_sms_after_2s() {
    run(true, false).await;
}
