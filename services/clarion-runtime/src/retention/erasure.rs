//! A subscriber's erasure (GDPR art. 17): their data key is destroyed, so
//! every personal field sealed under it — in the log, the projections,
//! backups — reads `[erased]`; the facts (counts, times, statuses) stay.
//! What was destroyed is told in a [`Receipt`], returned to the caller and
//! kept in the `SubscriberErased` event (which holds no personal data).
//!
//! The gateway runs it for a request no hold covers; the retention job for
//! a deferred request once its hold is gone, and for a subscriber inactive
//! past the policy.

use clarion_domain::compliance::Subject;
use clarion_domain::event::Actor;
use clarion_domain::ids::recipient_key;
use clarion_domain::{Event, Id, Payload, TenantId};
use clarion_log::EventLog;
use clarion_proto::events as pb;
use clarion_store::{Scan, Store, StoreError, Table};
use serde::{Deserialize, Serialize};

use super::shredder::{Shredder, ShredderError};
use crate::processor::{Emit, ProcessError};
use crate::subscriber_index::{self, Entry};
use crate::{Topic, Topics};

/// Notifications of a subscriber looked at for the holds, newest first.
pub const SUBJECT_SCAN: usize = 10_000;
/// Rows counted per projection at most (a receipt says "at least" past it).
const COUNT_LIMIT: usize = 100_000;

/// What an erasure destroyed and what it made unreadable.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Receipt {
    pub subscriber_id: String,
    pub request_id: String,
    /// ms since the epoch.
    pub erased_at_ms: i64,
    /// The data key generations destroyed (empty: the subscriber had none).
    pub key_generations_destroyed: Vec<u32>,
    /// Rows whose personal fields are now unreadable, per kind.
    pub notifications: u64,
    pub inbox_items: u64,
    pub devices: u64,
    pub preference_history: u64,
    /// The projections holding such rows.
    pub projections_touched: Vec<String>,
    /// Who asked, and why.
    pub actor: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] ShredderError),
    #[error(transparent)]
    Log(#[from] ProcessError),
}

/// The subscriber's notifications as (workflow, creation time), newest
/// first, for the holds' judgement.
pub async fn subject_of(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
) -> Result<(Vec<(String, i64)>, bool), StoreError> {
    let rows = store
        .scan(&subscriber_index::newest_first(
            tenant,
            subscriber,
            SUBJECT_SCAN + 1,
        ))
        .await?;
    let truncated = rows.len() > SUBJECT_SCAN;
    let list = rows
        .into_iter()
        .take(SUBJECT_SCAN)
        .map(|(ck, v)| {
            let id = String::from_utf8_lossy(&ck).into_owned();
            let at = Id::parse_hex(&id).map_or(0, |i| i.time_ms());
            (
                Entry::decode(&v).map(|e| e.workflow_id).unwrap_or_default(),
                at,
            )
        })
        .collect();
    Ok((list, truncated))
}

/// Borrows a subject from [`subject_of`]'s answer.
pub fn subject<'a>(subscriber: &'a str, found: &'a (Vec<(String, i64)>, bool)) -> Subject<'a> {
    Subject {
        subscriber,
        notifications: &found.0,
        truncated: found.1,
    }
}

async fn count(store: &dyn Store, table: Table, tenant: &str, pk: &str) -> Result<u64, StoreError> {
    let scan = Scan::partition(table, tenant, pk, COUNT_LIMIT);
    Ok(store.scan(&scan).await?.len() as u64)
}

/// Fills the receipt's counts: the rows stay, unreadable.
async fn counts(
    store: &dyn Store,
    tenant: &str,
    sub: &str,
    r: &mut Receipt,
) -> Result<(), StoreError> {
    let kinds = [
        (Table::SubscriberNotifications, &mut r.notifications),
        (Table::InboxItems, &mut r.inbox_items),
        (Table::Devices, &mut r.devices),
        (Table::PreferenceHistory, &mut r.preference_history),
    ];
    for (table, n) in kinds {
        *n = count(store, table, tenant, sub).await?;
        if *n > 0 {
            r.projections_touched.push(table.name().to_string());
        }
    }
    if store
        .get(&clarion_store::RowKey::new(
            Table::Subscribers,
            tenant,
            sub,
            Vec::new(),
        ))
        .await?
        .is_some()
    {
        r.projections_touched
            .push(Table::Subscribers.name().to_string());
    }
    Ok(())
}

/// One erasure to run.
pub struct Request<'a> {
    pub tenant: &'a TenantId,
    pub subscriber: &'a str,
    pub request_id: &'a str,
    pub reason: &'a str,
    pub actor: &'a Actor,
    pub now_ms: i64,
}

/// Destroys the subscriber's data key and appends `SubscriberErased` (on
/// the subscriber's stream, its id fixed by the request: a repeat after a
/// crash is deduplicated). Holds are the caller's to check first.
pub async fn erase(
    keys: &dyn Shredder,
    store: &dyn Store,
    log: &dyn EventLog,
    topics: &Topics,
    req: Request<'_>,
) -> Result<Receipt, ErasureError> {
    let tenant = req.tenant.as_str();
    let mut receipt = Receipt {
        subscriber_id: req.subscriber.to_string(),
        request_id: req.request_id.to_string(),
        erased_at_ms: req.now_ms,
        actor: super::rows::actor_label(req.actor),
        reason: req.reason.to_string(),
        ..Receipt::default()
    };
    counts(store, tenant, req.subscriber, &mut receipt).await?;
    receipt.key_generations_destroyed = keys.erase_subscriber(req.tenant, req.subscriber).await?;
    let event = Event {
        id: Id::derive(&[b"erasure", tenant.as_bytes(), req.request_id.as_bytes()]),
        partition_key: recipient_key(req.tenant, req.subscriber),
        tenant: req.tenant.clone(),
        occurred_at_ms: req.now_ms,
        causation_id: None,
        correlation_id: None,
        actor: req.actor.clone(),
        payload: Payload::SubscriberErased(pb::SubscriberErased {
            subscriber_id: req.subscriber.to_string(),
            request_id: req.request_id.to_string(),
            generations: receipt.key_generations_destroyed.clone(),
            receipt_json: serde_json::to_string(&receipt).expect("serializable"),
            reason: req.reason.to_string(),
        }),
    };
    let emit = Emit {
        topic: Topic::Triggers,
        event,
    };
    crate::runner::publish(log, topics, &[emit]).await?;
    metrics::counter!("clarion_subscribers_erased_total").increment(1);
    Ok(receipt)
}
