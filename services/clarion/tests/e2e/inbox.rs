//! The in-app inbox end to end, every role in-process over real sockets:
//! a workflow's in_app step → the item is in the subscriber's feed (REST
//! and gRPC) → a Server-Sent Events client holding a subscriber token gets
//! it live → marking it read changes the counts and their version → the
//! run waiting for `read` ends. A reconnecting client resumes from its last
//! version; a token reaches its own feed only; bad input is a problem
//! naming the field; the feed rebuilt from the log is the same.
//!
//! Twice on the embedded backend: with the projector waking the gateway's
//! streams through the in-process hub (`clarion serve`), and with a
//! gateway that has no projector in its process (it polls). And once on
//! Kafka (tansu). Two tenants each time; the embedded runs on the manual
//! clock (token expiry moves only when told).

use crate::support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion::{Config, Node, Role};
use clarion_proto::api;
use clarion_runtime::inbox::rows::{self, Part};
use clarion_runtime::inbox::{HubEffects, InboxHub, InboxProjector};
use clarion_runtime::{ManualClock, PartitionRunner, RunnerConfig, Topic};
use clarion_store::{Scan, Store, Table};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Code;

type Inbox = api::inbox_service_client::InboxServiceClient<Channel>;

const JOB_FLOW: &str = r#"
id: job-assigned
name: Job assigned, reminder unless read
steps:
  - { id: inbox, type: send, channel: in_app, template: job-inapp }
  - { id: wait-read, type: wait, for: read, step: inbox, timeout: 1h, on_event: end }
  - { id: reminder, type: send, channel: in_app, template: job-inapp }
"#;

/// How long a test waits for something that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

// --- a minimal Server-Sent Events client ------------------------------------

#[derive(Debug, Clone, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// An open `text/event-stream` over HTTP/1.1 (chunked), read as it comes.
struct SseClient {
    sock: tokio::net::TcpStream,
    raw: Vec<u8>,
    text: String,
}

/// GET `url` as an event stream with `headers`; the status and, for a 200,
/// the stream, else the body.
async fn sse_connect(url: &str, headers: &[(&str, &str)]) -> Result<SseClient, (u16, String)> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut sock = tokio::net::TcpStream::connect(host).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    sock.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut buf = [0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let rest = raw[head_end + 4..].to_vec();
    if status != 200 {
        // Read the (small) body of a refusal.
        let mut body = rest;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !body.ends_with(b"\r\n0\r\n\r\n")
            && !body.ends_with(b"}")
            && Instant::now() < deadline
        {
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => body.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        return Err((status, String::from_utf8_lossy(&body).into_owned()));
    }
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    Ok(SseClient {
        sock,
        raw: rest,
        text: String::new(),
    })
}

impl SseClient {
    /// Moves complete chunks from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_line = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let size = usize::from_str_radix(size_line.trim(), 16).expect("chunk size");
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            let chunk = self.raw[eol + 2..eol + 2 + size].to_vec();
            self.raw.drain(..eol + 2 + size + 2);
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event (comments skipped), or `None` at the deadline.
    async fn next(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            self.dechunk();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if ev.event.is_empty() && ev.data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buf = [0u8; 8192];
            match tokio::time::timeout(left, self.sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.raw.extend_from_slice(&buf[..n]),
                Ok(_) => panic!("the stream closed"),
                Err(_) => return None,
            }
        }
    }

    /// Events until one satisfies `want` (which is returned), or panics at
    /// the deadline with what came.
    async fn until(
        &mut self,
        what: &str,
        want: impl Fn(&SseEvent) -> bool,
    ) -> (SseEvent, Vec<SseEvent>) {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while let Some(e) = self.next(deadline).await {
            if want(&e) {
                return (e, seen);
            }
            seen.push(e);
        }
        panic!("no {what} on the stream; got {seen:?}");
    }

    /// Whether nothing arrives for a moment (after what was expected).
    async fn quiet_for(&mut self, d: Duration) -> Option<SseEvent> {
        self.next(Instant::now() + d).await
    }
}

