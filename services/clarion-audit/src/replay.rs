//! `clarion audit replay`: what was known at a time, rebuilt from the log
//! alone.
//!
//! "Known at T" is what the log held at T: records appended at or before T
//! (the record's append time). Each is folded with the same domain code
//! the live system uses: preferences with `Preferences::apply` and the
//! contact-verification steps the router applies, workflow versions from
//! the config stream, and each notification's status with the projector's
//! `status_of` over its history. Personal fields are opened through an
//! [`Opener`] (the deployment's data keys): an erased subscriber's read
//! `[erased]`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion_domain::event::{Event, Payload};
use clarion_domain::ids::Id;
use clarion_domain::preferences::Preferences;
use clarion_domain::subscriber::Subscriber;
use clarion_log::{partition_for, EventLog, LogRecord};
use clarion_runtime::{Topic, Topics};
use serde::Serialize;

use crate::envelope::tenant_of;
use crate::walk::{Part, Walker};
use crate::{AuditError, Result};

/// A partition's records are read this far past `at` before stopping:
/// appends from several producers reach the log slightly out of time order.
const SKEW_MS: i64 = 60_000;

/// Opens the sealed personal fields of an event (in place).
#[async_trait::async_trait]
pub trait Opener: Send + Sync {
    async fn open_event(&self, event: &mut Event) -> std::result::Result<(), String>;
}

/// The deployment's personal-data keys (issue #32): erased fields read
/// `[erased]`, redacted bodies `[redacted]`.
#[async_trait::async_trait]
impl Opener for clarion_runtime::personal::Personal {
    async fn open_event(&self, event: &mut Event) -> std::result::Result<(), String> {
        clarion_runtime::personal::Personal::open_event(self, event)
            .await
            .map_err(|e| e.to_string())
    }
}

/// An opener for logs without sealed fields: leaves events as they are.
pub struct Plain;

#[async_trait::async_trait]
impl Opener for Plain {
    async fn open_event(&self, _event: &mut Event) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// What to rebuild.
#[derive(Clone, Debug)]
pub struct Query {
    pub tenant: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Only this subscriber's preferences, profile and notifications.
    pub subscriber: Option<String>,
}

/// A workflow as known at the time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkflowState {
    /// The version in force (the latest published).
    pub version: u32,
    /// Every version published up to then, in order.
    pub versions: Vec<u32>,
    pub published_at_ms: i64,
}

/// A notification as known at the time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotificationState {
    pub workflow_id: String,
    pub subscriber_id: String,
    /// As the notification APIs derive it from the history.
    pub status: String,
    pub events: usize,
    pub last_event_type: String,
    pub updated_at_ms: i64,
}

/// A subscriber's profile as known at the time (personal fields opened).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub email: String,
    pub phone: String,
    pub locale: String,
    pub timezone: String,
}

/// The state rebuilt.
#[derive(Clone, Debug, Default, Serialize)]
pub struct State {
    pub tenant: String,
    pub at_ms: i64,
    pub subscribers: BTreeMap<String, Profile>,
    pub preferences: BTreeMap<String, Preferences>,
    pub workflows: BTreeMap<String, WorkflowState>,
    pub notifications: BTreeMap<String, NotificationState>,
    /// Records read, and the tenant's events applied.
    pub records_read: u64,
    pub events_applied: u64,
    #[serde(skip)]
    pub elapsed: Duration,
}

