//! Counting from the outcomes: the same sends give the same figures
//! whether their outcomes carry the send's context (counted alone) or not
//! (joined with the request, as in logs from before), repeats count once,
//! rows of the release before still serve, and a send costs fewer writes.

use super::*;
use crate::query::{self, ReportQuery};
use crate::Dimension;
use clarion_domain::{Actor, TenantId};
use clarion_store::embedded::SqliteStore;
use clarion_store::Op;

const T0: i64 = 1_772_445_600_000;

/// Whether outcomes carry their context (and requests say so).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// Logged before: requests joined with outcomes.
    Joined,
    /// Outcomes carry the send's context.
    Context,
}

/// The three inputs, in the order a runner may read them in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topic {
    Deliveries,
    Triggers,
    Dispatch,
}

/// One send of a scripted mix; times are ms after `T0`.
#[derive(Clone, Default)]
struct Send {
    tenant: &'static str,
    notification: u8,
    attempt: &'static str,
    channel: &'static str,
    provider: &'static str,
    workflow: &'static str,
    template: &'static str,
    subscriber: &'static str,
    trigger: i64,
    requested: i64,
    sent: Option<i64>,
    /// Delivered, by the dispatcher (`true`: by a status callback, which
    /// knows nothing of the request, on the triggers stream).
    delivered: Option<(i64, bool)>,
    /// Failed: (at, permanent).
    failed: Option<(i64, bool)>,
    /// Opened: (at, kind, whether the report names the attempt).
    opened: Option<(i64, &'static str, bool)>,
    clicked: Option<i64>,
}

fn nid(s: &Send) -> String {
    Id::time_ordered(T0 + s.trigger, &[b"n", &[s.notification]]).to_hex()
}

fn event(tenant: &str, key: &str, at: i64, payload: Payload) -> Event {
    Event {
        id: Id::derive(&[key.as_bytes()]),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/sub"),
        occurred_at_ms: T0 + at,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("test".into()),
        payload,
    }
}

/// The events of a send, each with its topic.
fn events(s: &Send, shape: Shape) -> Vec<(Topic, Event)> {
    let nid = nid(s);
    let d = pb::DispatchRequested {
        notification_id: nid.clone(),
        attempt_id: s.attempt.into(),
        channel: s.channel.into(),
        provider: s.provider.into(),
        workflow_id: s.workflow.into(),
        template_id: s.template.into(),
        subscriber_id: s.subscriber.into(),
        body: "the message".into(),
        context_in_outcomes: shape == Shape::Context,
        ..Default::default()
    };
    let context = (shape == Shape::Context).then(|| send::context(&d, T0 + s.requested));
    let key = |what: &str| format!("{}/{}/{what}", s.tenant, s.attempt);
    let ev = |what: &str, at: i64, p: Payload| event(s.tenant, &key(what), at, p);
    let mut out = vec![(
        Topic::Dispatch,
        ev("request", s.requested, Payload::DispatchRequested(d)),
    )];
    if let Some(at) = s.sent {
        let sent = pb::NotificationSent {
            notification_id: nid.clone(),
            attempt_id: s.attempt.into(),
            provider: s.provider.into(),
            provider_message_id: "m".into(),
            context: context.clone(),
        };
        out.push((Topic::Deliveries, ev("sent", at, Payload::Sent(sent))));
    }
    if let Some((at, callback)) = s.delivered {
        let delivered = pb::NotificationDelivered {
            notification_id: nid.clone(),
            attempt_id: s.attempt.into(),
            provider: s.provider.into(),
            context: if callback { None } else { context.clone() },
        };
        let topic = if callback {
            Topic::Triggers
        } else {
            Topic::Deliveries
        };
        out.push((topic, ev("delivered", at, Payload::Delivered(delivered))));
    }
    if let Some((at, permanent)) = s.failed {
        let failed = pb::NotificationFailed {
            notification_id: nid.clone(),
            attempt_id: s.attempt.into(),
            provider: s.provider.into(),
            reason: format!("refused by {}", s.provider),
            retryable: !permanent,
            stage: "dispatch".into(),
            context: context.clone(),
        };
        out.push((Topic::Deliveries, ev("failed", at, Payload::Failed(failed))));
    }
    let engaged = |kind: &str, named: bool| {
        Payload::Engaged(pb::EngagementRecorded {
            notification_id: nid.clone(),
            attempt_id: if named {
                s.attempt.into()
            } else {
                String::new()
            },
            kind: kind.into(),
            source: "test".into(),
        })
    };
    if let Some((at, kind, named)) = s.opened {
        out.push((Topic::Triggers, ev("opened", at, engaged(kind, named))));
    }
    if let Some(at) = s.clicked {
        out.push((Topic::Triggers, ev("clicked", at, engaged("clicked", true))));
    }
    out
}

/// One email sent and delivered (the dispatcher's report), nothing else.
fn delivered_email() -> Send {
    Send {
        tenant: "acme",
        notification: 1,
        attempt: "a1",
        channel: "email",
        provider: "smtp",
        workflow: "welcome",
        subscriber: "ana",
        requested: 100,
        sent: Some(1_000),
        delivered: Some((1_000, false)),
        ..Default::default()
    }
}

/// A mix of what becomes of sends, on two tenants.
fn mix() -> Vec<Send> {
    let email = Send {
        tenant: "acme",
        channel: "email",
        provider: "smtp",
        workflow: "welcome",
        template: "hello",
        subscriber: "ana",
        ..Default::default()
    };
    let sms = Send {
        channel: "sms",
        provider: "twilio",
        workflow: "alerts",
        template: "alert",
        ..email.clone()
    };
    let mut out = engaged(&email, &sms);
    out.extend(failed(&email, &sms));
    out.extend(outside_workflows(&email, &sms));
    out.extend(other_tenant(&email));
    out
}

/// Sends that reached their recipients, then engagement.
fn engaged(email: &Send, sms: &Send) -> Vec<Send> {
    vec![
        // Sent, delivered, opened by the pixel and clicked.
        Send {
            notification: 1,
            attempt: "a1",
            requested: 200,
            sent: Some(1_200),
            delivered: Some((1_200, false)),
            opened: Some((60_000, "opened", true)),
            clicked: Some(61_000),
            ..email.clone()
        },
        // Sent, delivered by a status callback, acknowledged by an app
        // that names no attempt.
        Send {
            notification: 2,
            attempt: "a2",
            requested: 500,
            sent: Some(2_000),
            delivered: Some((9_000, true)),
            opened: Some((70_000, "acknowledged", false)),
            ..sms.clone()
        },
    ]
}

/// A bounce, and a failure retried.
fn failed(email: &Send, sms: &Send) -> Vec<Send> {
    vec![
        // Bounced.
        Send {
            notification: 3,
            attempt: "a3",
            requested: 300,
            failed: Some((1_500, true)),
            ..email.clone()
        },
        // Failed, then retried: sent, delivered, read (in an app: no attempt named).
        Send {
            notification: 4,
            attempt: "a4",
            channel: "push",
            provider: "fcm",
            template: "nudge",
            trigger: 100,
            requested: 400,
            failed: Some((1_600, false)),
            ..sms.clone()
        },
        Send {
            notification: 4,
            attempt: "a4-retry",
            channel: "push",
            provider: "fcm",
            template: "nudge",
            trigger: 100,
            requested: 120_000,
            sent: Some(130_000),
            delivered: Some((131_000, false)),
            opened: Some((140_000, "read", false)),
            ..sms.clone()
        },
    ]
}

/// Sends of no workflow: a contact verification, the operator's alert.
fn outside_workflows(email: &Send, sms: &Send) -> Vec<Send> {
    vec![
        // A contact verification: no workflow, no template.
        Send {
            notification: 5,
            attempt: "a5",
            workflow: "",
            template: "",
            requested: 800,
            sent: Some(3_000),
            ..sms.clone()
        },
        // The operator's dead-letter alert: not counted.
        Send {
            notification: 6,
            attempt: "a6",
            channel: "webhook",
            provider: "webhook",
            workflow: "",
            template: "",
            subscriber: "",
            requested: 900,
            sent: Some(1_000),
            delivered: Some((1_000, false)),
            ..email.clone()
        },
    ]
}

/// Another tenant's send.
fn other_tenant(email: &Send) -> Vec<Send> {
    vec![
        // Another tenant's inbox item, read.
        Send {
            tenant: "globex",
            notification: 7,
            attempt: "a7",
            channel: "in_app",
            provider: "inbox",
            requested: 1_000,
            sent: Some(1_100),
            delivered: Some((1_100, false)),
            opened: Some((90_000, "read", true)),
            ..email.clone()
        },
    ]
}

fn input(offset: usize, e: Event) -> Input {
    Input {
        offset: offset as u64,
        raw: e.encode().into(),
        event: e,
    }
}

/// The batches a runner may cut the mix into: two rounds (before and
/// after `split`), each reading deliveries, then triggers, then dispatch
/// (so joined outcomes wait for their requests), each round's batch in
/// log order; then every outcome of `repeat` published again.
fn batches(sends: &[Send], shape: Shape, split: i64, repeat: &[&str]) -> Vec<Vec<Input>> {
    let mut all: Vec<(Topic, Event)> = sends.iter().flat_map(|s| events(s, shape)).collect();
    all.sort_by_key(|(_, e)| e.occurred_at_ms);
    let mut out = Vec::new();
    for (from, to) in [(i64::MIN, T0 + split), (T0 + split, i64::MAX)] {
        for topic in [Topic::Deliveries, Topic::Triggers, Topic::Dispatch] {
            let batch: Vec<Input> = all
                .iter()
                .filter(|(t, e)| *t == topic && (from..to).contains(&e.occurred_at_ms))
                .enumerate()
                .map(|(i, (_, e))| input(i, e.clone()))
                .collect();
            if !batch.is_empty() {
                out.push(batch);
            }
        }
    }
    let again: Vec<Input> = all
        .iter()
        .filter(|(t, e)| *t != Topic::Dispatch && repeat.contains(&attempt_of(e)))
        .enumerate()
        .map(|(i, (_, e))| input(i, e.clone()))
        .collect();
    if !again.is_empty() {
        out.push(again);
    }
    out
}

fn attempt_of(e: &Event) -> &str {
    match &e.payload {
        Payload::Sent(s) => &s.attempt_id,
        Payload::Delivered(d) => &d.attempt_id,
        Payload::Failed(f) => &f.attempt_id,
        Payload::Engaged(g) => &g.attempt_id,
        Payload::DispatchRequested(d) => &d.attempt_id,
        _ => "",
    }
}

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
    (dir, store)
}

