//! The preference center end to end, as a tenant's users meet it: real SMTP
//! (aiosmtpd), a local server speaking Twilio's API, the REST door, on the
//! embedded log and on Kafka (tansu). A subscriber opts out of marketing by
//! SMS: the marketing SMS is suppressed with its reason and the email still
//! goes; a required topic cannot be opted out of; a changed phone receives
//! only its verification code until the code is confirmed. A second tenant
//! with a subscriber of the same id is untouched throughout.

use crate::support;

use std::time::Duration;

use clarion_proto::api;
use serde_json::Value;
use support::*;

const PHONE: &str = "+15145550123";
const NEW_PHONE: &str = "+15145550999";

const PROMO: &str = r#"
id: promo
topic: marketing
steps:
  - { id: sms, type: send, channel: sms, template: promo-sms, provider: twilio }
  - { id: email, type: send, channel: email, template: promo-email, provider: smtp }
"#;

const VISIT: &str = r#"
id: visit
topic: appointments
steps:
  - { id: sms, type: send, channel: sms, template: visit-sms, provider: twilio }
"#;

fn config(dir: &std::path::Path, smtp: &SmtpServer, twilio: &TwilioDouble) -> clarion::Config {
    let mut cfg = test_config(dir);
    cfg.providers.smtp = Some(clarion_dispatch::smtp::SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port,
        from: "Clarion <noreply@clarion.test>".into(),
        message_id_domain: "clarion.test".into(),
        starttls: false,
        pool_size: 2,
    });
    cfg.providers.twilio = Some(twilio.config());
    // The verification codes go through the channels' default providers.
    cfg.providers.defaults = [("sms", "twilio"), ("email", "smtp")]
        .into_iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect();
    cfg
}

