//! A tenant's own provider credentials end to end (issue #31): every role
//! in-process, over real sockets, against the local SendGrid server.
//! `acme` sets its own SendGrid key through the REST API; its mail goes
//! through SendGrid with acme's key in the `Authorization` header and its
//! sender, while `globex`, with no credentials of its own, keeps the
//! operator's key. Reads name the fields set, never the key (neither does
//! the log: it is sealed); bad input names the field; another tenant sees
//! nothing of acme's; deleting the credentials brings the operator's back.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use clarion_dispatch::sendgrid::SendgridConfig;
use clarion_proto::api;
use clarion_push_servers::sendgrid::{self, SendgridServer};
use clarion_runtime::Topic;
use support::*;

const TENANT_KEY: &str = "SG.acme-own-key.0123456789";
const PATIENCE: Duration = Duration::from_secs(60);

type ProviderClient =
    api::provider_service_client::ProviderServiceClient<tonic::transport::Channel>;

async fn mail_workflow(ch: &tonic::transport::Channel, key: &str) {
    put_default_template(
        ch,
        key,
        "hello-mail",
        "email",
        "Hello",
        "Hi {{ payload.name }}",
    )
    .await;
    apply_workflows(
        ch,
        key,
        &["id: hello\ntrigger: { event: hello }\nsteps:\n  - { id: mail, type: send, channel: email, template: hello-mail }\n"],
    )
    .await;
}

fn fields(body: &str) -> Vec<String> {
    json_of(body)["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sends_with_its_own_sendgrid_key_and_another_keeps_the_operators() {
    let sg = SendgridServer::start().await;
    sg.accept_key(TENANT_KEY);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.providers.sendgrid = Some(SendgridConfig {
        base_url: sg.base_url.clone(),
        api_key: sendgrid::API_KEY.into(),
        from_email: "ops@clarion.test".into(),
        from_name: String::new(),
        timeout_ms: 5_000,
    });
    cfg.providers.routes = HashMap::from([("email".into(), vec!["sendgrid".into()])]);
    // Changes reach the next send at once (no cache to wait out).
    cfg.providers.tenant_cache_ms = 0;
    cfg.validate().unwrap();
    let node = start(cfg, false).await;
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    serve_tracking(&node, http).await;
    let base = format!("http://{http}");
    let ch = channel(node.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    for key in [&acme, &globex] {
        mail_workflow(&ch, key).await;
    }
    let creds = format!("{base}/v1/providers/sendgrid/credentials");

    // Bad input names the field; nothing is stored.
    let (status, _, body) = http_call(
        "PUT",
        &creds,
        &acme,
        r#"{"credentials":{"api_key":"","base_url":"http://169.254.169.254/"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        fields(&body),
        ["credentials.base_url", "credentials.api_key"],
        "a tenant cannot point the provider at a URL: {body}"
    );
    let (status, _, body) = http_call(
        "PUT",
        &format!("{base}/v1/providers/mailgun/credentials"),
        &acme,
        r#"{"credentials":{"api_key":"k"}}"#,
    )
    .await;
    assert_eq!((status, fields(&body)), (400, vec!["provider".to_string()]));
    let (status, _, body) =
        http_call("PUT", &creds, &acme, r#"{"credentials":{"api_key":7}}"#).await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["credentials.api_key".to_string()])
    );
    let (status, _, body) = http_call(
        "PUT",
        &format!("{base}/v1/provider-routes/email"),
        &acme,
        r#"{"providers":["twilio"]}"#,
    )
    .await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["providers[0]".to_string()])
    );
    let err = ProviderClient::new(ch.clone())
        .set_credentials(authed(
            &acme,
            api::SetProviderCredentialsRequest {
                provider: "sendgrid".into(),
                credentials: HashMap::from([("api_key".into(), String::new())]),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("credentials.api_key"), "{err:?}");
    let (status, _, _) = http_call("GET", &creds, &acme, "").await;
    assert_eq!(status, 404, "nothing was stored");

    // acme's own key: write-only.
    let body =
        format!(r#"{{"credentials":{{"api_key":"{TENANT_KEY}","from_email":"news@acme.test"}}}}"#);
    let (status, _, answer) = http_call("PUT", &creds, &acme, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!answer.contains(TENANT_KEY), "{answer}");
    assert_eq!(
        json_of(&answer)["fields_set"],
        serde_json::json!(["api_key", "from_email"])
    );
    let (status, _, answer) = http_call("GET", &creds, &acme, "").await;
    assert_eq!(status, 200);
    assert!(
        !answer.contains(TENANT_KEY) && !answer.contains("news@acme.test"),
        "{answer}"
    );
    assert_eq!(json_of(&answer)["version"], 1);
    let got = ProviderClient::new(ch.clone())
        .get_credentials(authed(
            &acme,
            api::GetProviderCredentialsRequest {
                provider: "sendgrid".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.fields_set, ["api_key", "from_email"]);
    // Another tenant sees none of it.
    let (status, _, _) = http_call("GET", &creds, &globex, "").await;
    assert_eq!(status, 404);
    let (_, _, list) = http_call("GET", &format!("{base}/v1/providers"), &globex, "").await;
    assert_eq!(json_of(&list)["credentials"], serde_json::json!([]));

    // Each tenant's mail through its own account.
    trigger_one(
        &ch,
        &acme,
        "hello",
        "ana",
        "ana@acme.test",
        r#"{"name":"Ana"}"#,
    )
    .await;
    trigger_one(
        &ch,
        &globex,
        "hello",
        "bo",
        "bo@globex.test",
        r#"{"name":"Bo"}"#,
    )
    .await;
    let mails = sg.wait_for(2, PATIENCE).await;
    let by_to: HashMap<&str, &sendgrid::Mail> = mails.iter().map(|m| (m.to.as_str(), m)).collect();
    let a = by_to["ana@acme.test"];
    assert_eq!(
        (a.api_key.as_str(), a.from.as_str()),
        (TENANT_KEY, "news@acme.test")
    );
    assert_eq!(a.custom_args["tenant"], "acme");
    let b = by_to["bo@globex.test"];
    assert_eq!(
        (b.api_key.as_str(), b.from.as_str()),
        (sendgrid::API_KEY, "ops@clarion.test")
    );

    // The key is sealed in the log: its bytes appear nowhere.
    let log = &node.nodes[0].log;
    let name = node.nodes[0].topics.name(Topic::Config);
    for p in 0..node.nodes[0].topics.partitions_of(Topic::Config) {
        for r in log.read(&name, p, 0, 100_000).await.unwrap() {
            let raw = String::from_utf8_lossy(&r.value);
            assert!(!raw.contains(TENANT_KEY), "the key in clear in the log");
        }
    }

    // Deleted: the operator's account again.
    let (status, _, _) = http_call("DELETE", &creds, &acme, "").await;
    assert_eq!(status, 200);
    let (status, _, _) = http_call("GET", &creds, &acme, "").await;
    assert_eq!(status, 404);
    trigger_one(
        &ch,
        &acme,
        "hello",
        "ana2",
        "ana2@acme.test",
        r#"{"name":"Ana"}"#,
    )
    .await;
    let mails = sg.wait_for(3, PATIENCE).await;
    let last = mails.iter().find(|m| m.to == "ana2@acme.test").unwrap();
    assert_eq!(last.api_key, sendgrid::API_KEY);
    node.stop().await;
}
