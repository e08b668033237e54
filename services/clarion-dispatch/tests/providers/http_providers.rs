//! The SendGrid v3 and Vonage SMS providers through the dispatcher's
//! effects, against local servers speaking their wire formats
//! (clarion-push-servers): what goes on the wire, the provider's message id
//! in `NotificationSent`, and each kind of refusal told apart (a provider
//! outage is retryable, bad credentials or a bad message are not). Two
//! tenants: each send carries its own tenant and attempt.

use std::sync::Arc;

use clarion_dispatch::sendgrid::{SendgridConfig, SendgridProvider};
use clarion_dispatch::vonage::{VonageConfig, VonageProvider};
use clarion_dispatch::DispatchEffects;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_push_servers::sendgrid::{self, SendgridServer};
use clarion_push_servers::vonage::{self, VonageServer};
use clarion_runtime::{Effects, Emit};

pub fn sendgrid_config(server: &SendgridServer) -> SendgridConfig {
    SendgridConfig {
        base_url: server.base_url.clone(),
        api_key: sendgrid::API_KEY.into(),
        from_email: "noreply@acme.test".into(),
        from_name: "Acme".into(),
        timeout_ms: 5_000,
    }
}

pub fn vonage_config(server: &VonageServer) -> VonageConfig {
    VonageConfig {
        base_url: server.base_url.clone(),
        api_key: vonage::API_KEY.into(),
        api_secret: vonage::API_SECRET.into(),
        from: "Acme".into(),
        status_callback_url: None,
        timeout_ms: 5_000,
    }
}

fn request(tenant: &str, n: u8, channel: &str, provider: &str, to: &str) -> Event {
    Event {
        id: Id([n; 16]),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/ana"),
        occurred_at_ms: 1,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("router".into()),
        payload: Payload::DispatchRequested(pb::DispatchRequested {
            notification_id: format!("n-{tenant}-{n}"),
            attempt_id: format!("a-{tenant}-{n}"),
            channel: channel.into(),
            provider: provider.into(),
            to: to.into(),
            subject: "Job J-7".into(),
            body: format!("Your technician is on the way ({tenant})"),
            ..Default::default()
        }),
    }
}

async fn run(effects: &DispatchEffects, e: &Event) -> Vec<Emit> {
    effects.run(&e.encode(), 1_000).await
}

fn sent(out: &[Emit]) -> &pb::NotificationSent {
    match out.last().map(|e| &e.event.payload) {
        Some(Payload::Sent(s)) => s,
        other => panic!("not sent: {other:?}"),
    }
}

fn failed(out: &[Emit]) -> &pb::NotificationFailed {
    match out.last().map(|e| &e.event.payload) {
        Some(Payload::Failed(f)) => f,
        other => panic!("not failed: {other:?}"),
    }
}

#[tokio::test]
async fn sendgrid_posts_the_v3_body_and_reports_the_x_message_id() {
    let server = SendgridServer::start().await;
    let p = SendgridProvider::new(&sendgrid_config(&server)).unwrap();
    let effects = DispatchEffects::new(vec![Arc::new(p)]);
    let a = run(
        &effects,
        &request("acme", 1, "email", "sendgrid", "ana@acme.test"),
    )
    .await;
    let g = run(
        &effects,
        &request("globex", 2, "email", "sendgrid", "bo@globex.test"),
    )
    .await;

    let mails = server.accepted();
    assert_eq!(mails.len(), 2);
    assert_eq!(sent(&a).provider, "sendgrid");
    assert_eq!(sent(&a).provider_message_id, mails[0].message_id);
    assert_eq!(sent(&g).provider_message_id, mails[1].message_id);
    assert_ne!(mails[0].message_id, mails[1].message_id);
    let m = &mails[0];
    assert_eq!(
        (m.to.as_str(), m.from.as_str(), m.subject.as_str()),
        ("ana@acme.test", "noreply@acme.test", "Job J-7")
    );
    assert_eq!(m.text, "Your technician is on the way (acme)");
    assert_eq!(m.idempotency_key, "a-acme-1");
    assert_eq!(m.custom_args["tenant"], "acme");
    assert_eq!(m.custom_args["attempt_id"], "a-acme-1");
    assert_eq!(m.custom_args["notification_id"], "n-acme-1");
    assert_eq!(mails[1].custom_args["tenant"], "globex");
    assert_eq!(mails[1].to, "bo@globex.test");
}

