//! Run records at rest with crypto-shredding (issue #32), over the real
//! embedded parts (log and store in one SQLite file), runners stepped by
//! hand on a manual clock. A run waiting on a delay is stored with the
//! payload paths its workflow marks personal and its inline address
//! sealed, the rest of the payload as given; cold routers (a restart) open
//! it and send to the right address with the right body; an erased
//! subscriber's waiting run never sends. Two tenants, `acme` and `globex`,
//! with a subscriber of the same id.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clarion_domain::flow::Flow;
use clarion_domain::template::Template;
use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::personal::Personal;
use clarion_runtime::secrets::Keyring;
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table};
use support::{config_event, Env, PARTITIONS, T0};

const SUB: &str = "sub-1";
const H: Duration = Duration::from_secs(3600);

const VISIT: &str = r#"
id: visit
personal: ["patient.name"]
steps:
  - { id: wait, type: delay, duration: 1h }
  - { id: email, type: send, channel: email, template: email-tpl }
"#;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

impl Env {
    async fn with_sealing() -> (Env, Arc<Personal>) {
        let mut env = Env::new().await;
        let ring = Keyring::new("k1", &[("k1", [9u8; 32])]).expect("keyring");
        let personal = Personal::new(env.store.clone(), Arc::new(ring));
        env.personal = Some(personal.clone());
        env.restart_routers().await;
        let mut events = Vec::new();
        for t in [tenant("acme"), tenant("globex")] {
            let variant = pb::TemplateVariant {
                locale: "default".into(),
                subject: "Visit".into(),
                body: "Visit for {{ payload.patient.name }} in ward {{ payload.ward }}".into(),
            };
            let tpl = Template::new("email-tpl", 1, "email", &[variant]).expect("template");
            events.push(config_event(
                &t,
                "tpl",
                Payload::TemplatePublished(tpl.to_event()),
            ));
            let flow =
                Flow::parse(VISIT, 1, |_| Some(clarion_domain::Channel::Email)).expect("workflow");
            events.push(config_event(
                &t,
                "visit",
                Payload::WorkflowPublished(clarion_domain::workflow::published(&flow)),
            ));
        }
        env.configure(events).await;
        (env, personal)
    }

    /// A trigger as the gateway logs it: inline address and marked paths
    /// sealed under the recipient's key.
    async fn sealed_trigger(
        &mut self,
        p: &Personal,
        t: &TenantId,
        email: &str,
        name: &str,
    ) -> Event {
        self.seq += 1;
        let cmd = TriggerCommand {
            workflow_id: "visit".into(),
            recipients: vec![Recipient {
                subscriber_id: SUB.into(),
                contact: Some(pb::RecipientOverride {
                    email: email.into(),
                    ..Default::default()
                }),
            }],
            payload_json: format!(r#"{{"patient":{{"name":"{name}"}},"ward":"B7"}}"#),
            idempotency_key: format!("key-{}", self.seq),
            personal_paths: vec!["patient.name".into()],
            ..Default::default()
        };
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&self.seq.to_le_bytes());
        let mut e = cmd
            .accept(t, 1, id, T0, &Actor::ApiKey("k1".into()))
            .remove(0);
        p.seal_event(&mut e).await.expect("seals");
        e
    }

    async fn route(&mut self) {
        for p in 0..PARTITIONS {
            let recs = self.records(Topic::Triggers, p).await;
            self.routers[p as usize].step(recs).await.expect("routes");
        }
    }

    async fn fire(&mut self) {
        for r in &self.routers {
            r.fire_timers().await.expect("fires timers");
        }
        self.route().await;
    }

    async fn run_row(&self, t: &str, nid: &str) -> Vec<u8> {
        self.store
            .get(&RowKey::new(Table::Runs, t, nid, Vec::new()))
            .await
            .expect("reads")
            .expect("the waiting run is stored")
            .to_vec()
    }

    /// The dispatches of a tenant, opened as the dispatcher opens them.
    async fn opened_dispatches(&self, p: &Personal, t: &str) -> Vec<pb::DispatchRequested> {
        let mut out = Vec::new();
        for mut e in self.events(Topic::Dispatch).await {
            if e.tenant.as_str() != t {
                continue;
            }
            p.open_event(&mut e).await.expect("opens");
            if let Payload::DispatchRequested(d) = e.payload {
                out.push(d);
            }
        }
        out
    }
}

fn nid(e: &Event) -> String {
    match &e.payload {
        Payload::Triggered(t) => t.notification_id.clone(),
        _ => panic!("not a trigger"),
    }
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_waiting_run_is_stored_sealed_and_cold_routers_send_it_opened() {
    let (mut env, p) = Env::with_sealing().await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let a = env
        .sealed_trigger(&p, &acme, "zelda@acme.test", "Zelda Quist")
        .await;
    let g = env
        .sealed_trigger(&p, &globex, "yuri@globex.test", "Yuri Oksanen")
        .await;
    env.append(Topic::Triggers, &[a.clone(), g.clone()]).await;
    env.route().await;
    assert!(
        env.events(Topic::Dispatch).await.is_empty(),
        "the delay holds"
    );

    // Stored while waiting: the marked name and the address sealed, the
    // unmarked field as given.
    for (t, e, secrets) in [
        ("acme", &a, ["zelda@acme.test", "Zelda Quist"]),
        ("globex", &g, ["yuri@globex.test", "Yuri Oksanen"]),
    ] {
        let row = env.run_row(t, &nid(e)).await;
        for s in secrets {
            assert!(!holds(&row, s), "{s:?} is in {t}'s run row in clear");
        }
        assert!(holds(&row, "B7"), "unmarked fields are kept as given");
    }

    // A restart: the routers load the runs from the store and open them.
    env.restart_routers().await;
    env.clock.advance(H);
    env.fire().await;
    for (t, to, name) in [
        ("acme", "zelda@acme.test", "Zelda Quist"),
        ("globex", "yuri@globex.test", "Yuri Oksanen"),
    ] {
        let d = env.opened_dispatches(&p, t).await;
        assert_eq!(d.len(), 1, "{t}: {d:?}");
        assert_eq!(d[0].to, to);
        assert_eq!(d[0].body, format!("Visit for {name} in ward B7"));
    }
}

#[tokio::test]
async fn an_erased_subscribers_waiting_run_opens_erased_in_its_tenant_only() {
    let (mut env, p) = Env::with_sealing().await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let a = env
        .sealed_trigger(&p, &acme, "zelda@acme.test", "Zelda Quist")
        .await;
    let g = env
        .sealed_trigger(&p, &globex, "yuri@globex.test", "Yuri Oksanen")
        .await;
    env.append(Topic::Triggers, &[a.clone(), g]).await;
    env.route().await;
    p.erase_subscriber(&acme, SUB).await.expect("erases");

    // Cold routers load the waiting runs: acme's opens as erased and its
    // send carries neither the address nor the marked name.
    env.restart_routers().await;
    env.clock.advance(H);
    env.fire().await;
    for d in env.opened_dispatches(&p, "acme").await {
        assert!(
            !d.to.contains("zelda") && !d.body.contains("Zelda"),
            "an erased subscriber's data is never opened again: {d:?}"
        );
    }
    // globex's subscriber of the same id is untouched.
    let d = env.opened_dispatches(&p, "globex").await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].to, "yuri@globex.test");
    assert_eq!(d[0].body, "Visit for Yuri Oksanen in ward B7");
}
