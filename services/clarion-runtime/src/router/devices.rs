//! Device events on the subscriber's stream, applied in order with that
//! subscriber's triggers (`recipient::devices` decides): each loads the
//! subscriber's devices (memory, else the store rows, else none when the
//! tenant has no devices on this partition), and a change writes the
//! device's row, the lookup row of a token it now holds and removes the
//! one of a token it gave up. A push send reads the same state: the app's
//! active, unexpired devices.
//!
//! Tokens stay sealed: rows and events hold them sealed, and logs name
//! devices by id (never a token, not even its hash).

use bytes::Bytes;
use clarion_domain::recipient::devices::{self, Decision, Input};
use clarion_domain::recipient::Event as RecipientEvent;
use clarion_domain::{Actor, Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{Op, RowKey, Scan, Store, Table};
use prost::Message;

use super::Router;
use crate::processor::{Batch, ProcessError};

/// Most devices read per subscriber.
const MAX_DEVICES: usize = 10_000;

/// A subscriber's device row (the device APIs read it).
pub fn device_key(tenant: &str, subscriber: &str, device: &str) -> RowKey {
    RowKey::new(
        Table::Devices,
        tenant,
        subscriber,
        device.as_bytes().to_vec(),
    )
}

/// The lookup row of a token by its keyed hash (lowercase hex): which
/// device holds it.
pub fn device_token_key(tenant: &str, token_hash: &[u8]) -> RowKey {
    use std::fmt::Write;
    let mut pk = String::with_capacity(token_hash.len() * 2);
    for b in token_hash {
        let _ = write!(pk, "{b:02x}");
    }
    RowKey::new(Table::DeviceTokens, tenant, &pk, Vec::new())
}

impl Router {
    /// One device event (any other payload is ignored).
    pub(super) async fn on_device_event(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
    ) -> Result<(), ProcessError> {
        let actor: String;
        let (subscriber, input) = match &e.payload {
            Payload::DeviceRegistered(p) => (&p.subscriber_id, Input::Registered(p)),
            Payload::DeviceTokenRotated(p) => (&p.subscriber_id, Input::Rotated(p)),
            Payload::DeviceRevoked(p) => {
                actor = revoked_by(e, p.origin.as_ref());
                let input = Input::Revoked {
                    event: p,
                    actor: &actor,
                };
                (&p.subscriber_id, input)
            }
            Payload::DeviceSeen(p) => (&p.subscriber_id, Input::Seen(p)),
            Payload::PushRejected(p) => (&p.subscriber_id, Input::Rejected(p)),
            _ => return Ok(()),
        };
        let tenant = e.tenant.as_str();
        self.load_devices(store, tenant, subscriber).await?;
        let known = self.recipients.devices.get(tenant, subscriber);
        match devices::decide(known.unwrap_or(&[]), input, e.occurred_at_ms) {
            Decision::Unchanged(why) => {
                tracing::debug!(
                    tenant,
                    subscriber = subscriber.as_str(),
                    event = %e.id,
                    kind = e.payload.event_type(),
                    why,
                    "device event changes nothing"
                );
            }
            Decision::Changed(c) => {
                self.apply_device_change(store, batch, tenant, subscriber, *c)
                    .await?
            }
        }
        Ok(())
    }

    /// Writes a device's change: its row, the token lookups, the tenant's
    /// mark; and keeps it for the sends that follow.
    async fn apply_device_change(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        tenant: &str,
        subscriber: &str,
        c: devices::Change,
    ) -> Result<(), ProcessError> {
        let device_id = c.device.device_id.clone();
        batch.writes.put(
            device_key(tenant, subscriber, &device_id),
            Bytes::from(c.device.encode_to_vec()),
        );
        if let Some(hash) = &c.token_dropped {
            // The token may have moved to another device since (a lookup
            // row names one device): only this device's row goes.
            let key = device_token_key(tenant, hash);
            if names(store, batch, &key, subscriber, &device_id).await? {
                batch.writes.delete(key);
            }
        }
        if let Some(hash) = &c.token_added {
            let key = device_token_key(tenant, hash);
            // A delete and a put of one row in one commit: only the put
            // (stores that order a batch by timestamp let a delete win).
            batch
                .writes
                .ops
                .retain(|op| !matches!(op, Op::Delete { key: k } if *k == key));
            let r = pb::DeviceRef {
                subscriber_id: subscriber.to_string(),
                device_id,
            };
            batch.writes.put(key, Bytes::from(r.encode_to_vec()));
        }
        self.device_marks.note(batch, tenant);
        self.recipients
            .evolve(RecipientEvent::DeviceChanged(Box::new(devices::Changed {
                tenant: tenant.to_string(),
                subscriber: subscriber.to_string(),
                device: c.device,
            })));
        Ok(())
    }

    /// Puts a subscriber's devices in memory (memory, else the store rows;
    /// none without a read when the tenant has no devices here).
    async fn load_devices(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        subscriber: &str,
    ) -> Result<(), ProcessError> {
        if self.recipients.devices.get(tenant, subscriber).is_some() {
            return Ok(());
        }
        let mut stored = Vec::new();
        if self.device_marks.has(tenant) {
            let scan = Scan::partition(Table::Devices, tenant, subscriber, MAX_DEVICES);
            for (ck, b) in store.scan(&scan).await? {
                match pb::DeviceRecord::decode(&b[..]) {
                    Ok(d) => stored.push(d),
                    Err(err) => tracing::warn!(
                        tenant,
                        subscriber,
                        device = %String::from_utf8_lossy(&ck),
                        %err,
                        "stored device does not decode; skipped"
                    ),
                }
            }
        }
        self.recipients.devices.load(tenant, subscriber, stored);
        Ok(())
    }

    /// Where a push of `app_id` to a subscriber goes at `now_ms`: its
    /// active devices of the app not seen longer ago than the expiry.
    pub(super) async fn push_targets(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        subscriber: &str,
        app_id: &str,
        now_ms: i64,
    ) -> Result<Vec<pb::PushTarget>, ProcessError> {
        if !self.device_marks.has(tenant) {
            return Ok(Vec::new()); // no devices of the tenant here: no read
        }
        self.load_devices(store, tenant, subscriber).await?;
        let known = self.recipients.devices.get(tenant, subscriber);
        Ok(devices::push_targets(
            known.unwrap_or(&[]),
            app_id,
            now_ms,
            self.device_expiry_ms,
        ))
    }
}

/// Whether a token's lookup row names the device, as it will be when the
/// batch commits (this batch's writes, else the store).
async fn names(
    store: &dyn Store,
    batch: &Batch,
    key: &RowKey,
    subscriber: &str,
    device: &str,
) -> Result<bool, ProcessError> {
    let pending = batch.writes.ops.iter().rev().find_map(|op| match op {
        Op::Put { key: k, value, .. } if k == key => Some(Some(value.clone())),
        Op::Delete { key: k } if k == key => Some(None),
        _ => None,
    });
    let row = match pending {
        Some(row) => row,
        None => store.get(key).await?,
    };
    Ok(row
        .and_then(|b| pb::DeviceRef::decode(&b[..]).ok())
        .is_some_and(|r| r.subscriber_id == subscriber && r.device_id == device))
}

/// Who revoked a device: the origin's actor, else the event's.
fn revoked_by(e: &Event, origin: Option<&pb::Origin>) -> String {
    match origin {
        Some(o) if !o.actor.is_empty() => o.actor.clone(),
        _ => match &e.actor {
            Actor::ApiKey(id) => format!("api_key:{id}"),
            Actor::Operator(name) => format!("operator:{name}"),
            Actor::System(name) => format!("system:{name}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_the_tenant_and_the_token_only_as_its_hash_in_hex() {
        let k = device_token_key("acme", &[0xAB, 0x01]);
        assert_eq!((k.tenant.as_str(), k.pk.as_str()), ("acme", "ab01"));
        assert_ne!(k, device_token_key("globex", &[0xAB, 0x01]));
        let d = device_key("acme", "sub-1", "d1");
        assert_eq!((d.pk.as_str(), d.ck.as_slice()), ("sub-1", &b"d1"[..]));
    }

    #[test]
    fn the_revoker_is_the_origins_actor_else_the_events() {
        let e = Event {
            id: clarion_domain::Id::derive(&[b"x"]),
            tenant: clarion_domain::TenantId::parse("acme").unwrap(),
            partition_key: "acme/s".into(),
            occurred_at_ms: 1,
            causation_id: None,
            correlation_id: None,
            actor: Actor::Operator("ops".into()),
            payload: Payload::DeviceSeen(Default::default()),
        };
        assert_eq!(revoked_by(&e, None), "operator:ops");
        let o = pb::Origin {
            interface: "rest".into(),
            actor: "subscriber:s".into(),
        };
        assert_eq!(revoked_by(&e, Some(&o)), "subscriber:s");
    }
}
