//! Shared harness for the end-to-end tests: a real SMTP server (aiosmtpd,
//! writing a Maildir), Clarion nodes started in-process from the same code as
//! the binary, and gRPC clients.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_proto::api;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// A port free now, below Linux's ephemeral range (32768-60999): a port
/// the kernel handed out for `:0` may be taken by an outgoing connection
/// (to tansu, to SMTP) before the server binds it. Each test binary walks
/// its own stretch, starting from its process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = if port >= 32_000 {
            NEXT.store(20_001, Ordering::SeqCst);
            20_000
        } else {
            port
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// One mail as the SMTP server stored it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub message_id: String,
    pub idempotency_key: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// The HTML alternative, when there is one (it carries the open pixel).
    pub html: String,
}

/// aiosmtpd (PyPI) serving SMTP on a free port into a Maildir. Installed by
/// `.ci/run` (`pip install aiosmtpd`).
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "python3 with aiosmtpd is required (pip install aiosmtpd; .ci/run installs it)",
            );
        wait_port(port, "aiosmtpd", &mut child);
        SmtpServer { child, port, dir }
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    pub fn messages(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Some(m) = parse_mail(&e.path()) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// Waits until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_mail(path: &Path) -> Option<Mail> {
    let raw = std::fs::read(path).ok()?;
    let msg = mail_parser::MessageParser::default().parse(&raw)?;
    let header = |name: &str| {
        msg.header_raw(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    Some(Mail {
        message_id: header("Message-ID"),
        idempotency_key: header("X-Clarion-Idempotency-Key"),
        to: msg
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_string(),
        subject: msg.subject().unwrap_or_default().to_string(),
        body: msg
            .body_text(0)
            .map(|b| b.trim().to_string())
            .unwrap_or_default(),
        html: msg.body_html(0).map(|b| b.to_string()).unwrap_or_default(),
    })
}

/// Roles running in-process, stopped on drop.
pub struct RunningNode {
    pub grpc: SocketAddr,
    pub nodes: Vec<Node>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl RunningNode {
    pub fn store(&self) -> &dyn clarion_store::Store {
        &*self.nodes[0].store
    }

    /// Stops every role and reports any that failed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("role task panicked").expect("role failed");
        }
    }
}

/// The Kafka log URL of the broker at `brokers`, with the URL parameters of
/// `CLARION_TEST_KAFKA_PARAMS` if set (e.g. `readers=own`), so every Kafka
/// scenario can run with another reader or producer setting.
pub fn kafka_url(brokers: &str) -> String {
    match std::env::var("CLARION_TEST_KAFKA_PARAMS") {
        Ok(params) if !params.is_empty() => format!("kafka://{brokers}?{params}"),
        _ => format!("kafka://{brokers}"),
    }
}

/// A config on a fresh data dir with ephemeral ports.
pub fn test_config(data_dir: &Path) -> Config {
    let mut cfg = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    cfg.grpc.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.http.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cfg.runtime.poll_wait_ms = 20;
    cfg
}

/// Starts the roles. `separate`: each role gets its own `Node` (its own log
/// client and store handle), as separate processes would.
pub async fn start(cfg: Config, separate: bool) -> RunningNode {
    start_roles(
        cfg,
        separate,
        &[Role::Projector, Role::Router, Role::Dispatcher],
    )
    .await
}

/// [`start`] with these processor roles (and the gateway).
pub async fn start_roles(cfg: Config, separate: bool, roles: &[Role]) -> RunningNode {
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut nodes = Vec::new();
    let shared = Node::open(cfg.clone()).await.expect("opening node");
    for role in roles.iter().copied() {
        let node = if separate {
            Node::open(cfg.clone()).await.expect("opening node")
        } else {
            shared.clone()
        };
        node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
        nodes.push(node);
    }
    let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
    let gw = if separate {
        Node::open(cfg.clone()).await.unwrap()
    } else {
        shared.clone()
    };
    gw.spawn_role(Role::Gateway, &mut tasks, admin, &rx)
        .await
        .unwrap();
    nodes.insert(0, gw);
    let grpc = cfg.grpc.listen;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(grpc).is_err() {
        assert!(Instant::now() < deadline, "gRPC did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    RunningNode {
        grpc,
        nodes,
        shutdown,
        tasks,
    }
}

pub const ADMIN_TOKEN: &str = "adm_test_token_for_e2e";

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn authed<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

pub type Notifications = api::notification_service_client::NotificationServiceClient<Channel>;
pub type Tenants = api::tenant_service_client::TenantServiceClient<Channel>;
pub type Subscribers = api::subscriber_service_client::SubscriberServiceClient<Channel>;

/// Creates a tenant through the admin API; returns its API key.
pub async fn create_tenant(ch: &Channel, tenant: &str) -> String {
    Tenants::new(ch.clone())
        .create_tenant(authed(
            ADMIN_TOKEN,
            api::CreateTenantRequest {
                tenant_id: tenant.into(),
                name: format!("Tenant {tenant}"),
            },
        ))
        .await
        .expect("create tenant")
        .into_inner()
        .api_key
}

/// A localized appointment email template and a one-step workflow using it.
pub async fn appointment_workflow(ch: &Channel, key: &str, workflow: &str, provider: &str) {
    let v = |locale: &str, subject: &str, body: &str| api::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    Tenants::new(ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: format!("{workflow}-tpl"),
                channel: "email".into(),
                variants: vec![
                    v(
                        "default",
                        "Your visit on {{ payload.day }}",
                        "Hello {{ subscriber.id }}, your technician comes on {{ payload.day }}.",
                    ),
                    v(
                        "fr",
                        "Votre visite du {{ payload.day }}",
                        "Bonjour {{ subscriber.id }}, le technicien passe le {{ payload.day }}.",
                    ),
                    v(
                        "fr-CA",
                        "Votre visite du {{ payload.day }}",
                        "Allô {{ subscriber.id }}, le technicien passe le {{ payload.day }}.",
                    ),
                ],
            },
        ))
        .await
        .expect("put template");
    Tenants::new(ch.clone())
        .put_workflow(authed(
            key,
            api::Workflow {
                workflow_id: workflow.into(),
                name: "Appointment reminder".into(),
                steps: vec![api::WorkflowStep {
                    channel: "email".into(),
                    template_id: format!("{workflow}-tpl"),
                    provider: provider.into(),
                }],
            },
        ))
        .await
        .expect("put workflow");
}

