//! Accepting a trigger: validation and the `NotificationTriggered` events it becomes.

use clarion_proto::events as pb;
use serde_json::Value;

use crate::error::Violations;
use crate::event::{Actor, Event, Payload};
use crate::ids::{recipient_key, Id, TenantId};
use crate::limits;
use crate::subscriber::{validate_contact, validate_subscriber_id, Contact};
use crate::workflow::validate_id;

/// Limits applied to every trigger (configurable; defaults in [`limits`]).
#[derive(Clone, Debug)]
pub struct TriggerLimits {
    pub max_payload_bytes: usize,
    pub max_recipients: usize,
    /// Notifications one request may start: workflows matched × recipients.
    pub max_fanout: usize,
}

impl Default for TriggerLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: limits::MAX_PAYLOAD_BYTES,
            max_recipients: limits::MAX_RECIPIENTS,
            max_fanout: limits::MAX_FANOUT,
        }
    }
}

impl TriggerLimits {
    /// Refuses a request that would start more than `max_fanout`
    /// notifications: `workflows` matched its event, each for every one of
    /// its `recipients`.
    pub fn check_fanout(&self, workflows: usize, recipients: usize) -> Result<(), Violations> {
        let n = workflows.saturating_mul(recipients);
        if n > self.max_fanout {
            return Err(Violations::single(
                "recipients",
                format!(
                    "{recipients} recipients × {workflows} matching workflows would start {n} notifications, over the limit of {} per request",
                    self.max_fanout
                ),
            ));
        }
        Ok(())
    }
}

/// One recipient of a trigger: a subscriber id and optional inline contact data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recipient {
    pub subscriber_id: String,
    pub contact: Option<pb::RecipientOverride>,
}

/// A trigger as a producer sent it.
#[derive(Clone, Debug, Default)]
pub struct TriggerCommand {
    pub workflow_id: String,
    pub recipients: Vec<Recipient>,
    pub payload_json: String,
    pub idempotency_key: String,
    /// Not before this instant (ms; 0: at once). The API takes `send_at`
    /// (RFC 3339) or a `delay` and resolves it here.
    pub send_at_ms: i64,
    /// Bypasses quiet hours and digests.
    pub critical: bool,
    /// The workflow's personal payload paths (sealed where the trigger
    /// enters the log); set by the gateway from the resolved workflow.
    pub personal_paths: Vec<String>,
}

impl TriggerCommand {
    /// Checks the request's shape; the workflow's existence is checked by the caller.
    pub fn validate(&self, limits: &TriggerLimits) -> Result<(), Violations> {
        let mut v = Violations::default();
        validate_id(&mut v, "workflow_id", &self.workflow_id);
        if self.recipients.is_empty() {
            v.push("recipients", "at least one recipient is required");
        }
        if self.recipients.len() > limits.max_recipients {
            v.push(
                "recipients",
                format!(
                    "{} recipients exceed the limit of {} per trigger",
                    self.recipients.len(),
                    limits.max_recipients
                ),
            );
            // Each would add its own violations: the count says it all.
            return v.into_result();
        }
        for (i, r) in self.recipients.iter().enumerate() {
            let prefix = format!("recipients[{i}].");
            validate_subscriber_id(&mut v, &format!("{prefix}subscriber_id"), &r.subscriber_id);
            if let Some(c) = &r.contact {
                let contact = Contact {
                    email: &c.email,
                    phone: &c.phone,
                    locale: &c.locale,
                    timezone: &c.timezone,
                    webhook_url: &c.webhook_url,
                };
                validate_contact(&mut v, &prefix, contact);
            }
        }
        if self.payload_json.len() > limits.max_payload_bytes {
            v.push(
                "payload_json",
                format!(
                    "is {} bytes, over the limit of {} bytes",
                    self.payload_json.len(),
                    limits.max_payload_bytes
                ),
            );
        } else if !self.payload_json.is_empty() {
            match serde_json::from_str::<Value>(&self.payload_json) {
                Ok(Value::Object(_)) => {}
                Ok(_) => v.push("payload_json", "must be a JSON object"),
                // serde_json's message gives the position, never the text.
                Err(e) => v.push("payload_json", format!("is not valid JSON: {e}")),
            }
        }
        limits::check_len(
            &mut v,
            "idempotency_key",
            &self.idempotency_key,
            limits::MAX_KEY_BYTES,
        );
        v.into_result()
    }

