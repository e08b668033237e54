//! One exported row: one send attempt of a notification (or the
//! notification alone when it never reached a send), personal fields
//! already masked.

use serde::Serialize;

/// The columns, in file order (JSON Lines keys and the Parquet schema).
pub const COLUMNS: [&str; 18] = [
    "watermark",
    "notification_id",
    "attempt_id",
    "workflow_id",
    "subscriber_id",
    "channel",
    "provider",
    "to",
    "subject",
    "body",
    "status",
    "notification_status",
    "triggered_at",
    "requested_at",
    "sent_at",
    "delivered_at",
    "failed_reason",
    "engagement",
];

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExportRow {
    pub watermark: String,
    pub notification_id: String,
    pub attempt_id: String,
    pub workflow_id: String,
    pub subscriber_id: String,
    pub channel: String,
    pub provider: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// The attempt's: requested | sent | delivered | failed; without an
    /// attempt, the notification's status.
    pub status: String,
    /// The run's: completed | cancelled | dead_lettered | suppressed |
    /// in_progress (no end in the log yet).
    pub notification_status: String,
    /// Times in ms (JSON Lines: RFC 3339; Parquet: UTC timestamps).
    #[serde(serialize_with = "time")]
    pub triggered_at: Option<i64>,
    #[serde(serialize_with = "time")]
    pub requested_at: Option<i64>,
    #[serde(serialize_with = "time")]
    pub sent_at: Option<i64>,
    #[serde(serialize_with = "time")]
    pub delivered_at: Option<i64>,
    pub failed_reason: String,
    /// Engagement kinds in order, comma-separated (`opened,clicked`).
    pub engagement: String,
}

fn time<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(ms) => s.serialize_str(&crate::watermark::rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

use crate::collect::{Attempt, Notification};
use crate::mask::{Masker, Target};

/// The rows of one notification: one per attempt, or one alone.
pub fn rows_of(n: &Notification, masker: &Masker, watermark: &str) -> Vec<ExportRow> {
    let notification_status = if n.outcome.is_empty() {
        "in_progress".to_string()
    } else {
        n.outcome.clone()
    };
    let base = ExportRow {
        watermark: watermark.to_string(),
        notification_id: n.notification_id.clone(),
        workflow_id: n.workflow_id.clone(),
        subscriber_id: masker.apply(Target::Subscriber, &n.subscriber_id),
        notification_status: notification_status.clone(),
        triggered_at: Some(n.triggered_at),
        ..ExportRow::default()
    };
    if n.attempts.is_empty() {
        let status = if n.reason.is_empty() {
            notification_status
        } else {
            "failed".to_string()
        };
        return vec![ExportRow {
            status,
            failed_reason: n.reason.clone(),
            engagement: all_kinds(n),
            ..base
        }];
    }
    let last = n.attempts.len() - 1;
    n.attempts
        .iter()
        .enumerate()
        .map(|(i, a)| attempt_row(&base, n, a, masker, i == last))
        .collect()
}

fn attempt_row(
    base: &ExportRow,
    n: &Notification,
    a: &Attempt,
    masker: &Masker,
    last: bool,
) -> ExportRow {
    // Engagement naming no attempt of the export goes with the last one.
    let unmatched = last.then_some(&n.attempts[..]);
    ExportRow {
        attempt_id: a.attempt_id.clone(),
        channel: a.channel.clone(),
        provider: a.provider.clone(),
        to: masker.apply(Target::of_address(&a.channel, &a.to), &a.to),
        subject: masker.apply(Target::Subject, &a.subject),
        body: masker.apply(Target::Body, &a.body),
        status: a.status().to_string(),
        requested_at: a.requested_at,
        sent_at: a.sent_at,
        delivered_at: a.delivered_at,
        failed_reason: a.failed_reason.clone(),
        engagement: kinds_of_attempt(n, &a.attempt_id, unmatched),
        ..base.clone()
    }
}

fn kinds_of_attempt(n: &Notification, id: &str, unmatched_of: Option<&[Attempt]>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (aid, kind) in &n.engagement {
        let orphan = unmatched_of.is_some_and(|all| !all.iter().any(|a| &a.attempt_id == aid));
        if aid == id || orphan {
            out.push(kind);
        }
    }
    out.join(",")
}

fn all_kinds(n: &Notification) -> String {
    n.engagement
        .iter()
        .map(|(_, k)| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