/// Publishes workflow definitions (YAML) through `WorkflowService.Apply`.
pub async fn apply_workflows(ch: &Channel, key: &str, definitions: &[&str]) {
    let mut wf = api::workflow_service_client::WorkflowServiceClient::new(ch.clone());
    for def in definitions {
        wf.apply(authed(
            key,
            api::ApplyWorkflowRequest {
                definition: def.to_string(),
            },
        ))
        .await
        .expect("apply workflow");
    }
}

/// Whether the notification's run has ended (a `wait_until` predicate).
pub fn ended(n: &api::Notification) -> bool {
    n.events
        .iter()
        .any(|e| e.event_type == "clarion.notification.ended.v1")
}

/// The detail (JSON) of the first event of `event_type` in a notification's history.
pub fn event_detail(n: &api::Notification, event_type: &str) -> serde_json::Value {
    let e = n
        .events
        .iter()
        .find(|e| e.event_type == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {n:?}"));
    serde_json::from_str(&e.detail_json).expect("event detail is JSON")
}

/// Polls GetNotification until `done` holds (or times out and returns the last view).
pub async fn wait_until(
    ch: &Channel,
    key: &str,
    id: &str,
    timeout: Duration,
    done: impl Fn(&api::Notification) -> bool,
) -> api::Notification {
    let deadline = Instant::now() + timeout;
    let mut client = Notifications::new(ch.clone());
    loop {
        let got = client
            .get_notification(authed(
                key,
                api::GetNotificationRequest {
                    notification_id: id.into(),
                },
            ))
            .await;
        match got {
            Ok(n) if done(n.get_ref()) || Instant::now() > deadline => return n.into_inner(),
            Err(e) if Instant::now() > deadline => panic!("GetNotification {id}: {e:?}"),
            _ => tokio::time::sleep(Duration::from_millis(30)).await,
        }
    }
}

/// Polls GetNotification until `status` (or times out and returns the last view).
pub async fn wait_status(
    ch: &Channel,
    key: &str,
    id: &str,
    status: &str,
    timeout: Duration,
) -> api::Notification {
    let deadline = Instant::now() + timeout;
    let mut client = Notifications::new(ch.clone());
    loop {
        let got = client
            .get_notification(authed(
                key,
                api::GetNotificationRequest {
                    notification_id: id.into(),
                },
            ))
            .await;
        if let Ok(n) = &got {
            if n.get_ref().status == status || Instant::now() > deadline {
                return n.get_ref().clone();
            }
        } else if Instant::now() > deadline {
            panic!("GetNotification {id}: {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The spine scenario: gRPC Trigger → a localized email at a real SMTP server,
/// and GetNotification shows the full history.
pub async fn email_scenario(node: &RunningNode, smtp: &SmtpServer, tenant: &str) {
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, tenant).await;
    appointment_workflow(&ch, &key, "appointment", "smtp").await;
    // Given a Québec technician known to Clarion
    Subscribers::new(ch.clone())
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: "tech-42".into(),
                email: "tech42@example.test".into(),
                locale: "fr-CA".into(),
                timezone: "America/Toronto".into(),
                attributes_json: r#"{"role":"technician"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("upsert subscriber");
    // When a producer triggers the appointment workflow
    let ids = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: "appointment".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "tech-42".into(),
                    ..Default::default()
                }],
                payload_json: r#"{"day":"2026-12-01"}"#.into(),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids;
    assert_eq!(ids.len(), 1);
    // Then the email arrives, rendered in Canadian French
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "exactly one email: {mails:?}");
    let m = &mails[0];
    assert_eq!(m.to, "tech42@example.test");
    assert_eq!(m.subject, "Votre visite du 2026-12-01");
    assert_eq!(m.body, "Allô tech-42, le technicien passe le 2026-12-01.");
    assert!(!m.idempotency_key.is_empty(), "idempotency header present");
    assert!(
        m.message_id.contains(&m.idempotency_key),
        "Message-ID derives from the attempt id: {m:?}"
    );
    // And GetNotification shows the whole story, to the end of the run
    let n = wait_until(&ch, &key, &ids[0], Duration::from_secs(20), |n| {
        n.events
            .iter()
            .any(|e| e.event_type == "clarion.notification.ended.v1")
    })
    .await;
    assert_eq!(n.status, "sent", "{n:?}");
    assert_eq!(n.workflow_id, "appointment");
    assert_eq!(n.subscriber_id, "tech-42");
    let types: Vec<&str> = n.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "clarion.notification.triggered.v1",
            "clarion.notification.routed.v1",
            "clarion.notification.dispatch_requested.v1",
            "clarion.notification.sent.v1",
            "clarion.notification.ended.v1",
        ]
    );
    let ended: serde_json::Value = serde_json::from_str(&n.events[4].detail_json).unwrap();
    assert_eq!(ended["outcome"], "completed");
    let routed: serde_json::Value = serde_json::from_str(&n.events[1].detail_json).unwrap();
    assert_eq!(routed["locale"], "fr-ca");
    assert_eq!(routed["provider"], "smtp");
    let sent: serde_json::Value = serde_json::from_str(&n.events[3].detail_json).unwrap();
    assert_eq!(sent["provider_message_id"], m.message_id.as_str());
}

