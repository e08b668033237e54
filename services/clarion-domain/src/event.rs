//! Events: the typed view of the log's `EventEnvelope`.
//!
//! Payloads are the protobuf messages of `schemas/events/v1` themselves, so
//! the log contract has one definition. Decoding an unknown event type is an
//! error, never a silent skip: a consumer older than its producer must stop
//! rather than drop facts.

use clarion_proto::events as pb;
use prost::Message;
use serde_json::{json, Value};

use crate::ids::{Id, TenantId};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    ApiKey(String),
    Operator(String),
    /// A component: named by a constant on the hot path (`"router"`), which
    /// every event it emits carries without an allocation.
    System(std::borrow::Cow<'static, str>),
}

impl Actor {
    fn parts(&self) -> (pb::actor::Kind, &str) {
        match self {
            Actor::ApiKey(id) => (pb::actor::Kind::ApiKey, id),
            Actor::Operator(id) => (pb::actor::Kind::Operator, id),
            Actor::System(id) => (pb::actor::Kind::System, id),
        }
    }

    #[cfg(test)]
    fn to_pb(&self) -> pb::Actor {
        let (kind, id) = self.parts();
        pb::Actor {
            kind: kind as i32,
            id: id.to_string(),
        }
    }

    fn from_pb(a: Option<pb::Actor>) -> Actor {
        let a = a.unwrap_or_default();
        match pb::actor::Kind::try_from(a.kind).unwrap_or(pb::actor::Kind::Unspecified) {
            pb::actor::Kind::ApiKey => Actor::ApiKey(a.id),
            pb::actor::Kind::Operator => Actor::Operator(a.id),
            _ => Actor::System(a.id.into()),
        }
    }
}

macro_rules! payloads {
    ($($variant:ident($msg:ident) = $name:literal,)*) => {
        /// Every event type Clarion knows, with its wire name.
        // An event is decoded once and moved, never copied in bulk: boxing
        // the larger payloads (a dispatch with its push targets) would
        // touch every match for no gain.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug, PartialEq)]
        pub enum Payload {
            $($variant(pb::$msg),)*
        }

        impl Payload {
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Payload::$variant(_) => $name,)*
                }
            }

            #[cfg(test)]
            fn encode_to_vec(&self) -> Vec<u8> {
                match self {
                    $(Payload::$variant(m) => m.encode_to_vec(),)*
                }
            }

            fn encoded_len(&self) -> usize {
                match self {
                    $(Payload::$variant(m) => m.encoded_len(),)*
                }
            }

            fn encode_raw(&self, buf: &mut Vec<u8>) {
                match self {
                    $(Payload::$variant(m) => m.encode_raw(buf),)*
                }
            }

            fn decode(event_type: &str, bytes: &[u8]) -> Result<Payload, EventDecodeError> {
                match event_type {
                    $($name => pb::$msg::decode(bytes)
                        .map(Payload::$variant)
                        .map_err(|e| EventDecodeError::Payload(event_type.to_string(), e.to_string())),)*
                    other => Err(EventDecodeError::UnknownType(other.to_string())),
                }
            }

            /// Every known wire name.
            pub const TYPES: &'static [&'static str] = &[$($name,)*];
        }
    };
}

payloads! {
    TenantCreated(TenantCreated) = "clarion.tenant.created.v1",
    ApiKeyCreated(ApiKeyCreated) = "clarion.api_key.created.v1",
    TemplatePublished(TemplatePublished) = "clarion.template.published.v1",
    WorkflowPublished(WorkflowPublished) = "clarion.workflow.published.v1",
    TenantLimitsSet(TenantLimitsSet) = "clarion.tenant.limits_set.v1",
    WebhookSecretRotated(WebhookSecretRotated) = "clarion.webhook_secret.rotated.v1",
    SubscriberUpserted(SubscriberUpserted) = "clarion.subscriber.upserted.v1",
    Triggered(NotificationTriggered) = "clarion.notification.triggered.v1",
    Routed(NotificationRouted) = "clarion.notification.routed.v1",
    DispatchRequested(DispatchRequested) = "clarion.notification.dispatch_requested.v1",
    Sent(NotificationSent) = "clarion.notification.sent.v1",
    Delivered(NotificationDelivered) = "clarion.notification.delivered.v1",
    Failed(NotificationFailed) = "clarion.notification.failed.v1",
    TimerFired(TimerFired) = "clarion.notification.timer_fired.v1",
    Engaged(EngagementRecorded) = "clarion.notification.engaged.v1",
    Ended(RunEnded) = "clarion.notification.ended.v1",
    Noted(RunNoted) = "clarion.notification.noted.v1",
    DlqRetried(DeadLetterRetried) = "clarion.notification.dlq_retried.v1",
    DlqDiscarded(DeadLetterDiscarded) = "clarion.notification.dlq_discarded.v1",
    CancelRequested(CancelRequested) = "clarion.notification.cancel_requested.v1",
    ApiKeyRevoked(ApiKeyRevoked) = "clarion.api_key.revoked.v1",
    TopicRegistered(TopicRegistered) = "clarion.topic.registered.v1",
    PreferencesChanged(PreferencesChanged) = "clarion.preferences.changed.v1",
    ContactChanged(ContactChanged) = "clarion.contact.changed.v1",
    ContactVerified(ContactVerified) = "clarion.contact.verified.v1",
    ContactVerificationFailed(ContactVerificationFailed) = "clarion.contact.verification_failed.v1",
    AppConfigured(AppConfigured) = "clarion.app.configured.v1",
    DeviceRegistered(DeviceRegistered) = "clarion.device.registered.v1",
    DeviceTokenRotated(DeviceTokenRotated) = "clarion.device.rotated.v1",
    DeviceRevoked(DeviceRevoked) = "clarion.device.revoked.v1",
    DeviceSeen(DeviceSeen) = "clarion.device.seen.v1",
    PushRejected(PushRejected) = "clarion.push.rejected.v1",
    PushDeviceOutcome(PushDeviceOutcome) = "clarion.push.device_outcome.v1",
    InboxItemWritten(InboxItemWritten) = "clarion.inbox.item_written.v1",
    InboxItemsMarked(InboxItemsMarked) = "clarion.inbox.items_marked.v1",
    ScheduleSet(ScheduleSet) = "clarion.schedule.set.v1",
    ScheduleStateChanged(ScheduleStateChanged) = "clarion.schedule.state_changed.v1",
    ScheduleDue(ScheduleDue) = "clarion.schedule.due.v1",
    ScheduleOccurred(ScheduleOccurred) = "clarion.schedule.occurred.v1",
    QuietHoursSet(QuietHoursSet) = "clarion.quiet_hours.set.v1",
    TenantCalendarSet(TenantCalendarSet) = "clarion.tenant.calendar_set.v1",
    DigestFlushRequested(DigestFlushRequested) = "clarion.digest.flush_requested.v1",
    AnomalyDetected(AnomalyDetected) = "clarion.alerts.anomaly_detected.v1",
    ProviderFailedOver(ProviderFailedOver) = "clarion.provider.failed_over.v1",
    ProviderBreakerChanged(ProviderBreakerChanged) = "clarion.provider.breaker_changed.v1",
    ExportCreated(ExportCreated) = "clarion.export.created.v1",
    SubscriberErased(SubscriberErased) = "clarion.subscriber.erased.v1",
    ErasureDeferred(ErasureDeferred) = "clarion.erasure.deferred.v1",
    LegalHoldPlaced(LegalHoldPlaced) = "clarion.legal_hold.placed.v1",
    LegalHoldExtended(LegalHoldExtended) = "clarion.legal_hold.extended.v1",
    LegalHoldReleased(LegalHoldReleased) = "clarion.legal_hold.released.v1",
    RetentionPolicySet(RetentionPolicySet) = "clarion.retention.policy_set.v1",
    RetentionApplied(RetentionApplied) = "clarion.retention.applied.v1",
    RetentionTick(RetentionTick) = "clarion.retention.tick.v1",
    ProviderCredentialsSet(ProviderCredentialsSet) = "clarion.provider.credentials_set.v1",
    ProviderRouteSet(ProviderRouteSet) = "clarion.provider.route_set.v1",
    SlaSet(SlaSet) = "clarion.sla.set.v1",
    SlaBreached(SlaBreached) = "clarion.sla.breached.v1",
    SlaRecovered(SlaRecovered) = "clarion.sla.recovered.v1",
}

