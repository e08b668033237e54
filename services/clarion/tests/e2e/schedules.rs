//! Recurring reminders and the scheduling settings end to end, every role
//! in-process over real sockets on the manual clock: a schedule created
//! over REST fires its workflow at 09:00 in the subscriber's zone, the
//! email (SMTP, aiosmtpd) and the SMS (a Twilio double) arrive once per
//! occurrence as the test moves the clock; pause, resume and delete take
//! effect; the tenant calendar's default zone applies to a subscriber
//! without one. Two tenants; the other's schedules are not found. Bad input
//! is a problem naming the field (REST) or INVALID_ARGUMENT with the field
//! (gRPC). On the embedded backend and on Kafka (tansu).

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_proto::api;
use clarion_runtime::ManualClock;
use serde_json::{json, Value};
use support::*;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Code;
use tonic_types::StatusExt;

type Schedules = api::schedule_service_client::ScheduleServiceClient<tonic::transport::Channel>;

const PATIENCE: Duration = Duration::from_secs(20);
const DAY_MS: i64 = 86_400_000;

const FLOW: &str = r#"
id: daily-check
steps:
  - { id: email, type: send, channel: email, template: check-email, provider: smtp }
  - { id: sms, type: send, channel: sms, template: check-sms, provider: twilio }
"#;

struct Running {
    grpc: SocketAddr,
    base: String,
    clock: ManualClock,
    smtp: SmtpServer,
    twilio: TwilioDouble,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    async fn start(kafka: Option<String>) -> (Running, tempfile::TempDir) {
        let smtp = SmtpServer::start();
        let twilio = TwilioDouble::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: Config = test_config(dir.path());
        cfg.providers.smtp = Some(clarion_dispatch::smtp::SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            from: "Clarion <noreply@clarion.test>".into(),
            message_id_domain: "clarion.test".into(),
            starttls: false,
            pool_size: 2,
        });
        cfg.providers.twilio = Some(twilio.config());
        if let Some(brokers) = kafka {
            cfg.log.url = crate::support::kafka_url(&brokers);
            cfg.log.topic_prefix = format!("sched-{}.", uuid::Uuid::new_v4().simple());
            cfg.log.partitions = 2;
        }
        // A Tuesday, 2026-01-06 15:00 UTC (16:00 in Paris, 10:00 in New
        // York): clear of DST changes for weeks.
        let clock = ManualClock::new(1_767_711_600_000);
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
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(cfg.grpc.listen).is_err() {
            assert!(Instant::now() < deadline, "gRPC did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let run = Running {
            grpc: cfg.grpc.listen,
            base: format!("http://{http}"),
            clock,
            smtp,
            twilio,
            shutdown,
            tasks,
        };
        (run, dir)
    }