async fn rest(method: &str, url: &str, key: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http_call(method, url, key, body).await;
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// A tenant with the two topics, templates, workflows and subscriber `ana`.
async fn tenant(ch: &tonic::transport::Channel, base: &str, tenant: &str) -> String {
    let key = create_tenant(ch, tenant).await;
    for (id, body) in [
        (
            "marketing",
            r#"{"name":"Offers","channels":["sms","email"],"default_opt_in":true,"marketing":true}"#,
        ),
        (
            "appointments",
            r#"{"name":"Appointments","channels":["sms","email"],"default_opt_in":true,"required":true}"#,
        ),
    ] {
        let (status, v) = rest("PUT", &format!("{base}/v1/topics/{id}"), &key, body).await;
        assert_eq!(status, 200, "{v}");
    }
    let mut tenants = Tenants::new(ch.clone());
    for (id, channel, subject, body) in [
        ("promo-sms", "sms", "", "Spring offer: 20 % off."),
        (
            "promo-email",
            "email",
            "Spring offer",
            "Hello {{ subscriber.id }}, 20 % off.",
        ),
        (
            "visit-sms",
            "sms",
            "",
            "Technician visit on {{ payload.day }}.",
        ),
    ] {
        tenants
            .put_template(authed(
                &key,
                api::Template {
                    template_id: id.into(),
                    channel: channel.into(),
                    variants: vec![api::TemplateVariant {
                        locale: "default".into(),
                        subject: subject.into(),
                        body: body.into(),
                    }],
                },
            ))
            .await
            .unwrap();
    }
    apply_workflows(ch, &key, &[PROMO, VISIT]).await;
    let (status, v) = rest(
        "PUT",
        &format!("{base}/v1/subscribers/ana"),
        &key,
        &format!(r#"{{"email":"ana@{tenant}.test","phone":"{PHONE}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    key
}

/// Triggers `workflow` for ana over REST and waits for its end.
async fn send(
    ch: &tonic::transport::Channel,
    base: &str,
    key: &str,
    workflow: &str,
) -> api::Notification {
    let body = format!(
        r#"{{"workflow_id":"{workflow}","recipients":[{{"subscriber_id":"ana"}}],"payload":{{"day":"Friday"}}}}"#
    );
    let (status, v) = rest("POST", &format!("{base}/v1/notifications"), key, &body).await;
    assert_eq!(status, 202, "{v}");
    let id = v["notifications"][0]["notification_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until(ch, key, &id, Duration::from_secs(30), ended).await
}

fn outcome(n: &api::Notification) -> String {
    event_detail(n, "clarion.notification.ended.v1")["outcome"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn notes(n: &api::Notification) -> Vec<String> {
    n.events
        .iter()
        .filter(|e| e.event_type == "clarion.notification.noted.v1")
        .map(|e| {
            serde_json::from_str::<Value>(&e.detail_json).unwrap()["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn sms_to(twilio: &TwilioDouble, to: &str) -> Vec<String> {
    twilio
        .sent()
        .into_iter()
        .filter(|m| m.to == to)
        .map(|m| m.body)
        .collect()
}

async fn wait_sms(twilio: &TwilioDouble, to: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = sms_to(twilio, to);
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario(cfg: clarion::Config, separate: bool, smtp: &SmtpServer, twilio: &TwilioDouble) {
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let base = format!("http://{http}");
    let node = start(cfg, separate).await;
    serve_tracking(&node, http).await;
    let ch = channel(node.grpc).await;
    let acme = tenant(&ch, &base, "acme").await;
    let globex = tenant(&ch, &base, "globex").await;
    let prefs = |key: &str| {
        (
            format!("{base}/v1/subscribers/ana/preferences"),
            key.to_string(),
        )
    };

    // Ana of acme opts out of marketing by SMS.
    let (url, key) = prefs(&acme);
    let (status, v) = rest(
        "PATCH",
        &url,
        &key,
        r#"{"changes":[{"path":"topics.marketing.sms","value":"off"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["topics"][0]["channels"]["sms"], "off", "{v}");

    // The marketing SMS is suppressed with its reason; the email goes.
    let n = send(&ch, &base, &acme, "promo").await;
    assert_eq!(outcome(&n), "completed", "{n:?}");
    assert_eq!(
        notes(&n),
        ["step sms: suppressed: preferences (topic_channel): subscriber turned sms off for topic marketing (setting topics.marketing.sms)"]
    );
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, "ana@acme.test");
    // Globex's ana, same id, chose nothing: both go.
    let g = send(&ch, &base, &globex, "promo").await;
    assert_eq!((outcome(&g).as_str(), notes(&g)), ("completed", vec![]));
    assert_eq!(smtp.wait_for(2, Duration::from_secs(30)).await.len(), 2);
    assert_eq!(
        wait_sms(twilio, PHONE, 1).await,
        ["Spring offer: 20 % off."]
    );

    // The same question, asked before sending, gets the same answer.
    let (status, v) = rest(
        "POST",
        &format!("{base}/v1/preferences/evaluate"),
        &acme,
        r#"{"subscriber_id":"ana","workflow_id":"promo","channel":"sms"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["allowed"].as_bool(), v["rule"].as_str()),
        (Some(false), Some("topic_channel")),
        "{v}"
    );

    // A required topic cannot be opted out of: a clear error naming the change.
    let (status, v) = rest(
        "PATCH",
        &url,
        &key,
        r#"{"changes":[{"path":"topics.appointments","value":"off"}]}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["field"], "changes[0].value", "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("required"),
        "{v}"
    );

    // Ana changes her phone: the new number gets the code, and nothing else
    // until she confirms it.
    let (status, v) = rest(
        "POST",
        &format!("{base}/v1/subscribers/ana/contacts/sms"),
        &acme,
        &format!(r#"{{"value":"{NEW_PHONE}"}}"#),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let codes = wait_sms(twilio, NEW_PHONE, 1).await;
    assert_eq!(codes.len(), 1, "{:?}", twilio.sent());
    let code = codes[0]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in {:?}", codes[0]))
        .to_string();
    let (_, v) = rest("GET", &url, &acme, "").await;
    let contact = &v["contacts"][0];
    assert_eq!(
        (contact["value"].as_str(), contact["verified"].as_bool()),
        (Some(NEW_PHONE), Some(false)),
        "{v}"
    );
    let n = send(&ch, &base, &acme, "visit").await;
    assert_eq!(outcome(&n), "suppressed", "{n:?}");
    assert!(notes(&n)[0].contains("unverified"), "{:?}", notes(&n));
    assert_eq!(sms_to(twilio, NEW_PHONE).len(), 1, "only the code");

    // A wrong code is named; the right one verifies, and the visit SMS goes.
    let verify = format!("{base}/v1/subscribers/ana/contacts/sms/verify");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, v) = rest("POST", &verify, &acme, &format!(r#"{{"code":"{wrong}"}}"#)).await;
    assert_eq!(
        (status, v["errors"][0]["field"].as_str()),
        (400, Some("code")),
        "{v}"
    );
    // Globex cannot verify acme's change, whatever it guesses.
    let (status, v) = rest("POST", &verify, &globex, &format!(r#"{{"code":"{code}"}}"#)).await;
    assert_eq!(status, 400, "globex's ana has nothing pending: {v}");
    let (status, v) = rest("POST", &verify, &acme, &format!(r#"{{"code":"{code}"}}"#)).await;
    assert_eq!(status, 200, "{v}");
    let n = send(&ch, &base, &acme, "visit").await;
    assert_eq!(outcome(&n), "completed", "{n:?}");
    assert_eq!(
        wait_sms(twilio, NEW_PHONE, 2).await[1],
        "Technician visit on Friday."
    );

    // Every change is in the history with its actor and interface.
    let (status, v) = rest("GET", &format!("{url}/history"), &acme, "").await;
    assert_eq!(status, 200, "{v}");
    let kinds: Vec<(&str, &str)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["interface"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("preferences_changed", "rest"),
            ("contact_changed", "rest"),
            ("contact_verification_failed", "rest"),
            ("contact_verified", "rest"),
        ]
    );
    let actors: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        actors.iter().all(|a| a.starts_with("api_key:")),
        "{actors:?}"
    );
    // Her notification history over GraphQL, newest first, her tenant's only.
    let query = r#"{"query":"{ notifications(subscriberId: \"ana\") { notifications { workflowId status } } }"}"#;
    let history_of = |v: &Value| -> Vec<(String, String)> {
        v["data"]["notifications"]["notifications"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|n| {
                let s = |k: &str| n[k].as_str().unwrap_or_default().to_string();
                (s("workflowId"), s("status"))
            })
            .collect()
    };
    let (status, v) = rest("POST", &format!("{base}/graphql"), &acme, query).await;
    assert_eq!(status, 200, "{v}");
    let acme_history = history_of(&v);
    let workflows: Vec<&str> = acme_history.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(workflows, ["visit", "visit", "promo"], "{v}");
    assert_eq!(acme_history[1].1, "suppressed", "{v}");
    let (status, v) = rest("POST", &format!("{base}/graphql"), &globex, query).await;
    assert_eq!(status, 200, "{v}");
    let workflows: Vec<String> = history_of(&v).into_iter().map(|(w, _)| w).collect();
    assert_eq!(workflows, ["promo"], "{v}");

    // Globex's ana has no history.
    let (status, v) = rest("GET", &format!("{url}/history"), &globex, "").await;
    assert_eq!(
        (status, v["entries"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preference_center_end_to_end_on_the_embedded_log() {
    let (smtp, twilio) = (SmtpServer::start(), TwilioDouble::start().await);
    let dir = tempfile::tempdir().unwrap();
    scenario(config(dir.path(), &smtp, &twilio), false, &smtp, &twilio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preference_center_end_to_end_on_kafka() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka end-to-end not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let (smtp, twilio) = (SmtpServer::start(), TwilioDouble::start().await);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &smtp, &twilio);
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("e2e-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 3;
    scenario(cfg, true, &smtp, &twilio).await;
}
