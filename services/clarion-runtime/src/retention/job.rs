//! The retention job: the retention processor's effects. Each run applies
//! one tenant's retention at the runtime clock's time. Destroying a key
//! twice is harmless, so a run repeated after a crash does no harm, and
//! the events it appends have ids fixed by what they report.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use clarion_domain::compliance::{due_body_keys, BodyKey, HoldBook, Policy};
use clarion_domain::ids::tenant_key;
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_log::EventLog;
use clarion_proto::events as pb;
use clarion_store::{Scan, Store, Table, WriteBatch};

use super::erasure::{self, erase, subject, subject_of, ErasureError, Request};
use super::processor::{Work, RETENTION};
use super::rows::{self, Deferred};
use super::shredder::Shredder;
use crate::notification_index::{self, day_pk};
use crate::processor::{Effects, Emit};
use crate::subscriber_index;
use crate::{Topic, Topics};

/// How far back the first shredding run looks for activity (days).
const FIRST_LOOKBACK_DAYS: i64 = 3_660;
/// Notifications read per day of the tenant's index when shredding.
const DAY_SCAN: usize = 100_000;

/// Runs the retention processor's effects.
pub struct RetentionJob {
    store: Arc<dyn Store>,
    log: Arc<dyn EventLog>,
    topics: Topics,
    keys: Arc<dyn Shredder>,
}

/// What one run did, for the summary event.
#[derive(Default)]
struct Counts {
    held_back: u64,
    shredded: u64,
    executed: u64,
}

impl RetentionJob {
    pub fn new(
        store: Arc<dyn Store>,
        log: Arc<dyn EventLog>,
        topics: Topics,
        keys: Arc<dyn Shredder>,
    ) -> RetentionJob {
        RetentionJob {
            store,
            log,
            topics,
            keys,
        }
    }

    /// One tenant's run at `now`: bodies, deferred erasures, shredding.
    pub async fn apply(&self, tenant: &TenantId, now_ms: i64) -> Result<Vec<Emit>, ErasureError> {
        let t = tenant.as_str();
        let policy = rows::policy(&*self.store, t).await?;
        let book = rows::holds(&*self.store, t).await?;
        let mut emits = Vec::new();
        let mut counts = Counts::default();
        // Each part on its own: a failure of one (reported, retried on the
        // next tick) does not hold the others back.
        let parts = [
            self.redact(tenant, &policy, &book, now_ms, &mut emits, &mut counts)
                .await,
            self.run_deferred(tenant, &book, now_ms, &mut counts).await,
            self.shred_inactive(tenant, &policy, &book, now_ms, &mut counts)
                .await,
        ];
        for e in parts.into_iter().filter_map(Result::err) {
            metrics::counter!("clarion_retention_errors_total").increment(1);
            tracing::warn!(tenant = t, error = %e, "retention: part of a run failed; retried on the next tick");
        }
        if counts.held_back + counts.shredded + counts.executed > 0 {
            let id = Id::derive(&[b"retention-run", t.as_bytes(), &now_ms.to_be_bytes()]);
            let summary = pb::RetentionApplied {
                subscribers_shredded: counts.shredded,
                held_back: counts.held_back,
                deferred_erasures_executed: counts.executed,
                ..Default::default()
            };
            emits.push(applied(tenant, id, now_ms, summary));
        }
        Ok(emits)
    }

    /// Destroys the body keys due, one `RetentionApplied` per key.
    async fn redact(
        &self,
        tenant: &TenantId,
        policy: &Policy,
        book: &HoldBook,
        now_ms: i64,
        emits: &mut Vec<Emit>,
        counts: &mut Counts,
    ) -> Result<(), ErasureError> {
        if policy.rules.is_empty() {
            return Ok(());
        }
        let existing: Vec<BodyKey> = self
            .keys
            .body_key_days(tenant)
            .await?
            .into_iter()
            .map(|(day, channel, country)| BodyKey {
                day,
                channel,
                country,
            })
            .collect();
        let due = due_body_keys(now_ms, policy, book, &existing);
        counts.held_back += due.held_back.len() as u64;
        for k in due.due {
            let n = self
                .keys
                .redact_bodies(tenant, k.day, &k.channel, &k.country)
                .await?;
            let day = k.day.format("%Y-%m-%d").to_string();
            let id = Id::derive(&[
                b"retention-redacted",
                tenant.as_str().as_bytes(),
                day.as_bytes(),
                k.channel.as_bytes(),
                k.country.as_bytes(),
            ]);
            let e = pb::RetentionApplied {
                day,
                channel: k.channel,
                country: k.country,
                bodies_redacted: n,
                ..Default::default()
            };
            emits.push(applied(tenant, id, now_ms, e));
        }
        Ok(())
    }

