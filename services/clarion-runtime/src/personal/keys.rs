//! The keys personal data is sealed under, as stored (`Table::DataKeys`).
//!
//! Each subscriber has data keys by generation (pk `s/<subscriber>`, ck the
//! big-endian generation); the tenant has body keys by day, channel and
//! country (pk `bodies`, ck `<yyyymmdd>/<channel>/<country>`, so one scan
//! lists them oldest first for the retention job). A key is 32 random bytes
//! wrapped by the master keyring with its tenant, owner and generation bound
//! as associated data; destroying one writes an empty value in its place
//! (a tombstone): a later message of a redacted day must not make the key
//! again, and an erased subscriber's next key takes the next generation.

use std::sync::Arc;

use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;
use bytes::Bytes;
use clarion_store::{RowKey, Scan, Store, Table};

use crate::secrets::{Keyring, KeyringError};

pub(super) const BODIES_PK: &str = "bodies";

/// One key, ready to use.
pub struct Key {
    pub(super) raw: [u8; 32],
    pub(super) cipher: Aes256Gcm,
}

impl Key {
    pub(super) fn new(raw: [u8; 32]) -> Arc<Key> {
        Arc::new(Key {
            cipher: Aes256Gcm::new(&raw.into()),
            raw,
        })
    }
}

/// A subscriber's data keys as stored: live ones by generation, and the
/// highest generation ever used (live or destroyed).
#[derive(Default)]
pub struct SubscriberKeys {
    pub(super) live: Vec<(u32, Arc<Key>)>,
    pub(super) highest: u32,
}

impl SubscriberKeys {
    pub(super) fn get(&self, generation: u32) -> Option<&Arc<Key>> {
        self.live
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, k)| k)
    }

    /// The key new values are sealed under: the highest live generation.
    pub(super) fn current(&self) -> Option<(u32, &Arc<Key>)> {
        self.live
            .iter()
            .filter(|(g, _)| *g == self.highest)
            .map(|(g, k)| (*g, k))
            .next()
    }
}

pub(super) fn subscriber_pk(subscriber: &str) -> String {
    format!("s/{subscriber}")
}

fn data_purpose(tenant: &str, subscriber: &str, generation: u32) -> String {
    format!("data-key/{tenant}/{subscriber}/{generation}")
}

fn body_purpose(tenant: &str, ck: &str) -> String {
    format!("body-key/{tenant}/{ck}")
}

pub(super) fn body_ck(day: u32, channel: &str, country: &str) -> String {
    format!("{day}/{channel}/{country}")
}

/// Reads a subscriber's keys.
pub(super) async fn load_subscriber(
    store: &dyn Store,
    ring: &Keyring,
    tenant: &str,
    subscriber: &str,
) -> Result<SubscriberKeys, super::PersonalError> {
    let scan = Scan::partition(Table::DataKeys, tenant, &subscriber_pk(subscriber), 1024);
    let mut keys = SubscriberKeys::default();
    for (ck, value) in store.scan(&scan).await? {
        let Ok(generation) = <[u8; 4]>::try_from(&ck[..]).map(u32::from_be_bytes) else {
            continue;
        };
        keys.highest = keys.highest.max(generation);
        if value.is_empty() {
            continue; // destroyed
        }
        let raw = unwrap(ring, &data_purpose(tenant, subscriber, generation), &value)?;
        keys.live.push((generation, Key::new(raw)));
    }
    Ok(keys)
}

/// Makes the subscriber's next data key (generation `highest + 1`). When a
/// concurrent writer made it first, theirs stands (the caller reloads).
pub(super) async fn create_subscriber_key(
    store: &dyn Store,
    ring: &Keyring,
    tenant: &str,
    subscriber: &str,
    generation: u32,
) -> Result<(), super::PersonalError> {
    let raw: [u8; 32] = rand::random();
    let wrapped = ring.seal(&data_purpose(tenant, subscriber, generation), &raw);
    let key = RowKey::new(
        Table::DataKeys,
        tenant,
        &subscriber_pk(subscriber),
        generation.to_be_bytes().to_vec(),
    );
    store
        .insert_if_absent(&key, Bytes::from(wrapped), None)
        .await?;
    Ok(())
}

