//! Quiet hours and delayed sends end to end, every role in-process on the
//! manual clock, over real sockets: Twilio's Messages API (a local double)
//! for SMS and a real SMTP server (aiosmtpd) for email.
//!
//! At 23:30 in Paris, tenant acme has quiet hours 22:00-07:00 (its
//! default) and its subscriber ana her own 21:00-08:00 (v3, replacing the
//! tenant's). An SMS and an email to ana are held, an SMS to bob is held
//! until 07:00, a critical SMS goes at once (noted); tenant globex has no
//! quiet hours and its SMS to its own ana goes at once. The test then moves
//! the clock past 08:00 plus the release spread: each held message
//! arrives exactly once, with the same attempt id, and the history says
//! "held: …" and "released". A trigger with `send_at` waits for it, and a
//! cancel by key ends it unsent. Once on the embedded backend, once on
//! Kafka (tansu).
//!
//! Quiet-hour settings are appended as the events the quiet-hours API
//! writes (`QuietHoursSet`: the tenant's on the config topic, a
//! subscriber's on its stream).

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_dispatch::smtp::SmtpConfig;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::Record;
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::{ManualClock, Topic};
use clarion_store::{Scan, Table};
use support::*;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const PATIENCE: Duration = Duration::from_secs(30);
const MIN: i64 = 60_000;

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    node: Node,
    clock: ManualClock,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    async fn start(cfg: Config, now: i64) -> Running {
        let clock = ManualClock::new(now);
        let node = Node::open(cfg.clone())
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for role in [Role::Projector, Role::Router, Role::Dispatcher] {
            node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
        }
        let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
        node.spawn_role(Role::Gateway, &mut tasks, admin, &rx)
            .await
            .unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let routes = node.tracking_routes().await.unwrap();
        let listener = tokio::net::TcpListener::bind(http).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(cfg.grpc.listen).is_err() {
            assert!(Instant::now() < deadline, "gRPC did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Running {
            grpc: cfg.grpc.listen,
            http,
            node,
            clock,
            shutdown,
            tasks,
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("role task panicked").expect("role failed");
        }
    }

    /// Appends an event as the gateway would (its key picks the partition).
    async fn append(&self, topic: Topic, e: Event) {
        let rec = Record {
            key: e.partition_key.clone(),
            value: e.encode().into(),
            index: clarion_runtime::projector::event_history_index(&e),
        };
        self.node
            .log
            .append(&self.node.topics.name(topic), vec![rec])
            .await
            .expect("append");
    }

    /// Quiet hours: the tenant's default (`subscriber` empty) or a subscriber's.
    async fn quiet_hours(&self, tenant: &str, subscriber: &str, rule: (&str, &str), version: u32) {
        let set = pb::QuietHoursSet {
            subscriber_id: subscriber.into(),
            rules: vec![pb::QuietRule {
                channels: vec![],
                days: vec![],
                start: rule.0.into(),
                end: rule.1.into(),
                policy: "hold".into(),
            }],
            timezone: "Europe/Paris".into(),
            enabled: true,
            version,
            origin: None,
        };
        self.publish(
            tenant,
            subscriber,
            Payload::QuietHoursSet(set),
            "quiet_hours/",
        )
        .await;
    }

    /// A tenant's calendar: its default zone (holidays none).
    async fn calendar(&self, tenant: &str, zone: &str) {
        let set = pb::TenantCalendarSet {
            default_timezone: zone.into(),
            holidays: vec![],
            version: 1,
            origin: None,
        };
        self.publish(tenant, "", Payload::TenantCalendarSet(set), "calendar/")
            .await;
    }

    /// Appends a setting: the tenant's (config topic; waits until projected
    /// to the tenants partition `pk`, which the router reads) or a
    /// subscriber's (its stream, applied in order with its triggers).
    async fn publish(&self, tenant: &str, subscriber: &str, payload: Payload, pk: &str) {
        let t = TenantId::parse(tenant).unwrap();
        let (topic, key) = match subscriber {
            "" => (Topic::Config, clarion_domain::ids::tenant_key(&t)),
            s => (Topic::Triggers, clarion_domain::ids::recipient_key(&t, s)),
        };
        let e = Event {
            id: Id(rand::random()),
            tenant: t,
            partition_key: key,
            occurred_at_ms: self.clock_now(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload,
        };
        self.append(topic, e).await;
        if !subscriber.is_empty() {
            return;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let rows = self
                .node
                .store
                .scan(&Scan::partition(Table::Tenants, tenant, pk, 10))
                .await
                .unwrap();
            if !rows.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{pk} of {tenant} not projected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn clock_now(&self) -> i64 {
        clarion_runtime::Clock::now_ms(&self.clock)
    }
}

fn smtp_config(smtp: &SmtpServer) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port,
        from: "Clarion <noreply@clarion.test>".into(),
        message_id_domain: "clarion.test".into(),
        starttls: false,
        pool_size: 2,
    }
}

/// The next 23:30 in Paris after the real time (the clock starts there).
fn tonight_2330_paris() -> i64 {
    let tz = clarion_domain::time::zone("Europe/Paris").unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let local = clarion_domain::time::local_of(real, tz);
    let at = local.date().and_hms_opt(23, 30, 0).unwrap();
    let mut ms = clarion_domain::time::instant_of(at, tz);
    if ms <= real {
        ms = clarion_domain::time::instant_of(at + chrono::Duration::days(1), tz);
    }
    ms
}

/// A tenant with an SMS and an email workflow (the SMS one cancellable by
/// `job`) and subscribers ana and bob in Paris; returns its API key.
async fn tenant(ch: &Channel, id: &str, marker: &str) -> String {
    let key = create_tenant(ch, id).await;
    for (tpl, channel, subject) in [("night-sms", "sms", ""), ("night-email", "email", "Update")] {
        Tenants::new(ch.clone())
            .put_template(authed(
                &key,
                api::Template {
                    template_id: tpl.into(),
                    channel: channel.into(),
                    variants: vec![api::TemplateVariant {
                        locale: "default".into(),
                        subject: subject.into(),
                        body: format!("{marker} {{{{ payload.n }}}}"),
                    }],
                },
            ))
            .await
            .unwrap();
    }
    apply_workflows(
        ch,
        &key,
        &[
            "id: night-sms\ncancel_key: job\nsteps:\n  - { id: sms, type: send, channel: sms, template: night-sms, provider: twilio }\n",
            "id: night-email\nsteps:\n  - { id: email, type: send, channel: email, template: night-email, provider: smtp }\n",
            "id: windowed-sms\nwindows: [\"Daily 09:00-17:00\"]\nsteps:\n  - { id: sms, type: send, channel: sms, template: night-sms, provider: twilio }\n",
        ],
    )
    .await;
    for sub in ["ana", "bob"] {
        Subscribers::new(ch.clone())
            .upsert(authed(
                &key,
                api::Subscriber {
                    subscriber_id: sub.into(),
                    timezone: "Europe/Paris".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    key
}

async fn trigger(
    ch: &Channel,
    key: &str,
    workflow: &str,
    contact: (&str, &str),
    n: &str,
    timing: (&str, bool),
) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: workflow.into(),
                recipients: vec![api::Recipient {
                    subscriber_id: contact.0.into(),
                    phone: if workflow.ends_with("sms") {
                        contact.1.into()
                    } else {
                        String::new()
                    },
                    email: if workflow == "night-email" {
                        contact.1.into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"n":"{n}","job":"{n}"}}"#),
                send_at: timing.0.into(),
                critical: timing.1,
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids[0]
        .clone()
}

/// The messages noted in a notification's history.
fn notes(n: &api::Notification) -> Vec<String> {
    n.events
        .iter()
        .filter(|e| e.event_type == "clarion.notification.noted.v1")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.detail_json).unwrap()["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn has_note(n: &api::Notification, part: &str) -> bool {
    notes(n).iter().any(|m| m.contains(part))
}

async fn scenario(mut cfg: Config) {
    let twilio = &TwilioDouble::start().await;
    let smtp = &SmtpServer::start();
    cfg.providers.twilio = Some(twilio.config());
    cfg.providers.smtp = Some(smtp_config(smtp));
    let start = tonight_2330_paris();
    let run = Running::start(cfg, start).await;
    let ch = channel(run.grpc).await;
    let acme = tenant(&ch, "acme", "ACME").await;
    let globex = tenant(&ch, "globex", "GLOBEX").await;
    run.quiet_hours("acme", "", ("22:00", "07:00"), 1).await;
    run.quiet_hours("acme", "ana", ("21:00", "08:00"), 3).await;
    // cat has no profile: her zone is the tenant's default.
    run.calendar("acme", "Europe/Paris").await;
    let windowed = trigger(
        &ch,
        &acme,
        "windowed-sms",
        ("cat", "+33600000005"),
        "w1",
        ("", false),
    )
    .await;

    let ana_sms = trigger(
        &ch,
        &acme,
        "night-sms",
        ("ana", "+33600000001"),
        "a1",
        ("", false),
    )
    .await;
    let ana_mail = trigger(
        &ch,
        &acme,
        "night-email",
        ("ana", "ana@acme.test"),
        "a2",
        ("", false),
    )
    .await;
    let bob_sms = trigger(
        &ch,
        &acme,
        "night-sms",
        ("bob", "+33600000002"),
        "b1",
        ("", false),
    )
    .await;
    let urgent = trigger(
        &ch,
        &acme,
        "night-sms",
        ("bob", "+33600000003"),
        "u1",
        ("", true),
    )
    .await;
    let other = trigger(
        &ch,
        &globex,
        "night-sms",
        ("ana", "+33600000009"),
        "g1",
        ("", false),
    )
    .await;
    // A send_at two hours ahead (01:30, inside quiet hours too), cancelled.
    let later = chrono::DateTime::from_timestamp_millis(start + 120 * MIN)
        .unwrap()
        .to_rfc3339();
    let cancelled = trigger(
        &ch,
        &acme,
        "night-sms",
        ("bob", "+33600000004"),
        "c1",
        (&later, false),
    )
    .await;

    // The critical SMS and globex's go at once.
    let n = wait_status(&ch, &acme, &urgent, "sent", PATIENCE).await;
    assert!(
        has_note(
            &n,
            "critical: quiet hours 22:00-07:00 Europe/Paris bypassed"
        ),
        "{:?}",
        notes(&n)
    );
    wait_status(&ch, &globex, &other, "sent", PATIENCE).await;
    // The others are held, saying why.
    let n = wait_until(&ch, &acme, &ana_sms, PATIENCE, |n| has_note(n, "held:")).await;
    assert!(
        has_note(&n, "held: quiet hours 21:00-08:00 Europe/Paris, subscriber setting v3; step sms released at "),
        "{:?}",
        notes(&n)
    );
    let n = wait_until(&ch, &acme, &bob_sms, PATIENCE, |n| has_note(n, "held:")).await;
    assert!(
        has_note(
            &n,
            "held: quiet hours 22:00-07:00 Europe/Paris, tenant setting v1"
        ),
        "{:?}",
        notes(&n)
    );
    let n = wait_until(&ch, &acme, &ana_mail, PATIENCE, |n| has_note(n, "held:")).await;
    assert!(has_note(&n, "subscriber setting v3"), "{:?}", notes(&n));
    let n = wait_until(&ch, &acme, &cancelled, PATIENCE, |n| {
        has_note(n, "waiting until")
    })
    .await;
    assert!(!ended(&n));
    Notifications::new(ch.clone())
        .cancel(authed(
            &acme,
            api::CancelRequest {
                cancel_key: "c1".into(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap();
    wait_status(&ch, &acme, &cancelled, "cancelled", PATIENCE).await;
    let bodies =
        |sms: &TwilioDouble| -> Vec<String> { sms.sent().iter().map(|m| m.body.clone()).collect() };
    assert_eq!(
        twilio_sorted(bodies(twilio)),
        vec!["ACME u1", "GLOBEX g1"],
        "nothing held went out"
    );
    assert!(smtp.messages().is_empty());

    // 07:10: bob's (tenant default) is released, ana's (until 08:00) not yet.
    run.clock.set(start + (7 * 60 + 40) * MIN);
    wait_status(&ch, &acme, &bob_sms, "sent", PATIENCE).await;
    assert!(!bodies(twilio).contains(&"ACME a1".to_string()));
    // 08:10: ana's SMS and email.
    run.clock.set(start + (8 * 60 + 40) * MIN);
    let n = wait_status(&ch, &acme, &ana_sms, "sent", PATIENCE).await;
    assert!(
        has_note(&n, "step sms: released: quiet hours over"),
        "{:?}",
        notes(&n)
    );
    wait_status(&ch, &acme, &ana_mail, "sent", PATIENCE).await;
    let mails = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(mails.len(), 1, "the held email, once");
    assert_eq!(mails[0].body, "ACME a2");
    let sent = bodies(twilio);
    assert_eq!(
        twilio_sorted(sent),
        vec!["ACME a1", "ACME b1", "ACME u1", "GLOBEX g1"],
        "each held SMS once, the cancelled one never"
    );
    // The send window opens at 09:00 in the tenant's default zone.
    let n = wait_until(&ch, &acme, &windowed, PATIENCE, |n| {
        has_note(n, "outside send windows")
    })
    .await;
    assert!(
        has_note(
            &n,
            "outside send windows Daily 09:00-17:00 Europe/Paris; step sms waits until "
        ),
        "{:?}",
        notes(&n)
    );
    run.clock.set(start + (9 * 60 + 40) * MIN);
    let n = wait_status(&ch, &acme, &windowed, "sent", PATIENCE).await;
    assert!(
        has_note(&n, "step sms: send window open"),
        "{:?}",
        notes(&n)
    );
    assert!(bodies(twilio).contains(&"ACME w1".to_string()));
    bad_input(&ch, &acme, run.http).await;
    // The held SMS kept its attempt id: one attempt in its history.
    let n = wait_until(&ch, &acme, &ana_sms, PATIENCE, ended).await;
    let routed = n
        .events
        .iter()
        .filter(|e| e.event_type == "clarion.notification.routed.v1")
        .count();
    assert_eq!(routed, 1, "routed once");
    run.stop().await;
}

fn violations(s: &tonic::Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Bad times and windows are refused naming the field, over gRPC and REST.
async fn bad_input(ch: &Channel, key: &str, http: SocketAddr) {
    let refuse = |send_at: &str, delay: &str| api::TriggerRequest {
        workflow_id: "night-sms".into(),
        recipients: vec![api::Recipient {
            subscriber_id: "ana".into(),
            ..Default::default()
        }],
        send_at: send_at.into(),
        delay: delay.into(),
        ..Default::default()
    };
    for (send_at, delay, field) in [
        ("tomorrow", "", "send_at"),
        ("2999-01-01T00:00:00Z", "", "send_at"),
        ("", "2 hours", "delay"),
        ("", "400d", "delay"),
        ("2026-01-01T00:00:00Z", "1h", "delay"),
    ] {
        let err = Notifications::new(ch.clone())
            .trigger(authed(key, refuse(send_at, delay)))
            .await
            .expect_err("refused");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{send_at:?} {delay:?}"
        );
        assert_eq!(violations(&err), vec![field.to_string()], "{err:?}");
    }
    let body =
        r#"{"workflow_id":"night-sms","recipients":[{"subscriber_id":"ana"}],"delay":"soon"}"#;
    let (status, head, body) = http_call(
        "POST",
        &format!("http://{http}/v1/notifications"),
        key,
        body,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(json_of(&body)["errors"][0]["field"], "delay", "{body}");
    // A window whose end is before its start.
    let err = api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            key,
            api::ApplyWorkflowRequest {
                definition: "id: w\nwindows: [\"Mon-Fri 09:00-17:00\"]\nsteps:\n  - { id: sms, type: send, channel: sms, template: night-sms, windows: [\"Daily 10:00-20:00\", \"Sat 18:00-09:00\"] }\n".into(),
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(
        violations(&err),
        vec!["steps[0].windows[1]".to_string()],
        "{err:?}"
    );
}

fn twilio_sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_held_sms_and_email_arrive_when_quiet_hours_end() {
    let dir = tempfile::tempdir().unwrap();
    scenario(test_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_held_sms_and_email_arrive_when_quiet_hours_end() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka quiet-hours scenario not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("quiet-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 2;
    scenario(cfg).await;
}