    /// The `NotificationTriggered` events for an accepted trigger, one per recipient.
    ///
    /// Ids derive from the idempotency key when there is one, else from
    /// `request_seed`, random bytes the caller draws once per request; they
    /// lead with `now_ms`. A retry given the original request's time yields
    /// the same ids, so downstream dedup makes it a no-op.
    pub fn accept(
        &self,
        tenant: &TenantId,
        workflow_version: u32,
        request_seed: [u8; 16],
        now_ms: i64,
        actor: &Actor,
    ) -> Vec<Event> {
        let base = if self.idempotency_key.is_empty() {
            Id(request_seed)
        } else {
            Id::derive(&[
                b"idempotency",
                tenant.as_str().as_bytes(),
                self.workflow_id.as_bytes(),
                self.idempotency_key.as_bytes(),
            ])
        };
        let payload_json = if self.payload_json.is_empty() {
            "{}".to_string()
        } else {
            self.payload_json.clone()
        };
        self.recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let notification_id = Id::time_ordered(
                    now_ms,
                    &[
                        &base.0,
                        &(i as u32).to_le_bytes(),
                        r.subscriber_id.as_bytes(),
                    ],
                );
                Event {
                    id: notification_id.child("triggered", 0),
                    tenant: tenant.clone(),
                    partition_key: recipient_key(tenant, &r.subscriber_id),
                    occurred_at_ms: now_ms,
                    causation_id: None,
                    correlation_id: Some(notification_id),
                    actor: actor.clone(),
                    payload: Payload::Triggered(pb::NotificationTriggered {
                        notification_id: notification_id.to_hex(),
                        workflow_id: self.workflow_id.clone(),
                        subscriber_id: r.subscriber_id.clone(),
                        payload_json: payload_json.clone(),
                        idempotency_key: self.idempotency_key.clone(),
                        recipient: r.contact.clone(),
                        workflow_version,
                        send_at_ms: self.send_at_ms,
                        critical: self.critical,
                        schedule_id: String::new(),
                        occurrence_at_ms: 0,
                        personal_paths: self.personal_paths.clone(),
                    }),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(recipients: &[&str], payload: &str, key: &str) -> TriggerCommand {
        TriggerCommand {
            workflow_id: "welcome".into(),
            recipients: recipients
                .iter()
                .map(|s| Recipient {
                    subscriber_id: s.to_string(),
                    contact: None,
                })
                .collect(),
            payload_json: payload.into(),
            idempotency_key: key.into(),
            ..Default::default()
        }
    }

    #[test]
    fn malformed_and_oversize_payloads_are_rejected() {
        let l = TriggerLimits {
            max_payload_bytes: 16,
            max_recipients: 2,
            max_fanout: 4,
        };
        let e = cmd(&["a"], "{not json", "").validate(&l).unwrap_err();
        assert_eq!(e.0[0].field, "payload_json");
        assert!(e.0[0].description.contains("not valid JSON"));
        let e = cmd(&["a"], "[1]", "").validate(&l).unwrap_err();
        assert!(e.0[0].description.contains("JSON object"));
        let e = cmd(&["a"], &format!("{{\"x\":\"{}\"}}", "y".repeat(20)), "")
            .validate(&l)
            .unwrap_err();
        assert!(e.0[0].description.contains("over the limit"));
        let e = cmd(&["a", "b", "c"], "{}", "").validate(&l).unwrap_err();
        assert_eq!(e.0[0].field, "recipients");
        let e = cmd(&["a/b"], "{}", "").validate(&l).unwrap_err();
        assert_eq!(e.0[0].field, "recipients[0].subscriber_id");
        let e = cmd(&["a"], "{}", &"k".repeat(256))
            .validate(&l)
            .unwrap_err();
        assert_eq!(e.0[0].field, "idempotency_key");
    }

    #[test]
    fn fanout_is_workflows_times_recipients() {
        let l = TriggerLimits {
            max_fanout: 4,
            ..TriggerLimits::default()
        };
        assert!(l.check_fanout(2, 2).is_ok());
        let e = l.check_fanout(3, 2).unwrap_err();
        assert_eq!(e.0[0].field, "recipients");
        assert!(
            e.0[0]
                .description
                .contains("6 notifications, over the limit of 4"),
            "{e}"
        );
        assert!(l.check_fanout(usize::MAX, 2).is_err());
    }

    #[test]
    fn idempotency_key_makes_ids_repeatable() {
        let t = TenantId::parse("acme").unwrap();
        let a = Actor::ApiKey("k".into());
        let c = cmd(&["u1", "u2"], "{}", "order-42");
        let first = c.accept(&t, 1, [1; 16], 10, &a);
        let again = c.accept(&t, 1, [2; 16], 10, &a);
        assert_eq!(
            first.iter().map(|e| e.id).collect::<Vec<_>>(),
            again.iter().map(|e| e.id).collect::<Vec<_>>()
        );
        // Notification ids lead with the time, so later ones sort later
        let nid = |es: &[Event]| match &es[0].payload {
            Payload::Triggered(t) => t.notification_id.clone(),
            _ => unreachable!(),
        };
        let later = c.accept(&t, 1, [1; 16], 1_700_000_000_000, &a);
        let latest = c.accept(&t, 1, [1; 16], 1_700_000_000_001, &a);
        assert!(nid(&first) < nid(&later) && nid(&later) < nid(&latest));
        assert_eq!(
            Id::parse_hex(&nid(&later)).unwrap().time_ms(),
            1_700_000_000_000
        );
        assert_ne!(first[0].id, first[1].id);
        let no_key = cmd(&["u1"], "{}", "");
        assert_ne!(
            no_key.accept(&t, 1, [1; 16], 1, &a)[0].id,
            no_key.accept(&t, 1, [2; 16], 1, &a)[0].id
        );
        assert_eq!(first[0].partition_key, "acme/u1");
    }
}