/// A local server speaking Twilio's Messages API (the real wire format:
/// form-encoded POST, basic auth, JSON 201 answer). Records what it accepted.
pub struct TwilioDouble {
    pub base_url: String,
    pub messages: std::sync::Arc<std::sync::Mutex<Vec<SmsMessage>>>,
}

#[derive(Clone, Debug)]
pub struct SmsMessage {
    pub to: String,
    pub from: String,
    pub body: String,
    pub idempotency_key: String,
    pub status_callback: String,
}

pub const TWILIO_SID: &str = "ACtest0000000000000000000000000000";
pub const TWILIO_TOKEN: &str = "twilio-test-token";

impl TwilioDouble {
    pub async fn start() -> TwilioDouble {
        use axum::extract::{Form, Path, State};
        use axum::http::{HeaderMap, StatusCode};
        use std::collections::HashMap;
        type Store = std::sync::Arc<std::sync::Mutex<Vec<SmsMessage>>>;
        async fn create(
            State(store): State<Store>,
            Path(sid): Path<String>,
            headers: HeaderMap,
            Form(form): Form<HashMap<String, String>>,
        ) -> (StatusCode, String) {
            let expected = format!(
                "Basic {}",
                base64_encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}").as_bytes())
            );
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if sid != TWILIO_SID || auth != expected {
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"code":20003,"message":"Authenticate","status":401}"#.into(),
                );
            }
            let to = form.get("To").cloned().unwrap_or_default();
            // Twilio's magic test numbers +1500555xxxx are invalid destinations.
            if !to.starts_with('+') || to.starts_with("+1500555") {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}"#.into(),
                );
            }
            let mut m = store.lock().unwrap();
            // +1999... numbers: the first request for each number answers 503
            // (a transient outage), later ones succeed.
            if to.starts_with("+1999") && !m.iter().any(|x| x.to == to && x.body == "\u{0}503") {
                m.push(SmsMessage {
                    to,
                    from: String::new(),
                    body: "\u{0}503".into(),
                    idempotency_key: String::new(),
                    status_callback: String::new(),
                });
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"code":20500,"message":"Service unavailable","status":503}"#.into(),
                );
            }
            m.push(SmsMessage {
                to,
                from: form.get("From").cloned().unwrap_or_default(),
                body: form.get("Body").cloned().unwrap_or_default(),
                idempotency_key: headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                status_callback: form.get("StatusCallback").cloned().unwrap_or_default(),
            });
            (
                StatusCode::CREATED,
                format!(r#"{{"sid":"SM{:032}","status":"queued"}}"#, m.len()),
            )
        }
        let messages: Store = Default::default();
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/:sid/Messages.json",
                axum::routing::post(create),
            )
            .with_state(messages.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TwilioDouble {
            base_url: format!("http://{addr}"),
            messages,
        }
    }

    pub fn config(&self) -> clarion_dispatch::twilio::TwilioConfig {
        clarion_dispatch::twilio::TwilioConfig {
            base_url: self.base_url.clone(),
            account_sid: TWILIO_SID.into(),
            auth_token: TWILIO_TOKEN.into(),
            from: "+15145550000".into(),
            status_callback_url: None,
            timeout_ms: 5_000,
        }
    }

    /// Messages accepted (not the simulated outages).
    pub fn sent(&self) -> Vec<SmsMessage> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.body != "\u{0}503")
            .cloned()
            .collect()
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serves the gateway's tracking routes (open pixel, click redirect) on `addr`.
pub async fn serve_tracking(node: &RunningNode, addr: SocketAddr) {
    let routes = node.nodes[0].tracking_routes().await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
}

