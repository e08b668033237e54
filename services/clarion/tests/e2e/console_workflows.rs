//! The console's workflow pages over real HTTP (issue #29): the list, a
//! version's YAML, the diff between versions, applying a version through
//! the same code as `WorkflowService.Apply` (the signed-in key or operator
//! is the event's actor), refused definitions answered 400 with each error
//! on its line, the templates a workflow uses and their preview rendered by
//! the router's renderer; two tenants that never see each other's.

use crate::support;

use clarion_domain::tenant::PresentedKey;
use clarion_domain::{Actor, Event, Payload};
use clarion_proto::api;
use clarion_store::{RowKey, Table};
use support::console::{Client, ConsoleNode, Page, TENANT_A};
use support::{apply_workflows, authed, Subscribers, Tenants, ADMIN_TOKEN};

const V1: &str = "\
id: visit
name: Visit reminder
trigger:
  event: visit.booked
steps:
  - { id: email, type: send, channel: email, template: visit-email, provider: sink }
";

/// V1 renamed, with a second send.
const V2: &str = "\
id: visit
name: Visit reminder (two sends)
trigger:
  event: visit.booked
steps:
  - { id: email, type: send, channel: email, template: visit-email, provider: sink }
  - id: again
    type: send
    channel: email
    template: visit-email
    provider: sink
";

/// Line 7 names a channel that does not exist; line 10 a missing template.
const INVALID: &str = "\
id: visit
name: Broken
trigger:
  event: visit.booked
steps:
  - id: email
    channel: fax
    type: send
    provider: sink
    template: nope
";

/// Line 5: a character that cannot start a YAML token.
const SYNTAX_ERROR: &str = "\
id: visit
steps:
  - id: email
    type: send
    channel: @email
";

async fn put_template(node: &ConsoleNode, key: &str) {
    let v = |locale: &str, subject: &str, body: &str| api::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    Tenants::new(node.ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: "visit-email".into(),
                channel: "email".into(),
                variants: vec![
                    v(
                        "default",
                        "Visit on {{ payload.day }}",
                        "Hello {{ subscriber.id }}, see you {{ payload.day }}.",
                    ),
                    v(
                        "fr",
                        "Visite le {{ payload.day }}",
                        "Bonjour {{ subscriber.id }}, à {{ payload.day }}.",
                    ),
                ],
            },
        ))
        .await
        .expect("put template");
}

/// The actor of a published version, as the store keeps its event.
async fn actor_of(node: &ConsoleNode, tenant: &str, id: &str, version: u32) -> Actor {
    let row = node
        .node
        .store
        .get(&RowKey::new(
            Table::Workflows,
            tenant,
            id,
            version.to_be_bytes().to_vec(),
        ))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no version {version} of {id}"));
    let e = Event::decode(&row).unwrap();
    assert!(matches!(e.payload, Payload::WorkflowPublished(_)));
    e.actor
}

fn assert_has(p: &Page, needle: &str) {
    assert!(
        p.body.contains(needle),
        "{needle:?} missing in:\n{}",
        p.body
    );
}