/// Decides and commits each batch in turn; returns what each wrote.
async fn run(store: &SqliteStore, batches: Vec<Vec<Input>>) -> Vec<Vec<String>> {
    let mut p = AnalyticsProcessor::new(Retention::default(), 0);
    let mut written = Vec::new();
    for inputs in batches {
        let mut batch = Batch::default();
        p.process(store, &mut batch, &inputs).await.unwrap();
        written.push(pks(&batch));
        store.write(batch.writes).await.unwrap();
    }
    written
}

/// The partition keys of the rows a batch puts.
fn pks(b: &Batch) -> Vec<String> {
    b.writes
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::Put { key, .. } => Some(key.pk.clone()),
            _ => None,
        })
        .collect()
}

/// How many of `pks` are send rows (`s/`, or the legacy `a/` and `n/`).
fn send_rows(pks: &[String]) -> usize {
    pks.iter()
        .filter(|pk| ["s/", "a/", "n/"].iter().any(|p| pk.starts_with(p)))
        .count()
}

/// Every report of a tenant over the hour, by every dimension and both
/// granularities, and its provider health.
async fn figures(
    store: &SqliteStore,
    tenant: &str,
) -> (Vec<query::Report>, Vec<query::ProviderHealth>) {
    let mut reports = Vec::new();
    for dimension in Dimension::ALL {
        for granularity in Granularity::ALL {
            let q = ReportQuery {
                dimension,
                value: None,
                from_ms: T0,
                to_ms: T0 + 3_600_000,
                granularity,
            };
            reports.push(query::report(store, tenant, &q).await.unwrap());
        }
    }
    let health = query::provider_health(store, tenant, T0, T0 + 3_600_000, Granularity::Minute)
        .await
        .unwrap();
    (reports, health)
}