impl Payload {
    /// The notification this event is about, for lifecycle events.
    pub fn notification_id(&self) -> Option<&str> {
        match self {
            Payload::Triggered(p) => Some(&p.notification_id),
            Payload::Routed(p) => Some(&p.notification_id),
            Payload::DispatchRequested(p) => Some(&p.notification_id),
            Payload::Sent(p) => Some(&p.notification_id),
            Payload::Delivered(p) => Some(&p.notification_id),
            Payload::Failed(p) => Some(&p.notification_id),
            Payload::TimerFired(p) => Some(&p.notification_id),
            Payload::Engaged(p) => Some(&p.notification_id),
            Payload::Ended(p) => Some(&p.notification_id),
            Payload::Noted(p) => Some(&p.notification_id),
            Payload::DlqRetried(p) => Some(&p.notification_id),
            Payload::DlqDiscarded(p) => Some(&p.notification_id),
            Payload::PushRejected(p) => Some(&p.notification_id),
            Payload::PushDeviceOutcome(p) => Some(&p.notification_id),
            Payload::InboxItemWritten(p) => Some(&p.notification_id),
            Payload::ProviderFailedOver(p) => Some(&p.notification_id),
            Payload::ProviderBreakerChanged(p) => Some(&p.notification_id),
            _ => None,
        }
    }

    /// A JSON rendering for humans and APIs (history views, audits).
    /// Secrets never appear: API key events carry only the hash, and it is left out.
    pub fn detail_json(&self) -> Value {
        match self {
            Payload::TenantCreated(_)
            | Payload::ApiKeyCreated(_)
            | Payload::ApiKeyRevoked(_)
            | Payload::TemplatePublished(_)
            | Payload::WorkflowPublished(_)
            | Payload::TenantLimitsSet(_)
            | Payload::WebhookSecretRotated(_)
            | Payload::TopicRegistered(_)
            | Payload::AppConfigured(_) => self.config_detail(),
            Payload::SubscriberUpserted(_)
            | Payload::PreferencesChanged(_)
            | Payload::ContactChanged(_)
            | Payload::ContactVerified(_)
            | Payload::ContactVerificationFailed(_)
            | Payload::DeviceRegistered(_)
            | Payload::DeviceTokenRotated(_)
            | Payload::DeviceRevoked(_)
            | Payload::DeviceSeen(_)
            | Payload::InboxItemsMarked(_) => self.subscriber_detail(),
            Payload::PushRejected(_)
            | Payload::PushDeviceOutcome(_)
            | Payload::InboxItemWritten(_) => self.delivery_detail(),
            Payload::ProviderFailedOver(p) => json!({
                "attempt_id": p.attempt_id, "provider": p.provider,
                "skipped": p.skipped.iter().map(|s| json!({
                    "provider": s.provider, "reason": s.reason,
                })).collect::<Vec<_>>(),
            }),
            Payload::ProviderBreakerChanged(p) => json!({
                "provider": p.provider, "from": p.from, "to": p.to, "reason": p.reason,
                "attempt_id": p.attempt_id,
            }),
            Payload::ScheduleSet(_)
            | Payload::ScheduleStateChanged(_)
            | Payload::ScheduleDue(_)
            | Payload::ScheduleOccurred(_)
            | Payload::QuietHoursSet(_)
            | Payload::TenantCalendarSet(_)
            | Payload::DigestFlushRequested(_) => self.scheduling_detail(),
            Payload::Triggered(_)
            | Payload::Routed(_)
            | Payload::DispatchRequested(_)
            | Payload::Sent(_)
            | Payload::Delivered(_)
            | Payload::Failed(_)
            | Payload::TimerFired(_)
            | Payload::Engaged(_)
            | Payload::Ended(_)
            | Payload::Noted(_)
            | Payload::DlqRetried(_)
            | Payload::DlqDiscarded(_)
            | Payload::CancelRequested(_) => self.lifecycle_detail(),
            Payload::SubscriberErased(_)
            | Payload::ErasureDeferred(_)
            | Payload::LegalHoldPlaced(_)
            | Payload::LegalHoldExtended(_)
            | Payload::LegalHoldReleased(_)
            | Payload::RetentionPolicySet(_)
            | Payload::RetentionApplied(_)
            | Payload::RetentionTick(_)
            | Payload::ExportCreated(_) => self.compliance_detail(),
            Payload::ProviderCredentialsSet(_)
            | Payload::ProviderRouteSet(_)
            | Payload::SlaSet(_)
            | Payload::SlaBreached(_)
            | Payload::SlaRecovered(_) => self.provider_detail(),
            Payload::AnomalyDetected(p) => json!({
                "alert_id": p.alert_id, "series": p.series, "provider": p.provider,
                "signal": p.signal, "minute_start_ms": p.minute_start_ms,
                "observed": p.observed, "baseline": p.baseline, "deviation": p.deviation,
                "z_score": p.z_score, "attempts": p.attempts, "alerted": p.alerted,
                "runbook": p.runbook, "grouped_into": p.grouped_into,
            }),
        }
    }

