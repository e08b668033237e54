//! Send windows and quiet hours' adapter (`recipient::timing` decides):
//! loads what a send's check reads — the windows of its step or workflow,
//! the subscriber's quiet hours (else the tenant's), the tenant's calendar
//! (default zone, holidays) and the recipient's zone — and applies the
//! subscriber's `QuietHoursSet` events (its row in `quiet_hours`).
//!
//! The spine stays free of reads: a send whose workflow has no windows, of
//! a tenant without quiet hours (cached, re-read at most every
//! `template_refresh`) and without subscriber settings on the partition
//! (`marks`), is decided without loading anything.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clarion_domain::flow::{Flow, SendSpec};
use clarion_domain::quiet::QuietHours;
use clarion_domain::recipient::timing::{self, Check, Gate, Scope, SendWindows};
use clarion_domain::recipient::{Map as FastMap, Pair};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::{time, Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};

use super::marks::Marks;
use super::{Router, RunRecord};
use crate::processor::{Batch, ProcessError};

/// A tenant's calendar: its default zone and holidays.
#[derive(Debug, Default)]
pub(super) struct Calendar {
    pub default_timezone: String,
    pub holidays: Vec<timing::NaiveDate>,
}

type Cached<T> = (Instant, Option<Arc<T>>);

/// The router's scheduling state: caches of tenant settings, subscribers'
/// quiet hours, and the release spread.
pub(super) struct Timing {
    tenant_quiet: FastMap<String, Cached<QuietHours>>,
    calendars: FastMap<String, Cached<Calendar>>,
    /// Subscribers' own quiet hours (`None`: none stored).
    subscriber_quiet: FastMap<(String, String), Option<Arc<QuietHours>>>,
    /// Tenants whose subscribers may have quiet-hours rows here.
    marks: Marks,
    /// Held sends are released within this long after quiet hours end.
    pub spread_ms: i64,
}

/// Default of `scheduling.release-spread`.
pub const DEFAULT_RELEASE_SPREAD_MS: i64 = 5 * 60_000;
const MAX_CACHED_QUIET: usize = 100_000;

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tenant_quiet: FastMap::default(),
            calendars: FastMap::default(),
            subscriber_quiet: FastMap::default(),
            marks: Marks::of(Table::QuietHours),
            spread_ms: DEFAULT_RELEASE_SPREAD_MS,
        }
    }
}

impl Timing {
    pub(super) async fn start_batch(&mut self, store: &dyn Store) -> Result<(), ProcessError> {
        if self.subscriber_quiet.len() >= MAX_CACHED_QUIET {
            self.subscriber_quiet.clear();
        }
        self.marks.read_once(store).await?;
        Ok(())
    }
}

/// The row of a subscriber's quiet hours: the `QuietHoursSet` as logged.
pub fn quiet_hours_key(tenant: &str, subscriber: &str) -> RowKey {
    RowKey::new(Table::QuietHours, tenant, subscriber, Vec::new())
}

/// What a send is checked against.
pub(super) struct SendAt<'a> {
    pub tenant: &'a str,
    pub rec: &'a RunRecord,
    pub spec: &'a SendSpec,
    pub step: &'a str,
    pub attempt_id: &'a str,
}

impl Router {
    /// Whether a send may go now (`Gate::Go`), waits, or is dropped.
    pub(super) async fn send_gate(
        &mut self,
        store: &dyn Store,
        batch: &Batch,
        flow: &Flow,
        send: SendAt<'_>,
        recipient: &mut Option<Subscriber>,
    ) -> Result<Gate, ProcessError> {
        let tenant = send.tenant;
        let specs = match send.spec.windows.is_empty() {
            true => &flow.def.windows,
            false => &send.spec.windows,
        };
        let windows = SendWindows::parse(specs);
        let quiet = self
            .quiet_hours(store, tenant, &send.rec.subscriber_id)
            .await?;
        if windows.is_none() && quiet.as_ref().is_none_or(|(q, _)| !q.enabled) {
            return Ok(Gate::Go { note: None });
        }
        let calendar = self.calendar(store, tenant).await?;
        let subscriber = match recipient {
            Some(s) => s,
            None => recipient.insert(self.recipient(store, tenant, send.rec).await?),
        };
        let default_zone = calendar
            .as_ref()
            .map_or("", |c| c.default_timezone.as_str());
        let zone = time::recipient_zone(&[subscriber.timezone.as_str(), default_zone]);
        let holidays = calendar.as_ref().map_or(&[][..], |c| &c.holidays[..]);
        Ok(timing::decide(&Check {
            now_ms: batch.now_ms,
            step: send.step,
            channel: &send.spec.channel,
            attempt_id: send.attempt_id,
            zone,
            windows: windows.as_ref(),
            holidays,
            quiet: quiet.as_ref().map(|(q, s)| (&**q, *s)),
            critical: send.rec.critical,
            spread_ms: self.timing.spread_ms,
        }))
    }

