use std::sync::Arc;

use clarion_domain::ids::TenantId;
use clarion_domain::{Actor, Event, Payload};
use clarion_proto::events as pb;
use clarion_store::embedded::SqliteStore;

use super::*;

fn service() -> (Arc<Personal>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
    let ring = Keyring::new("k1", &[("k1", [7u8; 32])]).unwrap();
    (Personal::new(Arc::new(store), Arc::new(ring)), dir)
}

fn dispatch(tenant: &str, subscriber: &str, to: &str, body: &str, at_ms: i64) -> Event {
    Event {
        id: clarion_domain::ids::Id::from_slice(&[1u8; 16]).unwrap(),
        tenant: TenantId::parse(tenant).unwrap(),
        partition_key: format!("{tenant}/{subscriber}"),
        occurred_at_ms: at_ms,
        causation_id: None,
        correlation_id: None,
        actor: Actor::System("router".into()),
        payload: Payload::DispatchRequested(pb::DispatchRequested {
            subscriber_id: subscriber.into(),
            channel: "email".into(),
            country: "FR".into(),
            to: to.into(),
            subject: "Hi".into(),
            body: body.into(),
            ..Default::default()
        }),
    }
}

fn fields(e: &Event) -> (String, String) {
    match &e.payload {
        Payload::DispatchRequested(d) => (d.to.clone(), d.body.clone()),
        _ => unreachable!(),
    }
}

const DAY1_MS: i64 = 1_796_000_000_000; // 2026-11-29

#[tokio::test]
async fn sealed_fields_open_until_the_subscriber_is_erased_and_other_tenants_keep_theirs() {
    let (p, _dir) = service();
    let mut a = dispatch(
        "acme",
        "sub-1",
        "ada@example.com",
        "Your code 1234",
        DAY1_MS,
    );
    let mut b = dispatch("globex", "sub-1", "bob@example.com", "Hello Bob", DAY1_MS);
    p.seal_event(&mut a).await.unwrap();
    p.seal_event(&mut b).await.unwrap();
    let bytes = a.encode();
    for plain in [&b"ada@example.com"[..], b"Your code 1234", b"Hi"] {
        assert!(
            !bytes.windows(plain.len()).any(|w| w == plain),
            "plaintext in the event"
        );
    }
    let (to, body) = fields(&a);
    assert!(is_sealed(&to) && is_sealed(&body));
    // Sealing twice is a no-op.
    let again = a.clone();
    p.seal_event(&mut a).await.unwrap();
    assert_eq!(a, again);

    let mut opened = a.clone();
    p.open_event(&mut opened).await.unwrap();
    assert_eq!(
        fields(&opened),
        ("ada@example.com".into(), "Your code 1234".into())
    );

    let acme = TenantId::parse("acme").unwrap();
    let gone = p.erase_subscriber(&acme, "sub-1").await.unwrap();
    assert_eq!(gone.generations, [1]);
    let mut after = a.clone();
    p.open_event(&mut after).await.unwrap();
    assert_eq!(fields(&after), (ERASED.into(), ERASED.into()));
    // The same subscriber id of another tenant is someone else.
    p.open_event(&mut b).await.unwrap();
    assert_eq!(fields(&b), ("bob@example.com".into(), "Hello Bob".into()));

    // A new profile after the erasure gets a new generation; old data stays erased.
    let mut c = dispatch("acme", "sub-1", "new@example.com", "Welcome back", DAY1_MS);
    p.seal_event(&mut c).await.unwrap();
    assert!(fields(&c).0.starts_with("\u{1}pd1:2:"));
    p.open_event(&mut c).await.unwrap();
    assert_eq!(fields(&c).0, "new@example.com");
    let mut old = a.clone();
    p.open_event(&mut old).await.unwrap();
    assert_eq!(fields(&old).0, ERASED);
}

