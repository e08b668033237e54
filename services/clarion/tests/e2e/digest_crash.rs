//! Digests survive `kill -9` (issue #33): a real `clarion serve` process is
//! killed while a digest is open and while triggers are still arriving
//! concurrently, restarted on the same data directory, given more triggers,
//! then the digest is flushed: exactly one email arrives, with every
//! accepted trigger's item once, for each of two tenants; no second digest.

use crate::support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clarion_proto::api;
use support::*;
use tonic::transport::Channel;

const DIGEST: &str = r#"
id: digest-mail
trigger: { event: project.updated }
steps:
  - { id: collect, type: digest, key: payload.project, window: 1h }
  - { id: mail, type: send, channel: email, template: digest-mail, provider: smtp }
"#;

struct Server {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

fn spawn_server(config: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("CLARION_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn clarion serve");
    let out = child.stdout.take().unwrap();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let lines = stdout.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(l);
        }
    });
    Server { child, stdout }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.trim_start().starts_with(prefix))
            {
                return l.trim_start()[prefix.len()..].trim().to_string();
            }
            assert!(Instant::now() < deadline, "server never printed {prefix:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown hooks, no flush.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    async fn listening(&mut self, addr: std::net::SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen");
            let exited = self.child.try_wait().unwrap();
            assert!(exited.is_none(), "the server exited: {exited:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn trigger(ch: &Channel, key: &str, n: u32) -> Option<String> {
    let r = Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "digest-mail".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: "sub-7".into(),
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"project":"apollo","n":{n}}}"#),
                ..Default::default()
            },
        ))
        .await
        .ok()?;
    r.into_inner().notification_ids.into_iter().next()
}

async fn setup(ch: &Channel, key: &str, tenant: &str) {
    Tenants::new(ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: "digest-mail".into(),
                channel: "email".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: format!("{tenant} digest"),
                    body: "{{ digest.count }}:{% for i in digest.items %} #{{ i.n }}{% endfor %}"
                        .into(),
                }],
            },
        ))
        .await
        .expect("template");
    apply_workflows(ch, key, &[DIGEST]).await;
    Subscribers::new(ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: "sub-7".into(),
                email: format!("sub-7@{tenant}.test"),
                ..Default::default()
            },
        ))
        .await
        .expect("subscriber");
}

/// Triggers `from..` concurrently from two tasks until `stop` is set; the
/// accepted item numbers, and all tried (one in flight at the kill may be
/// in without its answer).
type Tried = (Vec<u32>, Vec<u32>);

