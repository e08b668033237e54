//! Shared fixtures of Clarion's benchmarks (`benches/domain.rs`,
//! `benches/log_append.rs`) and the load generator (`src/bin/loadgen.rs`).
//!
//! Record and event sizes are fixed at about 300 bytes everywhere, the size of
//! a typical `NotificationTriggered` envelope, so the figures of the criterion
//! benches, the raw SQLite baseline and the Kafka baseline compare.

use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Actor, Event, TenantId};
use clarion_proto::events as pb;

/// Size of the records and events the benches write.
pub const RECORD_BYTES: usize = 300;

/// The load generator's email template, `(locale, subject, body)` per
/// variant: `default` and `fr`, so a `fr-CA` recipient walks the fallback.
pub const EMAIL_VARIANTS: [(&str, &str, &str); 2] = [
    (
        "default",
        "Your visit on {{ payload.day }}",
        "Hello {{ payload.name }} ({{ subscriber.id }}), your technician comes on {{ payload.day }}.",
    ),
    (
        "fr",
        "Votre visite du {{ payload.day }}",
        "Bonjour {{ payload.name }} ({{ subscriber.id }}), le technicien passe le {{ payload.day }}.",
    ),
];

/// [`EMAIL_VARIANTS`] as the events carry them.
pub fn email_variants() -> Vec<pb::TemplateVariant> {
    EMAIL_VARIANTS
        .iter()
        .map(|(locale, subject, body)| pb::TemplateVariant {
            locale: (*locale).into(),
            subject: (*subject).into(),
            body: (*body).into(),
        })
        .collect()
}

/// The load generator's email template (id `appointment-tpl`, version 1).
pub fn email_template() -> clarion_domain::template::Template {
    clarion_domain::template::Template::new("appointment-tpl", 1, "email", &email_variants())
        .expect("valid template")
}

/// The load generator's workflow: `appointment`, one email step through the sink.
pub fn email_workflow() -> clarion_domain::flow::Flow {
    clarion_domain::workflow::from_steps(
        "appointment",
        "Appointment reminder",
        &[pb::WorkflowStep {
            channel: "email".into(),
            template_id: "appointment-tpl".into(),
            provider: "sink".into(),
        }],
        1,
        |_| Some(clarion_domain::Channel::Email),
    )
    .expect("valid workflow")
}

/// A JSON object payload whose `pad` field makes the whole text `pad_to` bytes
/// (at least the size of the object without padding).
pub fn padded_payload(name: &str, pad_to: usize) -> String {
    let bare = format!(r#"{{"name":"{name}","day":"2026-12-01","pad":""}}"#);
    let pad = "x".repeat(pad_to.saturating_sub(bare.len()));
    format!(r#"{{"name":"{name}","day":"2026-12-01","pad":"{pad}"}}"#)
}

/// A one-recipient trigger command for subscriber `subscriber_id`, with inline
/// contact data (email, locale `fr-CA`) and a payload of `payload_bytes`.
pub fn trigger_command(
    workflow_id: &str,
    subscriber_id: &str,
    payload_bytes: usize,
) -> TriggerCommand {
    TriggerCommand {
        workflow_id: workflow_id.into(),
        recipients: vec![Recipient {
            subscriber_id: subscriber_id.into(),
            contact: Some(pb::RecipientOverride {
                email: format!("{subscriber_id}@example.test"),
                locale: "fr-CA".into(),
                ..Default::default()
            }),
        }],
        payload_json: padded_payload("Ana", payload_bytes),
        idempotency_key: String::new(),
        ..Default::default()
    }
}

/// A `NotificationTriggered` event whose encoded envelope is `target` bytes
/// (give or take a byte or two of varint length), built the way the gateway
/// builds it.
pub fn sample_event(target: usize) -> Event {
    let tenant = TenantId::parse("acme").expect("literal tenant");
    let actor = Actor::ApiKey("k_bench".into());
    let make = |payload_bytes: usize| {
        trigger_command("appointment", "tech-42", payload_bytes).accept(
            &tenant,
            1,
            [7; 16],
            1_700_000_000_000,
            &actor,
        )[0]
        .clone()
    };
    let base = make(0).encode().len();
    let e = make(padded_payload("Ana", 0).len() + target.saturating_sub(base));
    debug_assert!(
        e.encode().len().abs_diff(target) <= 4,
        "{}",
        e.encode().len()
    );
    e
}

/// An encoded `NotificationTriggered` envelope of about [`RECORD_BYTES`].
pub fn record_value() -> Vec<u8> {
    sample_event(RECORD_BYTES).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_event_has_the_requested_size() {
        for target in [250, 300, 400] {
            let n = sample_event(target).encode().len();
            assert!(n.abs_diff(target) <= 4, "{target} -> {n}");
        }
        assert_eq!(padded_payload("Ana", 100).len(), 100);
    }
}
