//! Reading the log: the tenant's notifications triggered in the range (and
//! in scope), with everything the log knows of them up to its end when the
//! export started.
//!
//! The recipient streams are read one after the other, every partition:
//! triggers first (a notification is in the export when its trigger is),
//! then the lifecycle, the send requests and the outcomes, kept only for
//! the notifications chosen. Reading starts at the first record appended
//! at or after `from` less [`SEEK_SLACK_MS`] (append times only grow per
//! partition; the slack covers clocks of appenders that differ), and ends
//! at each partition's end offset taken before reading.

use std::collections::HashMap;

use clarion_domain::event::Payload;
use clarion_domain::Event;
use clarion_log::EventLog;
use clarion_runtime::{Topic, Topics};

use crate::opener::OpenPersonal;
use crate::request::ExportRequest;
use crate::ExportError;

/// How far before `from` (by append time) reading starts.
pub const SEEK_SLACK_MS: i64 = 3_600_000;
/// Records per read.
const BATCH: usize = 2048;

/// The streams read, in order.
pub const STREAMS: [Topic; 4] = [
    Topic::Triggers,
    Topic::Notifications,
    Topic::Dispatch,
    Topic::Deliveries,
];

/// One partition of one stream to read: `[start, end)`.
#[derive(Clone, Debug)]
pub struct Span {
    pub topic: String,
    pub partition: u32,
    pub start: u64,
    pub end: u64,
}

/// What is read: every stream's partitions, and how many records in all.
pub async fn plan(
    log: &dyn EventLog,
    topics: &Topics,
    from_ms: i64,
) -> Result<(Vec<Span>, u64), ExportError> {
    let mut spans = Vec::new();
    let mut total = 0;
    for t in STREAMS {
        let topic = topics.name(t);
        for partition in 0..topics.partitions_of(t) {
            let end = log.end_offset(&topic, partition).await?;
            let start = offset_at(log, &topic, partition, from_ms - SEEK_SLACK_MS, end).await?;
            total += end - start;
            spans.push(Span {
                topic: topic.clone(),
                partition,
                start,
                end,
            });
        }
    }
    Ok((spans, total))
}

/// The first offset below `end` appended at or after `at_ms` (binary search).
async fn offset_at(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
    at_ms: i64,
    end: u64,
) -> Result<u64, ExportError> {
    let (mut lo, mut hi) = (0u64, end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match log.read(topic, partition, mid, 1).await?.first() {
            Some(r) if r.timestamp_ms < at_ms => lo = r.offset + 1,
            Some(_) => hi = mid,
            None => lo = hi,
        }
    }
    Ok(lo)
}

/// A send attempt as the log tells it.
#[derive(Clone, Debug, Default)]
pub struct Attempt {
    pub attempt_id: String,
    pub channel: String,
    pub provider: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub requested_at: Option<i64>,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub failed_reason: String,
}

impl Attempt {
    /// requested | sent | delivered | failed (a delivery is final).
    pub fn status(&self) -> &'static str {
        if self.delivered_at.is_some() {
            "delivered"
        } else if !self.failed_reason.is_empty() {
            "failed"
        } else if self.sent_at.is_some() {
            "sent"
        } else {
            "requested"
        }
    }
}

/// A notification as the log tells it.
#[derive(Clone, Debug, Default)]
pub struct Notification {
    pub notification_id: String,
    pub workflow_id: String,
    pub subscriber_id: String,
    pub triggered_at: i64,
    /// The run's outcome; empty: no end yet.
    pub outcome: String,
    /// Why it failed before a send (routing), or why the run ended so.
    pub reason: String,
    pub attempts: Vec<Attempt>,
    /// (attempt id, kind) in log order.
    pub engagement: Vec<(String, String)>,
}

impl Notification {
    fn attempt(&mut self, id: &str) -> &mut Attempt {
        match self.attempts.iter().position(|a| a.attempt_id == id) {
            Some(i) => &mut self.attempts[i],
            None => {
                self.attempts.push(Attempt {
                    attempt_id: id.to_string(),
                    ..Attempt::default()
                });
                self.attempts.last_mut().expect("just pushed")
            }
        }
    }
}

/// Gathers the notifications of one export.
pub struct Collector<'a> {
    req: &'a ExportRequest,
    opener: &'a dyn OpenPersonal,
    chosen: HashMap<String, Notification>,
}

