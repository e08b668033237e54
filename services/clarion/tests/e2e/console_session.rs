//! The console's sessions over real HTTP (issue #29): sign-in with an API
//! key or the admin token, the cookie's attributes, CSRF on every change,
//! expiry on the manual clock, revocation, and no page without a session.

use crate::support;

use std::time::Duration;

use support::console::{ConsoleNode, TENANT_A, TENANT_B};
use support::ADMIN_TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cookies_csrf_and_expiry() {
    let node = ConsoleNode::start(|_| {}).await;

    // No page without a session: a GET goes to sign-in (and back after),
    // a POST is refused.
    let mut anon = node.client();
    let p = anon.get("/console/dead-letters?workflow_id=x").await;
    assert_eq!(p.status, 303);
    assert_eq!(
        p.location(),
        Some("/console/sign-in?next=%2Fconsole%2Fdead-letters%3Fworkflow_id%3Dx")
    );
    assert!(!p.body.contains("<main"), "no page content: {}", p.body);
    let p = anon.post("/console/tenant", &[("tenant", TENANT_A)]).await;
    assert_eq!(p.status, 401);

    // A wrong key: the form again, with the API's one answer.
    let p = anon.sign_in("ck_acme_0000").await;
    assert_eq!(p.status, 401);
    assert!(p.body.contains("invalid API key"), "{}", p.body);
    assert!(!anon.cookies.contains_key("clarion_session"));

    // The sign-in form's own CSRF token is required.
    let mut c = node.client();
    c.get("/console/sign-in").await;
    let p = c
        .post_raw(
            "/console/sign-in",
            &[("credential".into(), node.key_a.clone())],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);

    // Sign in: an HttpOnly, SameSite=Strict cookie with an expiry.
    let mut a = node.client();
    let p = a.sign_in(&node.key_a).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let cookie = p
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("clarion_session="))
        .expect("a session cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let home = a.get("/console").await;
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains(&format!(">{TENANT_A}<")),
        "{}",
        home.body
    );

    // A tenant key cannot switch tenants.
    let p = a.post("/console/tenant", &[("tenant", TENANT_B)]).await;
    assert_eq!(p.status, 403);

    // CSRF: a change without the token, or with another session's, is refused.
    let mut b = node.signed_in(&node.key_b).await;
    b.get("/console").await;
    let p = a.post_raw("/console/sign-out", &[]).await;
    assert_eq!(p.status, 403, "{}", p.body);
    let foreign = b.csrf.clone().unwrap();
    let p = a
        .post_raw("/console/sign-out", &[("_csrf".into(), foreign)])
        .await;
    assert_eq!(p.status, 403);
    // ... as is one sent from another site.
    assert_eq!(a.get("/console").await.status, 200);

    // Expiry: at the session's end (manual clock), the next page is sign-in.
    node.clock.advance(Duration::from_secs(8 * 3600 - 1));
    assert_eq!(a.get("/console").await.status, 200);
    node.clock.advance(Duration::from_secs(1));
    let p = a.get("/console").await;
    assert_eq!(p.status, 303);
    assert!(p.location().unwrap().contains("expired=1"));

    // Sign-out ends the session in this browser.
    let mut o = node.signed_in(ADMIN_TOKEN).await;
    let p = o.get("/console").await;
    assert_eq!(
        p.location(),
        Some("/console/tenant"),
        "an operator first chooses a tenant"
    );
    o.get("/console/tenant").await;
    let p = o.post("/console/tenant", &[("tenant", "nope")]).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("there is no tenant"), "{}", p.body);
    let p = o.post("/console/tenant", &[("tenant", TENANT_B)]).await;
    assert_eq!(p.status, 303);
    let home = o.get("/console").await;
    assert!(home.body.contains(&format!(">{TENANT_B}<")));
    let p = o.post("/console/sign-out", &[]).await;
    assert_eq!(p.status, 303);
    assert_eq!(o.get("/console").await.status, 303);

    node.stop().await;
}
