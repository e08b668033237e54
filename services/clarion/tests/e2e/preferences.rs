//! The preference center end to end, on a real node (every role in
//! process, the REST routes on a real HTTP listener): topics, settings,
//! `evaluate`, contact changes and the audit history, through gRPC, REST and
//! the `clarion` binary, for two tenants.
//!
//! What the gateway checks (validation, errors naming the field, scopes,
//! tenant scoping) holds on its own; what a change *does* (the settings
//! after a PATCH, a pending verification, history rows, topics listed) is
//! the router's and the projector's work on the log, so those assertions
//! come after the gateway's in each test.

#![allow(clippy::result_large_err)]

use crate::support;

use std::net::SocketAddr;

use clarion_proto::api;
use serde_json::{json, Value};
use support::*;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

type Prefs = api::preference_service_client::PreferenceServiceClient<Channel>;
type Topics = api::topic_service_client::TopicServiceClient<Channel>;

struct Env {
    node: RunningNode,
    ch: Channel,
    base: String,
    acme: String,
    globex: String,
    _dir: tempfile::TempDir,
}

/// A node with the REST routes, tenants acme and globex, each with
/// subscribers s1 and s2 (different emails per tenant).
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    serve_tracking(&node, http).await;
    let ch = channel(node.grpc).await;
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    for (key, tenant) in [(&acme, "acme"), (&globex, "globex")] {
        for id in ["s1", "s2"] {
            Subscribers::new(ch.clone())
                .upsert(authed(
                    key,
                    api::Subscriber {
                        subscriber_id: id.into(),
                        email: format!("{id}@{tenant}.test"),
                        phone: "+15145550100".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
    }
    Env {
        node,
        ch,
        base: format!("http://{http}"),
        acme,
        globex,
        _dir: dir,
    }
}

fn topic(id: &str, channels: &[&str], required: bool, marketing: bool) -> api::Topic {
    api::Topic {
        topic_id: id.into(),
        name: format!("Topic {id}"),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        default_opt_in: true,
        required,
        marketing,
        ..Default::default()
    }
}

/// Topics `marketing` (marketing, every channel) and `appointments`
/// (required, sms and email).
async fn standard_topics(ch: &Channel, key: &str) {
    for t in [
        topic("marketing", &[], false, true),
        topic("appointments", &["sms", "email"], true, false),
    ] {
        Topics::new(ch.clone())
            .register(authed(key, t))
            .await
            .unwrap();
    }
}

fn fields(s: &tonic::Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `errors[].field` of a problem+json body.
fn problem_fields(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// An HTTP request with extra headers (`Name: value` lines).
/// `support::http_call_with` with headers written as `Name: value`.
async fn http_with(
    method: &str,
    url: &str,
    key: &str,
    extra: &[&str],
    body: &str,
) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = extra
        .iter()
        .map(|h| h.split_once(": ").expect("a header as `Name: value`"))
        .collect();
    http_call_with(method, url, key, &headers, body).await
}

fn setting(path: &str, value: &str) -> api::PreferenceSetting {
    api::PreferenceSetting {
        path: path.into(),
        value: value.into(),
    }
}

async fn update(
    ch: &Channel,
    key: &str,
    id: &str,
    changes: Vec<api::PreferenceSetting>,
) -> Result<api::SubscriberPreferences, tonic::Status> {
    Prefs::new(ch.clone())
        .update_preferences(authed(
            key,
            api::UpdatePreferencesRequest {
                subscriber_id: id.into(),
                changes,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_registered_listed_and_read_on_both_doors_and_bad_ones_name_their_fields() {
    let e = env().await;
    let mut topics = Topics::new(e.ch.clone());
    // Bad topics, on both doors.
    let err = topics
        .register(authed(&e.acme, topic("news", &["fax"], false, false)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["channels[0]"]);
    let err = topics
        .register(authed(&e.acme, topic("promo", &[], true, true)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["required"]);
    let long = json!({"description": "x".repeat(2000)}).to_string();
    let (status, head, body) =
        http_call("PUT", &format!("{}/v1/topics/news", e.base), &e.acme, &long).await;
    assert_eq!(status, 400, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(problem_fields(&body), ["description"]);
    let (status, _, body) = http_call(
        "PUT",
        &format!("{}/v1/topics/news", e.base),
        &e.acme,
        r#"{"channels":["email","pigeon"]}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(problem_fields(&body), ["channels[1]"]);
    let (status, _, body) = http_call(
        "PUT",
        &format!("{}/v1/topics/news", e.base),
        &e.acme,
        r#"{"colour":"red"}"#,
    )
    .await;
    assert_eq!(
        (status, problem_fields(&body)),
        (400, vec!["colour".to_string()])
    );
    // Past the REST body limit (2 MiB): 413 before any parsing.
    let huge = format!(r#"{{"description":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let (status, head, body) = http_with(
        "PUT",
        &format!("{}/v1/topics/news", e.base),
        &e.acme,
        &[],
        &huge,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(head.contains("application/problem+json"), "{head}");

    // Good ones: gRPC and REST answer the topic as registered.
    let t = topics
        .register(authed(
            &e.acme,
            topic("appointments", &["sms", "email"], true, false),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (t.version, t.channels.clone()),
        (1, vec!["email".to_string(), "sms".to_string()])
    );
    let (status, _, body) = http_call(
        "PUT",
        &format!("{}/v1/topics/news", e.base),
        &e.acme,
        r#"{"name":"News","description":"Monthly news","channels":["email"],"default_opt_in":false,"marketing":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let news = json_of(&body);
    assert_eq!(
        (news["version"].as_u64(), news["marketing"].as_bool()),
        (Some(1), Some(true))
    );

    // Read back (the projector keeps topics: needs its TopicRegistered handling).
    let listed = topics
        .list(authed(&e.acme, api::ListTopicsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .topics;
    let ids: Vec<&str> = listed.iter().map(|t| t.topic_id.as_str()).collect();
    assert_eq!(ids, ["appointments", "news"]);
    let (status, _, body) =
        http_call("GET", &format!("{}/v1/topics/news", e.base), &e.acme, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["description"], "Monthly news");
    // The same definition again is no new version; a change is.
    let again = topics
        .register(authed(
            &e.acme,
            topic("appointments", &["sms", "email"], true, false),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.version, 1);
    let changed = topics
        .register(authed(
            &e.acme,
            topic("appointments", &["sms"], true, false),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.version, 2);
    // The other tenant has none of them.
    let (status, _, body) = http_call("GET", &format!("{}/v1/topics", e.base), &e.globex, "").await;
    assert_eq!((status, json_of(&body)["topics"].clone()), (200, json!([])));
    let err = topics
        .get(authed(
            &e.globex,
            api::GetTopicRequest {
                topic_id: "news".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The CLI lists them too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args([
            "topics",
            "list",
            "--endpoint",
            &format!("http://{}", e.node.grpc),
            "--api-key",
            &e.acme,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("appointments\tv2") && text.contains("news\tv1"),
        "{text}"
    );
    e.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_preference_changes_name_the_field_on_both_doors() {
    let e = env().await;
    standard_topics(&e.ch, &e.acme).await;
    let url = format!("{}/v1/subscribers/s1/preferences", e.base);
    let patch = |body: &'static str| {
        let (url, key) = (url.clone(), e.acme.clone());
        async move { http_call("PATCH", &url, &key, body).await }
    };
    for (body, field) in [
        (
            r#"{"changes":[{"path":"topics.unknown","value":"off"}]}"#,
            "changes[0].path",
        ),
        (
            r#"{"changes":[{"path":"channels.fax","value":"off"}]}"#,
            "changes[0].path",
        ),
        (
            r#"{"changes":[{"path":"channels.sms","value":"on"},{"path":"channels.sms","value":"maybe"}]}"#,
            "changes[1].value",
        ),
        (
            r#"{"changes":[{"path":"topics.appointments","value":"off"}]}"#,
            "changes[0].value",
        ),
        (
            r#"{"changes":[{"path":"topics.appointments.push","value":"on"}]}"#,
            "changes[0].value",
        ),
        (
            r#"{"changes":[{"path":"volume","value":"on"}]}"#,
            "changes[0].path",
        ),
        (r#"{"change":[]}"#, "change"),
        ("", "body"),
    ] {
        let (status, head, text) = patch(body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(head.contains("application/problem+json"), "{head}");
        assert_eq!(problem_fields(&text), [field], "{body}: {text}");
    }
    let (_, _, text) = patch(r#"{"changes":[{"path":"topics.appointments","value":"off"}]}"#).await;
    assert!(text.contains("required"), "the reason is given: {text}");
    // gRPC: the same checks, as BadRequest field violations.
    let err = update(
        &e.ch,
        &e.acme,
        "s1",
        vec![
            setting("topics.unknown", "off"),
            setting("channels.sms", "nope"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        ["changes[1].value"],
        "values are checked first"
    );
    let err = update(
        &e.ch,
        &e.acme,
        "s1",
        vec![
            setting("topics.appointments.sms", "off"),
            setting("topics.appointments.email", "off"),
        ],
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("at least one"), "{err:?}");
    // Unknown subscribers, bad ids, bad cursors and limits.
    let err = update(
        &e.ch,
        &e.acme,
        "nobody",
        vec![setting("channels.sms", "off")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let (status, _, _) = http_call(
        "GET",
        &format!("{}/v1/subscribers/nobody/preferences", e.base),
        &e.acme,
        "",
    )
    .await;
    assert_eq!(status, 404);
    for (query, field) in [
        ("cursor=!!", "cursor"),
        ("cursor=AAAA", "cursor"),
        ("limit=ten", "limit"),
    ] {
        let (status, _, text) = http_call(
            "GET",
            &format!("{}/v1/subscribers/s1/preferences/history?{query}", e.base),
            &e.acme,
            "",
        )
        .await;
        assert_eq!(
            (status, problem_fields(&text)),
            (400, vec![field.to_string()]),
            "{query}: {text}"
        );
    }
    let err = Prefs::new(e.ch.clone())
        .history(authed(
            &e.acme,
            api::PreferenceHistoryRequest {
                subscriber_id: "s1".into(),
                limit: 0,
                cursor: "not a cursor".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["cursor"]);
    // Nothing was recorded by the refused requests (the history is the router's rows).
    let h = Prefs::new(e.ch.clone())
        .history(authed(
            &e.acme,
            api::PreferenceHistoryRequest {
                subscriber_id: "s1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(h.entries.is_empty(), "{h:?}");
    e.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_either_door_reads_back_and_evaluate_names_the_rule() {
    let e = env().await;
    for key in [&e.acme, &e.globex] {
        standard_topics(&e.ch, key).await;
        Tenants::new(e.ch.clone())
            .put_template(authed(
                key,
                api::Template {
                    template_id: "promo-mail".into(),
                    channel: "email".into(),
                    variants: vec![api::TemplateVariant {
                        locale: "default".into(),
                        subject: "Deals".into(),
                        body: "Deals for {{ subscriber.id }}".into(),
                    }],
                },
            ))
            .await
            .unwrap();
        apply_workflows(
            &e.ch,
            key,
            &[
                "id: promo\ntopic: marketing\nsteps:\n  - { id: mail, type: send, channel: email, template: promo-mail }\n",
                "id: alert\ncritical: true\ntopic: marketing\nsteps:\n  - { id: mail, type: send, channel: email, template: promo-mail }\n",
                "id: plain\nsteps:\n  - { id: mail, type: send, channel: email, template: promo-mail }\n",
            ],
        )
        .await;
    }
    let evaluate = |key: &str, workflow: &str, channel: &str| {
        let body =
            json!({"subscriber_id": "s1", "workflow_id": workflow, "channel": channel}).to_string();
        let (url, key) = (
            format!("{}/v1/preferences/evaluate", e.base),
            key.to_string(),
        );
        async move {
            let (status, _, text) = http_call("POST", &url, &key, &body).await;
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                text,
            )
        }
    };
    // Before any choice: the topic's default, and the workflow without a topic.
    let (status, v, text) = evaluate(&e.acme, "promo", "email").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        (v["allowed"].as_bool(), v["rule"].as_str()),
        (Some(true), Some("topic_default")),
        "{v}"
    );
    assert_eq!(v["topic_id"], "marketing");
    let (_, v, _) = evaluate(&e.acme, "plain", "email").await;
    assert_eq!(v["rule"], "no_topic");
    let (status, _, text) = evaluate(&e.acme, "promo", "fax").await;
    assert_eq!(
        (status, problem_fields(&text)),
        (400, vec!["channel".to_string()])
    );
    let (status, _, _) = evaluate(&e.acme, "nope", "email").await;
    assert_eq!(status, 404);
    let r = Prefs::new(e.ch.clone())
        .evaluate(authed(
            &e.acme,
            api::EvaluateRequest {
                subscriber_id: "s1".into(),
                workflow_id: "alert".into(),
                channel: "email".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.allowed, r.rule.as_str()),
        (true, "critical_workflow"),
        "{r:?}"
    );

    // REST opts out of the topic, gRPC turns SMS off: each answer shows the
    // settings after the router applied the change (needs the router's
    // preference handling).
    let (status, _, text) = http_call(
        "PATCH",
        &format!("{}/v1/subscribers/s1/preferences", e.base),
        &e.acme,
        r#"{"changes":[{"path":"topics.marketing","value":"off"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let after = json_of(&text);
    assert_eq!(
        after["topics"],
        json!([{"topic_id": "marketing", "enabled": "off", "channels": {}}]),
        "{after}"
    );
    let p = update(
        &e.ch,
        &e.acme,
        "s1",
        vec![
            setting("channels.sms", "off"),
            setting("topics.appointments.sms", "off"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        p.channels.get("sms").map(String::as_str),
        Some("off"),
        "{p:?}"
    );
    assert_eq!(p.topics.len(), 2, "{p:?}");
    let (_, v, _) = evaluate(&e.acme, "promo", "email").await;
    assert_eq!(
        (v["allowed"].as_bool(), v["rule"].as_str()),
        (Some(false), Some("topic_opt")),
        "{v}"
    );
    assert!(
        v["reason"].as_str().unwrap().contains("topics.marketing"),
        "{v}"
    );
    // A critical workflow goes through the opt-out; a marketing unsubscribe stops even it.
    let (_, v, _) = evaluate(&e.acme, "alert", "email").await;
    assert_eq!(v["rule"], "critical_workflow");
    update(&e.ch, &e.acme, "s1", vec![setting("marketing", "off")])
        .await
        .unwrap();
    let (_, v, _) = evaluate(&e.acme, "alert", "email").await;
    assert_eq!(
        (v["allowed"].as_bool(), v["rule"].as_str()),
        (Some(false), Some("legal_block")),
        "{v}"
    );
    // The other subscriber and the other tenant's s1 are untouched.
    let (_, v, _) = evaluate(&e.globex, "promo", "email").await;
    assert_eq!(v["rule"], "topic_default");
    let (_, _, text) = http_call(
        "GET",
        &format!("{}/v1/subscribers/s2/preferences", e.base),
        &e.acme,
        "",
    )
    .await;
    assert_eq!(json_of(&text)["topics"], json!([]), "{text}");
    e.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_change_sends_one_code_per_idempotency_key_and_a_wrong_code_names_code() {
    let e = env().await;
    let url = |path: &str| format!("{}/v1/subscribers/s1/contacts/{path}", e.base);
    for (path, body, field) in [
        ("email", r#"{"value":"not-an-email"}"#, "value"),
        ("email", r#"{"value":""}"#, "value"),
        ("push", r#"{"value":"x@y.test"}"#, "channel"),
        ("email", r#"{"email":"x@y.test"}"#, "email"),
    ] {
        let (status, _, text) = http_call("POST", &url(path), &e.acme, body).await;
        assert_eq!(
            (status, problem_fields(&text)),
            (400, vec![field.to_string()]),
            "{body}: {text}"
        );
    }
    let err = Prefs::new(e.ch.clone())
        .change_contact(authed(
            &e.acme,
            api::ChangeContactRequest {
                subscriber_id: "s1".into(),
                channel: "sms".into(),
                value: "555".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["value"]);

    // With an Idempotency-Key: one change (one code), the repeat answers the first answer.
    let body = r#"{"value":"new@acme.test"}"#;
    let first = http_with(
        "POST",
        &url("email"),
        &e.acme,
        &["Idempotency-Key: change-1"],
        body,
    )
    .await;
    assert_eq!(first.0, 202, "{}", first.2);
    let expires = json_of(&first.2)["code_expires_at_ms"].as_i64().unwrap();
    assert!(expires > 0);
    let again = http_with(
        "POST",
        &url("email"),
        &e.acme,
        &["Idempotency-Key: change-1"],
        body,
    )
    .await;
    // The first answer again, marked as a replay; no second code.
    assert_eq!(
        (again.0, json_of(&again.2)["code_expires_at_ms"].as_i64()),
        (202, Some(expires)),
        "{}",
        again.2
    );
    assert!(
        again.1.contains("idempotency-replayed: true"),
        "{}",
        again.1
    );
    let other = http_with(
        "POST",
        &url("email"),
        &e.acme,
        &["Idempotency-Key: change-1"],
        r#"{"value":"other@acme.test"}"#,
    )
    .await;
    assert_eq!(
        (other.0, problem_fields(&other.2)),
        (422, vec!["Idempotency-Key".to_string()]),
        "{}",
        other.2
    );
    // The same key is another tenant's own.
    let theirs = http_with(
        "POST",
        &url("email"),
        &e.globex,
        &["Idempotency-Key: change-1"],
        body,
    )
    .await;
    assert_eq!(theirs.0, 202, "{}", theirs.2);

    // The pending contact, then a wrong code (the router records the change:
    // needs its ContactChanged handling).
    let (_, _, text) = http_call(
        "GET",
        &format!("{}/v1/subscribers/s1/preferences", e.base),
        &e.acme,
        "",
    )
    .await;
    assert_eq!(
        json_of(&text)["contacts"],
        json!([{"channel": "email", "value": "new@acme.test", "verified": false}]),
        "{text}"
    );
    // The pending address is sealed in the router's preferences row under
    // the subscriber's data key (issue #32); the API above opened it.
    let row = e.node.nodes[0]
        .store
        .get(&clarion_store::RowKey::new(
            clarion_store::Table::Preferences,
            "acme",
            "s1",
            Vec::new(),
        ))
        .await
        .unwrap()
        .expect("the preferences row");
    let row = String::from_utf8_lossy(&row);
    assert!(!row.contains("new@acme.test"), "{row}");
    assert!(row.contains("pd1:"), "sealed: {row}");
    let (status, _, text) = http_call(
        "POST",
        &url("email/verify"),
        &e.acme,
        r#"{"code":"000000x"}"#,
    )
    .await;
    assert_eq!(
        (status, problem_fields(&text)),
        (400, vec!["code".to_string()]),
        "{text}"
    );
    let err = Prefs::new(e.ch.clone())
        .verify_contact(authed(
            &e.acme,
            api::VerifyContactRequest {
                subscriber_id: "s1".into(),
                channel: "email".into(),
                code: "99999x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["code"]);
    // Nothing pending on SMS: the field is the channel.
    let (status, _, text) =
        http_call("POST", &url("sms/verify"), &e.acme, r#"{"code":"123456"}"#).await;
    assert_eq!(
        (status, problem_fields(&text)),
        (400, vec!["channel".to_string()]),
        "{text}"
    );
    e.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_records_who_changed_what_through_which_door() {
    let e = env().await;
    standard_topics(&e.ch, &e.acme).await;
    let key_id = api::api_key_service_client::ApiKeyServiceClient::new(e.ch.clone())
        .list(authed(&e.acme, api::ListApiKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
        .keys[0]
        .key_id
        .clone();
    // gRPC, REST, the CLI and the subscriber's own token.
    update(&e.ch, &e.acme, "s1", vec![setting("channels.sms", "off")])
        .await
        .unwrap();
    let (status, _, text) = http_call(
        "PATCH",
        &format!("{}/v1/subscribers/s1/preferences", e.base),
        &e.acme,
        r#"{"changes":[{"path":"topics.marketing.email","value":"off"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
            .args(args)
            .args([
                "--endpoint",
                &format!("http://{}", e.node.grpc),
                "--api-key",
                &e.acme,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cli(&["preferences", "set", "s1", "channels.push=off"]);
    let token = cli(&["subscribers", "token", "s1", "--ttl", "10m"])
        .trim()
        .to_string();
    let (status, _, text) = http_call(
        "PATCH",
        &format!("{}/v1/subscribers/s1/preferences", e.base),
        &token,
        r#"{"changes":[{"path":"channels.push","value":"inherit"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // A client may say it is the console; it cannot claim another door.
    let (status, _, text) = http_with(
        "PATCH",
        &format!("{}/v1/subscribers/s1/preferences", e.base),
        &e.acme,
        &["x-clarion-interface: graphql"],
        r#"{"changes":[{"path":"channels.sms","value":"on"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // The history (the router's rows: needs its PreferencesChanged handling).
    let (status, _, text) = http_call(
        "GET",
        &format!("{}/v1/subscribers/s1/preferences/history", e.base),
        &e.acme,
        "",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let page = json_of(&text);
    let seen: Vec<(String, String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let c = &x["changes"][0];
            (
                x["interface"].as_str().unwrap().to_string(),
                x["actor"].as_str().unwrap().to_string(),
                format!(
                    "{} {}->{}",
                    c["path"].as_str().unwrap(),
                    c["old"].as_str().unwrap(),
                    c["new"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let api_key = format!("api_key:{key_id}");
    let want = |i: &str, a: &str, c: &str| (i.to_string(), a.to_string(), c.to_string());
    assert_eq!(
        seen,
        [
            want("grpc", &api_key, "channels.sms inherit->off"),
            want("rest", &api_key, "topics.marketing.email inherit->off"),
            want("cli", &api_key, "channels.push inherit->off"),
            want("rest", "subscriber:s1", "channels.push off->inherit"),
            want("rest", &api_key, "channels.sms off->on"),
        ]
    );
    // A page at a time, over both doors.
    let first = Prefs::new(e.ch.clone())
        .history(authed(
            &e.acme,
            api::PreferenceHistoryRequest {
                subscriber_id: "s1".into(),
                limit: 2,
                cursor: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.entries.len(), 2);
    assert!(!first.next_cursor.is_empty());
    let (_, _, text) = http_call(
        "GET",
        &format!(
            "{}/v1/subscribers/s1/preferences/history?limit=10&cursor={}",
            e.base, first.next_cursor
        ),
        &e.acme,
        "",
    )
    .await;
    let rest_page = json_of(&text);
    assert_eq!(rest_page["entries"].as_array().unwrap().len(), 3, "{text}");
    assert!(rest_page.get("next_cursor").is_none(), "{text}");
    // The CLI prints the same history; the other tenant's s1 has none.
    let printed = cli(&["preferences", "history", "s1"]);
    assert_eq!(printed.lines().count(), 5, "{printed}");
    assert!(printed.contains("subscriber:s1"), "{printed}");
    let (_, _, text) = http_call(
        "GET",
        &format!("{}/v1/subscribers/s1/preferences/history", e.base),
        &e.globex,
        "",
    )
    .await;
    assert_eq!(json_of(&text)["entries"], json!([]), "{text}");
    e.node.stop().await;
}
