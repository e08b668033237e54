//! The console's Notifications pages at scale (scripts/bench-console.sh):
//!
//! * seeds `--notifications` notifications of one tenant straight into the
//!   embedded store of a data dir on disk, as the router writes them: a row
//!   each in the notification index (its UTC day) and in its subscriber's
//!   list, spread over `--days` days, several workflows, statuses and
//!   subscribers; the notifications the detail page opens also get a
//!   realistic history in the log (triggered, routed, the rendered message,
//!   sent, delivered, ended), appended with its index as the gateway and
//!   the router append it;
//! * serves the real HTTP routes (REST and `/console`, built by
//!   `clarion_console::routes` through the node) on loopback, signs in with
//!   the tenant's API key, and times each request from the client: the
//!   search page under several filters (the newest, a status, a rare
//!   status and workflow that scans its whole budget, a subscriber, an id,
//!   one day, following cursors) and the detail page;
//! * the bytes of a first load (sign-in page, CSS, JS, a search page),
//!   uncompressed, headers included.
//!
//! Prints one JSON line per measure.
//!
//! ```text
//! consolebench --data-dir /tmp/c --notifications 1000000 --days 30
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use clarion::{Config, Node, Role};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::Record;
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::notification_index::{self, Entry, Status};
use clarion_runtime::{subscriber_index, ManualClock, Topic};
use clarion_store::WriteBatch;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ADMIN_TOKEN: &str = "adm_consolebench_token";
const TENANT: &str = "bench";
const DAY: i64 = 86_400_000;
/// 2027-03-01 12:00 UTC: the end of the seeded range, and the clock.
const NOW: i64 = 1_803_988_800_000;
const WORKFLOWS: [&str; 6] = [
    "welcome",
    "password-reset",
    "order-shipped",
    "invoice",
    "weekly-digest",
    "security-alert",
];