fn stream(
    ch: Channel,
    key: String,
    from: u32,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinSet<Tried> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..2u32 {
        let (ch, key, stop) = (ch.clone(), key.clone(), stop.clone());
        tasks.spawn(async move {
            let (mut accepted, mut tried) = (Vec::new(), Vec::new());
            let mut n = from + t;
            while !*stop.lock().unwrap() {
                tried.push(n);
                if trigger(&ch, &key, n).await.is_some() {
                    accepted.push(n);
                }
                n += 2;
            }
            (accepted, tried)
        });
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_while_a_digest_is_open_loses_no_item_and_sends_it_once() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (grpc_port, http_port) = (free_port(), free_port());
    let config = dir.path().join("clarion.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {data:?}\n[grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [runtime]\npoll-wait-ms = 20\nmax-batch = 16\n\
             [providers.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nfrom = \"Clarion <noreply@clarion.test>\"\nmessage-id-domain = \"clarion.test\"\n",
            data = dir.path().join("data").display().to_string(),
            smtp = smtp.port,
        ),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    let mut server = spawn_server(&config);
    let admin = server.wait_line("admin token:");
    server.listening(addr).await;
    let ch = channel(addr).await;
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        let key = create_tenant_with(&ch, &admin, tenant).await;
        setup(&ch, &key, tenant).await;
        keys.push(key);
    }
    // Open digests: a few triggers each, all in before the crash.
    let mut accepted: Vec<HashSet<u32>> = vec![HashSet::new(), HashSet::new()];
    let mut tried: HashSet<u32> = HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        for n in 0..5 {
            let id = trigger(&ch, key, n).await.expect("accepted");
            wait_until(&ch, key, &id, Duration::from_secs(30), |_| true).await;
            accepted[i].insert(n);
        }
    }
    // kill -9 while acme's triggers are still arriving.
    let stop = Arc::new(Mutex::new(false));
    let mut tasks = stream(ch.clone(), keys[0].clone(), 100, stop.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill9();
    *stop.lock().unwrap() = true;
    while let Some(r) = tasks.join_next().await {
        let (ok, all) = r.unwrap();
        accepted[0].extend(ok);
        tried.extend(all);
    }
    let mut server = spawn_server(&config);
    server.listening(addr).await;
    let ch = channel(addr).await;
    // More triggers after the restart, then the flush.
    for (i, key) in keys.iter().enumerate() {
        for n in 1000..1004 {
            trigger(&ch, key, n).await.expect("accepted after restart");
            accepted[i].insert(n);
        }
    }
    for (i, (key, tenant)) in keys.iter().zip(["acme", "globex"]).enumerate() {
        let url = format!("http://127.0.0.1:{http_port}/v1/subscribers/sub-7/digests/flush");
        let (status, _, body) = http_call(
            "POST",
            &url,
            key,
            r#"{"workflow_id":"digest-mail","digest_key":"apollo"}"#,
        )
        .await;
        assert_eq!(status, 204, "{body}");
        let to = format!("sub-7@{tenant}.test");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mail = loop {
            let mails: Vec<Mail> = smtp
                .messages()
                .into_iter()
                .filter(|m| m.to.contains(&to))
                .collect();
            if !mails.is_empty() {
                assert_eq!(mails.len(), 1, "one digest for {tenant}: {mails:?}");
                break mails[0].clone();
            }
            assert!(Instant::now() < deadline, "no digest for {tenant}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let items: Vec<u32> = mail
            .body
            .split(" #")
            .skip(1)
            .map(|n| n.trim().parse().expect("an item number"))
            .collect();
        let distinct: HashSet<u32> = items.iter().copied().collect();
        assert_eq!(items.len(), distinct.len(), "an item twice: {}", mail.body);
        // Every accepted trigger is in; so may be one whose answer the
        // crash cut off, and nothing else.
        let missing: Vec<&u32> = accepted[i].difference(&distinct).collect();
        assert!(
            missing.is_empty(),
            "{tenant} lost {missing:?}: {}",
            mail.body
        );
        let extra: Vec<&u32> = distinct
            .difference(&accepted[i])
            .filter(|n| !tried.contains(n))
            .collect();
        assert!(extra.is_empty(), "{tenant}: items nobody sent {extra:?}");
        assert!(
            mail.body.starts_with(&format!("{}:", items.len())),
            "{}",
            mail.body
        );
    }
    assert!(
        accepted[0].len() > 12,
        "the stream was too thin: {:?}",
        accepted[0]
    );
    eprintln!(
        "digest crash test: {} + {} items accepted, {} tried during the kill",
        accepted[0].len(),
        accepted[1].len(),
        tried.len()
    );
    // A later flush finds nothing: still one email per tenant.
    let url = format!("http://127.0.0.1:{http_port}/v1/subscribers/sub-7/digests/flush");
    let (status, _, _) =
        http_call("POST", &url, &keys[0], r#"{"workflow_id":"digest-mail"}"#).await;
    assert_eq!(status, 204);
    let last = trigger(&ch, &keys[1], 5000).await.expect("accepted");
    wait_until(&ch, &keys[1], &last, Duration::from_secs(30), |_| true).await;
    assert_eq!(smtp.messages().len(), 2, "{:?}", smtp.messages());
    server.kill9();
}
