//! The console's Notifications pages over real HTTP (issue #29): two
//! tenants' notifications (one delivered by the sink, one dead-lettered),
//! searched by each filter, paged by cursor; the detail page's status,
//! timeline, rendered message (escaped, never rendered as HTML) and
//! attempts; another tenant's id by URL is a 404; malformed filters,
//! forged ids, garbled cursors and page numbers answer a clear page naming
//! the field, never a stack trace.

use crate::support;

use std::time::Duration;

use support::console::{Client, ConsoleNode, Page};
use support::*;

const DAY_MS: u64 = 86_400_000;

/// An email the sink delivers, whose template writes HTML around the
/// payload; an SMS that has no phone number to go to (dead-lettered).
async fn given(ch: &tonic::transport::Channel, key: &str) {
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
    apply_workflows(
        ch,
        key,
        &[
            "id: welcome\nsteps:\n  - { id: mail, type: send, channel: email, template: welcome-mail }\n",
            "id: alert\nsteps:\n  - { id: text, type: send, channel: sms, template: alert-sms }\n",
        ],
    )
    .await;
}

/// Polls the REST search by id until the indexed status is `want`.
async fn wait_indexed(node: &ConsoleNode, key: &str, id: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("{}/v1/notifications?id={id}", node.base());
        let (_, _, body) = http_call("GET", &url, key, "").await;
        let page: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if page["notifications"][0]["status"] == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id}: {body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The notification ids listed in a results page, in order.
fn listed(p: &Page) -> Vec<String> {
    p.body
        .split("<tr data-notification=\"")
        .skip(1)
        .map(|s| s[..32].to_string())
        .collect()
}

/// A page that answers a bad request: its status, the field it names, and
/// nothing of a crash.
fn assert_clear(p: &Page, status: u16, field: Option<&str>) {
    assert_eq!(p.status, status, "{}", p.body);
    assert!(p.body.contains("id=\"error-message\""), "{}", p.body);
    if let Some(f) = field {
        assert!(
            p.body
                .contains(&format!("<strong id=\"error-field\">{f}</strong>")),
            "{f} not named: {}",
            p.body
        );
    }
    for leak in [
        "panicked",
        "RUST_BACKTRACE",
        "src/",
        "Error {",
        "Some(",
        "Invalid(",
    ] {
        assert!(!p.body.contains(leak), "{leak:?} in {}", p.body);
    }
}

async fn search(c: &mut Client, query: &str) -> Page {
    c.get(&format!("/console/notifications?{query}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_searched_and_shown_within_the_tenant() {
    let node = ConsoleNode::start(|_| {}).await;
    let (a, b) = (node.key_a.clone(), node.key_b.clone());
    given(&node.ch, &a).await;
    given(&node.ch, &b).await;
    let payload = r#"{"name":"<script>alert(1)</script>Ana"}"#;
    let first = trigger_one(&node.ch, &a, "welcome", "ana", "ana@example.test", payload).await;
    let dead = trigger_one(&node.ch, &a, "alert", "bob", "", payload).await;
    node.clock.advance(Duration::from_millis(2 * DAY_MS));
    let last = trigger_one(&node.ch, &a, "welcome", "bob", "bob@example.test", payload).await;
    let theirs = trigger_one(&node.ch, &b, "welcome", "ana", "ana@example.test", payload).await;
    wait_indexed(&node, &a, &first, "delivered").await;
    wait_indexed(&node, &a, &dead, "dead_lettered").await;
    wait_indexed(&node, &a, &last, "delivered").await;
    wait_indexed(&node, &b, &theirs, "delivered").await;

    let mut ca = node.signed_in(&a).await;
    let mut cb = node.signed_in(&b).await;

    // The page without filters lists the tenant's newest first, with the
    // form (labelled fields) and status badges; never B's.
    let p = ca.get("/console/notifications").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("<table id=\"results\">"), "{}", p.body);
    for label in [
        "for=\"f-subscriber\"",
        "for=\"f-status\"",
        "for=\"f-from\"",
        "for=\"f-id\"",
    ] {
        assert!(p.body.contains(label), "{label}");
    }
    let got = listed(&p);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], last);
    assert!(!got.contains(&theirs));
    assert!(p.body.contains("class=\"status status-dead_lettered\""));
    assert!(p
        .body
        .contains(&format!("href=\"/console/notifications/{first}\"")));
    assert!(p.body.contains("id=\"scanned\""), "the scanned-range note");
    assert_eq!(
        listed(&cb.get("/console/notifications").await),
        [theirs.as_str()]
    );

    // Each filter.
    let t0 = clarion_domain::Id::parse_hex(&first).unwrap().time_ms();
    let iso = |ms: i64| clarion_domain::time::format_instant(ms);
    for (query, want) in [
        (
            "subscriber=ana&workflow=&status=&from=&to=&id=".to_string(),
            vec![&first],
        ),
        ("workflow=alert".into(), vec![&dead]),
        ("status=dead_lettered".into(), vec![&dead]),
        ("status=delivered&subscriber=bob".into(), vec![&last]),
        (format!("id={first}"), vec![&first]),
        (
            format!("from={}&to={}", iso(t0 - 1_000), iso(t0 + 1_000)),
            {
                let mut w = vec![&first, &dead];
                w.sort();
                w.reverse();
                w
            },
        ),
    ] {
        let p = search(&mut ca, &query).await;
        assert_eq!(p.status, 200, "{query}: {}", p.body);
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(listed(&p), want, "{query}");
    }
    // The selected status stays selected; B finds nothing by A's id.
    let p = search(&mut ca, "status=dead_lettered").await;
    assert!(p.body.contains("<option value=\"dead_lettered\" selected>"));
    let p = search(&mut cb, &format!("id={first}")).await;
    assert_eq!(p.status, 200);
    assert!(listed(&p).is_empty() && p.body.contains("id=\"no-results\""));

    // Pages of two, then the rest by the "Next page" link (no script).
    let p = search(&mut ca, "limit=2").await;
    assert_eq!(listed(&p).len(), 2);
    let at = p.body.find("id=\"next-page\"").expect("a next page link");
    let href_at = p.body[..at].rfind("href=\"").unwrap() + 6;
    let href = p.body[href_at..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(
        href.starts_with("/console/notifications?limit=2&cursor="),
        "{href}"
    );
    let next = ca.get(&href).await;
    assert_eq!(next.status, 200, "{}", next.body);
    let mut all: Vec<String> = listed(&p).into_iter().chain(listed(&next)).collect();
    all.sort();
    let mut want = vec![first.clone(), dead.clone(), last.clone()];
    want.sort();
    assert_eq!(all, want);
    assert!(!next.body.contains("id=\"next-page\""));

    // The detail page: status, summary, timeline, message, attempts.
    let p = ca.get(&format!("/console/notifications/{first}")).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(
        p.body
            .contains("<span id=\"status\" class=\"status status-delivered\">"),
        "{}",
        p.body
    );
    assert!(p.body.contains("<ol class=\"timeline\" id=\"timeline\""));
    for event in [
        "triggered",
        "routed",
        "dispatch_requested",
        "sent",
        "delivered",
        "ended",
    ] {
        let li = format!("<li data-event=\"clarion.notification.{event}.v1\">");
        assert!(p.body.contains(&li), "{li} missing: {}", p.body);
    }
    assert!(p.body.contains("welcome (version 1)"));
    assert!(p.body.contains("href=\"/console/subscribers/ana\""));
    assert!(p.body.contains("ana@example.test"));
    // The tenant's HTML and the payload's script are text, never markup.
    assert!(
        p.body.contains("&lt;b&gt;Hello&lt;&#x2f;b&gt;"),
        "{}",
        p.body
    );
    assert!(!p.body.contains("<b>Hello</b>"));
    assert!(!p.body.contains("<script>alert(1)"));
    assert!(p.body.contains("data-outcome=\"delivered\""));
    assert!(p.body.contains("Accepted by sink"));

    // The dead letter: why, and a notice after a retry.
    let p = ca
        .get(&format!("/console/notifications/{dead}?done=retried"))
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("status status-dead_lettered"));
    assert!(p
        .body
        .contains("data-event=\"clarion.notification.failed.v1\""));
    assert!(p.body.contains("data-outcome=\"failed\""));
    assert!(p.body.contains("Retry requested"));

    // B's session on A's notification by URL: not found, nothing of A's.
    let p = cb.get(&format!("/console/notifications/{first}")).await;
    assert_clear(&p, 404, None);
    assert!(p.body.contains("not found"), "{}", p.body);
    assert!(!p.body.contains("ana@example.test") && !p.body.contains("welcome"));

    // Bad input: a clear page naming the field.
    for (query, field) in [
        ("status=lost", "status"),
        ("from=yesterday", "from"),
        ("to=2026-02-30T25:00:00Z", "to"),
        ("id=not-an-id", "id"),
        ("limit=0", "limit"),
        ("page=99999999999999999999", "page"),
        ("cursor=garbage%00%FF", "cursor"),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let p = search(&mut ca, query).await;
        assert_clear(&p, 400, Some(field));
        // The form is still there, with what was typed.
        assert!(p.body.contains("id=\"f-status\""), "{query}");
    }
    let p = search(&mut ca, "status=lost&subscriber=ana").await;
    assert!(p.body.contains("value=\"ana\""));
    assert!(p
        .body
        .contains("aria-invalid=\"true\" aria-describedby=\"err-status\""));
    for path in [
        "/console/notifications/zzz".to_string(),
        "/console/notifications/%FF%FE".to_string(),
        format!("/console/notifications/{}", "f".repeat(33)),
    ] {
        assert_clear(&ca.get(&path).await, 400, Some("id"));
    }
    let unknown = format!("/console/notifications/{}", "0".repeat(32));
    assert_clear(&ca.get(&unknown).await, 404, None);
    node.stop().await;
}