    async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("role task panicked").expect("role failed");
        }
    }

    fn now_ms(&self) -> i64 {
        clarion_runtime::Clock::now_ms(&self.clock)
    }

    fn advance_to(&self, at_ms: i64) {
        let now = self.now_ms();
        assert!(at_ms >= now);
        self.clock
            .advance(Duration::from_millis((at_ms - now) as u64));
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, _, text) =
            http_call(method, &format!("{}{path}", self.base), key, &body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Emails and texts that reached `who` (an address or a number).
    fn received(&self, email: &str, phone: &str) -> (usize, usize) {
        let mails = self
            .smtp
            .messages()
            .iter()
            .filter(|m| m.to == email)
            .count();
        let texts = self.twilio.sent().iter().filter(|m| m.to == phone).count();
        (mails, texts)
    }

    /// Waits until `who` received `n` of each; then checks no more come in
    /// a short while (a second copy would follow the first at once).
    async fn expect_received(&self, email: &str, phone: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.received(email, phone) != (n, n) {
            assert!(
                Instant::now() < deadline && self.received(email, phone).0 <= n,
                "{email}: expected {n} of each, have {:?}",
                self.received(email, phone)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.received(email, phone), (n, n), "{email}: a repeat");
    }
}

/// A tenant with the templates, the workflow and a subscriber `ana`.
async fn tenant(run: &Running, id: &str, timezone: &str) -> String {
    let ch = channel(run.grpc).await;
    let key = create_tenant(&ch, id).await;
    let mut tenants = Tenants::new(ch.clone());
    for (tpl, chan, subject) in [
        ("check-email", "email", "Daily check"),
        ("check-sms", "sms", ""),
    ] {
        tenants
            .put_template(authed(
                &key,
                api::Template {
                    template_id: tpl.into(),
                    channel: chan.into(),
                    variants: vec![api::TemplateVariant {
                        locale: "default".into(),
                        subject: subject.into(),
                        body: "Check the {{ payload.site }} site".into(),
                    }],
                },
            ))
            .await
            .unwrap();
    }
    apply_workflows(&ch, &key, &[FLOW]).await;
    for (sub, tz) in [("ana", timezone), ("bob", "")] {
        Subscribers::new(ch.clone())
            .upsert(authed(
                &key,
                api::Subscriber {
                    subscriber_id: sub.into(),
                    email: format!("{sub}@{id}.test"),
                    phone: phone(id, sub).into(),
                    timezone: tz.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    key
}

fn phone(tenant: &str, sub: &str) -> &'static str {
    match (tenant, sub) {
        ("acme", "ana") => "+15145550101",
        ("acme", _) => "+15145550102",
        (_, "ana") => "+15145550201",
        _ => "+15145550202",
    }
}

fn field(problem: &Value) -> String {
    problem["errors"][0]["field"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn scenario(run: &Running) {
    let acme = tenant(run, "acme", "Europe/Paris").await;
    let globex = tenant(run, "globex", "America/New_York").await;

    // A daily 09:00 reminder for acme's ana, read in her zone (Paris).
    let body = json!({
        "schedule_id": "daily", "workflow_id": "daily-check", "subscriber_ids": ["ana"],
        "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=0", "payload": {"site": "north"},
    });
    let (status, created) = run.call("POST", "/v1/schedules", &acme, body.clone()).await;
    assert_eq!(status, 201, "{created}");
    let sub = &created["subscribers"][0];
    assert_eq!(
        (sub["state"].as_str(), sub["timezone"].as_str()),
        (Some("active"), Some("Europe/Paris"))
    );
    // Tuesday 15:00 UTC → Wednesday 09:00 in Paris (UTC+1).
    let first = sub["next_at_ms"].as_i64().unwrap();
    assert_eq!(sub["next_at"], "2026-01-07T09:00:00+01:00");
    let upcoming: Vec<&str> = sub["upcoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["at"].as_str().unwrap())
        .collect();
    assert_eq!(upcoming.len(), 5);
    assert_eq!(upcoming[1], "2026-01-08T09:00:00+01:00");
    // globex: the same schedule id, its own (New York).
    let (status, g) = run.call("POST", "/v1/schedules", &globex, body).await;
    assert_eq!(status, 201, "{g}");
    let g_first = g["subscribers"][0]["next_at_ms"].as_i64().unwrap();
    assert_eq!(g["subscribers"][0]["next_at"], "2026-01-07T09:00:00-05:00");

    // Just before: nothing. At 09:00 Paris: acme's ana gets one email and one SMS.
    run.advance_to(first - 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run.received("ana@acme.test", phone("acme", "ana")), (0, 0));
    run.advance_to(first);
    run.expect_received("ana@acme.test", phone("acme", "ana"), 1)
        .await;
    let mail = run
        .smtp
        .messages()
        .into_iter()
        .find(|m| m.to == "ana@acme.test")
        .unwrap();
    assert!(mail.body.contains("Check the north site"), "{}", mail.body);
    assert_eq!(
        run.received("ana@globex.test", phone("globex", "ana")),
        (0, 0)
    );
    run.advance_to(g_first);
    run.expect_received("ana@globex.test", phone("globex", "ana"), 1)
        .await;
    let (_, got) = run
        .call("GET", "/v1/schedules/daily", &acme, Value::Null)
        .await;
    assert_eq!(got["subscribers"][0]["fired"], 1);
    assert_eq!(got["subscribers"][0]["next_at_ms"], first + DAY_MS);

    // The next day: once more.
    run.advance_to(first + DAY_MS);
    run.expect_received("ana@acme.test", phone("acme", "ana"), 2)
        .await;

    // Paused: the third day passes silently for acme, globex goes on.
    let (status, paused) = run
        .call("POST", "/v1/schedules/daily/pause", &acme, Value::Null)
        .await;
    assert_eq!(
        (status, paused["subscribers"][0]["state"].as_str()),
        (200, Some("paused"))
    );
    // One occurrence at a time: a jump over several is downtime (caught up once).
    run.advance_to(g_first + DAY_MS);
    run.expect_received("ana@globex.test", phone("globex", "ana"), 2)
        .await;
    run.advance_to(g_first + 2 * DAY_MS);
    run.expect_received("ana@globex.test", phone("globex", "ana"), 3)
        .await;
    assert_eq!(run.received("ana@acme.test", phone("acme", "ana")), (2, 2));
    // Resumed: the next 09:00 after now, the paused day not caught up.
    let (status, resumed) = run
        .call("POST", "/v1/schedules/daily/resume", &acme, Value::Null)
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["subscribers"][0]["next_at_ms"], first + 3 * DAY_MS);
    run.advance_to(first + 3 * DAY_MS);
    run.expect_received("ana@acme.test", phone("acme", "ana"), 3)
        .await;

    // The tenant's calendar: its default zone applies to bob (no zone of his own).
    let (status, cal) = run
        .call(
            "PUT",
            "/v1/calendar",
            &acme,
            json!({"default_timezone": "Asia/Kolkata", "holidays": ["2026-12-25"]}),
        )
        .await;
    assert_eq!((status, cal["version"].as_u64()), (200, Some(1)), "{cal}");
    let (_, cal) = run.call("GET", "/v1/calendar", &acme, Value::Null).await;
    assert_eq!(cal["default_timezone"], "Asia/Kolkata");
    let (_, other) = run.call("GET", "/v1/calendar", &globex, Value::Null).await;
    assert_eq!(other["version"], 0, "globex has no calendar: {other}");
    let bob = json!({"schedule_id": "bob", "workflow_id": "daily-check", "subscriber_ids": ["bob"], "cron": "30 9 * * *"});
    let (status, b) = run.call("POST", "/v1/schedules", &acme, bob).await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["subscribers"][0]["timezone"], "Asia/Kolkata");
    assert!(
        b["subscribers"][0]["next_at"]
            .as_str()
            .unwrap()
            .ends_with("T09:30:00+05:30"),
        "{b}"
    );

    // Listed: acme has two, globex one; neither sees the other's.
    let (_, list) = run.call("GET", "/v1/schedules", &acme, Value::Null).await;
    let ids: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["schedule_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bob", "daily"]);
    let (_, list) = run.call("GET", "/v1/schedules", &globex, Value::Null).await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    let (status, _) = run
        .call("GET", "/v1/schedules/bob", &globex, Value::Null)
        .await;
    assert_eq!(status, 404);
    let (status, _) = run
        .call("POST", "/v1/schedules/bob/pause", &globex, Value::Null)
        .await;
    assert_eq!(status, 404);

    // Deleted: gone, and its next occurrence sends nothing.
    let (status, _) = run
        .call("DELETE", "/v1/schedules/daily", &acme, Value::Null)
        .await;
    assert_eq!(status, 204);
    let (status, _) = run
        .call("GET", "/v1/schedules/daily", &acme, Value::Null)
        .await;
    assert_eq!(status, 404);
    run.advance_to(g_first + 3 * DAY_MS);
    run.expect_received("ana@globex.test", phone("globex", "ana"), 4)
        .await;
    run.advance_to(g_first + 4 * DAY_MS);
    run.expect_received("ana@globex.test", phone("globex", "ana"), 5)
        .await;
    assert_eq!(run.received("ana@acme.test", phone("acme", "ana")), (3, 3));
}

/// Every bad field of a create is named, over REST and gRPC.
async fn bad_input(run: &Running) {
    let acme = tenant(run, "initech", "Europe/Paris").await;
    let good = json!({"workflow_id": "daily-check", "subscriber_ids": ["ana"], "rrule": "FREQ=DAILY;BYHOUR=9"});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("rrule", json!("FREQ=SOMETIMES")), "rrule"),
        (with("rrule", json!("")), "rrule"),
        (
            json!({"workflow_id": "daily-check", "subscriber_ids": ["ana"], "cron": "61 9 * * *"}),
            "cron",
        ),
        (with("cron", json!("0 9 * * *")), "cron"),
        (with("timezone", json!("Mars/Olympus")), "timezone"),
        (with("workflow_id", json!("no-such-flow")), "workflow_id"),
        (with("start_at", json!("yesterday")), "start_at"),
        (with("end_at", json!("2020-01-01T00:00:00Z")), "end_at"),
        (with("subscriber_ids", json!([])), "subscriber_ids"),
        (
            with("subscriber_ids", json!(["ana", "ana"])),
            "subscriber_ids[1]",
        ),
        (with("catch_up", json!("all")), "catch_up"),
        (with("payload", json!([1])), "payload"),
        (with("schedule_id", json!("no spaces")), "schedule_id"),
    ];
    for (body, want) in cases {
        let (status, p) = run.call("POST", "/v1/schedules", &acme, body.clone()).await;
        assert_eq!((status, field(&p)), (400, want.to_string()), "{body} → {p}");
    }
    let (status, p) = run
        .call(
            "GET",
            "/v1/schedules/daily?upcoming=1000",
            &acme,
            Value::Null,
        )
        .await;
    assert_eq!((status, field(&p)), (400, "upcoming".to_string()), "{p}");
    // gRPC: INVALID_ARGUMENT with the field.
    let ch = channel(run.grpc).await;
    let err = Schedules::new(ch)
        .create(authed(
            &acme,
            api::CreateScheduleRequest {
                workflow_id: "daily-check".into(),
                subscriber_ids: vec!["ana".into()],
                cron: "every day".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_details_bad_request().expect("field violations");
    assert_eq!(details.field_violations[0].field, "cron");
    // Settings: the zone and the dates, the rules.
    let (status, p) = run
        .call(
            "PUT",
            "/v1/calendar",
            &acme,
            json!({"default_timezone": "Nowhere", "holidays": ["2026-02-30"]}),
        )
        .await;
    assert_eq!(status, 400, "{p}");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["default_timezone", "holidays[0]"]);
    let quiet =
        json!({"enabled": true, "rules": [{"start": "25:00", "end": "07:00", "policy": "hold"}]});
    let (status, p) = run.call("PUT", "/v1/quiet-hours", &acme, quiet).await;
    assert_eq!(
        (status, field(&p)),
        (400, "rules[0].start".to_string()),
        "{p}"
    );
    let quiet = json!({"enabled": true, "timezone": "Europe/Paris", "rules": [{"channels": ["sms"], "start": "22:00", "end": "07:00", "policy": "hold"}]});
    let (status, q) = run
        .call("PUT", "/v1/quiet-hours", &acme, quiet.clone())
        .await;
    assert_eq!((status, q["version"].as_u64()), (200, Some(1)), "{q}");
    let (_, q) = run.call("PUT", "/v1/quiet-hours", &acme, quiet).await;
    assert_eq!(q["version"], 2);
    let (_, q) = run.call("GET", "/v1/quiet-hours", &acme, Value::Null).await;
    assert_eq!(
        (q["version"].as_u64(), q["rules"][0]["start"].as_str()),
        (Some(2), Some("22:00"))
    );
    let sub_quiet = json!({"enabled": false});
    let (status, q) = run
        .call("PUT", "/v1/subscribers/ana/quiet-hours", &acme, sub_quiet)
        .await;
    assert_eq!((status, q["enabled"].as_bool()), (200, Some(false)), "{q}");
    let (status, _) = run
        .call(
            "GET",
            "/v1/subscribers/nobody/quiet-hours",
            &acme,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);

    // The CLI over gRPC.
    let created = clarion(
        run,
        &acme,
        &[
            "schedule",
            "create",
            "--id",
            "cli",
            "--workflow",
            "daily-check",
            "--subscriber",
            "ana",
            "--cron",
            "0 8 * * *",
            "--payload",
            r#"{"site":"cli"}"#,
        ],
    );
    let v: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(
        v["subscribers"][0]["upcoming"].as_array().unwrap().len(),
        5,
        "{v}"
    );
    assert!(clarion(run, &acme, &["schedule", "list"])
        .contains("cli\tdaily-check\t0 8 * * *\tana:active"));
    let paused: Value =
        serde_json::from_str(&clarion(run, &acme, &["schedule", "pause", "cli"])).unwrap();
    assert_eq!(paused["subscribers"][0]["state"], "paused");
    let got: Value =
        serde_json::from_str(&clarion(run, &acme, &["schedule", "get", "cli"])).unwrap();
    assert_eq!(got["payload"]["site"], "cli");
    assert_eq!(
        clarion(run, &acme, &["schedule", "delete", "cli"]).trim(),
        "deleted cli"
    );
}

fn clarion(run: &Running, key: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(args)
        .args(["--endpoint", &format!("http://{}", run.grpc)])
        .args(["--api-key", key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_schedules_fire_once_per_occurrence_in_the_recipients_zone() {
    let (run, _dir) = Running::start(None).await;
    scenario(&run).await;
    bad_input(&run).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_schedules_fire_once_per_occurrence_in_the_recipients_zone() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka schedules scenario not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let (run, _dir) = Running::start(Some(brokers)).await;
    scenario(&run).await;
    run.stop().await;
}
