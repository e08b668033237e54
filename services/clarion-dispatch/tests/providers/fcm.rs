//! FCM HTTP v1 against a local server that plays both Google endpoints: the
//! OAuth2 token endpoint (verifying the RS256 assertion with the public half
//! of an RSA key made at test time, issuing its own access tokens) and
//! `messages:send` (accepting only a bearer token it issued, answering with
//! scripted errors). Token lifetimes run on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use clarion_dispatch::fcm::{
    data_from_json, AndroidConfig, AndroidNotification, AndroidPriority, ApnsOverride, FcmClient,
    FcmConfig, FcmMessage, Notification, Outcome,
};
use clarion_push_servers::fcm::{
    error as fcm_error, fcm_detail, rsa_key_pem, service_account_json, FcmServer, CLIENT_EMAIL,
    PROJECT,
};
use clarion_runtime::{Clock, ManualClock, SystemClock};
use serde_json::{json, Value};

struct Fixture {
    google: FcmServer,
    client: Arc<FcmClient>,
    clock: ManualClock,
    base: String,
}

async fn fixture(expires_in: i64) -> Fixture {
    let google = FcmServer::start(expires_in).await;
    let base = google.base_url.clone();
    // Tokens expire on the manual clock; jsonwebtoken checks `exp` against
    // the real one, so the manual clock starts at the real now.
    let clock = ManualClock::new(SystemClock.now_ms());
    let client =
        Arc::new(FcmClient::new(&config(&google.key_pem, &base), Arc::new(clock.clone())).unwrap());
    Fixture {
        google,
        client,
        clock,
        base,
    }
}

fn config(key_pem: &str, base: &str) -> FcmConfig {
    FcmConfig {
        service_account_json: service_account_json(key_pem, &format!("{base}/token")),
        project_id: None,
        base_url: Some(base.to_string()),
        token_url: None,
        timeout_ms: 5_000,
    }
}

fn exchanges(g: &FcmServer) -> usize {
    g.issued().len()
}

#[tokio::test]
async fn valid_send_is_accepted_with_the_v1_json() {
    let f = fixture(3600).await;
    let mut m = FcmMessage::new("dGVzdC10b2tlbg:APA91b");
    m.notification = Some(Notification {
        title: Some("Hi".into()),
        body: Some("Your order shipped".into()),
    });
    m.data = data_from_json(&json!({"order": "A-1", "count": 3, "paid": true})).unwrap();
    m.android = Some(AndroidConfig {
        priority: Some(AndroidPriority::High),
        ttl: Some(3600),
        collapse_key: Some("orders".into()),
        notification: Some(AndroidNotification {
            channel_id: Some("orders".into()),
            sound: Some("default".into()),
            title_loc_key: Some("order_title".into()),
            body_loc_key: Some("order_body".into()),
            ..Default::default()
        }),
    });
    let mut apns = ApnsOverride::aps(Some("default"), Some(2));
    apns.headers.insert("apns-priority".into(), "10".into());
    m.apns = Some(apns);

    let out = f.client.send(&m).await;
    assert!(
        matches!(&out, Outcome::Accepted { name } if name.starts_with("projects/demo-project/messages/")),
        "{out:?}"
    );
    let received = f.google.received();
    assert_eq!(received.len(), 1);
    let (project, bearer, body) = (&received[0].project, &received[0].bearer, &received[0].body);
    assert_eq!(project, PROJECT);
    assert_eq!(bearer, "ya29.test-1");
    assert_eq!(
        body,
        &json!({"message": {
            "token": "dGVzdC10b2tlbg:APA91b",
            "notification": {"title": "Hi", "body": "Your order shipped"},
            "data": {"order": "A-1", "count": "3", "paid": "true"},
            "android": {
                "priority": "HIGH", "ttl": "3600s", "collapse_key": "orders",
                "notification": {"channel_id": "orders", "sound": "default",
                                 "title_loc_key": "order_title", "body_loc_key": "order_body"}
            },
            "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"sound": "default", "badge": 2}}}
        }})
    );
    // No override asked for: no block sent.
    f.client.send(&FcmMessage::new("t2")).await;
    let last = f.google.received().last().unwrap().body.clone();
    assert_eq!(last, json!({"message": {"token": "t2"}}));
}

#[tokio::test]
async fn one_token_exchange_for_many_sends_and_one_refresh_after_expiry() {
    let f = fixture(3600).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..12 {
        let c = f.client.clone();
        set.spawn(async move { c.send(&FcmMessage::new(format!("tok-{i}"))).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap(), Outcome::Accepted { .. }));
    }
    assert_eq!(
        exchanges(&f.google),
        1,
        "concurrent first sends share one exchange"
    );

    // 54 minutes: still inside the token's life minus the refresh margin.
    f.clock.advance(Duration::from_secs(54 * 60));
    f.client.send(&FcmMessage::new("a")).await;
    assert_eq!(exchanges(&f.google), 1);

    // 56 minutes: within five minutes of expiry, so concurrent senders
    // refresh once, and all use the new token.
    f.clock.advance(Duration::from_secs(2 * 60));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let c = f.client.clone();
        set.spawn(async move { c.send(&FcmMessage::new(format!("b-{i}"))).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap(), Outcome::Accepted { .. }));
    }
    assert_eq!(exchanges(&f.google), 2);
    assert_eq!(f.client.token_exchanges(), 2);
    let iats = f.google.assertion_iats();
    assert_eq!(
        iats[1] - iats[0],
        56 * 60,
        "the assertion is dated by the clock"
    );
    let received = f.google.received();
    assert!(received[received.len() - 6..]
        .iter()
        .all(|s| s.bearer == "ya29.test-2"));
}