    /// Executes the deferred erasures no hold in force covers any more.
    async fn run_deferred(
        &self,
        tenant: &TenantId,
        book: &HoldBook,
        now_ms: i64,
        counts: &mut Counts,
    ) -> Result<(), ErasureError> {
        let t = tenant.as_str();
        for d in rows::deferred(&*self.store, t).await? {
            let found = subject_of(&*self.store, t, &d.subscriber_id).await?;
            if book
                .blocking_erasure(&subject(&d.subscriber_id, &found), now_ms)
                .is_some()
            {
                continue;
            }
            let actor = rows::actor_of_label(&d.actor);
            let req = Request {
                tenant,
                subscriber: &d.subscriber_id,
                request_id: &d.request_id,
                reason: &d.reason,
                actor: &actor,
                now_ms,
            };
            erase(&*self.keys, &*self.store, &*self.log, &self.topics, req).await?;
            let mut w = WriteBatch::new();
            w.delete(rows::deferred_key(t, &d.subscriber_id, &d.request_id));
            self.store.write(w).await?;
            counts.executed += 1;
        }
        Ok(())
    }

    /// The subscribers with a notification on the days since the cursor and
    /// before the cutoff (the router's day index of notifications: no write
    /// of its own on the hot path).
    async fn candidates(
        &self,
        t: &str,
        from: i64,
        to: i64,
    ) -> Result<BTreeSet<String>, ErasureError> {
        let mut out = BTreeSet::new();
        for day in from..to {
            let scan = Scan::partition(Table::NotificationIndex, t, &day_pk(day), DAY_SCAN);
            for (_, v) in self.store.scan(&scan).await? {
                if let Some(e) = notification_index::Entry::decode(&v) {
                    out.insert(e.subscriber_id);
                }
            }
        }
        Ok(out)
    }

    /// Shreds subscribers whose last notification is older than the
    /// policy's `shred_subscriber_after_days`; one a hold covers becomes a
    /// deferred erasure, run at the hold's release.
    async fn shred_inactive(
        &self,
        tenant: &TenantId,
        policy: &Policy,
        book: &HoldBook,
        now_ms: i64,
        counts: &mut Counts,
    ) -> Result<(), ErasureError> {
        let Some(cutoff) = policy.shred_cutoff_ms(now_ms) else {
            return Ok(());
        };
        let t = tenant.as_str();
        let to = notification_index::day_of(cutoff);
        let cursor_key = rows::shred_cursor_key(t);
        let from = match self.store.get(&cursor_key).await? {
            Some(b) if b.len() == 8 => i64::from_be_bytes(b[..].try_into().expect("8 bytes")),
            _ => to - FIRST_LOOKBACK_DAYS,
        };
        let actor = Actor::System(RETENTION.into());
        let reason = format!(
            "retention: no notification since {}",
            chrono::DateTime::from_timestamp_millis(cutoff)
                .map_or(String::new(), |d| d.to_rfc3339())
        );
        let mut w = WriteBatch::new();
        for sub in self.candidates(t, from, to).await? {
            let last = self
                .store
                .scan(&subscriber_index::newest_first(t, &sub, 1))
                .await?
                .first()
                .and_then(|(ck, _)| Id::parse_hex(&String::from_utf8_lossy(ck)))
                .map_or(0, |i| i.time_ms());
            if last >= cutoff {
                continue;
            }
            let request_id = format!("retention-{}-{sub}", notification_index::day_of(cutoff));
            let found = subject_of(&*self.store, t, &sub).await?;
            if let Some(h) = book.blocking_erasure(&subject(&sub, &found), now_ms) {
                let d = Deferred {
                    subscriber_id: sub.clone(),
                    request_id: request_id.clone(),
                    hold_id: h.id.clone(),
                    reason: reason.clone(),
                    actor: rows::actor_label(&actor),
                    requested_at_ms: now_ms,
                };
                w.put(rows::deferred_key(t, &sub, &request_id), d.encode());
                counts.held_back += 1;
                continue;
            }
            let req = erasure::Request {
                tenant,
                subscriber: &sub,
                request_id: &request_id,
                reason: &reason,
                actor: &actor,
                now_ms,
            };
            erase(&*self.keys, &*self.store, &*self.log, &self.topics, req).await?;
            counts.shredded += 1;
        }
        w.put(cursor_key, to.to_be_bytes().to_vec());
        self.store.write(w).await?;
        Ok(())
    }
}

/// A `RetentionApplied` on the tenant's config stream.
fn applied(tenant: &TenantId, id: Id, now_ms: i64, e: pb::RetentionApplied) -> Emit {
    Emit {
        topic: Topic::Config,
        event: Event {
            id,
            partition_key: tenant_key(tenant),
            tenant: tenant.clone(),
            occurred_at_ms: now_ms,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System(RETENTION.into()),
            payload: Payload::RetentionApplied(e),
        },
    }
}

#[async_trait]
impl Effects for RetentionJob {
    async fn run(&self, effect: &[u8], now_ms: i64) -> Vec<Emit> {
        let Some(Work::Apply { tenant }) = Work::decode(effect) else {
            tracing::warn!("retention: an effect it cannot read; skipped");
            return Vec::new();
        };
        let Ok(tid) = TenantId::parse(&tenant) else {
            return Vec::new();
        };
        match self.apply(&tid, now_ms).await {
            Ok(emits) => emits,
            Err(e) => {
                // Retried on the tenant's next tick.
                metrics::counter!("clarion_retention_errors_total").increment(1);
                tracing::warn!(tenant, error = %e, "retention run failed; retried on the next tick");
                Vec::new()
            }
        }
    }
}