fn totals<'a>(r: &'a query::Report, value: &str) -> &'a Counts {
    &r.groups
        .iter()
        .find(|g| g.value == value)
        .unwrap_or_else(|| panic!("no {value} in {r:?}"))
        .totals
}

fn counted(c: &Counts) -> [u64; 7] {
    [
        c.attempted,
        c.sent,
        c.delivered,
        c.failed,
        c.bounced,
        c.opened,
        c.clicked,
    ]
}

fn latencies(c: &Counts) -> [u64; 4] {
    crate::counts::Latency::ALL.map(|l| c.latency(l).count())
}

/// (1) The figures of a scripted mix are the same whether the outcomes
/// carry the send's context or are joined with the requests — and are
/// the mix's.
#[tokio::test]
async fn counts_rates_and_latencies_are_the_same_from_the_outcomes_alone() {
    let mut results = Vec::new();
    for shape in [Shape::Joined, Shape::Context] {
        let (_dir, store) = store();
        run(&store, batches(&mix(), shape, 100_000, &["a1", "a4-retry"])).await;
        results.push((
            figures(&store, "acme").await,
            figures(&store, "globex").await,
        ));
    }
    let ((acme, globex), (acme_context, globex_context)) = (&results[0], &results[1]);
    assert_eq!(acme, acme_context);
    assert_eq!(globex, globex_context);
    // All of acme: a1, a2, a3, a4, a4-retry and a5; not the operator's a6.
    let all = totals(&acme.0[0], "all");
    assert_eq!(counted(all), [6, 4, 3, 2, 1, 3, 1]);
    assert_eq!(latencies(all), [4, 4, 3, 3]);
    assert_eq!(all.delivery_rate(), Some(0.5));
    let by_channel = &acme.0[2];
    assert_eq!(counted(totals(by_channel, "push")), [2, 1, 1, 1, 0, 1, 0]);
    assert_eq!(counted(totals(by_channel, "sms")), [2, 2, 1, 0, 0, 1, 0]);
    assert!(by_channel.groups.iter().all(|g| g.value != "webhook"));
    let by_workflow = &acme.0[6];
    assert_eq!(
        counted(totals(by_workflow, "(none)")),
        [1, 1, 0, 0, 0, 0, 0]
    );
    // The latencies are the mix's: trigger → sent of a1 is 1.2 s.
    let hello = totals(&acme.0[8], "hello");
    let mut a1 = crate::Histogram::default();
    a1.record(1_200);
    assert_eq!(hello.trigger_to_sent, a1, "a1's alone (a3 failed)");
    let smtp = acme.1.iter().find(|h| h.provider == "smtp").unwrap();
    assert_eq!(smtp.last.last_error, "refused by smtp");
    assert_eq!(counted(totals(&globex.0[0], "all")), [1, 1, 1, 0, 0, 1, 0]);
}