    /// The quiet hours that apply to a subscriber: its own, else the tenant's.
    async fn quiet_hours(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        subscriber: &str,
    ) -> Result<Option<(Arc<QuietHours>, Scope)>, ProcessError> {
        if self.timing.marks.has(tenant) {
            let own = match self.timing.subscriber_quiet.get(&Pair(tenant, subscriber)) {
                Some(q) => q.clone(),
                None => {
                    let q = store
                        .get(&quiet_hours_key(tenant, subscriber))
                        .await?
                        .and_then(|b| quiet_of(&b));
                    self.timing
                        .subscriber_quiet
                        .insert((tenant.to_string(), subscriber.to_string()), q.clone());
                    q
                }
            };
            if let Some(q) = own {
                return Ok(Some((q, Scope::Subscriber)));
            }
        }
        Ok(self
            .tenant_quiet(store, tenant)
            .await?
            .map(|q| (q, Scope::Tenant)))
    }

    /// The tenant's default quiet hours (latest version), cached like limits.
    async fn tenant_quiet(
        &mut self,
        store: &dyn Store,
        tenant: &str,
    ) -> Result<Option<Arc<QuietHours>>, ProcessError> {
        if let Some((at, q)) = self.timing.tenant_quiet.get(tenant) {
            if at.elapsed() < self.template_refresh {
                return Ok(q.clone());
            }
        }
        let q = crate::tenant_settings::tenant_quiet_hours(store, tenant)
            .await?
            .and_then(|q| QuietHours::from_event(&q).ok().map(Arc::new));
        self.timing
            .tenant_quiet
            .insert(tenant.to_string(), (Instant::now(), q.clone()));
        Ok(q)
    }

    /// The tenant's calendar (latest version), cached like limits.
    async fn calendar(
        &mut self,
        store: &dyn Store,
        tenant: &str,
    ) -> Result<Option<Arc<Calendar>>, ProcessError> {
        if let Some((at, c)) = self.timing.calendars.get(tenant) {
            if at.elapsed() < self.template_refresh {
                return Ok(c.clone());
            }
        }
        let c = crate::tenant_settings::calendar(store, tenant)
            .await?
            .map(|c| {
                Arc::new(Calendar {
                    default_timezone: c.default_timezone,
                    holidays: c
                        .holidays
                        .iter()
                        .filter_map(|d| time::parse_date(d).ok())
                        .collect(),
                })
            });
        self.timing
            .calendars
            .insert(tenant.to_string(), (Instant::now(), c.clone()));
        Ok(c)
    }

    /// A subscriber's quiet hours replaced whole: its row (the event as
    /// logged), known at once to the sends that follow.
    pub(super) fn on_quiet_hours(&mut self, batch: &mut Batch, e: &Event, q: &pb::QuietHoursSet) {
        let tenant = e.tenant.as_str();
        batch.writes.put(
            quiet_hours_key(tenant, &q.subscriber_id),
            Bytes::from(e.encode()),
        );
        self.timing.marks.note(batch, tenant);
        let parsed = QuietHours::from_event(q).ok().map(Arc::new);
        self.timing
            .subscriber_quiet
            .insert((tenant.to_string(), q.subscriber_id.clone()), parsed);
    }
}

/// Quiet hours from a stored `QuietHoursSet` envelope (one that no longer
/// validates counts as none).
fn quiet_of(bytes: &[u8]) -> Option<Arc<QuietHours>> {
    match Event::decode(bytes).ok()?.payload {
        Payload::QuietHoursSet(q) => QuietHours::from_event(&q).ok().map(Arc::new),
        _ => None,
    }
}