    /// A notification's lifecycle: trigger, routing, sends and their
    /// outcomes, timers, engagement, the run's end and the DLQ.
    fn lifecycle_detail(&self) -> Value {
        match self {
            Payload::Triggered(p) => json!({
                "workflow_id": p.workflow_id, "workflow_version": p.workflow_version,
                "subscriber_id": p.subscriber_id, "idempotency_key": p.idempotency_key,
                "payload": serde_json::from_str::<Value>(&p.payload_json).unwrap_or(Value::Null),
                "send_at_ms": p.send_at_ms, "critical": p.critical,
                "schedule_id": p.schedule_id, "occurrence_at_ms": p.occurrence_at_ms,
            }),
            Payload::Routed(p) => json!({
                "workflow_id": p.workflow_id, "workflow_version": p.workflow_version, "step": p.step,
                "channel": p.channel, "template_id": p.template_id, "template_version": p.template_version,
                "locale": p.locale, "provider": p.provider,
            }),
            Payload::DispatchRequested(p) => json!({
                "attempt_id": p.attempt_id, "channel": p.channel, "provider": p.provider,
                "to": p.to, "subject": p.subject, "body": p.body, "locale": p.locale, "step": p.step,
                "link": p.link, "category": p.category,
                // Devices by id and fingerprint; sealed tokens are left out.
                "push_targets": p.push_targets.iter().map(|t| json!({
                    "device_id": t.device_id, "platform": t.platform, "provider": t.provider,
                    "token_fingerprint": token_fingerprint(t.token.as_ref().map_or(&[][..], |k| &k.hash)),
                })).collect::<Vec<_>>(),
            }),
            Payload::Sent(p) => {
                json!({"attempt_id": p.attempt_id, "provider": p.provider, "provider_message_id": p.provider_message_id})
            }
            Payload::Delivered(p) => json!({"attempt_id": p.attempt_id, "provider": p.provider}),
            Payload::Failed(p) => {
                json!({"attempt_id": p.attempt_id, "provider": p.provider, "reason": p.reason, "retryable": p.retryable, "stage": p.stage})
            }
            Payload::TimerFired(p) => json!({"seq": p.seq, "purpose": p.purpose}),
            Payload::Engaged(p) => {
                json!({"attempt_id": p.attempt_id, "kind": p.kind, "source": p.source})
            }
            Payload::Ended(p) => json!({
                "outcome": p.outcome, "reason": p.reason, "step": p.step,
                "workflow_id": p.workflow_id, "workflow_version": p.workflow_version,
                "attempts": p.attempts.iter().map(|a| json!({
                    "attempt_id": a.attempt_id, "step": a.step, "channel": a.channel,
                    "provider": a.provider, "at_ms": a.at_ms, "error": a.error,
                    "retryable": a.retryable, "sent": a.sent,
                })).collect::<Vec<_>>(),
            }),
            Payload::Noted(p) => json!({"message": p.message}),
            Payload::DlqRetried(p) => json!({"note": p.note}),
            Payload::DlqDiscarded(p) => json!({"note": p.note}),
            Payload::CancelRequested(p) => json!({"cancel_key": p.cancel_key, "reason": p.reason}),
            _ => unreachable!("detail_json routes only these here"),
        }
    }

    /// Erasure, legal holds, retention and exports (no personal data in any of them).
    fn compliance_detail(&self) -> Value {
        let scope = |s: Option<&pb::HoldScope>| {
            let s = s.cloned().unwrap_or_default();
            json!({"subscriber_id": s.subscriber_id, "workflow_id": s.workflow_id,
                "from_ms": s.from_ms, "until_ms": s.until_ms})
        };
        match self {
            Payload::SubscriberErased(p) => json!({
                "subscriber_id": p.subscriber_id, "request_id": p.request_id,
                "generations": p.generations, "reason": p.reason,
                "receipt": serde_json::from_str::<Value>(&p.receipt_json).unwrap_or(Value::Null),
            }),
            Payload::ErasureDeferred(p) => json!({
                "subscriber_id": p.subscriber_id, "request_id": p.request_id,
                "hold_id": p.hold_id, "reason": p.reason,
            }),
            Payload::LegalHoldPlaced(p) => json!({
                "hold_id": p.hold_id, "scope": scope(p.scope.as_ref()), "reason": p.reason,
                "expires_at_ms": p.expires_at_ms,
            }),
            Payload::LegalHoldExtended(p) => json!({
                "hold_id": p.hold_id, "reason": p.reason, "expires_at_ms": p.expires_at_ms,
            }),
            Payload::LegalHoldReleased(p) => json!({"hold_id": p.hold_id, "reason": p.reason}),
            Payload::RetentionPolicySet(p) => json!({
                "version": p.version,
                "rules": p.rules.iter().map(|r| json!({
                    "channel": r.channel, "country": r.country,
                    "redact_bodies_after_days": r.redact_bodies_after_days,
                    "shred_subscriber_after_days": r.shred_subscriber_after_days,
                })).collect::<Vec<_>>(),
            }),
            Payload::RetentionApplied(p) => json!({
                "day": p.day, "channel": p.channel, "country": p.country,
                "bodies_redacted": p.bodies_redacted, "subscribers_shredded": p.subscribers_shredded,
                "held_back": p.held_back, "deferred_erasures_executed": p.deferred_erasures_executed,
            }),
            Payload::RetentionTick(p) => json!({"due_ms": p.due_ms}),
            Payload::ExportCreated(p) => json!({
                "export_id": p.export_id, "requester": p.requester, "purpose": p.purpose,
                "scope": serde_json::from_str::<Value>(&p.scope_json).unwrap_or(Value::Null),
                "from_ms": p.from_ms, "until_ms": p.until_ms, "format": p.format,
                "files": p.files.iter().map(|f| json!({
                    "name": f.name, "sha256": f.sha256, "rows": f.rows,
                })).collect::<Vec<_>>(),
                "manifest_sha256": p.manifest_sha256, "public_key": p.public_key,
                "encrypted_to": p.encrypted_to,
            }),
            _ => unreachable!("detail_json routes only these here"),
        }
    }