#[derive(Parser, Debug)]
#[command(about = "The console's search and detail pages over 1M notifications")]
struct Cli {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    notifications: u64,
    #[arg(long, default_value_t = 30)]
    days: i64,
    #[arg(long, default_value_t = 50_000)]
    subscribers: u64,
    /// Timed requests per measure.
    #[arg(long, default_value_t = 200)]
    requests: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir)?;
    let mut cfg = Config::load(None).expect("default config");
    cfg.data_dir = cli.data_dir.clone();
    cfg.grpc.listen = format!("127.0.0.1:{}", free_port()).parse()?;
    let node = Node::open(cfg.clone())
        .await?
        .with_clock(Arc::new(ManualClock::new(NOW)));
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
    node.spawn_role(Role::Projector, &mut tasks, None, &rx)
        .await?;
    node.spawn_role(Role::Gateway, &mut tasks, admin.clone(), &rx)
        .await?;
    let key = create_tenant(cfg.grpc.listen).await?;

    let seeded = Instant::now();
    let opened = seed(&node, &cli).await?;
    println!(
        "{}",
        json!({"phase": "seed", "notifications": cli.notifications, "days": cli.days,
               "subscribers": cli.subscribers, "histories": opened.len(),
               "secs": seeded.elapsed().as_secs_f64()})
    );

    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let routes = node.tracking_routes_with_admin(admin).await?;
    let listener = tokio::net::TcpListener::bind(http).await?;
    tokio::spawn(async move { axum::serve(listener, routes).await });
    let mut c = Client::new(&format!("http://{http}"));
    first_load(&mut c, &key).await;
    measure(&mut c, &cli, &opened).await;

    let _ = shutdown.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn create_tenant(grpc: std::net::SocketAddr) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ch = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
            .connect()
            .await
        {
            Ok(ch) => break ch,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut req = tonic::Request::new(api::CreateTenantRequest {
        tenant_id: TENANT.into(),
        name: "Console bench".into(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse()?);
    let answer = api::tenant_service_client::TenantServiceClient::new(ch)
        .create_tenant(req)
        .await?;
    Ok(answer.into_inner().api_key)
}

/// What a seeded notification is: its id, workflow, subscriber, status.
struct Seeded {
    id: Id,
    workflow: &'static str,
    subscriber: String,
    status: Status,
}

/// A realistic mix of statuses: mostly delivered.
fn status(r: u32) -> Status {
    match r % 1000 {
        0..=799 => Status::Delivered,
        800..=879 => Status::Sent,
        880..=899 => Status::Failed,
        900..=904 => Status::DeadLettered,
        905..=944 => Status::Suppressed,
        945..=974 => Status::Running,
        975..=984 => Status::Completed,
        985..=994 => Status::Scheduled,
        995..=997 => Status::Cancelled,
        _ => Status::Retrying,
    }
}

/// Writes the index rows in batches (oldest first, as the router would);
/// returns the notifications to open on the detail page, with a history.
async fn seed(node: &Node, cli: &Cli) -> anyhow::Result<Vec<Seeded>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let start = NOW - cli.days * DAY;
    let step = (cli.days * DAY) as f64 / cli.notifications as f64;
    let mut batch = WriteBatch::new();
    let mut opened = Vec::new();
    for n in 0..cli.notifications {
        let at = start + (n as f64 * step) as i64;
        let s = Seeded {
            id: Id::time_ordered(at, &[b"consolebench", &n.to_le_bytes()]),
            workflow: WORKFLOWS[rng.gen_range(0..WORKFLOWS.len())],
            subscriber: format!("sub-{:06}", rng.gen_range(0..cli.subscribers)),
            status: status(rng.gen()),
        };
        let hex = s.id.to_hex();
        let entry = Entry::new(s.workflow, &s.subscriber, s.status, at + 2_000);
        batch.put(
            notification_index::row(TENANT, &hex).expect("hex"),
            Bytes::from(entry.encode()),
        );
        let listed = subscriber_index::Entry {
            workflow_id: s.workflow.to_string(),
        };
        batch.put(
            subscriber_index::row(TENANT, &s.subscriber, &hex),
            Bytes::from(listed.encode()),
        );
        if batch.len() >= 50_000 {
            node.store.write(std::mem::take(&mut batch)).await?;
        }
        if n % (cli.notifications / 300).max(1) == 7 {
            opened.push(s);
        }
    }
    node.store.write(batch).await?;
    for chunk in opened.chunks(100) {
        let records: Vec<Record> = chunk.iter().flat_map(history).collect();
        node.log
            .append(&node.topics.name(Topic::Notifications), records)
            .await?;
    }
    Ok(opened)
}

/// A delivered email's history: six events, as the pipeline writes them.
fn history(s: &Seeded) -> Vec<Record> {
    let tenant = TenantId::parse(TENANT).expect("tenant");
    let nid = s.id.to_hex();
    let at = s.id.time_ms();
    let attempt = s.id.child("attempt", 0).to_hex();
    let body = format!(
        "<html><body><h1>Hello {0}</h1><p>{1}</p><p>Your order has shipped. \
         Track it at https://example.test/track/{nid}.</p></body></html>",
        s.subscriber,
        "Thank you for your order. ".repeat(30)
    );
    let payloads = vec![
        Payload::Triggered(pb::NotificationTriggered {
            notification_id: nid.clone(),
            workflow_id: s.workflow.into(),
            subscriber_id: s.subscriber.clone(),
            payload_json: json!({"order": 12345, "items": ["a", "b"]}).to_string(),
            workflow_version: 3,
            ..Default::default()
        }),
        Payload::Routed(pb::NotificationRouted {
            notification_id: nid.clone(),
            workflow_id: s.workflow.into(),
            workflow_version: 3,
            channel: "email".into(),
            template_id: format!("{}-mail", s.workflow),
            template_version: 2,
            locale: "en".into(),
            provider: "smtp".into(),
            ..Default::default()
        }),
        Payload::DispatchRequested(pb::DispatchRequested {
            notification_id: nid.clone(),
            attempt_id: attempt.clone(),
            channel: "email".into(),
            provider: "smtp".into(),
            to: format!("{}@example.test", s.subscriber),
            subject: "Your order has shipped".into(),
            body,
            locale: "en".into(),
            subscriber_id: s.subscriber.clone(),
            step: "mail".into(),
            workflow_id: s.workflow.into(),
            ..Default::default()
        }),
        Payload::Sent(pb::NotificationSent {
            notification_id: nid.clone(),
            attempt_id: attempt.clone(),
            provider: "smtp".into(),
            provider_message_id: format!("<{attempt}@mail.example.test>"),
            context: None,
        }),
        Payload::Delivered(pb::NotificationDelivered {
            notification_id: nid.clone(),
            attempt_id: attempt,
            provider: "smtp".into(),
            context: None,
        }),
        Payload::Ended(pb::RunEnded {
            notification_id: nid.clone(),
            outcome: "completed".into(),
            workflow_id: s.workflow.into(),
            workflow_version: 3,
            subscriber_id: s.subscriber.clone(),
            ..Default::default()
        }),
    ];
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let e = Event {
                id: s.id.child("history", i as u32),
                tenant: tenant.clone(),
                partition_key: clarion_domain::ids::recipient_key(&tenant, &s.subscriber),
                occurred_at_ms: at + 500 * i as i64,
                causation_id: None,
                correlation_id: Some(s.id),
                actor: Actor::System("router".into()),
                payload,
            };
            Record {
                key: e.partition_key.clone(),
                value: Bytes::from(e.encode()),
                index: clarion_runtime::projector::event_history_index(&e),
            }
        })
        .collect()
}