#[tokio::test]
async fn sendgrid_outages_are_retryable_and_bad_keys_or_bodies_are_not() {
    let server = SendgridServer::start().await;
    let good = SendgridProvider::new(&sendgrid_config(&server)).unwrap();
    let effects = DispatchEffects::new(vec![Arc::new(good)]);

    server.fail_with(503);
    let out = run(
        &effects,
        &request("acme", 1, "email", "sendgrid", "ana@acme.test"),
    )
    .await;
    let f = failed(&out);
    assert!(f.retryable, "{f:?}");
    assert!(f.reason.contains("503"), "{}", f.reason);
    server.recover();

    // A message SendGrid refuses (no subject): terminal, naming the field.
    let mut e = request("acme", 2, "email", "sendgrid", "ana@acme.test");
    if let Payload::DispatchRequested(d) = &mut e.payload {
        d.subject.clear();
    }
    let f = failed(&run(&effects, &e).await).clone();
    assert!(!f.retryable && f.reason.contains("(subject)"), "{f:?}");

    let mut cfg = sendgrid_config(&server);
    cfg.api_key = "SG.wrong".into();
    let effects = DispatchEffects::new(vec![Arc::new(SendgridProvider::new(&cfg).unwrap())]);
    let out = run(
        &effects,
        &request("acme", 3, "email", "sendgrid", "ana@acme.test"),
    )
    .await;
    let f = failed(&out);
    assert!(!f.retryable && f.reason.contains("401"), "{f:?}");
    assert!(server.accepted().is_empty());
    assert_eq!(server.requests(), 3);

    let err = SendgridProvider::new(&SendgridConfig {
        from_email: "nobody".into(),
        ..sendgrid_config(&server)
    })
    .err()
    .unwrap();
    assert!(err.contains("providers.sendgrid.from-email"), "{err}");
}

#[tokio::test]
async fn vonage_posts_sms_json_and_reads_messages_status() {
    let server = VonageServer::start().await;
    let p = VonageProvider::new(&vonage_config(&server)).unwrap();
    let effects = DispatchEffects::new(vec![Arc::new(p)]);
    let a = run(
        &effects,
        &request("acme", 1, "sms", "vonage", "+15145550101"),
    )
    .await;
    let g = run(
        &effects,
        &request("globex", 2, "sms", "vonage", "+447700900000"),
    )
    .await;

    let sms = server.accepted();
    assert_eq!(sms.len(), 2);
    assert_eq!(sent(&a).provider, "vonage");
    assert_eq!(sent(&a).provider_message_id, sms[0].message_id);
    assert_eq!(sent(&g).provider_message_id, sms[1].message_id);
    assert_eq!(sms[0].to, "15145550101", "E.164 without the plus");
    assert_eq!(sms[0].from, "Acme");
    assert_eq!(sms[0].client_ref, "a-acme-1", "the attempt id");
    assert_eq!(sms[0].text, "Your technician is on the way (acme)");
    assert_eq!(
        (sms[1].to.as_str(), sms[1].client_ref.as_str()),
        ("447700900000", "a-globex-2")
    );
}