/// (2) An outcome published again — in its batch, in a later one — is
/// counted once; so is a delivery the dispatcher and a status callback
/// both report.
#[tokio::test]
async fn a_repeated_outcome_is_counted_once() {
    let (_dir, store) = store();
    let s = delivered_email();
    let outcomes: Vec<Event> = events(&s, Shape::Context)
        .into_iter()
        .filter(|(t, _)| *t == Topic::Deliveries)
        .map(|(_, e)| e)
        .collect();
    let twice: Vec<Input> = outcomes
        .iter()
        .chain(&outcomes)
        .enumerate()
        .map(|(i, e)| input(i, e.clone()))
        .collect();
    let callback = Send {
        delivered: Some((5_000, true)),
        ..s.clone()
    };
    let reported: Vec<Input> = events(&callback, Shape::Context)
        .into_iter()
        .filter(|(t, _)| *t == Topic::Triggers)
        .map(|(_, e)| input(0, e))
        .collect();
    let later: Vec<Input> = outcomes.iter().map(|e| input(9, e.clone())).collect();
    let written = run(&store, vec![twice, later, reported]).await;
    let (reports, _) = figures(&store, "acme").await;
    let all = totals(&reports[0], "all");
    assert_eq!(counted(all), [1, 1, 1, 0, 0, 0, 0]);
    assert_eq!(latencies(all), [1, 1, 1, 0]);
    assert!(
        written[1].is_empty() && written[2].is_empty(),
        "{written:?}"
    );
}