/// The body key of `ck`: `Ok(None)` when destroyed (or absent and
/// `create` is false).
pub(super) async fn body_key(
    store: &dyn Store,
    ring: &Keyring,
    tenant: &str,
    ck: &str,
    create: bool,
) -> Result<Option<Arc<Key>>, super::PersonalError> {
    let row = RowKey::new(Table::DataKeys, tenant, BODIES_PK, ck.as_bytes().to_vec());
    let stored = match store.get(&row).await? {
        Some(v) => v,
        None if !create => return Ok(None),
        None => {
            let raw: [u8; 32] = rand::random();
            let wrapped = Bytes::from(ring.seal(&body_purpose(tenant, ck), &raw));
            match store.insert_if_absent(&row, wrapped, None).await? {
                None => return Ok(Some(Key::new(raw))),
                Some(theirs) => theirs,
            }
        }
    };
    if stored.is_empty() {
        return Ok(None);
    }
    Ok(Some(Key::new(unwrap(
        ring,
        &body_purpose(tenant, ck),
        &stored,
    )?)))
}

/// Destroys every data key of the subscriber; returns their generations
/// (empty when there were none).
pub(super) async fn destroy_subscriber(
    store: &dyn Store,
    tenant: &str,
    subscriber: &str,
) -> Result<Vec<u32>, super::PersonalError> {
    let pk = subscriber_pk(subscriber);
    let scan = Scan::partition(Table::DataKeys, tenant, &pk, 1024);
    let mut batch = clarion_store::WriteBatch::new();
    let mut destroyed = Vec::new();
    for (ck, value) in store.scan(&scan).await? {
        if value.is_empty() {
            continue;
        }
        if let Ok(g) = <[u8; 4]>::try_from(&ck[..]).map(u32::from_be_bytes) {
            destroyed.push(g);
        }
        batch.put(RowKey::new(Table::DataKeys, tenant, &pk, ck), Bytes::new());
    }
    if !batch.is_empty() {
        store.write(batch).await?;
    }
    Ok(destroyed)
}

/// Destroys the body keys of `day` matching channel and country ("*" for
/// any), and leaves a tombstone for the exact pair when both are named (a
/// later message of that day is stored redacted). Returns how many keys
/// were destroyed.
pub(super) async fn destroy_bodies(
    store: &dyn Store,
    tenant: &str,
    day: u32,
    channel: &str,
    country: &str,
) -> Result<u64, super::PersonalError> {
    let prefix = format!("{day}/");
    let mut batch = clarion_store::WriteBatch::new();
    let mut n = 0;
    let mut exact_seen = false;
    for (ck, value) in list_bodies(store, tenant, Some(&prefix)).await? {
        let (_, ch, co) = split_body_ck(&ck).unwrap_or_default();
        let matches = (channel == "*" || ch == channel) && (country == "*" || co == country);
        if !matches {
            continue;
        }
        exact_seen |= ch == channel && co == country;
        if !value.is_empty() {
            n += 1;
            batch.put(
                RowKey::new(Table::DataKeys, tenant, BODIES_PK, ck.into_bytes()),
                Bytes::new(),
            );
        }
    }
    if !exact_seen && channel != "*" && country != "*" {
        let ck = body_ck(day, channel, country);
        batch.put(
            RowKey::new(Table::DataKeys, tenant, BODIES_PK, ck.into_bytes()),
            Bytes::new(),
        );
    }
    if !batch.is_empty() {
        store.write(batch).await?;
    }
    Ok(n)
}

/// The tenant's body key rows (ck as text, value), oldest day first,
/// optionally only those starting with `prefix`.
pub(super) async fn list_bodies(
    store: &dyn Store,
    tenant: &str,
    prefix: Option<&str>,
) -> Result<Vec<(String, Bytes)>, super::PersonalError> {
    use std::ops::Bound;
    let mut scan = Scan::partition(Table::DataKeys, tenant, BODIES_PK, 100_000);
    if let Some(p) = prefix {
        let mut end = p.as_bytes().to_vec();
        end.push(0xff);
        scan = scan.range(Bound::Included(p.as_bytes().to_vec()), Bound::Excluded(end));
    }
    Ok(store
        .scan(&scan)
        .await?
        .into_iter()
        .filter_map(|(ck, v)| String::from_utf8(ck).ok().map(|ck| (ck, v)))
        .collect())
}

/// `(day, channel, country)` of a body key's ck.
pub(super) fn split_body_ck(ck: &str) -> Option<(u32, String, String)> {
    let mut parts = ck.splitn(3, '/');
    let day = parts.next()?.parse().ok()?;
    Some((day, parts.next()?.to_string(), parts.next()?.to_string()))
}

fn unwrap(ring: &Keyring, purpose: &str, wrapped: &[u8]) -> Result<[u8; 32], KeyringError> {
    ring.open(purpose, wrapped)?
        .try_into()
        .map_err(|_| KeyringError::Malformed)
}
