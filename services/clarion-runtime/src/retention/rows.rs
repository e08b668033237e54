//! The retention role's rows in `Table::Compliance`, each in its tenant's
//! partitions: the policy (pk [`POLICY_PK`], the `RetentionPolicySet`
//! event's payload), the holds in force (pk [`HOLDS_PK`], ck the hold id,
//! a [`HoldRow`]), the deferred erasures (pk [`DEFERRED_PK`], ck subscriber
//! id 0x00 request id, a [`Deferred`]), the tenant's next tick (pk
//! [`TICK_PK`]) and the shredding cursor (pk [`SHRED_CURSOR_PK`]).
//! The gateway reads them; only the retention processor (and its job, for
//! the cursor and executed deferrals) writes them.

use clarion_domain::compliance::holds::MAX_HOLDS;
use clarion_domain::compliance::{Hold, HoldBook, HoldScope, Policy};
use clarion_domain::Actor;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, StoreError, Table};
use prost::Message;
use serde::{Deserialize, Serialize};

pub const POLICY_PK: &str = "policy";
pub const HOLDS_PK: &str = "holds";
pub const DEFERRED_PK: &str = "deferred";
pub const TICK_PK: &str = "tick";
pub const SHRED_CURSOR_PK: &str = "shred-cursor";
/// Deferred erasures read per run of the job at most.
pub const DEFERRED_SCAN: usize = 10_000;

fn key(tenant: &str, pk: &str, ck: impl Into<Vec<u8>>) -> RowKey {
    RowKey::new(Table::Compliance, tenant, pk, ck)
}

pub fn policy_key(tenant: &str) -> RowKey {
    key(tenant, POLICY_PK, Vec::new())
}

pub fn hold_key(tenant: &str, hold_id: &str) -> RowKey {
    key(tenant, HOLDS_PK, hold_id.as_bytes().to_vec())
}

pub fn tick_key(tenant: &str) -> RowKey {
    key(tenant, TICK_PK, Vec::new())
}

pub fn shred_cursor_key(tenant: &str) -> RowKey {
    key(tenant, SHRED_CURSOR_PK, Vec::new())
}

pub fn deferred_key(tenant: &str, subscriber: &str, request_id: &str) -> RowKey {
    let mut ck = subscriber.as_bytes().to_vec();
    ck.push(0);
    ck.extend_from_slice(request_id.as_bytes());
    key(tenant, DEFERRED_PK, ck)
}

/// How an actor is named in holds and receipts (`api_key:k1`).
pub fn actor_label(a: &Actor) -> String {
    match a {
        Actor::ApiKey(id) => format!("api_key:{id}"),
        Actor::Operator(id) => format!("operator:{id}"),
        Actor::System(id) => format!("system:{id}"),
    }
}

/// The tenant's policy (the default, empty, when never set).
pub async fn policy(store: &dyn Store, tenant: &str) -> Result<Policy, StoreError> {
    Ok(match store.get(&policy_key(tenant)).await? {
        Some(b) => pb::RetentionPolicySet::decode(&b[..])
            .map(|e| Policy::from_event(&e))
            .unwrap_or_default(),
        None => Policy::default(),
    })
}

pub fn encode_policy(p: &pb::RetentionPolicySet) -> Vec<u8> {
    p.encode_to_vec()
}

/// A hold as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HoldRow {
    pub hold_id: String,
    pub subscriber_id: String,
    pub workflow_id: String,
    pub from_ms: i64,
    pub until_ms: i64,
    pub reason: String,
    pub actor: String,
    pub placed_at_ms: i64,
    /// 0: until released.
    pub expires_at_ms: i64,
}

impl HoldRow {
    pub fn of(h: &Hold) -> HoldRow {
        let s = h.scope.to_pb();
        HoldRow {
            hold_id: h.id.clone(),
            subscriber_id: s.subscriber_id,
            workflow_id: s.workflow_id,
            from_ms: s.from_ms,
            until_ms: s.until_ms,
            reason: h.reason.clone(),
            actor: h.actor.clone(),
            placed_at_ms: h.placed_at_ms,
            expires_at_ms: h.expires_at_ms.unwrap_or(0),
        }
    }

    pub fn hold(&self) -> Hold {
        Hold {
            id: self.hold_id.clone(),
            scope: HoldScope::from_pb(Some(&pb::HoldScope {
                subscriber_id: self.subscriber_id.clone(),
                workflow_id: self.workflow_id.clone(),
                from_ms: self.from_ms,
                until_ms: self.until_ms,
            })),
            reason: self.reason.clone(),
            actor: self.actor.clone(),
            placed_at_ms: self.placed_at_ms,
            expires_at_ms: (self.expires_at_ms != 0).then_some(self.expires_at_ms),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }
}

/// The tenant's holds not yet released.
pub async fn holds(store: &dyn Store, tenant: &str) -> Result<HoldBook, StoreError> {
    let rows = store
        .scan(&Scan::partition(
            Table::Compliance,
            tenant,
            HOLDS_PK,
            MAX_HOLDS + 1,
        ))
        .await?;
    let mut book = HoldBook::default();
    for (_, v) in rows {
        if let Ok(r) = serde_json::from_slice::<HoldRow>(&v) {
            book.holds.insert(r.hold_id.clone(), r.hold());
        }
    }
    Ok(book)
}

/// An erasure refused under a hold, waiting for its release.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Deferred {
    pub subscriber_id: String,
    pub request_id: String,
    pub hold_id: String,
    pub reason: String,
    pub actor: String,
    pub requested_at_ms: i64,
}

impl Deferred {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }
}

/// The tenant's deferred erasures, by subscriber.
pub async fn deferred(store: &dyn Store, tenant: &str) -> Result<Vec<Deferred>, StoreError> {
    let rows = store
        .scan(&Scan::partition(
            Table::Compliance,
            tenant,
            DEFERRED_PK,
            DEFERRED_SCAN,
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// The actor an [`actor_label`] names.
pub fn actor_of_label(label: &str) -> Actor {
    match label.split_once(':') {
        Some(("api_key", id)) => Actor::ApiKey(id.to_string()),
        Some(("operator", id)) => Actor::Operator(id.to_string()),
        Some(("system", id)) => Actor::System(id.to_string().into()),
        _ => Actor::System(label.to_string().into()),
    }
}
