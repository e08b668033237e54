//! Digests end to end (issue #33), on the embedded backend and on Kafka
//! (tansu), for email (a real SMTP server) and SMS (a Twilio-style HTTP
//! API): N triggers sent concurrently by several tasks arrive as one
//! message with N items, for two tenants; an email digest closes at
//! `max_items`, an SMS digest by a flush (gRPC for one tenant, REST for the
//! other). A digest step without a key is refused naming the field.

use crate::support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clarion_proto::api;
use support::*;
use tonic::transport::Channel;

/// Triggers per digest, sent by `TASKS` tasks at once.
const N: usize = 24;
const TASKS: usize = 4;

type Digests = api::digest_service_client::DigestServiceClient<Channel>;

const MAIL_DIGEST: &str = r#"
id: digest-mail
trigger: { event: project.updated }
steps:
  - { id: collect, type: digest, key: payload.project, window: 1h, max_items: 24 }
  - { id: mail, type: send, channel: email, template: digest-mail, provider: smtp }
"#;

const SMS_DIGEST: &str = r#"
id: digest-sms
trigger: { event: project.flagged }
steps:
  - { id: collect, type: digest, key: payload.project, window: 1h }
  - { id: text, type: send, channel: sms, template: digest-sms, provider: twilio }
"#;

const BODY: &str =
    "{{ digest.count }} updates on {{ digest.key }}:{% for i in digest.items %} #{{ i.n }}{% endfor %}";

/// A tenant with the two digest workflows and a subscriber; returns its key.
async fn tenant_with_digests(ch: &Channel, tenant: &str, sub: &str, phone: &str) -> String {
    let key = create_tenant(ch, tenant).await;
    for (id, channel) in [("digest-mail", "email"), ("digest-sms", "sms")] {
        Tenants::new(ch.clone())
            .put_template(authed(
                &key,
                api::Template {
                    template_id: id.into(),
                    channel: channel.into(),
                    variants: vec![api::TemplateVariant {
                        locale: "default".into(),
                        subject: format!("{tenant} digest"),
                        body: BODY.into(),
                    }],
                },
            ))
            .await
            .expect("put template");
    }
    apply_workflows(ch, &key, &[MAIL_DIGEST, SMS_DIGEST]).await;
    Subscribers::new(ch.clone())
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: sub.into(),
                email: format!("{sub}@{tenant}.test"),
                phone: phone.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("upsert subscriber");
    key
}

