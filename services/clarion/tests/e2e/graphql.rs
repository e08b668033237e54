//! GraphQL at `POST /graphql` over real HTTP against every role running as
//! `clarion serve` runs them, with two tenants: queries and mutations,
//! errors naming the argument, scopes per field, the limits, and one
//! tenant never reaching the other's subscribers.
//!
//! `graphql_preferences_round_trip` needs the router to apply preference
//! changes and the projector to keep topics (branch prefs-router): it is
//! the whole story — a change made through GraphQL is what the next query,
//! the history and `evaluate` see.

use crate::support;

use std::net::SocketAddr;

use clarion_proto::api;
use serde_json::{json, Value};
use support::*;
use tonic::transport::Channel;

/// A running node with its HTTP routes, and two tenants' keys.
struct World {
    node: RunningNode,
    ch: Channel,
    base: String,
    acme: String,
    globex: String,
}

impl World {
    async fn start(dir: &std::path::Path) -> World {
        let node = start(test_config(dir), false).await;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        serve_tracking(&node, http).await;
        let ch = channel(node.grpc).await;
        let acme = create_tenant(&ch, "acme").await;
        let globex = create_tenant(&ch, "globex").await;
        for (key, email) in [(&acme, "ana@acme.test"), (&globex, "gus@globex.test")] {
            appointment_workflow(&ch, key, "visit", "sink").await;
            Subscribers::new(ch.clone())
                .upsert(authed(
                    key,
                    api::Subscriber {
                        subscriber_id: "sub-1".into(),
                        email: email.into(),
                        phone: "+15145550100".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
        World {
            node,
            ch,
            base: format!("http://{http}"),
            acme,
            globex,
        }
    }

    /// One GraphQL operation; the HTTP status and the JSON answer.
    async fn gql(&self, key: &str, query: &str, variables: Value) -> (u16, Value) {
        let body = json!({"query": query, "variables": variables}).to_string();
        let (status, _, text) =
            http_call("POST", &format!("{}/graphql", self.base), key, &body).await;
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    /// [`gql`](Self::gql) that must answer without errors; its `data`.
    async fn ok(&self, key: &str, query: &str, variables: Value) -> Value {
        let (status, v) = self.gql(key, query, variables).await;
        assert_eq!(status, 200, "{v}");
        assert!(v.get("errors").is_none(), "{query}: {v}");
        v["data"].clone()
    }

    async fn mint(&self, scopes: &[&str]) -> String {
        Tenants::new(self.ch.clone())
            .create_api_key(authed(
                &self.acme,
                api::CreateApiKeyRequest {
                    name: scopes.join("+"),
                    scopes: scopes.iter().map(|s| s.to_string()).collect(),
                    expires_at_ms: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .api_key
    }
}

/// The one error of an answer: its code, its fields, its path.
fn error(v: &Value) -> (String, Vec<String>, Value) {
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {v}"));
    assert_eq!(errors.len(), 1, "{v}");
    let e = &errors[0];
    let fields = e["extensions"]["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| f["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (
        e["extensions"]["code"].as_str().unwrap_or("").to_string(),
        fields,
        e["path"].clone(),
    )
}

const REGISTER: &str = "mutation($t: TopicInput!) {
    registerTopic(input: $t) { id name channels defaultOptIn required marketing version } }";

const UPDATE: &str = "mutation($id: String!, $c: [PreferenceChangeInput!]!) {
    updatePreferences(subscriberId: $id, changes: $c) {
        marketing channels { channel value } topics { topicId enabled channels { channel value } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_queries_and_mutations_answer_and_name_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::start(dir.path()).await;

    // A topic, registered: version 1, channels in name order.
    let d = w
        .ok(
            &w.acme,
            REGISTER,
            json!({"t": {"id": "appointments", "name": "Appointments",
                         "channels": ["sms", "email"], "required": true}}),
        )
        .await;
    let t = &d["registerTopic"];
    assert_eq!(t["id"], "appointments");
    assert_eq!(t["channels"], json!(["email", "sms"]));
    assert_eq!(
        (t["version"].as_u64(), t["required"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(
        t["defaultOptIn"], true,
        "topics are opted in unless said otherwise"
    );

    // A bad topic names every argument at fault, as the request spells it.
    let (status, v) = w
        .gql(
            &w.acme,
            REGISTER,
            json!({"t": {"id": "bad id", "channels": ["fax"], "required": true, "marketing": true}}),
        )
        .await;
    assert_eq!(status, 200);
    let (code, fields, path) = error(&v);
    assert_eq!(code, "INVALID_ARGUMENT");
    assert_eq!(fields, ["input.id", "input.channels[0]", "input.required"]);
    assert_eq!(path, json!(["registerTopic"]));
    assert!(v["data"]["registerTopic"].is_null(), "{v}");

    // Preferences: a subscriber with no choices yet.
    let d = w
        .ok(
            &w.acme,
            "query($id: String!) { subscriber(id: $id) { id preferences {
                marketing channels { channel value } topics { topicId } contacts { channel } } } }",
            json!({"id": "sub-1"}),
        )
        .await;
    assert_eq!(d["subscriber"]["id"], "sub-1");
    assert_eq!(d["subscriber"]["preferences"]["marketing"], "INHERIT");

    // A change is accepted (the router applies it: see the round trip).
    let d = w
        .ok(
            &w.acme,
            UPDATE,
            json!({"id": "sub-1", "c": [{"path": "channels.sms", "value": "OFF"}]}),
        )
        .await;
    assert!(d["updatePreferences"].is_object(), "{d}");
    // Bad changes name the change and its part.
    let (_, v) = w
        .gql(
            &w.acme,
            UPDATE,
            json!({"id": "sub-1", "c": [
                {"path": "channels.sms", "value": "ON"},
                {"path": "volume", "value": "OFF"},
                {"path": "channels.fax", "value": "OFF"}]}),
        )
        .await;
    let (code, fields, _) = error(&v);
    assert_eq!(code, "INVALID_ARGUMENT");
    assert_eq!(fields, ["changes[1].path", "changes[2].path"]);
    // A value outside the enum is the query's own error.
    let (_, v) = w
        .gql(
            &w.acme,
            UPDATE,
            json!({"id": "sub-1", "c": [{"path": "channels.sms", "value": "MAYBE"}]}),
        )
        .await;
    assert_eq!(error(&v).0, "INVALID_QUERY", "{v}");
    // An unknown subscriber, an id that cannot be one.
    let (_, v) = w
        .gql(&w.acme, UPDATE, json!({"id": "nobody", "c": []}))
        .await;
    assert_eq!(error(&v).0, "NOT_FOUND", "{v}");
    let (_, v) = w
        .gql(&w.acme, UPDATE, json!({"id": "has space", "c": []}))
        .await;
    assert_eq!(error(&v).1, ["subscriberId"], "{v}");

    // Evaluate: the appointment workflow names no topic.
    let q = "query($w: String!, $c: String!) {
        evaluate(subscriberId: \"sub-1\", workflowId: $w, channel: $c) {
            allowed rule reason topicId workflowVersion } }";
    let d = w.ok(&w.acme, q, json!({"w": "visit", "c": "email"})).await;
    assert_eq!(d["evaluate"]["allowed"], true);
    assert_eq!(d["evaluate"]["rule"], "no_topic");
    assert_eq!(d["evaluate"]["workflowVersion"], 1);
    let (_, v) = w.gql(&w.acme, q, json!({"w": "visit", "c": "fax"})).await;
    assert_eq!(error(&v).1, ["channel"]);
    let (_, v) = w.gql(&w.acme, q, json!({"w": "nope", "c": "email"})).await;
    assert_eq!(error(&v).0, "NOT_FOUND");

    // History: page size and cursor are checked.
    let q = "query($f: Int!, $a: String) { preferenceHistory(subscriberId: \"sub-1\", first: $f, after: $a) {
        nextCursor entries { kind } } }";
    let (_, v) = w.gql(&w.acme, q, json!({"f": 0})).await;
    assert_eq!(error(&v).1, ["first"], "{v}");
    let (_, v) = w
        .gql(&w.acme, q, json!({"f": 10, "a": "not-a-cursor"}))
        .await;
    assert_eq!(error(&v).1, ["after"], "{v}");

    // Contacts: the channel and the value are checked; a code with nothing
    // pending is refused on the channel.
    let q = "mutation($ch: String!, $v: String!) { changeContact(subscriberId: \"sub-1\", channel: $ch, value: $v) {
        codeExpiresAtMs } }";
    let (_, v) = w.gql(&w.acme, q, json!({"ch": "push", "v": "x"})).await;
    assert_eq!(error(&v).1, ["channel"], "{v}");
    let (_, v) = w
        .gql(&w.acme, q, json!({"ch": "email", "v": "not an email"}))
        .await;
    assert_eq!(error(&v).1, ["value"], "{v}");
    let (_, v) = w
        .gql(
            &w.acme,
            "mutation { verifyContact(subscriberId: \"sub-1\", channel: \"sms\", code: \"123456\") { value } }",
            json!({}),
        )
        .await;
    let (code, fields, _) = error(&v);
    assert_eq!(
        (code.as_str(), fields),
        ("INVALID_ARGUMENT", vec!["channel".to_string()])
    );

    // A notification: status and events, by id.
    let nid = trigger_one(&w.ch, &w.acme, "visit", "sub-1", "", r#"{"day":"Monday"}"#).await;
    let q = "query($id: String!) { notification(id: $id) { id workflowId subscriberId status
        events { eventType occurredAtMs detail } } }";
    let d = w.ok(&w.acme, q, json!({"id": nid})).await;
    let n = &d["notification"];
    assert_eq!(
        (&n["id"], &n["workflowId"], &n["subscriberId"]),
        (&json!(nid), &json!("visit"), &json!("sub-1"))
    );
    assert_eq!(
        n["events"][0]["eventType"], "clarion.notification.triggered.v1",
        "{n}"
    );
    assert!(n["events"][0]["detail"].is_object(), "{n}");
    let (_, v) = w.gql(&w.acme, q, json!({"id": "0190aaaa"})).await;
    assert_eq!(error(&v).0, "NOT_FOUND");

    // Several root fields: one failing leaves the others' data.
    let (_, v) = w
        .gql(
            &w.acme,
            "{ known: subscriber(id: \"sub-1\") { id } unknown: subscriber(id: \"nobody\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["known"]["id"], "sub-1", "{v}");
    assert_eq!(error(&v), ("NOT_FOUND".into(), vec![], json!(["unknown"])));
    w.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_holds_keys_scopes_limits_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::start(dir.path()).await;
    let url = format!("{}/graphql", w.base);
    let topics = r#"{"query":"{ topics { id } }"}"#;

    // No key, a bad key: refused before anything runs.
    let (status, _, body) = post(&url, topics).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(code_of(&body), "UNAUTHENTICATED");
    let (status, _, body) = http_call("POST", &url, "ck_acme_wrong", topics).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(code_of(&body), "UNAUTHENTICATED");
    // A key with no scope any field accepts.
    let trigger = w.mint(&["trigger"]).await;
    let (status, _, body) = http_call("POST", &url, &trigger, topics).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(code_of(&body), "PERMISSION_DENIED");

    // A read key reads and cannot change anything.
    let read = w.mint(&["read"]).await;
    w.ok(
        &read,
        "{ topics { id } subscriber(id: \"sub-1\") { id } }",
        json!({}),
    )
    .await;
    let (status, v) = w
        .gql(
            &read,
            UPDATE,
            json!({"id": "sub-1", "c": [{"path": "marketing", "value": "OFF"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (code, _, path) = error(&v);
    assert_eq!(
        (code.as_str(), path),
        ("PERMISSION_DENIED", json!(["updatePreferences"]))
    );
    assert!(
        v["data"].is_null() || v["data"]["updatePreferences"].is_null(),
        "{v}"
    );
    let (_, v) = w.gql(&read, REGISTER, json!({"t": {"id": "sneaky"}})).await;
    assert_eq!(error(&v).0, "PERMISSION_DENIED");
    // The refused registration never happened.
    let d = w.ok(&w.acme, "{ topics { id } }", json!({})).await;
    assert_eq!(d["topics"], json!([]), "{d}");
    let (_, v) = w
        .gql(&w.acme, "{ topic(id: \"sneaky\") { id } }", json!({}))
        .await;
    assert_eq!(error(&v).0, "NOT_FOUND");

    // A preferences key changes preferences and reads them, but reading
    // notifications needs read, as at every door.
    let prefs = w.mint(&["preferences"]).await;
    w.ok(
        &prefs,
        UPDATE,
        json!({"id": "sub-1", "c": [{"path": "channels.push", "value": "OFF"}]}),
    )
    .await;
    let (_, v) = w
        .gql(
            &prefs,
            "{ subscriber(id: \"sub-1\") { id notifications { notifications { status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["subscriber"]["id"], "sub-1", "{v}");
    let (code, _, path) = error(&v);
    assert_eq!(
        (code.as_str(), path),
        ("PERMISSION_DENIED", json!(["subscriber", "notifications"]))
    );
    let (_, v) = w
        .gql(&prefs, "{ notification(id: \"x\") { id } }", json!({}))
        .await;
    assert_eq!(error(&v).0, "PERMISSION_DENIED");

    // Tenant B on tenant A's ids: not found, never A's data.
    w.ok(&w.acme, REGISTER, json!({"t": {"id": "appointments"}}))
        .await;
    let a_nid = trigger_one(&w.ch, &w.acme, "visit", "sub-1", "", r#"{"day":"Monday"}"#).await;
    w.ok(
        &w.acme,
        UPDATE,
        json!({"id": "sub-1", "c": [{"path": "marketing", "value": "OFF"}]}),
    )
    .await;
    Subscribers::new(w.ch.clone())
        .upsert(authed(
            &w.acme,
            api::Subscriber {
                subscriber_id: "acme-only".into(),
                email: "secret@acme.test".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let q = "query($n: String!) {
        s: subscriber(id: \"acme-only\") { id preferences { marketing } }
        h: preferenceHistory(subscriberId: \"acme-only\") { entries { actor } }
        e: evaluate(subscriberId: \"acme-only\", workflowId: \"visit\", channel: \"email\") { allowed }
        n: notification(id: $n) { id subscriberId }
        u: topic(id: \"appointments\") { id } }";
    let (status, v) = w.gql(&w.globex, q, json!({"n": a_nid})).await;
    assert_eq!(status, 200);
    assert!(v["data"].is_null(), "B got data: {v}");
    let mut codes: Vec<(String, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"][0].as_str().unwrap().to_string(),
                e["extensions"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    codes.sort();
    let want: Vec<(String, String)> = ["e", "h", "n", "s", "u"]
        .iter()
        .map(|p| (p.to_string(), "NOT_FOUND".to_string()))
        .collect();
    assert_eq!(codes, want, "{v}");
    let text = v.to_string();
    assert!(
        !text.contains("secret@acme.test") && !text.contains("api_key:"),
        "{text}"
    );
    // B's writes on A's subscriber id miss too, and leave A's alone.
    let (_, v) = w
        .gql(
            &w.globex,
            UPDATE,
            json!({"id": "acme-only", "c": [{"path": "marketing", "value": "ON"}]}),
        )
        .await;
    assert_eq!(error(&v).0, "NOT_FOUND");
    let (_, v) = w
        .gql(
            &w.globex,
            "mutation { changeContact(subscriberId: \"acme-only\", channel: \"email\", value: \"b@globex.test\") { codeExpiresAtMs } }",
            json!({}),
        )
        .await;
    assert_eq!(error(&v).0, "NOT_FOUND");
    let sub = Subscribers::new(w.ch.clone())
        .get(authed(
            &w.acme,
            api::GetSubscriberRequest {
                subscriber_id: "acme-only".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sub.email, "secret@acme.test");

    // Limits: depth, complexity, batches, body size, malformed bodies.
    let deep = format!(
        "{{ __type(name: \"Query\") {{ {} name {} }} }}",
        "fields { type { ".repeat(8),
        " } }".repeat(8)
    );
    let (status, v) = w.gql(&read, &deep, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(error(&v).0, "QUERY_TOO_DEEP", "{v}");
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("15"),
        "{v}"
    );
    let wide: String = (0..100)
        .map(|i| format!("t{i}: topics {{ id }} "))
        .collect();
    let (_, v) = w.gql(&read, &format!("{{ {wide} }}"), json!({})).await;
    assert_eq!(error(&v).0, "QUERY_TOO_COMPLEX", "{v}");
    let batch = format!("[{topics},{topics}]");
    let (status, _, body) = http_call("POST", &url, &read, &batch).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (400, "BAD_REQUEST"),
        "{body}"
    );
    assert!(body.contains("batched"), "{body}");
    let huge =
        json!({"query": format!("{{ topics {{ id }} }} #{}", "x".repeat(70_000))}).to_string();
    let (status, _, body) = http_call("POST", &url, &read, &huge).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (413, "BAD_REQUEST"),
        "{body}"
    );
    let (status, _, body) = http_call("POST", &url, &read, "{\"query\": ").await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (400, "BAD_REQUEST"),
        "{body}"
    );
    let (status, v) = w.gql(&read, "{ topics { id ", json!({})).await;
    assert_eq!(
        (status, error(&v).0.as_str()),
        (200, "INVALID_QUERY"),
        "{v}"
    );
    // Introspection is served (tools need it).
    let d = w
        .ok(&read, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(d["__schema"]["queryType"]["name"], "Query");
    w.node.stop().await;
}

/// The whole story through GraphQL (needs the router to apply preference
/// changes and the projector to keep topics: branch prefs-router): a
/// change is what the next query, the history and `evaluate` see, and the
/// other tenant sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_preferences_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::start(dir.path()).await;
    for t in [
        json!({"id": "appointments", "channels": ["email", "sms"], "required": true}),
        json!({"id": "news", "marketing": true, "defaultOptIn": true}),
    ] {
        w.ok(&w.acme, REGISTER, json!({"t": t})).await;
    }
    apply_workflows(
        &w.ch,
        &w.acme,
        &["id: newsletter\nname: News\ntopic: news\nsteps:\n  - { id: mail, type: send, channel: email, template: visit-tpl, provider: sink }\n"],
    )
    .await;
    // Topics are read back once registered (the projector's rows).
    let d = w
        .ok(&w.acme, "{ topics { id marketing required } }", json!({}))
        .await;
    let ids: Vec<&str> = d["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["appointments", "news"], "{d}");
    let d = w
        .ok(
            &w.acme,
            "{ topic(id: \"news\") { marketing version } }",
            json!({}),
        )
        .await;
    assert_eq!(d["topic"], json!({"marketing": true, "version": 1}));

    // Before: the news topic's default lets a send go.
    let eval =
        "{ evaluate(subscriberId: \"sub-1\", workflowId: \"newsletter\", channel: \"email\") {
        allowed rule topicId } }";
    let d = w.ok(&w.acme, eval, json!({})).await;
    assert_eq!(
        d["evaluate"],
        json!({"allowed": true, "rule": "topic_default", "topicId": "news"})
    );

    // The change answers with the settings after it (read-your-writes).
    let d = w
        .ok(
            &w.acme,
            UPDATE,
            json!({"id": "sub-1", "c": [
                {"path": "topics.news", "value": "OFF"},
                {"path": "topics.appointments.sms", "value": "OFF"},
                {"path": "channels.push", "value": "OFF"}]}),
        )
        .await;
    let p = &d["updatePreferences"];
    assert_eq!(
        p["channels"],
        json!([{"channel": "push", "value": "OFF"}]),
        "{p}"
    );
    assert_eq!(
        p["topics"],
        json!([
            {"topicId": "appointments", "enabled": "INHERIT", "channels": [{"channel": "sms", "value": "OFF"}]},
            {"topicId": "news", "enabled": "OFF", "channels": []}
        ]),
        "{p}"
    );
    // The next query sees it, and evaluate decides by it.
    let d = w
        .ok(
            &w.acme,
            "{ subscriber(id: \"sub-1\") { preferences { topics { topicId enabled } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        d["subscriber"]["preferences"]["topics"][1],
        json!({"topicId": "news", "enabled": "OFF"})
    );
    let d = w.ok(&w.acme, eval, json!({})).await;
    assert_eq!(
        d["evaluate"],
        json!({"allowed": false, "rule": "topic_opt", "topicId": "news"})
    );
    // A required topic keeps a channel.
    let (_, v) = w
        .gql(
            &w.acme,
            UPDATE,
            json!({"id": "sub-1", "c": [{"path": "topics.appointments.email", "value": "OFF"}]}),
        )
        .await;
    assert_eq!(error(&v).1, ["changes[0].value"], "{v}");

    // A contact change: unverified until its code is confirmed.
    let d = w
        .ok(
            &w.acme,
            "mutation { changeContact(subscriberId: \"sub-1\", channel: \"email\", value: \"ana.new@acme.test\") {
                value verified codeExpiresAtMs } }",
            json!({}),
        )
        .await;
    assert_eq!(d["changeContact"]["verified"], false);
    let d = w
        .ok(&w.acme, "{ subscriber(id: \"sub-1\") { preferences { contacts { channel value verified codeExpiresAtMs } } } }", json!({}))
        .await;
    let c = &d["subscriber"]["preferences"]["contacts"][0];
    assert_eq!(
        (&c["channel"], &c["value"], &c["verified"]),
        (&json!("email"), &json!("ana.new@acme.test"), &json!(false))
    );
    assert!(c["codeExpiresAtMs"].as_i64().unwrap() > 0, "{c}");
    let (_, v) = w
        .gql(&w.acme, "mutation { verifyContact(subscriberId: \"sub-1\", channel: \"email\", code: \"000000x\") { value } }", json!({}))
        .await;
    assert_eq!(error(&v).1, ["code"], "{v}");

    // The history: who, when, through which door, old and new.
    let d = w
        .ok(
            &w.acme,
            "{ preferenceHistory(subscriberId: \"sub-1\", first: 1) { nextCursor entries { kind interface actor changes { path old new } } } }",
            json!({}),
        )
        .await;
    let page = &d["preferenceHistory"];
    let e = &page["entries"][0];
    assert_eq!(
        (&e["kind"], &e["interface"]),
        (&json!("preferences_changed"), &json!("graphql")),
        "{e}"
    );
    assert!(e["actor"].as_str().unwrap().starts_with("api_key:"), "{e}");
    assert_eq!(
        e["changes"][0],
        json!({"path": "topics.news", "old": "inherit", "new": "off"})
    );
    let after = page["nextCursor"].as_str().expect("more entries");
    let d = w
        .ok(
            &w.acme,
            "query($a: String) { preferenceHistory(subscriberId: \"sub-1\", after: $a) { entries { kind } } }",
            json!({"a": after}),
        )
        .await;
    let rest: Vec<&str> = d["preferenceHistory"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["contact_changed", "contact_verification_failed"]);

    // Tenant B: none of it.
    let d = w
        .ok(
            &w.globex,
            "{ topics { id } subscriber(id: \"sub-1\") { preferences { topics { topicId } } } }",
            json!({}),
        )
        .await;
    assert_eq!(d["topics"], json!([]));
    assert_eq!(d["subscriber"]["preferences"]["topics"], json!([]));
    w.node.stop().await;
}

/// The code of a refusal's (only) error.
fn code_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A POST with no credential at all.
async fn post(url: &str, body: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!(
            "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), body.to_string())
}
