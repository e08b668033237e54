//! APNs client against a local HTTP/2 TLS server that checks what Apple
//! checks: the ES256 provider token's signature (with the public half of a
//! key made at test time), its `kid`/`iss`, the required headers; and answers
//! with Apple's error bodies. The server is `clarion-push-servers`, shared
//! with the end-to-end tests and the benchmark.

use std::sync::Arc;
use std::time::Duration;

use clarion_dispatch::apns::{
    apns_id_for_attempt, ApnsClient, ApnsConfig, ApnsRequest, Environment, Outcome, Priority,
    PushType, MIN_REUSE, REFRESH_AFTER,
};
use clarion_push_servers::apns::{ApnsServer, Options, ProviderKey, KEY_ID, TEAM_ID};
use clarion_runtime::ManualClock;
use tokio::sync::Barrier;

const TEAM: &str = TEAM_ID;
const TOPIC: &str = "com.example.app";
const T0_MS: i64 = 1_700_000_000_000;

/// The key Apple would hold the public half of; the PEM is what a `.p8` holds.
fn provider_key() -> (String, Vec<u8>) {
    let k = ProviderKey::generate();
    (k.pem, k.public)
}

async fn start(public_key: Vec<u8>, answers: &[(&str, u16, &str)]) -> ApnsServer {
    let server = ApnsServer::start(public_key).await;
    for (token, status, body) in answers {
        server.answer(token, *status, body);
    }
    server
}

fn config(base_url: &str, key_pem: &str) -> ApnsConfig {
    ApnsConfig {
        environment: Environment::Sandbox,
        base_url: Some(base_url.to_string()),
        team_id: TEAM.into(),
        key_id: KEY_ID.into(),
        key_pem: key_pem.into(),
        topic: TOPIC.into(),
        timeout_ms: 10_000,
    }
}

fn client(server: &ApnsServer, key_pem: &str, clock: &ManualClock) -> ApnsClient {
    ApnsClient::with_root_certificate(
        &config(&server.base_url, key_pem),
        Arc::new(clock.clone()),
        server.ca_pem.as_bytes(),
    )
    .unwrap()
}

fn alert(attempt: &str) -> ApnsRequest {
    ApnsRequest::new(
        serde_json::json!({"aps": {"alert": {"title": "Hi", "body": "there"}}}),
        PushType::Alert,
        apns_id_for_attempt(attempt),
    )
}

#[tokio::test]
async fn a_valid_push_is_accepted_with_all_headers() {
    let (pem, public) = provider_key();
    let server = start(public, &[]).await;
    let clock = ManualClock::new(T0_MS);
    let apns = client(&server, &pem, &clock);
    let attempt = "0123456789abcdef0123456789abcdef";
    let mut req = alert(attempt);
    req.priority = Some(Priority::PowerConsiderate);
    req.expiration = Some(1_700_003_600);
    req.collapse_id = Some("score-42".into());

    let out = apns.send("a1b2c3d4", &req).await;

    assert_eq!(
        out,
        Outcome::Accepted {
            apns_id: "01234567-89ab-cdef-0123-456789abcdef".into()
        }
    );
    let got = server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.token, "a1b2c3d4");
    assert_eq!(r.iat, T0_MS / 1000);
    let h = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("authorization"), format!("bearer {}", r.jwt));
    assert_eq!(h("apns-topic"), TOPIC);
    assert_eq!(h("apns-push-type"), "alert");
    assert_eq!(h("apns-priority"), "5");
    assert_eq!(h("apns-expiration"), "1700003600");
    assert_eq!(h("apns-collapse-id"), "score-42");
    assert_eq!(h("apns-id"), "01234567-89ab-cdef-0123-456789abcdef");
    assert_eq!(r.body["aps"]["alert"]["title"], "Hi");
    // A repeat of the same attempt (after a crash) is recognisable.
    assert_eq!(apns_id_for_attempt(attempt), req.apns_id);
    assert_eq!(
        apns_id_for_attempt("not-hex"),
        apns_id_for_attempt("not-hex")
    );
}

#[tokio::test]
async fn the_provider_token_is_reused_for_twenty_minutes_and_replaced_at_fifty() {
    let (pem, public) = provider_key();
    let server = start(public, &[]).await;
    let clock = ManualClock::new(T0_MS);
    let apns = client(&server, &pem, &clock);
    let minute = Duration::from_secs(60);

    for i in 0..10 {
        assert!(matches!(
            apns.send("aa", &alert(&format!("a{i}"))).await,
            Outcome::Accepted { .. }
        ));
    }
    clock.advance(MIN_REUSE + minute);
    assert!(matches!(
        apns.send("aa", &alert("b")).await,
        Outcome::Accepted { .. }
    ));
    clock.set(T0_MS + REFRESH_AFTER.as_millis() as i64 - 1);
    assert!(matches!(
        apns.send("aa", &alert("c")).await,
        Outcome::Accepted { .. }
    ));
    {
        let got = server.received();
        assert_eq!(got.len(), 12);
        assert!(got
            .iter()
            .all(|r| r.jwt == got[0].jwt && r.iat == T0_MS / 1000));
    }

    clock.set(T0_MS + REFRESH_AFTER.as_millis() as i64);
    assert!(matches!(
        apns.send("aa", &alert("d")).await,
        Outcome::Accepted { .. }
    ));
    // Right after a refresh no other token may be issued for 20 minutes.
    clock.advance(MIN_REUSE - minute);
    assert!(matches!(
        apns.send("aa", &alert("e")).await,
        Outcome::Accepted { .. }
    ));
    // A clock stepping backwards does not trigger a new token either.
    clock.set(T0_MS);
    assert!(matches!(
        apns.send("aa", &alert("f")).await,
        Outcome::Accepted { .. }
    ));

    let got = server.received();
    let second = &got[12];
    assert_ne!(second.jwt, got[0].jwt);
    assert_eq!(
        second.iat,
        (T0_MS + REFRESH_AFTER.as_millis() as i64) / 1000
    );
    assert!(got[13..].iter().all(|r| r.jwt == second.jwt));
    let distinct: std::collections::HashSet<_> = got.iter().map(|r| &r.jwt).collect();
    assert_eq!(distinct.len(), 2);
}

