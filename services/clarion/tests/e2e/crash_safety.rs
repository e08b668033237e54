//! Crash safety: `kill -9` the real `clarion serve` process several times while
//! a stream of triggers flows, restart it on the same data directory, and check:
//! no accepted notification is lost; the sink (which commits with the
//! processor) recorded each exactly once; the SMTP server received each email
//! at least once, and repeats carry the same Message-ID and idempotency key.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clarion_log::EventLog;
use clarion_proto::api;
use support::*;

struct Server {
    child: Child,
    /// Lines printed on stdout (the demo key appears on first start).
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
    // A failing assertion must not leave a server running after the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
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

    fn kill9(mut self) {
        // SIGKILL: no shutdown hooks, no flush; exactly what a crash is.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn trigger(
    client: &mut Notifications,
    key: &str,
    workflow: &str,
    sub: &str,
) -> Option<String> {
    let r = client
        .trigger(authed(
            key,
            api::TriggerRequest {
                event: String::new(),
                workflow_id: workflow.into(),
                recipients: vec![api::Recipient {
                    subscriber_id: sub.into(),
                    email: format!("{sub}@example.test"),
                    ..Default::default()
                }],
                payload_json: r#"{"day":"today"}"#.into(),
                idempotency_key: String::new(),
                ..Default::default()
            },
        ))
        .await
        .ok()?;
    r.into_inner().notification_ids.into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_nothing_and_sends_no_silent_duplicates() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = free_port();
    let config = dir.path().join("clarion.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {data:?}\n[grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n\
             [runtime]\npoll-wait-ms = 20\nmax-batch = 64\n\
             [providers.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nfrom = \"Clarion <noreply@clarion.test>\"\nmessage-id-domain = \"clarion.test\"\n",
            data = dir.path().join("data").display().to_string(),
            http = free_port(),
            smtp = smtp.port,
        ),
    )
    .unwrap();

    let server = spawn_server(&config);
    let key = server.wait_line("demo API key:", Duration::from_secs(60));
    let addr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    // The key is printed by the bootstrap, before the gRPC listener is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ch = channel(addr).await;
    appointment_workflow(&ch, &key, "by-mail", "smtp").await;
    appointment_workflow(&ch, &key, "to-sink", "sink").await;

