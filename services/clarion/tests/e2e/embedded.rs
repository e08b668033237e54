//! End to end on the embedded backends (SQLite log and store on real files),
//! every role in one process as `clarion serve` runs them.

use crate::support;

use std::time::Duration;

use clarion_dispatch::smtp::SmtpConfig;
use clarion_proto::api;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn smtp_config(smtp: &SmtpServer) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: smtp.port,
        from: "Clarion <noreply@clarion.test>".into(),
        message_id_domain: "clarion.test".into(),
        starttls: false,
        pool_size: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_sends_a_localized_email_over_smtp() {
    let smtp = SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.providers.smtp = Some(smtp_config(&smtp));
    let node = start(cfg, false).await;
    email_scenario(&node, &smtp, "acme").await;
    node.stop().await;
}

fn violations(s: &tonic::Status) -> Vec<(String, String)> {
    s.get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    let mut client = Notifications::new(ch.clone());
    let req = |payload: &str, workflow: &str| api::TriggerRequest {
        event: String::new(),
        workflow_id: workflow.into(),
        recipients: vec![api::Recipient {
            subscriber_id: "u1".into(),
            email: "u1@example.test".into(),
            ..Default::default()
        }],
        payload_json: payload.into(),
        idempotency_key: String::new(),
        ..Default::default()
    };

    // Given one trigger accepted before the bad ones
    let accepted = client
        .trigger(authed(&key, req(r#"{"day":"lundi"}"#, "appointment")))
        .await
        .unwrap()
        .into_inner()
        .notification_ids;

    // No key, a malformed key, a key of an unknown tenant, a wrong key of a real tenant
    let e = client
        .trigger(tonic::Request::new(req("{}", "appointment")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("missing API key"), "{e:?}");
    let e = client
        .trigger(authed("nonsense", req("{}", "appointment")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("malformed API key"), "{e:?}");
    let stranger = format!("ck_nobody_{}", "0".repeat(48));
    let e = client
        .trigger(authed(&stranger, req("{}", "appointment")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // One answer for an unknown tenant and a wrong key: no tenant enumeration.
    let unknown_tenant = e.message().to_string();
    assert_eq!(unknown_tenant, clarion_gateway::auth::INVALID_KEY);
    let wrong = format!("ck_acme_{}", "0".repeat(48));
    let e = client
        .trigger(authed(&wrong, req("{}", "appointment")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(e.message(), unknown_tenant);

    // Unknown workflow
    let e = client
        .trigger(authed(&key, req("{}", "no-such-flow")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = violations(&e);
    assert_eq!(v[0].0, "workflow_id", "{v:?}");
    assert!(v[0].1.contains("no workflow \"no-such-flow\""), "{v:?}");

    // Malformed payload
    let e = client
        .trigger(authed(&key, req("{\"day\":", "appointment")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = violations(&e);
    assert_eq!(v[0].0, "payload_json");
    assert!(v[0].1.contains("not valid JSON"), "{v:?}");

    // Oversize payload (limit 64 KiB)
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(70 * 1024));
    let e = client
        .trigger(authed(&key, req(&big, "appointment")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = violations(&e);
    assert_eq!(v[0].0, "payload_json");
    assert!(v[0].1.contains("over the limit of 65536 bytes"), "{v:?}");

    // Bad recipient fields are all reported, each by its path
    let mut bad = req("{}", "appointment");
    bad.recipients.push(api::Recipient {
        subscriber_id: "has/slash".into(),
        email: "not-an-email".into(),
        ..Default::default()
    });
    let e = client.trigger(authed(&key, bad)).await.unwrap_err();
    let fields: Vec<String> = violations(&e).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        ["recipients[1].subscriber_id", "recipients[1].email"]
    );

    // Then the trigger accepted first is still delivered (to the sink)
    let n = wait_status(
        &ch,
        &key,
        &accepted[0],
        "delivered",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n.status, "delivered", "{n:?}");
    let sunk = clarion_dispatch::dispatcher::sink_deliveries(node.store(), "acme", &accepted[0])
        .await
        .unwrap();
    assert_eq!(sunk.len(), 1);
    assert_eq!(sunk[0].body, "Hello u1, your technician comes on lundi.");

    // And bad configuration is refused with paths, too
    let e = Tenants::new(ch.clone())
        .put_workflow(authed(
            &key,
            api::Workflow {
                workflow_id: "broken".into(),
                name: String::new(),
                steps: vec![api::WorkflowStep {
                    channel: "fax".into(),
                    template_id: "missing".into(),
                    provider: String::new(),
                }],
            },
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = violations(&e).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["steps[0].channel", "steps[0].template_id"]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_and_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let mut tenants = Tenants::new(ch.clone());
    // Creating a tenant needs the admin token
    let e = tenants
        .create_tenant(authed(
            "ck_acme_wrong",
            api::CreateTenantRequest {
                tenant_id: "acme".into(),
                name: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let key = create_tenant(&ch, "acme").await;
    let e = tenants
        .create_tenant(authed(
            ADMIN_TOKEN,
            api::CreateTenantRequest {
                tenant_id: "acme".into(),
                name: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = tenants
        .create_tenant(authed(
            ADMIN_TOKEN,
            api::CreateTenantRequest {
                tenant_id: "Bad_Id".into(),
                name: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "tenant_id");

    // A second key works; keys are stored only as hashes
    let second = tenants
        .create_api_key(authed(
            &key,
            api::CreateApiKeyRequest {
                name: "ci".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut subs = Subscribers::new(ch.clone());
    let s = api::Subscriber {
        subscriber_id: "ana".into(),
        email: "ana@example.test".into(),
        phone: "+15145550100".into(),
        locale: "fr-CA".into(),
        timezone: "America/Montreal".into(),
        attributes_json: r#"{"tier":"gold"}"#.into(),
        webhook_url: String::new(),
        country: "CA".into(),
    };
    subs.upsert(authed(&second.api_key, s.clone()))
        .await
        .unwrap();
    let got = subs
        .get(authed(
            &key,
            api::GetSubscriberRequest {
                subscriber_id: "ana".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, s);
    let e = subs
        .get(authed(
            &key,
            api::GetSubscriberRequest {
                subscriber_id: "bob".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = subs
        .upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: "x".into(),
                phone: "12".into(),
                attributes_json: "[]".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = violations(&e).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["phone", "attributes_json"]);
    // Keys are stored only as hashes: the key rows are found under the
    // SHA-256 of each secret, and no secret appears anywhere in the SQLite
    // file (log and store), nor in its WAL.
    for plaintext in [&key, &second.api_key] {
        let presented = clarion_domain::tenant::PresentedKey::parse(plaintext).unwrap();
        let row = node
            .store()
            .get(&clarion_store::RowKey::new(
                clarion_store::Table::ApiKeys,
                "acme",
                &presented.secret_sha256,
                Vec::new(),
            ))
            .await
            .unwrap()
            .expect("the key's row, under its hash");
        let secret = plaintext.rsplit('_').next().unwrap();
        assert!(
            !row.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the key row holds the secret"
        );
    }
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(bytes.len() > 4096, "the database files were found");
    let hash = clarion_domain::tenant::PresentedKey::parse(&key)
        .unwrap()
        .secret_sha256;
    assert!(
        bytes.windows(hash.len()).any(|w| w == hash.as_bytes()),
        "the scan sees stored key hashes (so it would see a secret)"
    );
    for plaintext in [&key, &second.api_key] {
        let secret = plaintext.rsplit('_').next().unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "an API key secret is stored in plaintext"
        );
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_conflicts_and_never_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    let req = |payload: &str| api::TriggerRequest {
        workflow_id: "appointment".into(),
        event: String::new(),
        recipients: vec![api::Recipient {
            subscriber_id: "u9".into(),
            email: "u9@example.test".into(),
            ..Default::default()
        }],
        payload_json: payload.into(),
        idempotency_key: "order-1001-confirmed".into(),
        ..Default::default()
    };
    // Concurrent duplicates: every caller gets the same ids, one of them fresh.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let ch = ch.clone();
        let key = key.clone();
        // Same content, keys in a different order: still the same request.
        let payload = if i % 2 == 0 {
            r#"{"day":"mardi","slot":1}"#
        } else {
            r#"{"slot":1,"day":"mardi"}"#
        };
        let r = req(payload);
        tasks.push(tokio::spawn(async move {
            Notifications::new(ch)
                .trigger(authed(&key, r))
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ids = answers[0].notification_ids.clone();
    assert!(answers.iter().all(|a| a.notification_ids == ids));
    assert_eq!(
        answers.iter().filter(|a| !a.replay).count(),
        1,
        "exactly one original"
    );

    // A later repeat is a replay of the original response
    let again = Notifications::new(ch.clone())
        .trigger(authed(&key, req(r#"{"day":"mardi","slot":1}"#)))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replay);
    assert_eq!(again.notification_ids, ids);

    // The same key with different parameters is refused, naming the field
    let e = Notifications::new(ch.clone())
        .trigger(authed(&key, req(r#"{"day":"jeudi","slot":1}"#)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v = violations(&e);
    assert_eq!(v[0].0, "idempotency_key");
    assert!(v[0].1.contains("different parameters"), "{v:?}");

    // And the notification ran once: one sink delivery, one end
    let n = wait_until(&ch, &key, &ids[0], Duration::from_secs(20), |n| {
        n.events
            .iter()
            .any(|e| e.event_type == "clarion.notification.ended.v1")
    })
    .await;
    assert_eq!(n.status, "delivered");
    let sunk = clarion_dispatch::dispatcher::sink_deliveries(node.store(), "acme", &ids[0])
        .await
        .unwrap();
    assert_eq!(sunk.len(), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_dedup_window_suppresses_repeats_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            &key,
            api::ApplyWorkflowRequest {
                definition: r#"
id: status-change
dedup_window: 10m
steps:
  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }
"#
                .into(),
            },
        ))
        .await
        .unwrap();
    let trigger = |day: &'static str| {
        let (ch, key) = (ch.clone(), key.clone());
        async move {
            let payload = format!(r#"{{"day":"{day}"}}"#);
            trigger_one(
                &ch,
                &key,
                "status-change",
                "u5",
                "u5@example.test",
                &payload,
            )
            .await
        }
    };
    let first = trigger("lundi").await;
    let repeat = trigger("lundi").await;
    let other = trigger("mardi").await;
    let n = wait_until(&ch, &key, &repeat, Duration::from_secs(20), ended).await;
    assert_eq!(n.status, "suppressed", "{n:?}");
    let end: serde_json::Value =
        serde_json::from_str(&n.events.last().unwrap().detail_json).unwrap();
    assert!(
        end["reason"].as_str().unwrap().contains(&first),
        "names the original: {end}"
    );
    assert_eq!(
        wait_until(&ch, &key, &first, Duration::from_secs(20), ended)
            .await
            .status,
        "delivered"
    );
    assert_eq!(
        wait_until(&ch, &key, &other, Duration::from_secs(20), ended)
            .await
            .status,
        "delivered"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_key_stops_waiting_runs_of_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.log.partitions = 3;
    let node = start(cfg, false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            &key,
            api::ApplyWorkflowRequest {
                definition: r#"
id: reminder
cancel_key: appointment_id
steps:
  - { id: wait, type: delay, duration: 1h }
  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }
"#
                .into(),
            },
        ))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (sub, appt) in [("a1", "42"), ("a2", "42"), ("a3", "43")] {
        ids.push(
            trigger_one(
                &ch,
                &key,
                "reminder",
                sub,
                &format!("{sub}@example.test"),
                &format!(r#"{{"appointment_id":"{appt}","day":"lundi"}}"#),
            )
            .await,
        );
    }
    // Wait until all three runs are waiting on their delay (timer scheduled).
    for id in &ids {
        wait_until(&ch, &key, id, Duration::from_secs(20), |n| {
            !n.events.is_empty()
        })
        .await;
    }
    let e = Notifications::new(ch.clone())
        .cancel(authed(
            &key,
            api::CancelRequest {
                cancel_key: String::new(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&e)[0].0, "cancel_key");
    Notifications::new(ch.clone())
        .cancel(authed(
            &key,
            api::CancelRequest {
                cancel_key: "42".into(),
                reason: "appointment 42 cancelled by the customer".into(),
            },
        ))
        .await
        .unwrap();
    for id in &ids[..2] {
        let n = wait_status(&ch, &key, id, "cancelled", Duration::from_secs(20)).await;
        assert_eq!(n.status, "cancelled", "{n:?}");
        let ended: serde_json::Value =
            serde_json::from_str(&n.events.last().unwrap().detail_json).unwrap();
        assert_eq!(ended["reason"], "appointment 42 cancelled by the customer");
    }
    // A later trigger for a3 sits behind the cancel on a3's partition: once it
    // is delivered, that partition has applied the cancel.
    let sentinel = trigger_one(
        &ch,
        &key,
        "appointment",
        "a3",
        "a3@example.test",
        r#"{"day":"mardi"}"#,
    )
    .await;
    assert_eq!(
        wait_status(&ch, &key, &sentinel, "delivered", Duration::from_secs(20))
            .await
            .status,
        "delivered"
    );
    // The run for appointment 43 is untouched: still waiting, not ended.
    let other = Notifications::new(ch.clone())
        .get_notification(authed(
            &key,
            api::GetNotificationRequest {
                notification_id: ids[2].clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        other
            .events
            .iter()
            .all(|e| e.event_type != "clarion.notification.ended.v1"),
        "{other:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_limits_drop_or_defer_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    apply_workflows(
        &ch,
        &key,
        &[
            "id: capped\nthrottle: [ { scope: recipient, limit: 2, window: 1h, on_exceed: drop } ]\nsteps:\n  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }\n",
            "id: paced\nthrottle: [ { scope: channel, limit: 1, window: 2s, on_exceed: defer } ]\nsteps:\n  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }\n",
        ],
    )
    .await;
    let e = api::workflow_service_client::WorkflowServiceClient::new(ch.clone())
        .apply(authed(
            &key,
            api::ApplyWorkflowRequest {
                definition: "id: bad\nthrottle: [ { scope: recipient, limit: 0, window: soon } ]\nsteps: [ { id: s, type: stop } ]\n".into(),
            },
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = violations(&e).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["throttle[0].limit", "throttle[0].window"]);

    let trigger = |workflow: &'static str, sub: &'static str, n: u32| {
        let (ch, key) = (ch.clone(), key.clone());
        async move {
            let email = format!("{sub}@example.test");
            let payload = format!(r#"{{"day":"day {n}"}}"#);
            trigger_one(&ch, &key, workflow, sub, &email, &payload).await
        }
    };
    // Drop: the third message to the same recipient within the hour is not sent
    let mut statuses = Vec::new();
    for i in 0..3 {
        let id = trigger("capped", "busy-bee", i).await;
        statuses.push(wait_until(&ch, &key, &id, Duration::from_secs(20), ended).await);
    }
    assert_eq!(
        statuses
            .iter()
            .map(|n| n.status.as_str())
            .collect::<Vec<_>>(),
        ["delivered", "delivered", "suppressed"]
    );
    let end: serde_json::Value =
        serde_json::from_str(&statuses[2].events.last().unwrap().detail_json).unwrap();
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("throttled: recipient limit of 2 per 1h reached (workflow capped)"),
        "{end}"
    );
    // Another recipient is not affected
    let other = trigger("capped", "calm-cat", 9).await;
    assert_eq!(
        wait_until(&ch, &key, &other, Duration::from_secs(20), ended)
            .await
            .status,
        "delivered"
    );

    // Defer: the second message waits until the 2 s window has room, then goes
    let first = trigger("paced", "pacer", 1).await;
    let second = trigger("paced", "pacer", 2).await;
    let a = wait_until(&ch, &key, &first, Duration::from_secs(20), ended).await;
    let b = wait_until(&ch, &key, &second, Duration::from_secs(20), ended).await;
    assert_eq!(
        (a.status.as_str(), b.status.as_str()),
        ("delivered", "delivered")
    );
    // The router's clock: both the throttle window and the dispatch request
    // are stamped with it (a provider's "sent" time is later and varies).
    let requested_at = |n: &api::Notification| {
        n.events
            .iter()
            .find(|e| e.event_type == "clarion.notification.dispatch_requested.v1")
            .unwrap()
            .occurred_at_ms
    };
    assert!(
        requested_at(&b) - requested_at(&a) >= 2_000,
        "deferred by the window: {} ms",
        requested_at(&b) - requested_at(&a)
    );
    assert!(
        b.events
            .iter()
            .any(|e| e.event_type == "clarion.notification.noted.v1"
                && e.detail_json.contains("deferred")),
        "the deferral is recorded"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_hold_across_workflows_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    let mut tenants = api::tenant_service_client::TenantServiceClient::new(ch.clone());
    let limits = |definition: &str| {
        authed(
            &key,
            api::PutLimitsRequest {
                definition: definition.into(),
            },
        )
    };

    // Bad limits are refused with the path, and nothing is set.
    let e = tenants
        .put_limits(limits(
            "throttle:\n  - { scope: workflow, limit: 5, window: 1h }\n  - { scope: tenant, channel: fax, limit: 0, window: 1h }\n",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = violations(&e).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "throttle[0].scope",
            "throttle[1].channel",
            "throttle[1].limit"
        ]
    );
    let none = tenants
        .get_limits(authed(&key, api::GetLimitsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.version, 0);

    // At most 2 messages per recipient per hour whatever the workflow, and
    // at most 1 SMS per hour for the whole tenant; set as an admin would,
    // with `clarion limits apply -f`.
    let file = dir.path().join("limits.yaml");
    std::fs::write(
        &file,
        "throttle:\n  - { scope: recipient, limit: 2, window: 1h }\n  - { scope: tenant, channel: sms, limit: 1, window: 1h }\n",
    )
    .unwrap();
    let endpoint = format!("http://{}", node.grpc);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
            .args(args)
            .args(["--endpoint", &endpoint, "--api-key", &key])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        cli(&["limits", "apply", "-f", file.to_str().unwrap()]).trim(),
        "limits version 1"
    );
    let shown = cli(&["limits", "get"]);
    assert!(
        shown.starts_with("# version 1\n") && shown.contains(r#""channel": "sms""#),
        "{shown}"
    );

    appointment_workflow(&ch, &key, "appointment", "sink").await;
    tenants
        .put_template(authed(
            &key,
            api::Template {
                template_id: "text-tpl".into(),
                channel: "sms".into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: String::new(),
                    body: "Visit on {{ payload.day }}".into(),
                }],
            },
        ))
        .await
        .unwrap();
    apply_workflows(
        &ch,
        &key,
        &[
            "id: reminder\nsteps:\n  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }\n",
            "id: texts\nsteps:\n  - { id: text, type: send, channel: sms, template: text-tpl, provider: sink, to: payload.phone }\n",
        ],
    )
    .await;
    let run = |workflow: &'static str, sub: &'static str| {
        let (ch, key) = (ch.clone(), key.clone());
        async move {
            let email = format!("{sub}@example.test");
            let payload = r#"{"day":"monday","phone":"+15145550100"}"#;
            let id = trigger_one(&ch, &key, workflow, sub, &email, payload).await;
            wait_until(&ch, &key, &id, Duration::from_secs(20), ended).await
        }
    };
    let reason = |n: &api::Notification| {
        let end: serde_json::Value =
            serde_json::from_str(&n.events.last().unwrap().detail_json).unwrap();
        end["reason"].as_str().unwrap_or_default().to_string()
    };

    // Two workflows share the recipient's budget.
    assert_eq!(run("appointment", "ana").await.status, "delivered");
    assert_eq!(run("reminder", "ana").await.status, "delivered");
    let third = run("appointment", "ana").await;
    assert_eq!(third.status, "suppressed");
    assert_eq!(
        reason(&third),
        "throttled: recipient limit of 2 per 1h reached (tenant limits v1)"
    );
    // The SMS cap does not count email: other recipients still get theirs.
    assert_eq!(run("appointment", "bob").await.status, "delivered");
    assert_eq!(run("reminder", "bob").await.status, "delivered");
    // The tenant's one SMS for the hour goes; the next one (same recipient,
    // so the same partition: tenant-wide limits are shared per partition) not.
    assert_eq!(run("texts", "dan").await.status, "delivered");
    let second_text = run("texts", "dan").await;
    assert_eq!(second_text.status, "suppressed");
    assert_eq!(
        reason(&second_text),
        "throttled: tenant sms limit of 1 per 1h reached (tenant limits v1)"
    );

    // Removing the limits lets the recipient's messages through again (the
    // router re-reads limits within a second).
    assert_eq!(
        tenants
            .put_limits(limits("throttle: []\n"))
            .await
            .unwrap()
            .into_inner()
            .version,
        2
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = run("appointment", "ana").await;
        if n.status == "delivered" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still throttled: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_runs_keep_their_version_through_new_and_bad_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    let mut wf = api::workflow_service_client::WorkflowServiceClient::new(ch.clone());
    let v1 = "id: follow-up\nsteps:\n  - { id: pause, type: delay, duration: 1s }\n  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }\n";
    assert_eq!(
        wf.apply(authed(
            &key,
            api::ApplyWorkflowRequest {
                definition: v1.into()
            }
        ))
        .await
        .unwrap()
        .into_inner()
        .version,
        1
    );
    let id = trigger_one(
        &ch,
        &key,
        "follow-up",
        "v1",
        "v1@example.test",
        r#"{"day":"lundi"}"#,
    )
    .await;
    // While it waits: a broken definition is refused, and a new version is published
    let e = wf
        .apply(authed(&key, api::ApplyWorkflowRequest { definition: "id: follow-up\nsteps:\n  - { id: mail, type: send, channel: email, template: nope }\n".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let v2 = "id: follow-up\nsteps:\n  - { id: stop-now, type: stop }\n";
    assert_eq!(
        wf.apply(authed(
            &key,
            api::ApplyWorkflowRequest {
                definition: v2.into()
            }
        ))
        .await
        .unwrap()
        .into_inner()
        .version,
        2
    );
    let listed = wf
        .list(authed(&key, api::ListWorkflowsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .workflows;
    assert!(
        listed
            .iter()
            .any(|w| w.workflow_id == "follow-up" && w.version == 2),
        "{listed:?}"
    );
    // A trigger right after the publish runs on version 2, although the
    // gateway had just read version 1 for the first trigger (its cache of
    // workflow versions is cleared by the publish).
    let on_v2 = trigger_one(
        &ch,
        &key,
        "follow-up",
        "v2",
        "v2@example.test",
        r#"{"day":"mardi"}"#,
    )
    .await;
    let n2 = wait_until(&ch, &key, &on_v2, Duration::from_secs(20), ended).await;
    let triggered = event_detail(&n2, "clarion.notification.triggered.v1");
    assert_eq!(triggered["workflow_version"], 2, "{n2:?}");
    assert!(
        n2.events
            .iter()
            .all(|e| e.event_type != "clarion.notification.routed.v1"),
        "version 2 stops without sending: {n2:?}"
    );
    let got = wf
        .get(authed(
            &key,
            api::GetWorkflowRequest {
                workflow_id: "follow-up".into(),
                version: 1,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        got.definition_json.contains("pause"),
        "version 1 is immutable: {}",
        got.definition_json
    );
    // The running notification finishes on version 1: it sends after its delay
    let n = wait_status(&ch, &key, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(n.status, "delivered");
    let routed = event_detail(&n, "clarion.notification.routed.v1");
    assert_eq!(routed["workflow_version"], 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_starts_only_the_workflows_whose_condition_holds() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(test_config(dir.path()), false).await;
    let ch = channel(node.grpc).await;
    let key = create_tenant(&ch, "acme").await;
    appointment_workflow(&ch, &key, "appointment", "sink").await;
    apply_workflows(
        &ch,
        &key,
        &[
            // Payload, subscriber attributes and tenant data in one condition.
            "id: vip-visit\ntrigger:\n  event: visit.scheduled\n  condition: 'payload.priority != \"low\" && subscriber.attributes.tier == \"gold\" && tenant.id == \"acme\"'\nsteps:\n  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }\n",
            "id: any-visit\ntrigger: { event: visit.scheduled }\nsteps:\n  - { id: mail, type: send, channel: email, template: appointment-tpl, provider: sink }\n",
        ],
    )
    .await;
    let mut subs = Subscribers::new(ch.clone());
    for (id, tier) in [("gold-1", "gold"), ("basic-1", "basic")] {
        subs.upsert(authed(
            &key,
            api::Subscriber {
                subscriber_id: id.into(),
                email: format!("{id}@example.test"),
                attributes_json: format!(r#"{{"tier":"{tier}"}}"#),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    }
    // Each trigger fans out to both workflows of the event; returns the
    // outcome of each by workflow.
    let by_event = |sub: &'static str, priority: &'static str| {
        let (ch, key) = (ch.clone(), key.clone());
        let request = authed(
            &key,
            api::TriggerRequest {
                event: "visit.scheduled".into(),
                recipients: vec![api::Recipient {
                    subscriber_id: sub.into(),
                    ..Default::default()
                }],
                payload_json: format!(r#"{{"day":"monday","priority":"{priority}"}}"#),
                ..Default::default()
            },
        );
        async move {
            let resp = Notifications::new(ch.clone())
                .trigger(request)
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            for n in resp.notifications {
                let view = wait_until(
                    &ch,
                    &key,
                    &n.notification_id,
                    Duration::from_secs(20),
                    ended,
                )
                .await;
                let end: serde_json::Value =
                    serde_json::from_str(&view.events.last().unwrap().detail_json).unwrap();
                out.push((
                    n.workflow_id,
                    view.status,
                    end["reason"].as_str().unwrap_or("").to_string(),
                ));
            }
            out.sort();
            out
        }
    };
    let high_gold = by_event("gold-1", "high").await;
    assert_eq!(
        high_gold
            .iter()
            .map(|(w, s, _)| (w.as_str(), s.as_str()))
            .collect::<Vec<_>>(),
        [("any-visit", "delivered"), ("vip-visit", "delivered")]
    );
    for (sub, priority) in [("gold-1", "low"), ("basic-1", "high")] {
        let got = by_event(sub, priority).await;
        assert_eq!(got[0].1, "delivered", "{got:?}");
        assert_eq!(
            (got[1].0.as_str(), got[1].1.as_str(), got[1].2.as_str()),
            ("vip-visit", "suppressed", "trigger condition is false"),
            "{sub} {priority}"
        );
    }
    node.stop().await;
}