/// `N` triggers of `workflow` for `sub`, by `TASKS` concurrent tasks; the
/// accepted notification ids.
async fn concurrent_triggers(ch: &Channel, key: &str, workflow: &str, sub: &str) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (ch, key, workflow, sub) = (
            ch.clone(),
            key.to_string(),
            workflow.to_string(),
            sub.to_string(),
        );
        tasks.spawn(async move {
            let mut client = Notifications::new(ch);
            let mut ids = Vec::new();
            for i in (t..N).step_by(TASKS) {
                let r = client
                    .trigger(authed(
                        &key,
                        api::TriggerRequest {
                            workflow_id: workflow.clone(),
                            recipients: vec![api::Recipient {
                                subscriber_id: sub.clone(),
                                ..Default::default()
                            }],
                            payload_json: format!(r#"{{"project":"apollo","n":{i}}}"#),
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("trigger");
                ids.extend(r.into_inner().notification_ids);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.unwrap());
    }
    assert_eq!(ids.len(), N);
    ids
}

/// Waits until every run ended; returns the reasons.
async fn ends(ch: &Channel, key: &str, ids: &[String]) -> Vec<String> {
    let mut reasons = Vec::new();
    for id in ids {
        let n = wait_until(ch, key, id, Duration::from_secs(60), ended).await;
        assert!(ended(&n), "{id} never ended: {n:?}");
        let detail = event_detail(&n, "clarion.notification.ended.v1");
        reasons.push(detail["reason"].as_str().unwrap_or_default().to_string());
    }
    reasons
}

/// How many of the runs ended (one not projected yet has not).
async fn count_ended(ch: &Channel, key: &str, ids: &[String]) -> usize {
    let mut client = Notifications::new(ch.clone());
    let mut n = 0;
    for id in ids {
        let req = api::GetNotificationRequest {
            notification_id: id.clone(),
        };
        if let Ok(r) = client.get_notification(authed(key, req)).await {
            n += usize::from(ended(r.get_ref()));
        }
    }
    n
}

/// The body holds every item 0..N once, and the count.
fn assert_every_item(body: &str) {
    assert!(
        body.starts_with(&format!("{N} updates on apollo:")),
        "{body}"
    );
    let got: Vec<usize> = body
        .split(" #")
        .skip(1)
        .map(|n| n.trim().parse().expect("an item number"))
        .collect();
    let distinct: HashSet<usize> = got.iter().copied().collect();
    assert_eq!(got.len(), N, "{body}");
    assert_eq!(distinct, (0..N).collect(), "{body}");
}

async fn run(kafka: bool) {
    if kafka && std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka scenario not run");
        return;
    }
    let smtp = SmtpServer::start();
    let twilio = TwilioDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
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
        cfg.log.topic_prefix = format!("dg-{}.", uuid::Uuid::new_v4().simple());
        cfg.log.partitions = 2;
    }
    let node = start(cfg, kafka).await;
    // The gateway's HTTP routes (REST included), as in the other e2e tests.
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    serve_tracking(&node, http).await;
    let ch = channel(node.grpc).await;
    let tenants = [("acme", "+15145550101"), ("globex", "+15145550102")];
    let mut keys = Vec::new();
    for (tenant, phone) in tenants {
        keys.push(tenant_with_digests(&ch, tenant, "sub-7", phone).await);
    }
    // Email: N concurrent triggers per tenant; the N-th item closes it.
    for (key, (tenant, _)) in keys.iter().zip(tenants) {
        let ids = concurrent_triggers(&ch, key, "digest-mail", "sub-7").await;
        let reasons = ends(&ch, key, &ids).await;
        let digested = reasons
            .iter()
            .filter(|r| r.starts_with("digested into "))
            .count();
        assert_eq!(digested, N - 1, "one leads, the others join: {reasons:?}");
        let to = format!("sub-7@{tenant}.test");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mails = loop {
            let mails: Vec<Mail> = smtp
                .messages()
                .into_iter()
                .filter(|m| m.to.contains(&to))
                .collect();
            if !mails.is_empty() || Instant::now() > deadline {
                break mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(mails.len(), 1, "one email for {tenant}: {mails:?}");
        assert_eq!(mails[0].subject, format!("{tenant} digest"));
        assert_every_item(&mails[0].body);
    }
    // SMS: N concurrent triggers per tenant, then a flush (gRPC, REST).
    for (i, (key, (tenant, phone))) in keys.iter().zip(tenants).enumerate() {
        let ids = concurrent_triggers(&ch, key, "digest-sms", "sub-7").await;
        // Every trigger is in (N - 1 runs ended as joined) before the flush.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let joined = count_ended(&ch, key, &ids).await;
            if joined == N - 1 {
                break;
            }
            assert!(Instant::now() < deadline, "only {joined} joined");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            twilio.sent().iter().all(|m| m.to != phone),
            "nothing sent before the flush"
        );
        if i == 0 {
            Digests::new(ch.clone())
                .flush(authed(
                    key,
                    api::FlushDigestRequest {
                        subscriber_id: "sub-7".into(),
                        workflow_id: "digest-sms".into(),
                        digest_key: "apollo".into(),
                    },
                ))
                .await
                .expect("flush");
        } else {
            let url = format!("http://{http}/v1/subscribers/sub-7/digests/flush");
            let (status, _, body) =
                http_call("POST", &url, key, r#"{"workflow_id":"digest-sms"}"#).await;
            assert_eq!(status, 204, "{body}");
        }
        ends(&ch, key, &ids).await;
        let sms: Vec<SmsMessage> = twilio
            .sent()
            .into_iter()
            .filter(|m| m.to == phone)
            .collect();
        assert_eq!(sms.len(), 1, "one SMS for {tenant}: {sms:?}");
        assert_every_item(&sms[0].body);
    }
    // No second digest came meanwhile.
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(twilio.sent().len(), 2);
    bad_input(&ch, &keys[0], http).await;
    node.stop().await;
}

/// A digest without a key, or with two closings, is refused naming the field.
async fn bad_input(ch: &Channel, key: &str, http: std::net::SocketAddr) {
    let no_key = "id: bad\ntrigger: { event: e }\nsteps:\n  - { id: c, type: digest, key: '', window: 1h }\n  - { id: m, type: send, channel: email, template: digest-mail }\n";
    let err = api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            key,
            api::ApplyWorkflowRequest {
                definition: no_key.into(),
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&err);
    let fields: Vec<(String, String)> = details
        .bad_request()
        .expect("a BadRequest")
        .field_violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    assert!(
        fields
            .iter()
            .any(|(f, d)| f.ends_with("steps[0].key") && d.contains("needs a key")),
        "{fields:?}"
    );
    // Flush: the workflow id is required (REST names the field).
    let url = format!("http://{http}/v1/subscribers/sub-7/digests/flush");
    let (status, head, body) = http_call("POST", &url, key, r#"{"workflow_id":""}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(
        json_of(&body)["errors"][0]["field"],
        "workflow_id",
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_triggers_arrive_as_one_digest_per_channel_and_tenant() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_concurrent_triggers_arrive_as_one_digest_per_channel_and_tenant() {
    run(true).await;
}