    /// Tenant configuration: tenants, keys, templates, workflows, limits, topics, apps.
    /// Issue #31: tenant providers and SLAs. Sealed credentials are left
    /// out: only which fields are set.
    fn provider_detail(&self) -> Value {
        match self {
            Payload::ProviderCredentialsSet(p) => json!({
                "provider": p.provider, "fields": p.fields, "removed": p.removed,
                "version": p.version, "master_key_id": p.master_key_id,
            }),
            Payload::ProviderRouteSet(p) => json!({
                "channel": p.channel, "providers": p.providers,
            }),
            Payload::SlaSet(p) => json!({
                "sla_id": p.sla_id, "name": p.name, "channel": p.channel,
                "workflow_id": p.workflow_id, "topic": p.topic,
                "target_ratio": p.target_ratio, "threshold_ms": p.threshold_ms,
                "window_ms": p.window_ms, "milestone": p.milestone,
                "min_samples": p.min_samples, "removed": p.removed,
            }),
            Payload::SlaBreached(p) => json!({
                "sla_id": p.sla_id, "channel": p.channel, "demoted_provider": p.demoted_provider,
                "compliance": p.compliance, "target_ratio": p.target_ratio, "met": p.met,
                "judged": p.judged, "pending": p.pending, "predicted": p.predicted,
                "window_start_ms": p.window_start_ms, "runbook": p.runbook, "alert_id": p.alert_id,
            }),
            Payload::SlaRecovered(p) => json!({
                "sla_id": p.sla_id, "channel": p.channel,
                "restored_provider": p.restored_provider, "compliance": p.compliance,
            }),
            _ => unreachable!("detail_json routes only these here"),
        }
    }