impl<'a> Collector<'a> {
    pub fn new(req: &'a ExportRequest, opener: &'a dyn OpenPersonal) -> Collector<'a> {
        Collector {
            req,
            opener,
            chosen: HashMap::new(),
        }
    }

    /// Reads every span, telling `progress` of each batch's records.
    pub async fn read(
        &mut self,
        log: &dyn EventLog,
        spans: &[Span],
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), ExportError> {
        for s in spans {
            let mut at = s.start;
            while at < s.end {
                let max = BATCH.min((s.end - at) as usize);
                let recs = log.read(&s.topic, s.partition, at, max).await?;
                let Some(last) = recs.last() else { break };
                at = last.offset + 1;
                let n = recs.len() as u64;
                for r in recs.into_iter().take_while(|r| r.offset < s.end) {
                    let e = Event::decode_bytes(r.value).map_err(|e| {
                        ExportError::Poison(format!(
                            "{} p{} @{}: {e}",
                            s.topic, s.partition, r.offset
                        ))
                    })?;
                    if e.tenant == self.req.tenant {
                        self.apply(e).await?;
                    }
                }
                progress(n);
            }
        }
        Ok(())
    }

    /// The chosen notifications, by trigger time then id; attempts by
    /// request time.
    pub fn finish(self) -> Vec<Notification> {
        let mut out: Vec<Notification> = self.chosen.into_values().collect();
        out.sort_by(|a, b| {
            (a.triggered_at, &a.notification_id).cmp(&(b.triggered_at, &b.notification_id))
        });
        for n in &mut out {
            n.attempts.sort_by(|a, b| {
                (a.requested_at, &a.attempt_id).cmp(&(b.requested_at, &b.attempt_id))
            });
        }
        out
    }

    fn in_scope(&self, e: &Event, t: &clarion_proto::events::NotificationTriggered) -> bool {
        let r = self.req;
        e.occurred_at_ms >= r.from_ms
            && e.occurred_at_ms < r.until_ms
            && r.subscriber.as_ref().is_none_or(|s| *s == t.subscriber_id)
            && r.workflow.as_ref().is_none_or(|w| *w == t.workflow_id)
    }

    async fn apply(&mut self, mut e: Event) -> Result<(), ExportError> {
        if let Payload::Triggered(t) = &e.payload {
            if self.in_scope(&e, t) {
                self.chosen.insert(
                    t.notification_id.clone(),
                    Notification {
                        notification_id: t.notification_id.clone(),
                        workflow_id: t.workflow_id.clone(),
                        subscriber_id: t.subscriber_id.clone(),
                        triggered_at: e.occurred_at_ms,
                        ..Notification::default()
                    },
                );
            }
            return Ok(());
        }
        let Some(id) = e.payload.notification_id() else {
            return Ok(());
        };
        if !self.chosen.contains_key(id) {
            return Ok(());
        }
        let id = id.to_string();
        if matches!(e.payload, Payload::DispatchRequested(_)) {
            // Only what is exported is opened.
            self.opener
                .open_event(&mut e)
                .await
                .map_err(ExportError::Personal)?;
        }
        let n = self.chosen.get_mut(&id).expect("checked above");
        fold(n, &e);
        Ok(())
    }
}

/// What one event adds to its notification.
fn fold(n: &mut Notification, e: &Event) {
    let at = e.occurred_at_ms;
    match &e.payload {
        Payload::DispatchRequested(d) => {
            let a = n.attempt(&d.attempt_id);
            a.channel = d.channel.clone();
            a.to = d.to.clone();
            a.subject = d.subject.clone();
            a.body = d.body.clone();
            a.requested_at = Some(at);
            if a.provider.is_empty() {
                a.provider = d.provider.clone();
            }
        }
        Payload::Sent(s) => {
            let a = n.attempt(&s.attempt_id);
            a.sent_at.get_or_insert(at);
            set_provider(a, &s.provider);
        }
        Payload::Delivered(d) => {
            let a = n.attempt(&d.attempt_id);
            a.delivered_at.get_or_insert(at);
            set_provider(a, &d.provider);
        }
        Payload::Failed(f) if f.stage != "route" && !f.attempt_id.is_empty() => {
            let a = n.attempt(&f.attempt_id);
            a.failed_reason = f.reason.clone();
            set_provider(a, &f.provider);
        }
        Payload::Failed(f) => n.reason = f.reason.clone(),
        Payload::Engaged(g) => n.engagement.push((g.attempt_id.clone(), g.kind.clone())),
        Payload::Ended(end) => {
            n.outcome = end.outcome.clone();
            if n.reason.is_empty() && end.outcome != "completed" {
                n.reason = end.reason.clone();
            }
        }
        _ => {}
    }
}

fn set_provider(a: &mut Attempt, provider: &str) {
    if !provider.is_empty() {
        a.provider = provider.to_string();
    }
}
