//! The console's test harness (issue #29): every role in-process on a
//! manual clock, the HTTP routes (REST and `/console`) on a port, two
//! tenants with admin-scoped keys, and a cookie-keeping HTTP client that
//! fills in the CSRF token of the last page it saw.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clarion::{Config, Node, Role};
use clarion_runtime::ManualClock;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{channel, create_tenant, free_port, test_config, ADMIN_TOKEN};

/// A running node with the console.
pub struct ConsoleNode {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub node: Node,
    pub clock: ManualClock,
    pub ch: Channel,
    /// Tenant "acme" and its key (every scope).
    pub key_a: String,
    /// Tenant "globex" and its key (every scope).
    pub key_b: String,
    _dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

pub const TENANT_A: &str = "acme";
pub const TENANT_B: &str = "globex";

impl ConsoleNode {
    /// Starts on a fresh data dir; `configure` adjusts the config first
    /// (providers, thresholds).
    pub async fn start(configure: impl FnOnce(&mut Config)) -> ConsoleNode {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        configure(&mut cfg);
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
        // Analytics feeds the Dashboards page; retention the Compliance
        // page's holds (the gateway waits for it after a hold's event).
        for role in [
            Role::Projector,
            Role::Router,
            Role::Dispatcher,
            Role::Analytics,
            Role::Retention,
        ] {
            node.spawn_role(role, &mut tasks, None, &rx).await.unwrap();
        }
        let admin = Some(clarion_domain::tenant::sha256_hex(ADMIN_TOKEN.as_bytes()));
        node.spawn_role(Role::Gateway, &mut tasks, admin.clone(), &rx)
            .await
            .unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let routes = node.tracking_routes_with_admin(admin).await.unwrap();
        let listener = tokio::net::TcpListener::bind(http).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        let grpc = cfg.grpc.listen;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(grpc).is_err() {
            assert!(std::time::Instant::now() < deadline, "gRPC did not start");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let ch = channel(grpc).await;
        let key_a = create_tenant(&ch, TENANT_A).await;
        let key_b = create_tenant(&ch, TENANT_B).await;
        ConsoleNode {
            grpc,
            http,
            node,
            clock,
            ch,
            key_a,
            key_b,
            _dir: dir,
            shutdown,
            tasks,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// A client that has not signed in.
    pub fn client(&self) -> Client {
        Client::new(&self.base())
    }

    /// A client signed in with `credential` (an API key or [`ADMIN_TOKEN`]).
    pub async fn signed_in(&self, credential: &str) -> Client {
        let mut c = self.client();
        let page = c.sign_in(credential).await;
        assert_eq!(page.status, 303, "sign-in: {}", page.body);
        c
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("role task panicked").expect("role failed");
        }
    }
}

/// One answer.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    }
}

/// A cookie-keeping client that does not follow redirects.
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub cookies: HashMap<String, String>,
    /// The `_csrf` of the last page that had one.
    pub csrf: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: HashMap::new(),
            csrf: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, res: reqwest::Response) -> Page {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (name, rest) = c.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap_or_default();
            if value.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let body = res.text().await.unwrap();
        if let Some(t) = csrf_in(&body) {
            self.csrf = Some(t);
        }
        Page {
            status,
            headers,
            body,
        }
    }

    /// GET a console path (e.g. `/console/dead-letters`).
    pub async fn get(&mut self, path: &str) -> Page {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(res).await
    }

    /// POST a form with the last CSRF token seen (`_csrf` added unless
    /// `fields` has one).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.iter().any(|(k, _)| *k == "_csrf") {
            if let Some(t) = &self.csrf {
                form.push(("_csrf".into(), t.clone()));
            }
        }
        self.post_raw(path, &form).await
    }

    /// POST exactly these fields.
    pub async fn post_raw(&mut self, path: &str, form: &[(String, String)]) -> Page {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(res).await
    }

    /// Signs in through the form (GET for its token, then POST).
    pub async fn sign_in(&mut self, credential: &str) -> Page {
        self.get("/console/sign-in").await;
        self.post(
            "/console/sign-in",
            &[("credential", credential), ("next", "/console")],
        )
        .await
    }
}

/// The `_csrf` hidden field's value in a page.
pub fn csrf_in(body: &str) -> Option<String> {
    let at = body.find("name=\"_csrf\" value=\"")?;
    let rest = &body[at + "name=\"_csrf\" value=\"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}
