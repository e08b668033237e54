//! Apps and the device registry end to end, on a real node (every role in
//! process, the REST routes on a real HTTP listener), for two tenants:
//! apps configured over gRPC, REST and the `clarion` binary; iOS and
//! Android devices registered, listed (a fingerprint, never a token),
//! rotated (same id), revoked, registered again (same id) and moved to
//! another subscriber (the old one revoked); bad input refused naming the
//! field, deep links checked when a workflow is published; a subscriber
//! token reaches its own devices only; the SQLite files hold no token in
//! clear.
//!
//! What the gateway answers holds on its own; what the router keeps (the
//! devices listed after a change, a token found again) is the router's
//! work on the log, so those assertions come after the gateway's.

#![allow(clippy::result_large_err)]

use crate::support;

use std::net::SocketAddr;
use std::path::Path;

use clarion_proto::api;
use serde_json::Value;
use support::*;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

type Devices = api::device_service_client::DeviceServiceClient<Channel>;
type Prefs = api::preference_service_client::PreferenceServiceClient<Channel>;

/// An APNs device token (64 hex digits), distinct per `n`.
fn apns_token(n: u8) -> String {
    format!("{n:02x}c0ffee").repeat(8)
}

/// An FCM registration token, distinct per `n`.
fn fcm_token(n: u8) -> String {
    format!("fcm{n}:APA91b_{}", "Qz9-".repeat(40))
}

struct Env {
    node: RunningNode,
    ch: Channel,
    base: String,
    acme: String,
    globex: String,
    dir: tempfile::TempDir,
}