/// Plain HTTP GET (the way a mail client fetches an image); returns the status.
pub async fn http_get(url: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

pub const VISIT_WORKFLOW: &str = r#"
id: visit-reminder
name: Visit reminder, SMS if the email is not opened
trigger:
  event: visit.scheduled
steps:
  - { id: email, type: send, channel: email, template: visit-email, provider: smtp }
  - { id: wait-open, type: wait, for: opened, step: email, timeout: 2s, on_event: end }
  - { id: sms, type: send, channel: sms, template: visit-sms, provider: twilio }
"#;

/// Issue-3 scenario: email → wait 2 s for the open → SMS. With `open_it`, the
/// test fetches the tracking pixel from the received email like a mail client.
pub async fn wait_then_sms_scenario(
    node: &RunningNode,
    smtp: &SmtpServer,
    twilio: &TwilioDouble,
    tenant: &str,
    open_it: bool,
) {
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, tenant).await;
    let mut tenants = Tenants::new(ch.clone());
    for (id, channel_name, subject, body) in [
        (
            "visit-email",
            "email",
            "Visit on {{ payload.day }}",
            "Hello {{ subscriber.id }}, see you on {{ payload.day }}. Details: https://example.test/visits/{{ payload.day }}",
        ),
        (
            "visit-sms",
            "sms",
            "",
            "Reminder: visit on {{ payload.day }}. Reply C to confirm.",
        ),
    ] {
        tenants
            .put_template(authed(
                &key,
                api::Template {
                    template_id: id.into(),
                    channel: channel_name.into(),
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
    let applied = api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            &key,
            api::ApplyWorkflowRequest {
                definition: VISIT_WORKFLOW.into(),
            },
        ))
        .await
        .expect("apply workflow")
        .into_inner();
    assert_eq!(
        (applied.workflow_id.as_str(), applied.version),
        ("visit-reminder", 1)
    );
    Subscribers::new(ch.clone())
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: "cust-9".into(),
                email: "cust9@example.test".into(),
                phone: "+15145550123".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let resp = Notifications::new(ch.clone())
        .trigger(authed(
            &key,
            api::TriggerRequest {
                event: "visit.scheduled".into(),
                workflow_id: String::new(),
                recipients: vec![api::Recipient {
                    subscriber_id: "cust-9".into(),
                    ..Default::default()
                }],
                payload_json: r#"{"day":"Friday"}"#.into(),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.notifications.len(), 1);
    assert_eq!(resp.notifications[0].workflow_id, "visit-reminder");
    let id = resp.notification_ids[0].clone();

    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0].body,
        "Hello cust-9, see you on Friday. Details: https://example.test/visits/Friday"
    );
    if open_it {
        let html = &mails[0].html;
        let start = html.find("src=\"").expect("pixel in the HTML part") + 5;
        let url = html[start..][..html[start..].find('"').unwrap()].replace("&amp;", "&");
        assert_eq!(http_get(&url).await, 200, "pixel {url}");
        // The link in the HTML part is a signed redirect to the original URL.
        let start = html.find("href=\"").expect("tracked link") + 6;
        let click = html[start..][..html[start..].find('"').unwrap()].replace("&amp;", "&");
        assert!(click.contains("/t/c/"), "{click}");
        assert_eq!(http_get(&click).await, 302, "click {click}");
        // Change the signature's last digit (to another digit: replacing it
        // with a fixed one left a link ending in that digit intact).
        let last = if click.ends_with('0') { '1' } else { '0' };
        let tampered = format!("{}{last}", &click[..click.len() - 1]);
        assert_eq!(http_get(&tampered).await, 404, "a tampered link is refused");
    }
    let n = wait_until(&ch, &key, &id, Duration::from_secs(30), |n| {
        n.events
            .iter()
            .any(|e| e.event_type == "clarion.notification.ended.v1")
    })
    .await;
    let types: Vec<&str> = n.events.iter().map(|e| e.event_type.as_str()).collect();
    let ended = event_detail(&n, "clarion.notification.ended.v1");
    assert_eq!(ended["outcome"], "completed", "{types:?}");
    let sms = twilio.sent();
    if open_it {
        let kinds: Vec<String> = n
            .events
            .iter()
            .filter(|e| e.event_type == "clarion.notification.engaged.v1")
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&e.detail_json).unwrap()["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert!(
            kinds.contains(&"opened".to_string()) && kinds.contains(&"clicked".to_string()),
            "{kinds:?}"
        );
        assert!(sms.is_empty(), "opened in time: no SMS, got {sms:?}");
    } else {
        assert_eq!(sms.len(), 1, "{sms:?}");
        assert_eq!(sms[0].to, "+15145550123");
        assert_eq!(
            sms[0].body,
            "Reminder: visit on Friday. Reply C to confirm."
        );
        assert!(!sms[0].idempotency_key.is_empty());
        // The SMS went out only after the 2 s wait ran out.
        let at = |ty: &str| {
            n.events
                .iter()
                .filter(|e| e.event_type == ty)
                .map(|e| e.occurred_at_ms)
                .collect::<Vec<_>>()
        };
        let sent = at("clarion.notification.sent.v1");
        let fired = at("clarion.notification.timer_fired.v1");
        assert_eq!(fired.len(), 1, "{types:?}");
        assert!(
            fired[0] - sent[0] >= 2_000,
            "timeout fired {} ms after the email",
            fired[0] - sent[0]
        );
        assert_eq!(sent.len(), 2, "email and SMS both sent: {types:?}");
    }
}

/// Triggers `workflow` for one recipient with an inline email; returns the notification id.
pub async fn trigger_one(
    ch: &Channel,
    key: &str,
    workflow: &str,
    subscriber: &str,
    email: &str,
    payload_json: &str,
) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: workflow.into(),
                event: String::new(),
                recipients: vec![api::Recipient {
                    subscriber_id: subscriber.into(),
                    email: email.into(),
                    ..Default::default()
                }],
                payload_json: payload_json.into(),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids[0]
        .clone()
}

/// One HTTP/1.1 request with an API key and a JSON body (empty: none), over
/// a plain socket: the status, the head (lower-cased) and the raw body.
pub async fn http_call(method: &str, url: &str, key: &str, body: &str) -> (u16, String, String) {
    http_call_with(method, url, key, &[], body).await
}

/// [`http_call`] with more request headers.
pub async fn http_call_with(
    method: &str,
    url: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let s = tokio::net::TcpStream::connect(host).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!("{method} /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    // Written while the answer is read: a server may answer (e.g. 413)
    // before it has read the whole body, and stop reading it.
    let (mut rx, mut tx) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = tx.write_all(request.as_bytes()).await;
        tx
    });
    let mut out = Vec::new();
    let read = rx.read_to_end(&mut out).await;
    let _ = writer.await;
    assert!(!out.is_empty(), "no answer from {url}: {read:?}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), body.to_string())
}

/// A real `clarion serve` process on a fresh data directory with ephemeral
/// ports, killed on drop; with the credentials it printed on first start.
pub struct ServeProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin_token: String,
    pub demo_key: String,
    /// Everything it printed on stdout so far.
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    pub async fn start() -> ServeProcess {
        ServeProcess::start_with_config("").await
    }

    /// With `config` (TOML) as its `--config` file.
    pub async fn start_with_config(config: &str) -> ServeProcess {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config_file = dir.path().join("clarion.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_clarion"))
            .current_dir(dir.path())
            .args(["serve", "--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .arg("--config")
            .arg(&config_file)
            .env("CLARION_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let mut p = ServeProcess {
            child,
            grpc,
            http,
            admin_token: String::new(),
            demo_key: String::new(),
            lines,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.printed("Clarion is running") {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("clarion serve exited with {status}: {:?}", p.lines);
            }
            assert!(Instant::now() < deadline, "never running: {:?}", p.lines);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.admin_token = p.value_after("admin token:");
        p.demo_key = p.value_after("demo API key:");
        p
    }

    fn printed(&self, prefix: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    fn value_after(&self, label: &str) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label:?} printed: {:?}", self.lines))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Its working directory (the data directory is `data/` in it).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a tenant with the given admin token; returns its first key.
pub async fn create_tenant_with(ch: &Channel, admin_token: &str, tenant: &str) -> String {
    Tenants::new(ch.clone())
        .create_tenant(authed(
            admin_token,
            api::CreateTenantRequest {
                tenant_id: tenant.into(),
                name: format!("Tenant {tenant}"),
            },
        ))
        .await
        .expect("create tenant")
        .into_inner()
        .api_key
}

/// The JSON in an HTTP answer's body (the text between the first `{` and
/// the last `}`, so a chunked body reads too); `Null` when there is none.
pub fn json_of(body: &str) -> serde_json::Value {
    match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}
pub mod browser;
pub mod console;

/// Publishes a template with one `default` variant.
pub async fn put_default_template(
    ch: &Channel,
    key: &str,
    id: &str,
    channel: &str,
    subject: &str,
    body: &str,
) {
    Tenants::new(ch.clone())
        .put_template(authed(
            key,
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
        .expect("put template");
}
pub mod push;
pub mod warehouse;
