//! The webhook provider against a real HTTP server and a real SQLite store,
//! on a manual clock: per-tenant signatures, a rotation's overlap ending,
//! timeouts and the per-destination bound. (End to end through the gateway
//! and the processors: `services/clarion/tests/e2e/webhook.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clarion_dispatch::secrets::Keyring;
use clarion_dispatch::ssrf::OutboundConfig;
use clarion_dispatch::tenant_secrets::{self, TenantSecrets};
use clarion_dispatch::webhook::{verify, WebhookConfig, WebhookProvider, SIGNATURE_HEADER};
use clarion_dispatch::Provider;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::projector::Projector;
use clarion_runtime::{Batch, Clock, Input, ManualClock, Processor};
use clarion_store::Store;

const T0: i64 = 1_800_000_000_000;

type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

/// `/ok` answers 200 and records (signature, body); `/hang` never answers.
async fn server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            post(move |h: HeaderMap, body: Bytes| async move {
                let sig = h[SIGNATURE_HEADER].to_str().unwrap().to_string();
                s.lock().unwrap().push((sig, body));
                StatusCode::OK
            }),
        )
        .route(
            "/hang",
            post(|| async {
                std::future::pending::<()>().await;
                StatusCode::OK
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (base, seen)
}

struct World {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = clarion_store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        World {
            store,
            keyring: Arc::new(Keyring::new("k1", &[("k1", [9; 32])]).unwrap()),
            clock: Arc::new(ManualClock::new(T0)),
            _dir: dir,
        }
    }

    /// Rotates `tenant`'s secret as the gateway does, projected by the real
    /// projector; returns the new secret.
    async fn rotate(&self, tenant: &str, overlap: Duration) -> String {
        let current = tenant_secrets::latest(&*self.store, tenant).await.unwrap();
        let secret = tenant_secrets::generate();
        let ev = tenant_secrets::rotation(
            &self.keyring,
            tenant,
            &secret,
            current.as_ref(),
            self.clock.now_ms(),
            overlap,
        )
        .unwrap();
        let event = Event {
            id: Id(rand_id()),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: tenant.into(),
            occurred_at_ms: self.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("test".into()),
            payload: Payload::WebhookSecretRotated(ev),
        };
        let raw = Bytes::from(event.encode());
        let mut batch = Batch::default();
        Projector
            .process(
                &*self.store,
                &mut batch,
                &[Input {
                    offset: 0,
                    event,
                    raw,
                }],
            )
            .await
            .unwrap();
        self.store.write(batch.writes).await.unwrap();
        secret
    }

    /// A provider that reads secrets afresh (its cache is per instance).
    fn provider(&self, cfg: WebhookConfig) -> WebhookProvider {
        let secrets = Arc::new(TenantSecrets::new(self.store.clone(), self.keyring.clone()));
        let outbound = OutboundConfig {
            allow: vec!["127.0.0.1/32".into()],
        };
        WebhookProvider::new(&cfg, &outbound, secrets)
            .unwrap()
            .with_clock(self.clock.clone())
    }
}

fn rand_id() -> [u8; 16] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    n.to_be_bytes()
}

fn msg(to: &str, attempt: &str) -> pb::DispatchRequested {
    pb::DispatchRequested {
        notification_id: format!("n-{attempt}"),
        attempt_id: attempt.into(),
        channel: "webhook".into(),
        provider: "webhook".into(),
        to: to.into(),
        body: "hello".into(),
        ..Default::default()
    }
}

fn verifies(secret: &str, (sig, body): &(String, Bytes), now_ms: i64) -> bool {
    verify(
        secret.as_bytes(),
        sig,
        body,
        now_ms / 1000,
        Duration::from_secs(300),
    )
    .is_ok()
}

#[tokio::test]
async fn signatures_are_per_tenant_and_the_overlap_ends_on_the_clock() {
    let (base, seen) = server().await;
    let w = World::new().await;
    let url = format!("{base}/ok");

    let none = w
        .provider(WebhookConfig::default())
        .send("acme", &msg(&url, "a0"))
        .await;
    let err = none.unwrap_err();
    assert!(
        !err.retryable && err.message.contains("no webhook signing secret"),
        "{err:?}"
    );

    let a1 = w.rotate("acme", Duration::from_secs(60)).await;
    let b1 = w.rotate("globex", Duration::from_secs(60)).await;
    let p = w.provider(WebhookConfig::default());
    p.send("acme", &msg(&url, "a1")).await.unwrap();
    p.send("globex", &msg(&url, "b1")).await.unwrap();
    let now = w.clock.now_ms();
    {
        let s = seen.lock().unwrap();
        assert!(verifies(&a1, &s[0], now) && !verifies(&b1, &s[0], now));
        assert!(verifies(&b1, &s[1], now) && !verifies(&a1, &s[1], now));
    }

    // Rotated with a minute of overlap: both sign, until the minute is over.
    let a2 = w.rotate("acme", Duration::from_secs(60)).await;
    let p = w.provider(WebhookConfig::default());
    w.clock.advance(Duration::from_secs(59));
    p.send("acme", &msg(&url, "a2")).await.unwrap();
    let now = w.clock.now_ms();
    {
        let s = seen.lock().unwrap();
        let last = s.last().unwrap();
        assert_eq!(last.0.matches("v1=").count(), 2);
        assert!(verifies(&a2, last, now) && verifies(&a1, last, now));
    }
    w.clock.advance(Duration::from_secs(1));
    p.send("acme", &msg(&url, "a3")).await.unwrap();
    let now = w.clock.now_ms();
    let s = seen.lock().unwrap();
    let last = s.last().unwrap();
    assert_eq!(last.0.matches("v1=").count(), 1);
    assert!(verifies(&a2, last, now) && !verifies(&a1, last, now));
}

#[tokio::test]
async fn a_hanging_destination_times_out_and_a_busy_one_fails_fast() {
    let (base, _) = server().await;
    let w = World::new().await;
    w.rotate("acme", Duration::ZERO).await;
    let p = Arc::new(w.provider(WebhookConfig {
        timeout_ms: 1_500,
        max_in_flight_per_host: 1,
        ..WebhookConfig::default()
    }));
    let hang = format!("{base}/hang");
    let first = {
        let (p, hang) = (p.clone(), hang.clone());
        tokio::spawn(async move { p.send("acme", &msg(&hang, "h1")).await })
    };
    // Let the first send take the destination's only slot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = p
        .send("acme", &msg(&format!("{base}/ok"), "h2"))
        .await
        .unwrap_err();
    assert!(busy.retryable, "{busy:?}");
    assert!(
        busy.message
            .starts_with("destination busy: 1 sends to 127.0.0.1:"),
        "{busy:?}"
    );
    let timed_out = first.await.unwrap().unwrap_err();
    assert!(timed_out.retryable);
    assert_eq!(timed_out.message, "webhook timed out after 1500 ms");
    // The slot is free again.
    p.send("acme", &msg(&format!("{base}/ok"), "h3"))
        .await
        .unwrap();
}