    let mut accepted: HashMap<String, &'static str> = HashMap::new();
    let mut server = Some(server);
    let crashes = 4;
    let mut seq = 0u32;
    for round in 0..=crashes {
        // Send for a while; the server processes concurrently.
        let until = Instant::now() + Duration::from_millis(700 + 150 * round as u64);
        let mut client = Notifications::new(channel(addr).await);
        while Instant::now() < until {
            seq += 1;
            let (wf, kind) = if seq.is_multiple_of(2) {
                ("by-mail", "smtp")
            } else {
                ("to-sink", "sink")
            };
            if let Some(id) = trigger(&mut client, &key, wf, &format!("sub-{seq}")).await {
                accepted.insert(id, kind);
            }
        }
        // The server must have stayed up on its own: only our kills stop it.
        let died = server.as_mut().unwrap().child.try_wait().unwrap();
        assert!(
            died.is_none(),
            "the server exited by itself in round {round}: {died:?}"
        );
        if round < crashes {
            server.take().unwrap().kill9();
            server = Some(spawn_server(&config));
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "restart {round} did not listen");
                let exited = server.as_mut().unwrap().child.try_wait().unwrap();
                assert!(exited.is_none(), "restart {round} exited: {exited:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let sink_ids: Vec<&String> = accepted
        .iter()
        .filter(|(_, k)| **k == "sink")
        .map(|(id, _)| id)
        .collect();
    let mail_ids: Vec<&String> = accepted
        .iter()
        .filter(|(_, k)| **k == "smtp")
        .map(|(id, _)| id)
        .collect();
    assert!(
        sink_ids.len() > 20 && mail_ids.len() > 20,
        "the stream was too thin to mean anything: {} sink, {} mail",
        sink_ids.len(),
        mail_ids.len()
    );

    // Every accepted email reaches the SMTP server.
    let expected_mids: HashSet<String> = mail_ids
        .iter()
        .map(|id| {
            format!(
                "<{}@clarion.test>",
                clarion_domain::router::attempt_id(id, 0, 0)
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mails = loop {
        let mails = smtp.messages();
        let got: HashSet<&String> = mails.iter().map(|m| &m.message_id).collect();
        if expected_mids.iter().all(|m| got.contains(m)) || Instant::now() > deadline {
            break mails;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut per_mid: HashMap<&str, Vec<&Mail>> = HashMap::new();
    for m in &mails {
        per_mid.entry(m.message_id.as_str()).or_default().push(m);
    }
    let missing: Vec<&String> = expected_mids
        .iter()
        .filter(|m| !per_mid.contains_key(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted emails never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let unexpected: Vec<&&str> = per_mid
        .keys()
        .filter(|m| !expected_mids.contains(**m))
        .collect();
    assert!(
        unexpected.is_empty(),
        "emails nobody triggered: {unexpected:?}"
    );
    let mut repeats = 0;
    for (mid, copies) in &per_mid {
        let keys: HashSet<&str> = copies.iter().map(|m| m.idempotency_key.as_str()).collect();
        assert_eq!(
            keys.len(),
            1,
            "copies of {mid} disagree on the idempotency key"
        );
        assert!(mid.contains(copies[0].idempotency_key.as_str()));
        repeats += copies.len() - 1;
    }
    // At most the in-flight batch (max-batch = 64) of each dispatcher
    // partition may repeat per crash.
    let partitions = clarion::config::Config::default().log.partitions as usize;
    assert!(
        repeats <= crashes * partitions * 64,
        "{repeats} repeated emails for {crashes} crashes"
    );

    // Every accepted sink notification was recorded exactly once.
    let store = clarion_store::embedded::SqliteStore::open(
        dir.path().join("data/clarion.db").to_str().unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut counts = Vec::new();
        for id in &sink_ids {
            counts.push(
                clarion_dispatch::dispatcher::sink_deliveries(&store, "demo", id)
                    .await
                    .unwrap()
                    .len(),
            );
        }
        if counts.iter().all(|c| *c >= 1) || Instant::now() > deadline {
            let lost = counts.iter().filter(|c| **c == 0).count();
            let doubled = counts.iter().filter(|c| **c > 1).count();
            assert_eq!(lost, 0, "{lost} accepted sink notifications were lost");
            assert_eq!(
                doubled, 0,
                "{doubled} sink notifications were recorded more than once"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And no dispatch request is in the log twice, whatever the crashes: the
    // routers append them in their commits, which is why the dispatcher
    // keeps no dedup rows on this layout.
    let log = clarion_log::embedded::SqliteLog::open(
        dir.path().join("data/clarion.db").to_str().unwrap(),
    )
    .unwrap();
    let mut requests = 0;
    let mut ids = HashSet::new();
    for p in 0..log.partitions("clarion.dispatch").await.unwrap() {
        let mut from = 0;
        loop {
            let recs = log.read("clarion.dispatch", p, from, 1000).await.unwrap();
            let Some(last) = recs.last() else { break };
            from = last.offset + 1;
            for r in recs {
                let e = clarion_domain::Event::decode_bytes(r.value).unwrap();
                requests += 1;
                assert!(
                    ids.insert(e.id),
                    "dispatch request {:?} appended twice",
                    e.id
                );
            }
        }
    }
    assert!(requests >= sink_ids.len() + mail_ids.len());
    eprintln!(
        "crash test: {} accepted ({} sink, {} mail), {crashes} kill -9, {repeats} repeated emails",
        accepted.len(),
        sink_ids.len(),
        mail_ids.len()
    );
    server.take().unwrap().kill9();
}