/// A cookie-keeping HTTP client that does not follow redirects.
struct Client {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

/// An answer: status, bytes over the wire (status line, headers, body), body.
struct Answer {
    status: u16,
    wire_bytes: usize,
    body: String,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: base.to_string(),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let res = req.header("cookie", cookie).send().await.expect("answer");
        let status = res.status().as_u16();
        let mut wire_bytes = "HTTP/1.1 200 OK\r\n\r\n".len();
        for (name, value) in res.headers() {
            wire_bytes += name.as_str().len() + value.len() + 4;
            if name == "set-cookie" {
                let c = value.to_str().unwrap_or_default();
                if let Some((n, rest)) = c.split_once('=') {
                    let v = rest.split(';').next().unwrap_or_default();
                    self.cookies.insert(n.to_string(), v.to_string());
                }
            }
        }
        let body = res.text().await.expect("body");
        wire_bytes += body.len();
        Answer {
            status,
            wire_bytes,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }
}

/// The value of `attr="..."` in the tag holding `marker` (the first one).
fn attr_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let rest = &html[html[..at].rfind('<').unwrap_or(at)..];
    let at = rest.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(rest[at..].split('"').next()?.replace("&amp;", "&"))
}

/// The stylesheet and script a page links to.
fn assets_of(html: &str) -> Vec<String> {
    let css = attr_after(html, "rel=\"stylesheet\"", "href");
    let js = html
        .find("<script")
        .and_then(|i| attr_after(&html[i..], "<script", "src"));
    [css, js]
        .into_iter()
        .flatten()
        .map(|a| a.replace("&#x2f;", "/"))
        .collect()
}