#[tokio::test]
async fn vonage_status_codes_decide_between_retry_and_failure() {
    let server = VonageServer::start().await;
    let effects = DispatchEffects::new(vec![Arc::new(
        VonageProvider::new(&vonage_config(&server)).unwrap(),
    )]);

    // HTTP 200 with status "5": Vonage's internal error, worth retrying.
    server.fail_with(200);
    let out = run(
        &effects,
        &request("acme", 1, "sms", "vonage", "+15145550101"),
    )
    .await;
    let f = failed(&out);
    assert!(
        f.retryable && f.reason.contains("status 5: Internal Error"),
        "{f:?}"
    );
    // An HTTP error in front of the API: retryable too.
    server.fail_with(502);
    let f = failed(
        &run(
            &effects,
            &request("acme", 2, "sms", "vonage", "+15145550101"),
        )
        .await,
    )
    .clone();
    assert!(f.retryable && f.reason.contains("502"), "{f:?}");
    server.recover();

    // Status 3 (invalid parameters): this message, for good.
    let f =
        failed(&run(&effects, &request("acme", 3, "sms", "vonage", "+1 514 not")).await).clone();
    assert!(!f.retryable && f.reason.contains("status 3"), "{f:?}");

    let mut cfg = vonage_config(&server);
    cfg.api_secret = "wrong".into();
    let effects = DispatchEffects::new(vec![Arc::new(VonageProvider::new(&cfg).unwrap())]);
    let out = run(
        &effects,
        &request("acme", 4, "sms", "vonage", "+15145550101"),
    )
    .await;
    let f = failed(&out);
    assert!(
        !f.retryable && f.reason.contains("status 4: Bad Credentials"),
        "{f:?}"
    );
    assert!(server.accepted().is_empty());
}

/// The breaker judges latency on the dispatcher's clock: the local server
/// moves the manual clock 6 s per request (a slow SendGrid, no sleeping).
/// Both tenants' sends count against the one breaker; the third slow send
/// opens it (its event is in the tenant of that send), and the next send
/// is refused at once, retryably, without a request to the provider.
#[tokio::test]
async fn a_slow_provider_opens_its_breaker_on_the_dispatchers_clock() {
    use std::collections::HashMap;
    use std::time::Duration;

    use clarion_dispatch::breaker::{BreakerConfig, State};
    use clarion_runtime::{Clock, ManualClock};

    let server = SendgridServer::start().await;
    let clock = ManualClock::new(1_700_000_000_000);
    let moved = clock.clone();
    server.on_request(Arc::new(move || moved.advance(Duration::from_secs(6))));
    let breaker = BreakerConfig {
        window_ms: 60_000,
        min_requests: 3,
        slow_call_ms: 5_000,
        slow_call_rate: 0.5,
        open_ms: 60_000,
        ..BreakerConfig::default()
    };
    let effects = DispatchEffects::new(vec![Arc::new(
        SendgridProvider::new(&sendgrid_config(&server)).unwrap(),
    )])
    .with_routes(
        HashMap::from([("email".to_string(), vec!["sendgrid".to_string()])]),
        &breaker,
    )
    .with_clock(Arc::new(clock.clone()));

    let mut last = Vec::new();
    for (i, tenant) in ["acme", "globex", "acme"].iter().enumerate() {
        last = effects
            .run(
                &request(tenant, i as u8, "email", "sendgrid", "ana@acme.test").encode(),
                clock.now_ms(),
            )
            .await;
        assert_eq!(sent(&last).provider, "sendgrid", "slow, but sent");
    }
    assert_eq!(effects.breaker_state("sendgrid"), Some(State::Open));
    let changed: Vec<_> = last
        .iter()
        .filter_map(|e| match &e.event.payload {
            Payload::ProviderBreakerChanged(c) => Some((e.event.tenant.as_str(), c)),
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 1, "{last:?}");
    let (tenant, c) = changed[0];
    assert_eq!(tenant, "acme");
    assert_eq!((c.from.as_str(), c.to.as_str()), ("closed", "open"));
    assert!(
        c.reason.contains("3 of 3 sends took over 5000 ms"),
        "{}",
        c.reason
    );
    assert_eq!(c.attempt_id, "a-acme-2");

    let out = run(
        &effects,
        &request("globex", 9, "email", "sendgrid", "bo@globex.test"),
    )
    .await;
    let f = failed(&out);
    assert!(f.retryable, "{f:?}");
    assert_eq!(
        f.reason,
        "no provider took the send (sendgrid: circuit open)"
    );
    assert_eq!(server.requests(), 3, "no request while open");
}