#[tokio::test]
async fn each_error_class_is_mapped() {
    let f = fixture(3600).await;
    let token_violation = json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]});
    let payload_violation = json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.android.ttl", "description": "Invalid value"}]});
    let cases: Vec<(u16, Option<&'static str>, Value, &str)> = vec![
        (
            404,
            None,
            fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                json!([fcm_detail("UNREGISTERED")]),
            ),
            "dead",
        ),
        (
            404,
            None,
            fcm_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                json!([]),
            ),
            "dead",
        ),
        (
            400,
            None,
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                json!([fcm_detail("INVALID_ARGUMENT"), token_violation]),
            ),
            "dead",
        ),
        (
            400,
            None,
            fcm_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl'",
                json!([fcm_detail("INVALID_ARGUMENT"), payload_violation]),
            ),
            "rejected",
        ),
        (
            403,
            None,
            fcm_error(
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                json!([fcm_detail("SENDER_ID_MISMATCH")]),
            ),
            "dead",
        ),
        (
            429,
            Some("30"),
            fcm_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded",
                json!([fcm_detail("QUOTA_EXCEEDED")]),
            ),
            "retry30",
        ),
        (
            503,
            None,
            fcm_error(
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                json!([fcm_detail("UNAVAILABLE")]),
            ),
            "retry",
        ),
        (
            500,
            None,
            fcm_error(
                500,
                "INTERNAL",
                "Internal error",
                json!([fcm_detail("INTERNAL")]),
            ),
            "retry",
        ),
        (
            401,
            None,
            fcm_error(
                401,
                "UNAUTHENTICATED",
                "APNs auth key rejected",
                json!([fcm_detail("THIRD_PARTY_AUTH_ERROR")]),
            ),
            "credential",
        ),
        (
            403,
            None,
            fcm_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'cloudmessaging.messages.create' denied",
                json!([]),
            ),
            "credential",
        ),
        (502, None, json!("<html>bad gateway</html>"), "retry"),
    ];
    for (i, (status, retry_after, body, want)) in cases.into_iter().enumerate() {
        f.google.answer_next(status, retry_after, body);
        let out = f.client.send(&FcmMessage::new(format!("tok-{i}"))).await;
        let ok = match want {
            "dead" => out.revokes_token() && !out.is_retryable() && !out.needs_operator(),
            "rejected" => {
                matches!(out, Outcome::Rejected { status: 400, .. }) && !out.revokes_token()
            }
            "retry" => matches!(
                out,
                Outcome::Retryable {
                    retry_after: None,
                    ..
                }
            ),
            "retry30" => {
                matches!(out, Outcome::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(30))
            }
            "credential" => out.needs_operator() && !out.revokes_token(),
            _ => unreachable!(),
        };
        assert!(ok, "case {i}: wanted {want}, got {out:?}");
    }
    assert_eq!(
        exchanges(&f.google),
        2,
        "the 401 drops the cached token, once"
    );
}

#[tokio::test]
async fn a_refused_access_token_is_a_credential_error_and_a_revoked_one_is_replaced() {
    let f = fixture(3600).await;
    // A key the token endpoint does not know: the assertion fails to verify.
    let other = rsa_key_pem();
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let stranger = FcmClient::new(&config(&other, &f.base), clock).unwrap();
    let out = stranger.send(&FcmMessage::new("t")).await;
    assert!(
        matches!(&out, Outcome::CredentialRejected { reason } if reason.contains("invalid_grant")),
        "{out:?}"
    );
    assert!(f.google.received().is_empty(), "no send without a token");

    // FCM forgets our token (revoked): reported once, then a new exchange.
    assert!(matches!(
        f.client.send(&FcmMessage::new("t")).await,
        Outcome::Accepted { .. }
    ));
    f.google.revoke(0);
    assert!(f.client.send(&FcmMessage::new("t")).await.needs_operator());
    assert!(matches!(
        f.client.send(&FcmMessage::new("t")).await,
        Outcome::Accepted { .. }
    ));
    assert_eq!(exchanges(&f.google), 2);
}

#[test]
fn bad_configuration_names_the_field() {
    let mut cfg = config("not a key", "http://127.0.0.1:1");
    let clock = Arc::new(ManualClock::new(0));
    let e = FcmClient::new(&cfg, clock.clone()).err().unwrap();
    assert!(
        e.starts_with("providers.fcm.service-account-json: private_key"),
        "{e}"
    );
    cfg.service_account_json =
        json!({"private_key": "x", "client_email": CLIENT_EMAIL}).to_string();
    let e = FcmClient::new(&cfg, clock).err().unwrap();
    assert!(e.contains("project-id"), "{e}");
}