/// (3) Outcomes without context — logged before, or by an older
/// dispatcher — are joined with their requests, in any order; the rows the
/// release before wrote still count engagement with sends it saw.
#[tokio::test]
async fn outcomes_without_context_are_joined_and_old_rows_still_serve() {
    let (_dir, store) = store();
    // The release before counted a1 sent (and pointed n1 at it), and had
    // seen a2's request only.
    let nid1 = Id::time_ordered(T0, &[b"old1"]).to_hex();
    let nid2 = Id::time_ordered(T0, &[b"old2"]).to_hex();
    let dims = Dims {
        channel: "email".into(),
        provider: "smtp".into(),
        workflow: "welcome".into(),
        template: "hello".into(),
    };
    let mut w = clarion_store::WriteBatch::new();
    for (nid, attempt, sent) in [(&nid1, "a1", true), (&nid2, "a2", false)] {
        let mut a = Attempt::default();
        a.apply(Fact::Dispatched {
            dims: dims.clone(),
            trigger_ms: T0,
            at: T0 + 100,
        });
        if sent {
            a.apply(Fact::Sent { at: T0 + 1_000 });
            a.settle();
        }
        w.put(rows::attempt_key("acme", attempt), a.encode());
        w.put(
            rows::notification_key("acme", nid),
            attempt.as_bytes().to_vec(),
        );
    }
    store.write(w).await.unwrap();
    let ev = |key: &str, at: i64, p: Payload| input(0, event("acme", key, at, p));
    let engaged = |nid: &str, attempt: &str, kind: &str| {
        Payload::Engaged(pb::EngagementRecorded {
            notification_id: nid.into(),
            attempt_id: attempt.into(),
            kind: kind.into(),
            source: "test".into(),
        })
    };
    let sent2 = Payload::Sent(pb::NotificationSent {
        notification_id: nid2.clone(),
        attempt_id: "a2".into(),
        ..Default::default()
    });
    // And a3 is joined in this release: its outcome first, its request later.
    let s3 = Send {
        tenant: "acme",
        notification: 3,
        attempt: "a3",
        channel: "sms",
        provider: "twilio",
        workflow: "alerts",
        subscriber: "ana",
        requested: 300,
        sent: Some(1_300),
        ..Default::default()
    };
    let (request3, sent3): (Vec<_>, Vec<_>) = events(&s3, Shape::Joined)
        .into_iter()
        .partition(|(t, _)| *t == Topic::Dispatch);
    let batches = vec![
        vec![
            ev("click1", 60_000, engaged(&nid1, "a1", "clicked")),
            ev("ack1", 61_000, engaged(&nid1, "", "acknowledged")),
            ev("sent2", 2_000, sent2),
        ],
        sent3.into_iter().map(|(_, e)| input(0, e)).collect(),
        request3.into_iter().map(|(_, e)| input(0, e)).collect(),
    ];
    run(&store, batches).await;
    let (reports, _) = figures(&store, "acme").await;
    // a1's click and open (the app's ack is the same open), a2's and a3's sends.
    let by_channel = &reports[2];
    assert_eq!(counted(totals(by_channel, "email")), [1, 1, 0, 0, 0, 1, 1]);
    assert_eq!(counted(totals(by_channel, "sms")), [1, 1, 0, 0, 0, 0, 0]);
    assert_eq!(latencies(totals(by_channel, "email")), [1, 1, 0, 1]);
}

/// (4) A send whose outcomes carry its context writes one row (at its
/// outcome, none at its request) where a joined one writes two — and the
/// release before wrote three (`a/` and `n/` at the request, `a/` again
/// at the outcome).
#[tokio::test]
async fn a_send_counted_from_its_outcomes_writes_one_row() {
    let s = delivered_email();
    let mut written = Vec::new();
    for shape in [Shape::Joined, Shape::Context] {
        let (_dir, store) = store();
        let (request, outcomes): (Vec<_>, Vec<_>) = events(&s, shape)
            .into_iter()
            .partition(|(t, _)| *t == Topic::Dispatch);
        let inputs = |v: Vec<(Topic, Event)>| v.into_iter().map(|(_, e)| input(0, e)).collect();
        written.push(run(&store, vec![inputs(request), inputs(outcomes)]).await);
    }
    let (joined, context) = (&written[0], &written[1]);
    assert_eq!(
        send_rows(&joined[0]) + send_rows(&joined[1]),
        2,
        "{joined:?}"
    );
    assert!(context[0].is_empty(), "nothing at the request: {context:?}");
    assert_eq!(send_rows(&context[1]), 1, "{context:?}");
    // The counts' rows are the same.
    assert_eq!(joined[1].len() - 1, context[1].len() - 1);
    // Sent and delivered in two batches: the row again for the delivery.
    let (_dir, store) = store();
    let outcomes: Vec<Vec<Input>> = events(&s, Shape::Context)
        .into_iter()
        .filter(|(t, _)| *t == Topic::Deliveries)
        .map(|(_, e)| vec![input(0, e)])
        .collect();
    let split = run(&store, outcomes).await;
    assert_eq!(split.iter().map(|w| send_rows(w)).sum::<usize>(), 2);
}