/// Signs in, counting the bytes of a first visit: the sign-in page, the
/// search page after signing in, and the CSS and JS they link (each once,
/// as a browser caches them).
async fn first_load(c: &mut Client, key: &str) {
    let page = c.get("/console/sign-in").await;
    let csrf = attr_after(&page.body, "name=\"_csrf\"", "value").expect("a CSRF field");
    let mut bytes = page.wire_bytes;
    let mut assets = assets_of(&page.body);
    let signed = c
        .post(
            "/console/sign-in",
            &[
                ("credential", key),
                ("next", "/console/notifications"),
                ("_csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "sign-in: {}", signed.body);
    bytes += signed.wire_bytes;
    let search = c.get("/console/notifications").await;
    assert_eq!(search.status, 200, "{}", search.body);
    bytes += search.wire_bytes;
    assets.extend(assets_of(&search.body));
    assets.sort();
    assets.dedup();
    let mut asset_bytes = 0;
    for asset in &assets {
        let a = c.get(asset).await;
        assert_eq!(a.status, 200, "{asset}");
        asset_bytes += a.wire_bytes;
    }
    bytes += asset_bytes;
    println!(
        "{}",
        json!({"phase": "first_load", "bytes": bytes, "kib": bytes as f64 / 1024.0,
               "sign_in_page_bytes": page.wire_bytes, "search_page_bytes": search.wire_bytes,
               "asset_bytes": asset_bytes, "assets": assets})
    );
}

/// Times `requests` GETs of each kind and prints p50/p99 (ms).
async fn measure(c: &mut Client, cli: &Cli, opened: &[Seeded]) {
    let day = |d: i64| clarion_domain::time::format_instant(NOW - d * DAY);
    let rare = opened
        .iter()
        .find(|s| s.status == Status::Delivered)
        .expect("a delivered one");
    let mut kinds: Vec<(&str, Vec<String>)> = vec![
        ("search_newest", vec!["/console/notifications".into()]),
        (
            "search_status_dead_lettered",
            vec!["/console/notifications?status=dead_lettered".into()],
        ),
        (
            "search_rare_full_budget",
            vec!["/console/notifications?status=cancelled&workflow=security-alert".into()],
        ),
        (
            "search_subscriber",
            opened
                .iter()
                .map(|s| format!("/console/notifications?subscriber={}", s.subscriber))
                .collect(),
        ),
        (
            "search_id",
            opened
                .iter()
                .map(|s| format!("/console/notifications?id={}", s.id.to_hex()))
                .collect(),
        ),
        (
            "search_one_day_workflow",
            (1..cli.days.min(28))
                .map(|d| {
                    format!(
                        "/console/notifications?workflow=invoice&from={}&to={}",
                        day(d + 1),
                        day(d)
                    )
                })
                .collect(),
        ),
        (
            "detail",
            opened
                .iter()
                .map(|s| format!("/console/notifications/{}", s.id.to_hex()))
                .collect(),
        ),
    ];
    // Deep pages: follow the "Next page" link ten times.
    let mut deep = Vec::new();
    let mut url = format!(
        "/console/notifications?subscriber=&workflow={}",
        rare.workflow
    );
    for _ in 0..10 {
        let page = c.get(&url).await;
        match attr_after(&page.body, "id=\"next-page\"", "href") {
            Some(next) => url = next,
            None => break,
        }
        deep.push(url.clone());
    }
    kinds.push(("search_next_pages", deep));
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for (kind, urls) in &kinds {
        if urls.is_empty() {
            continue;
        }
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        // One untimed pass warms the caches as a running server's are.
        c.get(&urls[0]).await;
        let mut scanned_note = String::new();
        for i in 0..cli.requests {
            let url = &urls[i % urls.len()];
            let t = Instant::now();
            let a = c.get(url).await;
            let us = t.elapsed().as_micros() as u64;
            assert_eq!(
                a.status,
                200,
                "{url}: {}",
                &a.body[..a.body.len().min(2000)]
            );
            h.record(us).expect("in range");
            if kind.starts_with("search") {
                all.record(us).expect("in range");
            }
            if i == 0 {
                scanned_note = note(&a.body);
            }
        }
        println!(
            "{}",
            json!({"phase": "page", "kind": kind, "requests": h.len(),
                   "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
                   "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
                   "max_ms": h.max() as f64 / 1000.0, "note": scanned_note})
        );
    }
    println!(
        "{}",
        json!({"phase": "page", "kind": "search_all_kinds", "requests": all.len(),
               "p50_ms": all.value_at_quantile(0.5) as f64 / 1000.0,
               "p99_ms": all.value_at_quantile(0.99) as f64 / 1000.0})
    );
}

/// The page's scanned-range note, as text.
fn note(html: &str) -> String {
    let Some(at) = html.find("id=\"scanned\">") else {
        return String::new();
    };
    let rest = &html[at + 13..];
    let text = rest.split("</p>").next().unwrap_or_default();
    let mut out = String::new();
    let mut in_tag = false;
    for ch in text.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}