fn assert_lacks(p: &Page, needle: &str) {
    assert!(
        !p.body.contains(needle),
        "{needle:?} present in:\n{}",
        p.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_view_apply_diff_and_errors_on_their_lines() {
    let node = ConsoleNode::start(|_| {}).await;
    put_template(&node, &node.key_a).await;
    apply_workflows(&node.ch, &node.key_a, &[V1]).await;
    let mut a = node.signed_in(&node.key_a).await;
    let mut b = node.signed_in(&node.key_b).await;

    // The list: id, latest version, trigger event, steps.
    let p = a.get("/console/workflows").await;
    assert_eq!(p.status, 200);
    assert_has(&p, r#"<tr data-workflow="visit">"#);
    assert_has(&p, "<code>visit.booked</code>");
    // Tenant B sees none of A's.
    let p = b.get("/console/workflows").await;
    assert_lacks(&p, "data-workflow=\"visit\"");
    assert_has(&p, "id=\"no-workflows\"");
    for path in [
        "/console/workflows/visit",
        "/console/workflows/visit?version=1",
        "/console/workflows/visit/diff?from=1&to=1",
        "/console/workflows/visit/templates/visit-email",
        "/console/workflows/apply?from=visit",
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 404, "{path}: {}", p.body);
        assert_has(&p, "id=\"error-message\"");
    }

    // A workflow whose id is the apply form's path segment has its page.
    apply_workflows(
        &node.ch,
        &node.key_a,
        &[&V1.replace("id: visit\n", "id: apply\n")],
    )
    .await;
    let p = a.get("/console/workflows").await;
    assert_has(&p, r#"<a href="/console/workflows/%61pply">apply</a>"#);
    let p = a.get("/console/workflows/%61pply").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_has(&p, "Workflow <code>apply</code>");

    // A version's YAML and the templates it uses.
    let p = a.get("/console/workflows/visit").await;
    assert_eq!(p.status, 200);
    assert_has(&p, "<pre id=\"yaml\"");
    assert_has(&p, "template: visit-email");
    assert_has(&p, "<tr data-template=\"visit-email\">");
    assert_has(&p, "default, fr");

    // Apply a new version from the console: 303 to it, numbered 2, with
    // the signed-in key as the event's actor.
    let p = a.get("/console/workflows/apply?from=visit").await;
    assert_eq!(p.status, 200);
    assert_has(&p, "<textarea id=\"yaml\" name=\"yaml\"");
    assert_has(&p, "id: visit");
    let p = a.post("/console/workflows/apply", &[("yaml", V2)]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.location(),
        Some("/console/workflows/visit?version=2&done=applied")
    );
    let key_id = PresentedKey::parse(&node.key_a).unwrap().key_id();
    assert_eq!(
        actor_of(&node, TENANT_A, "visit", 2).await,
        Actor::ApiKey(key_id)
    );
    let p = a
        .get("/console/workflows/visit?version=2&done=applied")
        .await;
    assert_has(&p, "Version 2 applied.");
    assert_has(&p, "<span id=\"version-shown\">2</span> (latest)");
    assert_has(&p, "steps[1]");
    // The older version is still there.
    let p = a.get("/console/workflows/visit?version=1").await;
    assert_has(&p, "<span id=\"version-shown\">1</span>");
    assert_lacks(&p, "two sends");

    // The diff: the name changed, a step added.
    let p = a.get("/console/workflows/visit/diff?from=1&to=2").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_has(&p, "<del><span class=\"sr-only\">removed: </span>");
    assert_has(&p, "name: Visit reminder</del>");
    assert_has(&p, "<ins><span class=\"sr-only\">added: </span>");
    assert_has(&p, "name: Visit reminder (two sends)</ins>");
    assert_has(&p, "data-change=\"added\"");
    // Without versions: the latest against the one before.
    let p = a.get("/console/workflows/visit/diff").await;
    assert_has(&p, "changes from version 1 to version 2");
    // Bad versions: a clear message naming the field.
    let p = a.get("/console/workflows/visit/diff?from=x&to=2").await;
    assert_eq!(p.status, 400);
    assert_has(&p, "<strong id=\"error-field\">from</strong>");
    let p = a.get("/console/workflows/visit?version=99999999999").await;
    assert_eq!(p.status, 400);
    assert_has(&p, "<strong id=\"error-field\">version</strong>");
    let p = a.get("/console/workflows/visit?version=7").await;
    assert_eq!(p.status, 404);
    assert_has(&p, "no version 7 of workflow");

    // An invalid definition: 400, nothing applied, each error on its line.
    let p = a
        .post("/console/workflows/apply", &[("yaml", INVALID)])
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert_has(&p, r#"<span class="line bad" id="line-7" data-line="7">"#);
    assert_has(
        &p,
        r#"<span class="line-error" role="alert" data-line="7">steps[0].channel: "#,
    );
    assert_has(&p, r#"<span class="line bad" id="line-10" data-line="10">"#);
    assert_has(
        &p,
        r#"<span class="line-error" role="alert" data-line="10">steps[0].template: "#,
    );
    assert_has(&p, r#"<span class="line" id="line-6" data-line="6">"#);
    // The text is back in the form.
    assert_has(&p, "channel: fax\n    type: send");
    assert_eq!(workflow_version(&node, &node.key_a, "visit").await, 2);

    // A syntax error lands on its own line.
    let p = a
        .post("/console/workflows/apply", &[("yaml", SYNTAX_ERROR)])
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert_has(&p, r#"<span class="line bad" id="line-5" data-line="5">"#);
    assert_has(
        &p,
        r#"<span class="line-error" role="alert" data-line="5">definition (line 5, "#,
    );

    // CSRF: an apply without the token is refused, and changes nothing.
    let p = a
        .post_raw("/console/workflows/apply", &[("yaml".into(), V1.into())])
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert_eq!(workflow_version(&node, &node.key_a, "visit").await, 2);

    // Tenant B's apply of the same id is B's own first version.
    b.get("/console/workflows/apply").await;
    let p = b
        .post(
            "/console/workflows/apply",
            &[("yaml", &V1.replace("visit-email", "b-tpl"))],
        )
        .await;
    assert_eq!(p.status, 400, "B has no template b-tpl: {}", p.body);
    assert_has(&p, "data-line=\"6\">steps[0].template: no template");
    assert_eq!(workflow_version(&node, &node.key_a, "visit").await, 2);

    // The operator, working in tenant A, is the actor of what it applies.
    let mut o = node.signed_in(ADMIN_TOKEN).await;
    o.get("/console/tenant").await;
    assert_eq!(
        o.post("/console/tenant", &[("tenant", TENANT_A)])
            .await
            .status,
        303
    );
    o.get("/console/workflows/apply").await;
    let p = o.post("/console/workflows/apply", &[("yaml", V1)]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        actor_of(&node, TENANT_A, "visit", 3).await,
        Actor::Operator("admin".into())
    );

    node.stop().await;
}

/// The latest version of a workflow through gRPC.
async fn workflow_version(node: &ConsoleNode, key: &str, id: &str) -> u32 {
    api::workflow_service_client::WorkflowServiceClient::new(node.ch.clone())
        .get(authed(
            key,
            api::GetWorkflowRequest {
                workflow_id: id.into(),
                version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .version
}

/// A key with only the `read` scope.
async fn read_only_key(node: &ConsoleNode) -> String {
    Tenants::new(node.ch.clone())
        .create_api_key(authed(
            &node.key_a,
            api::CreateApiKeyRequest {
                name: "support".into(),
                scopes: vec!["read".into()],
                expires_at_ms: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
}

async fn preview(c: &mut Client, fragment: bool, fields: &[(&str, &str)]) -> Page {
    let path = "/console/workflows/visit/templates/visit-email/preview";
    let path = if fragment {
        format!("{path}?fragment=1")
    } else {
        path.to_string()
    };
    c.post(&path, fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_preview_and_the_admin_scope() {
    let node = ConsoleNode::start(|_| {}).await;
    put_template(&node, &node.key_a).await;
    apply_workflows(&node.ch, &node.key_a, &[V1]).await;
    Subscribers::new(node.ch.clone())
        .upsert(authed(
            &node.key_a,
            api::Subscriber {
                subscriber_id: "ana".into(),
                locale: "fr-CA".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let mut a = node.signed_in(&node.key_a).await;

    // The template page: every locale variant and the preview form.
    let p = a
        .get("/console/workflows/visit/templates/visit-email")
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_has(&p, "data-locale=\"default\"");
    assert_has(&p, "data-locale=\"fr\"");
    assert_has(
        &p,
        "data-preview-url=\"/console/workflows/visit/templates/visit-email/preview?fragment=1\"",
    );
    assert_has(&p, "data-preview-target=\"preview\"");

    // A fragment rendered by the router's renderer: fallback fr-BE → fr.
    let p = preview(
        &mut a,
        true,
        &[("locale", "fr-BE"), ("payload", r#"{"day": "lundi"}"#)],
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_lacks(&p, "<html");
    assert_has(&p, "<dd id=\"preview-locale\">fr</dd>");
    assert_has(&p, "<dd id=\"preview-subject\">Visite le lundi</dd>");
    assert_has(&p, "Bonjour preview-subscriber, à lundi.");
    // With a subscriber: its id and its locale (fr-CA → fr).
    let p = preview(
        &mut a,
        true,
        &[("payload", r#"{"day": "mardi"}"#), ("subscriber", "ana")],
    )
    .await;
    assert_has(&p, "Bonjour ana, à mardi.");
    // Tenant text is shown escaped, never as HTML.
    let p = preview(&mut a, true, &[("payload", r#"{"day": "<b>x</b>"}"#)]).await;
    assert_has(&p, "see you &lt;b&gt;x&lt;");
    assert_lacks(&p, "<b>x</b>");

    // Bad input names the field.
    let p = preview(&mut a, true, &[("payload", "{\"day\": ")]).await;
    assert_eq!(p.status, 400);
    assert_has(
        &p,
        "<strong id=\"preview-error-field\">payload</strong>: is not valid JSON",
    );
    let p = preview(&mut a, true, &[("payload", "[1]")]).await;
    assert_has(
        &p,
        "<strong id=\"preview-error-field\">payload</strong>: must be a JSON object",
    );
    let p = preview(&mut a, true, &[("payload", "{}")]).await;
    assert_eq!(p.status, 400);
    assert_has(&p, "<strong id=\"preview-error-field\">template</strong>");
    let p = preview(&mut a, true, &[("payload", "{}"), ("subscriber", "nobody")]).await;
    assert_has(
        &p,
        "<strong id=\"preview-error-field\">subscriber</strong>: no subscriber",
    );

    // Without script: the form's own submit shows the whole page with it.
    let p = preview(&mut a, false, &[("payload", r#"{"day": "jeudi"}"#)]).await;
    assert_eq!(p.status, 200);
    assert_has(&p, "<html");
    assert_has(&p, "Hello preview-subscriber, see you jeudi.");
    assert_has(&p, "{&quot;day&quot;: &quot;jeudi&quot;}");
    // ... and refuses a post without the CSRF token.
    let p = a
        .post_raw(
            "/console/workflows/visit/templates/visit-email/preview",
            &[("payload".into(), "{}".into())],
        )
        .await;
    assert_eq!(p.status, 403);

    // Tenant B reaches neither the page nor the preview.
    let mut b = node.signed_in(&node.key_b).await;
    b.get("/console").await;
    let p = preview(&mut b, true, &[("payload", "{}")]).await;
    assert_eq!(p.status, 404, "{}", p.body);

    // A read-only key reads, but does not apply.
    let mut r = node.signed_in(&read_only_key(&node).await).await;
    assert_eq!(r.get("/console/workflows").await.status, 200);
    let p = r.get("/console/workflows/apply").await;
    assert_eq!(p.status, 403);
    assert_has(&p, "scope this page needs");
    r.get("/console/workflows").await;
    let p = r.post("/console/workflows/apply", &[("yaml", V2)]).await;
    assert_eq!(p.status, 403);
    assert_eq!(workflow_version(&node, &node.key_a, "visit").await, 1);

    node.stop().await;
}
