//! The console's Dashboards page over real HTTP (issue #30): two tenants'
//! sends (delivered by the sink, failed at an unconfigured provider) go
//! through the real pipeline and the analytics processor; each tenant's
//! page shows its own totals and rates, inline SVG charts (no script),
//! the breakdown by the dimension chosen and provider health, and none
//! of the other tenant's figures. Bad settings answer a page naming the
//! field.

use crate::support;

use std::time::{Duration, Instant};

use support::console::{ConsoleNode, Page};
use support::*;

/// The payload the appointment template renders (`payload.day`).
const DAY: &str = r#"{"day":"Tuesday"}"#;
/// Polls the tenant's report until `attempted` sends are counted.
async fn wait_counted(node: &ConsoleNode, key: &str, attempted: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("{}/v1/analytics/report", node.base());
        let (_, _, body) = http_call("GET", &url, key, "").await;
        let r = json_of(&body);
        if r["groups"][0]["totals"]["attempted"] == attempted {
            return;
        }
        assert!(Instant::now() < deadline, "never counted: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cell(p: &Page, k: &str) -> String {
    let marker = format!("<td data-k=\"{k}\">");
    let at = p
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("{k}: {}", p.body));
    let rest = &p.body[at + marker.len()..];
    rest[..rest.find("</td>").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_its_own_delivery_dashboard() {
    let node = ConsoleNode::start(|_| {}).await;
    let (a, b) = (node.key_a.clone(), node.key_b.clone());
    appointment_workflow(&node.ch, &a, "welcome", "sink").await;
    appointment_workflow(&node.ch, &a, "alerts", "smtp").await;
    appointment_workflow(&node.ch, &b, "globex-only", "sink").await;
    for i in 0..3 {
        trigger_one(
            &node.ch,
            &a,
            "welcome",
            &format!("a{i}"),
            "a@example.test",
            DAY,
        )
        .await;
    }
    trigger_one(&node.ch, &a, "alerts", "x", "x@example.test", DAY).await;
    trigger_one(&node.ch, &b, "globex-only", "b", "b@example.test", DAY).await;
    wait_counted(&node, &a, 4).await;
    wait_counted(&node, &b, 1).await;

    let mut ca = node.signed_in(&a).await;
    let p = ca.get("/console/dashboards").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(cell(&p, "attempted"), "4");
    assert_eq!(cell(&p, "delivered"), "3");
    assert_eq!(cell(&p, "bounced"), "1");
    assert_eq!(cell(&p, "delivery_rate"), "75.0 %");
    assert_eq!(cell(&p, "open_rate"), "0.0 %");
    for chart in ["chart-volume", "chart-engagement", "chart-latency"] {
        assert!(
            p.body.contains(&format!("<svg id=\"{chart}\"")),
            "{chart}: {}",
            p.body
        );
    }
    assert!(p.body.contains("<polyline"), "the lines are drawn");
    assert!(!p.body.contains("<script>"), "no inline script");
    assert!(
        p.body
            .contains("href=\"/console/dashboards\" aria-current=\"page\""),
        "{}",
        p.body
    );
    // Broken down by channel by default; providers' health below.
    assert!(p.body.contains("<tr data-value=\"email\">"), "{}", p.body);
    assert!(p.body.contains("<tr data-provider=\"sink\">"));
    assert!(p.body.contains("<tr data-provider=\"smtp\">"));
    assert!(p.body.contains("100.0 %"), "smtp's error rate");
    assert!(!p.body.contains("globex-only"));

    let p = ca.get("/console/dashboards?dimension=workflow").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("<tr data-value=\"welcome\">"));
    assert!(p.body.contains("<tr data-value=\"alerts\">"));
    assert!(!p.body.contains("globex-only"));

    // B: its one send, none of A's.
    let mut cb = node.signed_in(&b).await;
    let p = cb.get("/console/dashboards?dimension=workflow").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(cell(&p, "attempted"), "1");
    assert!(p.body.contains("<tr data-value=\"globex-only\">"));
    assert!(!p.body.contains("data-value=\"welcome\""));
    assert!(!p.body.contains("data-provider=\"smtp\""));

    // Bad settings: a page naming the field, with the form.
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("dimension=country", "dimension"),
        ("from=yesterday", "from"),
        ("colour=red", "colour"),
    ] {
        let p = ca.get(&format!("/console/dashboards?{query}")).await;
        assert_eq!(p.status, 400, "{query}: {}", p.body);
        assert!(
            p.body
                .contains(&format!("<strong id=\"error-field\">{field}</strong>")),
            "{query}: {}",
            p.body
        );
        assert!(p.body.contains("for=\"f-from\""), "the form is shown again");
    }
    node.stop().await;
}
