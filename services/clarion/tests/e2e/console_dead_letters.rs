//! The console's Dead letters and Live pages over real HTTP (issue #29):
//! SMS the Twilio double refuses for good land in the queue; the list
//! filters as `clarion dlq list` does, pages with a cursor, shows one;
//! retry and discard carry the signed-in key into the events; bulk retry
//! goes through a confirmation; tenant B sees none of A's; bad filters get
//! a page naming the field. The Live page shows the tenant's rates and DLQ
//! size, and the processor lag to the operator only.

use crate::support;

use std::time::Duration;

use clarion_domain::{Actor, Event, Payload};
use clarion_proto::api;
use clarion_runtime::Topic;
use support::console::{Client, ConsoleNode, Page, TENANT_B};
use support::*;

const FLOW: &str = r#"
id: job-sms
steps:
  - { id: text, type: send, channel: sms, template: job-sms, provider: twilio }
"#;

/// The live test's own tenant.
const LIVE_TENANT: &str = "initech";

/// Twilio refuses these (its magic invalid numbers).
const BAD_PHONE: &str = "+15005550001";

async fn start(twilio: &TwilioDouble) -> ConsoleNode {
    let cfg = twilio.config();
    ConsoleNode::start(move |c| {
        c.providers.twilio = Some(cfg);
        c.dlq.alert_threshold = 5;
        c.dlq.tenant_thresholds.insert(TENANT_B.into(), 2);
    })
    .await
}

/// The SMS template and workflow of a tenant.
async fn sms_workflow(node: &ConsoleNode, key: &str) {
    Tenants::new(node.ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: "job-sms".into(),
                channel: "sms".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: String::new(),
                    body: "Job {{ payload.job }} is yours".into(),
                }],
            },
        ))
        .await
        .unwrap();
    apply_workflows(&node.ch, key, &[FLOW]).await;
}