    fn config_detail(&self) -> Value {
        match self {
            Payload::TenantCreated(p) => json!({"tenant_id": p.tenant_id, "name": p.name}),
            Payload::ApiKeyCreated(p) => json!({
                "key_id": p.key_id, "name": p.name, "scopes": p.scopes, "expires_at_ms": p.expires_at_ms,
            }),
            Payload::ApiKeyRevoked(p) => json!({"key_id": p.key_id}),
            Payload::TemplatePublished(p) => json!({
                "template_id": p.template_id, "version": p.version, "channel": p.channel,
                "locales": p.variants.iter().map(|v| v.locale.clone()).collect::<Vec<_>>(),
            }),
            Payload::WorkflowPublished(p) => json!({
                "workflow_id": p.workflow_id, "version": p.version, "name": p.name,
                "trigger_event": p.trigger_event,
                "definition": serde_json::from_str::<Value>(&p.definition_json).unwrap_or(Value::Null),
            }),
            Payload::TenantLimitsSet(p) => json!({
                "version": p.version,
                "definition": serde_json::from_str::<Value>(&p.definition_json).unwrap_or(Value::Null),
            }),
            // Sealed values are left out: only when, and under which master key.
            Payload::WebhookSecretRotated(p) => json!({
                "master_key_id": p.master_key_id,
                "previous_valid_until_ms": p.previous_valid_until_ms,
            }),
            Payload::TopicRegistered(p) => json!({
                "topic_id": p.topic_id, "version": p.version, "name": p.name,
                "description": p.description, "channels": p.channels,
                "default_opt_in": p.default_opt_in, "required": p.required, "marketing": p.marketing,
                "previous": serde_json::from_str::<Value>(&p.previous_json).unwrap_or(Value::Null),
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::AppConfigured(p) => json!({
                "app_id": p.app_id, "name": p.name, "platforms": p.platforms,
                "ios_bundle_id": p.ios_bundle_id, "apns_environment": p.apns_environment,
                "deep_links": p.deep_links, "version": p.version,
                "origin": origin_json(p.origin.as_ref()),
            }),
            _ => unreachable!("detail_json routes only these here"),
        }
    }

    /// A subscriber's profile, preferences, contacts, devices and inbox marks.
    fn subscriber_detail(&self) -> Value {
        match self {
            Payload::SubscriberUpserted(p) => {
                json!({"subscriber_id": p.subscriber_id, "locale": p.locale, "timezone": p.timezone})
            }
            Payload::PreferencesChanged(p) => json!({
                "subscriber_id": p.subscriber_id,
                "changes": p.changes.iter().map(|c| {
                    let (path, old, new) = crate::preferences::describe(c);
                    json!({"path": path, "old": old, "new": new})
                }).collect::<Vec<_>>(),
                "origin": origin_json(p.origin.as_ref()),
            }),
            // The code is left out: it is for the contact's owner only.
            Payload::ContactChanged(p) => json!({
                "subscriber_id": p.subscriber_id, "channel": p.channel,
                "old": p.old_value, "new": p.new_value, "expires_at_ms": p.expires_at_ms,
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::ContactVerified(p) => json!({
                "subscriber_id": p.subscriber_id, "channel": p.channel, "value": p.value,
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::ContactVerificationFailed(p) => json!({
                "subscriber_id": p.subscriber_id, "channel": p.channel,
                "origin": origin_json(p.origin.as_ref()),
            }),
            // Tokens are never shown, not even sealed: only a fingerprint.
            Payload::DeviceRegistered(p) => json!({
                "subscriber_id": p.subscriber_id, "device_id": p.device_id,
                "platform": p.platform, "provider": p.provider, "app_id": p.app_id,
                "token_fingerprint": token_fingerprint(p.token.as_ref().map_or(&[][..], |t| &t.hash)),
                "locale": p.locale, "timezone": p.timezone, "app_version": p.app_version,
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::DeviceTokenRotated(p) => json!({
                "subscriber_id": p.subscriber_id, "device_id": p.device_id,
                "token_fingerprint": token_fingerprint(p.token.as_ref().map_or(&[][..], |t| &t.hash)),
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::DeviceRevoked(p) => json!({
                "subscriber_id": p.subscriber_id, "device_id": p.device_id, "reason": p.reason,
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::DeviceSeen(p) => json!({
                "subscriber_id": p.subscriber_id, "device_id": p.device_id,
                "locale": p.locale, "timezone": p.timezone, "app_version": p.app_version,
            }),
            Payload::InboxItemsMarked(p) => json!({
                "subscriber_id": p.subscriber_id, "item_ids": p.item_ids, "all": p.all,
                "category": p.category, "mark": p.mark,
                "origin": origin_json(p.origin.as_ref()),
            }),
            _ => unreachable!("detail_json routes only these here"),
        }
    }

    /// Schedules, quiet hours, the tenant's calendar and digest flushes.
    fn scheduling_detail(&self) -> Value {
        match self {
            Payload::ScheduleSet(p) => json!({
                "schedule_id": p.schedule_id, "subscriber_id": p.subscriber_id,
                "workflow_id": p.workflow_id, "rrule": p.rrule, "cron": p.cron,
                "timezone": p.timezone, "start_at_ms": p.start_at_ms, "end_at_ms": p.end_at_ms,
                "payload": serde_json::from_str::<Value>(&p.payload_json).unwrap_or(Value::Null),
                "catch_up": p.catch_up, "generation": p.generation,
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::ScheduleStateChanged(p) => json!({
                "schedule_id": p.schedule_id, "subscriber_id": p.subscriber_id, "state": p.state,
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::ScheduleDue(p) => json!({
                "schedule_id": p.schedule_id, "subscriber_id": p.subscriber_id,
                "generation": p.generation, "occurrence_at_ms": p.occurrence_at_ms,
            }),
            Payload::ScheduleOccurred(p) => json!({
                "schedule_id": p.schedule_id, "subscriber_id": p.subscriber_id,
                "occurrence_at_ms": p.occurrence_at_ms, "notification_id": p.notification_id,
                "late_by_ms": p.late_by_ms, "missed": p.missed, "next_at_ms": p.next_at_ms,
            }),
            Payload::QuietHoursSet(p) => json!({
                "subscriber_id": p.subscriber_id, "timezone": p.timezone, "enabled": p.enabled,
                "version": p.version,
                "rules": p.rules.iter().map(|r| json!({
                    "channels": r.channels, "days": r.days, "start": r.start, "end": r.end,
                    "policy": r.policy,
                })).collect::<Vec<_>>(),
                "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::TenantCalendarSet(p) => json!({
                "default_timezone": p.default_timezone, "holidays": p.holidays,
                "version": p.version, "origin": origin_json(p.origin.as_ref()),
            }),
            Payload::DigestFlushRequested(p) => json!({
                "subscriber_id": p.subscriber_id, "workflow_id": p.workflow_id,
                "digest_key": p.digest_key, "origin": origin_json(p.origin.as_ref()),
            }),
            _ => unreachable!("detail_json routes only these here"),
        }
    }

    /// Per-device push outcomes and inbox items.
    fn delivery_detail(&self) -> Value {
        match self {
            Payload::PushRejected(p) => json!({
                "subscriber_id": p.subscriber_id, "device_id": p.device_id,
                "token_fingerprint": token_fingerprint(&p.token_hash),
                "provider": p.provider, "reason": p.reason, "detail": p.detail,
                "unregistered_at_ms": p.unregistered_at_ms, "attempt_id": p.attempt_id,
            }),
            Payload::PushDeviceOutcome(p) => json!({
                "attempt_id": p.attempt_id, "device_id": p.device_id, "platform": p.platform,
                "provider": p.provider, "outcome": p.outcome,
                "provider_message_id": p.provider_message_id, "detail": p.detail,
            }),
            Payload::InboxItemWritten(p) => json!({
                "subscriber_id": p.subscriber_id, "item_id": p.item_id, "attempt_id": p.attempt_id,
                "title": p.title, "body": p.body, "link": p.link, "category": p.category,
                "workflow_id": p.workflow_id, "locale": p.locale,
            }),
            _ => unreachable!("detail_json routes only these here"),
        }
    }
}

/// The last 6 hex digits of a token's keyed hash: tells tokens apart in
/// views and logs without revealing them.
pub fn token_fingerprint(hash: &[u8]) -> String {
    let start = hash.len().saturating_sub(3);
    hex::encode(&hash[start..])
}

/// Who changed something, and through which interface (audit views).
fn origin_json(o: Option<&pb::Origin>) -> Value {
    let o = o.cloned().unwrap_or_default();
    json!({"interface": o.interface, "actor": o.actor})
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventDecodeError {
    #[error("malformed event envelope: {0}")]
    Envelope(String),
    #[error("unsupported envelope schema version {0} (this build reads version {SCHEMA_VERSION})")]
    SchemaVersion(u32),
    #[error(
        "unknown event type {0:?}: this consumer is older than the producer or the log is corrupt"
    )]
    UnknownType(String),
    #[error("malformed payload of {0}: {1}")]
    Payload(String, String),
}

/// One fact in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Id,
    pub tenant: TenantId,
    pub partition_key: String,
    pub occurred_at_ms: i64,
    pub causation_id: Option<Id>,
    pub correlation_id: Option<Id>,
    pub actor: Actor,
    pub payload: Payload,
}

/// An envelope's fields as read, borrowed from the record where they can be.
struct Parts<'a> {
    schema_version: u32,
    event_id: &'a [u8],
    tenant: &'a str,
    partition_key: String,
    event_type: &'a str,
    occurred_at_ms: i64,
    causation: &'a [u8],
    correlation: &'a [u8],
    actor: Option<pb::Actor>,
    payload: &'a [u8],
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }

    /// The `EventEnvelope` encoding, written field by field into one buffer:
    /// building the envelope message first copied every string and the
    /// encoded payload once more (every output of every processor goes
    /// through here). The bytes are those prost writes for the envelope
    /// (fields in tag order, proto3 defaults left out); a test holds the two
    /// to it.
    pub fn encode(&self) -> Vec<u8> {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
        fn put_bytes(tag: u32, b: &[u8], buf: &mut Vec<u8>) {
            if !b.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(b.len() as u64, buf);
                buf.extend_from_slice(b);
            }
        }
        fn put_varint(tag: u32, v: u64, buf: &mut Vec<u8>) {
            if v != 0 {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(v, buf);
            }
        }
        let (kind, actor_id) = self.actor.parts();
        // The nested actor's length prefix comes before its fields. Its kind
        // is never KIND_UNSPECIFIED (0), so it is always written.
        let id_len = match actor_id.len() {
            0 => 0,
            n => key_len(2) + encoded_len_varint(n as u64) + n,
        };
        let actor_len = key_len(1) + encoded_len_varint(kind as u64) + id_len;
        let payload_len = self.payload.encoded_len();
        let causation = self.causation_id.as_ref().map_or(&[][..], |i| &i.0[..]);
        let correlation = self.correlation_id.as_ref().map_or(&[][..], |i| &i.0[..]);
        let event_type = self.payload.event_type();
        // An upper bound: every key is one byte (tags up to 10), varints
        // and length prefixes at most 10 bytes, ids 16.
        let strings = self.tenant.as_str().len()
            + self.partition_key.len()
            + event_type.len()
            + actor_id.len();
        let mut buf = Vec::with_capacity(strings + payload_len + 160);
        put_varint(1, u64::from(SCHEMA_VERSION), &mut buf);
        put_bytes(2, &self.id.0, &mut buf);
        put_bytes(3, self.tenant.as_str().as_bytes(), &mut buf);
        put_bytes(4, self.partition_key.as_bytes(), &mut buf);
        put_bytes(5, event_type.as_bytes(), &mut buf);
        put_varint(6, self.occurred_at_ms as u64, &mut buf);
        put_bytes(7, causation, &mut buf);
        put_bytes(8, correlation, &mut buf);
        encode_key(9, WireType::LengthDelimited, &mut buf);
        encode_varint(actor_len as u64, &mut buf);
        put_varint(1, kind as u64, &mut buf);
        put_bytes(2, actor_id.as_bytes(), &mut buf);
        if payload_len > 0 {
            encode_key(10, WireType::LengthDelimited, &mut buf);
            encode_varint(payload_len as u64, &mut buf);
            self.payload.encode_raw(&mut buf);
        }
        buf
    }

    /// The envelope as prost writes it: what [`Event::encode`] must match.
    #[cfg(test)]
    fn encode_with_envelope(&self) -> Vec<u8> {
        pb::EventEnvelope {
            schema_version: SCHEMA_VERSION,
            event_id: self.id.0.to_vec(),
            tenant_id: self.tenant.to_string(),
            partition_key: self.partition_key.clone(),
            event_type: self.payload.event_type().to_string(),
            occurred_at_ms: self.occurred_at_ms,
            causation_id: self.causation_id.map(|i| i.0.to_vec()).unwrap_or_default(),
            correlation_id: self
                .correlation_id
                .map(|i| i.0.to_vec())
                .unwrap_or_default(),
            actor: Some(self.actor.to_pb()),
            payload: self.payload.encode_to_vec(),
        }
        .encode_to_vec()
    }

    /// Reads an `EventEnvelope`, field by field from `bytes`: decoding the
    /// envelope message first allocated its event type, tenant and three
    /// ids only to drop them again, and held the payload as a counted view
    /// (every processor decodes every event it reads). It reads what prost
    /// reads: fields in any order, the last of a repeated scalar winning,
    /// unknown fields skipped; a test compares the two on valid and damaged
    /// input.
    pub fn decode(bytes: &[u8]) -> Result<Event, EventDecodeError> {
        use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
        let bad = |e: prost::DecodeError| EventDecodeError::Envelope(e.to_string());
        fn field<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], prost::DecodeError> {
            let len = decode_varint(buf)?;
            if len > buf.len() as u64 {
                return Err(prost::DecodeError::new("buffer underflow"));
            }
            let (f, rest) = buf.split_at(len as usize);
            *buf = rest;
            Ok(f)
        }
        fn text<'a>(buf: &mut &'a [u8]) -> Result<&'a str, prost::DecodeError> {
            std::str::from_utf8(field(buf)?).map_err(|_| {
                prost::DecodeError::new("invalid string value: data is not UTF-8 encoded")
            })
        }
        let mut buf = bytes;
        let (mut schema_version, mut occurred_at_ms) = (0u32, 0i64);
        let (mut event_id, mut causation, mut correlation): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
        let (mut tenant, mut partition_key, mut event_type) = ("", "", "");
        let mut actor: Option<pb::Actor> = None;
        let mut payload: &[u8] = &[];
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf).map_err(bad)?;
            match (tag, wire) {
                (1, WireType::Varint) => {
                    schema_version = decode_varint(&mut buf).map_err(bad)? as u32
                }
                (2, WireType::LengthDelimited) => event_id = field(&mut buf).map_err(bad)?,
                (3, WireType::LengthDelimited) => tenant = text(&mut buf).map_err(bad)?,
                (4, WireType::LengthDelimited) => partition_key = text(&mut buf).map_err(bad)?,
                (5, WireType::LengthDelimited) => event_type = text(&mut buf).map_err(bad)?,
                (6, WireType::Varint) => {
                    occurred_at_ms = decode_varint(&mut buf).map_err(bad)? as i64
                }
                (7, WireType::LengthDelimited) => causation = field(&mut buf).map_err(bad)?,
                (8, WireType::LengthDelimited) => correlation = field(&mut buf).map_err(bad)?,
                (9, WireType::LengthDelimited) => {
                    // An embedded message repeated is merged, as prost does.
                    let a = actor.get_or_insert_with(Default::default);
                    a.merge(field(&mut buf).map_err(bad)?).map_err(bad)?;
                }
                (10, WireType::LengthDelimited) => payload = field(&mut buf).map_err(bad)?,
                (1..=10, _) => {
                    return Err(EventDecodeError::Envelope(format!(
                        "failed to decode Protobuf message: invalid wire type: {wire:?} (tag {tag})"
                    )))
                }
                _ => skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(bad)?,
            }
        }
        Self::from_parts(Parts {
            schema_version,
            event_id,
            tenant,
            partition_key: partition_key.to_string(),
            event_type,
            occurred_at_ms,
            causation,
            correlation,
            actor,
            payload,
        })
    }

    /// The event type of an encoded envelope without decoding the rest:
    /// roles that use a few types of a stream skip the others' payloads
    /// (a trigger's is the largest record of the log). `None` when the
    /// envelope does not read; the caller then decodes it to report why.
    pub fn peek_type(bytes: &[u8]) -> Option<&str> {
        use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
        // The last occurrence wins, as in `decode`; the fields after the
        // type (time, ids, actor, payload) are skipped, not read.
        let (mut buf, mut found) = (bytes, None);
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf).ok()?;
            if (tag, wire) == (5, WireType::LengthDelimited) {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let (text, rest) = (buf.get(..len)?, &buf[len..]);
                found = Some(std::str::from_utf8(text).ok()?);
                buf = rest;
            } else {
                skip_field(wire, tag, &mut buf, DecodeContext::default()).ok()?;
            }
        }
        found
    }

    /// Like [`Event::decode`], for a record held as `Bytes`.
    pub fn decode_bytes(bytes: bytes::Bytes) -> Result<Event, EventDecodeError> {
        Self::decode(&bytes)
    }

    /// [`Event::decode`] through prost's `EventEnvelope`: what it must match.
    #[cfg(test)]
    fn decode_with_envelope(bytes: &[u8]) -> Result<Event, EventDecodeError> {
        let env = pb::EventEnvelope::decode(bytes)
            .map_err(|e| EventDecodeError::Envelope(e.to_string()))?;
        Self::from_parts(Parts {
            schema_version: env.schema_version,
            event_id: &env.event_id,
            tenant: &env.tenant_id,
            partition_key: env.partition_key.clone(),
            event_type: &env.event_type,
            occurred_at_ms: env.occurred_at_ms,
            causation: &env.causation_id,
            correlation: &env.correlation_id,
            actor: env.actor.clone(),
            payload: &env.payload,
        })
    }

    fn from_parts(env: Parts<'_>) -> Result<Event, EventDecodeError> {
        if env.schema_version != SCHEMA_VERSION {
            return Err(EventDecodeError::SchemaVersion(env.schema_version));
        }
        let id = Id::from_slice(env.event_id)
            .ok_or_else(|| EventDecodeError::Envelope("event_id must be 16 bytes".into()))?;
        let tenant = TenantId::parse(env.tenant)
            .map_err(|e| EventDecodeError::Envelope(format!("tenant_id: {e}")))?;
        let opt_id = |b: &[u8], name: &str| -> Result<Option<Id>, EventDecodeError> {
            if b.is_empty() {
                Ok(None)
            } else {
                Id::from_slice(b)
                    .map(Some)
                    .ok_or_else(|| EventDecodeError::Envelope(format!("{name} must be 16 bytes")))
            }
        };
        Ok(Event {
            id,
            tenant,
            partition_key: env.partition_key,
            occurred_at_ms: env.occurred_at_ms,
            causation_id: opt_id(env.causation, "causation_id")?,
            correlation_id: opt_id(env.correlation, "correlation_id")?,
            actor: Actor::from_pb(env.actor),
            payload: Payload::decode(env.event_type, env.payload)?,
        })
    }

    /// An event caused by `self`: same tenant, key and correlation, id derived
    /// from this event's id and `index` so re-processing yields the same id.
    pub fn caused(&self, index: u32, now_ms: i64, actor: Actor, payload: Payload) -> Event {
        Event {
            id: self.id.child(payload.event_type(), index),
            tenant: self.tenant.clone(),
            partition_key: self.partition_key.clone(),
            occurred_at_ms: now_ms,
            causation_id: Some(self.id),
            correlation_id: self.correlation_id,
            actor,
            payload,
        }
    }
}

/// Decodes a stored `SubscriberUpserted` record (the subscribers table value).
pub fn decode_subscriber(bytes: &[u8]) -> Option<crate::subscriber::Subscriber> {
    pb::SubscriberUpserted::decode(bytes)
        .ok()
        .map(|s| crate::subscriber::Subscriber::from_event(&s))
}

/// The types of the events that say what became of a send: its request,
/// its sending, delivery or failure, and engagement with it. The roles that
/// follow deliveries (analytics, alert counts) read only these
/// (`Processor::accepts`, with [`Event::peek_type`]).
pub const SEND_FACTS: [&str; 5] = [
    "clarion.notification.dispatch_requested.v1",
    "clarion.notification.sent.v1",
    "clarion.notification.delivered.v1",
    "clarion.notification.failed.v1",
    "clarion.notification.engaged.v1",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(payload_json: String, key: String) -> Event {
        Event {
            id: Id::derive(&[key.as_bytes()]),
            tenant: TenantId::parse("acme").unwrap(),
            partition_key: format!("acme/{key}"),
            occurred_at_ms: 1_700_000_000_000,
            causation_id: None,
            correlation_id: Some(Id::derive(&[b"n"])),
            actor: Actor::ApiKey("k1".into()),
            payload: Payload::Triggered(pb::NotificationTriggered {
                notification_id: "n1".into(),
                workflow_id: "wf".into(),
                subscriber_id: key,
                payload_json,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn send_facts_name_the_send_events() {
        let kinds = [
            Payload::DispatchRequested(Default::default()),
            Payload::Sent(Default::default()),
            Payload::Delivered(Default::default()),
            Payload::Failed(Default::default()),
            Payload::Engaged(Default::default()),
        ];
        let names: Vec<&str> = kinds.iter().map(|p| p.event_type()).collect();
        assert_eq!(names, SEND_FACTS);
    }

    #[test]
    fn direct_encoding_is_the_envelopes_byte_for_byte() {
        let base = sample("{\"a\":1}".into(), "ana".into());
        let mut cases = vec![base.clone()];
        // No correlation, a causation, an empty key, every actor kind, a
        // time before the epoch, and a payload with every field at its
        // default (encoded as no bytes at all).
        let mut e = base.clone();
        e.correlation_id = None;
        e.causation_id = Some(Id::derive(&[b"c"]));
        e.partition_key = String::new();
        e.actor = Actor::System("router".into());
        e.occurred_at_ms = -5;
        cases.push(e.clone());
        e.actor = Actor::Operator(String::new());
        e.occurred_at_ms = 0;
        e.payload = Payload::Ended(pb::RunEnded::default());
        cases.push(e.clone());
        e.payload = Payload::Ended(pb::RunEnded {
            notification_id: "n1".into(),
            outcome: "completed".into(),
            attempts: vec![pb::AttemptRecord {
                attempt_id: "a1".into(),
                sent: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        cases.push(e);
        for e in cases {
            assert_eq!(e.encode(), e.encode_with_envelope(), "{e:?}");
            assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        }
    }

    proptest! {
        #[test]
        fn envelope_roundtrips(payload in ".{0,200}", key in "[a-z0-9]{1,20}") {
            let e = sample(payload, key);
            prop_assert_eq!(e.encode(), e.encode_with_envelope());
            prop_assert_eq!(Event::decode(&e.encode()).unwrap(), e.clone());
            // The same from `Bytes`.
            prop_assert_eq!(Event::decode_bytes(e.encode().into()).unwrap(), e);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Event::decode(&bytes);
            let _ = Event::decode_bytes(bytes.clone().into());
            let _ = Event::peek_type(&bytes);
        }

        /// A peeked type is the decoded event's: skipping by it never skips
        /// an event of a wanted type.
        #[test]
        fn peek_type_agrees_with_decode(
            payload in ".{0,60}",
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let good = sample(payload, "ana".into()).encode();
            prop_assert_eq!(Event::peek_type(&good), Some("clarion.notification.triggered.v1"));
            let mut changed = good.clone();
            changed[at.index(good.len())] = byte;
            if let Ok(e) = Event::decode(&changed) {
                prop_assert_eq!(Event::peek_type(&changed), Some(e.event_type()));
            }
        }

        /// The field-by-field reader reads what prost reads, damaged records
        /// included: a byte changed, the record cut short, or extended.
        #[test]
        fn decode_reads_what_prost_reads(
            payload in ".{0,60}",
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let good = sample(payload, "ana".into()).encode();
            let mut changed = good.clone();
            changed[at.index(good.len())] = byte;
            let mut extended = good.clone();
            extended.extend_from_slice(&tail);
            for bytes in [&good[..], &changed[..], &good[..cut.index(good.len())], &extended[..]] {
                let ours = Event::decode(bytes);
                let theirs = Event::decode_with_envelope(bytes);
                prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "{:?} / {:?}", ours, theirs);
                prop_assert_eq!(ours.ok(), theirs.ok());
            }
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_the_last_of_a_repeated_field_wins() {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let e = sample("{}".into(), "s".into());
        let mut bytes = e.encode();
        // An unknown varint field, an unknown length-delimited one, a second
        // occurred-at, and a second actor (embedded messages merge).
        encode_key(15, WireType::Varint, &mut bytes);
        encode_varint(7, &mut bytes);
        encode_key(16, WireType::LengthDelimited, &mut bytes);
        encode_varint(3, &mut bytes);
        bytes.extend_from_slice(b"xyz");
        encode_key(6, WireType::Varint, &mut bytes);
        encode_varint(42, &mut bytes);
        let actor = pb::Actor {
            kind: pb::actor::Kind::Operator as i32,
            id: String::new(),
        };
        encode_key(9, WireType::LengthDelimited, &mut bytes);
        encode_varint(actor.encoded_len() as u64, &mut bytes);
        actor.encode(&mut bytes).unwrap();
        let ours = Event::decode(&bytes).unwrap();
        assert_eq!(ours, Event::decode_with_envelope(&bytes).unwrap());
        assert_eq!(ours.occurred_at_ms, 42);
        assert_eq!(ours.actor, Actor::Operator("k1".into()));
        // A known field with the wrong wire type is an error, as in prost.
        let mut wrong = e.encode();
        encode_key(3, WireType::Varint, &mut wrong);
        encode_varint(1, &mut wrong);
        assert!(Event::decode(&wrong).is_err());
        assert!(Event::decode_with_envelope(&wrong).is_err());
    }

    #[test]
    fn unknown_event_type_fails_loudly() {
        let mut env =
            pb::EventEnvelope::decode(&*sample("{}".into(), "s".into()).encode()).unwrap();
        env.event_type = "clarion.notification.teleported.v1".into();
        let err = Event::decode(&env.encode_to_vec()).unwrap_err();
        assert_eq!(
            err,
            EventDecodeError::UnknownType("clarion.notification.teleported.v1".into())
        );
    }

    #[test]
    fn future_schema_version_is_rejected() {
        let mut env =
            pb::EventEnvelope::decode(&*sample("{}".into(), "s".into()).encode()).unwrap();
        env.schema_version = 2;
        assert_eq!(
            Event::decode(&env.encode_to_vec()).unwrap_err(),
            EventDecodeError::SchemaVersion(2)
        );
    }

    #[test]
    fn caused_events_have_stable_ids() {
        let e = sample("{}".into(), "s".into());
        let p = Payload::Delivered(Default::default());
        let a = e.caused(0, 5, Actor::System("t".into()), p.clone());
        let b = e.caused(0, 9, Actor::System("t".into()), p);
        assert_eq!(a.id, b.id);
        assert_eq!(a.causation_id, Some(e.id));
    }
}