/// A node with the REST routes; tenants acme and globex, each with the app
/// `fieldapp` (acme's over gRPC, globex's over REST) and subscribers ana
/// and bob; acme alone has the app `acme-only`.
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    serve_tracking(&node, http).await;
    let ch = channel(node.grpc).await;
    let base = format!("http://{http}");
    let acme = create_tenant(&ch, "acme").await;
    let globex = create_tenant(&ch, "globex").await;
    for key in [&acme, &globex] {
        for id in ["ana", "bob"] {
            Subscribers::new(ch.clone())
                .upsert(authed(
                    key,
                    api::Subscriber {
                        subscriber_id: id.into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
    }
    let a = Devices::new(ch.clone())
        .configure_app(authed(&acme, field_app("fieldapp")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.version, a.apns_environment.as_str()), (1, "sandbox"));
    Devices::new(ch.clone())
        .configure_app(authed(&acme, field_app("acme-only")))
        .await
        .unwrap();
    let (status, v) = rest(
        "PUT",
        &format!("{base}/v1/apps/fieldapp"),
        &globex,
        r#"{"name":"Globex field","platforms":["ios","android"],"ios_bundle_id":"com.globex.field",
            "deep_links":{"job_card":"https://globex.test/jobs/{id}"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["version"].as_u64(), v["apns_environment"].as_str()),
        (Some(1), Some("production"))
    );
    Env {
        node,
        ch,
        base,
        acme,
        globex,
        dir,
    }
}

fn field_app(id: &str) -> api::App {
    api::App {
        app_id: id.into(),
        name: "Field app".into(),
        platforms: vec!["ios".into(), "android".into()],
        ios_bundle_id: "com.acme.field".into(),
        apns_environment: "sandbox".into(),
        deep_links: [
            ("job_card".to_string(), "fieldapp://jobs/{id}".to_string()),
            (
                "appointment".to_string(),
                "https://acme.test/appointments/{id}".to_string(),
            ),
        ]
        .into(),
        version: 0,
    }
}

async fn rest(method: &str, url: &str, key: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http_call(method, url, key, body).await;
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

fn fields(s: &tonic::Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `errors[].field` of a problem+json answer.
fn problem_fields(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("not a problem: {v}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn register_req(sub: &str, platform: &str, token: &str) -> api::RegisterDeviceRequest {
    api::RegisterDeviceRequest {
        subscriber_id: sub.into(),
        app_id: "fieldapp".into(),
        platform: platform.into(),
        token: token.into(),
        locale: "fr-CA".into(),
        timezone: "America/Toronto".into(),
        app_version: "APP-VERSION-3.1.4".into(),
        ..Default::default()
    }
}

async fn register(ch: &Channel, key: &str, r: api::RegisterDeviceRequest) -> api::Device {
    Devices::new(ch.clone())
        .register_device(authed(key, r))
        .await
        .unwrap()
        .into_inner()
}

async fn list(ch: &Channel, key: &str, sub: &str, all: bool) -> Vec<api::Device> {
    Devices::new(ch.clone())
        .list_devices(authed(
            key,
            api::ListDevicesRequest {
                subscriber_id: sub.into(),
                include_inactive: all,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .devices
}

fn ids_and_status(devices: &[api::Device]) -> Vec<(String, String)> {
    let mut v: Vec<_> = devices
        .iter()
        .map(|d| (d.device_id.clone(), d.status.clone()))
        .collect();
    v.sort();
    v
}

/// Every byte of the data directory's SQLite files (with their WALs).
fn sqlite_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".db") {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!out.is_empty(), "no SQLite files in {}", dir.display());
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn clarion(e: &Env, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(args)
        .args(["--endpoint", &format!("http://{}", e.node.grpc)])
        .args(["--api-key", &e.acme])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_registered_listed_rotated_revoked_and_moved_and_no_token_is_stored_in_clear() {
    let e = env().await;
    let (ch, acme, globex) = (&e.ch, &e.acme, &e.globex);

    // iOS over gRPC, Android over REST: each answers the device, no token.
    let ios = register(ch, acme, register_req("ana", "ios", &apns_token(1))).await;
    assert_eq!(
        (
            ios.provider.as_str(),
            ios.status.as_str(),
            ios.locale.as_str()
        ),
        ("apns", "active", "fr-CA")
    );
    assert_eq!(ios.token_fingerprint.len(), 6);
    assert!(!format!("{ios:?}").contains(&apns_token(1)));
    let body = format!(
        r#"{{"app_id":"fieldapp","platform":"android","token":"{}","app_version":"APP-VERSION-3.1.4"}}"#,
        fcm_token(1)
    );
    let url = format!("{}/v1/subscribers/ana/devices", e.base);
    let (status, android) = rest("POST", &url, acme, &body).await;
    assert_eq!(status, 201, "{android}");
    assert_eq!(
        (android["provider"].as_str(), android["status"].as_str()),
        (Some("fcm"), Some("active"))
    );
    assert!(!android.to_string().contains(&fcm_token(1)), "{android}");
    let android_id = android["device_id"].as_str().unwrap().to_string();
    assert_ne!(android_id, ios.device_id);

    // Rotation keeps the id and changes the fingerprint.
    let rotated = Devices::new(ch.clone())
        .rotate_device(authed(
            acme,
            api::RotateDeviceRequest {
                subscriber_id: "ana".into(),
                device_id: ios.device_id.clone(),
                new_token: apns_token(2),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.device_id, ios.device_id);
    assert_ne!(rotated.token_fingerprint, ios.token_fingerprint);

    // An operator revokes the Android device over REST.
    let (status, revoked) = rest("DELETE", &format!("{url}/{android_id}"), acme, "").await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(
        (
            revoked["status"].as_str(),
            revoked["revoked_reason"].as_str()
        ),
        (Some("revoked"), Some("operator"))
    );

    // Tenant B: none of A's devices or apps, whatever it names.
    assert!(list(ch, globex, "ana", true).await.is_empty());
    let b = Devices::new(ch.clone());
    let e1 = b
        .clone()
        .rotate_device(authed(
            globex,
            api::RotateDeviceRequest {
                subscriber_id: "ana".into(),
                device_id: ios.device_id.clone(),
                new_token: apns_token(9),
            },
        ))
        .await
        .unwrap_err();
    let e2 = b
        .clone()
        .revoke_device(authed(
            globex,
            api::RevokeDeviceRequest {
                subscriber_id: "ana".into(),
                device_id: ios.device_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    let e3 = b
        .clone()
        .get_app(authed(
            globex,
            api::GetAppRequest {
                app_id: "acme-only".into(),
            },
        ))
        .await
        .unwrap_err();
    for s in [&e1, &e2, &e3] {
        assert_eq!(s.code(), Code::NotFound, "{s:?}");
    }
    let (status, v) = rest("GET", &format!("{}/v1/apps", e.base), globex, "").await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> = v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fieldapp"], "{v}");
    let (status, v) = rest(
        "DELETE",
        &format!("{}/v1/subscribers/ana/devices/{android_id}", e.base),
        globex,
        "",
    )
    .await;
    assert_eq!(status, 404, "{v}");

    // The CLI: apps listed, a device registered from standard input.
    let apps = clarion(&e, &["apps", "list"], "");
    assert!(apps.contains("acme-only\tv1\tios,android"), "{apps}");
    let app = clarion(&e, &["apps", "get", "fieldapp"], "");
    assert!(app.contains("fieldapp://jobs/{id}"), "{app}");
    // The same definition again is no new version; a changed one is.
    let put = |name: &str| {
        let args = [
            "apps",
            "put",
            "acme-only",
            "--name",
            name,
            "--platform",
            "ios,android",
            "--ios-bundle-id",
            "com.acme.field",
            "--apns-environment",
            "sandbox",
            "--link",
            "job_card=fieldapp://jobs/{id}",
            "--link",
            "appointment=https://acme.test/appointments/{id}",
        ];
        let out = clarion(&e, &args, "");
        serde_json::from_str::<Value>(&out).unwrap()["version"].as_u64()
    };
    assert_eq!(put("Field app"), Some(1));
    assert_eq!(put("Renamed"), Some(2));
    let out = clarion(
        &e,
        &[
            "devices",
            "register",
            "bob",
            "--app",
            "fieldapp",
            "--platform",
            "android",
            "--token",
            "-",
        ],
        &fcm_token(3),
    );
    assert!(out.contains("\tfieldapp\tandroid/fcm\tactive\t"), "{out}");
    assert!(!out.contains(&fcm_token(3)), "{out}");

    // What the router keeps: ana's active devices are the rotated iOS one.
    let active = list(ch, acme, "ana", false).await;
    assert_eq!(
        ids_and_status(&active),
        [(ios.device_id.clone(), "active".into())]
    );
    assert_eq!(active[0].token_fingerprint, rotated.token_fingerprint);
    let all = list(ch, acme, "ana", true).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let listed = clarion(&e, &["devices", "list", "ana", "--all"], "");
    assert!(
        listed.contains(&format!("{android_id}\tfieldapp\tandroid/fcm\trevoked")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("token …{}", rotated.token_fingerprint)),
        "{listed}"
    );

    // The same token again is the same device.
    let again = register(ch, acme, register_req("ana", "ios", &apns_token(2))).await;
    assert_eq!(again.device_id, ios.device_id);
    // The token registered to bob moves: ana's device is revoked.
    let bobs = register(ch, acme, register_req("bob", "ios", &apns_token(2))).await;
    assert_ne!(bobs.device_id, ios.device_id);
    let ana = list(ch, acme, "ana", true).await;
    let moved = ana.iter().find(|d| d.device_id == ios.device_id).unwrap();
    assert_eq!(
        (moved.status.as_str(), moved.revoked_reason.as_str()),
        ("revoked", "moved")
    );
    assert!(list(ch, acme, "ana", false).await.is_empty());
    assert_eq!(list(ch, acme, "bob", false).await.len(), 2);

    // No token in clear anywhere in the SQLite files (the app version,
    // stored in clear with the same events, is found: the search works).
    let bytes = sqlite_bytes(e.dir.path());
    assert!(contains(&bytes, "APP-VERSION-3.1.4"));
    for t in [apns_token(1), apns_token(2), fcm_token(1), fcm_token(3)] {
        assert!(
            !contains(&bytes, &t),
            "a token in clear in the SQLite files"
        );
    }
    e.node.stop().await;
}

const PUSH_FLOW: &str = r#"
id: job-push
steps:
  - id: p
    type: send
    channel: push
    template: job-push
    provider: push
    app: APP
    link: LINK
"#;

/// Applies the push workflow with `app` and `link`; the refusal's fields.
async fn publish(ch: &Channel, key: &str, app: &str, link: &str) -> Result<u32, Vec<String>> {
    let def = PUSH_FLOW.replace("APP", app).replace("LINK", link);
    api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(key, api::ApplyWorkflowRequest { definition: def }))
        .await
        .map(|r| r.into_inner().version)
        .map_err(|s| {
            assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
            fields(&s)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_devices_apps_and_deep_links_are_refused_naming_the_field() {
    let e = env().await;
    let (ch, acme) = (&e.ch, &e.acme);
    let refused = |r: api::RegisterDeviceRequest| {
        let ch = ch.clone();
        let key = acme.clone();
        async move {
            let s = Devices::new(ch)
                .register_device(authed(&key, r))
                .await
                .unwrap_err();
            assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
            assert!(!s.message().contains("c0ffee"), "{s:?}");
            fields(&s)
        }
    };
    let ok = register_req("ana", "ios", &apns_token(1));
    let cases = [
        (
            api::RegisterDeviceRequest {
                platform: "symbian".into(),
                ..ok.clone()
            },
            "platform",
        ),
        (
            api::RegisterDeviceRequest {
                platform: "web".into(),
                ..ok.clone()
            },
            "platform",
        ),
        (
            api::RegisterDeviceRequest {
                token: String::new(),
                ..ok.clone()
            },
            "token",
        ),
        (
            api::RegisterDeviceRequest {
                token: "a".repeat(4097),
                ..ok.clone()
            },
            "token",
        ),
        (
            api::RegisterDeviceRequest {
                app_id: "nope".into(),
                ..ok.clone()
            },
            "app_id",
        ),
        (
            api::RegisterDeviceRequest {
                provider: "wns".into(),
                ..ok.clone()
            },
            "provider",
        ),
    ];
    for (r, field) in cases {
        assert_eq!(refused(r).await, [field]);
    }
    // REST: problem+json naming the same fields.
    let url = format!("{}/v1/subscribers/ana/devices", e.base);
    for (body, field) in [
        (
            r#"{"app_id":"fieldapp","platform":"symbian","token":"ab"}"#.to_string(),
            "platform",
        ),
        (
            r#"{"app_id":"fieldapp","platform":"android","token":""}"#.to_string(),
            "token",
        ),
        (
            format!(
                r#"{{"app_id":"fieldapp","platform":"android","token":"{}"}}"#,
                "a".repeat(4097)
            ),
            "token",
        ),
        (
            r#"{"app_id":"nope","platform":"android","token":"ab"}"#.to_string(),
            "app_id",
        ),
    ] {
        let (status, v) = rest("POST", &url, acme, &body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(problem_fields(&v), [field], "{v}");
    }
    // Rotation checks the new token too; an unknown device is not found.
    let d = register(ch, acme, ok.clone()).await;
    let rotate = |device_id: String, new_token: String| {
        let (ch, key) = (ch.clone(), acme.clone());
        async move {
            Devices::new(ch)
                .rotate_device(authed(
                    &key,
                    api::RotateDeviceRequest {
                        subscriber_id: "ana".into(),
                        device_id,
                        new_token,
                    },
                ))
                .await
        }
    };
    let s = rotate(d.device_id.clone(), String::new())
        .await
        .unwrap_err();
    assert_eq!(fields(&s), ["new_token"]);
    let s = rotate(d.device_id.clone(), "not hex".into())
        .await
        .unwrap_err();
    assert_eq!(fields(&s), ["new_token"]);
    let s = rotate("0123abcd".into(), apns_token(5)).await.unwrap_err();
    assert_eq!(s.code(), Code::NotFound, "{s:?}");

    // Apps: every bad field named.
    let s = Devices::new(ch.clone())
        .configure_app(authed(
            acme,
            api::App {
                app_id: "bad app".into(),
                platforms: vec!["ios".into(), "symbian".into()],
                apns_environment: "staging".into(),
                deep_links: [("ticket".to_string(), "x://{id}".to_string())].into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let mut got = fields(&s);
    got.sort();
    assert_eq!(
        got,
        [
            "apns_environment",
            "app_id",
            "deep_links.ticket",
            "ios_bundle_id",
            "platforms[1]"
        ]
    );
    let (status, v) = rest(
        "PUT",
        &format!("{}/v1/apps/fieldapp", e.base),
        acme,
        r#"{"platforms":["android"],"deep_links":{"job_card":"fieldapp://jobs"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(problem_fields(&v), ["deep_links.job_card"]);

    // Publication checks each push step's app and deep link.
    Tenants::new(ch.clone())
        .put_template(authed(
            acme,
            api::Template {
                template_id: "job-push".into(),
                channel: "push".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Job {{ payload.job_id }}".into(),
                    body: "A job for you".into(),
                }],
            },
        ))
        .await
        .unwrap();
    let link = |t: &str, id: &str| format!("{{ type: {t}, id: {id} }}");
    assert_eq!(
        publish(ch, acme, "fieldapp", &link("job_card", "payload.job_id")).await,
        Ok(1)
    );
    for (app, link, field) in [
        (
            "fieldapp",
            link("ticket", "payload.job_id"),
            "steps[0].link.type",
        ),
        (
            "fieldapp",
            link("approval", "payload.job_id"),
            "steps[0].link.type",
        ),
        ("nope", link("job_card", "payload.job_id"), "steps[0].app"),
        ("fieldapp", link("job_card", "''"), "steps[0].link.id"),
    ] {
        assert_eq!(
            publish(ch, acme, app, &link).await,
            Err(vec![field.to_string()]),
            "{link}"
        );
    }
    // A link with no id at all.
    assert_eq!(
        publish(ch, acme, "fieldapp", "{ type: job_card }").await,
        Err(vec!["steps[0].link.id".to_string()])
    );
    // Tenant globex's fieldapp has no appointment pattern: refused there.
    let globex_link = link("appointment", "payload.visit_id");
    Tenants::new(ch.clone())
        .put_template(authed(
            &e.globex,
            api::Template {
                template_id: "job-push".into(),
                channel: "push".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Visit".into(),
                    body: "Soon".into(),
                }],
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        publish(ch, &e.globex, "fieldapp", &globex_link).await,
        Err(vec!["steps[0].link.type".to_string()])
    );
    assert_eq!(publish(ch, acme, "fieldapp", &globex_link).await, Ok(2));
    e.node.stop().await;
}

async fn subscriber_token(ch: &Channel, key: &str, sub: &str) -> String {
    Prefs::new(ch.clone())
        .create_subscriber_token(authed(
            key,
            api::CreateSubscriberTokenRequest {
                subscriber_id: sub.into(),
                ttl_seconds: 600,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_token_reaches_its_own_subscribers_devices_only() {
    let e = env().await;
    let (ch, acme) = (&e.ch, &e.acme);
    let token = subscriber_token(ch, acme, "ana").await;
    let bobs = register(ch, acme, register_req("bob", "android", &fcm_token(7))).await;

    // Its own: register over REST, list over gRPC, revoke as the user.
    let url = format!("{}/v1/subscribers/ana/devices", e.base);
    let body = format!(
        r#"{{"app_id":"fieldapp","platform":"ios","token":"{}"}}"#,
        apns_token(4)
    );
    let (status, mine) = rest("POST", &url, &token, &body).await;
    assert_eq!(status, 201, "{mine}");
    let mine = mine["device_id"].as_str().unwrap().to_string();
    let (status, v) = rest("GET", &url, &token, "").await;
    assert_eq!(status, 200, "{v}");
    let got = list(ch, &token, "ana", false).await;
    assert!(got.iter().all(|d| d.subscriber_id == "ana"), "{got:?}");
    let (status, v) = rest("DELETE", &format!("{url}/{mine}"), &token, "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["revoked_reason"].as_str()),
        (Some("revoked"), Some("user"))
    );

    // Bob's devices do not exist for it, on either door.
    let bob_url = format!("{}/v1/subscribers/bob/devices", e.base);
    for (method, url, body) in [
        ("GET", bob_url.clone(), String::new()),
        ("POST", bob_url.clone(), body.clone()),
        (
            "DELETE",
            format!("{bob_url}/{}", bobs.device_id),
            String::new(),
        ),
        (
            "POST",
            format!("{bob_url}/{}/rotate", bobs.device_id),
            format!(r#"{{"new_token":"{}"}}"#, fcm_token(8)),
        ),
    ] {
        let (status, v) = rest(method, &url, &token, &body).await;
        assert_eq!(status, 404, "{method} {url}: {v}");
    }
    let s = Devices::new(ch.clone())
        .list_devices(authed(
            &token,
            api::ListDevicesRequest {
                subscriber_id: "bob".into(),
                include_inactive: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
    // No app route: apps are the tenant's, not the user's.
    for (method, path, body) in [
        ("GET", "/v1/apps", ""),
        ("GET", "/v1/apps/fieldapp", ""),
        ("PUT", "/v1/apps/fieldapp", r#"{"platforms":["ios"]}"#),
    ] {
        let (status, v) = rest(method, &format!("{}{path}", e.base), &token, body).await;
        assert_eq!(status, 403, "{method} {path}: {v}");
    }
    let s = Devices::new(ch.clone())
        .list_apps(authed(&token, api::ListAppsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    // A read key lists devices and cannot register one.
    let read = Tenants::new(ch.clone())
        .create_api_key(authed(
            acme,
            api::CreateApiKeyRequest {
                name: "read".into(),
                scopes: vec!["read".into()],
                expires_at_ms: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let (status, v) = rest("GET", &bob_url, &read, "").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = rest("POST", &bob_url, &read, &body).await;
    assert_eq!(status, 403, "{v}");

    // After the router: bob's device untouched, ana's revoked by its user.
    assert_eq!(
        ids_and_status(&list(ch, acme, "bob", true).await),
        [(bobs.device_id.clone(), "active".into())]
    );
    let ana = list(ch, acme, "ana", true).await;
    assert_eq!(ids_and_status(&ana), [(mine, "revoked".into())]);
    assert_eq!(ana[0].revoked_reason, "user");
    e.node.stop().await;
}