async fn set_phone(node: &ConsoleNode, key: &str, sub: &str, phone: &str) {
    Subscribers::new(node.ch.clone())
        .upsert(authed(
            key,
            api::Subscriber {
                subscriber_id: sub.into(),
                phone: phone.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

/// A subscriber with a number Twilio refuses, triggered: its notification,
/// once dead-lettered.
async fn dead_letter(node: &ConsoleNode, key: &str, sub: &str) -> String {
    set_phone(node, key, sub, BAD_PHONE).await;
    let id = Notifications::new(node.ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: "job-sms".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: sub.into(),
                    ..Default::default()
                }],
                payload_json: r#"{"job":"J-1"}"#.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification_ids[0]
        .clone();
    let n = wait_status(&node.ch, key, &id, "dead_lettered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "dead_lettered", "{n:?}");
    id
}

/// The notification ids of a page's `data-notification` rows.
fn rows(p: &Page) -> Vec<String> {
    p.body
        .split("data-notification=\"")
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].to_string())
        .collect()
}

fn sorted(ids: &[String]) -> Vec<String> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

/// The text of the element with this id (up to its first tag).
fn text_of(body: &str, id: &str) -> String {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[at..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..start + rest[start..].find('<').unwrap()]
        .trim()
        .to_string()
}

/// A 400 page naming `field`, with no Rust internals in it.
fn assert_bad_field(p: &Page, field: &str) {
    assert_eq!(p.status, 400, "{}", p.body);
    assert_eq!(text_of(&p.body, "error-field"), field, "{}", p.body);
    assert_clean(p);
}

fn assert_clean(p: &Page) {
    for leak in ["panicked", "RUST_BACKTRACE", "src/", "Error {", "Some("] {
        assert!(!p.body.contains(leak), "{leak} in {}", p.body);
    }
}

/// The actor and note of the notification's first event of this kind in
/// the log (`retried`: `DlqRetried`, else `DlqDiscarded`).
async fn action_in_log(node: &ConsoleNode, id: &str, retried: bool) -> Option<(Actor, String)> {
    let log = &node.node.log;
    let name = node.node.topics.name(Topic::Triggers);
    for p in 0..node.node.topics.partitions_of(Topic::Triggers) {
        let end = log.end_offset(&name, p).await.unwrap();
        for r in log.read(&name, p, 0, end as usize + 1).await.unwrap() {
            let e = Event::decode(&r.value).unwrap();
            let found = match &e.payload {
                Payload::DlqRetried(d) if retried && d.notification_id == id => Some(&d.note),
                Payload::DlqDiscarded(d) if !retried && d.notification_id == id => Some(&d.note),
                _ => None,
            };
            if let Some(note) = found {
                return Some((e.actor.clone(), note.clone()));
            }
        }
    }
    None
}

fn key_actor(key: &str) -> Actor {
    Actor::ApiKey(
        clarion_domain::tenant::PresentedKey::parse(key)
            .unwrap()
            .key_id(),
    )
}

/// Polls the list until `done` holds of its rows.
async fn wait_list(c: &mut Client, path: &str, done: impl Fn(&[String]) -> bool) -> Page {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = c.get(path).await;
        assert_eq!(p.status, 200, "{}", p.body);
        if done(&rows(&p)) || std::time::Instant::now() > deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_filter_show_retry_discard_and_bulk_retry() {
    let twilio = TwilioDouble::start().await;
    let node = start(&twilio).await;
    sms_workflow(&node, &node.key_a).await;
    sms_workflow(&node, &node.key_b).await;
    let mut ids = Vec::new();
    for sub in ["tech-1", "tech-2", "tech-3"] {
        ids.push(dead_letter(&node, &node.key_a, sub).await);
    }
    let mut a = node.signed_in(&node.key_a).await;

    // The list: every dead letter, the queue's size and threshold.
    let p = a.get("/console/dead-letters").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let listed = rows(&p);
    assert_eq!(sorted(&listed), sorted(&ids));
    assert_eq!(text_of(&p.body, "dlq-size"), "3");
    assert_eq!(text_of(&p.body, "dlq-threshold"), "5");
    assert!(p.body.contains("21211"), "the reason: {}", p.body);
    assert!(p.body.contains("id=\"bulk-retry-form\""));

    // The CLI's filters.
    for (query, expected) in [
        ("workflow_id=job-sms", 3),
        ("workflow_id=other", 0),
        ("channel=sms", 3),
        ("channel=email", 0),
        ("reason=21211", 3),
        ("reason=nothing-like-it", 0),
        ("older_than=1h", 0),
        ("older_than=", 3),
    ] {
        let p = a.get(&format!("/console/dead-letters?{query}")).await;
        assert_eq!(p.status, 200, "{query}: {}", p.body);
        assert_eq!(rows(&p).len(), expected, "{query}");
    }

    // Pages with a cursor.
    let p = a.get("/console/dead-letters?channel=sms&limit=2").await;
    assert_eq!(rows(&p), listed[..2]);
    let href = p.body.split("id=\"next-page\" href=\"").nth(1).unwrap();
    let next = href[..href.find('"').unwrap()].replace("&amp;", "&");
    assert!(next.contains("channel=sms"), "{next}");
    let p = a.get(&format!("{next}&limit=2")).await;
    assert_eq!(rows(&p), listed[2..]);
    assert!(!p.body.contains("id=\"next-page\""));

    // Bad filters: a page naming the field, never internals.
    assert_bad_field(
        &a.get("/console/dead-letters?older_than=abc").await,
        "older_than",
    );
    assert_bad_field(
        &a.get("/console/dead-letters?limit=99999999").await,
        "limit",
    );
    assert_bad_field(&a.get("/console/dead-letters?limit=-1").await, "limit");
    assert_bad_field(
        &a.get("/console/dead-letters?cursor=AAAA%25%25").await,
        "cursor",
    );
    let long = "x".repeat(300);
    assert_bad_field(
        &a.get(&format!("/console/dead-letters?channel={long}"))
            .await,
        "channel",
    );

    // One dead letter: its step, reason and attempt.
    let p = a.get(&format!("/console/dead-letters/{}", ids[0])).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(text_of(&p.body, "step"), "text");
    assert!(text_of(&p.body, "reason").contains("21211"));
    assert!(p.body.contains("data-attempt="));
    for id in ["retry-form", "note", "retry", "discard-form", "discard"] {
        assert!(p.body.contains(&format!("id=\"{id}\"")), "#{id}");
    }
    let p = a.get("/console/dead-letters/no-such-notification").await;
    assert_eq!(p.status, 404);
    assert!(text_of(&p.body, "error-message").contains("not in the dead-letter queue"));
    assert_clean(&p);

    // Tenant B sees none of A's, and cannot act on them.
    let mut b = node.signed_in(&node.key_b).await;
    let p = b.get("/console/dead-letters").await;
    assert!(rows(&p).is_empty(), "{}", p.body);
    assert_eq!(text_of(&p.body, "dlq-size"), "0");
    assert_eq!(text_of(&p.body, "dlq-threshold"), "2");
    let p = b.get(&format!("/console/dead-letters/{}", ids[0])).await;
    assert_eq!(p.status, 404);
    assert!(!p.body.contains("tech-1"), "no data of A: {}", p.body);
    let p = b
        .post(&format!("/console/dead-letters/{}/retry", ids[0]), &[])
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    let p = b
        .post(&format!("/console/dead-letters/{}/discard", ids[0]), &[])
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    assert!(action_in_log(&node, &ids[0], true).await.is_none());

    // CSRF: a retry without the token changes nothing.
    let p = a
        .post_raw(
            &format!("/console/dead-letters/{}/retry", ids[0]),
            &[("note".into(), "x".into())],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(action_in_log(&node, &ids[0], true).await.is_none());

    // Retry with a note, after the number is fixed: to the timeline, the
    // signed-in key as the event's actor, and the SMS goes out.
    set_phone(&node, &node.key_a, "tech-1", "+15145550101").await;
    // Later than the dead-lettering (the history is in time order).
    node.clock.advance(Duration::from_secs(1));
    a.get(&format!("/console/dead-letters/{}", ids[0])).await;
    let p = a
        .post(
            &format!("/console/dead-letters/{}/retry", ids[0]),
            &[("note", "number fixed")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.location(),
        Some(format!("/console/notifications/{}?done=retried", ids[0]).as_str())
    );
    assert_eq!(
        action_in_log(&node, &ids[0], true).await,
        Some((key_actor(&node.key_a), "number fixed".into()))
    );
    let n = wait_status(
        &node.ch,
        &node.key_a,
        &ids[0],
        "sent",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n.status, "sent", "{n:?}");

    // Discard with a note: back to the list, which says so.
    let p = a
        .post(
            &format!("/console/dead-letters/{}/discard", ids[1]),
            &[("note", "customer left")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let to = p.location().unwrap().to_string();
    assert_eq!(
        to,
        format!("/console/dead-letters?done=discarded&id={}", ids[1])
    );
    let p = wait_list(&mut a, &to, |r| r == [ids[2].clone()]).await;
    assert_eq!(rows(&p), [ids[2].clone()]);
    assert!(
        p.body.contains(&format!("Discarded {}", ids[1])),
        "{}",
        p.body
    );
    assert_eq!(text_of(&p.body, "dlq-size"), "1");
    assert_eq!(
        action_in_log(&node, &ids[1], false).await,
        Some((key_actor(&node.key_a), "customer left".into()))
    );

    bulk_retry(&node, &mut a, ids[2].clone()).await;

    // A key without the admin scope reads but cannot act.
    let reader = Tenants::new(node.ch.clone())
        .create_api_key(authed(
            &node.key_a,
            api::CreateApiKeyRequest {
                name: "support".into(),
                scopes: vec!["read".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let extra = dead_letter(&node, &node.key_a, "tech-9").await;
    let mut r = node.signed_in(&reader).await;
    let p = r.get(&format!("/console/dead-letters/{extra}")).await;
    assert_eq!(p.status, 200);
    assert!(!p.body.contains("id=\"retry-form\""));
    let p = r
        .post(&format!("/console/dead-letters/{extra}/retry"), &[])
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(text_of(&p.body, "error-message").contains("admin"));
    node.stop().await;
}

/// Bulk retry of the filtered set: a confirmation listing what, then the
/// counts (a notification no longer in the queue is reported as failed).
async fn bulk_retry(node: &ConsoleNode, a: &mut Client, left: String) {
    let mut ids = vec![left];
    for sub in ["tech-4", "tech-5"] {
        ids.push(dead_letter(node, &node.key_a, sub).await);
    }
    for sub in ["tech-3", "tech-4", "tech-5"] {
        set_phone(node, &node.key_a, sub, "+15145550199").await;
    }
    node.clock.advance(Duration::from_secs(1));
    a.get("/console/dead-letters?channel=sms").await;
    let p = a
        .post(
            "/console/dead-letters/bulk-retry",
            &[("channel", "sms"), ("workflow_id", ""), ("older_than", "")],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(text_of(&p.body, "bulk-count"), "3");
    assert_eq!(sorted(&rows(&p)), sorted(&ids));
    assert!(p.body.contains("id=\"confirm-bulk-retry\""));
    assert!(p.body.contains("at most 1000") || p.body.contains("at most 1,000"));
    let listed = p.body.split("name=\"ids\" value=\"").nth(1).unwrap();
    let listed = &listed[..listed.find('"').unwrap()];
    // One that is not (or no longer) in the queue is reported, not fatal.
    let with_gone = format!("{listed} gone-already");
    let p = a
        .post(
            "/console/dead-letters/bulk-retry/confirm",
            &[
                ("ids", &with_gone),
                ("note", "bulk after the fix"),
                ("query", "channel=sms"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(text_of(&p.body, "bulk-done"), "3");
    assert_eq!(text_of(&p.body, "bulk-failed"), "1");
    assert!(p.body.contains("data-notification=\"gone-already\""));
    assert!(
        p.body.contains("not in the dead-letter queue"),
        "{}",
        p.body
    );
    assert!(p.body.contains("/console/dead-letters?channel=sms"));
    for id in &ids {
        let n = wait_status(&node.ch, &node.key_a, id, "sent", Duration::from_secs(20)).await;
        assert_eq!(n.status, "sent", "{n:?}");
        let (actor, note) = action_in_log(node, id, true).await.expect("retried");
        assert_eq!(
            (actor, note.as_str()),
            (key_actor(&node.key_a), "bulk after the fix")
        );
    }
    let p = wait_list(a, "/console/dead-letters", |r| r.is_empty()).await;
    assert!(rows(&p).is_empty(), "{}", p.body);
    // Without its token, no bulk retry either.
    let p = a
        .post_raw(
            "/console/dead-letters/bulk-retry/confirm",
            &[("ids".into(), ids.join(" "))],
        )
        .await;
    assert_eq!(p.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_shows_the_tenants_rates_and_the_operator_the_lag() {
    let twilio = TwilioDouble::start().await;
    let node = start(&twilio).await;
    // A tenant of this test alone: the rates are the process's, shared
    // with the other tests of this binary.
    let key = create_tenant(&node.ch, LIVE_TENANT).await;
    sms_workflow(&node, &key).await;
    let id = dead_letter(&node, &key, "tech-1").await;
    let mut a = node.signed_in(&key).await;

    let p = a.get("/console/live").await;
    assert_eq!(p.status, 200, "{}", p.body);
    for attr in [
        "id=\"live\"",
        "aria-live=\"polite\"",
        "data-refresh-url=\"/console/live/fragment\"",
        "data-refresh-ms=\"2000\"",
    ] {
        assert!(p.body.contains(attr), "{attr} in {}", p.body);
    }
    assert_eq!(text_of(&p.body, "triggers-per-s"), "0.1", "1 in 10 s");
    assert_eq!(text_of(&p.body, "failures-per-s"), "0.1");
    assert_eq!(text_of(&p.body, "sends-per-s"), "0.0");
    assert!(p.body.contains("data-channel=\"sms\""));
    assert_eq!(text_of(&p.body, "dlq-size"), "1");
    assert_eq!(text_of(&p.body, "dlq-threshold"), "5");
    assert!(
        !p.body.contains("id=\"processor-lag\""),
        "the lag is the operator's"
    );

    // The fragment alone, current: 10 s later the rates fell to zero.
    node.clock.advance(Duration::from_secs(10));
    let f = a.get("/console/live/fragment").await;
    assert_eq!(f.status, 200);
    assert!(!f.body.contains("<html"), "{}", f.body);
    assert_eq!(text_of(&f.body, "triggers-per-s"), "0.0");
    assert_eq!(text_of(&f.body, "dlq-size"), "1");

    // Tenant B: its own (nothing).
    let mut b = node.signed_in(&node.key_b).await;
    let f = b.get("/console/live/fragment").await;
    assert_eq!(text_of(&f.body, "dlq-size"), "0");
    assert_eq!(text_of(&f.body, "dlq-threshold"), "2");
    assert!(!f.body.contains(&id));

    // The operator: the lag per processor and topic.
    let mut o = node.signed_in(ADMIN_TOKEN).await;
    o.get("/console/tenant").await;
    let p = o.post("/console/tenant", &[("tenant", LIVE_TENANT)]).await;
    assert_eq!(p.status, 303);
    let f = o.get("/console/live/fragment").await;
    assert_eq!(f.status, 200, "{}", f.body);
    let lag: u64 = text_of(&f.body, "processor-lag").parse().unwrap();
    assert!(lag < 1_000, "{lag}");
    for processor in ["router", "dispatcher", "inbox", "projector"] {
        assert!(
            f.body.contains(&format!("data-processor=\"{processor}\"")),
            "{processor}: {}",
            f.body
        );
    }
    // Without a session: sign-in.
    let p = node.client().get("/console/live/fragment").await;
    assert_eq!(p.status, 303);
    node.stop().await;
}