impl State {
    pub fn events_per_s(&self) -> f64 {
        self.records_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A replay over a deployment's log.
pub struct Replay {
    pub log: Arc<dyn EventLog>,
    pub topics: Topics,
    pub opener: Arc<dyn Opener>,
    pub query: Query,
}

impl Replay {
    /// The partitions holding the tenant's (or the subscriber's) events.
    pub fn parts(&self) -> Vec<Part> {
        let q = &self.query;
        let cfg = partition_for(&q.tenant, self.topics.partitions_of(Topic::Config));
        let mut out = vec![self.part(Topic::Config, cfg)];
        let recipient = q
            .subscriber
            .as_ref()
            .map(|s| partition_for(&format!("{}/{s}", q.tenant), self.topics.partitions));
        for t in [
            Topic::Triggers,
            Topic::Notifications,
            Topic::Dispatch,
            Topic::Deliveries,
        ] {
            match recipient {
                Some(p) => out.push(self.part(t, p)),
                None => out.extend((0..self.topics.partitions_of(t)).map(|p| self.part(t, p))),
            }
        }
        out
    }

    fn part(&self, t: Topic, partition: u32) -> Part {
        Part {
            name: self.topics.name(t),
            base: t.base_name(),
            partition,
        }
    }

    /// Records to read, for a progress bar.
    pub async fn total(&self) -> Result<u64> {
        let mut total = 0;
        for p in self.parts() {
            total += self.log.end_offset(&p.name, p.partition).await?;
        }
        Ok(total)
    }

    /// Rebuilds the state; `progress` hears of records read.
    pub async fn run(&self, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<State> {
        let started = Instant::now();
        let mut fold = Fold::new(&self.query);
        for part in self.parts() {
            let end = self.log.end_offset(&part.name, part.partition).await?;
            if end == 0 {
                continue;
            }
            let mut walker = Walker::open(&*self.log, &part, 0, end).await?;
            'part: while let Some(batch) = walker.next().await? {
                progress(batch.len() as u64);
                for r in &batch {
                    fold.state.records_read += 1;
                    if r.timestamp_ms > self.query.at_ms + SKEW_MS {
                        break 'part;
                    }
                    if let Some(e) = fold.wanted(r)? {
                        fold.apply(e, &*self.opener).await?;
                    }
                }
            }
        }
        let mut state = fold.finish();
        state.elapsed = started.elapsed();
        Ok(state)
    }
}

/// The state being rebuilt, with each notification's history.
struct Fold<'q> {
    query: &'q Query,
    state: State,
    seen: HashSet<Id>,
    histories: BTreeMap<String, Vec<Event>>,
}

impl<'q> Fold<'q> {
    fn new(query: &'q Query) -> Fold<'q> {
        Fold {
            query,
            state: State {
                tenant: query.tenant.clone(),
                at_ms: query.at_ms,
                ..State::default()
            },
            seen: HashSet::new(),
            histories: BTreeMap::new(),
        }
    }

    /// The record's event if it is the tenant's (and subscriber's), known
    /// at the time, and not a repeat.
    fn wanted(&mut self, r: &LogRecord) -> Result<Option<Event>> {
        let q = self.query;
        if r.timestamp_ms > q.at_ms || tenant_of(&r.value) != Some(q.tenant.as_str()) {
            return Ok(None);
        }
        let e = Event::decode(&r.value).map_err(|e| AuditError::Row {
            what: format!("log record at offset {}", r.offset),
            reason: e.to_string(),
        })?;
        if let Some(s) = &q.subscriber {
            let of = e.partition_key.split_once('/').map(|(_, s)| s);
            let config = e.partition_key == q.tenant;
            if !config && of != Some(s.as_str()) {
                return Ok(None);
            }
        }
        Ok(self.seen.insert(e.id).then_some(e))
    }

    async fn apply(&mut self, mut e: Event, opener: &dyn Opener) -> Result<()> {
        self.state.events_applied += 1;
        let tenant = self.query.tenant.clone();
        if let Some(id) = e.payload.notification_id() {
            let id = id.to_string();
            self.histories.entry(id).or_default().push(e);
            return Ok(());
        }
        match &e.payload {
            Payload::WorkflowPublished(wf) => {
                let w = self
                    .state
                    .workflows
                    .entry(wf.workflow_id.clone())
                    .or_default();
                w.version = wf.version;
                w.versions.push(wf.version);
                w.published_at_ms = e.occurred_at_ms;
            }
            Payload::SubscriberUpserted(_) => {
                opener
                    .open_event(&mut e)
                    .await
                    .map_err(|reason| AuditError::Row {
                        what: format!("event {}", e.id.to_hex()),
                        reason,
                    })?;
                let Payload::SubscriberUpserted(s) = &e.payload else {
                    unreachable!("matched above")
                };
                let s = Subscriber::from_event(s);
                if let Some(p) = self.state.preferences.get_mut(&s.subscriber_id) {
                    p.profile_upserted(&s);
                }
                self.state.subscribers.insert(
                    s.subscriber_id.clone(),
                    Profile {
                        email: s.email,
                        phone: s.phone,
                        locale: s.locale,
                        timezone: s.timezone,
                    },
                );
            }
            Payload::PreferencesChanged(p) => self.prefs(&p.subscriber_id).apply(p),
            Payload::ContactChanged(c) => self.prefs(&c.subscriber_id).contact_changed(&tenant, c),
            Payload::ContactVerified(v) => self.prefs(&v.subscriber_id).contact_verified(v),
            Payload::ContactVerificationFailed(f) => {
                self.prefs(&f.subscriber_id).verification_failed(f)
            }
            _ => {}
        }
        Ok(())
    }

    fn prefs(&mut self, subscriber: &str) -> &mut Preferences {
        self.state
            .preferences
            .entry(subscriber.to_string())
            .or_default()
    }

    fn finish(mut self) -> State {
        for (id, mut events) in std::mem::take(&mut self.histories) {
            clarion_runtime::projector::sort_history(&mut events);
            let Some(triggered) = events.iter().find_map(|e| match &e.payload {
                Payload::Triggered(t) => Some(t),
                _ => None,
            }) else {
                continue; // outcomes of a notification triggered after the time
            };
            let last = events.last().expect("a history has its trigger");
            let n = NotificationState {
                workflow_id: triggered.workflow_id.clone(),
                subscriber_id: triggered.subscriber_id.clone(),
                status: clarion_runtime::projector::status_of(&events).to_string(),
                events: events.len(),
                last_event_type: last.event_type().to_string(),
                updated_at_ms: last.occurred_at_ms,
            };
            self.state.notifications.insert(id, n);
        }
        self.state
    }
}
