//! `GET /v1/notifications` end to end (issue #29): notifications triggered
//! over gRPC, sent by the sink or dead-lettered, found by each filter over
//! real HTTP; two tenants, and a key of one never sees the other's; bad
//! filters and forged cursors answer problem+json naming the field.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::console::ConsoleNode;
use support::*;

const DAY_MS: u64 = 86_400_000;

/// Workflows of both tenants: an email (the sink delivers it) and an SMS
/// (no phone number anywhere: it cannot be sent, and is dead-lettered).
pub const WORKFLOWS: [&str; 2] = [
    "id: welcome\nsteps:\n  - { id: mail, type: send, channel: email, template: welcome-mail }\n",
    "id: alert\nsteps:\n  - { id: text, type: send, channel: sms, template: alert-sms }\n",
];

pub async fn templates(ch: &tonic::transport::Channel, key: &str) {
    for (id, channel, subject, body) in [
        (
            "welcome-mail",
            "email",
            "Welcome {{ payload.name }}",
            "<b>Hello</b> {{ payload.name }}",
        ),
        ("alert-sms", "sms", "", "Alert {{ payload.name }}"),
    ] {
        put_default_template(ch, key, id, channel, subject, body).await;
    }
    apply_workflows(ch, key, &WORKFLOWS).await;
}

async fn get(node: &ConsoleNode, key: &str, query: &str) -> (u16, Value) {
    let url = format!("{}/v1/notifications?{query}", node.base());
    let (status, _, body) = http_call("GET", &url, key, "").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn ids(page: &Value) -> Vec<String> {
    page["notifications"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|n| n["notification_id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls the search by id until the notification's indexed status is `want`.
async fn wait_indexed(node: &ConsoleNode, key: &str, id: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = get(node, key, &format!("id={id}")).await;
        if page["notifications"][0]["status"] == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never {want}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_by_each_filter_within_the_callers_tenant() {
    let node = ConsoleNode::start(|_| {}).await;
    let (a, b) = (node.key_a.clone(), node.key_b.clone());
    for key in [&a, &b] {
        templates(&node.ch, key).await;
    }
    let payload = r#"{"name":"Ana"}"#;
    let first = trigger_one(&node.ch, &a, "welcome", "ana", "ana@example.test", payload).await;
    let dead = trigger_one(&node.ch, &a, "alert", "bob", "", payload).await;
    node.clock.advance(Duration::from_millis(3 * DAY_MS));
    let last = trigger_one(&node.ch, &a, "welcome", "bob", "bob@example.test", payload).await;
    let theirs = trigger_one(&node.ch, &b, "welcome", "ana", "ana@example.test", payload).await;
    wait_indexed(&node, &a, &first, "delivered").await;
    wait_indexed(&node, &a, &dead, "dead_lettered").await;
    wait_indexed(&node, &a, &last, "delivered").await;
    wait_indexed(&node, &b, &theirs, "delivered").await;

    // Everything of the tenant, newest first; the other tenant's never.
    let (status, page) = get(&node, &a, "").await;
    assert_eq!(status, 200, "{page}");
    let mut want = vec![first.clone(), dead.clone()];
    want.sort();
    want.reverse();
    want.insert(0, last.clone());
    assert_eq!(ids(&page), want);
    assert_eq!(page["exhausted_range"], true);
    assert!(page.get("next_cursor").is_none(), "{page}");
    let row = &page["notifications"][0];
    assert_eq!(
        (&row["workflow_id"], &row["subscriber_id"]),
        (&Value::from("welcome"), &Value::from("bob"))
    );
    assert_eq!(ids(&get(&node, &b, "").await.1), [theirs.as_str()]);

    // Each filter.
    for (query, want) in [
        ("subscriber=ana", vec![first.clone()]),
        ("subscriber=bob&workflow=welcome", vec![last.clone()]),
        ("workflow=alert", vec![dead.clone()]),
        ("status=dead_lettered", vec![dead.clone()]),
        ("status=delivered&subscriber=ana", vec![first.clone()]),
        ("status=running", vec![]),
        (&format!("id={first}"), vec![first.clone()]),
        (&format!("id={}", first.to_uppercase()), vec![first.clone()]),
        // A's key on B's id: nothing.
        (&format!("id={theirs}"), vec![]),
        (&format!("id={first}&workflow=alert"), vec![]),
    ] {
        let (status, page) = get(&node, &a, query).await;
        assert_eq!(status, 200, "{query}: {page}");
        let mut got = ids(&page);
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{query}");
    }
    // The time range: the first two days only.
    let t0 = clarion_domain::Id::parse_hex(&first).unwrap().time_ms();
    let iso = |ms: i64| clarion_domain::time::format_instant(ms);
    let range = format!("from={}&to={}", iso(t0 - 1_000), iso(t0 + DAY_MS as i64));
    let mut got = ids(&get(&node, &a, &range).await.1);
    got.sort();
    let mut want = vec![first.clone(), dead.clone()];
    want.sort();
    assert_eq!(got, want);
    let page = get(&node, &a, &format!("subscriber=bob&{range}")).await.1;
    assert_eq!(ids(&page), [dead.as_str()]);

    // Pages of one, by cursor, to the end.
    let mut seen = Vec::new();
    let mut query = "limit=1".to_string();
    loop {
        let (status, page) = get(&node, &a, &query).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=1&cursor={c}"),
            None => break,
        }
        assert!(seen.len() <= 3, "{seen:?}");
    }
    let mut all = ids(&get(&node, &a, "").await.1);
    assert_eq!(seen.len(), 3);
    all.sort();
    seen.sort();
    assert_eq!(seen, all);

    // A cursor of A's, presented by B or with other filters: refused.
    let cursor = get(&node, &a, "limit=1").await.1["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for (key, query) in [
        (&b, format!("limit=1&cursor={cursor}")),
        (&a, format!("limit=1&status=sent&cursor={cursor}")),
        (&a, "cursor=AQ-not-a-cursor".to_string()),
        (&a, "cursor=%00%FF".to_string()),
    ] {
        let (status, problem) = get(&node, key, &query).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "cursor", "{problem}");
    }

    // Bad filters: 400 problem+json naming the field.
    for (query, field) in [
        ("status=lost", "status"),
        ("from=yesterday", "from"),
        ("to=2026-02-30T00:00:00Z", "to"),
        ("id=zz", "id"),
        ("limit=0", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("page=99999999999", "page"),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let url = format!("{}/v1/notifications?{query}", node.base());
        let (status, head, body) = http_call("GET", &url, &a, "").await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(head.contains("application/problem+json"), "{head}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    node.stop().await;
}
