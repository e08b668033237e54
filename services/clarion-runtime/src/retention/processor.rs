//! The retention processor: the `config` topic's compliance events into
//! `Table::Compliance` rows, the tenant's tick as a timer, and the job's
//! work as effects (run after the commit by [`super::RetentionJob`]).

use std::collections::HashSet;

use async_trait::async_trait;
use clarion_domain::compliance::{Hold, HoldBook};
use clarion_domain::ids::tenant_key;
use clarion_domain::{Actor, Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_store::Store;
use serde::{Deserialize, Serialize};

use super::rows::{self, actor_label, Deferred, HoldRow};
use crate::processor::{Batch, Emit, Input, ProcessError, Processor};
use crate::Topic;

/// The processor's name (offsets, dedup, outbox, timers).
pub const RETENTION: &str = "retention";

/// The work of one effect.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Work {
    /// Apply the tenant's retention and run the deferred erasures that no
    /// hold covers any more.
    Apply { tenant: String },
}

impl Work {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Work> {
        serde_json::from_slice(b).ok()
    }
}

pub struct RetentionProcessor {
    /// Time between a tenant's retention runs.
    tick_ms: i64,
}

impl RetentionProcessor {
    pub fn new(tick_ms: i64) -> RetentionProcessor {
        RetentionProcessor {
            tick_ms: tick_ms.max(1000),
        }
    }

    /// Schedules the tenant's next tick at `due` (its id fixed by the
    /// tenant and time: scheduled twice, it is one timer).
    fn schedule(&self, batch: &mut Batch, e: &Event, due: i64) {
        let tenant = e.tenant.as_str();
        let event = Event {
            id: Id::derive(&[b"retention-tick", tenant.as_bytes(), &due.to_be_bytes()]),
            partition_key: tenant_key(&e.tenant),
            tenant: e.tenant.clone(),
            occurred_at_ms: due,
            causation_id: Some(e.id),
            correlation_id: None,
            actor: Actor::System(RETENTION.into()),
            payload: Payload::RetentionTick(pb::RetentionTick { due_ms: due }),
        };
        batch
            .writes
            .put(rows::tick_key(tenant), due.to_be_bytes().to_vec());
        batch.timers.push((
            due,
            Emit {
                topic: Topic::Config,
                event,
            },
        ));
    }

    /// Starts the tenant's ticks unless they run (or were started in this
    /// batch).
    async fn ensure_ticking(
        &self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        started: &mut HashSet<String>,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        if started.contains(tenant) || store.get(&rows::tick_key(tenant)).await?.is_some() {
            return Ok(());
        }
        started.insert(tenant.to_string());
        self.schedule(batch, e, batch.now_ms + self.tick_ms);
        Ok(())
    }

    /// A tick of the tenant's current chain runs the job and schedules the
    /// next; a tick of an older chain (none should exist) is dropped.
    async fn on_tick(
        &self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        t: &pb::RetentionTick,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        let current = store
            .get(&rows::tick_key(tenant))
            .await?
            .and_then(|b| b[..].try_into().ok().map(i64::from_be_bytes));
        if current.is_some_and(|c| c != t.due_ms) {
            return Ok(());
        }
        apply(batch, tenant);
        self.schedule(batch, e, batch.now_ms.max(t.due_ms) + self.tick_ms);
        Ok(())
    }
}

fn apply(batch: &mut Batch, tenant: &str) {
    let work = Work::Apply {
        tenant: tenant.to_string(),
    };
    batch.effects.push(work.encode().into());
}

/// Records a hold placed, extended or released; a release runs the job.
async fn on_hold(store: &dyn Store, batch: &mut Batch, e: &Event) -> Result<(), ProcessError> {
    let tenant = e.tenant.as_str();
    match &e.payload {
        Payload::LegalHoldPlaced(p) => {
            let mut book = HoldBook::default();
            book.placed(p, &actor_label(&e.actor), e.occurred_at_ms);
            let hold: &Hold = &book.holds[&p.hold_id];
            batch.writes.put(
                rows::hold_key(tenant, &p.hold_id),
                HoldRow::of(hold).encode(),
            );
        }
        Payload::LegalHoldExtended(x) => {
            let key = rows::hold_key(tenant, &x.hold_id);
            let Some(b) = store.get(&key).await? else {
                return Ok(());
            };
            if let Ok(mut row) = serde_json::from_slice::<HoldRow>(&b) {
                row.expires_at_ms = x.expires_at_ms;
                batch.writes.put(key, row.encode());
            }
        }
        Payload::LegalHoldReleased(r) => {
            batch.writes.delete(rows::hold_key(tenant, &r.hold_id));
            apply(batch, tenant);
        }
        _ => {}
    }
    Ok(())
}

fn on_deferred(batch: &mut Batch, e: &Event, d: &pb::ErasureDeferred) {
    let row = Deferred {
        subscriber_id: d.subscriber_id.clone(),
        request_id: d.request_id.clone(),
        hold_id: d.hold_id.clone(),
        reason: d.reason.clone(),
        actor: actor_label(&e.actor),
        requested_at_ms: e.occurred_at_ms,
    };
    batch.writes.put(
        rows::deferred_key(e.tenant.as_str(), &d.subscriber_id, &d.request_id),
        row.encode(),
    );
}

#[async_trait]
impl Processor for RetentionProcessor {
    fn name(&self) -> &'static str {
        RETENTION
    }

    fn uses_timers(&self) -> bool {
        true
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut started = HashSet::new();
        for input in inputs {
            let e = &input.event;
            match &e.payload {
                Payload::RetentionPolicySet(p) => {
                    batch
                        .writes
                        .put(rows::policy_key(e.tenant.as_str()), rows::encode_policy(p));
                    self.ensure_ticking(store, batch, e, &mut started).await?;
                }
                Payload::LegalHoldPlaced(_)
                | Payload::LegalHoldExtended(_)
                | Payload::LegalHoldReleased(_) => on_hold(store, batch, e).await?,
                Payload::ErasureDeferred(d) => {
                    on_deferred(batch, e, d);
                    // Expiring holds are noticed on the ticks.
                    self.ensure_ticking(store, batch, e, &mut started).await?;
                }
                Payload::RetentionTick(t) => self.on_tick(store, batch, e, t).await?,
                _ => {}
            }
        }
        Ok(())
    }
}