#[tokio::test]
async fn each_apns_error_is_classified() {
    let (pem, public) = provider_key();
    let answers = [
        ("e400", 400, r#"{"reason":"BadDeviceToken"}"#),
        (
            "e410",
            410,
            r#"{"reason":"Unregistered","timestamp":1699999000000}"#,
        ),
        ("e403", 403, r#"{"reason":"ExpiredProviderToken"}"#),
        ("e429", 429, r#"{"reason":"TooManyRequests"}"#),
        ("e500", 500, r#"{"reason":"InternalServerError"}"#),
        ("e503", 503, r#"{"reason":"ServiceUnavailable"}"#),
        ("eb00", 400, r#"{"reason":"BadCollapseId"}"#),
        ("e413", 413, r#"{"reason":"PayloadTooLarge"}"#),
    ];
    let server = start(public, &answers).await;
    let clock = ManualClock::new(T0_MS);
    let apns = client(&server, &pem, &clock);
    let send = |t: &'static str| {
        let apns = &apns;
        async move { apns.send(t, &alert(t)).await }
    };

    assert_eq!(send("e400").await, Outcome::BadDeviceToken);
    let gone = send("e410").await;
    assert_eq!(
        gone,
        Outcome::Unregistered {
            reason: "Unregistered".into(),
            since_ms: Some(1_699_999_000_000)
        }
    );
    assert!(gone.revokes_token(1_699_998_000_000));
    assert!(
        !gone.revokes_token(1_699_999_500_000),
        "re-registered after"
    );
    let auth = send("e403").await;
    assert!(auth.needs_operator() && !auth.revokes_token(0) && !auth.is_retryable());
    for (t, status) in [("e429", 429), ("e500", 500), ("e503", 503)] {
        match send(t).await {
            Outcome::Retryable { status: s, .. } => assert_eq!(s, Some(status)),
            other => panic!("{t}: {other:?}"),
        }
    }
    for (t, status, reason) in [
        ("eb00", 400, "BadCollapseId"),
        ("e413", 413, "PayloadTooLarge"),
    ] {
        let out = send(t).await;
        assert_eq!(
            out,
            Outcome::Rejected {
                status,
                reason: reason.into()
            }
        );
        assert!(!out.is_retryable() && !out.revokes_token(0) && !out.needs_operator());
    }
    // A token that cannot be a path segment never leaves the process.
    assert_eq!(send("../../x").await, Outcome::BadDeviceToken);
    assert_eq!(server.received().len(), answers.len());
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused_as_a_credential_error() {
    let (_, public) = provider_key();
    let (other_pem, _) = provider_key();
    let server = start(public, &[]).await;
    let apns = client(&server, &other_pem, &ManualClock::new(T0_MS));
    let out = apns.send("aa", &alert("x")).await;
    assert_eq!(
        out,
        Outcome::CredentialRejected {
            reason: "InvalidProviderToken".into()
        }
    );
}

#[tokio::test]
async fn no_server_is_retryable() {
    let (pem, _) = provider_key();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    drop(listener);
    let apns = ApnsClient::new(&config(&base, &pem), Arc::new(ManualClock::new(T0_MS))).unwrap();
    assert!(matches!(
        apns.send("aa", &alert("x")).await,
        Outcome::Retryable { status: None, .. }
    ));
}

#[test]
fn a_bad_key_is_a_configuration_error_naming_the_field() {
    let clock = Arc::new(ManualClock::new(T0_MS));
    let err = ApnsClient::new(&config("https://x", "not a pem"), clock.clone())
        .err()
        .unwrap();
    assert!(err.starts_with("providers.apns.key-pem:"), "{err}");
    let (pem, _) = provider_key();
    let mut cfg = config("https://x", &pem);
    cfg.team_id.clear();
    let err = ApnsClient::new(&cfg, clock).err().unwrap();
    assert!(err.starts_with("providers.apns.team-id:"), "{err}");
}

#[tokio::test]
async fn concurrent_sends_share_one_http2_connection() {
    const N: usize = 64;
    let (pem, public) = provider_key();
    // Every request is held until all N are in flight: only concurrent
    // streams can get through.
    let server = ApnsServer::start_with(Options {
        barrier: Some(Arc::new(Barrier::new(N))),
        ..Options::new(public)
    })
    .await;
    let apns = Arc::new(client(&server, &pem, &ManualClock::new(T0_MS)));
    let mut tasks = Vec::new();
    for i in 0..N {
        let apns = apns.clone();
        tasks.push(tokio::spawn(async move {
            apns.send(&format!("{i:04x}"), &alert(&format!("c{i}")))
                .await
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .expect("sends were not concurrent streams");
    for out in all {
        assert!(matches!(out.unwrap(), Outcome::Accepted { .. }));
    }
    assert_eq!(server.connections(), 1);
    assert_eq!(server.received().len(), N);
}