#[tokio::test]
async fn redacting_a_day_hides_its_bodies_but_not_addresses_or_other_days() {
    let (p, _dir) = service();
    let day = 86_400_000;
    let mut d1 = dispatch("acme", "sub-1", "ada@example.com", "day one", DAY1_MS);
    let mut d2 = dispatch("acme", "sub-1", "ada@example.com", "day two", DAY1_MS + day);
    let mut other = dispatch(
        "globex",
        "sub-9",
        "x@example.com",
        "globex day one",
        DAY1_MS,
    );
    for e in [&mut d1, &mut d2, &mut other] {
        p.seal_event(e).await.unwrap();
    }
    let acme = TenantId::parse("acme").unwrap();
    let days = p.body_key_days(&acme).await.unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!((days[0].1.as_str(), days[0].2.as_str()), ("email", "FR"));
    let n = p
        .redact_bodies(&acme, days[0].0, "email", "*")
        .await
        .unwrap();
    assert_eq!(n, 1);
    for (e, want) in [
        (&d1, REDACTED),
        (&d2, "day two"),
        (&other, "globex day one"),
    ] {
        let mut e = e.clone();
        p.open_event(&mut e).await.unwrap();
        assert_eq!(fields(&e).1, want);
        assert_ne!(fields(&e).0, ERASED);
    }
    // A late message of the redacted day is stored redacted, not under a new key.
    let mut late = dispatch("acme", "sub-2", "c@example.com", "late", DAY1_MS + 60_000);
    p.seal_event(&mut late).await.unwrap();
    assert_eq!(fields(&late).1, REDACTED);
    assert_eq!(p.body_key_days(&acme).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sealed_values_inside_a_payload_open_in_place() {
    let (p, _dir) = service();
    let acme = TenantId::parse("acme").unwrap();
    let mut e = dispatch("acme", "sub-1", "a@example.com", "x", DAY1_MS);
    p.seal_event(&mut e).await.unwrap();
    let sealed_to = fields(&e).0;
    let payload = serde_json::json!({"name": sealed_to, "n": 3, "list": [sealed_to]}).to_string();
    let mut t = Event {
        payload: Payload::Triggered(pb::NotificationTriggered {
            subscriber_id: "sub-1".into(),
            payload_json: payload,
            ..Default::default()
        }),
        ..e.clone()
    };
    p.open_event(&mut t).await.unwrap();
    let Payload::Triggered(t) = &t.payload else {
        unreachable!()
    };
    let v: serde_json::Value = serde_json::from_str(&t.payload_json).unwrap();
    assert_eq!(v["name"], "a@example.com");
    assert_eq!(v["list"][0], "a@example.com");
    assert_eq!(v["n"], 3);
    assert_eq!(p.open(&acme, "sub-1", "plain").await.unwrap(), "plain");
}

/// A trigger whose workflow marks `patient.name` personal, for `tenant`.
fn marked_trigger(tenant: &str, subscriber: &str) -> Event {
    let e = dispatch(tenant, subscriber, "", "", DAY1_MS);
    Event {
        payload: Payload::Triggered(pb::NotificationTriggered {
            subscriber_id: subscriber.into(),
            payload_json: r#"{"patient":{"name":"Zelda Quist"},"ward":"B"}"#.into(),
            personal_paths: vec!["patient.name".into()],
            ..Default::default()
        }),
        ..e
    }
}

fn payload_of(e: &Event) -> serde_json::Value {
    let Payload::Triggered(t) = &e.payload else {
        unreachable!()
    };
    serde_json::from_str(&t.payload_json).unwrap()
}

#[tokio::test]
async fn marked_payload_paths_are_sealed_under_the_recipients_key_and_shred_with_it() {
    let (p, _dir) = service();
    let mut a = marked_trigger("acme", "sub-1");
    let mut g = marked_trigger("globex", "sub-1");
    assert!(personal::has_fields(&a.payload));
    p.seal_event(&mut a).await.unwrap();
    p.seal_event(&mut g).await.unwrap();
    let sealed = payload_of(&a);
    assert!(is_sealed(sealed["patient"]["name"].as_str().unwrap()));
    assert_eq!(sealed["ward"], "B", "unmarked fields stay as given");
    assert!(!a.encode().windows(11).any(|w| w == b"Zelda Quist"));
    // Sealing again changes nothing (already sealed).
    let before = payload_of(&a);
    p.seal_event(&mut a).await.unwrap();
    assert_eq!(payload_of(&a), before);

    p.erase_subscriber(&TenantId::parse("acme").unwrap(), "sub-1")
        .await
        .unwrap();
    p.open_event(&mut a).await.unwrap();
    p.open_event(&mut g).await.unwrap();
    assert_eq!(payload_of(&a)["patient"]["name"], ERASED);
    assert_eq!(payload_of(&g)["patient"]["name"], "Zelda Quist");
}