// --- the system under test --------------------------------------------------

struct Running {
    grpc: SocketAddr,
    http: SocketAddr,
    node: Node,
    clock: Option<ManualClock>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Every role in-process on the manual clock. `detached`: the gateway
    /// gets a hub no projector reports to, as a gateway alone in its
    /// process (`clarion run gateway`) has.
    async fn embedded(cfg: Config, detached: bool) -> Running {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
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
        let mut gateway = node.clone();
        if detached {
            gateway.inbox_hub = Arc::new(InboxHub::default());
        }
        let running = Self::gateway(cfg, gateway, shutdown, rx, tasks).await;
        Running {
            clock: Some(clock),
            node,
            ..running
        }
    }

    /// Each role with its own node (log client, store handle), as separate
    /// processes: the gateway's streams poll.
    async fn separate(cfg: Config) -> Running {
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for role in [Role::Projector, Role::Router, Role::Dispatcher] {
            let node = Node::open(cfg.clone()).await.unwrap();
            node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
        }
        let gateway = Node::open(cfg.clone()).await.unwrap();
        Self::gateway(cfg, gateway, shutdown, rx, tasks).await
    }

    async fn gateway(
        cfg: Config,
        node: Node,
        shutdown: watch::Sender<bool>,
        rx: watch::Receiver<bool>,
        mut tasks: JoinSet<anyhow::Result<()>>,
    ) -> Running {
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
            clock: None,
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
}

/// A tenant with the in_app template, the workflow and subscribers.
async fn tenant(ch: &Channel, id: &str, marker: &str, subscribers: &[&str]) -> String {
    let key = create_tenant(ch, id).await;
    Tenants::new(ch.clone())
        .put_template(authed(
            &key,
            api::Template {
                template_id: "job-inapp".into(),
                channel: "in_app".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Job {{ payload.job }}".into(),
                    body: format!("{marker}: job {{{{ payload.job }}}} is yours"),
                }],
            },
        ))
        .await
        .unwrap();
    apply_workflows(ch, &key, &[JOB_FLOW]).await;
    for s in subscribers {
        Subscribers::new(ch.clone())
            .upsert(authed(
                &key,
                api::Subscriber {
                    subscriber_id: s.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    key
}

async fn trigger(ch: &Channel, key: &str, subscriber: &str, job: &str) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "job-assigned".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: subscriber.into(),
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"job":"{job}"}}"#),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids[0]
        .clone()
}

