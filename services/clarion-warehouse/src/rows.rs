//! Rows of the warehouse tables, made from the log's events. Notifications
//! and engagement rows come from one event each; a message row joins a
//! send's outcome with its `DispatchRequested` (the channel, step and
//! locale are only there), whichever of the two is read first.

use clarion_domain::event::Payload;
use clarion_domain::Event;
use clarion_proto::events as pb;
use serde::{Deserialize, Serialize};

use crate::schema::WarehouseTable;

/// One row of one table, with the tenant and the time that partition it.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub tenant: String,
    /// Partitions the row by UTC date.
    pub at_ms: i64,
    pub values: Values,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Notification(NotificationRow),
    Message(MessageRow),
    Engagement(EngagementRow),
}

impl Row {
    pub fn table(&self) -> WarehouseTable {
        match self.values {
            Values::Notification(_) => WarehouseTable::Notifications,
            Values::Message(_) => WarehouseTable::Messages,
            Values::Engagement(_) => WarehouseTable::Engagement,
        }
    }

    /// About how many bytes the row holds (what rolls a file by size).
    pub fn approx_bytes(&self) -> usize {
        let strings = match &self.values {
            Values::Notification(n) => {
                n.notification_id.len()
                    + n.workflow_id.len()
                    + n.subscriber_id.len()
                    + n.reason.len()
                    + n.channel_path.len()
                    + 24
            }
            Values::Message(m) => {
                m.notification_id.len()
                    + m.attempt_id.len()
                    + m.workflow_id.len()
                    + m.subscriber_id.len()
                    + m.recipient.as_ref().map_or(0, String::len)
                    + m.template_id.len()
                    + m.error.as_ref().map_or(0, String::len)
                    + 44
            }
            Values::Engagement(e) => e.notification_id.len() + e.attempt_id.len() + 16,
        };
        strings + 48
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NotificationRow {
    pub notification_id: String,
    pub workflow_id: String,
    pub workflow_version: i32,
    pub subscriber_id: String,
    pub status: String,
    pub outcome: String,
    pub reason: String,
    pub last_step: String,
    pub channel_path: String,
    pub attempts: i32,
    pub sent_attempts: i32,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub ended_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MessageRow {
    pub notification_id: String,
    pub attempt_id: String,
    pub workflow_id: String,
    pub step: String,
    pub subscriber_id: String,
    /// The send's address as a keyed hash (see [`crate::pii`]), never clear.
    pub recipient: Option<String>,
    pub channel: String,
    pub provider: String,
    pub template_id: String,
    pub template_version: i32,
    pub locale: String,
    pub outcome: String,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub requested_at: i64,
    pub outcome_at: i64,
    pub latency_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngagementRow {
    pub notification_id: String,
    pub attempt_id: String,
    pub kind: String,
    pub source: String,
    pub occurred_at: i64,
}

/// What a send attempt's `DispatchRequested` says, kept until its outcomes
/// come (stored per tenant and attempt: delivery receipts may come late).
/// It holds the address only as the warehouse shows it (a keyed hash).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    pub workflow_id: String,
    pub step: String,
    pub subscriber_id: String,
    pub channel: String,
    pub provider: String,
    pub locale: String,
    pub requested_at: i64,
    /// Rows stored before these columns existed read as empty.
    #[serde(default)]
    pub recipient: Option<String>,
    #[serde(default)]
    pub template_id: String,
    #[serde(default)]
    pub template_version: i32,
}

impl AttemptInfo {
    /// `recipient`: the address as the warehouse shows it ([`crate::pii`]).
    pub fn of(d: &pb::DispatchRequested, at_ms: i64, recipient: Option<String>) -> AttemptInfo {
        AttemptInfo {
            workflow_id: d.workflow_id.clone(),
            step: d.step.clone(),
            subscriber_id: d.subscriber_id.clone(),
            channel: d.channel.clone(),
            provider: d.provider.clone(),
            locale: d.locale.clone(),
            requested_at: at_ms,
            recipient,
            template_id: d.template_id.clone(),
            template_version: d.template_version as i32,
        }
    }
}

/// A send's outcome, possibly read before its request (then it waits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub tenant: String,
    pub notification_id: String,
    pub attempt_id: String,
    pub provider: String,
    /// sent | delivered | failed
    pub outcome: String,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub at_ms: i64,
}

impl Outcome {
    /// The outcome an event reports, if it is one.
    pub fn of(e: &Event) -> Option<Outcome> {
        let (nid, attempt, provider, outcome, class, error) = match &e.payload {
            Payload::Sent(s) => (
                &s.notification_id,
                &s.attempt_id,
                &s.provider,
                "sent",
                None,
                None,
            ),
            Payload::Delivered(d) => (
                &d.notification_id,
                &d.attempt_id,
                &d.provider,
                "delivered",
                None,
                None,
            ),
            // Routing failures never reached a provider: not a send.
            Payload::Failed(f) if f.stage != "route" && !f.attempt_id.is_empty() => (
                &f.notification_id,
                &f.attempt_id,
                &f.provider,
                "failed",
                Some(error_class(f)),
                Some(crate::pii::scrub(&f.reason)),
            ),
            _ => return None,
        };
        (!attempt.is_empty()).then(|| Outcome {
            tenant: e.tenant.as_str().to_string(),
            notification_id: nid.clone(),
            attempt_id: attempt.clone(),
            provider: provider.clone(),
            outcome: outcome.into(),
            error_class: class,
            error,
            at_ms: e.occurred_at_ms,
        })
    }

    /// The message row of this outcome of the attempt `info` describes.
    pub fn row(self, info: &AttemptInfo) -> Row {
        let provider = if self.provider.is_empty() {
            info.provider.clone()
        } else {
            self.provider
        };
        Row {
            tenant: self.tenant,
            at_ms: self.at_ms,
            values: Values::Message(MessageRow {
                notification_id: self.notification_id,
                attempt_id: self.attempt_id,
                workflow_id: info.workflow_id.clone(),
                step: info.step.clone(),
                subscriber_id: info.subscriber_id.clone(),
                recipient: info.recipient.clone(),
                channel: info.channel.clone(),
                provider,
                template_id: info.template_id.clone(),
                template_version: info.template_version,
                locale: info.locale.clone(),
                outcome: self.outcome,
                error_class: self.error_class,
                error: self.error,
                requested_at: info.requested_at,
                outcome_at: self.at_ms,
                latency_ms: (self.at_ms - info.requested_at).max(0),
            }),
        }
    }
}

/// `<stage>/<retryable|terminal>`: where a send failed and whether it may
/// succeed on retry (the reason's text is in `error`).
fn error_class(f: &pb::NotificationFailed) -> String {
    let stage = if f.stage.is_empty() {
        "dispatch"
    } else {
        &f.stage
    };
    let kind = if f.retryable { "retryable" } else { "terminal" };
    format!("{stage}/{kind}")
}

/// The notification row of a run's end.
pub fn notification_row(e: &Event, end: &pb::RunEnded) -> Row {
    let mut path: Vec<&str> = Vec::new();
    for a in &end.attempts {
        if path.last() != Some(&a.channel.as_str()) {
            path.push(&a.channel);
        }
    }
    let sent = end.attempts.iter().filter(|a| a.sent).count();
    let status = if sent > 0 {
        "sent"
    } else {
        match end.outcome.as_str() {
            "suppressed" | "cancelled" => end.outcome.as_str(),
            _ => "failed",
        }
    };
    Row {
        tenant: e.tenant.as_str().to_string(),
        at_ms: e.occurred_at_ms,
        values: Values::Notification(NotificationRow {
            notification_id: end.notification_id.clone(),
            workflow_id: end.workflow_id.clone(),
            workflow_version: end.workflow_version as i32,
            subscriber_id: end.subscriber_id.clone(),
            status: status.into(),
            outcome: end.outcome.clone(),
            reason: crate::pii::scrub(&end.reason),
            last_step: end.step.clone(),
            channel_path: path.join(">"),
            attempts: end.attempts.len() as i32,
            sent_attempts: sent as i32,
            first_attempt_at: end.attempts.iter().map(|a| a.at_ms).min(),
            last_attempt_at: end.attempts.iter().map(|a| a.at_ms).max(),
            ended_at: e.occurred_at_ms,
        }),
    }
}

/// The engagement row of an `EngagementRecorded`.
pub fn engagement_row(e: &Event, g: &pb::EngagementRecorded) -> Row {
    Row {
        tenant: e.tenant.as_str().to_string(),
        at_ms: e.occurred_at_ms,
        values: Values::Engagement(EngagementRow {
            notification_id: g.notification_id.clone(),
            attempt_id: g.attempt_id.clone(),
            kind: g.kind.clone(),
            source: g.source.clone(),
            occurred_at: e.occurred_at_ms,
        }),
    }
}