async fn token(base: &str, key: &str, subscriber: &str) -> String {
    let (status, _, body) = http_call(
        "POST",
        &format!("{base}/v1/subscribers/{subscriber}/token"),
        key,
        "",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    json_of(&body)["token"].as_str().unwrap().to_string()
}

async fn get(url: &str, credential: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = http_call("GET", url, credential, "").await;
    (status, json_of(&body))
}

fn field(problem: &serde_json::Value) -> String {
    problem["errors"][0]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no field named: {problem}"))
        .to_string()
}

/// The whole scenario against a running system.
async fn scenario(run: &Running) {
    let ch = channel(run.grpc).await;
    let base = format!("http://{}", run.http);
    let acme = tenant(&ch, "acme", "ACME-ONLY", &["ana", "bob"]).await;
    let globex = tenant(&ch, "globex", "GLOBEX-ONLY", &["ana"]).await;
    let ana = token(&base, &acme, "ana").await;
    let bob = token(&base, &acme, "bob").await;
    let globex_ana = token(&base, &globex, "ana").await;
    let feed = |sub: &str| format!("{base}/v1/subscribers/{sub}/inbox");

    // Ana's web widget connects first (token in the query, as EventSource
    // must): a fresh client gets the current counts.
    let mut live = sse_connect(&format!("{}/stream?token={ana}", feed("ana")), &[])
        .await
        .expect("stream opens");
    let (first, _) = live.until("first counts", |e| e.event == "counts").await;
    assert_eq!(first.json()["unread"], 0);
    let v0: u64 = first.id.clone().unwrap().parse().unwrap();

    // Given a job assigned to acme's ana (and one to globex's ana).
    let nid = trigger(&ch, &acme, "ana", "J-7").await;
    let other = trigger(&ch, &globex, "ana", "G-1").await;

    // Then the item arrives on the stream, then the counts.
    let (item, _) = live.until("the item", |e| e.event == "item").await;
    let item = item.json();
    assert_eq!(item["title"], "Job J-7");
    assert_eq!(item["body"], "ACME-ONLY: job J-7 is yours");
    assert_eq!(item["notification_id"], nid.as_str());
    assert_eq!(item["read"], false);
    let item_id = item["item_id"].as_str().unwrap().to_string();
    let (counts, _) = live.until("counts", |e| e.event == "counts").await;
    let v1: u64 = counts.id.clone().unwrap().parse().unwrap();
    assert!(v1 > v0);
    assert_eq!(counts.json()["unread"], 1);
    assert_eq!(counts.json()["version"], v1);

    // The feed over REST (token) and gRPC (API key).
    let (status, page) = get(&feed("ana"), &ana).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["item_id"], item_id.as_str());
    assert_eq!(page["counts"]["unread"], 1);
    assert!(!page.to_string().contains("GLOBEX-ONLY"), "{page}");
    let listed = Inbox::new(ch.clone())
        .list_items(authed(
            &acme,
            api::ListInboxItemsRequest {
                subscriber_id: "ana".into(),
                status: "unread".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].item_id, item_id);
    assert_eq!(listed.counts.unwrap().unread, 1);
    let (_, gpage) = get(&feed("ana"), &globex_ana).await;
    assert_eq!(gpage["items"][0]["body"], "GLOBEX-ONLY: job G-1 is yours");
    assert_eq!(gpage["items"].as_array().unwrap().len(), 1);

    // A gRPC watcher with the API key, from the current version.
    let mut watcher = Inbox::new(ch.clone())
        .watch(authed(
            &acme,
            api::WatchInboxRequest {
                subscriber_id: "ana".into(),
                after_version: v1,
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // When ana reads it (her token, REST): the counts answered include it.
    let (status, _, body) = http_call(
        "POST",
        &format!("{}/mark", feed("ana")),
        &ana,
        &format!(r#"{{"item_ids":["{item_id}"],"mark":"read"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after = json_of(&body);
    assert_eq!(after["unread"], 0);
    let v2 = after["version"].as_u64().unwrap();
    assert!(v2 > v1);
    let (pushed, _) = live
        .until("counts after the read", |e| e.event == "counts")
        .await;
    assert_eq!(pushed.id.as_deref(), Some(v2.to_string().as_str()));
    assert_eq!(pushed.json()["unread"], 0);
    let update = tokio::time::timeout(PATIENCE, watcher.message())
        .await
        .expect("a gRPC update")
        .unwrap()
        .unwrap();
    assert_eq!(update.counts.unwrap().version, v2);

    // Then the run waiting for `read` ends, without the reminder.
    let n = wait_until(&ch, &acme, &nid, PATIENCE, ended).await;
    assert!(ended(&n), "{n:?}");
    let engaged = event_detail(&n, "clarion.notification.engaged.v1");
    assert_eq!(engaged["kind"], "read");
    assert_eq!(engaged["source"], "inbox");
    assert_eq!(
        n.events
            .iter()
            .filter(|e| e.event_type == "clarion.notification.dispatch_requested.v1")
            .count(),
        1,
        "no reminder: {n:?}"
    );
    // globex's ana still waits: nothing of acme's read reached her run.
    let o = wait_status(&ch, &globex, &other, "delivered", PATIENCE).await;
    assert!(!ended(&o), "{o:?}");

    // A reconnecting client resumes from its last version: from v1 it gets
    // only the newer counts; from v0 the item too (Last-Event-ID wins over
    // the query).
    let mut again = sse_connect(
        &format!("{}/stream?after_version=0", feed("ana")),
        &[
            ("authorization", &format!("Bearer {ana}")),
            ("last-event-id", &v1.to_string()),
        ],
    )
    .await
    .expect("resumes");
    let (e, before) = again.until("counts", |e| e.event == "counts").await;
    assert!(before.is_empty(), "only newer events: {before:?}");
    assert_eq!(e.id.as_deref(), Some(v2.to_string().as_str()));
    assert!(again.quiet_for(Duration::from_millis(300)).await.is_none());
    let mut from_start = sse_connect(
        &format!("{}/stream?after_version={v0}&token={ana}", feed("ana")),
        &[],
    )
    .await
    .expect("resumes");
    let (e, before) = from_start.until("counts", |e| e.event == "counts").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].json()["item_id"], item_id.as_str());
    assert_eq!(before[0].json()["read"], true);
    assert_eq!(e.json()["version"], v2);
    // A client claiming a version the feed never had starts afresh.
    let mut ahead = sse_connect(
        &format!("{}/stream?after_version=999999&token={ana}", feed("ana")),
        &[],
    )
    .await
    .expect("opens");
    let (e, _) = ahead.until("counts", |e| e.event == "counts").await;
    assert_eq!(e.id.as_deref(), Some(v2.to_string().as_str()));

    // Mark all seen over gRPC, then an unread filter and a category.
    let c = Inbox::new(ch.clone())
        .mark_items(authed(
            &acme,
            api::MarkInboxItemsRequest {
                subscriber_id: "ana".into(),
                all: true,
                mark: "seen".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.unseen, c.unread, c.total), (0, 0, 1));
    let (_, unread) = get(&format!("{}?status=unread", feed("ana")), &ana).await;
    assert_eq!(unread["items"], serde_json::json!([]));

    isolation(&ch, &base, &acme, &ana, &bob, &globex_ana).await;
    bad_input(&ch, &base, &acme, &ana).await;
    if let Some(clock) = &run.clock {
        // An expired token: the clock moves past its hour.
        clock.advance(Duration::from_secs(3601));
        let (status, p) = get(&feed("ana"), &ana).await;
        assert_eq!(status, 401, "{p}");
        let refused = sse_connect(&format!("{}/stream?token={ana}", feed("ana")), &[]).await;
        assert_eq!(refused.err().map(|e| e.0), Some(401));
        // Globex's ana never read hers: past the hour, the reminder.
        let o = wait_until(&ch, &globex, &other, PATIENCE, ended).await;
        assert_eq!(
            o.events
                .iter()
                .filter(|e| e.event_type == "clarion.notification.dispatch_requested.v1")
                .count(),
            2,
            "the reminder: {o:?}"
        );
    }
}

/// A token reaches its own feed only: not another subscriber's, not
/// another tenant's.
async fn isolation(ch: &Channel, base: &str, acme: &str, ana: &str, bob: &str, globex_ana: &str) {
    for (who, sub) in [(ana, "bob"), (bob, "ana")] {
        for path in ["", "/counts"] {
            let (status, p) = get(&format!("{base}/v1/subscribers/{sub}/inbox{path}"), who).await;
            assert_eq!(status, 404, "{sub}{path}: {p}");
        }
        let (status, _, body) = http_call(
            "POST",
            &format!("{base}/v1/subscribers/{sub}/inbox/mark"),
            who,
            r#"{"all":true,"mark":"read"}"#,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        let refused = sse_connect(
            &format!("{base}/v1/subscribers/{sub}/inbox/stream?token={who}"),
            &[],
        )
        .await;
        assert_eq!(refused.err().map(|e| e.0), Some(404));
    }
    // Bob's feed is untouched by ana's attempts (and has nothing).
    let (_, bobs) = get(&format!("{base}/v1/subscribers/bob/inbox"), bob).await;
    assert_eq!(bobs["items"], serde_json::json!([]));
    // Globex's ana token reads globex's ana only, never acme's.
    let (_, g) = get(&format!("{base}/v1/subscribers/ana/inbox"), globex_ana).await;
    assert!(!g.to_string().contains("ACME-ONLY"), "{g}");
    // gRPC: the token on another subscriber's feed, and on calls it has
    // no business with.
    let denied = Inbox::new(ch.clone())
        .get_counts(authed(
            ana,
            api::GetInboxCountsRequest {
                subscriber_id: "bob".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::NotFound, "{denied:?}");
    let denied = Inbox::new(ch.clone())
        .watch(authed(
            ana,
            api::WatchInboxRequest {
                subscriber_id: "bob".into(),
                after_version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::NotFound, "{denied:?}");
    let refused = Notifications::new(ch.clone())
        .trigger(authed(ana, api::TriggerRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // An API key never goes in the query (URLs end up in logs).
    let refused = sse_connect(
        &format!("{base}/v1/subscribers/ana/inbox/stream?token={acme}"),
        &[],
    )
    .await;
    assert_eq!(refused.err().map(|e| e.0), Some(401));
}

/// Bad input: a problem (REST) or INVALID_ARGUMENT (gRPC) naming the field.
async fn bad_input(ch: &Channel, base: &str, acme: &str, ana: &str) {
    let feed = format!("{base}/v1/subscribers/ana/inbox");
    let mark = |body: &'static str| {
        let url = format!("{feed}/mark");
        async move { http_call("POST", &url, ana, body).await }
    };
    for (body, want) in [
        (r#"{"all":true,"mark":"snoozed"}"#, "mark"),
        (r#"{"mark":"read"}"#, "item_ids"),
        (r#"{"all":true,"item_ids":["x"],"mark":"read"}"#, "all"),
        (
            r#"{"item_ids":["no-such-item"],"mark":"read"}"#,
            "item_ids[0]",
        ),
        (
            r#"{"item_ids":["x"],"category":"jobs","mark":"read"}"#,
            "category",
        ),
        (r#"{"all":true,"mark":"read","colour":"red"}"#, "colour"),
    ] {
        let (status, head, text) = mark(body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(head.contains("application/problem+json"), "{head}");
        assert_eq!(field(&json_of(&text)), want, "{body}: {text}");
    }
    for (query, want) in [
        ("status=snoozed", "status"),
        ("limit=0", "limit"),
        ("cursor=bm9wZQ", "cursor"),
        ("archived=maybe", "archived"),
    ] {
        let (status, p) = get(&format!("{feed}?{query}"), ana).await;
        assert_eq!(status, 400, "{query}: {p}");
        assert_eq!(field(&p), want, "{query}: {p}");
    }
    let refused = sse_connect(
        &format!("{feed}/stream"),
        &[
            ("authorization", &format!("Bearer {ana}")),
            ("last-event-id", "seven"),
        ],
    )
    .await;
    let (status, body) = refused.err().expect("refused");
    assert_eq!(status, 400);
    assert_eq!(field(&json_of(&body)), "Last-Event-ID");
    // A forged token (its signature changed) and an unknown subscriber.
    let (head, _) = ana.rsplit_once('.').unwrap();
    let forged = format!("{head}.AAAA{}", &ana[ana.len() - 8..]);
    let (status, p) = get(&feed, &forged).await;
    assert_eq!(status, 401, "{p}");
    let (status, p) = get(&format!("{base}/v1/subscribers/nobody/inbox"), acme).await;
    assert_eq!(status, 404, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("nobody"), "{p}");
    let bad = Inbox::new(ch.clone())
        .list_items(authed(
            acme,
            api::ListInboxItemsRequest {
                subscriber_id: "ana".into(),
                status: "snoozed".into(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    use tonic_types::StatusExt;
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["status"], "{bad:?}");
    let bad = Inbox::new(ch.clone())
        .list_items(authed(
            acme,
            api::ListInboxItemsRequest {
                subscriber_id: "ana".into(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["page_size"], "{bad:?}");
}

/// Every inbox row of a subscriber's feed.
async fn dump(store: &dyn Store, tenant: &str, sub: &str) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    for part in [
        Part::Items,
        Part::Ids,
        Part::Unread,
        Part::Unseen,
        Part::Read,
        Part::Archived,
        Part::Category("jobs".into()),
        Part::Category("approvals".into()),
    ] {
        let pk = rows::pk(sub, part.clone());
        for (ck, v) in store
            .scan(&Scan::partition(Table::InboxItems, tenant, &pk, 100_000))
            .await
            .unwrap()
        {
            out.insert((pk.clone(), ck), v.to_vec());
        }
    }
    if let Some(v) = store.get(&rows::counts_key(tenant, sub)).await.unwrap() {
        out.insert(("counts".into(), Vec::new()), v.to_vec());
    }
    out
}

/// The feeds projected afresh from offset 0 of the log into an empty store
/// equal the live ones.
async fn rebuilt_from_the_log_is_the_same(run: &Running, feeds: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let fresh: Arc<dyn Store> = Arc::new(
        clarion_store::embedded::SqliteStore::open(dir.path().join("store.db").to_str().unwrap())
            .unwrap(),
    );
    let node = &run.node;
    // The live projection first catches up with the log.
    let name = node.topics.name(Topic::Deliveries);
    let deadline = Instant::now() + PATIENCE;
    for p in 0..node.topics.partitions_of(Topic::Deliveries) {
        let end = node.log.end_offset(&name, p).await.unwrap();
        while clarion_runtime::runner::stored_offset(&*node.store, "inbox", &name, p)
            .await
            .unwrap()
            < end
        {
            assert!(Instant::now() < deadline, "the inbox projector lags");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let hub = Arc::new(InboxHub::default());
    for p in 0..node.topics.partitions_of(Topic::Deliveries) {
        let mut r = PartitionRunner::new(
            InboxProjector::default(),
            Arc::new(HubEffects(hub.clone())),
            node.log.clone(),
            fresh.clone(),
            node.topics.clone(),
            Topic::Deliveries,
            p,
            node.clock.clone(),
            RunnerConfig::default(),
        );
        r.start().await.unwrap();
        let recs = node
            .log
            .read(&node.topics.name(Topic::Deliveries), p, 0, 1_000_000)
            .await
            .unwrap();
        r.step(recs).await.unwrap();
    }
    for (tenant, sub) in feeds {
        let live = dump(&*node.store, tenant, sub).await;
        assert!(!live.is_empty(), "{tenant}/{sub} has a feed");
        assert_eq!(live, dump(&*fresh, tenant, sub).await, "{tenant}/{sub}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_inbox_with_the_in_process_hub() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::embedded(test_config(dir.path()), false).await;
    assert!(run.node.inbox_hub.attached());
    scenario(&run).await;
    rebuilt_from_the_log_is_the_same(&run, &[("acme", "ana"), ("globex", "ana")]).await;
    // An open stream does not hold the shutdown up: it ends.
    let ch = channel(run.grpc).await;
    let key = create_tenant(&ch, "initech").await;
    Subscribers::new(ch.clone())
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: "ana".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let mut open = Inbox::new(ch.clone())
        .watch(authed(
            &key,
            api::WatchInboxRequest {
                subscriber_id: "ana".into(),
                after_version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(open.message().await.unwrap().unwrap().counts.is_some());
    tokio::time::timeout(PATIENCE, run.stop())
        .await
        .expect("stops with a stream open");
    let ended = tokio::time::timeout(PATIENCE, open.message()).await;
    assert!(matches!(ended, Ok(Ok(None)) | Ok(Err(_))), "{ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_inbox_with_a_gateway_that_polls() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::embedded(test_config(dir.path()), true).await;
    scenario(&run).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_inbox() {
    if std::env::var("CLARION_SKIP_KAFKA").as_deref() == Ok("1") {
        eprintln!("SKIPPED: CLARION_SKIP_KAFKA=1, Kafka inbox scenario not run");
        return;
    }
    let brokers =
        std::env::var("CLARION_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.url = crate::support::kafka_url(&brokers);
    cfg.log.topic_prefix = format!("inbox-{}.", uuid::Uuid::new_v4().simple());
    cfg.log.partitions = 2;
    let run = Running::separate(cfg).await;
    scenario(&run).await;
    rebuilt_from_the_log_is_the_same(&run, &[("acme", "ana"), ("globex", "ana")]).await;
    run.stop().await;
}
